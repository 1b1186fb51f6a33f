//! The command line: the classic grammar `stap-server ACTION [options]`, plus `image build`,
//! `announce` and `compose`.
//!
//! Options keep the order they were given in, because the classic semantics depend on it
//! (`-n` and `-p` bring in a whole configuration that later options override). Values are
//! checked here (a port is a port) but nothing is looked up: no file, no engine.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config;
use crate::limits;
use crate::loghold::LogCommand;

/// The service actions of the classic script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    CondRestart,
    ForceReload,
    Status,
    Reload,
}

impl Action {
    /// Whether the action may start servers.
    pub fn starts(self) -> bool {
        matches!(
            self,
            Action::Start | Action::Restart | Action::CondRestart | Action::ForceReload
        )
    }
}

/// One option as given, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Opt {
    Config(PathBuf),
    Arch(String),
    Release(String),
    Include(String),
    Runtime(String),
    Build(String),
    Define(String),
    User(String),
    AllReleases,
    Nickname(String),
    Pid(u32),
    Keep,
    Password,
    Log(PathBuf),
    Port(u16),
    Ssl(PathBuf),
    MaxThreads(u32),
    MaxRequestSize(u64),
    MaxCompressedRequest(u64),
    Tenant(String),
    Image(String),
    Memory(i64),
    Cpus(i64),
    Pids(i64),
    TmpSize(u64),
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    Service {
        action: Action,
        opts: Vec<Opt>,
        /// `status --json`: one JSON object per server instead of the classic lines.
        json: bool,
    },
    ImageBuild {
        registry: bool,
        opts: Vec<Opt>,
    },
    Announce {
        once: bool,
        opts: Vec<Opt>,
    },
    Compose {
        output: Option<PathBuf>,
        /// A stack file for `docker stack deploy` (with `ENGINE=swarm`).
        stack: bool,
        opts: Vec<Opt>,
    },
    /// `log hold|release FILE...`: logrotate's prerotate and postrotate.
    Log(LogCommand),
}

/// The classic actions and what each does (help, manual page).
pub const ACTIONS: [(&str, &str); 8] = [
    (
        "start",
        "Start servers: those named, else the configured ones, else one for this host",
    ),
    ("stop", "Stop and remove servers: those named, else all"),
    (
        "restart",
        "Stop and start servers: those named, else all running (start if none)",
    ),
    (
        "condrestart",
        "Restart servers that are running; start nothing else",
    ),
    ("try-restart", "The same as condrestart"),
    (
        "force-reload",
        "Stop all servers, reread the configuration, then start",
    ),
    ("status", "Print the running servers, or those named"),
    (
        "reload",
        "Not implemented (as in the classic service): exits 3",
    ),
];

const AFTER_HELP: &str = "\
All options may be specified more than once. Each -D, -I and -B adds to the server being
described. Each --port, --log, --ssl, --max-threads, --max-request-size and
--max-compressed-request is added to a list applied, in turn, to each server specified (one
per -r release); past the end of a list, the default applies. Other options override earlier
ones. -n and -p bring in the configuration of a running or configured server.";

/// The clap command tree.
pub fn command() -> Command {
    let mut cmd = Command::new("stap-server")
        .about("SystemTap compile servers, each in its own container")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .after_help(AFTER_HELP);
    for (name, about) in ACTIONS {
        let mut action = with_server_args(Command::new(name).about(about));
        if name == "status" {
            action = action.arg(
                Arg::new("json")
                    .long("json")
                    .action(ArgAction::SetTrue)
                    .help("Print a JSON array, one object per server (schema: stap-server(8))"),
            );
        }
        cmd = cmd.subcommand(action);
    }
    cmd.subcommand(
        Command::new("image")
            .about("Manage the compile-server image")
            .subcommand_required(true)
            .subcommand(with_server_args(
                Command::new("build")
                    .about("Build the compile-server image (reused when present)")
                    .arg(
                        Arg::new("registry")
                            .long("registry")
                            .action(ArgAction::SetTrue)
                            .help("Build FROM debian:trixie-slim (needs a registry) instead of an offline root filesystem"),
                    ),
            )),
    )
    .subcommand(with_server_args(
        Command::new("announce")
            .about("Keep mDNS advertisements equal to the running servers, following engine events")
            .arg(
                Arg::new("once")
                    .long("once")
                    .action(ArgAction::SetTrue)
                    .help("Reconcile once and exit"),
            ),
    ))
    .subcommand(with_server_args(
        Command::new("compose")
            .about("Write a docker-compose file for the configured (or named) servers")
            .arg(
                Arg::new("output")
                    .short('o')
                    .long("output")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("Write to FILE instead of standard output"),
            )
            .arg(
                Arg::new("stack")
                    .long("stack")
                    .action(ArgAction::SetTrue)
                    .help("With ENGINE=swarm: a stack file for docker stack deploy"),
            ),
    ))
    .subcommand(
        Command::new("log")
            .about("Hold a log file still while logrotate copies and truncates it")
            .subcommand_required(true)
            .subcommand(
                Command::new("hold")
                    .about("Pause the servers writing FILE until `log release` (prerotate)")
                    .arg(log_files()),
            )
            .subcommand(
                Command::new("release")
                    .about("Resume the servers that `log hold` paused (postrotate)")
                    .arg(log_files())
                    .arg(
                        Arg::new("token")
                            .long("token")
                            .hide(true)
                            .help("Release only the hold with this token (the watchdog)"),
                    )
                    .arg(
                        Arg::new("after")
                            .long("after")
                            .hide(true)
                            .value_parser(clap::value_parser!(u64))
                            .help("Seconds to wait first (the watchdog)"),
                    ),
            ),
    )
}

fn log_files() -> Arg {
    Arg::new("files")
        .value_name("FILE")
        .required(true)
        .num_args(1..)
        .value_parser(config::absolute)
        .help("Log file, as the servers' --log or LOG_FILE name it")
}

fn value(id: &'static str, short: Option<char>, long: Option<&'static str>) -> Arg {
    let mut arg = Arg::new(id).action(ArgAction::Append).num_args(1);
    if let Some(s) = short {
        arg = arg.short(s);
    }
    if let Some(l) = long {
        arg = arg.long(l);
    }
    arg
}

fn flag(id: &'static str, short: char) -> Arg {
    Arg::new(id).short(short).action(ArgAction::Count)
}

fn with_server_args(cmd: Command) -> Command {
    use config::{absolute, bytes, count, define, nickname, port, release, user_name};
    cmd.args([
        value("config", Some('c'), None)
            .value_name("CONFIGFILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("Additional global configuration file"),
        value("arch", Some('a'), None)
            .value_name("ARCH")
            .help("Target architecture"),
        value("release", Some('r'), None)
            .value_name("RELEASE")
            .value_parser(|v: &str| release(v).map(str::to_string))
            .help("Kernel release, or absolute path of a build tree"),
        value("include", Some('I'), None)
            .value_name("PATH")
            .value_parser(|v: &str| absolute(v).map(|_| v.to_string()))
            .help("Additional tapset directory"),
        value("runtime", Some('R'), None)
            .value_name("PATH")
            .value_parser(|v: &str| absolute(v).map(|_| v.to_string()))
            .help("Systemtap runtime directory"),
        value("build", Some('B'), None)
            .value_name("OPTIONS")
            .allow_hyphen_values(true)
            .help("Options for make when building modules"),
        value("define", Some('D'), None)
            .value_name("NAME[=VALUE]")
            .value_parser(|v: &str| define(v).map(str::to_string))
            .help("Macro definition for building modules"),
        value("user", Some('u'), None)
            .value_name("USER")
            .value_parser(user_name)
            .help("User the server runs as"),
        flag("all", 'i').help("One server per release under the modules directory"),
        value("nickname", Some('n'), None)
            .value_name("NICKNAME")
            .value_parser(nickname)
            .help("A server or configuration by nickname"),
        value("pid", Some('p'), None)
            .value_name("PID")
            .value_parser(|v: &str| {
                v.parse::<u32>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("\"{v}\" is not a process id"))
            })
            .help("A running server by process id"),
        flag("keep", 'k').help("Keep the server's temporary files"),
        flag("password", 'P')
            .help("Refused: stap-serverd would prompt for the database password on no terminal"),
        value("log", None, Some("log"))
            .value_name("PATH")
            .value_parser(absolute)
            .help("Log file for a server"),
        value("port", None, Some("port"))
            .value_name("PORT")
            .value_parser(port)
            .help("Host port for a server"),
        value("ssl", None, Some("ssl"))
            .value_name("PATH")
            .value_parser(absolute)
            .help("Certificate database directory for a server"),
        value("max-threads", None, Some("max-threads"))
            .value_name("N")
            .value_parser(count)
            .help("Worker threads of a server (0: requests one at a time)"),
        value("max-request-size", None, Some("max-request-size"))
            .value_name("BYTES")
            .value_parser(bytes)
            .help("Largest uncompressed client request a server accepts"),
        value(
            "max-compressed-request",
            None,
            Some("max-compressed-request"),
        )
        .value_name("BYTES")
        .value_parser(bytes)
        .help("Largest compressed client request a server accepts"),
        value("tenant", None, Some("tenant"))
            .value_name("NAME")
            .value_parser(config::tenant)
            .help("Tenant whose servers this invocation manages"),
        value("image", None, Some("image"))
            .value_name("IMAGE")
            .value_parser(config::image_ref)
            .help("Compile-server image for the servers"),
        value("memory", None, Some("memory"))
            .value_name("SIZE")
            .value_parser(limits::memory)
            .help("Memory limit per server (e.g. 1g)"),
        value("cpus", None, Some("cpus"))
            .value_name("N")
            .value_parser(limits::cpus)
            .help("CPU limit per server (e.g. 1 or 0.5)"),
        value("pids", None, Some("pids"))
            .value_name("N")
            .value_parser(limits::pids)
            .help("Process limit per server"),
        value("tmpsize", None, Some("tmpsize"))
            .value_name("SIZE")
            .value_parser(limits::tmp_size)
            .help("Size of the server's temporary directory (tmpfs)"),
    ])
}

/// Parses argv. Errors are clap's, printed with usage by the caller (exit 2).
pub fn parse<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    let (name, sub) = matches.subcommand().expect("a subcommand is required");
    Ok(match name {
        "image" => {
            let (_, build) = sub.subcommand().expect("image has one subcommand");
            Invocation::ImageBuild {
                registry: build.get_flag("registry"),
                opts: ordered(build),
            }
        }
        "announce" => Invocation::Announce {
            once: sub.get_flag("once"),
            opts: ordered(sub),
        },
        "compose" => Invocation::Compose {
            output: sub.get_one::<PathBuf>("output").cloned(),
            stack: sub.get_flag("stack"),
            opts: ordered(sub),
        },
        "log" => {
            let (what, args) = sub.subcommand().expect("log has a subcommand");
            let files: Vec<PathBuf> = args
                .get_many::<PathBuf>("files")
                .expect("required")
                .cloned()
                .collect();
            Invocation::Log(match what {
                "hold" => LogCommand::Hold { files },
                _ => LogCommand::Release {
                    files,
                    token: args.get_one::<String>("token").cloned(),
                    after: args
                        .get_one::<u64>("after")
                        .map(|s| std::time::Duration::from_secs(*s)),
                },
            })
        }
        action => Invocation::Service {
            action: match action {
                "start" => Action::Start,
                "stop" => Action::Stop,
                "restart" => Action::Restart,
                "condrestart" | "try-restart" => Action::CondRestart,
                "force-reload" => Action::ForceReload,
                "status" => Action::Status,
                _ => Action::Reload,
            },
            opts: ordered(sub),
            json: action == "status" && sub.get_flag("json"),
        },
    })
}

/// The options of one subcommand in the order given on the command line.
fn ordered(m: &ArgMatches) -> Vec<Opt> {
    let mut out: Vec<(usize, Opt)> = Vec::new();
    let mut values = |id: &str, make: &dyn Fn(&ArgMatches, usize) -> Opt| {
        // Flags have a default (count 0) with an index of its own: only what was typed counts.
        if m.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
            return;
        }
        if let Some(indices) = m.indices_of(id) {
            for (n, ix) in indices.enumerate() {
                out.push((ix, make(m, n)));
            }
        }
    };
    fn nth<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str, n: usize) -> T {
        m.get_many::<T>(id)
            .and_then(|mut v| v.nth(n))
            .cloned()
            .expect("one value per occurrence")
    }
    values("config", &|m, n| Opt::Config(nth(m, "config", n)));
    values("arch", &|m, n| Opt::Arch(nth(m, "arch", n)));
    values("release", &|m, n| Opt::Release(nth(m, "release", n)));
    values("include", &|m, n| Opt::Include(nth(m, "include", n)));
    values("runtime", &|m, n| Opt::Runtime(nth(m, "runtime", n)));
    values("build", &|m, n| Opt::Build(nth(m, "build", n)));
    values("define", &|m, n| Opt::Define(nth(m, "define", n)));
    values("user", &|m, n| Opt::User(nth(m, "user", n)));
    values("all", &|_, _| Opt::AllReleases);
    values("nickname", &|m, n| Opt::Nickname(nth(m, "nickname", n)));
    values("pid", &|m, n| Opt::Pid(nth(m, "pid", n)));
    values("keep", &|_, _| Opt::Keep);
    values("password", &|_, _| Opt::Password);
    values("log", &|m, n| Opt::Log(nth(m, "log", n)));
    values("port", &|m, n| Opt::Port(nth(m, "port", n)));
    values("ssl", &|m, n| Opt::Ssl(nth(m, "ssl", n)));
    values("max-threads", &|m, n| {
        Opt::MaxThreads(nth(m, "max-threads", n))
    });
    values("max-request-size", &|m, n| {
        Opt::MaxRequestSize(nth(m, "max-request-size", n))
    });
    values("max-compressed-request", &|m, n| {
        Opt::MaxCompressedRequest(nth(m, "max-compressed-request", n))
    });
    values("tenant", &|m, n| Opt::Tenant(nth(m, "tenant", n)));
    values("image", &|m, n| Opt::Image(nth(m, "image", n)));
    values("memory", &|m, n| Opt::Memory(nth(m, "memory", n)));
    values("cpus", &|m, n| Opt::Cpus(nth(m, "cpus", n)));
    values("pids", &|m, n| Opt::Pids(nth(m, "pids", n)));
    values("tmpsize", &|m, n| Opt::TmpSize(nth(m, "tmpsize", n)));
    out.sort_by_key(|(ix, _)| *ix);
    out.into_iter().map(|(_, opt)| opt).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Vec<Opt> {
        match parse(std::iter::once("stap-server").chain(args.iter().copied())).unwrap() {
            Invocation::Service { opts, .. } => opts,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_keep_their_order() {
        assert_eq!(
            opts(&[
                "start",
                "-n",
                "a",
                "-r",
                "6.1.0",
                "--port",
                "5600",
                "-i",
                "-k",
                "-I",
                "/x",
                "--port=5601",
                "-B",
                "-j1",
                "-D",
                "X=1",
                "-u",
                "bob",
                "-p",
                "42"
            ]),
            [
                Opt::Nickname("a".into()),
                Opt::Release("6.1.0".into()),
                Opt::Port(5600),
                Opt::AllReleases,
                Opt::Keep,
                Opt::Include("/x".into()),
                Opt::Port(5601),
                Opt::Build("-j1".into()),
                Opt::Define("X=1".into()),
                Opt::User("bob".into()),
                Opt::Pid(42),
            ]
        );
    }

    #[test]
    fn actions() {
        for (word, action) in [
            ("start", Action::Start),
            ("stop", Action::Stop),
            ("restart", Action::Restart),
            ("condrestart", Action::CondRestart),
            ("try-restart", Action::CondRestart),
            ("force-reload", Action::ForceReload),
            ("status", Action::Status),
            ("reload", Action::Reload),
        ] {
            assert_eq!(
                parse(["stap-server", word]).unwrap(),
                Invocation::Service {
                    action,
                    opts: vec![],
                    json: false
                }
            );
        }
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for args in [
            &["stap-server"][..],
            &["stap-server", "frobnicate"],
            &["stap-server", "start", "--port", "0"],
            &["stap-server", "start", "--port", "65536"],
            &["stap-server", "start", "--max-threads", "-1"],
            &["stap-server", "start", "-p", "abc"],
            &["stap-server", "start", "-r", "rel ease"],
            &["stap-server", "start", "-I", "relative"],
            &["stap-server", "start", "-x"],
            &["stap-server", "start", "-r"],
            &["stap-server", "start", "stray"],
            &["stap-server", "start", "--tenant", "Bad Name"],
            &["stap-server", "start", "--memory", "1"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn status_json() {
        assert_eq!(
            parse(["stap-server", "status", "--json", "-n", "a"]).unwrap(),
            Invocation::Service {
                action: Action::Status,
                opts: vec![Opt::Nickname("a".into())],
                json: true
            }
        );
        assert_eq!(
            parse(["stap-server", "start", "--json"])
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn log_hold_and_release() {
        assert_eq!(
            parse(["stap-server", "log", "hold", "/var/log/stap-server/log"]).unwrap(),
            Invocation::Log(LogCommand::Hold {
                files: vec!["/var/log/stap-server/log".into()]
            })
        );
        assert_eq!(
            parse([
                "stap-server",
                "log",
                "release",
                "--token",
                "t",
                "--after",
                "60",
                "/l"
            ])
            .unwrap(),
            Invocation::Log(LogCommand::Release {
                files: vec!["/l".into()],
                token: Some("t".into()),
                after: Some(std::time::Duration::from_secs(60)),
            })
        );
        assert!(parse(["stap-server", "log", "hold", "relative"]).is_err());
        assert!(parse(["stap-server", "log", "hold"]).is_err());
    }

    #[test]
    fn image_build_and_compose() {
        assert_eq!(
            parse(["stap-server", "image", "build", "--registry"]).unwrap(),
            Invocation::ImageBuild {
                registry: true,
                opts: vec![]
            }
        );
        assert_eq!(
            parse(["stap-server", "compose", "-o", "/tmp/c.yml", "-r", "x"]).unwrap(),
            Invocation::Compose {
                output: Some("/tmp/c.yml".into()),
                stack: false,
                opts: vec![Opt::Release("x".into())]
            }
        );
        assert!(matches!(
            parse(["stap-server", "compose", "--stack", "-i"]).unwrap(),
            Invocation::Compose { stack: true, .. }
        ));
    }
}

//! The classic configuration files: the global file and the per-server `*.conf` files.
//!
//! Both are lines of `VARIABLE=VALUE` (the value is everything after the `=`, as is), with
//! `VARIABLE+=VALUE` appending to the array variables, `#` comments and blank lines. This is
//! not a shell script. The parsers read `impl Read` and do no other I/O; a bad line is reported
//! with its file and line number, and every bad line of a file is reported, not just the first.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::limits::Limits;

/// One bad line (or an unreadable file, with line 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the line is in.
    pub file: PathBuf,
    /// 1-based line number; 0 when the error concerns the whole file.
    pub line: usize,
    /// What is wrong, naming the variable or value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

/// The settings of the global configuration (`/etc/sysconfig/stap-server`, then `-c FILE`).
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalConfig {
    /// Directory of the server configuration files (`*.conf`).
    pub config_path: PathBuf,
    /// Directory for the manager's run-time files (locks, build-tree stubs).
    pub stat_path: PathBuf,
    /// The log file of the manager and the default log of every server.
    pub log_file: PathBuf,
    /// The default user servers run as.
    pub stap_user: Option<String>,
    /// Where kernel build trees are looked up by release (`-r NAME`, `-i`).
    pub modules_path: PathBuf,
    /// The default compile-server image.
    pub image: Option<String>,
    /// Where avahi static service files are written.
    pub avahi_services_path: PathBuf,
    /// The tenant that scopes everything the manager makes and sees.
    pub tenant: Option<String>,
    /// The host ports unpinned servers take their port from.
    pub port_range: Option<(u16, u16)>,
    /// Resource limits applied to every server unless its own file says otherwise.
    pub limits: Limits,
    /// debuginfod servers every server may fetch debuginfo from (`DEBUGINFOD_URLS`).
    pub debuginfod_urls: Option<String>,
    /// Whether servers make their first compiles ahead of clients (`WARM`, default yes).
    pub warm: Option<bool>,
    /// What runs the servers: one engine (`ENGINE=docker`, the default) or a Docker Swarm
    /// through its manager (`ENGINE=swarm`), either at `DOCKER_HOST`.
    pub engine: EngineKind,
    /// The port of every swarm node's engine API, at the node's address (`NODE_ENGINE_PORT`,
    /// default 2375): images and certificates go through it.
    pub node_engine_port: u16,
}

/// What runs the servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// Containers on one engine.
    #[default]
    Docker,
    /// Services on a swarm, through a manager.
    Swarm,
}

/// The default port of a swarm node's engine API.
pub const NODE_ENGINE_PORT: u16 = 2375;

/// Where the classic service keeps its global configuration.
pub const DEFAULT_GLOBAL_FILE: &str = "/etc/sysconfig/stap-server";

impl GlobalConfig {
    /// The tenant everything is scoped by: `TENANT`, else the default one. Decided here only.
    pub fn tenant_name(&self) -> String {
        self.tenant
            .clone()
            .unwrap_or_else(|| crate::spec::DEFAULT_TENANT.into())
    }

    /// The image of servers whose options and file name none: `IMAGE`, else the default one.
    /// Decided here only.
    pub fn default_image(&self) -> String {
        self.image
            .clone()
            .unwrap_or_else(|| crate::spec::DEFAULT_IMAGE.into())
    }
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            config_path: PathBuf::from("/etc/stap-server/conf.d"),
            stat_path: PathBuf::from("/var/run/stap-server"),
            log_file: PathBuf::from("/var/log/stap-server/log"),
            stap_user: None,
            modules_path: PathBuf::from("/lib/modules"),
            image: None,
            avahi_services_path: PathBuf::from("/etc/avahi/services"),
            tenant: None,
            port_range: None,
            limits: Limits::default(),
            debuginfod_urls: None,
            warm: None,
            engine: EngineKind::Docker,
            node_engine_port: NODE_ENGINE_PORT,
        }
    }
}

/// The settings of one server configuration file (and of a server described on the command
/// line). Unset values take their defaults when the server is resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerConfig {
    pub arch: Option<String>,
    /// Kernel releases: names under the modules directory or absolute build-tree paths.
    pub releases: Vec<String>,
    /// `make` options (`-B`).
    pub builds: Vec<String>,
    /// Tapset directories (`-I`).
    pub includes: Vec<String>,
    /// Macro definitions (`-D`).
    pub defines: Vec<String>,
    /// The systemtap runtime directory (`-R`).
    pub runtime: Option<String>,
    pub user: Option<String>,
    pub nickname: Option<String>,
    pub log: Option<PathBuf>,
    pub port: Option<u16>,
    pub ssl: Option<PathBuf>,
    pub max_threads: Option<u32>,
    pub max_request_size: Option<u64>,
    pub max_compressed_request: Option<u64>,
    /// The compile-server image for this server (its toolchain must match the kernel's).
    pub image: Option<String>,
    pub limits: Limits,
    /// debuginfod servers for this server (`DEBUGINFOD_URLS`), over the global setting.
    pub debuginfod_urls: Option<String>,
    /// `WARM`, over the global setting.
    pub warm: Option<bool>,
}

/// Reads a global configuration file over `base`. Values left empty keep the earlier setting,
/// as in the classic service.
pub fn parse_global(
    input: impl Read,
    file: &Path,
    base: &GlobalConfig,
) -> Result<GlobalConfig, Vec<ConfigError>> {
    let mut cfg = base.clone();
    let mut errors = Vec::new();
    for_each_assignment(input, file, &mut errors, |a| {
        let v = a.value;
        if v.is_empty() {
            return match a.var {
                "CONFIG_PATH"
                | "STAT_PATH"
                | "LOG_FILE"
                | "STAP_USER"
                | "MODULES_PATH"
                | "IMAGE"
                | "AVAHI_SERVICES_PATH"
                | "TENANT"
                | "PORT_RANGE"
                | "DEBUGINFOD_URLS"
                | "WARM"
                | "ENGINE"
                | "NODE_ENGINE_PORT" => a.scalar(),
                var if crate::limits::is_limit(var) => a.scalar(),
                _ => Err(unknown(a.var)),
            };
        }
        match a.var {
            "ENGINE" => cfg.engine = a.scalar().and_then(|_| engine_kind(v))?,
            "NODE_ENGINE_PORT" => cfg.node_engine_port = a.scalar().and_then(|_| port(v))?,
            "CONFIG_PATH" => cfg.config_path = a.scalar().and_then(|_| absolute(v))?,
            "STAT_PATH" => cfg.stat_path = a.scalar().and_then(|_| absolute(v))?,
            "LOG_FILE" => cfg.log_file = a.scalar().and_then(|_| absolute(v))?,
            "MODULES_PATH" => cfg.modules_path = a.scalar().and_then(|_| absolute(v))?,
            "AVAHI_SERVICES_PATH" => {
                cfg.avahi_services_path = a.scalar().and_then(|_| absolute(v))?
            }
            "STAP_USER" => cfg.stap_user = Some(a.scalar().and_then(|_| user_name(v))?),
            "IMAGE" => cfg.image = Some(a.scalar().and_then(|_| image_ref(v))?),
            "TENANT" => cfg.tenant = Some(a.scalar().and_then(|_| tenant(v))?),
            "PORT_RANGE" => cfg.port_range = Some(a.scalar().and_then(|_| port_range(v))?),
            "DEBUGINFOD_URLS" => {
                cfg.debuginfod_urls = Some(a.scalar().and_then(|_| debuginfod_urls(v))?)
            }
            "WARM" => cfg.warm = Some(a.scalar().and_then(|_| yes_no(v))?),
            var => {
                if !cfg.limits.set(var, v).map_err(|e| a.bad(&e))? {
                    return Err(unknown(var));
                }
                a.scalar()?;
            }
        }
        Ok(())
    });
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// Reads one server configuration file.
pub fn parse_server(input: impl Read, file: &Path) -> Result<ServerConfig, Vec<ConfigError>> {
    let mut cfg = ServerConfig::default();
    let mut errors = Vec::new();
    for_each_assignment(input, file, &mut errors, |a| {
        let v = a.value;
        let set = |s: &str| (!s.is_empty()).then(|| s.to_string());
        match a.var {
            "RELEASE" => a.array(&mut cfg.releases, release)?,
            "BUILD" => a.array(&mut cfg.builds, |b| Ok(b))?,
            "INCLUDE" => a.array(&mut cfg.includes, |p| absolute(p).map(|_| p))?,
            "DEFINE" => a.array(&mut cfg.defines, define)?,
            "ARCH" => cfg.arch = a.scalar().map(|_| set(v))?,
            "RUNTIME" => cfg.runtime = a.scalar().and_then(|_| optional(v, absolute_str))?,
            "USER" => cfg.user = a.scalar().and_then(|_| optional(v, user_name))?,
            "NICKNAME" => cfg.nickname = a.scalar().and_then(|_| optional(v, nickname))?,
            "LOG" => cfg.log = a.scalar().and_then(|_| optional(v, absolute))?,
            "PORT" => cfg.port = a.scalar().and_then(|_| optional(v, port))?,
            "SSL" => cfg.ssl = a.scalar().and_then(|_| optional(v, absolute))?,
            "MAXTHREADS" => cfg.max_threads = a.scalar().and_then(|_| optional(v, count))?,
            "MAXREQSIZE" => cfg.max_request_size = a.scalar().and_then(|_| optional(v, bytes))?,
            "MAXCOMPRESSEDREQ" => {
                cfg.max_compressed_request = a.scalar().and_then(|_| optional(v, bytes))?
            }
            "IMAGE" => cfg.image = a.scalar().and_then(|_| optional(v, image_ref))?,
            "DEBUGINFOD_URLS" => {
                cfg.debuginfod_urls = a.scalar().and_then(|_| optional(v, debuginfod_urls))?
            }
            "WARM" => cfg.warm = a.scalar().and_then(|_| optional(v, yes_no))?,
            var => {
                if !cfg.limits.set(var, v).map_err(|e| a.bad(&e))? {
                    return Err(unknown(var));
                }
                a.scalar()?;
            }
        }
        Ok(())
    });
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// One `VAR=VALUE` or `VAR+=VALUE` line.
struct Assignment<'a> {
    var: &'a str,
    value: &'a str,
    append: bool,
}

impl Assignment<'_> {
    /// Scalars take `=` only.
    fn scalar(&self) -> Result<(), String> {
        if self.append {
            Err(format!(
                "{} is not an array variable: use {}=",
                self.var, self.var
            ))
        } else {
            Ok(())
        }
    }

    /// Arrays: `VAR=` and `VAR=()` clear, `VAR=X` sets to X alone, `VAR+=X` appends X.
    fn array(
        &self,
        items: &mut Vec<String>,
        check: impl Fn(&str) -> Result<&str, String>,
    ) -> Result<(), String> {
        let empty = self.value.is_empty() || self.value == "()";
        if !self.append {
            items.clear();
        }
        if !empty {
            items.push(check(self.value)?.to_string());
        }
        Ok(())
    }

    fn bad(&self, why: &str) -> String {
        format!("bad value for {}: {why}", self.var)
    }
}

fn unknown(var: &str) -> String {
    format!("unknown variable {var}")
}

/// Splits input into assignments, calling `apply` for each and collecting errors with lines.
fn for_each_assignment(
    input: impl Read,
    file: &Path,
    errors: &mut Vec<ConfigError>,
    mut apply: impl FnMut(&Assignment<'_>) -> Result<(), String>,
) {
    let err = |line, message| ConfigError {
        file: file.to_path_buf(),
        line,
        message,
    };
    for (ix, line) in BufReader::new(input).split(b'\n').enumerate() {
        let number = ix + 1;
        let bytes = match line {
            Ok(bytes) => bytes,
            Err(e) => {
                errors.push(err(0, format!("cannot read: {e}")));
                return;
            }
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            errors.push(err(number, "the line is not valid UTF-8".into()));
            continue;
        };
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let Some(eq) = text.find('=') else {
            errors.push(err(
                number,
                format!("expected VARIABLE=VALUE, found \"{text}\""),
            ));
            continue;
        };
        let (var, append) = match text[..eq].strip_suffix('+') {
            Some(var) => (var, true),
            None => (&text[..eq], false),
        };
        if var.is_empty() || !var.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            errors.push(err(
                number,
                format!("expected VARIABLE=VALUE, found \"{text}\""),
            ));
            continue;
        }
        let assignment = Assignment {
            var,
            value: &text[eq + 1..],
            append,
        };
        if let Err(message) = apply(&assignment) {
            // The variable is the culprit a reader looks for: name it when the value's own
            // message does not.
            let message = if message.contains(var) {
                message
            } else {
                format!("{var}: {message}")
            };
            errors.push(err(number, message));
        }
    }
}

fn optional<T>(v: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if v.is_empty() {
        Ok(None)
    } else {
        parse(v).map(Some)
    }
}

// Value checkers, shared with the command line.

/// A TCP port, 1 to 65535.
pub fn port(v: &str) -> Result<u16, String> {
    match v.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("port \"{v}\" is not a number from 1 to 65535")),
    }
}

/// A count of threads, 0 or more.
pub fn count(v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .map_err(|_| format!("\"{v}\" is not a whole number of 0 or more"))
}

/// A size in bytes, 1 or more.
pub fn bytes(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "\"{v}\" is not a size in bytes (a whole number above 0)"
        )),
    }
}

pub fn absolute(v: &str) -> Result<PathBuf, String> {
    absolute_str(v).map(PathBuf::from)
}

fn absolute_str(v: &str) -> Result<String, String> {
    if v.starts_with('/') {
        Ok(v.to_string())
    } else {
        Err(format!("\"{v}\" is not an absolute path"))
    }
}

/// A kernel release name, or an absolute build-tree path.
pub fn release(v: &str) -> Result<&str, String> {
    let name_ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b))
        && !v.starts_with('.');
    if v.starts_with('/') || name_ok {
        Ok(v)
    } else {
        Err(format!(
            "\"{v}\" is neither a kernel release name nor an absolute build-tree path"
        ))
    }
}

/// `NAME` or `NAME=VALUE` with a C identifier for NAME.
pub fn define(v: &str) -> Result<&str, String> {
    let name = v.split('=').next().unwrap_or("");
    let ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(v)
    } else {
        Err(format!("\"{v}\" is not a macro definition NAME[=VALUE]"))
    }
}

pub fn user_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 32
        && !v.starts_with('-')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-$".contains(&b));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("\"{v}\" is not a valid user name"))
    }
}

/// Nicknames become part of container and service names: printable, no quotes or slashes.
pub fn nickname(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "nickname \"{v}\" must be 1 to 64 letters, digits, '.', '_' or '-'"
        ))
    }
}

pub fn image_ref(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && !v.starts_with(['-', ':', '/'])
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("\"{v}\" is not an image reference"))
    }
}

/// `yes` or `no`.
/// `ENGINE`: docker or swarm.
pub fn engine_kind(v: &str) -> Result<EngineKind, String> {
    match v {
        "docker" => Ok(EngineKind::Docker),
        "swarm" => Ok(EngineKind::Swarm),
        _ => Err(format!("\"{v}\" is neither docker nor swarm")),
    }
}

pub fn yes_no(v: &str) -> Result<bool, String> {
    match v {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("\"{v}\" is neither yes nor no")),
    }
}

/// `DEBUGINFOD_URLS`: space-separated http, https or file URLs, as elfutils reads them.
pub fn debuginfod_urls(v: &str) -> Result<String, String> {
    let bad = v.split_whitespace().find(|u| {
        !["http://", "https://", "file://"]
            .iter()
            .any(|scheme| u.starts_with(scheme) && u.len() > scheme.len())
            || u.contains(['"', '\'', '\\', '$', '`'])
    });
    match bad {
        None if !v.trim().is_empty() => Ok(v.split_whitespace().collect::<Vec<_>>().join(" ")),
        None => Err(format!("\"{v}\" names no debuginfod URL")),
        Some(u) => Err(format!(
            "\"{u}\" is not a debuginfod URL (http://, https:// or file://)"
        )),
    }
}

/// Tenants name containers, volumes and networks: lower-case letters, digits, `_`, `-`.
pub fn tenant(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 32
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "tenant \"{v}\" must be 1 to 32 lower-case letters, digits, '_' or '-'"
        ))
    }
}

pub fn port_range(v: &str) -> Result<(u16, u16), String> {
    let bad = || format!("port range \"{v}\" is not LOW-HIGH with 1 <= LOW <= HIGH <= 65535");
    let (low, high) = v.split_once('-').ok_or_else(bad)?;
    let (low, high) = (
        port(low).map_err(|_| bad())?,
        port(high).map_err(|_| bad())?,
    );
    if low <= high {
        Ok((low, high))
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(text: &str) -> Result<ServerConfig, Vec<ConfigError>> {
        parse_server(text.as_bytes(), Path::new("/etc/stap-server/conf.d/a.conf"))
    }

    fn global(text: &str) -> Result<GlobalConfig, Vec<ConfigError>> {
        parse_global(
            text.as_bytes(),
            Path::new("/etc/sysconfig/stap-server"),
            &GlobalConfig::default(),
        )
    }

    fn lines(errors: Vec<ConfigError>) -> Vec<(usize, String)> {
        errors.into_iter().map(|e| (e.line, e.message)).collect()
    }

    #[test]
    fn every_server_variable() {
        let cfg = server(
            "ARCH=x86_64\nRELEASE=6.1.0-56-amd64\nBUILD=V=1\nINCLUDE=/opt/tapsets\n\
             DEFINE=MAXACTION=10000\nRUNTIME=/opt/runtime\nUSER=alice\nNICKNAME=native\n\
             LOG=/var/log/s.log\nPORT=5600\nSSL=/etc/ssl/s\nMAXTHREADS=0\nMAXREQSIZE=60000\n\
             MAXCOMPRESSEDREQ=6000\nIMAGE=stap-server:bookworm\nMEMORY=512m\nCPUS=0.5\n\
             PIDS=100\nTMPSIZE=64m\n",
        )
        .unwrap();
        assert_eq!(cfg.arch.as_deref(), Some("x86_64"));
        assert_eq!(cfg.releases, ["6.1.0-56-amd64"]);
        assert_eq!(cfg.builds, ["V=1"]);
        assert_eq!(cfg.includes, ["/opt/tapsets"]);
        assert_eq!(cfg.defines, ["MAXACTION=10000"]);
        assert_eq!(cfg.runtime.as_deref(), Some("/opt/runtime"));
        assert_eq!(cfg.user.as_deref(), Some("alice"));
        assert_eq!(cfg.nickname.as_deref(), Some("native"));
        assert_eq!(cfg.log, Some(PathBuf::from("/var/log/s.log")));
        assert_eq!(cfg.port, Some(5600));
        assert_eq!(cfg.ssl, Some(PathBuf::from("/etc/ssl/s")));
        assert_eq!(cfg.max_threads, Some(0));
        assert_eq!(cfg.max_request_size, Some(60000));
        assert_eq!(cfg.max_compressed_request, Some(6000));
        assert_eq!(cfg.image.as_deref(), Some("stap-server:bookworm"));
        assert_eq!(cfg.limits.memory, Some(512 << 20));
        assert_eq!(cfg.limits.nano_cpus, Some(500_000_000));
        assert_eq!(cfg.limits.pids, Some(100));
        assert_eq!(cfg.limits.tmp_size, Some(64 << 20));
    }

    #[test]
    fn arrays_append_clear_and_reset() {
        let cfg = server(
            "INCLUDE+=/a\nINCLUDE+=/b\nRELEASE=x\nRELEASE+=y\nDEFINE+=A\nDEFINE=\nBUILD+=()\n\
             BUILD=()\nBUILD+=-j1\nINCLUDE=/c\nINCLUDE+=/d\n",
        )
        .unwrap();
        assert_eq!(cfg.includes, ["/c", "/d"]);
        assert_eq!(cfg.releases, ["x", "y"]);
        assert!(cfg.defines.is_empty());
        assert_eq!(cfg.builds, ["-j1"]);
    }

    #[test]
    fn value_is_everything_after_the_equals_sign() {
        let cfg = server("BUILD=CFLAGS=-O2 -g # not a comment\nNICKNAME=a.b\n").unwrap();
        assert_eq!(cfg.builds, ["CFLAGS=-O2 -g # not a comment"]);
        assert_eq!(cfg.nickname.as_deref(), Some("a.b"));
    }

    #[test]
    fn comments_blank_lines_and_empty_values() {
        let cfg = server("# a comment\n\n#PORT=bad\nPORT=\nUSER=\nARCH=\n").unwrap();
        assert_eq!(cfg, ServerConfig::default());
    }

    #[test]
    fn errors_name_each_bad_line() {
        let errors = server(
            "PORT=5600\nnot an assignment\nPORT=70000\nFOO=1\nMAXTHREADS=-1\nUSER+=x\n\
             RELEASE=rel ease\nINCLUDE+=relative/path\nMAXREQSIZE=0\n port=1\nMEMORY=lots\n\
             NICKNAME=a b\nDEFINE=1X\nSSL=ssl\n",
        )
        .unwrap_err();
        let got: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(got, [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        let text = errors[1].to_string();
        assert!(
            text.starts_with("/etc/stap-server/conf.d/a.conf:3: "),
            "{text}"
        );
        assert!(text.contains("70000"), "{text}");
        assert_eq!(lines(errors)[2].1, "unknown variable FOO");
    }

    #[test]
    fn global_variables_and_their_errors() {
        let cfg = global(
            "CONFIG_PATH=/tmp/conf.d\nSTAT_PATH=/tmp/stat\nLOG_FILE=/tmp/log\nSTAP_USER=bob\n\
             MODULES_PATH=/srv/modules\nIMAGE=stap-server:x\nAVAHI_SERVICES_PATH=/tmp/avahi\n\
             TENANT=team-a\nPORT_RANGE=5700-5799\nMEMORY=2g\nLOG_FILE=\n",
        )
        .unwrap();
        assert_eq!(cfg.config_path, PathBuf::from("/tmp/conf.d"));
        assert_eq!(cfg.stat_path, PathBuf::from("/tmp/stat"));
        assert_eq!(
            cfg.log_file,
            PathBuf::from("/tmp/log"),
            "empty keeps the earlier value"
        );
        assert_eq!(cfg.stap_user.as_deref(), Some("bob"));
        assert_eq!(cfg.modules_path, PathBuf::from("/srv/modules"));
        assert_eq!(cfg.image.as_deref(), Some("stap-server:x"));
        assert_eq!(cfg.avahi_services_path, PathBuf::from("/tmp/avahi"));
        assert_eq!(cfg.tenant.as_deref(), Some("team-a"));
        assert_eq!(cfg.port_range, Some((5700, 5799)));
        assert_eq!(cfg.limits.memory, Some(2 << 30));

        let errors = global("ARCH=x86_64\nCONFIG_PATH=relative\nTENANT=Team A\nPORT_RANGE=9-1\n")
            .unwrap_err();
        assert_eq!(
            lines(errors),
            [
                (1, "unknown variable ARCH".to_string()),
                (
                    2,
                    "CONFIG_PATH: \"relative\" is not an absolute path".to_string()
                ),
                (
                    3,
                    "TENANT: tenant \"Team A\" must be 1 to 32 lower-case letters, digits, '_' or '-'"
                        .to_string()
                ),
                (
                    4,
                    "PORT_RANGE: port range \"9-1\" is not LOW-HIGH with 1 <= LOW <= HIGH <= 65535"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn warm_is_yes_or_no() {
        assert_eq!(global("WARM=no\n").unwrap().warm, Some(false));
        assert_eq!(global("WARM=no\nWARM=\n").unwrap().warm, Some(false));
        assert_eq!(server("WARM=yes\n").unwrap().warm, Some(true));
        assert_eq!(server("WARM=\n").unwrap().warm, None);
        assert_eq!(
            lines(server("WARM=1\n").unwrap_err()),
            [(1, "WARM: \"1\" is neither yes nor no".to_string())]
        );
    }

    #[test]
    fn request_limits_and_debuginfod() {
        let cfg = global(
            "RLIMIT_CPU=120\nRLIMIT_AS=2g\nDEBUGINFOD_URLS=https://debuginfod.example  file:///srv/d\n",
        )
        .unwrap();
        assert_eq!(cfg.limits.request.cpu, Some(120));
        assert_eq!(cfg.limits.request.address_space, Some(2 << 30));
        assert_eq!(
            cfg.debuginfod_urls.as_deref(),
            Some("https://debuginfod.example file:///srv/d")
        );
        let cfg = server("RLIMIT_FSIZE=0\nRLIMIT_STACK=8m\nDEBUGINFOD_URLS=\n").unwrap();
        assert_eq!(cfg.limits.request.file_size, Some(0));
        assert_eq!(cfg.limits.request.stack, Some(8 << 20));
        assert_eq!(cfg.debuginfod_urls, None);
        let errors =
            server("RLIMIT_CPU=soon\nDEBUGINFOD_URLS=ftp://x\nRLIMIT_NPROC=2\n").unwrap_err();
        assert_eq!(
            lines(errors),
            [
                (
                    1,
                    "bad value for RLIMIT_CPU: \"soon\" is not a whole number of seconds, or 0 (no limit)"
                        .to_string()
                ),
                (
                    2,
                    "DEBUGINFOD_URLS: \"ftp://x\" is not a debuginfod URL (http://, https:// or file://)"
                        .to_string()
                ),
                (
                    3,
                    "bad value for RLIMIT_NPROC: \"2\" is not a number of processes of 16 or more, or 0 (no limit)"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn invalid_utf8_and_crlf() {
        let errors = parse_server(&b"PORT=5600\r\n\xff=1\n"[..], Path::new("f")).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 2);
        assert_eq!(
            parse_server(&b"PORT=5600\r\n"[..], Path::new("f"))
                .unwrap()
                .port,
            Some(5600)
        );
    }
}

//! `ServerSpec`, what one server should be, and its resolution from the ordered options, the
//! global configuration, the server configuration files and the servers already running.
//!
//! The classic rules: the options on the command line describe one server (several `-r` give
//! it several releases, and here each release becomes a server of its own); `-n` and `-p`
//! replace the description with that of a running or configured server; `--port`, `--log`,
//! `--ssl` and the size options are lists handed out in turn to the servers made. When no
//! option describes a server, the action decides (configured servers, or those running).

use std::path::{Path, PathBuf};

use crate::cli::Opt;
use crate::config::{GlobalConfig, ServerConfig};
use crate::limits::{Limits, Resolved as ResolvedLimits};

/// The image servers use when no configuration names one.
pub const DEFAULT_IMAGE: &str = "stap-server:latest";

/// The user servers run as when no configuration names one (the classic service's user).
pub const DEFAULT_USER: &str = "stap-server";

/// The tenant of hosts that do not set one.
pub const DEFAULT_TENANT: &str = "default";

/// Everything that defines one server: the classic status-file fields plus the container's.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    /// Scopes names, labels and networks; servers of other tenants are invisible.
    pub tenant: String,
    pub arch: String,
    /// A release name, or an absolute build-tree path, as the user gave it.
    pub release: String,
    pub user: String,
    /// Set when the server was given a nickname; otherwise it is known by its PID.
    pub nickname: Option<String>,
    pub log: PathBuf,
    /// The pinned host port; `None` lets a free port be chosen.
    pub port: Option<u16>,
    pub ssl: Option<PathBuf>,
    pub includes: Vec<String>,
    pub defines: Vec<String>,
    pub builds: Vec<String>,
    pub runtime: Option<String>,
    pub max_threads: Option<u32>,
    pub max_request_size: Option<u64>,
    pub max_compressed_request: Option<u64>,
    /// `-k`: keep the server's temporary files.
    pub keep: bool,
    pub image: String,
    pub limits: ResolvedLimits,
    /// debuginfod servers the translator may fetch debuginfo from.
    pub debuginfod_urls: Option<String>,
    /// Whether the server makes its first compiles ahead of clients.
    pub warm: bool,
}

impl ServerSpec {
    /// The configuration that describes this spec, for `-n`/`-p` lookups and restarts.
    pub fn to_config(&self) -> ServerConfig {
        ServerConfig {
            arch: Some(self.arch.clone()),
            releases: vec![self.release.clone()],
            builds: self.builds.clone(),
            includes: self.includes.clone(),
            defines: self.defines.clone(),
            runtime: self.runtime.clone(),
            user: Some(self.user.clone()),
            nickname: self.nickname.clone(),
            log: Some(self.log.clone()),
            port: self.port,
            ssl: self.ssl.clone(),
            max_threads: self.max_threads,
            max_request_size: self.max_request_size,
            max_compressed_request: self.max_compressed_request,
            image: Some(self.image.clone()),
            limits: Limits {
                memory: Some(self.limits.memory),
                nano_cpus: Some(self.limits.nano_cpus),
                pids: Some(self.limits.pids),
                tmp_size: Some(self.limits.tmp_size),
                request: crate::limits::Request::all(self.limits.request),
            },
            debuginfod_urls: self.debuginfod_urls.clone(),
            warm: Some(self.warm),
        }
    }

    /// Whether `self`, as asked for, designates the running `other`: the same tenant, arch and
    /// release, and the same nickname when one was asked for.
    pub fn designates(&self, other: &ServerSpec) -> bool {
        self.tenant == other.tenant
            && self.arch == other.arch
            && self.release == other.release
            && (self.nickname.is_none() || self.nickname == other.nickname)
    }

    /// A plain server for `release` with every default, for tests.
    #[cfg(test)]
    pub fn example(release: &str) -> ServerSpec {
        ServerSpec {
            tenant: DEFAULT_TENANT.into(),
            arch: "x86_64".into(),
            release: release.into(),
            user: DEFAULT_USER.into(),
            nickname: None,
            log: "/var/log/stap-server/log".into(),
            port: None,
            ssl: None,
            includes: vec![],
            defines: vec![],
            builds: vec![],
            runtime: None,
            max_threads: None,
            max_request_size: None,
            max_compressed_request: None,
            keep: false,
            image: DEFAULT_IMAGE.into(),
            limits: crate::limits::DEFAULT,
            debuginfod_urls: None,
            warm: true,
        }
    }

    /// Whether a running `other` already is what `self` asks for (the nickname aside).
    pub fn same_settings(&self, other: &ServerSpec) -> bool {
        let mut a = self.clone();
        let mut b = other.clone();
        a.nickname = None;
        b.nickname = None;
        // An unpinned port is satisfied by whatever port the server has.
        if a.port.is_none() {
            b.port = None;
        }
        a == b
    }
}

/// A server as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub spec: ServerSpec,
    /// The container's id.
    pub id: String,
    /// The container's name.
    pub name: String,
    /// The engine's state word: running, restarting, exited, created, dead...
    pub state: String,
    /// Host PID of the container's main process, when running.
    pub pid: Option<u32>,
    /// The host port the server is published on.
    pub host_port: Option<u16>,
    /// Whether the manager created it (as opposed to docker-compose or another tool).
    pub managed_by_cli: bool,
    /// The release stap-serverd serves and mDNS advertises (a path release's
    /// `kernel.release`), from the container's label.
    pub kernel_release: String,
    /// The volume that holds the server's certificate, from the container's label (a compose
    /// project names its volumes itself).
    pub cert_volume: String,
    /// On a swarm, where its task is placed.
    pub place: Option<Place>,
}

/// Where a swarm server's task is placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The node's hostname.
    pub node: String,
    /// The node's address, where clients reach the server's port.
    pub address: String,
    /// Why the task does not run, when it does not.
    pub reason: Option<String>,
}

impl Server {
    pub fn running(&self) -> bool {
        self.state == "running"
    }

    /// The nickname status shows: the configured one, else the PID (as classic).
    pub fn display_nickname(&self) -> Option<String> {
        self.spec
            .nickname
            .clone()
            .or_else(|| self.pid.map(|p| p.to_string()))
    }
}

/// What a resolution needs from the host, gathered by the caller.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// The architecture of this host, in stap's naming.
    pub arch: String,
    /// The running kernel's release.
    pub release: String,
    /// Releases under the modules directory, sorted (for `-i`).
    pub installed: Vec<String>,
    /// The architectures of the trees releases name, and their siblings for other ones.
    pub trees: crate::arch::Trees,
}

/// What the options asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Server(ServerSpec),
    /// `-n NICK` named neither a running server nor a configuration. Start-like actions make
    /// a new server with that nickname; the others report it.
    UnknownNickname {
        nickname: String,
        spec: ServerSpec,
    },
}

/// The result of resolving the options.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `None` when no option described a server: the action then picks its own set.
    pub targets: Option<Vec<Target>>,
    /// The `--port`, `--log`, ... lists, for servers the action picks itself.
    pub lists: Lists,
    /// Overrides from the command line that apply to every server of this invocation.
    pub overrides: Overrides,
}

/// The lists that are handed out in turn to the servers made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lists {
    pub log: Vec<PathBuf>,
    pub port: Vec<u16>,
    pub ssl: Vec<PathBuf>,
    pub max_threads: Vec<u32>,
    pub max_request_size: Vec<u64>,
    pub max_compressed_request: Vec<u64>,
}

/// Command-line settings that are not part of a server's description but apply to all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub keep: bool,
    pub password: bool,
    pub image: Option<String>,
    pub limits: Limits,
}

/// `-p PID` named no server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSuchPid(pub u32);

/// Resolves the ordered options into the servers they describe.
pub fn resolve(
    opts: &[Opt],
    global: &GlobalConfig,
    configured: &[(PathBuf, ServerConfig)],
    observed: &[Server],
    host: &Host,
) -> Result<Request, NoSuchPid> {
    let mut draft = ServerConfig::default();
    let mut specified = false;
    let mut unknown_nickname: Option<String> = None;
    let mut lists = Lists::default();
    let mut overrides = Overrides::default();
    // Whether the releases were named (`-r`, `-i`), not taken from a server `-n`/`-p` named:
    // only taken ones follow a `-a` to their tree for that architecture.
    let mut named_releases = false;

    for opt in opts {
        // Any option that describes the server ends a nickname's hold on it: what follows
        // `-n NICK` makes a new configuration based on NICK's (classic rule).
        let describes = !matches!(
            opt,
            Opt::Nickname(_)
                | Opt::Pid(_)
                | Opt::Config(_)
                | Opt::Tenant(_)
                | Opt::Keep
                | Opt::Password
                | Opt::Log(_)
                | Opt::Port(_)
                | Opt::Ssl(_)
                | Opt::MaxThreads(_)
                | Opt::MaxRequestSize(_)
                | Opt::MaxCompressedRequest(_)
                | Opt::Image(_)
                | Opt::Memory(_)
                | Opt::Cpus(_)
                | Opt::Pids(_)
                | Opt::TmpSize(_)
        );
        if describes {
            draft.nickname = None;
            specified = true;
        }
        match opt {
            Opt::Arch(a) => draft.arch = Some(a.clone()),
            Opt::Release(r) => {
                named_releases = true;
                draft.releases.push(r.clone());
            }
            Opt::Include(p) => draft.includes.push(p.clone()),
            Opt::Define(d) => draft.defines.push(d.clone()),
            Opt::Build(b) => draft.builds.push(b.clone()),
            Opt::Runtime(r) => draft.runtime = Some(r.clone()),
            Opt::User(u) => draft.user = Some(u.clone()),
            Opt::AllReleases => {
                named_releases = true;
                draft.releases.extend(host.installed.iter().cloned());
            }
            Opt::Nickname(nick) => {
                specified = true;
                let running = observed
                    .iter()
                    .find(|s| s.spec.nickname.as_ref() == Some(nick));
                let config = configured
                    .iter()
                    .find(|(_, c)| c.nickname.as_ref() == Some(nick));
                named_releases = false;
                if let Some(server) = running {
                    draft = server.spec.to_config();
                } else if let Some((_, config)) = config {
                    draft = config.clone();
                } else {
                    unknown_nickname = Some(nick.clone());
                    continue;
                }
                unknown_nickname = None;
            }
            Opt::Pid(pid) => {
                specified = true;
                let server = observed
                    .iter()
                    .find(|s| s.pid == Some(*pid))
                    .ok_or(NoSuchPid(*pid))?;
                named_releases = false;
                draft = server.spec.to_config();
            }
            Opt::Keep => overrides.keep = true,
            Opt::Password => overrides.password = true,
            Opt::Log(p) => lists.log.push(p.clone()),
            Opt::Port(p) => lists.port.push(*p),
            Opt::Ssl(p) => lists.ssl.push(p.clone()),
            Opt::MaxThreads(n) => lists.max_threads.push(*n),
            Opt::MaxRequestSize(n) => lists.max_request_size.push(*n),
            Opt::MaxCompressedRequest(n) => lists.max_compressed_request.push(*n),
            Opt::Image(i) => overrides.image = Some(i.clone()),
            Opt::Memory(n) => overrides.limits.memory = Some(*n),
            Opt::Cpus(n) => overrides.limits.nano_cpus = Some(*n),
            Opt::Pids(n) => overrides.limits.pids = Some(*n),
            Opt::TmpSize(n) => overrides.limits.tmp_size = Some(*n),
            Opt::Config(_) | Opt::Tenant(_) => {}
        }
    }

    let targets = specified.then(|| {
        let mut next = 0;
        let specs = expand(
            &draft,
            global,
            host,
            &lists,
            &mut next,
            &overrides,
            !named_releases,
        );
        specs
            .into_iter()
            .map(|mut spec| match &unknown_nickname {
                Some(nick) => {
                    spec.nickname = Some(nick.clone());
                    Target::UnknownNickname {
                        nickname: nick.clone(),
                        spec,
                    }
                }
                None => Target::Server(spec),
            })
            .collect()
    });
    Ok(Request {
        targets,
        lists,
        overrides,
    })
}

/// The servers of the configuration files, one per release (lists are not applied to them).
pub fn configured_specs(
    configured: &[(PathBuf, ServerConfig)],
    global: &GlobalConfig,
    host: &Host,
    overrides: &Overrides,
) -> Vec<ServerSpec> {
    configured
        .iter()
        .flat_map(|(_, cfg)| {
            let mut next = 0;
            expand(
                cfg,
                global,
                host,
                &Lists::default(),
                &mut next,
                overrides,
                false,
            )
        })
        .collect()
}

/// The server for this host's running kernel and architecture, with the lists applied.
pub fn default_specs(
    global: &GlobalConfig,
    host: &Host,
    lists: &Lists,
    overrides: &Overrides,
) -> Vec<ServerSpec> {
    let mut next = 0;
    expand(
        &ServerConfig::default(),
        global,
        host,
        lists,
        &mut next,
        overrides,
        true,
    )
}

/// One spec per release of `cfg`, with defaults filled and the lists' items `next..` applied.
/// A server's architecture is the one asked for, else its tree's, else the host's; with
/// `follow_arch` (releases not named, but taken from another server or the host), a release
/// whose tree is for another architecture than the one asked becomes its sibling for it.
fn expand(
    cfg: &ServerConfig,
    global: &GlobalConfig,
    host: &Host,
    lists: &Lists,
    next: &mut usize,
    overrides: &Overrides,
    follow_arch: bool,
) -> Vec<ServerSpec> {
    let releases = if cfg.releases.is_empty() {
        vec![host.release.clone()]
    } else {
        cfg.releases.clone()
    };
    releases
        .into_iter()
        .map(|release| {
            let i = *next;
            *next += 1;
            let tree_arch = host.trees.arch(&release);
            let arch = cfg
                .arch
                .clone()
                .or_else(|| tree_arch.map(str::to_string))
                .unwrap_or_else(|| host.arch.clone());
            let release = match host.trees.sibling(&release, &arch) {
                Some(sibling) if follow_arch && tree_arch != Some(arch.as_str()) => {
                    sibling.to_string()
                }
                _ => release,
            };
            let image = overrides
                .image
                .clone()
                .or_else(|| cfg.image.clone())
                .unwrap_or_else(|| global.default_image());
            ServerSpec {
                tenant: global.tenant_name(),
                image: crate::arch::image_for(&image, &global.default_image(), &arch, &host.arch),
                arch,
                release,
                user: cfg
                    .user
                    .clone()
                    .or_else(|| global.stap_user.clone())
                    .unwrap_or_else(|| DEFAULT_USER.into()),
                nickname: cfg.nickname.clone(),
                log: pick(&lists.log, i, &cfg.log).unwrap_or_else(|| global.log_file.clone()),
                port: pick(&lists.port, i, &cfg.port),
                ssl: pick(&lists.ssl, i, &cfg.ssl),
                includes: cfg.includes.clone(),
                defines: cfg.defines.clone(),
                builds: cfg.builds.clone(),
                runtime: cfg.runtime.clone(),
                max_threads: pick(&lists.max_threads, i, &cfg.max_threads),
                max_request_size: pick(&lists.max_request_size, i, &cfg.max_request_size),
                max_compressed_request: pick(
                    &lists.max_compressed_request,
                    i,
                    &cfg.max_compressed_request,
                ),
                keep: overrides.keep,
                limits: overrides
                    .limits
                    .over(cfg.limits)
                    .over(global.limits)
                    .resolve(),
                debuginfod_urls: cfg
                    .debuginfod_urls
                    .clone()
                    .or_else(|| global.debuginfod_urls.clone()),
                warm: cfg.warm.or(global.warm).unwrap_or(true),
            }
        })
        .collect()
}

/// The list's item for server `i`, else the configured value.
fn pick<T: Clone>(list: &[T], i: usize, configured: &Option<T>) -> Option<T> {
    list.get(i).cloned().or_else(|| configured.clone())
}

/// stap's name for this host's architecture (as `stap_get_arch` maps `uname -m`).
pub fn stap_arch(machine: &str) -> String {
    match machine {
        m if m.len() == 4 && m.starts_with('i') && m.ends_with("86") => "i386".into(),
        "sun4u" => "sparc64".into(),
        m if m.starts_with("arm") => "arm".into(),
        "aarch64" => "arm64".into(),
        "ppc64" | "ppc64le" => "powerpc".into(),
        "s390x" => "s390".into(),
        m if m.starts_with("mips") => "mips".into(),
        m => m.into(),
    }
}

/// The releases installed under `modules`: directories whose `build` entry exists.
pub fn installed_releases(modules: &Path) -> std::io::Result<Vec<String>> {
    let mut releases = Vec::new();
    for entry in std::fs::read_dir(modules)? {
        let entry = entry?;
        if entry.path().join("build").exists()
            && let Some(name) = entry.file_name().to_str()
        {
            releases.push(name.to_string());
        }
    }
    releases.sort();
    Ok(releases)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            arch: "x86_64".into(),
            release: "6.1.0-running".into(),
            installed: vec!["6.1.0-a".into(), "6.12.0-b".into()],
            trees: Default::default(),
        }
    }

    /// A server spec with the defaults, for tests across the crate.
    pub(crate) fn spec(release: &str) -> ServerSpec {
        ServerSpec::example(release)
    }

    fn running(spec: ServerSpec, pid: u32) -> Server {
        Server {
            spec,
            id: format!("id{pid}"),
            name: format!("n{pid}"),
            state: "running".into(),
            pid: Some(pid),
            host_port: Some(5600),
            managed_by_cli: true,
            kernel_release: "6.1.0-56-amd64".into(),
            cert_volume: "v".into(),
            place: None,
        }
    }

    fn servers(req: &Request) -> Vec<ServerSpec> {
        req.targets
            .as_ref()
            .unwrap()
            .iter()
            .map(|t| match t {
                Target::Server(s) => s.clone(),
                Target::UnknownNickname { spec, .. } => spec.clone(),
            })
            .collect()
    }

    fn run(opts: &[Opt], configured: &[(PathBuf, ServerConfig)], observed: &[Server]) -> Request {
        resolve(
            opts,
            &GlobalConfig::default(),
            configured,
            observed,
            &host(),
        )
        .unwrap()
    }

    #[test]
    fn no_server_options_leaves_the_choice_to_the_action() {
        let req = run(&[Opt::Port(5600), Opt::Keep], &[], &[]);
        assert_eq!(req.targets, None);
        assert_eq!(req.lists.port, [5600]);
        assert!(req.overrides.keep);
        let default = default_specs(
            &GlobalConfig::default(),
            &host(),
            &req.lists,
            &req.overrides,
        );
        assert_eq!(default.len(), 1);
        assert_eq!(default[0].release, "6.1.0-running");
        assert_eq!(default[0].port, Some(5600));
        assert!(default[0].keep);
    }

    #[test]
    fn one_server_per_release_with_lists_in_turn() {
        let req = run(
            &[
                Opt::Release("r1".into()),
                Opt::Port(5601),
                Opt::Release("r2".into()),
                Opt::Release("r3".into()),
                Opt::Port(5602),
                Opt::Log("/tmp/l1".into()),
                Opt::MaxThreads(3),
                Opt::Include("/tapsets".into()),
            ],
            &[],
            &[],
        );
        let got = servers(&req);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].port, Some(5601));
        assert_eq!(got[1].port, Some(5602));
        assert_eq!(
            got[2].port, None,
            "past the end of a list the default applies"
        );
        assert_eq!(got[0].log, PathBuf::from("/tmp/l1"));
        assert_eq!(got[1].log, PathBuf::from("/var/log/stap-server/log"));
        assert_eq!(got[0].max_threads, Some(3));
        assert_eq!(got[1].max_threads, None);
        assert!(got.iter().all(|s| s.includes == ["/tapsets"]));
    }

    #[test]
    fn all_releases_and_defaults() {
        let req = run(&[Opt::AllReleases, Opt::User("alice".into())], &[], &[]);
        let got = servers(&req);
        assert_eq!(
            got.iter().map(|s| s.release.as_str()).collect::<Vec<_>>(),
            ["6.1.0-a", "6.12.0-b"]
        );
        assert!(got.iter().all(|s| s.user == "alice" && s.arch == "x86_64"));
        let only_user = servers(&run(&[Opt::User("bob".into())], &[], &[]));
        assert_eq!(only_user[0].release, "6.1.0-running");
    }

    #[test]
    fn nickname_prefers_running_then_configured_then_new() {
        let mut conf = ServerConfig {
            nickname: Some("web".into()),
            releases: vec!["r-conf".into()],
            includes: vec!["/conf".into()],
            port: Some(5700),
            ..ServerConfig::default()
        };
        let configured = vec![(PathBuf::from("/c/web.conf"), conf.clone())];
        let got = servers(&run(&[Opt::Nickname("web".into())], &configured, &[]));
        assert_eq!(got[0].release, "r-conf");
        assert_eq!(got[0].nickname.as_deref(), Some("web"));
        assert_eq!(
            got[0].port,
            Some(5700),
            "an unset list keeps the configured port"
        );

        let mut live = spec("r-live");
        live.nickname = Some("web".into());
        let observed = vec![running(live, 42)];
        let got = servers(&run(&[Opt::Nickname("web".into())], &configured, &observed));
        assert_eq!(got[0].release, "r-live");

        conf.nickname = Some("other".into());
        let req = run(
            &[Opt::Nickname("new".into()), Opt::Release("r9".into())],
            &[(PathBuf::from("/c/o.conf"), conf)],
            &[],
        );
        match &req.targets.as_ref().unwrap()[0] {
            Target::UnknownNickname { nickname, spec } => {
                assert_eq!(nickname, "new");
                assert_eq!(spec.nickname.as_deref(), Some("new"));
                assert_eq!(spec.release, "r9");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn later_options_override_a_nickname_and_drop_it() {
        let configured = vec![(
            PathBuf::from("/c/web.conf"),
            ServerConfig {
                nickname: Some("web".into()),
                releases: vec!["r1".into()],
                user: Some("carol".into()),
                ..ServerConfig::default()
            },
        )];
        let got = servers(&run(
            &[Opt::Nickname("web".into()), Opt::User("dave".into())],
            &configured,
            &[],
        ));
        assert_eq!(got[0].user, "dave");
        assert_eq!(got[0].release, "r1");
        assert_eq!(got[0].nickname, None);
        // Options before -n are replaced by the configuration.
        let got = servers(&run(
            &[Opt::User("dave".into()), Opt::Nickname("web".into())],
            &configured,
            &[],
        ));
        assert_eq!(got[0].user, "carol");
        assert_eq!(got[0].nickname.as_deref(), Some("web"));
    }

    #[test]
    fn pid_brings_in_the_running_server() {
        let mut live = spec("r-live");
        live.includes = vec!["/x".into()];
        let observed = vec![running(spec("other"), 7), running(live.clone(), 42)];
        let got = servers(&run(&[Opt::Pid(42)], &[], &observed));
        assert_eq!(got, [live]);
        let err = resolve(
            &[Opt::Pid(43)],
            &GlobalConfig::default(),
            &[],
            &observed,
            &host(),
        )
        .unwrap_err();
        assert_eq!(err, NoSuchPid(43));
    }

    #[test]
    fn precedence_of_image_user_and_limits() {
        let global = GlobalConfig {
            stap_user: Some("svc".into()),
            image: Some("img:global".into()),
            limits: Limits {
                pids: Some(100),
                memory: Some(2 << 30),
                ..Limits::default()
            },
            tenant: Some("team-a".into()),
            ..GlobalConfig::default()
        };
        let cfg = ServerConfig {
            image: Some("img:conf".into()),
            limits: Limits {
                pids: Some(50),
                ..Limits::default()
            },
            ..ServerConfig::default()
        };
        let overrides = Overrides {
            limits: Limits {
                memory: Some(3 << 30),
                ..Limits::default()
            },
            ..Overrides::default()
        };
        let got = configured_specs(
            &[(PathBuf::from("a.conf"), cfg)],
            &global,
            &host(),
            &overrides,
        );
        assert_eq!(got[0].user, "svc");
        assert_eq!(got[0].image, "img:conf");
        assert_eq!(got[0].limits.pids, 50);
        assert_eq!(got[0].limits.memory, 3 << 30);
        assert_eq!(got[0].tenant, "team-a");
        let got = default_specs(&global, &host(), &Lists::default(), &Overrides::default());
        assert_eq!(got[0].image, "img:global");
        assert_eq!(got[0].limits.pids, 100);
    }

    #[test]
    fn designation_and_settings() {
        let a = spec("r1");
        let mut b = spec("r1");
        b.nickname = Some("x".into());
        b.port = Some(5601);
        assert!(a.designates(&b));
        assert!(a.same_settings(&b), "an unpinned port accepts any port");
        let mut c = a.clone();
        c.nickname = Some("y".into());
        assert!(!c.designates(&b));
        c.port = Some(5602);
        assert!(!c.same_settings(&b));
        assert!(!spec("r2").designates(&b));
    }

    #[test]
    fn arch_from_the_tree_and_images_per_arch() {
        let mut h = host();
        h.installed = vec!["6.1.0-57-amd64".into(), "6.1.0-57-arm64".into()];
        h.trees = crate::arch::Trees::default()
            .with("6.1.0-57-amd64", "x86_64", &[("arm64", "6.1.0-57-arm64")])
            .with("6.1.0-57-arm64", "arm64", &[("x86_64", "6.1.0-57-amd64")])
            .with("/srv/arm", "arm64", &[]);
        let global = GlobalConfig::default();
        let resolve = |opts: &[Opt], observed: &[Server]| {
            servers(&resolve(opts, &global, &[], observed, &h).unwrap())
        };
        let all = resolve(&[Opt::AllReleases], &[]);
        assert_eq!(
            all.iter()
                .map(|s| (s.arch.as_str(), s.image.as_str()))
                .collect::<Vec<_>>(),
            [
                ("x86_64", "stap-server:latest"),
                ("arm64", "stap-server-arm64:latest")
            ],
            "-i gives each server its tree's arch"
        );
        let path = resolve(&[Opt::Release("/srv/arm".into())], &[]);
        assert_eq!(path[0].arch, "arm64");

        // An arch asked for a named release is kept, for the tree check to refuse.
        let asked = resolve(
            &[
                Opt::Arch("arm64".into()),
                Opt::Release("6.1.0-57-amd64".into()),
            ],
            &[],
        );
        assert_eq!(
            (asked[0].arch.as_str(), asked[0].release.as_str()),
            ("arm64", "6.1.0-57-amd64")
        );

        // -n NICK -a ARCH: NICK's server, on its tree's sibling for ARCH.
        let mut native = ServerSpec::example("6.1.0-57-amd64");
        native.nickname = Some("native".into());
        native.includes = vec!["/opt/tapsets".into()];
        let observed = [running(native, 42)];
        let like = resolve(
            &[Opt::Nickname("native".into()), Opt::Arch("arm64".into())],
            &observed,
        );
        assert_eq!(like[0].arch, "arm64");
        assert_eq!(like[0].release, "6.1.0-57-arm64");
        assert_eq!(like[0].image, "stap-server-arm64:latest");
        assert_eq!(like[0].includes, ["/opt/tapsets"]);
        assert_eq!(like[0].nickname, None);
    }

    #[test]
    fn arch_names() {
        assert_eq!(stap_arch("x86_64"), "x86_64");
        assert_eq!(stap_arch("i686"), "i386");
        assert_eq!(stap_arch("aarch64"), "arm64");
        assert_eq!(stap_arch("armv7l"), "arm");
        assert_eq!(stap_arch("ppc64le"), "powerpc");
    }
}

//! The actions: configuration loaded, options resolved, the plan carried out on the engine,
//! the outcome reported. Each action is short glue over the other modules.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::advertise::Publisher;
use crate::announce::{self, Avahi};
use crate::body::{self, Identity, SERVER_PORT};
use crate::buildtree::{self, BuildTree};
use crate::cli::{Action, Invocation, Opt};
use crate::config::{self, ConfigError, GlobalConfig, ServerConfig};
use crate::engine::{CONCURRENCY, Created, Engine, STOP_CONCURRENCY};
use crate::error::{Error, Result};
use crate::plan::{self, Start, Stop};
use crate::report::{self, Report};
use crate::spec::{self, Host, Request, Server, ServerSpec};
use crate::{image, lock, status_json, trust};

/// How long a server may take to accept connections before `start` gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopping server gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Everything read from the host before the engine is asked anything.
pub struct Settings {
    pub global: GlobalConfig,
    pub configured: Vec<(PathBuf, ServerConfig)>,
    pub host: Host,
}

impl Settings {
    pub fn tenant(&self) -> String {
        self.global
            .tenant
            .clone()
            .unwrap_or_else(|| spec::DEFAULT_TENANT.into())
    }
}

/// Reads the global file, then the last `-c` file (which must exist), then `--tenant`, then
/// the server files. Every bad line of every file is reported.
pub fn load_settings(opts: &[Opt]) -> Result<Settings> {
    let global_file = std::env::var_os("STAP_SERVER_GLOBAL_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_GLOBAL_FILE));
    let mut global = GlobalConfig::default();
    if global_file.is_file() {
        global = read_config(&global_file, |r, p| config::parse_global(r, p, &global))?;
    }
    let extras: Vec<&PathBuf> = opts
        .iter()
        .filter_map(|o| match o {
            Opt::Config(p) => Some(p),
            _ => None,
        })
        .collect();
    // Every file named must exist, though only the last is read.
    let missing: Vec<ConfigError> = extras
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| ConfigError {
            file: p.to_path_buf(),
            line: 0,
            message: "no such configuration file".into(),
        })
        .collect();
    if !missing.is_empty() {
        return Err(Error::Config(missing));
    }
    if let Some(path) = extras.last() {
        global = read_config(path, |r, p| config::parse_global(r, p, &global))?;
    }
    if let Some(t) = opts.iter().rev().find_map(|o| match o {
        Opt::Tenant(t) => Some(t.clone()),
        _ => None,
    }) {
        global.tenant = Some(t);
    }

    let mut configured = Vec::new();
    let mut errors = Vec::new();
    if let Ok(dir) = fs::read_dir(&global.config_path) {
        let mut paths: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf") && p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            match read_config(&path, config::parse_server) {
                Ok(cfg) => configured.push((path, cfg)),
                Err(Error::Config(mut e)) => errors.append(&mut e),
                Err(e) => return Err(e),
            }
        }
    }
    if !errors.is_empty() {
        return Err(Error::Config(errors));
    }

    let uts = nix::sys::utsname::uname().map_err(|e| Error::Invalid(format!("uname: {e}")))?;
    let installed = spec::installed_releases(&global.modules_path).unwrap_or_default();
    let host = Host {
        arch: spec::stap_arch(&uts.machine().to_string_lossy()),
        release: uts.release().to_string_lossy().into_owned(),
        installed,
    };
    Ok(Settings {
        global,
        configured,
        host,
    })
}

fn read_config<T>(
    path: &Path,
    parse: impl FnOnce(fs::File, &Path) -> std::result::Result<T, Vec<ConfigError>>,
) -> Result<T> {
    let file = fs::File::open(path).map_err(|e| {
        Error::Config(vec![ConfigError {
            file: path.into(),
            line: 0,
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse(file, path).map_err(Error::Config)
}

/// Whether the invocation handles SIGINT and SIGTERM itself (`announce` following events
/// ends with a last reconciliation); for the others the caller interrupts and cleans up.
pub fn handles_signals(invocation: &Invocation) -> bool {
    matches!(invocation, Invocation::Announce { once: false, .. })
}

/// Runs one invocation; returns the exit status.
pub async fn run(invocation: Invocation, cleanup: Cleanup) -> Result<u8> {
    match invocation {
        Invocation::Service { action, opts, json } => service(action, &opts, json, cleanup).await,
        Invocation::ImageBuild { registry, opts } => {
            let settings = load_settings(&opts)?;
            let engine = Engine::connect().await?;
            let name = image_name(&opts, &settings.global);
            let _lock = lock::Lock::wait(Path::new(lock::HOST_DIR), "image").await?;
            image::build(&engine, &name, registry).await?;
            Ok(0)
        }
        Invocation::Announce { once, opts } => {
            let settings = load_settings(&opts)?;
            let tenant = settings.tenant();
            let dir = &settings.global.avahi_services_path;
            if let Some(warning) = Avahi::probe(dir).warning(dir) {
                eprintln!("stap-server: {warning}");
            }
            let publisher = Publisher::new(dir.clone());
            let engine = Engine::connect().await?;
            if once {
                announce::once(&engine, &tenant, &publisher).await?;
            } else {
                let mut term = signal(SignalKind::terminate())
                    .map_err(|e| Error::Invalid(format!("cannot catch SIGTERM: {e}")))?;
                tokio::select! {
                    r = announce::follow(&engine, &tenant, &publisher) => r?,
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                // Servers stopped along with this announcer (docker-compose down stops them
                // first) must not stay advertised: one last reconciliation, then leave.
                announce::once(&engine, &tenant, &publisher).await?;
            }
            Ok(0)
        }
        Invocation::Compose { output, opts } => compose(&opts, output.as_deref(), cleanup).await,
        Invocation::Log(command) => crate::loghold::run(command).await,
    }
}

fn image_name(opts: &[Opt], global: &GlobalConfig) -> String {
    opts.iter()
        .rev()
        .find_map(|o| match o {
            Opt::Image(i) => Some(i.clone()),
            _ => None,
        })
        .or_else(|| global.image.clone())
        .unwrap_or_else(|| spec::DEFAULT_IMAGE.into())
}

async fn service(action: Action, opts: &[Opt], json: bool, cleanup: Cleanup) -> Result<u8> {
    let settings = load_settings(opts)?;
    if action == Action::Reload {
        return Ok(3);
    }
    if let Some(dir) = settings.global.log_file.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io("cannot create the log directory", dir, e))?;
    }
    let tenant = settings.tenant();
    let engine = match Engine::connect().await {
        Ok(engine) => engine,
        // LSB: the status of a service whose state cannot be known is 4.
        Err(e @ Error::EngineUnreachable { .. }) if action == Action::Status => {
            eprintln!("stap-server: {e}");
            return Ok(4);
        }
        Err(e) => return Err(e),
    };
    if action != Action::Status {
        finish_stops(&engine, &settings.global.stat_path, &tenant).await?;
    }
    let observed = engine.servers(&tenant).await?;
    let request = match spec::resolve(
        opts,
        &settings.global,
        &settings.configured,
        &observed,
        &settings.host,
    ) {
        Ok(r) => r,
        Err(spec::NoSuchPid(pid)) => {
            println!("No stap-server running as pid {pid}");
            return Ok(1);
        }
    };
    if request.overrides.password && action != Action::Status {
        return Err(Error::Invalid(
            "-P is not supported: stap-serverd would ask for the certificate database password \
             on a terminal, and a server container has none"
                .into(),
        ));
    }
    let mut ctx = Ctx {
        engine,
        settings,
        report: Report::new(Path::new("/dev/null")),
        cleanup,
        handed: Vec::new(),
    };
    ctx.report = Report::new(&ctx.settings.global.log_file);
    let targets = request.targets.as_deref();
    let ok = match action {
        Action::Status => return Ok(status(&mut ctx, targets, &observed, json).await),
        Action::Start => {
            let specs = ctx.wanted(&request);
            ctx.start(&specs, &observed).await?
        }
        Action::Stop => {
            let stopped = ctx.stop(plan::stop(targets, &observed)).await;
            if targets.is_none() {
                ctx.remove_leftovers(&tenant).await?;
            }
            stopped
        }
        Action::Restart => {
            let specs = match targets {
                Some(t) => plan::target_specs(t),
                None if observed.iter().any(|s| s.managed_by_cli) => {
                    plan::specs_of(&managed(&observed))
                }
                None => ctx.wanted(&request),
            };
            let stopped = ctx.stop(plan::stop(targets, &observed)).await;
            let left = ctx.engine.servers(&tenant).await?;
            ctx.start(&specs, &left).await? && stopped
        }
        Action::CondRestart => {
            let (running, idle) = match targets {
                Some(t) => plan::running_targets(t, &observed),
                None => (managed(&observed), vec![]),
            };
            if targets.is_none() && running.is_empty() {
                ctx.report.say("No managed stap-server is running");
                ctx.report.outcome("condrestart", Ok(()));
                return Ok(0);
            }
            for spec in &idle {
                let what = format!("stap-server {} is not running", report::spec_options(spec));
                ctx.report.say(&what);
                ctx.report.outcome(&what, Ok(()));
            }
            let specs = plan::specs_of(&running);
            let stopped = ctx
                .stop(running.into_iter().map(Stop::Remove).collect())
                .await;
            let left = ctx.engine.servers(&tenant).await?;
            ctx.start(&specs, &left).await? && stopped
        }
        Action::ForceReload => {
            let stopped = ctx.stop(plan::stop(None, &observed)).await;
            let specs = ctx.wanted(&request);
            let left = ctx.engine.servers(&tenant).await?;
            ctx.start(&specs, &left).await? && stopped
        }
        Action::Reload => unreachable!("handled above"),
    };
    ctx.announce(&tenant).await;
    // Handed over only now, whole, trusted and advertised, with no await after: an interrupt
    // before this removes what the action made.
    for name in &ctx.handed {
        ctx.cleanup.done(name);
    }
    Ok(if ok { 0 } else { 1 })
}

/// Finishes the stops that killed managers left under way (see [`lock::Stopping`]), so that
/// a server the engine may still be ending is not taken for a running one: each under its
/// lock, so that a stop a live manager is carrying out is left to it.
async fn finish_stops(engine: &Engine, dir: &Path, tenant: &str) -> Result<()> {
    for left in lock::Stopping::left(dir, tenant)? {
        let _lock = lock::Lock::wait(dir, &left.name).await?;
        if left.unfinished() {
            tracing::info!(server = %left.name, "finishing a stop a killed manager left");
            engine.remove(&left.id, STOP_GRACE).await?;
            left.done()?;
        }
    }
    Ok(())
}

/// `compose`: the servers that `start` would make, written as a compose file (to `output`,
/// else standard output). Their image, network and certificate volume are made first, so the
/// file comes up as it is, and a server keeps its certificate when it moves to compose.
async fn compose(opts: &[Opt], output: Option<&Path>, cleanup: Cleanup) -> Result<u8> {
    let settings = load_settings(opts)?;
    let engine = Engine::connect().await?;
    let observed = engine.servers(&settings.tenant()).await?;
    let request = spec::resolve(
        opts,
        &settings.global,
        &settings.configured,
        &observed,
        &settings.host,
    )
    .map_err(|spec::NoSuchPid(pid)| {
        Error::Invalid(format!("No stap-server running as pid {pid}"))
    })?;
    let ctx = Ctx {
        engine,
        report: Report::new(&settings.global.log_file),
        settings,
        cleanup,
        handed: Vec::new(),
    };
    let wanted = ctx.wanted(&request);
    let prepared = ctx.prepare_all(wanted.iter().map(|s| (s, None)), false)?;
    ctx.ensure_shared(&prepared).await?;
    let services: Vec<crate::compose::Service> = prepared
        .iter()
        .map(|p| crate::compose::Service {
            name: body::container_name(&p.spec),
            body: body::container_body(&p.spec, &p.tree, p.who, "compose", None, &p.host_name),
        })
        .collect();
    let text = serde_json::to_string_pretty(&crate::compose::document(&services))
        .expect("a compose document always serializes")
        + "\n";
    match output {
        None => print!("{text}"),
        Some(path) => {
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, &text)
                .and_then(|()| fs::rename(&tmp, path))
                .map_err(|e| Error::io("cannot write the compose file", path, e))?;
        }
    }
    Ok(0)
}

fn managed(observed: &[Server]) -> Vec<Server> {
    observed
        .iter()
        .filter(|s| s.managed_by_cli)
        .cloned()
        .collect()
}

/// `status`: classic lines and LSB codes (0 all running, 1 one dead, 3 none or one missing).
/// With `json`, the servers as a JSON array, and what classic says of the missing on stderr.
async fn status(
    ctx: &mut Ctx,
    targets: Option<&[spec::Target]>,
    observed: &[Server],
    json: bool,
) -> u8 {
    let mut rc = 0;
    let mut say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            ctx.report.print(line);
        }
    };
    let shown: Vec<Server> = match targets {
        None => {
            if observed.is_empty() {
                if json {
                    println!("[]");
                } else {
                    say("No managed stap-server is running".into());
                }
                return 3;
            }
            observed.to_vec()
        }
        Some(targets) => {
            let mut shown = Vec::new();
            for target in targets {
                match target {
                    spec::Target::UnknownNickname { nickname, .. } => {
                        say(format!(
                            "No configuration found for the nickname '{nickname}'"
                        ));
                        rc = 3;
                    }
                    spec::Target::Server(spec) => {
                        let found: Vec<&Server> = observed
                            .iter()
                            .filter(|s| spec.designates(&s.spec))
                            .collect();
                        if found.is_empty() {
                            say(format!(
                                "stap-server {} is not running",
                                report::spec_options(spec)
                            ));
                            rc = 3;
                        }
                        shown.extend(found.into_iter().cloned());
                    }
                }
            }
            shown
        }
    };
    if shown.iter().any(|s| !s.running()) && rc == 0 {
        rc = 1;
    }
    if json {
        let facts = status_json::gather(&ctx.engine, &shown).await;
        println!("{}", status_json::render(&shown, &facts));
        return rc;
    }
    let mut serials = announce::Serials::default();
    for server in &shown {
        ctx.report.print(report::status_line(server));
        if let Ok(serial) = serials.of(&ctx.engine, server).await {
            ctx.report.print(format!("  certificate serial {serial}"));
        }
    }
    rc
}

/// Containers this process is making and has not handed over yet (ready and advertised),
/// removed if the process is interrupted.
///
/// Each is known by name from before its create request: an interrupt may come while the
/// engine is making it, and the engine finishes a request whose caller has gone. Each keeps
/// the host lock it is made under until it is handed over or removed, so no other manager
/// takes that name in between.
#[derive(Clone, Default)]
pub struct Cleanup(Arc<Mutex<Vec<Pending>>>);

struct Pending {
    name: String,
    _lock: Option<lock::Lock>,
    /// Turns true when the engine has answered the create request.
    created: Option<watch::Receiver<bool>>,
}

/// How long an interrupted manager waits for the engine to finish a create it asked for.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

impl Cleanup {
    fn add(&self, name: &str, lock: Option<lock::Lock>, created: Option<watch::Receiver<bool>>) {
        self.0.lock().expect("not poisoned").push(Pending {
            name: name.to_string(),
            _lock: lock,
            created,
        });
    }
    fn done(&self, name: &str) {
        self.0
            .lock()
            .expect("not poisoned")
            .retain(|p| p.name != name);
    }
    /// Removes what is still pending (on SIGINT/SIGTERM), then releases its locks.
    pub async fn run(&self) {
        let pending: Vec<Pending> = self.0.lock().expect("not poisoned").drain(..).collect();
        if pending.is_empty() {
            return;
        }
        if let Ok(engine) = Engine::connect().await {
            for mut p in pending {
                if let Some(created) = &mut p.created {
                    let _ =
                        tokio::time::timeout(CREATE_TIMEOUT, created.wait_for(|done| *done)).await;
                }
                let _ = engine.remove(&p.name, Duration::ZERO).await;
            }
        }
    }
}

struct Ctx {
    engine: Engine,
    settings: Settings,
    report: Report,
    cleanup: Cleanup,
    /// Servers this action made, handed over (out of `cleanup`) when the action ends.
    handed: Vec<String>,
}

/// What a server needs from the host, checked before anything is created.
struct Prepared {
    spec: ServerSpec,
    tree: BuildTree,
    who: Identity,
    /// A host port allotted from the tenant's `PORT_RANGE` (for servers with no `PORT`).
    host_port: Option<u16>,
    /// A stopped container the plan found for this server, to be removed first.
    replaces: Option<Server>,
    /// This host's name, which the server's container and certificate carry.
    host_name: String,
}

impl Ctx {
    /// The servers a start-like action makes when none was named: configured, else default.
    fn wanted(&self, request: &Request) -> Vec<ServerSpec> {
        if let Some(t) = &request.targets {
            return plan::target_specs(t);
        }
        let s = &self.settings;
        let configured =
            spec::configured_specs(&s.configured, &s.global, &s.host, &request.overrides);
        if configured.is_empty() {
            spec::default_specs(&s.global, &s.host, &request.lists, &request.overrides)
        } else {
            configured
        }
    }

    /// Stops servers concurrently; reports in plan order. True when all stopped.
    async fn stop(&mut self, steps: Vec<Stop>) -> bool {
        let engine = self.engine.clone();
        let lock_dir = &self.settings.global.stat_path;
        let results: Vec<Result<()>> = stream::iter(steps.iter().map(|step| {
            let engine = engine.clone();
            async move {
                match step {
                    Stop::Remove(server) => {
                        // A start of this server under way finishes first; then it goes.
                        let _lock = lock::Lock::wait(lock_dir, &server.name).await?;
                        let stopping = lock::Stopping::record(
                            lock_dir,
                            &server.name,
                            &server.id,
                            &server.spec.tenant,
                        )?;
                        // Its advertisement goes with the action's reconciliation, which
                        // also keeps that of a server of that name made since.
                        engine.remove(&server.id, STOP_GRACE).await?;
                        stopping.done()
                    }
                    _ => Ok(()),
                }
            }
        }))
        .buffered(STOP_CONCURRENCY)
        .collect()
        .await;
        let mut ok = true;
        for (step, result) in steps.iter().zip(results) {
            match step {
                Stop::Nothing => {
                    self.report.say("Stopping stap-server: ");
                    self.report
                        .outcome("stap-server: No managed servers to stop", Ok(()));
                }
                Stop::NotRunning(spec) => {
                    let what = format!("stap-server {}", report::spec_options(spec));
                    self.report.say(format!("Stopping {what}"));
                    self.report.outcome(&format!("{what} stop"), Ok(()));
                }
                Stop::UnknownNickname(nick, spec) => {
                    self.report
                        .say(format!("No configuration found for the nickname '{nick}'"));
                    let what = format!("stap-server stop {}", report::spec_options(spec));
                    self.report
                        .outcome(&what, Err(format!("unknown nickname {nick}")));
                    ok = false;
                }
                Stop::Remove(server) => {
                    let what = format!("stap-server {}", report::running_options(server));
                    self.report.say(format!("Stopping {what}"));
                    ok &= result.is_ok();
                    self.report
                        .outcome(&format!("{what} stop"), result.map_err(|e| e.to_string()));
                }
            }
        }
        ok
    }

    /// Starts servers: every new one is checked first (nothing is made if one is bad), then
    /// all are created and awaited concurrently. True when all run.
    async fn start(&mut self, specs: &[ServerSpec], observed: &[Server]) -> Result<bool> {
        let steps = plan::start(specs, observed);
        let mut prepared = self.prepare_all(
            steps.iter().filter_map(|step| match step {
                Start::Create(spec) => Some((spec, None)),
                Start::Replace(old, spec) => Some((spec, Some(old.clone()))),
                _ => None,
            }),
            true,
        )?;
        for p in &prepared {
            self.report.log(&debuginfo_note(&p.tree));
        }
        // Ports are allotted under one host lock per tenant, held until the containers run,
        // so concurrent managers never hand out the same port.
        let _ports = match self.settings.global.port_range {
            Some(range) if prepared.iter().any(|p| p.spec.port.is_none()) => {
                let tenant = self.settings.tenant();
                let lock =
                    lock::Lock::wait(&self.settings.global.stat_path, &format!("ports-{tenant}"))
                        .await?;
                let taken: Vec<u16> = self
                    .engine
                    .servers(&tenant)
                    .await?
                    .iter()
                    .filter_map(|s| s.host_port.or(s.spec.port))
                    .collect();
                allot_ports(&mut prepared, range, &taken)?;
                Some(lock)
            }
            _ => None,
        };
        self.ensure_shared(&prepared).await?;
        let engine = self.engine.clone();
        let cleanup = self.cleanup.clone();
        let lock_dir = &self.settings.global.stat_path;
        // Each server's lock is held until it is handed over (advertised), which is after all
        // are made or found: taken in name order, so managers starting overlapping sets never
        // wait on each other in a circle.
        let mut names: Vec<(String, Option<usize>)> = prepared
            .iter()
            .enumerate()
            .map(|(i, p)| (body::container_name(&p.spec), Some(i)))
            .chain(steps.iter().filter_map(|step| match step {
                Start::Running(s) => Some((s.name.clone(), None)),
                _ => None,
            }))
            .collect();
        names.sort();
        let mut locks: Vec<Option<lock::Lock>> = prepared.iter().map(|_| None).collect();
        let mut found_locks = Vec::new();
        for (name, i) in names {
            let lock = lock::Lock::wait(lock_dir, &name).await?;
            match i {
                Some(i) => locks[i] = Some(lock),
                None => found_locks.push(lock),
            }
        }
        // A server found running may be one a killed or concurrent manager started: it
        // counts once it accepts connections, and it gets its advertisement.
        let settled: Vec<Result<Server>> = stream::iter(steps.iter().filter_map(|step| {
            let Start::Running(s) = step else { return None };
            let engine = engine.clone();
            Some(async move { settle(&engine, s).await })
        }))
        .buffered(CONCURRENCY)
        .collect()
        .await;
        let results: Vec<Result<Server>> =
            stream::iter(prepared.iter().zip(locks).map(|(p, lock)| {
                let engine = engine.clone();
                let cleanup = cleanup.clone();
                async move { create_and_wait(&engine, p, lock, &cleanup, lock_dir).await }
            }))
            .buffered(CONCURRENCY)
            .collect()
            .await;

        let mut results = results.into_iter();
        let mut settled = settled.into_iter();
        let mut ok = true;
        let mut started = Vec::new();
        for step in &steps {
            let (spec, outcome): (&ServerSpec, std::result::Result<Option<Server>, String>) =
                match step {
                    Start::Running(s) => (
                        &s.spec,
                        settled
                            .next()
                            .expect("one result per running server")
                            .map(Some)
                            .map_err(|e| e.to_string()),
                    ),
                    Start::Conflict(spec, s) => (
                        spec,
                        Err(format!(
                            "a server for release {} already runs with other settings ({}): \
                             use restart to apply these",
                            s.spec.release,
                            report::running_options(s)
                        )),
                    ),
                    Start::Create(spec) | Start::Replace(_, spec) => (
                        spec,
                        results
                            .next()
                            .expect("one result per creation")
                            .map(Some)
                            .map_err(|e| e.to_string()),
                    ),
                };
            let what = format!("stap-server {}", report::spec_options(spec));
            self.report.say(format!("Starting {what}"));
            if let Ok(Some(server)) = &outcome {
                started.push(server.clone());
                self.handed.push(server.name.clone());
            }
            ok &= outcome.is_ok();
            self.report
                .outcome(&format!("{what} start"), outcome.map(|_| ()));
        }
        drop(found_locks);
        self.trust(&started).await;
        Ok(ok)
    }

    /// The image (built when missing), the tenant's network and each user's certificate, once
    /// per distinct value, before anything concurrent.
    async fn ensure_shared(&self, prepared: &[Prepared]) -> Result<()> {
        let mut images = std::collections::BTreeSet::new();
        for p in prepared {
            if images.insert(p.spec.image.clone()) {
                image::ensure(&self.engine, &p.spec.image).await?;
            }
        }
        let mut volumes = std::collections::BTreeSet::new();
        for p in prepared {
            let volume = body::cert_volume(&p.spec.tenant, &p.spec.user);
            if volumes.insert(volume.clone()) {
                let network = body::network_name(&p.spec.tenant);
                // The engine does not refuse a second network of the same name: creating it
                // is once-only work, like the certificate.
                let lock = lock::Lock::wait(&self.settings.global.stat_path, &network).await?;
                self.engine.ensure_network(&network, &p.spec.tenant).await?;
                drop(lock);
                self.ensure_certificate(p, &volume).await?;
            }
        }
        Ok(())
    }

    /// Host-side checks of every server to be made (each with the stopped container it
    /// replaces, if any); every problem is reported, and nothing is made if there is one.
    fn prepare_all<'a>(
        &self,
        specs: impl Iterator<Item = (&'a ServerSpec, Option<Server>)>,
        check_port: bool,
    ) -> Result<Vec<Prepared>> {
        let mut prepared = Vec::new();
        let mut problems = Vec::new();
        for (spec, replaces) in specs {
            match self.prepare(spec, check_port) {
                Ok(p) => prepared.push(Prepared { replaces, ..p }),
                Err(e) => problems.push(e.to_string()),
            }
        }
        if !problems.is_empty() {
            return Err(Error::Invalid(problems.join("\n")));
        }
        Ok(prepared)
    }

    /// Host-side checks of one server to be made.
    /// `check_port`: whether a pinned port must be free now (not so for a compose file).
    fn prepare(&self, spec: &ServerSpec, check_port: bool) -> Result<Prepared> {
        let who = identity(&spec.user)?;
        let tree = buildtree::resolve(&spec.release, &self.settings.global.modules_path)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        if let Some(port) = spec.port.filter(|_| check_port) {
            port_free(port)?;
        }
        for path in spec.includes.iter().chain(&spec.runtime) {
            if !Path::new(path).is_dir() {
                return Err(Error::Invalid(format!("{path} is not a directory")));
            }
        }
        // The server appends to its log through a bind mount: the file must exist and be
        // the server user's.
        let log = &spec.log;
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
        }
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io("cannot create the log file", log, e))?;
        nix::unistd::chown(log.as_path(), Some(who.uid.into()), Some(who.gid.into()))
            .map_err(|e| Error::io("cannot hand over the log file", log, e.into()))?;
        if let Some(ssl) = &spec.ssl {
            fs::create_dir_all(ssl).map_err(|e| Error::io("cannot create", ssl, e))?;
            nix::unistd::chown(ssl.as_path(), Some(who.uid.into()), Some(who.gid.into()))
                .map_err(|e| Error::io("cannot hand over", ssl, e.into()))?;
        }
        Ok(Prepared {
            spec: spec.clone(),
            tree,
            who,
            host_port: None,
            replaces: None,
            host_name: host_name(),
        })
    }

    /// Removes the certificate makers a killed manager left behind, each under its volume's
    /// lock so that one at work is left to finish.
    async fn remove_leftovers(&self, tenant: &str) -> Result<()> {
        for name in self.engine.helpers(tenant).await? {
            if let Some(volume) = name.strip_suffix("-init") {
                let _lock = lock::Lock::wait(&self.settings.global.stat_path, volume).await?;
                self.engine.remove(&name, Duration::ZERO).await?;
            }
        }
        Ok(())
    }

    /// Makes the certificate in the user's volume once, under a host lock, so servers started
    /// together never race to create it.
    async fn ensure_certificate(&self, p: &Prepared, volume: &str) -> Result<()> {
        let lock = lock::Lock::wait(&self.settings.global.stat_path, volume).await?;
        // Under the lock, a container of this name is one a killed manager left behind.
        let init = format!("{volume}-init");
        self.engine.remove(&init, Duration::ZERO).await?;
        let mountpoint = self.engine.ensure_volume(volume, &p.spec.tenant).await?;
        if let Some(m) = &mountpoint
            && Path::new(m).join("ssl/server/stap.cert").is_file()
        {
            return Ok(());
        }
        let body = body::cert_init_body(&p.spec.image, volume, p.who, &p.spec.tenant, &p.host_name);
        self.cleanup.add(&init, Some(lock), None);
        let ran = self.engine.run_once(&init, body).await;
        self.cleanup.done(&init);
        let (code, out) = ran?;
        if code != 0 {
            return Err(Error::Invalid(format!(
                "cannot make the certificate in volume {volume} (exit {code}): {}",
                out.trim()
            )));
        }
        Ok(())
    }

    /// Adds the certificates of servers just started to the host's global client trust and
    /// module signer databases, once per certificate volume (all of a user's servers share
    /// one), when this is root on a host with the stap client. A failure is said, not fatal: the servers run, and
    /// clients can still trust them themselves.
    async fn trust(&mut self, started: &[Server]) {
        let Some(stap) = trust::client() else { return };
        let mut volumes = std::collections::BTreeSet::new();
        for server in started {
            let Some(port) = server.host_port else {
                continue;
            };
            if !volumes.insert(server.cert_volume.clone()) {
                continue;
            }
            // A certificate added before, with both databases unchanged since, is not added
            // again: the client's round trip would be most of a start.
            let serial = announce::cert_serial(&self.engine, server).await.ok();
            if serial.as_deref().is_some_and(trust::recorded) {
                continue;
            }
            match trust::trust(&stap, port).await {
                Ok(()) => {
                    if let Some(serial) = &serial {
                        trust::record(serial);
                    }
                    self.report.log(&format!(
                        "{} trusted by the host's clients ({} and {})",
                        server.name,
                        trust::GLOBAL_CLIENT_DB,
                        trust::SIGNER_DB
                    ))
                }
                Err(e) => eprintln!(
                    "stap-server: cannot add the certificate of {} to {}: {e}",
                    server.name,
                    trust::GLOBAL_CLIENT_DB
                ),
            }
        }
    }

    /// Makes the tenant's mDNS advertisements match its running servers, after an action
    /// changed them. Where avahi is absent it says so once; a failure is said, not fatal.
    async fn announce(&mut self, tenant: &str) {
        let dir = self.settings.global.avahi_services_path.clone();
        if let Some(warning) = Avahi::probe(&dir).warning(&dir) {
            self.report.say(warning);
        }
        match announce::reconcile(&self.engine, tenant, &Publisher::new(dir)).await {
            Ok(outcome) => {
                for (name, reason) in outcome.failed {
                    eprintln!("stap-server: cannot advertise {name}: {reason}");
                }
            }
            Err(e) => eprintln!("stap-server: cannot update the mDNS advertisements: {e}"),
        }
    }
}

/// Makes one server and waits until it accepts connections. On failure the container is
/// removed and the error carries its last log lines.
///
/// One manager at a time makes a given server (`lock`, the host lock on its name): the others
/// wait, then find it running and wait for it like their own. So a container of that name
/// that is not running, found under the lock, was left by a manager that died: it is
/// replaced.
async fn create_and_wait(
    engine: &Engine,
    p: &Prepared,
    mut lock: Option<lock::Lock>,
    cleanup: &Cleanup,
    lock_dir: &Path,
) -> Result<Server> {
    let name = body::container_name(&p.spec);
    if let Some(old) = &p.replaces
        && old.name != name
        && engine
            .find(&old.id)
            .await?
            .is_some_and(|rt| rt.state != "running")
    {
        engine.remove(&old.id, STOP_GRACE).await?;
    }
    let id = match engine.find(&name).await? {
        Some(rt) if rt.state == "running" => name.clone(),
        found => {
            if found.is_some() {
                engine.remove(&name, Duration::ZERO).await?;
            }
            let body =
                body::container_body(&p.spec, &p.tree, p.who, "cli", p.host_port, &p.host_name);
            // The request runs as a task of its own, so that an interrupt can wait for the
            // engine's answer before it removes what the engine made.
            let (answered, created) = watch::channel(false);
            cleanup.add(&name, lock.take(), Some(created));
            let request = tokio::spawn({
                let (engine, name) = (engine.clone(), name.clone());
                async move {
                    let result = engine.create(&name, body).await;
                    let _ = answered.send(true);
                    result
                }
            });
            let result = request
                .await
                .unwrap_or_else(|e| Err(Error::Invalid(format!("creating {name}: {e}"))));
            match result {
                Ok(Created::New(id)) => id,
                failed => {
                    cleanup.done(&name);
                    return Err(failed.err().unwrap_or_else(|| {
                        Error::Invalid(format!(
                            "container {name} was made at the same time by a manager that does \
                             not share this host's lock directory ({})",
                            lock_dir.display()
                        ))
                    }));
                }
            }
        }
    };
    let result = async {
        engine.start(&id).await?;
        wait_ready(engine, &id).await
    }
    .await;
    match result {
        Ok(rt) => Ok(Server {
            spec: p.spec.clone(),
            id: id.clone(),
            name,
            state: "running".into(),
            pid: rt.pid,
            host_port: rt.host_port,
            managed_by_cli: true,
            kernel_release: p.tree.kernel_release.clone(),
            cert_volume: body::cert_volume(&p.spec.tenant, &p.spec.user),
        }),
        Err(e) => {
            let logs = engine.logs_tail(&id, 20).await;
            let _ = engine.remove(&id, Duration::ZERO).await;
            cleanup.done(&name);
            Err(Error::Invalid(format!(
                "{e}\nlast lines of the server's log:\n{}",
                logs.trim_end()
            )))
        }
    }
}

/// A server found running, once it accepts connections, with its current runtime. One that
/// goes down meanwhile (it crashed, or a manager with another lock directory stopped it) is
/// started again, once. A stop whose manager died is finished before this is reached
/// ([`finish_stops`]).
async fn settle(engine: &Engine, s: &Server) -> Result<Server> {
    let rt = match wait_ready(engine, &s.id).await {
        Ok(rt) => rt,
        Err(e) => match engine.find(&s.id).await? {
            Some(rt) if rt.state != "running" => {
                engine.start(&s.id).await?;
                wait_ready(engine, &s.id).await?
            }
            _ => return Err(e),
        },
    };
    Ok(Server {
        state: "running".into(),
        pid: rt.pid,
        host_port: rt.host_port,
        ..s.clone()
    })
}

/// Waits until the server accepts connections, first on its container address (the host
/// port's proxy accepts before the server listens), then on the host port. Connections are
/// tried every 10 ms (a refused one costs nothing); the container's state is looked at again
/// every quarter second, to give up on a server that exited.
async fn wait_ready(engine: &Engine, id: &str) -> Result<crate::engine::Runtime> {
    const TRY_EVERY: Duration = Duration::from_millis(10);
    const STATE_EVERY: Duration = Duration::from_millis(250);
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut rt = engine.inspect(id).await?;
    let mut looked = Instant::now();
    loop {
        if rt.state == "exited" || rt.state == "dead" {
            return Err(Error::Invalid(format!(
                "the server exited (status {}) before accepting connections",
                rt.exit_code.unwrap_or_default()
            )));
        }
        if let (Some(ip), Some(port)) = (rt.ip, rt.host_port) {
            let inner = SocketAddr::new(ip, SERVER_PORT);
            if connects(inner).await && connects(SocketAddr::from(([127, 0, 0, 1], port))).await {
                return Ok(rt);
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Invalid(format!(
                "the server did not accept connections within {} s",
                READY_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(TRY_EVERY).await;
        if rt.ip.is_none() || rt.host_port.is_none() || looked.elapsed() >= STATE_EVERY {
            rt = engine.inspect(id).await?;
            looked = Instant::now();
        }
    }
}

async fn connects(addr: SocketAddr) -> bool {
    tokio::task::spawn_blocking(move || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    })
    .await
    .unwrap_or(false)
}

/// The host's uid and gid of `user`; root and unknown users are refused.
pub fn identity(user: &str) -> Result<Identity> {
    let found = nix::unistd::User::from_name(user)
        .map_err(|e| Error::Invalid(format!("cannot look up user {user}: {e}")))?;
    let Some(u) = found else {
        return Err(Error::Invalid(format!(
            "unknown user '{user}': create it (useradd --system {user}) or choose another with -u"
        )));
    };
    if u.uid.is_root() {
        return Err(Error::Invalid(format!(
            "refusing to run a server as root (user '{user}' has uid 0): choose an unprivileged user with -u"
        )));
    }
    Ok(Identity {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    })
}

/// Gives each server with no pinned port the lowest port of `range` that no server of the
/// tenant has, that no other server here was given, and that is free on the host.
fn allot_ports(prepared: &mut [Prepared], range: (u16, u16), taken: &[u16]) -> Result<()> {
    let mut used: std::collections::BTreeSet<u16> = taken.iter().copied().collect();
    used.extend(prepared.iter().filter_map(|p| p.spec.port));
    let mut next = range.0;
    for p in prepared.iter_mut().filter(|p| p.spec.port.is_none()) {
        let port = (next..=range.1)
            .find(|port| !used.contains(port) && port_free(*port).is_ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "no free port left in PORT_RANGE {}-{} for stap-server {}",
                    range.0,
                    range.1,
                    report::spec_options(&p.spec)
                ))
            })?;
        used.insert(port);
        next = port;
        p.host_port = Some(port);
    }
    Ok(())
}

/// A pinned port must be free on the host before anything is created.
fn port_free(port: u16) -> Result<()> {
    TcpListener::bind(("0.0.0.0", port))
        .map(drop)
        .map_err(|e| Error::Invalid(format!("port {port} is already in use on this host ({e})")))
}

/// This host's name, as `hostname` prints it; empty when it cannot be read.
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The log line that says whether a server for `tree` sees kernel debuginfo.
fn debuginfo_note(tree: &BuildTree) -> String {
    let release = &tree.kernel_release;
    if tree.debuginfo.is_empty() {
        format!(
            "release {release}: no kernel debuginfo on this host; DWARF probes \
             (kernel.function, module(...).function, most syscall.*) cannot resolve unless \
             linux-image-{release}-dbg is installed or DEBUGINFOD_URLS is set"
        )
    } else {
        let paths: Vec<String> = tree
            .debuginfo
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!("release {release}: kernel debuginfo {}", paths.join(", "))
    }
}

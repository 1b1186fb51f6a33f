//! Carrying out a plan on the engine: servers stopped, made, awaited until they accept
//! connections, their certificates trusted and advertised; what an interrupt leaves half
//! made is removed ([`Cleanup`]).
//!
//! The plan is executed as decided. What a concurrent manager may have changed since the
//! servers were listed is looked at again, under the host lock that guards it, and only
//! that: the container of each name to be made (`create_and_wait`), the ports taken
//! ([`Executor::start`]), a server found running that went down (`settle`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::advertise::Publisher;
use crate::announce::{self, Avahi, Known};
use crate::body::{self, SERVER_PORT};
use crate::engine::swarm::NodeInfo;
use crate::engine::{CONCURRENCY, Created, Engine, Runtime, STOP_CONCURRENCY};
use crate::error::{Error, Result};
use crate::host::{self, Prepared};
use crate::plan::{Start, Stop};
use crate::report::{self, Report};
use crate::settings::Settings;
use crate::spec::{Server, ServerSpec};
use crate::swarm::Inventory;
use crate::{image, lock, trust};

/// How long a server may take to accept connections before `start` gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopping server gets before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long an interrupted manager waits for the engine to finish a create it asked for.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// The time step of stap-gen-cert's serial numbers (2^19 µs), with room to spare.
const SERIAL_STEP: Duration = Duration::from_millis(600);

/// Whether something accepts connections at an address.
pub type Reach = fn(SocketAddr) -> BoxFuture<'static, bool>;

/// Carries out one action's plan and reports each step.
pub struct Executor {
    pub engine: Engine,
    pub settings: Settings,
    pub report: Report,
    cleanup: Cleanup,
    /// Servers this action made, handed over (out of `cleanup`) when the action ends.
    handed: Vec<String>,
    /// Image versions and certificate serials read on the way, for the advertisements.
    known: Known,
    /// Writes the advertisements (avahi's service files).
    publisher: Publisher,
    /// The servers this action started or found running, advertised when it ends.
    started: Vec<Server>,
    /// The names of the servers this action stopped.
    stopped: BTreeSet<String>,
    /// Locks of servers found running, held like those of the servers made until the action
    /// hands them over.
    held: Vec<lock::Lock>,
    /// The stap client that adds servers to the host's trust (none: they are not added).
    stap: Option<PathBuf>,
    /// How readiness is probed (a TCP connection).
    reach: Reach,
    /// On a swarm, its nodes and their trees (surveyed when the action may start servers).
    pub inventory: Option<Inventory>,
    /// By name: the id of the tenant's network that servers are attached to.
    networks: BTreeMap<String, String>,
}

impl Executor {
    pub fn new(engine: Engine, settings: Settings, cleanup: Cleanup) -> Executor {
        Executor {
            engine,
            report: Report::new(&settings.global.log_file),
            cleanup,
            handed: Vec::new(),
            known: Known::default(),
            publisher: Publisher::new(settings.global.avahi_services_path.clone()),
            started: Vec::new(),
            stopped: BTreeSet::new(),
            held: Vec::new(),
            settings,
            stap: trust::client(),
            reach: |addr| connects(addr).boxed(),
            inventory: None,
            networks: BTreeMap::new(),
        }
    }

    fn lock_dir(&self) -> &Path {
        &self.settings.global.stat_path
    }

    /// Finishes the stops that killed managers left under way (see [`lock::Stopping`]), so
    /// that a server the engine may still be ending is not taken for a running one: each
    /// under its lock, so that a stop a live manager is carrying out is left to it.
    pub async fn finish_stops(&self) -> Result<()> {
        let dir = self.lock_dir();
        for left in lock::Stopping::left(dir, &self.settings.tenant())? {
            let _lock = lock::Lock::wait(dir, &left.name).await?;
            if left.unfinished() {
                tracing::info!(server = %left.name, "finishing a stop a killed manager left");
                self.engine.remove(&left.id, STOP_GRACE).await?;
                left.done()?;
            }
        }
        Ok(())
    }

    /// Says the servers `condrestart` leaves alone.
    pub fn idle(&mut self, idle: &[ServerSpec]) {
        for spec in idle {
            let what = format!("stap-server {} is not running", report::spec_options(spec));
            self.report.say(&what);
            self.report.outcome(&what, Ok(()));
        }
    }

    /// Stops servers concurrently; reports in plan order. True when all stopped.
    pub async fn stop(&mut self, steps: &[Stop]) -> bool {
        let engine = self.engine.clone();
        let lock_dir = self.lock_dir();
        let publisher = &self.publisher;
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
                        let found = engine.remove(&server.id, STOP_GRACE).await?;
                        stopping.done()?;
                        // The container listed was already gone: another manager stopped
                        // it, and may have made a new one of that name since, whose
                        // advertisement stays.
                        if !found
                            && engine
                                .find(&server.name)
                                .await?
                                .is_some_and(|rt| rt.state == "running")
                        {
                            return Ok(());
                        }
                        // Withdrawn under the lock: no server of that name is made meanwhile
                        // whose advertisement this would take away.
                        let key = announce::key(&server.spec.tenant, &server.name);
                        if let Err(e) = publisher.withdraw(&key) {
                            eprintln!("stap-server: cannot withdraw the advertisement {key}: {e}");
                        }
                        Ok(())
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
                    if result.is_ok() {
                        self.stopped.insert(server.name.clone());
                    }
                    ok &= result.is_ok();
                    self.report
                        .outcome(&format!("{what} stop"), result.map_err(|e| e.to_string()));
                }
            }
        }
        ok
    }

    /// Removes the certificate makers (`helpers`, by name) a killed manager left behind, each
    /// under its volume's lock so that one at work is left to finish.
    pub async fn remove_leftovers(&self, helpers: &[String]) -> Result<()> {
        for name in helpers {
            if let Some(volume) = name.strip_suffix("-init") {
                let _lock = lock::Lock::wait(self.lock_dir(), volume).await?;
                self.engine.remove(name, Duration::ZERO).await?;
            }
        }
        Ok(())
    }

    /// Starts servers as planned: every new one is checked on the host first (nothing is
    /// made if one is bad), then all are made and awaited concurrently. True when all run.
    pub async fn start(&mut self, steps: &[Start]) -> Result<bool> {
        let specs = steps.iter().filter_map(|step| match step {
            Start::Create(spec) => Some((spec, None)),
            Start::Replace(old, spec) => Some((spec, Some(old.clone()))),
            _ => None,
        });
        let mut prepared = match &self.inventory {
            Some(inventory) => host::prepare_on_swarm(specs, inventory, &self.settings.host.arch)?,
            None => host::prepare_all(
                specs,
                &self.settings.global.modules_path,
                &self.settings.host.arch,
                true,
            )?,
        };
        for p in &prepared {
            self.report.log(&host::debuginfo_note(&p.tree));
        }
        // Ports are allotted under one host lock per tenant, held until the containers run,
        // so concurrent managers never hand out the same port. The ports taken are listed
        // again under it: a concurrent manager may have taken some since the servers were
        // listed.
        let _ports = match self.settings.global.port_range {
            Some(range) if prepared.iter().any(|p| p.spec.port.is_none()) => {
                let tenant = self.settings.tenant();
                let lock = lock::Lock::wait(self.lock_dir(), &format!("ports-{tenant}")).await?;
                let taken: Vec<u16> = self
                    .engine
                    .servers(&tenant)
                    .await?
                    .iter()
                    .filter_map(|s| s.host_port.or(s.spec.port))
                    .collect();
                host::allot_ports(&mut prepared, range, &taken)?;
                Some(lock)
            }
            _ => None,
        };
        self.make(steps, &prepared).await
    }

    /// Makes the `prepared` servers of `steps` and settles those found running.
    async fn make(&mut self, steps: &[Start], prepared: &[Prepared]) -> Result<bool> {
        self.ensure_shared(prepared).await?;
        let engine = self.engine.clone();
        let cleanup = self.cleanup.clone();
        let reach = self.reach;
        let lock_dir = self.lock_dir().to_path_buf();
        let lock_dir = &lock_dir;
        // Each server's lock is held until it is handed over (advertised), which is after all
        // are made or found: taken in name order, so managers starting overlapping sets never
        // wait on each other in a circle.
        let mut names: Vec<(String, Option<usize>)> = prepared
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), Some(i)))
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
            Some(async move { settle(&engine, s, reach).await })
        }))
        .buffered(CONCURRENCY)
        .collect()
        .await;
        let results: Vec<Result<Server>> =
            stream::iter(prepared.iter().zip(locks).map(|(p, lock)| {
                let engine = engine.clone();
                let cleanup = cleanup.clone();
                let network = self
                    .networks
                    .get(&body::network_name(&p.spec.tenant))
                    .cloned();
                async move {
                    create_and_wait(&engine, p, network, lock, &cleanup, lock_dir, reach).await
                }
            }))
            .buffered(CONCURRENCY)
            .collect()
            .await;

        let mut results = results.into_iter();
        let mut settled = settled.into_iter();
        let mut ok = true;
        let mut started = Vec::new();
        for step in steps {
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
        self.held.extend(found_locks);
        self.trust(&started).await;
        self.started.extend(started);
        Ok(ok)
    }

    /// The image (built when missing), the tenant's network and each user's certificate, once
    /// per distinct value, before anything concurrent.
    pub async fn ensure_shared(&mut self, prepared: &[Prepared]) -> Result<()> {
        for p in prepared {
            if !self.known.versions.contains_key(&p.spec.image) {
                let version = image::ensure(&self.engine, &p.spec.image).await?;
                self.known.versions.insert(p.spec.image.clone(), version);
            }
        }
        let mut volumes = BTreeSet::new();
        for p in prepared {
            let volume = body::cert_volume(&p.spec.tenant, &p.spec.user);
            if let Some(node) = &p.node {
                // On a swarm a volume is a node's own: one certificate per node and user.
                if volumes.insert(format!("{volume}@{}", node.id)) {
                    self.ensure_certificate(p, &volume, Some(node)).await?;
                }
                continue;
            }
            if volumes.insert(volume.clone()) {
                let network = body::network_name(&p.spec.tenant);
                // The engine does not refuse a second network of the same name: creating it
                // is once-only work, like the certificate.
                let lock = lock::Lock::wait(self.lock_dir(), &network).await?;
                let id = self.engine.ensure_network(&network, &p.spec.tenant).await?;
                drop(lock);
                self.networks.insert(network, id);
                self.ensure_certificate(p, &volume, None).await?;
            }
        }
        Ok(())
    }

    /// Makes the certificate in the user's volume once, under a host lock, so servers started
    /// together never race to create it.
    async fn ensure_certificate(
        &self,
        p: &Prepared,
        volume: &str,
        node: Option<&NodeInfo>,
    ) -> Result<()> {
        // On a swarm, the volume of that name on one node, made there by a job placed on it.
        let init = match node {
            None => format!("{volume}-init"),
            Some(n) => format!("{volume}-init-{}", body::short_id(&n.id)),
        };
        let lock =
            lock::Lock::wait(self.lock_dir(), if node.is_none() { volume } else { &init }).await?;
        // Under the lock, a container of this name is one a killed manager left behind.
        self.engine.remove(&init, Duration::ZERO).await?;
        if node.is_none() {
            let mountpoint = self.engine.ensure_volume(volume, &p.spec.tenant).await?;
            if let Some(m) = &mountpoint
                && Path::new(m).join("ssl/server/stap.cert").is_file()
            {
                return Ok(());
            }
        }
        // The maker leaves a certificate the volume holds already as it is.
        let mut body =
            body::cert_init_body(&p.spec.image, volume, p.who, &p.spec.tenant, &p.host_name);
        if let Some(n) = node {
            body.labels
                .get_or_insert_with(Default::default)
                .insert(crate::labels::NODE_ID.into(), n.id.clone());
        }
        // stap-gen-cert numbers a certificate by the time, in steps of 2^19 µs: two made in
        // the same step would share a serial, which the client trust databases take for one
        // certificate (trusting or revoking one would do it to the other). One at a time on
        // this host, each a step after the last.
        let serial = lock::Lock::wait(Path::new(lock::HOST_DIR), "certificate-serial").await?;
        self.cleanup.add(&init, Some(lock), None);
        let ran = self.engine.run_once(&init, body).await;
        self.cleanup.done(&init);
        tokio::time::sleep(SERIAL_STEP).await;
        drop(serial);
        let (code, out) = ran?;
        if code != 0 {
            let on = node
                .map(|n| format!(" on swarm node {}", n.hostname))
                .unwrap_or_default();
            return Err(Error::Invalid(format!(
                "cannot make the certificate in volume {volume}{on} (exit {code}): {}",
                out.trim()
            )));
        }
        Ok(())
    }

    /// Adds the certificates of servers just started to the host's global client trust and
    /// module signer databases, once per certificate volume (all of a user's servers share
    /// one), when this is root on a host with the stap client. A failure is said, not fatal:
    /// the servers run, and clients can still trust them themselves.
    async fn trust(&mut self, started: &[Server]) {
        let Some(stap) = self.stap.clone() else {
            return;
        };
        let mut volumes = BTreeSet::new();
        for server in started {
            let Some(port) = server.host_port else {
                continue;
            };
            if !volumes.insert(announce::volume_key(server)) {
                continue;
            }
            // A certificate added before, with both databases unchanged since, is not added
            // again: the client's round trip would be most of a start. The serial read here
            // serves the advertisement too.
            let serial = self.known.serials.of(&self.engine, server).await.ok();
            if serial.as_deref().is_some_and(trust::recorded) {
                continue;
            }
            let host = server
                .place
                .as_ref()
                .map_or("127.0.0.1", |p| p.address.as_str());
            match trust::trust(&stap, host, port).await {
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

    /// Brings the tenant's mDNS advertisements up to date after an action changed its servers
    /// (`observed`: as listed when the action began; see [`announce::after_action`]), then
    /// hands over the servers it made. Where avahi is absent it says so once; a failure is
    /// said, not fatal.
    pub async fn announce_and_hand_over(mut self, observed: &[Server]) {
        let tenant = self.settings.tenant();
        let dir = self.publisher.dir();
        // A swarm's servers are advertised by the announcer of the node each runs on.
        let here = self.engine.swarm().is_none();
        if here && let Some(warning) = Avahi::probe(dir).warning(dir) {
            self.report.say(warning);
        }
        let outcome = if !here {
            Ok(announce::Outcome::default())
        } else {
            announce::after_action(
                &self.engine,
                &tenant,
                &self.publisher,
                &self.settings.global.stat_path,
                (&self.started, &self.stopped),
                observed,
                &mut self.known,
            )
            .await
        };
        match outcome {
            Ok(outcome) => {
                for (name, reason) in outcome.failed {
                    eprintln!("stap-server: cannot advertise {name}: {reason}");
                }
            }
            Err(e) => eprintln!("stap-server: cannot update the mDNS advertisements: {e}"),
        }
        drop(std::mem::take(&mut self.held));
        // Handed over only now, whole, trusted and advertised, with no await after: an
        // interrupt before this removes what the action made.
        for name in &self.handed {
            self.cleanup.done(name);
        }
    }
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

/// Makes one server and waits until it accepts connections. On failure the container is
/// removed and the error carries its last log lines.
///
/// One manager at a time makes a given server (`lock`, the host lock on its name): the others
/// wait, then find it running and wait for it like their own. So a container of that name
/// that is not running, found under the lock, was left by a manager that died: it is
/// replaced. This look under the lock is the re-check of what a concurrent manager may have
/// done since the plan was made.
async fn create_and_wait(
    engine: &Engine,
    p: &Prepared,
    network: Option<String>,
    mut lock: Option<lock::Lock>,
    cleanup: &Cleanup,
    lock_dir: &Path,
    reach: Reach,
) -> Result<Server> {
    let name = p.name.clone();
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
            let mut body =
                body::container_body(&p.spec, &p.tree, p.who, "cli", p.host_port, &p.host_name);
            if let Some(node) = &p.node {
                body = body::on_swarm(body, p.who, &node.id);
            }
            // The tenant's network by id: a second of its name never makes it ambiguous.
            if let (Some(id), Some(host)) = (network, body.host_config.as_mut()) {
                host.network_mode = Some(id);
            }
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
        wait_ready(engine, &id, reach).await
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
            place: p.node.as_ref().map(|n| crate::spec::Place {
                node: n.hostname.clone(),
                address: n.addr.clone(),
                reason: None,
            }),
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
/// ([`Executor::finish_stops`]).
async fn settle(engine: &Engine, s: &Server, reach: Reach) -> Result<Server> {
    let rt = match wait_ready(engine, &s.id, reach).await {
        Ok(rt) => rt,
        Err(e) => match engine.find(&s.id).await? {
            Some(rt) if rt.state != "running" => {
                engine.start(&s.id).await?;
                wait_ready(engine, &s.id, reach).await?
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
async fn wait_ready(engine: &Engine, id: &str, reach: Reach) -> Result<Runtime> {
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
        if let (Some(node), Some(port)) = (rt.address, rt.host_port) {
            // A swarm node's port, from afar: the server answers a connection by waiting for
            // the client's first words; a port nothing listens behind closes it at once.
            if held_open(SocketAddr::new(node, port)).await {
                return Ok(rt);
            }
        } else if let (Some(ip), Some(port)) = (rt.ip, rt.host_port) {
            let inner = SocketAddr::new(ip, SERVER_PORT);
            if reach(inner).await && reach(SocketAddr::from(([127, 0, 0, 1], port))).await {
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
        if (rt.ip.is_none() && rt.address.is_none())
            || rt.host_port.is_none()
            || looked.elapsed() >= STATE_EVERY
        {
            rt = engine.inspect(id).await?;
            looked = Instant::now();
        }
    }
}

/// Whether a connection to `addr` is accepted and then held open for a moment, as a server
/// waiting for its client holds it (a port whose server is not up yet is refused or closed).
async fn held_open(addr: SocketAddr) -> bool {
    tokio::task::spawn_blocking(move || {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
        let mut byte = [0u8; 1];
        match std::io::Read::read(&mut stream, &mut byte) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    })
    .await
    .unwrap_or(false)
}

async fn connects(addr: SocketAddr) -> bool {
    tokio::task::spawn_blocking(move || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::body::Identity;
    use crate::buildtree::BuildTree;
    use crate::config::GlobalConfig;
    use crate::engine::Op as Call;
    use crate::engine::fake::Fake;
    use crate::plan;
    use crate::spec::{DEFAULT_IMAGE, Host, Target};

    fn spec(release: &str) -> ServerSpec {
        ServerSpec::example(release)
    }

    fn prepared(spec: &ServerSpec) -> Prepared {
        Prepared {
            name: body::container_name(spec),
            spec: spec.clone(),
            tree: BuildTree::example(
                &spec.release,
                &format!("/lib/modules/{}/build", spec.release),
            ),
            who: Identity {
                uid: 1000,
                gid: 1000,
            },
            host_port: None,
            replaces: None,
            host_name: "host".into(),
            node: None,
        }
    }

    /// A server of `spec` that runs before the test.
    fn running(fake: &Fake, spec: &ServerSpec) {
        let p = prepared(spec);
        let body = body::container_body(spec, &p.tree, p.who, "cli", None, &p.host_name);
        fake.add_container(&p.name, body, true);
    }

    /// An executor over a fake engine that has the image, the network and the certificate.
    fn executor(dir: &Path) -> (Executor, Arc<Fake>) {
        let fake = Arc::new(Fake::default());
        let ours: HashMap<String, String> = crate::labels::ownership("default", "cli")
            .into_iter()
            .collect();
        fake.add_image(
            DEFAULT_IMAGE,
            HashMap::from([(image::RECIPE_LABEL.to_string(), image::recipe())]),
        );
        fake.add_network(&body::network_name("default"), ours.clone());
        let volume = dir.join("volume");
        std::fs::create_dir_all(volume.join("ssl/server")).unwrap();
        std::fs::write(volume.join("ssl/server/stap.cert"), b"cert").unwrap();
        fake.add_volume(
            &body::cert_volume("default", &spec("a").user),
            ours,
            volume.to_str().unwrap(),
        );
        let settings = Settings {
            global: GlobalConfig {
                stat_path: dir.join("stat"),
                log_file: dir.join("log"),
                avahi_services_path: dir.join("avahi"),
                ..GlobalConfig::default()
            },
            configured: vec![],
            host: Host {
                arch: "x86_64".into(),
                release: "a".into(),
                installed: vec![],
                trees: Default::default(),
            },
        };
        let mut exec = Executor::new(
            Engine::over(fake.clone(), false),
            settings,
            Cleanup::default(),
        );
        exec.stap = None;
        exec.reach = |_| async { true }.boxed();
        (exec, fake)
    }

    #[tokio::test]
    async fn the_oldest_of_two_networks_of_the_tenants_name_is_kept_and_used_by_id() {
        let fake = Arc::new(Fake::default());
        let engine = Engine::over(fake.clone(), false);
        let name = body::network_name("default");
        let ours: HashMap<String, String> = crate::labels::ownership("default", "cli")
            .into_iter()
            .collect();
        // None: made.
        let made = engine.ensure_network(&name, "default").await.unwrap();
        assert!(
            fake.take_calls()
                .contains(&Call::CreateNetwork(name.clone()))
        );
        // A second of the name (a killed manager's late one): the first stays, the second goes.
        let late = fake.add_network(&name, ours.clone());
        assert_eq!(engine.ensure_network(&name, "default").await.unwrap(), made);
        let calls = fake.take_calls();
        assert!(calls.contains(&Call::RemoveNetwork(late)), "{calls:?}");
        assert!(!calls.contains(&Call::CreateNetwork(name.clone())));
        // One of that name that is not ours is refused, never used.
        let other = crate::labels::ownership("other", "cli")
            .into_iter()
            .collect();
        fake.add_network(&name, other);
        assert!(engine.ensure_network(&name, "default").await.is_err());

        // Servers are attached by the id.
        let dir = tempfile::tempdir().unwrap();
        let (mut exec, fake) = executor(dir.path());
        fake.add_network(&name, ours);
        fake.take_calls();
        assert!(exec.make(&[], &[prepared(&spec("a"))]).await.unwrap());
        assert_eq!(exec.networks[&name], "net-0001");
    }

    #[tokio::test]
    async fn a_start_of_three_where_one_runs_makes_two_after_one_list() {
        let dir = tempfile::tempdir().unwrap();
        let (mut exec, fake) = executor(dir.path());
        let b = spec("b");
        let b_name = body::container_name(&b);
        running(&fake, &b);
        fake.take_calls();

        let observed = exec.engine.observe("default").await.unwrap();
        assert_eq!(observed.servers.len(), 1);
        let specs = [spec("a"), spec("b"), spec("c")];
        let steps = plan::start(&specs, &observed.servers);
        let made: Vec<Prepared> = [&specs[0], &specs[2]].into_iter().map(prepared).collect();
        assert!(exec.make(&steps, &made).await.unwrap());

        let calls = fake.take_calls();
        let lists: Vec<&Call> = calls
            .iter()
            .filter(|c| matches!(c, Call::List(_)))
            .collect();
        assert_eq!(lists, [&Call::List("default".into())]);
        let creates: Vec<&Call> = calls
            .iter()
            .filter(|c| matches!(c, Call::Create(_)))
            .collect();
        assert_eq!(
            creates,
            [
                &Call::Create(body::container_name(&specs[0])),
                &Call::Create(body::container_name(&specs[2]))
            ]
        );
        // The image's labels are read once, the network and certificate found, not made.
        let once = |call: Call| calls.iter().filter(|c| **c == call).count();
        assert_eq!(once(Call::InspectImage(DEFAULT_IMAGE.into())), 1);
        assert!(!calls.iter().any(|c| matches!(
            c,
            Call::CreateNetwork(_) | Call::CreateVolume(_) | Call::BuildImage(_)
        )));
        // The running one is only looked at; nothing is removed but a leftover helper.
        assert!(
            !calls
                .iter()
                .any(|c| *c == Call::Start(format!("id-{b_name}")))
        );
        let removed: Vec<&Call> = calls
            .iter()
            .filter(|c| matches!(c, Call::Remove(_) | Call::Stop(_)))
            .collect();
        assert_eq!(
            removed,
            [&Call::Remove(format!(
                "{}-init",
                body::cert_volume("default", &specs[0].user)
            ))]
        );
        assert_eq!(
            fake.containers(),
            specs.iter().map(body::container_name).collect::<Vec<_>>()
        );
    }

    /// The advertisement files in the test's avahi directory.
    fn adverts(exec: &Executor) -> Vec<String> {
        exec.publisher.published("").unwrap()
    }

    fn adverts_in(dir: &Path) -> Vec<String> {
        Publisher::new(dir.join("avahi")).published("").unwrap()
    }

    /// A running server, as listed.
    fn running_example() -> Server {
        let spec = spec("x");
        Server {
            name: body::container_name(&spec),
            id: "id".into(),
            state: "running".into(),
            pid: None,
            host_port: Some(1),
            managed_by_cli: true,
            kernel_release: "x".into(),
            cert_volume: body::cert_volume("default", &spec.user),
            place: None,
            spec,
        }
    }

    #[tokio::test]
    async fn an_action_advertises_from_its_one_list() {
        let dir = tempfile::tempdir().unwrap();
        let (mut exec, fake) = executor(dir.path());
        std::fs::create_dir(dir.path().join("avahi")).unwrap();
        let key = |s: &ServerSpec| announce::key("default", &body::container_name(s));
        let [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map(spec);
        // a runs, not advertised yet; b runs and is to be stopped; d exited, its
        // advertisement left over.
        running(&fake, &a);
        running(&fake, &b);
        let p = prepared(&d);
        let d_body = body::container_body(&d, &p.tree, p.who, "cli", None, &p.host_name);
        fake.add_container(&p.name, d_body, false);
        let observed = exec.engine.observe("default").await.unwrap();
        let cert_path = announce::cert_path(&observed.servers[0]);
        fake.add_file(&cert_path, crate::certinfo::tests::openssl_cert("0x0102"));
        let advert = announce::advert(&observed.servers[0], "5.1", "01:02").unwrap();
        for s in [&b, &d] {
            exec.publisher.publish(&key(s), &advert).unwrap();
        }
        // e: made and advertised by a concurrent manager after the list; left alone.
        running(&fake, &e);
        exec.publisher.publish(&key(&e), &advert).unwrap();
        fake.take_calls();

        let targets = [Target::Server(b.clone())];
        assert!(
            exec.stop(&plan::stop(Some(&targets), &observed.servers))
                .await
        );
        assert_eq!(
            adverts(&exec),
            [key(&d), key(&e)],
            "withdrawn with the stop"
        );
        let steps = plan::start(std::slice::from_ref(&c), &observed.servers);
        assert!(exec.make(&steps, &[prepared(&c)]).await.unwrap());
        exec.announce_and_hand_over(&observed.servers).await;

        let calls = fake.take_calls();
        assert!(
            !calls.iter().any(|c| matches!(c, Call::List(_))),
            "{calls:?}"
        );
        assert_eq!(adverts_in(dir.path()), [key(&a), key(&c), key(&e)]);
        // The new one's file says its port and its certificate's serial.
        let xml = std::fs::read_to_string(
            dir.path()
                .join("avahi")
                .join(Publisher::file_name(&key(&c))),
        )
        .unwrap();
        assert!(xml.contains(&format!("<port>{}</port>", crate::engine::fake::HOST_PORT)));
        assert!(xml.contains("certinfo=01:02"), "{xml}");
    }

    #[tokio::test]
    async fn a_stop_of_a_server_another_manager_remade_leaves_its_advertisement() {
        let dir = tempfile::tempdir().unwrap();
        let (mut exec, fake) = executor(dir.path());
        std::fs::create_dir(dir.path().join("avahi")).unwrap();
        let b = spec("b");
        running(&fake, &b);
        let observed = exec.engine.observe("default").await.unwrap();
        let name = body::container_name(&b);
        let key = announce::key("default", &name);
        let advert = announce::advert(&observed.servers[0], "5.1", "01:02").unwrap();
        exec.publisher.publish(&key, &advert).unwrap();
        // Between this manager's list and its stop, another restarted b.
        fake.remake(&name);
        let targets = [Target::Server(b.clone())];
        assert!(
            exec.stop(&plan::stop(Some(&targets), &observed.servers))
                .await
        );
        assert_eq!(adverts(&exec), std::slice::from_ref(&key));
        assert!(exec.engine.find(&name).await.unwrap().is_some());

        // Gone with nothing of its name made since: its advertisement goes too.
        let observed = exec.engine.observe("default").await.unwrap();
        exec.engine.remove(&name, Duration::ZERO).await.unwrap();
        assert!(
            exec.stop(&plan::stop(Some(&targets), &observed.servers))
                .await
        );
        assert!(adverts(&exec).is_empty());
    }

    #[tokio::test]
    async fn an_advertisement_whose_server_is_locked_by_another_manager_is_left_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let (exec, fake) = executor(dir.path());
        std::fs::create_dir(dir.path().join("avahi")).unwrap();
        let d = spec("d");
        let p = prepared(&d);
        let d_body = body::container_body(&d, &p.tree, p.who, "cli", None, &p.host_name);
        fake.add_container(&p.name, d_body, false);
        let key = announce::key("default", &p.name);
        let observed = exec.engine.observe("default").await.unwrap();
        let mut advert = announce::advert(&running_example(), "5.1", "01:02").unwrap();
        advert.port = 1;
        exec.publisher.publish(&key, &advert).unwrap();
        // Another manager is starting d again.
        let lock = lock::Lock::take(&exec.settings.global.stat_path, &p.name).unwrap();
        exec.announce_and_hand_over(&observed.servers).await;
        assert_eq!(adverts_in(dir.path()), std::slice::from_ref(&key));
        drop(lock);
    }

    #[tokio::test]
    async fn a_stop_removes_each_server_after_its_grace() {
        let dir = tempfile::tempdir().unwrap();
        let (mut exec, fake) = executor(dir.path());
        let a = spec("a");
        let name = body::container_name(&a);
        running(&fake, &a);
        let observed = exec.engine.observe("default").await.unwrap();
        fake.take_calls();
        let steps = plan::stop(None, &observed.servers);
        assert!(exec.stop(&steps).await);
        let id = format!("id-{name}");
        assert_eq!(
            fake.take_calls(),
            [Call::Stop(id.clone()), Call::Remove(id)]
        );
        assert!(fake.containers().is_empty());
    }
}

//! The Docker engine, seen through one trait: [`Api`] is the engine operations the manager
//! uses, one method per request; [`docker::Bollard`] is the real one (the only code that
//! speaks bollard) and, in unit tests, `fake::Fake` records the calls it is asked. [`Engine`]
//! is the manager's view over an `Api`: servers rather than containers, 404/304/409 matched
//! on the HTTP status, never on message text.

pub mod docker;
#[cfg(test)]
pub mod fake;
pub mod swarm;

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, MountPoint,
};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};

use crate::body::SERVER_PORT;
use crate::config::EngineKind;
use crate::error::{Error, Result};
use crate::labels;
use crate::spec::Server;

/// How many engine calls of one kind run at once.
pub const CONCURRENCY: usize = 8;
/// How many servers are stopped at once: a stop is mostly waiting for the server to exit,
/// not work for the engine, so more go at once than [`CONCURRENCY`].
pub const STOP_CONCURRENCY: usize = 32;

/// How long reading a small file out of a container may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Labels of an engine object.
pub type Labels = HashMap<String, String>;

/// What a byte stream is imported from (mmdebstrap's standard output).
pub type Source = Box<dyn tokio::io::AsyncRead + Send + Unpin>;

/// One engine operation with its object: what failed, and what the fake records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The tenant's containers.
    List(String),
    /// The running containers, of any tenant, that write a log file.
    ListWriters(String),
    Pause(String),
    Unpause(String),
    Inspect(String),
    Create(String),
    Start(String),
    Stop(String),
    Remove(String),
    Wait(String),
    Read {
        id: String,
        path: String,
    },
    Logs(String),
    /// The tenant's events.
    Events(String),
    InspectVolume(String),
    CreateVolume(String),
    /// The networks of a name.
    ListNetworks(String),
    CreateNetwork(String),
    RemoveNetwork(String),
    InspectImage(String),
    BuildImage(String),
    ImportImage(String),
    RemoveImage(String),
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::List(_) => write!(f, "cannot list containers"),
            Op::ListWriters(log) => write!(f, "cannot list the containers writing {log}"),
            Op::Pause(id) => write!(f, "cannot pause container {id}"),
            Op::Unpause(id) => write!(f, "cannot unpause container {id}"),
            Op::Inspect(id) => write!(f, "cannot inspect container {id}"),
            Op::Create(name) => write!(f, "cannot create container {name}"),
            Op::Start(id) => write!(f, "cannot start container {id}"),
            Op::Stop(id) => write!(f, "cannot stop container {id}"),
            Op::Remove(id) => write!(f, "cannot remove container {id}"),
            Op::Wait(name) => write!(f, "cannot wait for container {name}"),
            Op::Read { id, path } => write!(f, "cannot read {path} in container {id}"),
            Op::Logs(id) => write!(f, "cannot read the output of container {id}"),
            Op::Events(_) => write!(f, "the engine's event stream failed"),
            Op::InspectVolume(name) => write!(f, "cannot inspect volume {name}"),
            Op::CreateVolume(name) => write!(f, "cannot create volume {name}"),
            Op::ListNetworks(name) => write!(f, "cannot list the networks named {name}"),
            Op::CreateNetwork(name) => write!(f, "cannot create network {name}"),
            Op::RemoveNetwork(id) => write!(f, "cannot remove network {id}"),
            Op::InspectImage(image) => write!(f, "cannot inspect image {image}"),
            Op::BuildImage(image) => write!(f, "cannot build image {image}"),
            Op::ImportImage(image) => write!(f, "cannot import image {image}"),
            Op::RemoveImage(image) => write!(f, "cannot remove image {image}"),
        }
    }
}

/// A failed engine request: the operation, the HTTP status the engine answered (none when it
/// did not answer), and what it said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {reason}")]
pub struct EngineError {
    pub op: Op,
    pub status: Option<u16>,
    pub reason: String,
}

/// A volume as the engine describes it.
#[derive(Debug, Clone, Default)]
pub struct Volume {
    pub labels: Labels,
    pub mountpoint: String,
}

/// A network as the engine lists it.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub id: String,
    pub labels: Labels,
    /// When the engine made it (RFC 3339).
    pub created: String,
}

/// One item of an image build's progress.
#[derive(Debug, Clone, Default)]
pub struct BuildLine {
    /// Output of the build's steps.
    pub output: Option<String>,
    /// The build failed, with this message.
    pub error: Option<String>,
}

/// The engine operations the manager uses: one request each.
pub trait Api: Send + Sync {
    /// All the tenant's containers, running or not.
    fn list<'a>(
        &'a self,
        tenant: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerSummary>, EngineError>>;
    /// The running containers of ours, of any tenant, whose log label is `log`.
    fn list_writers<'a>(
        &'a self,
        log: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<ContainerSummary>, EngineError>>;
    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ContainerInspectResponse, EngineError>>;
    /// Freezes every process of a container (the cgroup freezer).
    fn pause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    fn unpause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Creates a container by name; returns its id.
    fn create<'a>(
        &'a self,
        name: &'a str,
        body: ContainerCreateBody,
    ) -> BoxFuture<'a, Result<String, EngineError>>;
    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    /// SIGTERM, then SIGKILL after `grace`.
    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Forced removal: a running container is killed.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Waits for a container to exit; its exit code.
    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<i64, EngineError>>;
    /// The last `lines` lines of a container's output (what could be read of them).
    fn logs<'a>(&'a self, id: &'a str, lines: usize) -> BoxFuture<'a, String>;
    /// A file of a container, as a tar archive.
    fn download<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, EngineError>>;
    /// The events that change which of the tenant's servers run, from `since` on.
    fn events(&self, tenant: &str, since: u64) -> BoxStream<'static, Result<(), EngineError>>;
    fn volume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Volume, EngineError>>;
    fn create_volume<'a>(
        &'a self,
        name: &'a str,
        labels: Labels,
    ) -> BoxFuture<'a, Result<Volume, EngineError>>;
    /// The networks named exactly `name` (the engine does not refuse a second of a name).
    fn networks<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Network>, EngineError>>;
    /// Creates a network; returns its id.
    fn create_network<'a>(
        &'a self,
        name: &'a str,
        labels: Labels,
    ) -> BoxFuture<'a, Result<String, EngineError>>;
    fn remove_network<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
    /// An image's labels.
    fn image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<Labels, EngineError>>;
    /// Builds `image` from a tar `context` holding a Dockerfile.
    fn build_image<'a>(
        &'a self,
        image: &'a str,
        context: Vec<u8>,
        args: HashMap<String, String>,
    ) -> BoxStream<'a, Result<BuildLine, EngineError>>;
    /// Imports a root filesystem tar as `repo:tag`.
    fn import_image<'a>(
        &'a self,
        repo: &'a str,
        tag: &'a str,
        source: Source,
    ) -> BoxFuture<'a, Result<(), EngineError>>;
    fn remove_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;
}

/// A connected engine.
#[derive(Clone)]
pub struct Engine {
    api: Arc<dyn Api>,
    /// On an engine of this host (a local socket; `None` otherwise), the mounts (destination,
    /// host source) of each container listed or inspected so far, by id: files in them are
    /// read on the host, not through the engine. A container's mounts never change, so an
    /// entry never goes stale.
    mounts: Option<Arc<Mutex<HashMap<String, Mounts>>>>,
    /// The swarm, when the servers are its services.
    swarm: Option<Arc<swarm::Swarm>>,
}

/// A container's mounts: (destination in the container, source on the host).
type Mounts = Vec<(PathBuf, PathBuf)>;

/// The outcome of creating a container by name.
pub enum Created {
    /// We made it; the id.
    New(String),
    /// A container of that name exists already (another manager made it).
    Exists,
}

/// The tenant's containers as one list call found them.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Its servers, by name.
    pub servers: Vec<Server>,
    /// Names of its containers that are not servers: one-shot helpers (such as a
    /// certificate's maker) that a killed manager can leave behind.
    pub helpers: Vec<String>,
}

/// What `inspect` tells about a running server.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    pub state: String,
    pub pid: Option<u32>,
    pub ip: Option<IpAddr>,
    pub host_port: Option<u16>,
    pub exit_code: Option<i64>,
    /// Where the host port is reached when not on this host (the swarm node's address).
    pub address: Option<IpAddr>,
}

/// The host PID of a container's main process, read from its cgroup on this host: the one
/// process of the group whose parent is outside it (the runtime's shim). `None` when the
/// cgroup is not found here (another layout, or a remote engine); `Some(None)` when the
/// group has no process left (the container just died).
pub fn cgroup_main_pid(id: &str) -> Option<Option<u32>> {
    const ROOTS: [&str; 3] = [
        "/sys/fs/cgroup/pids/docker/{}",
        "/sys/fs/cgroup/docker/{}",
        "/sys/fs/cgroup/system.slice/docker-{}.scope",
    ];
    let procs = ROOTS.iter().find_map(|root| {
        std::fs::read_to_string(format!("{}/cgroup.procs", root.replace("{}", id))).ok()
    })?;
    let pids: Vec<u32> = procs
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command may hold spaces and parentheses: fields follow the last ')'.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(
        pids.iter()
            .copied()
            .find(|p| parent(*p).is_some_and(|pp| !pids.contains(&pp))),
    )
}

/// A file at `path` in a container with `mounts` (destination, host source), read through
/// its mount's host source. Nothing that leads out of the source is followed (the container
/// owns what is inside it): any doubt (a link, a file that is not regular, no permission,
/// no mount) gives `None`, and the read is left to the engine.
fn read_in_mount(mounts: &Mounts, path: &Path) -> Option<Vec<u8>> {
    let (dest, source) = mounts
        .iter()
        .filter(|(dest, _)| path.starts_with(dest))
        .max_by_key(|(dest, _)| dest.components().count())?;
    let file = source.join(path.strip_prefix(dest).ok()?);
    let real = file.canonicalize().ok()?;
    if real != file || !real.starts_with(source.canonicalize().ok()?) {
        return None;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&real)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_HOST_READ {
        return None;
    }
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut data).ok()?;
    Some(data)
}

/// Whether a network or volume found by name carries the tenant's ownership labels: the
/// manager uses only what it made.
fn owned(
    kind: &str,
    name: &str,
    tenant: &str,
    found: Option<&HashMap<String, String>>,
) -> Result<()> {
    let label = |key: &str| found.and_then(|l| l.get(key)).map(String::as_str);
    if label(labels::MANAGED) == Some("true") && label(labels::TENANT) == Some(tenant) {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "a {kind} named {name} exists that stap-server did not make for tenant {tenant} \
         (its labels lack {}=true and {}={tenant}): remove or rename it",
        labels::MANAGED,
        labels::TENANT
    )))
}

/// The largest file read on the host rather than through the engine (certificates are ~1 KB).
const MAX_HOST_READ: u64 = 1 << 20;

/// Where the engine is, as the user would name it.
pub fn address() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

impl Engine {
    /// Connects through `DOCKER_HOST` or the default socket (see [`docker::Bollard::connect`]).
    pub async fn connect() -> Result<Engine> {
        let (api, local) = docker::Bollard::connect(&address()).await?;
        Ok(Engine::over(Arc::new(api), local))
    }

    /// Connects to what the global file names: the engine, or the swarm whose manager
    /// `DOCKER_HOST` names (its nodes' engines on `node_port`).
    pub async fn connect_to(kind: EngineKind, node_port: u16) -> Result<Engine> {
        match kind {
            EngineKind::Docker => Engine::connect().await,
            EngineKind::Swarm => {
                let swarm = Arc::new(swarm::Swarm::connect(&address(), node_port).await?);
                Ok(Engine {
                    api: swarm.clone(),
                    mounts: None,
                    swarm: Some(swarm),
                })
            }
        }
    }

    /// The swarm, when the servers are its services.
    pub fn swarm(&self) -> Option<&swarm::Swarm> {
        self.swarm.as_deref()
    }

    /// An engine over `api`; `local`: whether it runs on this host, so that its containers'
    /// cgroups and mounts can be read here.
    pub fn over(api: Arc<dyn Api>, local: bool) -> Engine {
        Engine {
            api,
            mounts: local.then(Arc::default),
            swarm: None,
        }
    }

    /// The operations themselves, for work with no manager's view to add (image builds).
    pub fn api(&self) -> &dyn Api {
        self.api.as_ref()
    }

    /// Whether the engine runs on this host (reached through a local socket), so that its
    /// containers' cgroups and mounts can be read here.
    pub fn on_this_host(&self) -> bool {
        self.mounts.is_some()
    }

    /// Ids of the running containers of ours, of any tenant, that write the host log `log`.
    pub async fn log_writers(&self, log: &Path) -> Result<Vec<String>> {
        let list = self.api.list_writers(log).await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Freezes every process of a container: it writes nothing until [`Engine::unpause`].
    /// One already paused counts as paused.
    pub async fn pause(&self, id: &str) -> Result<()> {
        match self.api.pause(id).await {
            Ok(()) => Ok(()),
            Err(e) if e.status == Some(409) && self.paused(id).await => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Thaws a container [`Engine::pause`] froze; one gone or not paused is left as it is.
    pub async fn unpause(&self, id: &str) -> Result<()> {
        match self.api.unpause(id).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.status, Some(404) | Some(409)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn paused(&self, id: &str) -> bool {
        self.api
            .inspect(id)
            .await
            .ok()
            .and_then(|c| c.state?.paused)
            .unwrap_or(false)
    }

    /// The tenant's servers, in one list call; PIDs come from inspecting the running ones.
    pub async fn servers(&self, tenant: &str) -> Result<Vec<Server>> {
        Ok(self.observe(tenant).await?.servers)
    }

    /// The tenant's servers and helpers, in one list call.
    pub async fn observe(&self, tenant: &str) -> Result<Observed> {
        let list = self.containers(tenant).await?;
        let helpers = list
            .iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .is_none_or(|l| labels::from_labels(l).is_none())
            })
            .filter_map(|c| {
                c.names
                    .as_ref()?
                    .first()
                    .map(|n| n.trim_start_matches('/').into())
            })
            .collect();
        let mut servers: Vec<Server> = list.into_iter().filter_map(summary_to_server).collect();
        // The list can lag behind a container that just died. On a local engine the running
        // ones' cgroups give their PID and liveness as they are now, with no call per server;
        // otherwise each is inspected.
        let local = self.on_this_host();
        // A swarm's list is its tasks' state as the manager knows it now: nothing to add.
        let swarm = self.swarm.is_some();
        let now: Vec<Option<Runtime>> = stream::iter(servers.iter().map(|s| {
            let id = s.id.clone();
            let running = s.running();
            async move {
                if !running || swarm {
                    return None;
                }
                if local && let Some(pid) = cgroup_main_pid(&id) {
                    return Some(Runtime {
                        state: if pid.is_some() { "running" } else { "exited" }.into(),
                        pid,
                        ..Runtime::default()
                    });
                }
                self.inspect(&id).await.ok()
            }
        }))
        .buffered(CONCURRENCY)
        .collect()
        .await;
        for (server, rt) in servers.iter_mut().zip(now) {
            if let Some(rt) = rt {
                server.pid = rt.pid;
                if !rt.state.is_empty() {
                    server.state = rt.state;
                }
            }
        }
        servers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Observed { servers, helpers })
    }

    /// All the tenant's containers, running or not, in one list call.
    async fn containers(&self, tenant: &str) -> Result<Vec<ContainerSummary>> {
        let list = self.api.list(tenant).await?;
        for c in &list {
            self.remember_mounts(c.id.as_deref(), c.mounts.as_deref());
        }
        Ok(list)
    }

    /// Notes where a container's mounts are on the host (an engine of this host only).
    fn remember_mounts(&self, id: Option<&str>, mounts: Option<&[MountPoint]>) {
        let (Some(cache), Some(id)) = (&self.mounts, id) else {
            return;
        };
        let of = mounts.unwrap_or_default().iter().filter_map(|m| {
            Some((
                PathBuf::from(m.destination.as_ref()?),
                PathBuf::from(m.source.as_ref()?),
            ))
        });
        cache
            .lock()
            .expect("not poisoned")
            .insert(id.to_string(), of.collect());
    }

    /// A container's runtime from its inspection, its mounts noted on the way.
    fn inspected(&self, c: ContainerInspectResponse) -> Runtime {
        self.remember_mounts(c.id.as_deref(), c.mounts.as_deref());
        runtime(c)
    }

    pub async fn inspect(&self, id: &str) -> Result<Runtime> {
        let c = self.api.inspect(id).await?;
        Ok(self.inspected(c))
    }

    /// The container of that name or id, if there is one.
    pub async fn find(&self, name: &str) -> Result<Option<Runtime>> {
        match self.api.inspect(name).await {
            Ok(c) => Ok(Some(self.inspected(c))),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether an image is present locally; returns its labels.
    pub async fn image_labels(&self, image: &str) -> Result<Option<Labels>> {
        match self.api.image(image).await {
            Ok(labels) => Ok(Some(labels)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The tenant's bridge network, made unless it exists; returns its id. One of that name
    /// that is not the tenant's (by its labels) is refused, never used. The engine does not
    /// refuse a second network of a name, and a manager killed while the engine made one can
    /// leave it to appear after the next manager looked and made its own: of several of
    /// ours, the oldest is the one, and the others are removed where nothing uses them.
    /// Servers are attached by id, so one left in use never makes the name ambiguous.
    pub async fn ensure_network(&self, name: &str, tenant: &str) -> Result<String> {
        let mut found = self.api.networks(name).await?;
        if found.is_empty() {
            // Ours by its labels; a second one made meanwhile goes at the next look.
            let labels = labels::ownership(tenant, "cli").into_iter().collect();
            return Ok(self.api.create_network(name, labels).await?);
        }
        for n in &found {
            owned("network", name, tenant, Some(&n.labels))?;
        }
        found.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        let (one, extras) = found.split_first().expect("not empty");
        for extra in extras {
            // In use by a server attached to it by id: it stays, harmlessly.
            let _ = self.api.remove_network(&extra.id).await;
        }
        Ok(one.id.clone())
    }

    /// Creates a labelled volume unless it exists; returns its host mount point.
    pub async fn ensure_volume(&self, name: &str, tenant: &str) -> Result<Option<String>> {
        if let Ok(v) = self.api.volume(name).await {
            owned("volume", name, tenant, Some(&v.labels))?;
            return Ok(Some(v.mountpoint));
        }
        let labels = labels::ownership(tenant, "cli").into_iter().collect();
        let v = self.api.create_volume(name, labels).await?;
        Ok(Some(v.mountpoint))
    }

    /// The content of one regular file in a container (running or not): read on the host when
    /// it lies in a mount of a container listed or inspected before on an engine of this host,
    /// else through the engine, which works wherever the engine is reachable.
    pub async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>> {
        if let Some(data) = self.read_on_host(id, Path::new(path)) {
            return Ok(data);
        }
        let what = || format!("cannot read {path} in container {id}");
        let tar = tokio::time::timeout(READ_TIMEOUT, self.api.download(id, path))
            .await
            .map_err(|_| {
                Error::Invalid(format!(
                    "{}: no answer within {} s",
                    what(),
                    READ_TIMEOUT.as_secs()
                ))
            })??;
        let mut archive = tar::Archive::new(tar.as_slice());
        let unreadable = |e: std::io::Error| Error::Invalid(format!("{}: {e}", what()));
        let mut entries = archive.entries().map_err(unreadable)?;
        let mut entry = entries
            .next()
            .ok_or_else(|| Error::Invalid(format!("{}: empty archive", what())))?
            .map_err(unreadable)?;
        if !entry.header().entry_type().is_file() {
            return Err(Error::Invalid(format!("{}: not a regular file", what())));
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).map_err(unreadable)?;
        Ok(data)
    }

    /// A file of a container listed or inspected before, read on the host through its mount.
    fn read_on_host(&self, id: &str, path: &Path) -> Option<Vec<u8>> {
        let mounts = self
            .mounts
            .as_ref()?
            .lock()
            .expect("not poisoned")
            .get(id)?
            .clone();
        read_in_mount(&mounts, path)
    }

    /// The events, from `since` (seconds since the epoch) on, that change which of the
    /// tenant's servers run: one item per container start, die, stop or destroy. The stream
    /// ends or yields an error when the engine goes away; the caller reconnects.
    pub fn server_events(&self, tenant: &str, since: u64) -> BoxStream<'static, Result<()>> {
        self.api
            .events(tenant, since)
            .map(|e| e.map_err(Error::from))
            .boxed()
    }

    /// Creates a container by name; an existing name is reported, not an error.
    pub async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<Created> {
        match self.api.create(name, body).await {
            Ok(id) => Ok(Created::New(id)),
            Err(e) if e.status == Some(409) => Ok(Created::Exists),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        match self.api.start(id).await {
            Ok(()) => Ok(()),
            Err(e) if e.status == Some(304) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops (SIGTERM, then SIGKILL after `grace`; with no grace, killed at once) and removes
    /// a container. A container that is already gone counts as removed; the answer says
    /// whether this call found it (`false`: the engine knew no such container).
    pub async fn remove(&self, id: &str, grace: Duration) -> Result<bool> {
        // With no grace, the forced removal kills the container itself: one request, not two.
        if !grace.is_zero() {
            match self.api.stop(id, grace).await {
                Ok(()) => {}
                Err(e) if matches!(e.status, Some(304) | Some(404)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match self.api.remove(id).await {
            Ok(()) => Ok(true),
            Err(e) if e.status == Some(404) => Ok(false),
            // Removal already under way (another manager): it will be gone.
            Err(e) if e.status == Some(409) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// The last `lines` lines of a container's output.
    pub async fn logs_tail(&self, id: &str, lines: usize) -> String {
        self.api.logs(id, lines).await
    }

    /// Runs a one-shot container to completion, then removes it. Returns its exit code and
    /// output.
    pub async fn run_once(&self, name: &str, body: ContainerCreateBody) -> Result<(i64, String)> {
        let id = match self.create(name, body.clone()).await? {
            Created::New(id) => id,
            Created::Exists => {
                // Left by an interrupted run (callers hold a lock while they run one): it is
                // ours, as the name says, so replace it.
                self.remove(name, Duration::ZERO).await?;
                match self.create(name, body).await? {
                    Created::New(id) => id,
                    Created::Exists => {
                        return Err(Error::Invalid(format!(
                            "container {name} was created again by someone else"
                        )));
                    }
                }
            }
        };
        let result = async {
            self.start(&id).await?;
            let code = self.api.wait(&id).await.map_err(|e| EngineError {
                op: Op::Wait(name.into()),
                ..e
            })?;
            Ok((code, self.logs_tail(&id, 50).await))
        }
        .await;
        let _ = self.remove(&id, Duration::from_secs(0)).await;
        result
    }
}

/// The container events after which the advertised servers may differ from the running ones.
pub const SERVER_EVENTS: [&str; 4] = ["start", "die", "stop", "destroy"];

/// What inspecting a container tells about it.
fn runtime(c: ContainerInspectResponse) -> Runtime {
    let state = c.state.unwrap_or_default();
    let net = c.network_settings.unwrap_or_default();
    let ip = net
        .networks
        .unwrap_or_default()
        .into_values()
        .find_map(|n| n.ip_address.filter(|a| !a.is_empty()))
        .and_then(|a| a.parse().ok());
    let host_port = net
        .ports
        .unwrap_or_default()
        .get(&format!("{SERVER_PORT}/tcp"))
        .cloned()
        .flatten()
        .unwrap_or_default()
        .into_iter()
        .find_map(|b| b.host_port.and_then(|p| p.parse().ok()));
    let address = c
        .config
        .and_then(|c| c.labels?.get(labels::SWARM_ADDRESS)?.parse().ok());
    Runtime {
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        pid: state.pid.filter(|p| *p > 0).map(|p| p as u32),
        ip,
        host_port,
        exit_code: state.exit_code,
        address,
    }
}

pub(crate) fn summary_to_server(c: ContainerSummary) -> Option<Server> {
    let labels = c.labels.unwrap_or_default();
    let spec = labels::from_labels(&labels)?;
    let kernel_release = labels
        .get(labels::KERNEL_RELEASE)
        .cloned()
        .unwrap_or_else(|| spec.release.clone());
    let cert_volume = labels
        .get(labels::CERT_VOLUME)
        .cloned()
        .unwrap_or_else(|| crate::body::cert_volume(&spec.tenant, &spec.user));
    let host_port = c
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.private_port == SERVER_PORT && p.public_port.is_some())
        .and_then(|p| p.public_port);
    Some(Server {
        spec,
        id: c.id.unwrap_or_default(),
        name: c
            .names
            .unwrap_or_default()
            .first()
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        state: c.state.map(|s| s.to_string()).unwrap_or_default(),
        // On a swarm, the PID on the server's node; elsewhere read from the cgroup or inspect.
        pid: labels.get(labels::SWARM_PID).and_then(|p| p.parse().ok()),
        host_port,
        managed_by_cli: labels.get(labels::ORIGIN).map(String::as_str) != Some("compose"),
        kernel_release,
        cert_volume,
        place: labels
            .get(labels::SWARM_NODE)
            .map(|node| crate::spec::Place {
                node: node.clone(),
                address: labels
                    .get(labels::SWARM_ADDRESS)
                    .cloned()
                    .unwrap_or_default(),
                reason: labels.get(labels::SWARM_REASON).cloned(),
            }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_a_mount_is_read_on_the_host_and_nothing_leads_out() {
        let dir = tempfile::tempdir().unwrap();
        let (vol, bind) = (dir.path().join("vol"), dir.path().join("bind"));
        std::fs::create_dir_all(vol.join("ssl/server")).unwrap();
        std::fs::create_dir_all(&bind).unwrap();
        std::fs::write(vol.join("ssl/server/stap.cert"), b"volume").unwrap();
        std::fs::write(bind.join("stap.cert"), b"bind").unwrap();
        std::fs::write(dir.path().join("secret"), b"host").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), vol.join("link")).unwrap();
        std::os::unix::fs::symlink("../..", vol.join("ssl/up")).unwrap();
        let mounts = vec![
            (PathBuf::from("/home/s/.systemtap"), vol.clone()),
            (PathBuf::from("/home/s/.systemtap/ssl/other"), bind.clone()),
        ];
        let read = |p: &str| read_in_mount(&mounts, Path::new(p));
        assert_eq!(
            read("/home/s/.systemtap/ssl/server/stap.cert").as_deref(),
            Some(&b"volume"[..])
        );
        // The deepest mount wins.
        assert_eq!(
            read("/home/s/.systemtap/ssl/other/stap.cert").as_deref(),
            Some(&b"bind"[..])
        );
        // Links (the container's own doing), paths out of the source, directories and
        // paths in no mount are left to the engine.
        assert_eq!(read("/home/s/.systemtap/link"), None);
        assert_eq!(read("/home/s/.systemtap/ssl/up/secret"), None);
        assert_eq!(read("/home/s/.systemtap/../../secret"), None);
        assert_eq!(read("/home/s/.systemtap/ssl"), None);
        assert_eq!(read("/etc/passwd"), None);
        assert_eq!(read("/home/s/.systemtap/missing"), None);
    }

    #[test]
    fn only_the_tenants_own_network_or_volume_is_used() {
        let ours: HashMap<String, String> = labels::ownership("t1", "cli").into_iter().collect();
        assert!(owned("network", "n", "t1", Some(&ours)).is_ok());
        let other = owned("network", "n", "t2", Some(&ours))
            .unwrap_err()
            .to_string();
        assert!(other.contains("a network named n exists") && other.contains("tenant t2"));
        let foreign = owned("volume", "v", "t1", None).unwrap_err().to_string();
        assert!(foreign.contains("a volume named v exists"), "{foreign}");
    }
}

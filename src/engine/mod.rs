//! The Docker engine: the only module that speaks bollard. Each method is one operation the
//! manager needs, with errors that name what was being done; 404/304/409 are matched on the
//! HTTP status, never on message text.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, MountPoint,
    NetworkCreateRequest, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, EventsOptionsBuilder,
    InspectContainerOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptions,
};
use bollard::{ClientVersion, Docker};
use futures_util::stream::{self, BoxStream, TryStreamExt};
use futures_util::{Stream, StreamExt};

use crate::body::SERVER_PORT;
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

/// A connected engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    /// On an engine of this host (a local socket; `None` otherwise), the mounts (destination,
    /// host source) of each container listed or inspected so far, by id: files in them are
    /// read on the host, not through the engine. A container's mounts never change, so an
    /// entry never goes stale.
    mounts: Option<Arc<Mutex<HashMap<String, Mounts>>>>,
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

/// What `inspect` tells about a running server.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    pub state: String,
    pub pid: Option<u32>,
    pub ip: Option<IpAddr>,
    pub host_port: Option<u16>,
    pub exit_code: Option<i64>,
}

fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
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

/// The API version the engine at `socket` speaks, from the `Api-Version` header of its
/// `/_ping` answer.
async fn ping_version(socket: &Path) -> std::io::Result<ClientVersion> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream
        .write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .await?;
    // The head is enough: read until it ends, not until the engine (or a proxy in between)
    // closes the connection.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.len() < 64 * 1024 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    api_version(&String::from_utf8_lossy(&answer)).ok_or_else(|| {
        std::io::Error::other(format!(
            "{} does not answer as a Docker engine (no Api-Version in its /_ping answer)",
            socket.display()
        ))
    })
}

/// `major.minor` of an `Api-Version` header in an HTTP answer's head.
fn api_version(answer: &str) -> Option<ClientVersion> {
    let head = answer.split("\r\n\r\n").next()?;
    let value = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("api-version")
            .then(|| value.trim())
    })?;
    let (major, minor) = value.split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// Where the engine is, as the user would name it.
pub fn address() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

impl Engine {
    /// Connects through `DOCKER_HOST` or the default socket and negotiates the API version, so
    /// no field newer than the engine knows is ever sent. On a local socket the version comes
    /// from `/_ping`'s header, which the engine answers at once (`/version` asks containerd).
    pub async fn connect() -> Result<Engine> {
        let addr = address();
        let unreachable = |reason: String| Error::EngineUnreachable {
            addr: addr.clone(),
            reason,
        };
        let answer = |e: std::io::Error| unreachable(e.to_string());
        let within = |reason| unreachable(format!("no answer within 10 s{reason}"));
        const PATIENCE: Duration = Duration::from_secs(10);
        let Some(socket) = addr.strip_prefix("unix://") else {
            let docker = Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
            let docker = tokio::time::timeout(PATIENCE, docker.negotiate_version())
                .await
                .map_err(|_| within(""))?
                .map_err(|e| unreachable(e.to_string()))?;
            return Ok(Engine {
                docker,
                mounts: None,
            });
        };
        let version = tokio::time::timeout(PATIENCE, ping_version(Path::new(socket)))
            .await
            .map_err(|_| within(" to /_ping"))?
            .map_err(answer)?;
        let newest = *bollard::API_DEFAULT_VERSION;
        let version = if version < newest { version } else { newest };
        let docker = Docker::connect_with_unix(socket, 120, &version)
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Engine {
            docker,
            mounts: Some(Arc::default()),
        })
    }

    /// Whether the engine runs on this host (reached through a local socket), so that its
    /// containers' cgroups and mounts can be read here.
    fn on_this_host(&self) -> bool {
        self.mounts.is_some()
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// A client for work that takes as long as it takes (image imports and builds), where the
    /// default per-request timeout (2 minutes) would cut a slow machine off.
    pub fn patient(&self) -> Docker {
        self.docker.clone().with_timeout(Duration::from_secs(3600))
    }

    /// The tenant's servers, in one list call; PIDs come from inspecting the running ones.
    pub async fn servers(&self, tenant: &str) -> Result<Vec<Server>> {
        let list = self.containers(tenant).await?;
        let mut servers: Vec<Server> = list.into_iter().filter_map(summary_to_server).collect();
        // The list can lag behind a container that just died. On a local engine the running
        // ones' cgroups give their PID and liveness as they are now, with no call per server;
        // otherwise each is inspected.
        let local = self.on_this_host();
        let now: Vec<Option<Runtime>> = stream::iter(servers.iter().map(|s| {
            let id = s.id.clone();
            let running = s.running();
            async move {
                if !running {
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
        Ok(servers)
    }

    /// Names of the tenant's containers that are not servers: one-shot helpers (such as a
    /// certificate's maker) that a killed manager can leave behind.
    pub async fn helpers(&self, tenant: &str) -> Result<Vec<String>> {
        Ok(self
            .containers(tenant)
            .await?
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .is_none_or(|l| labels::from_labels(l).is_none())
            })
            .filter_map(|c| c.names?.first().map(|n| n.trim_start_matches('/').into()))
            .collect())
    }

    /// All the tenant's containers, running or not, in one list call.
    async fn containers(&self, tenant: &str) -> Result<Vec<ContainerSummary>> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&labels::tenant_filter(tenant))
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| Error::engine("cannot list containers", e))?;
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
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map(|c| self.inspected(c))
            .map_err(|e| Error::engine(format!("cannot inspect container {id}"), e))
    }

    /// The container of that name or id, if there is one.
    pub async fn find(&self, name: &str) -> Result<Option<Runtime>> {
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Some(self.inspected(c))),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(Error::engine(format!("cannot inspect container {name}"), e)),
        }
    }

    /// Whether an image is present locally; returns its labels.
    pub async fn image_labels(&self, image: &str) -> Result<Option<HashMap<String, String>>> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(Some(i.config.and_then(|c| c.labels).unwrap_or_default())),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(Error::engine(format!("cannot inspect image {image}"), e)),
        }
    }

    /// Creates the tenant's bridge network unless it exists; one of that name that is not the
    /// tenant's (by its labels) is refused, never used.
    pub async fn ensure_network(&self, name: &str, tenant: &str) -> Result<()> {
        if let Ok(n) = self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            return owned("network", name, tenant, n.labels.as_ref());
        }
        let request = NetworkCreateRequest {
            name: name.into(),
            driver: Some("bridge".into()),
            labels: Some(labels::ownership(tenant, "cli").into_iter().collect()),
            ..NetworkCreateRequest::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Another manager made it between our look and our create.
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(Error::engine(format!("cannot create network {name}"), e)),
        }
    }

    /// Creates a labelled volume unless it exists; returns its host mount point.
    pub async fn ensure_volume(&self, name: &str, tenant: &str) -> Result<Option<String>> {
        if let Ok(v) = self.docker.inspect_volume(name).await {
            owned("volume", name, tenant, Some(&v.labels))?;
            return Ok(Some(v.mountpoint));
        }
        let request = VolumeCreateRequest {
            name: Some(name.into()),
            labels: Some(labels::ownership(tenant, "cli").into_iter().collect()),
            ..VolumeCreateRequest::default()
        };
        let v = self
            .docker
            .create_volume(request)
            .await
            .map_err(|e| Error::engine(format!("cannot create volume {name}"), e))?;
        Ok(Some(v.mountpoint))
    }

    /// The content of one regular file in a container (running or not): read on the host when
    /// it lies in a mount of a container listed or inspected before on an engine of this host,
    /// else through the engine, which works wherever the engine is reachable.
    pub async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>> {
        if let Some(data) = self.read_on_host(id, Path::new(path)) {
            return Ok(data);
        }
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let what = || format!("cannot read {path} in container {id}");
        let download = self
            .docker
            .download_from_container(id, Some(options))
            .try_collect::<Vec<_>>();
        let chunks = tokio::time::timeout(READ_TIMEOUT, download)
            .await
            .map_err(|_| {
                Error::Invalid(format!(
                    "{}: no answer within {} s",
                    what(),
                    READ_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| Error::engine(what(), e))?;
        let tar = chunks.concat();
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
        let mut filters = labels::tenant_filter(tenant);
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("event".into(), SERVER_EVENTS.map(String::from).to_vec());
        let options = EventsOptionsBuilder::default()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        events_of(self.docker.events(Some(options))).boxed()
    }

    /// Creates a container by name; an existing name is reported, not an error.
    pub async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<Created> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        match self.docker.create_container(Some(options), body).await {
            Ok(r) => Ok(Created::New(r.id)),
            Err(e) if status(&e) == Some(409) => Ok(Created::Exists),
            Err(e) => Err(Error::engine(format!("cannot create container {name}"), e)),
        }
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        match self
            .docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(304) => Ok(()),
            Err(e) => Err(Error::engine(format!("cannot start container {id}"), e)),
        }
    }

    /// Stops (SIGTERM, then SIGKILL after `grace`; with no grace, killed at once) and removes
    /// a container. A container that is already gone counts as removed.
    pub async fn remove(&self, id: &str, grace: Duration) -> Result<()> {
        // With no grace, the forced removal kills the container itself: one request, not two.
        if !grace.is_zero() {
            let stop = StopContainerOptionsBuilder::default()
                .t(grace.as_secs() as i32)
                .build();
            match self.docker.stop_container(id, Some(stop)).await {
                Ok(()) => {}
                Err(e) if matches!(status(&e), Some(304) | Some(404)) => {}
                Err(e) => return Err(Error::engine(format!("cannot stop container {id}"), e)),
            }
        }
        let rm = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(rm)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            // Removal already under way (another manager): it will be gone.
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(Error::engine(format!("cannot remove container {id}"), e)),
        }
    }

    /// The last `lines` lines of a container's output.
    pub async fn logs_tail(&self, id: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let chunks: Vec<String> = self
            .docker
            .logs(id, Some(options))
            .map_ok(|chunk| chunk.to_string())
            .filter_map(|r| async move { r.ok() })
            .collect()
            .await;
        chunks.concat()
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
            let code = self
                .docker
                .wait_container(&id, None::<WaitContainerOptions>)
                .try_collect::<Vec<_>>()
                .await
                .map(|r| r.last().map(|w| w.status_code).unwrap_or(0))
                .or_else(|e| match e {
                    BollardError::DockerContainerWaitError { code, .. } => Ok(code),
                    e => Err(Error::engine(
                        format!("cannot wait for container {name}"),
                        e,
                    )),
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

fn events_of<S, T>(events: S) -> impl Stream<Item = Result<()>>
where
    S: Stream<Item = std::result::Result<T, BollardError>>,
{
    events.map(|e| {
        e.map(drop)
            .map_err(|e| Error::engine("the engine's event stream failed", e))
    })
}

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
    Runtime {
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        pid: state.pid.filter(|p| *p > 0).map(|p| p as u32),
        ip,
        host_port,
        exit_code: state.exit_code,
    }
}

fn summary_to_server(c: ContainerSummary) -> Option<Server> {
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
        pid: None,
        host_port,
        managed_by_cli: labels.get(labels::ORIGIN).map(String::as_str) != Some("compose"),
        kernel_release,
        cert_volume,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_version_comes_from_the_ping_header() {
        let answer = "HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK";
        let v = api_version(answer).unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        let lower = "HTTP/1.1 200 OK\r\napi-version:1.53\r\n\r\n";
        assert_eq!(api_version(lower).unwrap().minor_version, 53);
    }

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

    #[test]
    fn an_answer_without_a_version_is_none() {
        for answer in [
            "",
            "HTTP/1.0 200 OK\r\n\r\nApi-Version: 1.41",
            "HTTP/1.0 200 OK\r\nApi-Version: one\r\n\r\n",
            "HTTP/1.0 200 OK\r\nApi-Version: 1\r\n\r\n",
        ] {
            assert!(api_version(answer).is_none(), "{answer:?}");
        }
    }
}

//! The Docker engine: the only module that speaks bollard. Each method is one operation the
//! manager needs, with errors that name what was being done; 404/304/409 are matched on the
//! HTTP status, never on message text.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, NetworkCreateRequest,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptions,
};
use futures_util::StreamExt;
use futures_util::stream::{self, TryStreamExt};

use crate::body::SERVER_PORT;
use crate::error::{Error, Result};
use crate::labels;
use crate::spec::Server;

/// How many engine calls of one kind run at once.
pub const CONCURRENCY: usize = 8;

/// A connected engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

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

/// Where the engine is, as the user would name it.
pub fn address() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

impl Engine {
    /// Connects through `DOCKER_HOST` or the default socket and negotiates the API version, so
    /// no field newer than the engine knows is ever sent.
    pub async fn connect() -> Result<Engine> {
        let unreachable = |reason: String| Error::EngineUnreachable {
            addr: address(),
            reason,
        };
        let docker = Docker::connect_with_defaults().map_err(|e| unreachable(e.to_string()))?;
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Engine { docker })
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The tenant's servers, in one list call; PIDs come from inspecting the running ones.
    pub async fn servers(&self, tenant: &str) -> Result<Vec<Server>> {
        let list = self.containers(tenant).await?;
        let mut servers: Vec<Server> = list.into_iter().filter_map(summary_to_server).collect();
        let pids: Vec<Option<u32>> = stream::iter(servers.iter().map(|s| {
            let id = s.id.clone();
            let running = s.running();
            async move {
                if running {
                    self.inspect(&id).await.ok().and_then(|r| r.pid)
                } else {
                    None
                }
            }
        }))
        .buffered(CONCURRENCY)
        .collect()
        .await;
        for (server, pid) in servers.iter_mut().zip(pids) {
            server.pid = pid;
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
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| Error::engine("cannot list containers", e))
    }

    pub async fn inspect(&self, id: &str) -> Result<Runtime> {
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map(runtime)
            .map_err(|e| Error::engine(format!("cannot inspect container {id}"), e))
    }

    /// The container of that name or id, if there is one.
    pub async fn find(&self, name: &str) -> Result<Option<Runtime>> {
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Some(runtime(c))),
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

    /// Creates the tenant's bridge network unless it exists.
    pub async fn ensure_network(&self, name: &str, tenant: &str) -> Result<()> {
        if self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .is_ok()
        {
            return Ok(());
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

    /// Stops (SIGTERM, then SIGKILL after `grace`) and removes a container. A container that
    /// is already gone counts as removed.
    pub async fn remove(&self, id: &str, grace: Duration) -> Result<()> {
        let stop = StopContainerOptionsBuilder::default()
            .t(grace.as_secs() as i32)
            .build();
        match self.docker.stop_container(id, Some(stop)).await {
            Ok(()) => {}
            Err(e) if matches!(status(&e), Some(304) | Some(404)) => {}
            Err(e) => return Err(Error::engine(format!("cannot stop container {id}"), e)),
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
    })
}

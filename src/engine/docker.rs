//! The engine reached through bollard: the only code that speaks bollard. Each method is one
//! request; a failure becomes an [`EngineError`] naming the operation, with its HTTP status.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, NetworkCreateRequest,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    DownloadFromContainerOptionsBuilder, EventsOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptions, StartContainerOptions,
    StopContainerOptionsBuilder, WaitContainerOptions,
};
use bollard::{ClientVersion, Docker};
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, TryStreamExt};
use futures_util::{FutureExt, StreamExt};
use tokio_util::io::ReaderStream;

use super::{Api, BuildLine, EngineError, Labels, Network, Op, SERVER_EVENTS, Source, Volume};
use crate::error::{Error, Result};
use crate::labels;

/// The engine at the end of a bollard client.
pub struct Bollard {
    docker: Docker,
    /// A client for work that takes as long as it takes (image imports and builds), where
    /// the default per-request timeout (2 minutes) would cut a slow machine off.
    patient: Docker,
}

pub(super) fn failed(op: Op) -> impl FnOnce(BollardError) -> EngineError {
    move |e| EngineError {
        op,
        status: match &e {
            BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
            _ => None,
        },
        reason: e.to_string(),
    }
}

impl Bollard {
    /// Connects to `addr` (`DOCKER_HOST` or the default socket) and negotiates the API
    /// version, so no field newer than the engine knows is ever sent. On a local socket the
    /// version comes from `/_ping`'s header, which the engine answers at once (`/version`
    /// asks containerd). Returns whether the engine is on this host (a local socket).
    pub async fn connect(addr: &str) -> Result<(Bollard, bool)> {
        let unreachable = |reason: String| Error::EngineUnreachable {
            addr: addr.to_string(),
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
            return Ok((Bollard::new(docker), false));
        };
        let version = tokio::time::timeout(PATIENCE, ping_version(Path::new(socket)))
            .await
            .map_err(|_| within(" to /_ping"))?
            .map_err(answer)?;
        let newest = *bollard::API_DEFAULT_VERSION;
        let version = if version < newest { version } else { newest };
        let docker = Docker::connect_with_unix(socket, 120, &version)
            .map_err(|e| unreachable(e.to_string()))?;
        Ok((Bollard::new(docker), true))
    }

    /// The client, for the swarm's calls to its manager.
    pub(super) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The client with no per-request timeout.
    pub(super) fn patient(&self) -> &Docker {
        &self.patient
    }

    fn new(docker: Docker) -> Bollard {
        Bollard {
            patient: docker.clone().with_timeout(Duration::from_secs(3600)),
            docker,
        }
    }
}

/// A container's or service's output as text: what could be read of it.
pub(super) async fn text(
    output: impl futures_util::Stream<
        Item = std::result::Result<bollard::container::LogOutput, BollardError>,
    >,
) -> String {
    let chunks: Vec<String> = output
        .map_ok(|chunk| chunk.to_string())
        .filter_map(|r| async move { r.ok() })
        .collect()
        .await;
    chunks.concat()
}

fn volume(v: bollard::models::Volume) -> Volume {
    Volume {
        labels: v.labels,
        mountpoint: v.mountpoint,
    }
}

impl Api for Bollard {
    fn list<'a>(
        &'a self,
        tenant: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerSummary>, EngineError>> {
        async move {
            let options = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&labels::tenant_filter(tenant))
                .build();
            self.docker
                .list_containers(Some(options))
                .await
                .map_err(failed(Op::List(tenant.into())))
        }
        .boxed()
    }

    fn list_writers<'a>(
        &'a self,
        log: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<ContainerSummary>, EngineError>> {
        async move {
            let options = ListContainersOptionsBuilder::default()
                .all(false)
                .filters(&labels::log_writers_filter(log))
                .build();
            self.docker
                .list_containers(Some(options))
                .await
                .map_err(failed(Op::ListWriters(log.display().to_string())))
        }
        .boxed()
    }

    fn pause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            self.docker
                .pause_container(id)
                .await
                .map_err(failed(Op::Pause(id.into())))
        }
        .boxed()
    }

    fn unpause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            self.docker
                .unpause_container(id)
                .await
                .map_err(failed(Op::Unpause(id.into())))
        }
        .boxed()
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ContainerInspectResponse, EngineError>> {
        async move {
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>)
                .await
                .map_err(failed(Op::Inspect(id.into())))
        }
        .boxed()
    }

    fn create<'a>(
        &'a self,
        name: &'a str,
        body: ContainerCreateBody,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        async move {
            let options = CreateContainerOptionsBuilder::default().name(name).build();
            self.docker
                .create_container(Some(options), body)
                .await
                .map(|r| r.id)
                .map_err(failed(Op::Create(name.into())))
        }
        .boxed()
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            self.docker
                .start_container(id, None::<StartContainerOptions>)
                .await
                .map_err(failed(Op::Start(id.into())))
        }
        .boxed()
    }

    fn stop<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            let stop = StopContainerOptionsBuilder::default()
                .t(grace.as_secs() as i32)
                .build();
            self.docker
                .stop_container(id, Some(stop))
                .await
                .map_err(failed(Op::Stop(id.into())))
        }
        .boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            let rm = RemoveContainerOptionsBuilder::default().force(true).build();
            self.docker
                .remove_container(id, Some(rm))
                .await
                .map_err(failed(Op::Remove(id.into())))
        }
        .boxed()
    }

    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<i64, EngineError>> {
        async move {
            self.docker
                .wait_container(id, None::<WaitContainerOptions>)
                .try_collect::<Vec<_>>()
                .await
                .map(|r| r.last().map(|w| w.status_code).unwrap_or(0))
                .or_else(|e| match e {
                    BollardError::DockerContainerWaitError { code, .. } => Ok(code),
                    e => Err(failed(Op::Wait(id.into()))(e)),
                })
        }
        .boxed()
    }

    fn logs<'a>(&'a self, id: &'a str, lines: usize) -> BoxFuture<'a, String> {
        async move {
            let options = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .tail(&lines.to_string())
                .build();
            text(self.docker.logs(id, Some(options))).await
        }
        .boxed()
    }

    fn download<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, EngineError>> {
        async move {
            let options = DownloadFromContainerOptionsBuilder::default()
                .path(path)
                .build();
            self.docker
                .download_from_container(id, Some(options))
                .try_collect::<Vec<_>>()
                .await
                .map(|chunks| chunks.concat())
                .map_err(failed(Op::Read {
                    id: id.into(),
                    path: path.into(),
                }))
        }
        .boxed()
    }

    fn events(&self, tenant: &str, since: u64) -> BoxStream<'static, Result<(), EngineError>> {
        let mut filters = labels::tenant_filter(tenant);
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("event".into(), SERVER_EVENTS.map(String::from).to_vec());
        let options = EventsOptionsBuilder::default()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        self.docker
            .events(Some(options))
            .map({
                let tenant = tenant.to_string();
                move |e| e.map(drop).map_err(failed(Op::Events(tenant.clone())))
            })
            .boxed()
    }

    fn volume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Volume, EngineError>> {
        async move {
            self.docker
                .inspect_volume(name)
                .await
                .map(volume)
                .map_err(failed(Op::InspectVolume(name.into())))
        }
        .boxed()
    }

    fn create_volume<'a>(
        &'a self,
        name: &'a str,
        labels: Labels,
    ) -> BoxFuture<'a, Result<Volume, EngineError>> {
        async move {
            let request = VolumeCreateRequest {
                name: Some(name.into()),
                labels: Some(labels),
                ..VolumeCreateRequest::default()
            };
            self.docker
                .create_volume(request)
                .await
                .map(volume)
                .map_err(failed(Op::CreateVolume(name.into())))
        }
        .boxed()
    }

    fn networks<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Network>, EngineError>> {
        async move {
            // The engine's name filter matches parts of names: the exact ones are kept.
            let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
            let options = ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build();
            self.docker
                .list_networks(Some(options))
                .await
                .map(|list| {
                    list.into_iter()
                        .filter(|n| n.name.as_deref() == Some(name))
                        .map(|n| Network {
                            id: n.id.unwrap_or_default(),
                            labels: n.labels.unwrap_or_default(),
                            created: n.created.unwrap_or_default(),
                        })
                        .collect()
                })
                .map_err(failed(Op::ListNetworks(name.into())))
        }
        .boxed()
    }

    fn create_network<'a>(
        &'a self,
        name: &'a str,
        labels: Labels,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        async move {
            let request = NetworkCreateRequest {
                name: name.into(),
                driver: Some("bridge".into()),
                labels: Some(labels),
                ..NetworkCreateRequest::default()
            };
            self.docker
                .create_network(request)
                .await
                .map(|n| n.id)
                .map_err(failed(Op::CreateNetwork(name.into())))
        }
        .boxed()
    }

    fn remove_network<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            self.docker
                .remove_network(id)
                .await
                .map_err(failed(Op::RemoveNetwork(id.into())))
        }
        .boxed()
    }

    fn image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<Labels, EngineError>> {
        async move {
            self.docker
                .inspect_image(image)
                .await
                .map(|i| i.config.and_then(|c| c.labels).unwrap_or_default())
                .map_err(failed(Op::InspectImage(image.into())))
        }
        .boxed()
    }

    fn build_image<'a>(
        &'a self,
        image: &'a str,
        context: Vec<u8>,
        args: HashMap<String, String>,
    ) -> BoxStream<'a, Result<BuildLine, EngineError>> {
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(image)
            .rm(true)
            .forcerm(true)
            .buildargs(&args)
            .build();
        let op = Op::BuildImage(image.into());
        self.patient
            .build_image(options, None, Some(bollard::body_full(context.into())))
            .map(move |item| {
                item.map(|info| BuildLine {
                    output: info.stream,
                    error: info.error_detail.map(|d| d.message.unwrap_or_default()),
                })
                .map_err(failed(op.clone()))
            })
            .boxed()
    }

    fn import_image<'a>(
        &'a self,
        repo: &'a str,
        tag: &'a str,
        source: Source,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            let options = CreateImageOptionsBuilder::default()
                .from_src("-")
                .repo(repo)
                .tag(tag)
                .build();
            let mut import = self.patient.create_image(
                Some(options),
                Some(bollard::body_try_stream(ReaderStream::new(source))),
                None,
            );
            while let Some(item) = import.next().await {
                item.map_err(failed(Op::ImportImage(format!("{repo}:{tag}"))))?;
            }
            Ok(())
        }
        .boxed()
    }

    fn remove_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            self.docker
                .remove_image(image, None::<RemoveImageOptions>, None)
                .await
                .map(drop)
                .map_err(failed(Op::RemoveImage(image.into())))
        }
        .boxed()
    }
}

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

//! The engine of a Docker Swarm, through its manager: each server is a service with one task,
//! placed on the node that has its build tree; a one-shot helper (a certificate's maker) is a
//! job on that node. The manager's view ([`super::Engine`]) stays the one of containers: a
//! service is listed, inspected and removed as a container would be, with the node its task
//! runs on reported through the `io.stap-server.swarm.*` labels (never written: read off the
//! task and its node). Files of a task (its certificate) and the image reach a node through
//! that node's own engine API (`tcp://NODE_ADDRESS:NODE_ENGINE_PORT`), the only call made to
//! a node rather than to the manager.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, ContainerState,
    ContainerStateStatusEnum, ContainerSummary, EndpointPortConfig,
    EndpointPortConfigPublishModeEnum, EndpointSpec, Mount, MountBindOptions, MountTmpfsOptions,
    MountType, MountVolumeOptions, NetworkSettings, Node, NodeState, PortBinding, PortSummary,
    PortSummaryTypeEnum, ResourcesUlimits, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecModeReplicatedJob, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, ImportImageOptionsBuilder, ListNodesOptions,
    ListServicesOptionsBuilder, ListTasksOptionsBuilder, LogsOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, TryStreamExt};
use futures_util::{FutureExt, StreamExt};

use super::docker::{Bollard, failed};
use super::{Api, BuildLine, EngineError, Labels, Network, Op, Source, Volume};
use crate::body::SERVER_PORT;
use crate::error::{Error, Result};
use crate::labels;

/// The swarm behind its manager's API, and the node engines reached so far.
pub struct Swarm {
    manager: Bollard,
    /// The port every node's engine API listens on, at the node's address.
    node_port: u16,
    /// A client per node address.
    nodes: Mutex<HashMap<String, Docker>>,
}

/// A node as the manager sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub hostname: String,
    /// The address the node is reached at (its swarm address).
    pub addr: String,
    /// ready, down, unknown, disconnected.
    pub state: String,
    /// The node's architecture, as the engine names it (`x86_64`, `aarch64`).
    pub arch: String,
    /// Whether tasks may be placed on it (availability `active`).
    pub active: bool,
}

/// An operation a swarm has no counterpart for, refused as the engine would refuse it.
fn unsupported(op: Op, what: &str) -> EngineError {
    EngineError {
        op,
        status: Some(501),
        reason: format!("{what} is not done on a swarm"),
    }
}

impl Swarm {
    /// Connects to the manager at `addr`; node engines are reached on `node_port`.
    pub async fn connect(addr: &str, node_port: u16) -> Result<Swarm> {
        let (manager, _) = Bollard::connect(addr).await?;
        let info = manager
            .docker()
            .info()
            .await
            .map_err(|e| Error::EngineUnreachable {
                addr: addr.into(),
                reason: e.to_string(),
            })?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            return Err(Error::Invalid(format!(
                "ENGINE=swarm, but the engine at {addr} is not a swarm manager (its swarm state: \
                 {}): point DOCKER_HOST at a manager, or set ENGINE=docker",
                swarm
                    .local_node_state
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into())
            )));
        }
        Ok(Swarm {
            manager,
            node_port,
            nodes: Mutex::default(),
        })
    }

    fn docker(&self) -> &Docker {
        self.manager.docker()
    }

    /// The swarm's nodes, by hostname.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let nodes = self
            .docker()
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(failed(Op::List("nodes".into())))?;
        let mut nodes: Vec<NodeInfo> = nodes.into_iter().map(node_info).collect();
        nodes.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Ok(nodes)
    }

    /// The engine API of the node at `addr`.
    async fn node_engine(&self, addr: &str) -> Result<Docker> {
        if let Some(d) = self.nodes.lock().expect("not poisoned").get(addr) {
            return Ok(d.clone());
        }
        let url = format!("tcp://{addr}:{}", self.node_port);
        let unreachable = |reason: String| Error::EngineUnreachable {
            addr: format!("{url} (the engine of swarm node {addr}; NODE_ENGINE_PORT)"),
            reason,
        };
        let docker = Docker::connect_with_http(&url, 3600, API_DEFAULT_VERSION)
            .map_err(|e| unreachable(e.to_string()))?;
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        self.nodes
            .lock()
            .expect("not poisoned")
            .insert(addr.into(), docker.clone());
        Ok(docker)
    }

    /// Makes sure `node` has `image` as the manager has it (same id), shipping it from the
    /// manager's engine to the node's when not: `GET /images/NAME/get` streamed into the
    /// node's `POST /images/load`, with no registry. Returns the seconds it took when it
    /// shipped, `None` when the node had it.
    pub async fn ship_image(&self, node: &NodeInfo, image: &str) -> Result<Option<f64>> {
        let want = self
            .docker()
            .inspect_image(image)
            .await
            .map_err(failed(Op::InspectImage(image.into())))?
            .id;
        let engine = self.node_engine(&node.addr).await?;
        if let Ok(have) = engine.inspect_image(image).await
            && have.id == want
        {
            return Ok(None);
        }
        let started = Instant::now();
        let export = self.manager.patient().export_image(image);
        let options = ImportImageOptionsBuilder::default().quiet(true).build();
        let shipped: Vec<_> = engine
            .import_image_stream(options, export, None)
            .try_collect()
            .await
            .map_err(|e| {
                Error::Invalid(format!(
                    "cannot ship image {image} to swarm node {} ({}): {e}",
                    node.hostname, node.addr
                ))
            })?;
        if let Some(e) = shipped.iter().find_map(|i| i.error_detail.clone()) {
            return Err(Error::Invalid(format!(
                "swarm node {} refused image {image}: {}",
                node.hostname,
                e.message.unwrap_or_default()
            )));
        }
        let took = started.elapsed().as_secs_f64();
        tracing::info!(node = %node.hostname, image, seconds = took, "image shipped");
        Ok(Some(took))
    }

    /// The services that carry every one of `labels` (`KEY=VALUE` or `KEY`); a failure is
    /// `op`'s.
    pub async fn services_labelled(
        &self,
        labels: Vec<String>,
        op: Op,
    ) -> std::result::Result<Vec<bollard::models::Service>, EngineError> {
        let options = ListServicesOptionsBuilder::default()
            .filters(&HashMap::from([("label".to_string(), labels)]))
            .build();
        self.docker()
            .list_services(Some(options))
            .await
            .map_err(failed(op))
    }

    /// The tasks of one service, newest first.
    async fn tasks(&self, service: &str) -> std::result::Result<Vec<Task>, EngineError> {
        self.tasks_of(vec![service], Op::Inspect(service.into()))
            .await
    }

    /// The tasks of the services (names or ids), newest first.
    async fn tasks_of(
        &self,
        services: Vec<&str>,
        op: Op,
    ) -> std::result::Result<Vec<Task>, EngineError> {
        let options = ListTasksOptionsBuilder::default()
            .filters(&HashMap::from([("service", services)]))
            .build();
        let mut tasks = self
            .docker()
            .list_tasks(Some(options))
            .await
            .map_err(failed(op))?;
        tasks.sort_by_key(|t| std::cmp::Reverse(t.version.as_ref().and_then(|v| v.index)));
        Ok(tasks)
    }

    /// The output of a service's tasks: the last `tail` lines, or all of it.
    pub async fn service_output(&self, service: &str, tail: Option<usize>) -> String {
        let mut options = LogsOptionsBuilder::default().stdout(true).stderr(true);
        if let Some(lines) = tail {
            options = options.tail(&lines.to_string());
        }
        super::docker::text(
            self.docker()
                .service_logs(&service_name(service), Some(options.build())),
        )
        .await
    }

    /// Creates a service from its spec; its id.
    pub async fn create_service(
        &self,
        spec: ServiceSpec,
    ) -> std::result::Result<String, EngineError> {
        let name = spec.name.clone().unwrap_or_default();
        let created = self
            .docker()
            .create_service(spec, None)
            .await
            .map_err(failed(Op::Create(name.clone())))?;
        created.id.ok_or_else(|| EngineError {
            op: Op::Create(name),
            status: None,
            reason: "the manager answered with no id".into(),
        })
    }

    /// Removes a service. The containers of its tasks that had ended (a job's) stay on their
    /// nodes when the service goes, so they are removed through the nodes' engines.
    pub async fn remove_service(&self, id: &str) -> std::result::Result<(), EngineError> {
        let name = service_name(id);
        let ended: Vec<(String, String)> = self
            .tasks(&name)
            .await
            .unwrap_or_default()
            .iter()
            .filter(|t| ended(t))
            .filter_map(|t| Some((t.node_id.clone()?, container_of(t)?)))
            .collect();
        self.docker()
            .delete_service(&name)
            .await
            .map_err(failed(Op::Remove(id.into())))?;
        if ended.is_empty() {
            return Ok(());
        }
        let nodes = self.nodes().await.unwrap_or_default();
        for (node, container) in ended {
            let Some(node) = nodes.iter().find(|n| n.id == node) else {
                continue;
            };
            if let Ok(engine) = self.node_engine(&node.addr).await {
                let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .build();
                let _ = engine.remove_container(&container, Some(options)).await;
            }
        }
        Ok(())
    }

    /// Waits until every task of a job service has ended, at most `limit`; the tasks.
    pub async fn job_done(
        &self,
        id: &str,
        expected: usize,
        limit: Duration,
    ) -> std::result::Result<Vec<Task>, EngineError> {
        let deadline = Instant::now() + limit;
        loop {
            let tasks = self.tasks(id).await?;
            let ended = tasks.iter().filter(|t| ended(t)).count();
            if ended >= expected.max(1) {
                return Ok(tasks);
            }
            if Instant::now() >= deadline {
                return Err(EngineError {
                    op: Op::Wait(id.into()),
                    status: None,
                    reason: format!(
                        "{ended} of {expected} tasks ended within {} s: {}",
                        limit.as_secs(),
                        tasks.iter().map(task_word).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The service and its task as a container inspection.
    async fn inspect_service(
        &self,
        id: &str,
    ) -> std::result::Result<ContainerInspectResponse, EngineError> {
        let service = self
            .docker()
            .inspect_service(&service_name(id), None)
            .await
            .map_err(failed(Op::Inspect(id.into())))?;
        let service_id = service.id.clone().unwrap_or_default();
        let tasks = self.tasks(&service_id).await?;
        let nodes = self.nodes().await.unwrap_or_default();
        let summary = summary(service, current(&tasks), &nodes);
        let (status, running) = container_status(summary.status.as_deref().unwrap_or_default());
        let ports = summary
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                (
                    format!("{}/tcp", p.private_port),
                    Some(vec![PortBinding {
                        host_ip: p.ip,
                        host_port: p.public_port.map(|p| p.to_string()),
                    }]),
                )
            })
            .collect();
        let exit_code =
            current(&tasks).and_then(|t| t.status.as_ref()?.container_status.as_ref()?.exit_code);
        Ok(ContainerInspectResponse {
            id: summary.id,
            name: summary
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| format!("/{n}")),
            state: Some(ContainerState {
                status: Some(status),
                running: Some(running),
                exit_code,
                ..ContainerState::default()
            }),
            config: Some(ContainerConfig {
                labels: summary.labels,
                ..ContainerConfig::default()
            }),
            network_settings: Some(NetworkSettings {
                ports: Some(ports),
                ..NetworkSettings::default()
            }),
            ..ContainerInspectResponse::default()
        })
    }

    /// The node and container of a service's running task.
    async fn task_container(
        &self,
        id: &str,
    ) -> std::result::Result<(NodeInfo, String), EngineError> {
        let service = self
            .docker()
            .inspect_service(&service_name(id), None)
            .await
            .map_err(failed(Op::Inspect(id.into())))?;
        let tasks = self.tasks(&service.id.unwrap_or_default()).await?;
        let nodes = self.nodes().await.map_err(|e| EngineError {
            op: Op::Inspect(id.into()),
            status: None,
            reason: e.to_string(),
        })?;
        let found = current(&tasks).and_then(|t| {
            let container = container_of(t)?;
            let node = nodes.iter().find(|n| Some(&n.id) == t.node_id.as_ref())?;
            Some((node.clone(), container))
        });
        found.ok_or_else(|| EngineError {
            op: Op::Inspect(id.into()),
            status: Some(404),
            reason: "the service has no task with a container".into(),
        })
    }
}

/// The service of a container name (or id): a swarm names a service as a DNS label would
/// be named (letters, digits and `-`, at most 63), which a release's dots are not. Ids and
/// names already fit are left as they are; a name cut short keeps a digest of the whole.
pub fn service_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.len() > 63 {
        out.truncate(54);
        out.push('-');
        out.push_str(&crate::body::digest(name));
    }
    out
}

/// A tmpfs `size=` option (`64k`, `1073741824`) in bytes.
fn tmpfs_bytes(size: &str) -> Option<i64> {
    let (digits, unit) = match size.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => size.split_at(i),
        None => (size, ""),
    };
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return None,
    };
    digits.parse::<i64>().ok()?.checked_mul(1 << shift)
}

/// A node's facts.
fn node_info(n: Node) -> NodeInfo {
    let description = n.description.unwrap_or_default();
    let status = n.status.unwrap_or_default();
    // A manager may report its own address as 0.0.0.0; its manager address names it.
    let addr = status
        .addr
        .filter(|a| a != "0.0.0.0" && !a.is_empty())
        .or_else(|| {
            let a = n.manager_status?.addr?;
            Some(a.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or(a))
        })
        .unwrap_or_default();
    NodeInfo {
        id: n.id.unwrap_or_default(),
        hostname: description.hostname.unwrap_or_default(),
        addr,
        state: status.state.unwrap_or(NodeState::UNKNOWN).to_string(),
        arch: description
            .platform
            .and_then(|p| p.architecture)
            .unwrap_or_default(),
        active: n
            .spec
            .and_then(|s| s.availability)
            .is_none_or(|a| a.to_string() == "active"),
    }
}

/// The container of a task, once its node made one.
fn container_of(t: &Task) -> Option<String> {
    t.status
        .as_ref()?
        .container_status
        .as_ref()?
        .container_id
        .clone()
}

fn ended(t: &Task) -> bool {
    matches!(
        t.status.as_ref().and_then(|s| s.state),
        Some(
            TaskState::COMPLETE
                | TaskState::FAILED
                | TaskState::REJECTED
                | TaskState::SHUTDOWN
                | TaskState::ORPHANED
        )
    )
}

fn task_word(t: &Task) -> String {
    let status = t.status.clone().unwrap_or_default();
    let state = status.state.map(|s| s.to_string()).unwrap_or_default();
    match status.err.filter(|e| !e.is_empty()) {
        Some(err) => format!("{state} ({err})"),
        None => state,
    }
}

/// The task that stands for a service now: the newest one meant to run, else the newest.
fn current(tasks: &[Task]) -> Option<&Task> {
    tasks
        .iter()
        .find(|t| t.desired_state == Some(TaskState::RUNNING))
        .or_else(|| tasks.first())
}

/// The engine's container state word of a task's state, and whether it runs.
fn container_status(state: &str) -> (ContainerStateStatusEnum, bool) {
    match state {
        "running" => (ContainerStateStatusEnum::RUNNING, true),
        "complete" | "failed" | "rejected" | "shutdown" | "orphaned" | "remove" => {
            (ContainerStateStatusEnum::EXITED, false)
        }
        _ => (ContainerStateStatusEnum::CREATED, false),
    }
}

/// A service, its current task and the nodes, as a container summary: the task's container
/// labels (ours), with the node it is placed on (`swarm.node`, `swarm.address`) and, when it
/// does not run, why (`swarm.reason`); its state the task's (`running`, `pending`...), or
/// `node-down` when the node of its task is down.
pub fn summary(
    service: bollard::models::Service,
    task: Option<&Task>,
    nodes: &[NodeInfo],
) -> ContainerSummary {
    let spec = service.spec.unwrap_or_default();
    let container = spec
        .task_template
        .and_then(|t| t.container_spec)
        .unwrap_or_default();
    let mut labels = container.labels.unwrap_or_default();
    let status = task.and_then(|t| t.status.clone()).unwrap_or_default();
    let node = task
        .and_then(|t| t.node_id.as_ref())
        .and_then(|id| nodes.iter().find(|n| &n.id == id))
        .or_else(|| {
            let id = labels.get(labels::NODE_ID)?;
            nodes.iter().find(|n| &n.id == id)
        });
    let mut state = status
        .state
        .map(|s| s.to_string())
        .unwrap_or_else(|| "created".into());
    if let Some(node) = node {
        labels.insert(labels::SWARM_NODE.into(), node.hostname.clone());
        labels.insert(labels::SWARM_ADDRESS.into(), node.addr.clone());
        if node.state != "ready" {
            state = "node-down".into();
            labels.insert(
                labels::SWARM_REASON.into(),
                format!("node {} is {}", node.hostname, node.state),
            );
        }
    }
    if state == "running"
        && let Some(pid) = status
            .container_status
            .as_ref()
            .and_then(|c| c.pid)
            .filter(|p| *p > 0)
    {
        labels.insert(labels::SWARM_PID.into(), pid.to_string());
    }
    if state != "running" && !labels.contains_key(labels::SWARM_REASON) {
        let why = [status.err, status.message]
            .into_iter()
            .flatten()
            .find(|s| !s.is_empty());
        if let Some(why) = why {
            labels.insert(labels::SWARM_REASON.into(), why);
        }
    }
    let ports = (state == "running").then(|| {
        status
            .port_status
            .and_then(|p| p.ports)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                Some(PortSummary {
                    ip: Some(node?.addr.clone()),
                    private_port: u16::try_from(p.target_port?).ok()?,
                    public_port: u16::try_from(p.published_port?).ok(),
                    typ: Some(PortSummaryTypeEnum::TCP),
                })
            })
            .collect()
    });
    let name = labels.get(labels::NAME).cloned().or(spec.name);
    ContainerSummary {
        id: service.id,
        names: name.map(|n| vec![format!("/{n}")]),
        image: container.image,
        labels: Some(labels),
        state: Some(match state.as_str() {
            "running" => bollard::models::ContainerSummaryStateEnum::RUNNING,
            "complete" | "failed" | "rejected" | "shutdown" | "orphaned" => {
                bollard::models::ContainerSummaryStateEnum::EXITED
            }
            _ => bollard::models::ContainerSummaryStateEnum::CREATED,
        }),
        status: Some(state),
        ports,
        ..ContainerSummary::default()
    }
}

/// A container create body as a swarm service spec (pure): the same image, command, user,
/// environment, labels (on the service and on its task's container), mounts (binds
/// read-only as given, the certificate volume labelled as ours, tmpfs), read-only root,
/// capabilities, limits and ulimits; the port published in host mode on the node; placed on
/// the node the body's `io.stap-server.node-id` label names. A body that is not a server's
/// (no server labels) is a job: it runs once, to completion, and is not restarted.
pub fn service_spec(name: &str, body: ContainerCreateBody) -> ServiceSpec {
    let host = body.host_config.unwrap_or_default();
    let mut labels = body.labels.unwrap_or_default();
    labels.insert(labels::NAME.into(), name.into());
    let server = labels::from_labels(&labels).is_some();
    let ownership: HashMap<String, String> = labels
        .iter()
        .filter(|(k, _)| [labels::MANAGED, labels::TENANT, labels::ORIGIN].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut mounts: Vec<Mount> = host
        .binds
        .unwrap_or_default()
        .iter()
        .filter_map(|b| {
            let mut parts = b.split(':');
            let (source, target) = (parts.next()?, parts.next()?);
            let read_only = parts.next() != Some("rw");
            Some(Mount {
                source: Some(source.into()),
                target: Some(target.into()),
                typ: Some(MountType::BIND),
                read_only: Some(read_only),
                bind_options: Some(MountBindOptions::default()),
                ..Mount::default()
            })
        })
        .collect();
    for m in host.mounts.unwrap_or_default() {
        mounts.push(if m.typ == Some(MountType::VOLUME) {
            Mount {
                volume_options: Some(MountVolumeOptions {
                    labels: Some(ownership.clone()),
                    ..MountVolumeOptions::default()
                }),
                ..m
            }
        } else {
            m
        });
    }
    let mut tmpfs: Vec<(String, String)> = host.tmpfs.unwrap_or_default().into_iter().collect();
    tmpfs.sort();
    for (target, options) in tmpfs {
        let size = options
            .split(',')
            .find_map(|o| o.strip_prefix("size="))
            .and_then(tmpfs_bytes);
        let mode = options
            .split(',')
            .find_map(|o| o.strip_prefix("mode="))
            .and_then(|m| i64::from_str_radix(m, 8).ok());
        mounts.push(Mount {
            target: Some(target),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: size,
                mode,
                ..MountTmpfsOptions::default()
            }),
            ..Mount::default()
        });
    }
    let mut constraints = Vec::new();
    if let Some(node) = labels.get(labels::NODE_ID) {
        constraints.push(format!("node.id=={node}"));
    }
    let published: Option<i64> = host
        .port_bindings
        .unwrap_or_default()
        .get(&format!("{SERVER_PORT}/tcp"))
        .cloned()
        .flatten()
        .and_then(|b| b.into_iter().next())
        .and_then(|b| b.host_port)
        .and_then(|p| p.parse().ok());
    let (command, args) = match body.entrypoint {
        Some(entrypoint) => (Some(entrypoint), body.cmd),
        None => (None, body.cmd),
    };
    ServiceSpec {
        name: Some(service_name(name)),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: body.image,
                labels: Some(labels),
                command,
                args,
                hostname: body.hostname,
                env: body.env,
                user: body.user,
                read_only: host.readonly_rootfs,
                mounts: Some(mounts),
                stop_grace_period: Some(10_000_000_000),
                capability_add: host.cap_add,
                capability_drop: host.cap_drop,
                ulimits: host
                    .ulimits
                    .map(|u| u.into_iter().map(|u| ResourcesUlimits { ..u }).collect()),
                ..TaskSpecContainerSpec::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(bollard::models::Limit {
                    nano_cpus: host.nano_cpus,
                    memory_bytes: host.memory,
                    pids: host.pids_limit,
                }),
                ..TaskSpecResources::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(if server {
                    TaskSpecRestartPolicyConditionEnum::ANY
                } else {
                    TaskSpecRestartPolicyConditionEnum::NONE
                }),
                // A killed server is back in about a second, not the default five.
                delay: Some(1_000_000_000),
                ..TaskSpecRestartPolicy::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(constraints),
                ..TaskSpecPlacement::default()
            }),
            ..TaskSpec::default()
        }),
        mode: Some(if server {
            ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..ServiceSpecMode::default()
            }
        } else {
            ServiceSpecMode {
                replicated_job: Some(ServiceSpecModeReplicatedJob {
                    max_concurrent: Some(1),
                    total_completions: Some(1),
                }),
                ..ServiceSpecMode::default()
            }
        }),
        endpoint_spec: server.then(|| EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                target_port: Some(SERVER_PORT.into()),
                published_port: published,
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..EndpointPortConfig::default()
            }]),
            ..EndpointSpec::default()
        }),
        ..ServiceSpec::default()
    }
}

impl Api for Swarm {
    fn list<'a>(
        &'a self,
        tenant: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerSummary>, EngineError>> {
        async move {
            let services = self
                .services_labelled(labels::tenant_labels(tenant), Op::List(tenant.into()))
                .await?;
            if services.is_empty() {
                return Ok(Vec::new());
            }
            let nodes = self.nodes().await.map_err(|e| EngineError {
                op: Op::List(tenant.into()),
                status: None,
                reason: e.to_string(),
            })?;
            let ids: Vec<&str> = services.iter().filter_map(|s| s.id.as_deref()).collect();
            let tasks = self.tasks_of(ids, Op::List(tenant.into())).await?;
            Ok(services
                .into_iter()
                .map(|s| {
                    let mine: Vec<Task> = tasks
                        .iter()
                        .filter(|t| t.service_id == s.id)
                        .cloned()
                        .collect();
                    summary(s, current(&mine), &nodes)
                })
                .collect())
        }
        .boxed()
    }

    fn list_writers<'a>(
        &'a self,
        _log: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<ContainerSummary>, EngineError>> {
        // A swarm's servers write no host log file: their output stays with the engine.
        async { Ok(Vec::new()) }.boxed()
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ContainerInspectResponse, EngineError>> {
        self.inspect_service(id).boxed()
    }

    fn pause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        async move { Err(unsupported(Op::Pause(id.into()), "pausing")) }.boxed()
    }

    fn unpause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        async move { Err(unsupported(Op::Unpause(id.into()), "unpausing")) }.boxed()
    }

    fn create<'a>(
        &'a self,
        name: &'a str,
        body: ContainerCreateBody,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        async move {
            let image = body.image.clone().unwrap_or_default();
            let node = body
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::NODE_ID))
                .cloned();
            if let Some(node) = node {
                let nodes = self.nodes().await.map_err(|e| EngineError {
                    op: Op::Create(name.into()),
                    status: None,
                    reason: e.to_string(),
                })?;
                let node = nodes
                    .iter()
                    .find(|n| n.id == node)
                    .ok_or_else(|| EngineError {
                        op: Op::Create(name.into()),
                        status: None,
                        reason: format!("the swarm has no node {node}"),
                    })?;
                self.ship_image(node, &image)
                    .await
                    .map_err(|e| EngineError {
                        op: Op::Create(name.into()),
                        status: None,
                        reason: e.to_string(),
                    })?;
            }
            self.create_service(service_spec(name, body)).await
        }
        .boxed()
    }

    fn start<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        // A service runs as soon as it is made.
        async { Ok(()) }.boxed()
    }

    fn stop<'a>(
        &'a self,
        _id: &'a str,
        _grace: Duration,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        // Its removal stops the task (SIGTERM, then SIGKILL after the spec's grace period).
        async { Ok(()) }.boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.remove_service(id).boxed()
    }

    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<i64, EngineError>> {
        async move {
            let tasks = self.job_done(id, 1, Duration::from_secs(300)).await?;
            let task = tasks.iter().find(|t| ended(t)).expect("one ended task");
            let status = task.status.clone().unwrap_or_default();
            Ok(match status.state {
                Some(TaskState::COMPLETE) => 0,
                _ => status
                    .container_status
                    .and_then(|c| c.exit_code)
                    .filter(|c| *c != 0)
                    .unwrap_or(1),
            })
        }
        .boxed()
    }

    fn logs<'a>(&'a self, id: &'a str, lines: usize) -> BoxFuture<'a, String> {
        self.service_output(id, Some(lines)).boxed()
    }

    fn download<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, EngineError>> {
        async move {
            let op = || Op::Read {
                id: id.into(),
                path: path.into(),
            };
            let (node, container) = self.task_container(id).await?;
            let engine = self
                .node_engine(&node.addr)
                .await
                .map_err(|e| EngineError {
                    op: op(),
                    status: None,
                    reason: e.to_string(),
                })?;
            let options = DownloadFromContainerOptionsBuilder::default()
                .path(path)
                .build();
            engine
                .download_from_container(&container, Some(options))
                .try_collect::<Vec<_>>()
                .await
                .map(|chunks| chunks.concat())
                .map_err(failed(op()))
        }
        .boxed()
    }

    fn events(&self, tenant: &str, _since: u64) -> BoxStream<'static, Result<(), EngineError>> {
        stream::once(futures_util::future::ready(Err(unsupported(
            Op::Events(tenant.into()),
            "following a tenant's servers from this host (each node's announcer follows its own \
             engine)",
        ))))
        .boxed()
    }

    fn volume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Volume, EngineError>> {
        async move {
            Err(unsupported(
                Op::InspectVolume(name.into()),
                "a volume look-up",
            ))
        }
        .boxed()
    }

    fn create_volume<'a>(
        &'a self,
        name: &'a str,
        _labels: Labels,
    ) -> BoxFuture<'a, Result<Volume, EngineError>> {
        async move {
            Err(unsupported(
                Op::CreateVolume(name.into()),
                "making a volume",
            ))
        }
        .boxed()
    }

    fn networks<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Network>, EngineError>> {
        async move {
            Err(unsupported(
                Op::ListNetworks(name.into()),
                "a network look-up",
            ))
        }
        .boxed()
    }

    fn create_network<'a>(
        &'a self,
        name: &'a str,
        _labels: Labels,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        async move {
            Err(unsupported(
                Op::CreateNetwork(name.into()),
                "making a network",
            ))
        }
        .boxed()
    }

    fn remove_network<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            Err(unsupported(
                Op::RemoveNetwork(id.into()),
                "removing a network",
            ))
        }
        .boxed()
    }

    fn image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<Labels, EngineError>> {
        self.manager.image(image)
    }

    fn build_image<'a>(
        &'a self,
        image: &'a str,
        context: Vec<u8>,
        args: HashMap<String, String>,
    ) -> BoxStream<'a, Result<BuildLine, EngineError>> {
        self.manager.build_image(image, context, args)
    }

    fn import_image<'a>(
        &'a self,
        repo: &'a str,
        tag: &'a str,
        source: Source,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        self.manager.import_image(repo, tag, source)
    }

    fn remove_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.manager.remove_image(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{Identity, container_body, on_swarm};
    use crate::buildtree::BuildTree;
    use crate::spec::ServerSpec;
    use bollard::models::{ObjectVersion, PortStatus, TaskStatus};

    const WHO: Identity = Identity { uid: 999, gid: 995 };

    fn server_body(port: Option<u16>) -> ContainerCreateBody {
        let mut spec = ServerSpec::example("6.1.0-9-amd64");
        spec.port = port;
        let tree = BuildTree::example("6.1.0-9-amd64", "/usr/src/linux-headers-6.1.0-9-amd64");
        on_swarm(
            container_body(&spec, &tree, WHO, "cli", None, "node-2"),
            WHO,
            "n2id",
        )
    }

    #[test]
    fn a_server_is_one_replica_on_its_node_published_in_host_mode() {
        let body = server_body(Some(5601));
        let s = service_spec("stap-server-t-x86_64-6.1.0-9-amd64", body.clone());
        assert_eq!(
            s.name.as_deref(),
            Some("stap-server-t-x86-64-6-1-0-9-amd64")
        );
        let labels = s.labels.clone().unwrap();
        assert_eq!(labels[labels::NAME], "stap-server-t-x86_64-6.1.0-9-amd64");
        assert_eq!(labels[labels::MANAGED], "true");
        let mode = s.mode.unwrap();
        assert_eq!(mode.replicated.unwrap().replicas, Some(1));
        let task = s.task_template.unwrap();
        assert_eq!(
            task.placement.unwrap().constraints.unwrap(),
            ["node.id==n2id"]
        );
        let restart = task.restart_policy.unwrap();
        assert_eq!(
            restart.condition,
            Some(TaskSpecRestartPolicyConditionEnum::ANY)
        );
        let limits = task.resources.unwrap().limits.unwrap();
        let host = body.host_config.clone().unwrap();
        assert_eq!(limits.memory_bytes, host.memory);
        assert_eq!(limits.pids, host.pids_limit);
        let c = task.container_spec.unwrap();
        assert_eq!(c.labels.unwrap()[labels::NODE_ID], "n2id");
        assert_eq!((c.user.as_deref(), c.read_only), (Some("0:0"), Some(true)));
        assert_eq!(c.command, body.entrypoint);
        assert_eq!(c.args, body.cmd);
        assert_eq!(c.hostname.as_deref(), Some("node-2"));
        assert_eq!(c.capability_drop, host.cap_drop);
        let mounts = c.mounts.unwrap();
        let binds: Vec<&Mount> = mounts
            .iter()
            .filter(|m| m.typ == Some(MountType::BIND))
            .collect();
        assert_eq!(binds.len(), host.binds.unwrap().len());
        assert!(binds.iter().all(|m| m.read_only == Some(true)), "{binds:?}");
        let volume = mounts
            .iter()
            .find(|m| m.typ == Some(MountType::VOLUME))
            .unwrap();
        let vlabels = volume.volume_options.clone().unwrap().labels.unwrap();
        assert_eq!(vlabels[labels::TENANT], "default");
        assert_eq!(vlabels.len(), 3, "the ownership labels: {vlabels:?}");
        let tmp = mounts
            .iter()
            .find(|m| m.target.as_deref() == Some("/lib/modules"))
            .unwrap();
        assert_eq!(
            tmp.tmpfs_options.clone().unwrap().size_bytes,
            Some(64 << 10)
        );
        let port = &s.endpoint_spec.unwrap().ports.unwrap()[0];
        assert_eq!(
            port.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
        assert_eq!(port.target_port, Some(SERVER_PORT.into()));
        assert_eq!(port.published_port, Some(5601));
        // Unpinned, the swarm chooses.
        let s = service_spec("x", server_body(None));
        assert_eq!(
            s.endpoint_spec.unwrap().ports.unwrap()[0].published_port,
            None
        );
    }

    #[test]
    fn a_helper_is_a_job_that_runs_once() {
        let mut body = crate::body::cert_init_body("img", "vol", WHO, "t", "node-2");
        body.labels
            .as_mut()
            .unwrap()
            .insert(labels::NODE_ID.into(), "n3id".into());
        let s = service_spec("vol-init-n3id", body);
        let mode = s.mode.unwrap();
        assert!(mode.replicated.is_none());
        assert_eq!(mode.replicated_job.unwrap().total_completions, Some(1));
        let task = s.task_template.unwrap();
        assert_eq!(
            task.restart_policy.unwrap().condition,
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        assert_eq!(
            task.placement.unwrap().constraints.unwrap(),
            ["node.id==n3id"]
        );
        assert!(s.endpoint_spec.is_none());
    }

    fn node(id: &str, state: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            hostname: format!("host-{id}"),
            addr: "10.1.2.3".into(),
            state: state.into(),
            arch: "x86_64".into(),
            active: true,
        }
    }

    fn service_and_task(state: TaskState) -> (bollard::models::Service, Task) {
        let spec = service_spec("stap-server-t-x86_64-6.1.0-9-amd64", server_body(None));
        let service = bollard::models::Service {
            id: Some("svc1".into()),
            spec: Some(spec),
            ..Default::default()
        };
        let task = Task {
            id: Some("task1".into()),
            version: Some(ObjectVersion { index: Some(7) }),
            service_id: Some("svc1".into()),
            node_id: Some("n2id".into()),
            desired_state: Some(TaskState::RUNNING),
            status: Some(TaskStatus {
                state: Some(state),
                err: Some("no suitable node".into()),
                port_status: Some(PortStatus {
                    ports: Some(vec![EndpointPortConfig {
                        target_port: Some(SERVER_PORT.into()),
                        published_port: Some(30001),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        (service, task)
    }

    #[test]
    fn a_running_task_lists_as_a_running_server_on_its_node() {
        let (service, mut task) = service_and_task(TaskState::RUNNING);
        task.status.as_mut().unwrap().container_status = Some(bollard::models::ContainerStatus {
            pid: Some(4242),
            ..Default::default()
        });
        let c = summary(service, Some(&task), &[node("n2id", "ready")]);
        assert_eq!(
            c.names.clone().unwrap(),
            ["/stap-server-t-x86_64-6.1.0-9-amd64"]
        );
        let labels = c.labels.clone().unwrap();
        assert_eq!(labels[labels::SWARM_NODE], "host-n2id");
        assert_eq!(labels[labels::SWARM_ADDRESS], "10.1.2.3");
        assert!(!labels.contains_key(labels::SWARM_REASON));
        let port = &c.ports.clone().unwrap()[0];
        assert_eq!(
            (port.private_port, port.public_port),
            (SERVER_PORT, Some(30001))
        );
        let server = crate::engine::summary_to_server(ContainerSummary {
            labels: Some(labels),
            ..c.clone()
        })
        .unwrap();
        assert!(server.running());
        assert_eq!(server.pid, Some(4242), "the PID on its node, for -p");
        assert_eq!(server.host_port, Some(30001));
        assert_eq!(server.place.unwrap().address, "10.1.2.3");
    }

    #[test]
    fn a_task_on_a_node_that_is_down_says_so() {
        let (service, task) = service_and_task(TaskState::RUNNING);
        let c = summary(service, Some(&task), &[node("n2id", "down")]);
        assert_eq!(c.status.as_deref(), Some("node-down"));
        assert!(c.ports.is_none());
        assert_eq!(
            c.labels.unwrap()[labels::SWARM_REASON],
            "node host-n2id is down"
        );
        let (service, task) = service_and_task(TaskState::PENDING);
        let c = summary(service, Some(&task), &[node("n2id", "ready")]);
        assert_eq!(c.labels.unwrap()[labels::SWARM_REASON], "no suitable node");
    }

    #[test]
    fn service_names_are_dns_labels() {
        assert_eq!(service_name("a.b_c-d"), "a-b-c-d");
        assert_eq!(service_name("x1lq8k3"), "x1lq8k3");
        let long = format!("stap-server-{}-x86_64-6.1.0-57-amd64-nick", "t".repeat(40));
        let name = service_name(&long);
        assert_eq!(name.len(), 63);
        assert_ne!(name, service_name(&format!("{long}2")));
        assert_eq!(service_name(&name), name);
        assert_eq!(tmpfs_bytes("64k"), Some(65536));
        assert_eq!(tmpfs_bytes("1073741824"), Some(1 << 30));
        assert_eq!(tmpfs_bytes("1x"), None);
    }
}

//! An engine in memory for unit tests: it keeps containers, images, volumes and networks as
//! the real one would, and records every call it is asked, in order, as an [`Op`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerState, ContainerStateStatusEnum,
    ContainerSummary, ContainerSummaryStateEnum, EndpointSettings, NetworkSettings, PortBinding,
    PortSummary,
};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};

use super::{Api, BuildLine, EngineError, Labels, Network, Op, Source, Volume};
use crate::body::SERVER_PORT;

/// The host port every running container publishes its server on.
pub const HOST_PORT: u16 = 40000;

struct Container {
    id: String,
    labels: Labels,
    running: bool,
}

#[derive(Default)]
struct State {
    /// By name.
    containers: BTreeMap<String, Container>,
    images: HashMap<String, Labels>,
    volumes: HashMap<String, Volume>,
    /// By name and id.
    networks: BTreeMap<(String, String), Labels>,
    /// Networks made so far (their ids' numbers).
    made_networks: usize,
    /// What reading a path in any container gives.
    files: HashMap<String, Vec<u8>>,
}

/// The fake engine.
#[derive(Default)]
pub struct Fake {
    calls: Mutex<Vec<Op>>,
    state: Mutex<State>,
}

fn not_found(op: Op) -> EngineError {
    EngineError {
        op,
        status: Some(404),
        reason: "not found".into(),
    }
}

impl Fake {
    /// The calls asked so far, in order; the record starts again empty.
    pub fn take_calls(&self) -> Vec<Op> {
        std::mem::take(&mut self.calls.lock().unwrap())
    }

    fn record(&self, call: Op) {
        self.calls.lock().unwrap().push(call);
    }

    /// A container that exists before the test, running or not.
    pub fn add_container(&self, name: &str, body: ContainerCreateBody, running: bool) {
        self.state.lock().unwrap().containers.insert(
            name.into(),
            Container {
                id: format!("id-{name}"),
                labels: body.labels.unwrap_or_default(),
                running,
            },
        );
    }

    /// Gives the container of that name a new id, as when another manager removed it and
    /// made a new one of the same name.
    pub fn remake(&self, name: &str) {
        let mut state = self.state.lock().unwrap();
        let c = state
            .containers
            .get_mut(name)
            .expect("a container of that name");
        c.id.push_str("-new");
    }

    pub fn add_image(&self, image: &str, labels: Labels) {
        self.state
            .lock()
            .unwrap()
            .images
            .insert(image.into(), labels);
    }

    pub fn add_volume(&self, name: &str, labels: Labels, mountpoint: &str) {
        self.state.lock().unwrap().volumes.insert(
            name.into(),
            Volume {
                labels,
                mountpoint: mountpoint.into(),
            },
        );
    }

    /// Adds a network of `name` (another, where one of that name exists, as the engine
    /// does); returns its id, which orders the networks by age.
    pub fn add_network(&self, name: &str, labels: Labels) -> String {
        let mut state = self.state.lock().unwrap();
        state.made_networks += 1;
        let id = format!("net-{:04}", state.made_networks);
        state.networks.insert((name.into(), id.clone()), labels);
        id
    }

    /// A file every container holds at `path`, for reads through the engine.
    pub fn add_file(&self, path: &str, content: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.into(), content);
    }

    /// The names of the containers there are now.
    pub fn containers(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .containers
            .keys()
            .cloned()
            .collect()
    }

    /// Records `op` and applies `change` to the container of that name or id (404 if none).
    fn on_container(
        &self,
        op: Op,
        id: &str,
        change: impl FnOnce(&mut State, &str),
    ) -> Result<(), EngineError> {
        self.record(op.clone());
        let mut state = self.state.lock().unwrap();
        let name = Fake::name_of(&state, id).ok_or_else(|| not_found(op))?;
        change(&mut state, &name);
        Ok(())
    }

    fn name_of(state: &State, id: &str) -> Option<String> {
        state
            .containers
            .iter()
            .find(|(name, c)| *name == id || c.id == id)
            .map(|(name, _)| name.clone())
    }
}

impl Api for Fake {
    fn list<'a>(
        &'a self,
        tenant: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ContainerSummary>, EngineError>> {
        self.record(Op::List(tenant.into()));
        let state = self.state.lock().unwrap();
        let list = state
            .containers
            .iter()
            .filter(|(_, c)| {
                c.labels.get(crate::labels::TENANT).map(String::as_str) == Some(tenant)
            })
            .map(|(name, c)| ContainerSummary {
                id: Some(c.id.clone()),
                names: Some(vec![format!("/{name}")]),
                labels: Some(c.labels.clone()),
                state: Some(if c.running {
                    ContainerSummaryStateEnum::RUNNING
                } else {
                    ContainerSummaryStateEnum::EXITED
                }),
                ports: c.running.then(|| {
                    vec![PortSummary {
                        private_port: SERVER_PORT,
                        public_port: Some(HOST_PORT),
                        ..PortSummary::default()
                    }]
                }),
                ..ContainerSummary::default()
            })
            .collect();
        async move { Ok(list) }.boxed()
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ContainerInspectResponse, EngineError>> {
        self.record(Op::Inspect(id.into()));
        let state = self.state.lock().unwrap();
        let found = Fake::name_of(&state, id).map(|name| {
            let c = &state.containers[&name];
            ContainerInspectResponse {
                id: Some(c.id.clone()),
                state: Some(ContainerState {
                    status: Some(if c.running {
                        ContainerStateStatusEnum::RUNNING
                    } else {
                        ContainerStateStatusEnum::CREATED
                    }),
                    pid: Some(if c.running { 4242 } else { 0 }),
                    ..ContainerState::default()
                }),
                network_settings: Some(NetworkSettings {
                    networks: Some(HashMap::from([(
                        "net".to_string(),
                        EndpointSettings {
                            ip_address: Some("127.0.0.1".into()),
                            ..EndpointSettings::default()
                        },
                    )])),
                    ports: Some(HashMap::from([(
                        format!("{SERVER_PORT}/tcp"),
                        Some(vec![PortBinding {
                            host_ip: None,
                            host_port: Some(HOST_PORT.to_string()),
                        }]),
                    )])),
                    ..NetworkSettings::default()
                }),
                ..ContainerInspectResponse::default()
            }
        });
        let result = found.ok_or_else(|| not_found(Op::Inspect(id.into())));
        async move { result }.boxed()
    }

    fn create<'a>(
        &'a self,
        name: &'a str,
        body: ContainerCreateBody,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        self.record(Op::Create(name.into()));
        let mut state = self.state.lock().unwrap();
        let result = if state.containers.contains_key(name) {
            Err(EngineError {
                op: Op::Create(name.into()),
                status: Some(409),
                reason: "conflict".into(),
            })
        } else {
            let id = format!("id-{name}");
            state.containers.insert(
                name.into(),
                Container {
                    id: id.clone(),
                    labels: body.labels.unwrap_or_default(),
                    running: false,
                },
            );
            Ok(id)
        };
        async move { result }.boxed()
    }

    fn list_writers<'a>(
        &'a self,
        log: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<ContainerSummary>, EngineError>> {
        self.record(Op::ListWriters(log.display().to_string()));
        let state = self.state.lock().unwrap();
        let log = log.display().to_string();
        let list = state
            .containers
            .values()
            .filter(|c| c.running && c.labels.get("io.stap-server.log") == Some(&log))
            .map(|c| ContainerSummary {
                id: Some(c.id.clone()),
                ..ContainerSummary::default()
            })
            .collect();
        async move { Ok(list) }.boxed()
    }

    fn pause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        let result = self.on_container(Op::Pause(id.into()), id, |_, _| {});
        async move { result }.boxed()
    }

    fn unpause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        let result = self.on_container(Op::Unpause(id.into()), id, |_, _| {});
        async move { result }.boxed()
    }

    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        let result = self.on_container(Op::Start(id.into()), id, |state, name| {
            state.containers.get_mut(name).unwrap().running = true;
        });
        async move { result }.boxed()
    }

    fn stop<'a>(&'a self, id: &'a str, _: Duration) -> BoxFuture<'a, Result<(), EngineError>> {
        let result = self.on_container(Op::Stop(id.into()), id, |state, name| {
            state.containers.get_mut(name).unwrap().running = false;
        });
        async move { result }.boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        let result = self.on_container(Op::Remove(id.into()), id, |state, name| {
            state.containers.remove(name);
        });
        async move { result }.boxed()
    }

    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<i64, EngineError>> {
        self.record(Op::Wait(id.into()));
        async move { Ok(0) }.boxed()
    }

    fn logs<'a>(&'a self, id: &'a str, _: usize) -> BoxFuture<'a, String> {
        self.record(Op::Logs(id.into()));
        async move { String::new() }.boxed()
    }

    fn download<'a>(
        &'a self,
        id: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, EngineError>> {
        let op = Op::Read {
            id: id.into(),
            path: path.into(),
        };
        self.record(op.clone());
        // The engine answers with a tar archive of the one file.
        let found = self.state.lock().unwrap().files.get(path).map(|content| {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            let mut archive = tar::Builder::new(Vec::new());
            let name = Path::new(path).file_name().expect("a file path");
            archive
                .append_data(&mut header, name, content.as_slice())
                .expect("a tar archive in memory");
            archive.into_inner().expect("a tar archive in memory")
        });
        async move { found.ok_or_else(|| not_found(op)) }.boxed()
    }

    fn events(&self, tenant: &str, _: u64) -> BoxStream<'static, Result<(), EngineError>> {
        self.record(Op::Events(tenant.into()));
        futures_util::stream::pending().boxed()
    }

    fn volume<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Volume, EngineError>> {
        self.record(Op::InspectVolume(name.into()));
        let found = self.state.lock().unwrap().volumes.get(name).cloned();
        let result = found.ok_or_else(|| not_found(Op::InspectVolume(name.into())));
        async move { result }.boxed()
    }

    fn create_volume<'a>(
        &'a self,
        name: &'a str,
        labels: Labels,
    ) -> BoxFuture<'a, Result<Volume, EngineError>> {
        self.record(Op::CreateVolume(name.into()));
        let volume = Volume {
            labels,
            mountpoint: String::new(),
        };
        self.state
            .lock()
            .unwrap()
            .volumes
            .insert(name.into(), volume.clone());
        async move { Ok(volume) }.boxed()
    }

    fn networks<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<Network>, EngineError>> {
        self.record(Op::ListNetworks(name.into()));
        let found = self
            .state
            .lock()
            .unwrap()
            .networks
            .iter()
            .filter(|(n, _)| n.0 == name)
            .map(|((_, id), labels)| Network {
                id: id.clone(),
                labels: labels.clone(),
                created: id.clone(),
            })
            .collect();
        async move { Ok(found) }.boxed()
    }

    fn create_network<'a>(
        &'a self,
        name: &'a str,
        labels: Labels,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        self.record(Op::CreateNetwork(name.into()));
        let id = self.add_network(name, labels);
        async move { Ok(id) }.boxed()
    }

    fn remove_network<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.record(Op::RemoveNetwork(id.into()));
        self.state
            .lock()
            .unwrap()
            .networks
            .retain(|(_, i), _| i != id);
        async move { Ok(()) }.boxed()
    }

    fn image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<Labels, EngineError>> {
        self.record(Op::InspectImage(image.into()));
        let found = self.state.lock().unwrap().images.get(image).cloned();
        let result = found.ok_or_else(|| not_found(Op::InspectImage(image.into())));
        async move { result }.boxed()
    }

    fn build_image<'a>(
        &'a self,
        image: &'a str,
        _: Vec<u8>,
        _: HashMap<String, String>,
    ) -> BoxStream<'a, Result<BuildLine, EngineError>> {
        self.record(Op::BuildImage(image.into()));
        futures_util::stream::empty().boxed()
    }

    fn import_image<'a>(
        &'a self,
        repo: &'a str,
        tag: &'a str,
        _: Source,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        self.record(Op::ImportImage(format!("{repo}:{tag}")));
        async move { Ok(()) }.boxed()
    }

    fn remove_image<'a>(&'a self, image: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.record(Op::RemoveImage(image.into()));
        async move { Ok(()) }.boxed()
    }
}

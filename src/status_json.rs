//! `status --json`: the servers `status` shows, one JSON object each, for monitoring tools.
//!
//! The schema is a contract (README: "status --json"): fields are only ever added, never
//! renamed or removed, and each is present in every object (`null` when it does not apply).
//! Gathering asks the engine and the network; rendering is a pure function of what was
//! gathered, so the schema is tested without a daemon.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::announce::Serials;
use crate::engine::Engine;
use crate::image;
use crate::spec::Server;
use crate::warm::Warmth;

/// How long a health probe waits for the server's host port to accept.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a server answers, as far as this host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Running, and its host port accepts connections.
    Serving,
    /// Running, but its host port does not accept connections (starting, or wedged).
    NotAccepting,
    /// The container is not running.
    Down,
    /// Running on an engine of another host, or without a host port: not probed.
    Unknown,
}

/// What status learns about a server beyond its labels and state.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The certificate serial in stap's form; `None` when it cannot be read.
    pub serial: Option<String>,
    /// The systemtap version the image says it carries; `None` when the image is gone.
    pub systemtap_version: Option<String>,
    pub health: Option<Health>,
    /// How the server's warm-up goes; `None` when it does not warm or cannot be told.
    pub warm: Option<Warmth>,
}

/// One server, as `status --json` prints it. The field order is the classic line's, then ours.
#[derive(Debug, Serialize)]
pub struct ServerStatus<'a> {
    pub arch: &'a str,
    /// The release as given: a name under the modules directory or a build-tree path.
    pub release: &'a str,
    pub runtime: Option<&'a str>,
    pub defines: &'a [String],
    pub includes: &'a [String],
    pub builds: &'a [String],
    pub user: &'a str,
    /// The configured nickname, else the PID, as the classic line shows it.
    pub nickname: Option<String>,
    pub log: &'a PathBuf,
    /// The port the classic line shows: the host port the server has, else the one pinned.
    pub port: Option<u16>,
    pub ssl: Option<&'a PathBuf>,
    pub max_threads: Option<u32>,
    pub max_request_size: Option<u64>,
    pub max_compressed_request: Option<u64>,
    pub pid: Option<u32>,
    /// Whether the classic line says "running" (the engine's state is `running`).
    pub running: bool,
    /// The engine's word for the container's state.
    pub state: &'a str,
    pub keep: bool,
    pub tenant: &'a str,
    pub container_id: &'a str,
    pub container_name: &'a str,
    /// The port published on the host, `null` when none is.
    pub host_port: Option<u16>,
    pub certificate_serial: Option<&'a str>,
    pub image: &'a str,
    pub systemtap_version: Option<&'a str>,
    /// The release served and advertised (a path release's `kernel.release`).
    pub kernel_release: &'a str,
    /// `cli` for servers the manager made, `compose` for those of a compose file.
    pub origin: &'static str,
    pub health: Health,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids_limit: i64,
    pub tmp_size_bytes: u64,
    /// `warming`, `ready` or `failed`; `null` for a server that does not warm or is down.
    pub warm: Option<&'static str>,
}

/// The object of one server.
pub fn server_status<'a>(server: &'a Server, facts: &'a Facts) -> ServerStatus<'a> {
    let spec = &server.spec;
    ServerStatus {
        arch: &spec.arch,
        release: &spec.release,
        runtime: spec.runtime.as_deref(),
        defines: &spec.defines,
        includes: &spec.includes,
        builds: &spec.builds,
        user: &spec.user,
        nickname: server.display_nickname(),
        log: &spec.log,
        port: server.host_port.or(spec.port),
        ssl: spec.ssl.as_ref(),
        max_threads: spec.max_threads,
        max_request_size: spec.max_request_size,
        max_compressed_request: spec.max_compressed_request,
        pid: server.pid,
        running: server.running(),
        state: &server.state,
        keep: spec.keep,
        tenant: &spec.tenant,
        container_id: &server.id,
        container_name: &server.name,
        host_port: server.host_port,
        certificate_serial: facts.serial.as_deref(),
        image: &spec.image,
        systemtap_version: facts.systemtap_version.as_deref(),
        kernel_release: &server.kernel_release,
        origin: if server.managed_by_cli {
            "cli"
        } else {
            "compose"
        },
        health: facts.health.unwrap_or(if server.running() {
            Health::Unknown
        } else {
            Health::Down
        }),
        memory_bytes: spec.limits.memory,
        nano_cpus: spec.limits.nano_cpus,
        pids_limit: spec.limits.pids,
        tmp_size_bytes: spec.limits.tmp_size,
        warm: facts.warm.as_ref().map(Warmth::word),
    }
}

/// The whole document: a JSON array, one object per server, in the order given.
pub fn render(servers: &[Server], facts: &[Facts]) -> String {
    let objects: Vec<ServerStatus> = servers
        .iter()
        .zip(facts)
        .map(|(s, f)| server_status(s, f))
        .collect();
    serde_json::to_string_pretty(&objects).expect("status objects always serialize")
}

/// Reads each server's certificate serial and image version (each once) and probes its port.
pub async fn gather(engine: &Engine, servers: &[Server]) -> Vec<Facts> {
    let mut serials = Serials::default();
    let mut versions: BTreeMap<&str, Option<String>> = BTreeMap::new();
    let mut out = Vec::with_capacity(servers.len());
    for server in servers {
        let image = server.spec.image.as_str();
        if !versions.contains_key(image) {
            let version = match engine.image_labels(image).await {
                Ok(Some(labels)) => Some(image::version_of(&labels)),
                _ => None,
            };
            versions.insert(image, version);
        }
        out.push(Facts {
            serial: serials.of(engine, server).await.ok(),
            systemtap_version: versions[image].clone(),
            health: Some(health(engine.on_this_host(), server).await),
            warm: Warmth::of(engine, server).await,
        });
    }
    out
}

async fn health(local: bool, server: &Server) -> Health {
    if !server.running() {
        return Health::Down;
    }
    let Some(port) = server.host_port.filter(|_| local) else {
        return Health::Unknown;
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let accepts = tokio::task::spawn_blocking(move || {
        TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok()
    })
    .await
    .unwrap_or(false);
    if accepts {
        Health::Serving
    } else {
        Health::NotAccepting
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ServerSpec;

    fn server() -> Server {
        Server {
            spec: ServerSpec {
                nickname: Some("native".into()),
                defines: vec!["A=1".into()],
                ..ServerSpec::example("6.1.0-56-amd64")
            },
            id: "0123abcd".into(),
            name: "stap-server-default-x".into(),
            state: "running".into(),
            pid: Some(23640),
            host_port: Some(5600),
            managed_by_cli: true,
            kernel_release: "6.1.0-56-amd64".into(),
            cert_volume: "v".into(),
            place: None,
        }
    }

    fn parse(text: &str) -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(text)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    #[test]
    fn no_server_is_an_empty_array() {
        assert_eq!(render(&[], &[]), "[]");
    }

    #[test]
    fn every_field_of_the_schema_is_present() {
        let facts = Facts {
            serial: Some("00:ab".into()),
            systemtap_version: Some("5.1".into()),
            health: Some(Health::Serving),
            warm: Some(Warmth::Ready(70)),
        };
        let v = &parse(&render(&[server()], &[facts]))[0];
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut schema = [
            "arch",
            "release",
            "runtime",
            "defines",
            "includes",
            "builds",
            "user",
            "nickname",
            "log",
            "port",
            "ssl",
            "max_threads",
            "max_request_size",
            "max_compressed_request",
            "pid",
            "running",
            "state",
            "keep",
            "tenant",
            "container_id",
            "container_name",
            "host_port",
            "certificate_serial",
            "image",
            "systemtap_version",
            "kernel_release",
            "origin",
            "health",
            "memory_bytes",
            "nano_cpus",
            "pids_limit",
            "tmp_size_bytes",
            "warm",
        ];
        schema.sort();
        assert_eq!(keys, schema);
        assert_eq!(v["nickname"], "native");
        assert_eq!(v["port"], 5600);
        assert_eq!(v["pid"], 23640);
        assert_eq!(v["defines"][0], "A=1");
        assert_eq!(v["runtime"], serde_json::Value::Null);
        assert_eq!(v["certificate_serial"], "00:ab");
        assert_eq!(v["systemtap_version"], "5.1");
        assert_eq!(v["origin"], "cli");
        assert_eq!(v["health"], "serving");
        assert_eq!(v["warm"], "ready");
        assert_eq!(v["log"], "/var/log/stap-server/log");
    }

    #[test]
    fn a_dead_compose_server() {
        let dead = Server {
            state: "exited".into(),
            pid: None,
            managed_by_cli: false,
            host_port: None,
            spec: ServerSpec {
                port: Some(5601),
                nickname: None,
                ..server().spec
            },
            ..server()
        };
        let v = &parse(&render(&[dead], &[Facts::default()]))[0];
        assert_eq!(v["running"], false);
        assert_eq!(v["state"], "exited");
        assert_eq!(v["pid"], serde_json::Value::Null);
        assert_eq!(v["nickname"], serde_json::Value::Null);
        assert_eq!(v["port"], 5601);
        assert_eq!(v["host_port"], serde_json::Value::Null);
        assert_eq!(v["origin"], "compose");
        assert_eq!(v["health"], "down");
        assert_eq!(v["certificate_serial"], serde_json::Value::Null);
    }
}

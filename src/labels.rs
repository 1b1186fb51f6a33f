//! The label schema: a server's whole description kept on its container, so that `status`,
//! `stop` and `restart` work from the engine alone. Written and read here only; README
//! documents it as the contract for containers made by other tools (docker-compose).
//!
//! Every value is a string; lists are JSON arrays of strings; absent optional values are
//! absent labels.

use std::collections::HashMap;

use crate::limits::{REQUEST_DEFAULT, Resolved, ResolvedRequest};
use crate::spec::ServerSpec;

/// The prefix of every label of ours.
pub const PREFIX: &str = "io.stap-server.";
/// Ownership: present (as "true") on everything the manager or a compose file of ours made.
pub const MANAGED: &str = "io.stap-server.managed";
/// Which tool made the container: "cli" or "compose".
pub const ORIGIN: &str = "io.stap-server.origin";
pub const TENANT: &str = "io.stap-server.tenant";
/// The release stap-serverd serves (the build tree's `kernel.release` for path releases):
/// what clients ask for with `-r`, and what mDNS advertises.
pub const KERNEL_RELEASE: &str = "io.stap-server.kernel-release";
/// The certificate volume a server uses (shared by one tenant's servers of one user).
pub const CERT_VOLUME: &str = "io.stap-server.cert-volume";
/// The kernel debuginfo the server sees (a JSON list of host paths; empty: none).
pub const KERNEL_DEBUGINFO: &str = "io.stap-server.kernel-debuginfo";
/// The swarm node a server is placed on (its node id), on a swarm only.
pub const NODE_ID: &str = "io.stap-server.node-id";
/// What a swarm reports of a server's task, as labels of its listing (never written): the
/// node's hostname and address, and why the task does not run.
/// The container name a swarm service stands for (its own name has no dots).
pub const NAME: &str = "io.stap-server.name";
pub const SWARM_NODE: &str = "io.stap-server.swarm.node";
pub const SWARM_ADDRESS: &str = "io.stap-server.swarm.address";
pub const SWARM_REASON: &str = "io.stap-server.swarm.reason";
/// The PID of a swarm server's process on its node.
pub const SWARM_PID: &str = "io.stap-server.swarm.pid";
/// On a survey of a swarm's nodes (a job service): the host and process that made it, and
/// when (seconds since the epoch, that host's clock), so that a survey whose maker died
/// before removing it can be told from one that still runs.
pub const SURVEY_HOST: &str = "io.stap-server.survey.host";
pub const SURVEY_PID: &str = "io.stap-server.survey.pid";
pub const SURVEY_STARTED: &str = "io.stap-server.survey.started";

/// Label filters that select a tenant's servers (for list calls and events).
pub fn tenant_filter(tenant: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), tenant_labels(tenant))])
}

/// The labels (`KEY=VALUE`) every object of the tenant's carries.
pub fn tenant_labels(tenant: &str) -> Vec<String> {
    vec![format!("{MANAGED}=true"), format!("{TENANT}={tenant}")]
}

/// Label filters that select the running containers of ours, of any tenant, whose log goes to
/// `log` (the host file; rotating it concerns every server that writes it).
pub fn log_writers_filter(log: &std::path::Path) -> HashMap<String, Vec<String>> {
    HashMap::from([
        (
            "label".to_string(),
            vec![
                format!("{MANAGED}=true"),
                format!("{}={}", key("log"), log.display()),
            ],
        ),
        ("status".to_string(), vec!["running".to_string()]),
    ])
}

fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// The labels that describe `spec`. Ownership labels are added by the caller, last.
pub fn to_labels(spec: &ServerSpec, kernel_release: &str) -> HashMap<String, String> {
    let mut l = HashMap::new();
    let mut put = |name: &str, value: String| {
        l.insert(key(name), value);
    };
    put("arch", spec.arch.clone());
    put("release", spec.release.clone());
    put("kernel-release", kernel_release.to_string());
    put("user", spec.user.clone());
    put("log", spec.log.display().to_string());
    put("include", json(&spec.includes));
    put("define", json(&spec.defines));
    put("build", json(&spec.builds));
    put("image", spec.image.clone());
    put("keep", spec.keep.to_string());
    put("memory", spec.limits.memory.to_string());
    put("nano-cpus", spec.limits.nano_cpus.to_string());
    put("pids", spec.limits.pids.to_string());
    put("tmpsize", spec.limits.tmp_size.to_string());
    put("request-limits", spec.limits.request.encode());
    put("warm", spec.warm.to_string());
    if let Some(v) = &spec.nickname {
        put("nickname", v.clone());
    }
    if let Some(v) = spec.port {
        put("port", v.to_string());
    }
    if let Some(v) = &spec.ssl {
        put("ssl", v.display().to_string());
    }
    if let Some(v) = &spec.runtime {
        put("runtime", v.clone());
    }
    if let Some(v) = spec.max_threads {
        put("max-threads", v.to_string());
    }
    if let Some(v) = spec.max_request_size {
        put("max-request-size", v.to_string());
    }
    if let Some(v) = spec.max_compressed_request {
        put("max-compressed-request", v.to_string());
    }
    if let Some(v) = &spec.debuginfod_urls {
        put("debuginfod-urls", v.clone());
    }
    l
}

/// The ownership labels, applied after everything else so nothing can override them.
pub fn ownership(tenant: &str, origin: &str) -> [(String, String); 3] {
    [
        (MANAGED.into(), "true".into()),
        (TENANT.into(), tenant.into()),
        (ORIGIN.into(), origin.into()),
    ]
}

/// Reads a spec back from a container's labels. `None` when a required label is missing or
/// malformed: such a container is reported, never guessed at.
pub fn from_labels(l: &HashMap<String, String>) -> Option<ServerSpec> {
    let get = |name: &str| l.get(&key(name)).cloned();
    let list = |name: &str| match get(name) {
        None => Some(Vec::new()),
        Some(v) => serde_json::from_str::<Vec<String>>(&v).ok(),
    };
    let limits = Resolved {
        memory: get("memory")?.parse().ok()?,
        nano_cpus: get("nano-cpus")?.parse().ok()?,
        pids: get("pids")?.parse().ok()?,
        tmp_size: get("tmpsize")?.parse().ok()?,
        // Servers made before request limits existed read as having the defaults.
        request: match get("request-limits") {
            None => REQUEST_DEFAULT,
            Some(v) => ResolvedRequest::decode(&v)?,
        },
    };
    Some(ServerSpec {
        tenant: l.get(TENANT)?.clone(),
        arch: get("arch")?,
        release: get("release")?,
        user: get("user")?,
        nickname: get("nickname"),
        log: get("log")?.into(),
        port: num(l, "port")?,
        ssl: get("ssl").map(Into::into),
        includes: list("include")?,
        defines: list("define")?,
        builds: list("build")?,
        runtime: get("runtime"),
        max_threads: num(l, "max-threads")?,
        max_request_size: num(l, "max-request-size")?,
        max_compressed_request: num(l, "max-compressed-request")?,
        keep: get("keep").as_deref() == Some("true"),
        image: get("image")?,
        limits,
        debuginfod_urls: get("debuginfod-urls"),
        // Servers made before warming existed read as warming.
        warm: get("warm").as_deref() != Some("false"),
    })
}

/// An optional number label: absent is `Some(None)`, malformed is `None`.
fn num<T: std::str::FromStr>(l: &HashMap<String, String>, name: &str) -> Option<Option<T>> {
    match l.get(&key(name)) {
        None => Some(None),
        Some(v) => v.parse().ok().map(Some),
    }
}

/// Paths as the JSON list of a label.
pub fn json_paths(paths: &[std::path::PathBuf]) -> String {
    let items: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    json(&items)
}

fn json(items: &[String]) -> String {
    serde_json::to_string(items).expect("strings always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::DEFAULT;

    fn full() -> ServerSpec {
        ServerSpec {
            tenant: "team-a".into(),
            arch: "x86_64".into(),
            release: "/srv/build \"tree\"".into(),
            user: "stap-server".into(),
            nickname: Some("native".into()),
            log: "/var/log/stap-server/log".into(),
            port: Some(5600),
            ssl: Some("/etc/stap/ssl".into()),
            includes: vec!["/a".into(), "/b, c".into()],
            defines: vec!["X=1".into()],
            builds: vec!["-j1".into(), "V=1".into()],
            runtime: Some("/rt".into()),
            max_threads: Some(0),
            max_request_size: Some(60000),
            max_compressed_request: Some(6000),
            keep: true,
            image: "stap-server:latest".into(),
            limits: DEFAULT,
            debuginfod_urls: Some("https://debuginfod.example file:///srv".into()),
            warm: true,
        }
    }

    fn with_owner(spec: &ServerSpec) -> HashMap<String, String> {
        let mut l = to_labels(spec, "6.1.192");
        l.extend(ownership(&spec.tenant, "cli"));
        l
    }

    #[test]
    fn round_trip_full_and_minimal() {
        let spec = full();
        assert_eq!(from_labels(&with_owner(&spec)), Some(spec));
        let minimal = ServerSpec {
            nickname: None,
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
            debuginfod_urls: None,
            warm: false,
            ..full()
        };
        let labels = with_owner(&minimal);
        assert!(!labels.contains_key("io.stap-server.port"));
        assert_eq!(from_labels(&labels), Some(minimal));
    }

    #[test]
    fn missing_or_malformed_labels_are_not_guessed() {
        let mut l = with_owner(&full());
        l.remove("io.stap-server.release");
        assert_eq!(from_labels(&l), None);
        let mut l = with_owner(&full());
        l.insert("io.stap-server.port".into(), "http".into());
        assert_eq!(from_labels(&l), None);
        let mut l = with_owner(&full());
        l.insert("io.stap-server.include".into(), "/a".into());
        assert_eq!(from_labels(&l), None);
    }

    #[test]
    fn ownership_cannot_be_overridden() {
        let l = with_owner(&full());
        assert_eq!(l[MANAGED], "true");
        assert_eq!(l[TENANT], "team-a");
        assert_eq!(l[ORIGIN], "cli");
        assert_eq!(l[KERNEL_RELEASE], "6.1.192");
    }
}

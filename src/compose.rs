//! Compose files: servers as a docker-compose deployment that makes the very containers the
//! manager would, from the same create bodies (`body::container_body` with origin "compose").
//!
//! The file is written as JSON, which is YAML, and both docker-compose 1.29 and the compose
//! specification read it. Format 2.4 carries every resource setting (`mem_limit`, `cpus`,
//! `pids_limit`) as plain service keys.

use bollard::models::{ContainerCreateBody, HostConfig, MountType};
use serde_json::{Map, Value, json};

/// One service of the file: its name (the container's) and the body it stands for.
pub struct Service {
    pub name: String,
    pub body: ContainerCreateBody,
}

/// The compose document for `services`. The network and the certificate volumes they use are
/// the manager's (made before the file is used), so they are declared external.
pub fn document(services: &[Service]) -> Value {
    let mut out = Map::new();
    let mut networks = Map::new();
    let mut volumes = Map::new();
    for s in services {
        let host = s.body.host_config.clone().unwrap_or_default();
        if let Some(network) = &host.network_mode {
            networks.insert(network.clone(), json!({ "external": true }));
        }
        for m in host.mounts.iter().flatten() {
            if m.typ == Some(MountType::VOLUME)
                && let Some(source) = &m.source
            {
                volumes.insert(source.clone(), json!({ "external": true }));
            }
        }
        out.insert(s.name.clone(), literal(service(&s.name, &s.body)));
    }
    json!({
        "version": "2.4",
        "services": out,
        "networks": networks,
        "volumes": volumes,
    })
}

/// `value` as compose reads it back: every `$` doubled, so that compose's interpolation of
/// variables leaves the strings as they are (the servers' entry point says `"$@"`).
fn literal(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace('$', "$$")),
        Value::Array(a) => Value::Array(a.into_iter().map(literal).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, literal(v))).collect()),
        other => other,
    }
}

/// One service: every field of the body that the manager sets, under its compose name.
pub fn service(name: &str, body: &ContainerCreateBody) -> Value {
    let host = body.host_config.clone().unwrap_or_default();
    let mut s = Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() {
            s.insert(key.into(), value);
        }
    };
    put("image", json!(body.image));
    put("container_name", json!(name));
    put("command", json!(body.cmd));
    put("user", json!(body.user));
    put("hostname", json!(body.hostname));
    put("environment", json!(body.env));
    put("labels", json!(body.labels));
    put("volumes", json!(volumes(&host)));
    put(
        "tmpfs",
        json!(host.tmpfs.as_ref().map(|t| {
            let mut list: Vec<String> = t.iter().map(|(p, o)| format!("{p}:{o}")).collect();
            list.sort();
            list
        })),
    );
    put("ports", json!(ports(&host)));
    put("networks", json!(host.network_mode.as_ref().map(|n| [n])));
    put("read_only", json!(host.readonly_rootfs));
    put("cap_drop", json!(host.cap_drop));
    put("security_opt", json!(host.security_opt));
    put("privileged", json!(host.privileged));
    put("mem_limit", json!(host.memory));
    put("memswap_limit", json!(host.memory_swap));
    put("cpus", json!(host.nano_cpus.map(|n| n as f64 / 1e9)));
    put("pids_limit", json!(host.pids_limit));
    put(
        "ulimits",
        json!(host.ulimits.as_ref().map(|u| {
            u.iter()
                .filter_map(|l| {
                    Some((l.name.clone()?, json!({ "soft": l.soft?, "hard": l.hard? })))
                })
                .collect::<Map<String, Value>>()
        })),
    );
    put(
        "restart",
        json!(
            host.restart_policy
                .as_ref()
                .and_then(|r| r.name)
                .map(|n| n.to_string())
        ),
    );
    Value::Object(s)
}

/// Bind mounts as given, then volume mounts as `VOLUME:TARGET`.
fn volumes(host: &HostConfig) -> Vec<String> {
    let mut list: Vec<String> = host.binds.clone().unwrap_or_default();
    for m in host.mounts.iter().flatten() {
        if let (Some(source), Some(target)) = (&m.source, &m.target) {
            let ro = if m.read_only == Some(true) { ":ro" } else { "" };
            list.push(format!("{source}:{target}{ro}"));
        }
    }
    list
}

/// `HOSTPORT:PORT`, or `PORT` alone where the engine is to choose the host port.
fn ports(host: &HostConfig) -> Vec<String> {
    let mut list = Vec::new();
    for (key, bindings) in host.port_bindings.iter().flatten() {
        let port = key.trim_end_matches("/tcp");
        for b in bindings.iter().flatten() {
            match b.host_port.as_deref() {
                Some(p) if !p.is_empty() => list.push(format!("{p}:{port}")),
                _ => list.push(port.to_string()),
            }
        }
    }
    list.sort();
    list
}

/// The stack file of servers on a swarm (`docker stack deploy -c FILE NAME`), from the very
/// service specs the manager would create (`engine::swarm::service_spec` of the same bodies):
/// format 3.8, which `docker stack deploy` reads. The certificate volumes are named as the
/// manager names them (`name:`), so a server keeps its certificate when it moves to a stack,
/// with the ownership labels the manager gives them. What format 3.8 cannot say is left out
/// and listed by [`stack_gaps`].
pub fn stack_document(services: &[bollard::models::ServiceSpec]) -> Value {
    let mut out = Map::new();
    let mut volumes = Map::new();
    for spec in services {
        let task = spec.task_template.clone().unwrap_or_default();
        let c = task.container_spec.clone().unwrap_or_default();
        let mut s = Map::new();
        let mut put = |key: &str, value: Value| {
            if !value.is_null() {
                s.insert(key.into(), value);
            }
        };
        put("image", json!(c.image));
        put("entrypoint", json!(c.command));
        put("command", json!(c.args));
        put("user", json!(c.user));
        put("hostname", json!(c.hostname));
        put("environment", json!(c.env));
        put("labels", json!(c.labels));
        put("read_only", json!(c.read_only));
        put("cap_add", json!(c.capability_add));
        put("cap_drop", json!(c.capability_drop));
        put(
            "stop_grace_period",
            json!(
                c.stop_grace_period
                    .map(|ns| format!("{}s", ns / 1_000_000_000))
            ),
        );
        let ulimits: Map<String, Value> = c
            .ulimits
            .iter()
            .flatten()
            .filter_map(|u| Some((u.name.clone()?, json!({ "soft": u.soft, "hard": u.hard }))))
            .collect();
        if !ulimits.is_empty() {
            put("ulimits", Value::Object(ulimits));
        }
        let mounts: Vec<Value> = c
            .mounts
            .iter()
            .flatten()
            .map(|m| match m.typ {
                Some(MountType::VOLUME) => {
                    let name = m.source.clone().unwrap_or_default();
                    let labels = m.volume_options.as_ref().and_then(|o| o.labels.clone());
                    volumes.insert(name.clone(), json!({ "name": name, "labels": labels }));
                    json!({ "type": "volume", "source": name, "target": m.target })
                }
                Some(MountType::TMPFS) => json!({
                    "type": "tmpfs",
                    "target": m.target,
                    "tmpfs": { "size": m.tmpfs_options.as_ref().and_then(|o| o.size_bytes) },
                }),
                _ => json!({
                    "type": "bind",
                    "source": m.source,
                    "target": m.target,
                    "read_only": m.read_only.unwrap_or(false),
                }),
            })
            .collect();
        put("volumes", json!(mounts));
        let ports: Vec<Value> = spec
            .endpoint_spec
            .iter()
            .flat_map(|e| e.ports.iter().flatten())
            .map(|p| {
                let mut port =
                    json!({ "target": p.target_port, "protocol": "tcp", "mode": "host" });
                if let Some(published) = p.published_port {
                    port["published"] = json!(published);
                }
                port
            })
            .collect();
        if !ports.is_empty() {
            put("ports", json!(ports));
        }
        let limits = task
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        let mut resource_limits = Map::new();
        if let Some(n) = limits.nano_cpus.filter(|n| *n > 0) {
            resource_limits.insert("cpus".into(), json!(format!("{}", n as f64 / 1e9)));
        }
        if let Some(m) = limits.memory_bytes {
            resource_limits.insert("memory".into(), json!(m.to_string()));
        }
        let restart = task.restart_policy.clone().unwrap_or_default();
        put(
            "deploy",
            json!({
                "mode": "replicated",
                "replicas": 1,
                "labels": spec.labels,
                "placement": { "constraints": task.placement.and_then(|p| p.constraints) },
                "restart_policy": {
                    "condition": restart.condition.map(|c| c.to_string()),
                    "delay": restart.delay.map(|ns| format!("{}s", ns / 1_000_000_000)),
                },
                "resources": { "limits": resource_limits },
            }),
        );
        out.insert(
            spec.name.clone().unwrap_or_default(),
            literal(Value::Object(s)),
        );
    }
    json!({ "version": "3.8", "services": out, "volumes": volumes })
}

/// What a stack file of `services` cannot carry that the manager's own services have.
pub fn stack_gaps(services: &[bollard::models::ServiceSpec]) -> Vec<String> {
    let pids = services.iter().any(|s| {
        s.task_template
            .as_ref()
            .and_then(|t| t.resources.as_ref()?.limits.as_ref()?.pids)
            .is_some()
    });
    let mut gaps = Vec::new();
    if pids {
        gaps.push(
            "the PIDS limit (format 3.8 has no pids limit for a stack's services)".to_string(),
        );
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{Identity, container_body, container_name};
    use crate::buildtree::BuildTree;
    use crate::limits::DEFAULT;
    use crate::spec::ServerSpec;

    fn spec(port: Option<u16>) -> ServerSpec {
        ServerSpec {
            tenant: "team".into(),
            nickname: Some("alpha".into()),
            port,
            includes: vec!["/srv/tapsets".into()],
            ..ServerSpec::example("6.1.0-9-amd64")
        }
    }

    fn tree() -> BuildTree {
        BuildTree {
            kernel_release: "6.1.0-9-amd64".into(),
            build: "/usr/src/linux-headers-6.1.0-9-amd64".into(),
            source: None,
            modules_dir: None,
            mounts: vec!["/usr/src/linux-headers-6.1.0-9-amd64".into()],
            debuginfo: vec![],
            arch: Some("x86_64".into()),
            compiler: Some("gcc-12".into()),
            cross_compile: None,
        }
    }

    fn doc(port: Option<u16>) -> Value {
        let spec = spec(port);
        let who = Identity { uid: 999, gid: 995 };
        document(&[Service {
            name: container_name(&spec),
            body: container_body(&spec, &tree(), who, "compose", None, "build-host"),
        }])
    }

    #[test]
    fn a_service_carries_the_whole_body() {
        let d = doc(Some(5701));
        let s = &d["services"]["stap-server-team-x86_64-6.1.0-9-amd64-alpha"];
        assert_eq!(d["version"], "2.4");
        assert_eq!(s["image"], "stap-server:latest");
        assert_eq!(
            s["container_name"],
            "stap-server-team-x86_64-6.1.0-9-amd64-alpha"
        );
        assert_eq!(s["user"], "999:995");
        assert_eq!(s["hostname"], "build-host");
        assert_eq!(s["ports"], json!(["5701:5600"]));
        assert_eq!(s["read_only"], true);
        assert_eq!(s["cap_drop"], json!(["ALL"]));
        assert_eq!(s["security_opt"], json!(["no-new-privileges"]));
        assert_eq!(s["privileged"], false);
        assert_eq!(s["mem_limit"], DEFAULT.memory);
        assert_eq!(s["cpus"], Value::Null);
        assert_eq!(s["pids_limit"], DEFAULT.pids);
        assert_eq!(s["restart"], "unless-stopped");
        assert_eq!(s["labels"]["io.stap-server.origin"], "compose");
        assert_eq!(s["labels"]["io.stap-server.tenant"], "team");
        assert_eq!(s["labels"]["io.stap-server.nickname"], "alpha");
        assert_eq!(s["networks"], json!(["stap-server-team"]));
        let volumes: Vec<&str> = s["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            volumes.contains(&"/srv/tapsets:/run/host/srv/tapsets:ro"),
            "{volumes:?}"
        );
        assert!(volumes.contains(
            &"/usr/src/linux-headers-6.1.0-9-amd64:/usr/src/linux-headers-6.1.0-9-amd64:ro"
        ));
        assert!(
            volumes.contains(&"stap-server-team-cert-stap-server:/var/lib/stap-server/.systemtap")
        );
        let tmpfs = s["tmpfs"].as_array().unwrap();
        assert!(
            tmpfs[1]
                .as_str()
                .unwrap()
                .starts_with("/tmp:rw,nosuid,nodev,size=")
        );
        assert_eq!(s["ulimits"]["fsize"]["soft"], crate::limits::FILE_SIZE);
        assert_eq!(
            d["volumes"]["stap-server-team-cert-stap-server"]["external"],
            true
        );
        assert_eq!(d["networks"]["stap-server-team"]["external"], true);
    }

    #[test]
    fn an_unpinned_port_is_left_to_the_engine() {
        let d = doc(None);
        let s = &d["services"]["stap-server-team-x86_64-6.1.0-9-amd64-alpha"];
        assert_eq!(s["ports"], json!(["5600"]));
    }

    #[test]
    fn a_stack_file_says_what_the_managers_services_say() {
        let who = Identity { uid: 999, gid: 995 };
        let spec = spec(Some(5610));
        let tree = BuildTree::example("6.1.0-9-amd64", "/usr/src/linux-headers-6.1.0-9-amd64");
        let body = crate::body::on_swarm(
            container_body(&spec, &tree, who, "compose", None, "node-2"),
            who,
            "n2id",
        );
        let service = crate::engine::swarm::service_spec(&container_name(&spec), body);
        let doc = stack_document(std::slice::from_ref(&service));
        assert_eq!(doc["version"], "3.8");
        let name = service.name.clone().unwrap();
        let s = &doc["services"][&name];
        let c = service
            .task_template
            .clone()
            .unwrap()
            .container_spec
            .unwrap();
        assert_eq!(s["image"], json!(c.image));
        assert_eq!(s["entrypoint"], literal(json!(c.command)));
        assert!(
            s["entrypoint"][2].as_str().unwrap().ends_with("\"$$@\""),
            "compose reads $$ back as $: {}",
            s["entrypoint"][2]
        );
        assert_eq!(s["command"], json!(c.args));
        assert_eq!(s["user"], "0:0");
        assert_eq!(s["read_only"], true);
        assert_eq!(s["cap_drop"], json!(["ALL"]));
        assert_eq!(s["labels"]["io.stap-server.origin"], "compose");
        assert_eq!(s["deploy"]["labels"]["io.stap-server.node-id"], "n2id");
        assert_eq!(
            s["deploy"]["placement"]["constraints"],
            json!(["node.id==n2id"])
        );
        assert_eq!(s["deploy"]["restart_policy"]["condition"], "any");
        assert_eq!(s["deploy"]["restart_policy"]["delay"], "1s");
        assert_eq!(
            s["ports"],
            json!([{ "target": 5600, "published": 5610, "protocol": "tcp", "mode": "host" }])
        );
        let volume = crate::body::cert_volume(&spec.tenant, &spec.user);
        assert_eq!(doc["volumes"][&volume]["name"], json!(volume));
        assert_eq!(
            doc["volumes"][&volume]["labels"]["io.stap-server.tenant"],
            "team"
        );
        let mounts = s["volumes"].as_array().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m["type"] == "volume" && m["source"] == json!(volume))
        );
        assert!(
            mounts
                .iter()
                .any(|m| m["type"] == "tmpfs" && m["target"] == "/lib/modules")
        );
        assert!(
            mounts
                .iter()
                .filter(|m| m["type"] == "bind")
                .all(|m| m["read_only"] == true)
        );
        assert_eq!(
            stack_gaps(&[service]).len(),
            1,
            "the pids limit is said to be left out"
        );
    }
}

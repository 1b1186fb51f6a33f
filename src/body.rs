//! `ServerSpec` to container: names and the container-create body, as pure functions, so the
//! mapping is tested with no engine.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, PortBinding, ResourcesUlimits,
    RestartPolicy, RestartPolicyNameEnum,
};

use crate::buildtree::BuildTree;
use crate::labels;
use crate::limits::FILE_SIZE;
use crate::spec::ServerSpec;

/// The port stap-serverd listens on inside its container; the host port is published onto it.
pub const SERVER_PORT: u16 = 5600;

/// Where the image keeps the server's `~/.systemtap` (certificate and cache).
pub const SYSTEMTAP_DIR: &str = "/var/lib/stap-server/.systemtap";

/// The numeric identity the server runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Characters allowed in engine object names, others become `_`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// FNV-1a: a short stable digest for names made from paths.
pub(crate) fn digest(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", h as u32)
}

/// The container's name: unique per (tenant, arch, release, nickname), so two managers
/// starting the same server race on the engine's name check, and only one wins.
pub fn container_name(spec: &ServerSpec) -> String {
    let release = if spec.release.starts_with('/') {
        format!("tree-{}", digest(&spec.release))
    } else {
        sanitize(&spec.release)
    };
    let mut name = format!(
        "stap-server-{}-{}-{}",
        sanitize(&spec.tenant),
        sanitize(&spec.arch),
        release
    );
    if let Some(nick) = &spec.nickname {
        name.push('-');
        name.push_str(&sanitize(nick));
    }
    name
}

/// The certificate volume: one per tenant and user, so one trust covers all their servers.
pub fn cert_volume(tenant: &str, user: &str) -> String {
    format!("stap-server-{}-cert-{}", sanitize(tenant), sanitize(user))
}

/// The tenant's bridge network.
pub fn network_name(tenant: &str) -> String {
    format!("stap-server-{}", sanitize(tenant))
}

/// stap-serverd's arguments for `spec`.
pub fn server_args(spec: &ServerSpec, kernel_release: &str) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-a".into(),
        spec.arch.clone(),
        "-r".into(),
        kernel_release.into(),
        "--port".into(),
        SERVER_PORT.to_string(),
    ];
    for (flag, items) in [
        ("-B", &spec.builds),
        ("-I", &spec.includes),
        ("-D", &spec.defines),
    ] {
        for item in items {
            args.push(flag.into());
            args.push(item.clone());
        }
    }
    let optional = [
        ("-R", spec.runtime.clone()),
        ("--ssl", spec.ssl.as_ref().map(|p| p.display().to_string())),
        ("--max-threads", spec.max_threads.map(|n| n.to_string())),
        (
            "--max-request-size",
            spec.max_request_size.map(|n| n.to_string()),
        ),
        (
            "--max-compressed-request",
            spec.max_compressed_request.map(|n| n.to_string()),
        ),
    ];
    for (flag, value) in optional {
        if let Some(value) = value {
            args.push(flag.into());
            args.push(value);
        }
    }
    if spec.keep {
        args.push("-k".into());
    }
    args
}

/// The create body for `spec`: hardened, with the build tree read-only at its own path, the
/// certificate volume, the log file, and the port published on the host (`spec.port`, else
/// `host_port` when one was allotted from a port range, else one the engine chooses).
pub fn container_body(
    spec: &ServerSpec,
    tree: &BuildTree,
    who: Identity,
    origin: &str,
    host_port: Option<u16>,
) -> ContainerCreateBody {
    let ro = |p: &str| format!("{p}:{p}:ro");
    let mut binds: Vec<String> = tree
        .mounts
        .iter()
        .map(|m| ro(&m.display().to_string()))
        .collect();
    binds.extend(spec.includes.iter().map(|p| ro(p)));
    if let Some(runtime) = &spec.runtime {
        binds.push(ro(runtime));
    }
    let log = spec.log.display().to_string();
    binds.push(format!("{log}:{log}:rw"));
    if let Some(ssl) = &spec.ssl {
        let ssl = ssl.display().to_string();
        binds.push(format!("{ssl}:{ssl}:rw"));
    }

    let volume = cert_volume(&spec.tenant, &spec.user);
    let mut labels = labels::to_labels(spec, &tree.kernel_release);
    labels.insert(labels::CERT_VOLUME.into(), volume.clone());
    labels.extend(labels::ownership(&spec.tenant, origin));

    let port_key = format!("{SERVER_PORT}/tcp");
    let host_port = spec
        .port
        .or(host_port)
        .map(|p| p.to_string())
        .unwrap_or_default();
    let tmpfs = HashMap::from([
        (
            "/tmp".to_string(),
            format!("rw,nosuid,nodev,size={},mode=1777", spec.limits.tmp_size),
        ),
        (
            "/lib/modules".to_string(),
            format!(
                "rw,nosuid,nodev,noexec,size=64k,mode=0755,uid={},gid={}",
                who.uid, who.gid
            ),
        ),
    ]);

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(server_args(spec, &tree.kernel_release)),
        user: Some(format!("{}:{}", who.uid, who.gid)),
        env: Some(vec![
            format!("STAP_SERVER_LOG={log}"),
            format!("STAP_SERVER_RELEASE={}", tree.kernel_release),
            format!("STAP_SERVER_BUILD={}", tree.build.display()),
            "TMPDIR=/tmp".into(),
            "HOME=/var/lib/stap-server".into(),
            format!("SYSTEMTAP_DIR={SYSTEMTAP_DIR}"),
        ]),
        labels: Some(labels),
        exposed_ports: Some(vec![port_key.clone()]),
        host_config: Some(HostConfig {
            binds: Some(binds),
            mounts: Some(vec![Mount {
                target: Some(SYSTEMTAP_DIR.into()),
                source: Some(volume),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                ..Mount::default()
            }]),
            tmpfs: Some(tmpfs),
            port_bindings: Some(HashMap::from([(
                port_key,
                Some(vec![PortBinding {
                    host_ip: Some(String::new()),
                    host_port: Some(host_port),
                }]),
            )])),
            network_mode: Some(network_name(&spec.tenant)),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            privileged: Some(false),
            memory: Some(spec.limits.memory),
            memory_swap: Some(spec.limits.memory),
            nano_cpus: Some(spec.limits.nano_cpus),
            pids_limit: Some(spec.limits.pids),
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("fsize".into()),
                soft: Some(FILE_SIZE),
                hard: Some(FILE_SIZE),
            }]),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// The create body of the one-shot container that makes the certificate in a fresh volume:
/// root only long enough to hand the volume to the server's user, then that user runs
/// `stap-gen-cert`. Nothing else is granted.
pub fn cert_init_body(
    image: &str,
    volume: &str,
    who: Identity,
    tenant: &str,
) -> ContainerCreateBody {
    let script = format!(
        "set -e; chown {uid}:{gid} \"$SYSTEMTAP_DIR\"; \
         test -s \"$SYSTEMTAP_DIR/ssl/server/stap.cert\" && exit 0; cd /tmp; \
         exec setpriv --reuid {uid} --regid {gid} --clear-groups /usr/lib/systemtap/stap-gen-cert >/dev/null",
        uid = who.uid,
        gid = who.gid
    );
    let mut labels = HashMap::new();
    labels.extend(labels::ownership(tenant, "cli"));
    ContainerCreateBody {
        image: Some(image.into()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), script]),
        user: Some("0:0".into()),
        env: Some(vec![
            format!("SYSTEMTAP_DIR={SYSTEMTAP_DIR}"),
            "HOME=/tmp".into(),
        ]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                target: Some(SYSTEMTAP_DIR.into()),
                source: Some(volume.into()),
                typ: Some(MountType::VOLUME),
                ..Mount::default()
            }]),
            tmpfs: Some(HashMap::from([("/tmp".into(), "rw,size=16m".into())])),
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(vec!["CHOWN".into(), "SETUID".into(), "SETGID".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            auto_remove: Some(false),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// Whether `path` is inside one of the build tree's mounts (for tests and checks).
pub fn mounted(tree: &BuildTree, path: &Path) -> bool {
    tree.mounts.iter().any(|m| path.starts_with(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::DEFAULT;
    use std::path::PathBuf;

    fn spec() -> ServerSpec {
        ServerSpec {
            tenant: "default".into(),
            arch: "x86_64".into(),
            release: "6.1.0-56-amd64".into(),
            user: "stap-server".into(),
            nickname: None,
            log: "/var/log/stap-server/log".into(),
            port: Some(5600),
            ssl: None,
            includes: vec!["/opt/tapsets".into()],
            defines: vec!["X=1".into()],
            builds: vec!["V=1".into()],
            runtime: None,
            max_threads: Some(2),
            max_request_size: None,
            max_compressed_request: None,
            keep: false,
            image: "stap-server:latest".into(),
            limits: DEFAULT,
        }
    }

    fn tree() -> BuildTree {
        BuildTree {
            kernel_release: "6.1.0-56-amd64".into(),
            build: "/usr/src/linux-headers-6.1.0-56-amd64".into(),
            mounts: vec![
                "/usr/lib/linux-kbuild-6.1/scripts".into(),
                "/usr/src/linux-headers-6.1.0-56-amd64".into(),
                "/usr/src/linux-headers-6.1.0-56-common".into(),
            ],
        }
    }

    const WHO: Identity = Identity { uid: 999, gid: 995 };

    #[test]
    fn names() {
        let mut s = spec();
        assert_eq!(
            container_name(&s),
            "stap-server-default-x86_64-6.1.0-56-amd64"
        );
        s.nickname = Some("native".into());
        assert_eq!(
            container_name(&s),
            "stap-server-default-x86_64-6.1.0-56-amd64-native"
        );
        s.release = "/srv/trees/a b".into();
        let a = container_name(&s);
        assert!(a.starts_with("stap-server-default-x86_64-tree-"), "{a}");
        s.release = "/srv/trees/a c".into();
        assert_ne!(container_name(&s), a);
        assert_eq!(
            cert_volume("team-a", "stap-server"),
            "stap-server-team-a-cert-stap-server"
        );
        assert_eq!(network_name("team-a"), "stap-server-team-a");
    }

    #[test]
    fn mounts_are_read_only_at_the_same_path_except_log_and_ssl() {
        let mut s = spec();
        s.ssl = Some(PathBuf::from("/etc/stap/ssl"));
        s.runtime = Some("/opt/runtime".into());
        let body = container_body(&s, &tree(), WHO, "cli", None);
        let hc = body.host_config.unwrap();
        assert_eq!(
            hc.binds.unwrap(),
            [
                "/usr/lib/linux-kbuild-6.1/scripts:/usr/lib/linux-kbuild-6.1/scripts:ro",
                "/usr/src/linux-headers-6.1.0-56-amd64:/usr/src/linux-headers-6.1.0-56-amd64:ro",
                "/usr/src/linux-headers-6.1.0-56-common:/usr/src/linux-headers-6.1.0-56-common:ro",
                "/opt/tapsets:/opt/tapsets:ro",
                "/opt/runtime:/opt/runtime:ro",
                "/var/log/stap-server/log:/var/log/stap-server/log:rw",
                "/etc/stap/ssl:/etc/stap/ssl:rw",
            ]
        );
        let m = &hc.mounts.unwrap()[0];
        assert_eq!(
            m.source.as_deref(),
            Some("stap-server-default-cert-stap-server")
        );
        assert_eq!(m.target.as_deref(), Some(SYSTEMTAP_DIR));
    }

    #[test]
    fn hardening_ports_user_and_labels() {
        let body = container_body(&spec(), &tree(), WHO, "cli", None);
        assert_eq!(body.user.as_deref(), Some("999:995"));
        assert_eq!(body.image.as_deref(), Some("stap-server:latest"));
        let env = body.env.unwrap();
        assert!(env.contains(&"STAP_SERVER_BUILD=/usr/src/linux-headers-6.1.0-56-amd64".into()));
        assert!(env.contains(&"STAP_SERVER_RELEASE=6.1.0-56-amd64".into()));
        let hc = body.host_config.unwrap();
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".into()]));
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".into()]));
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.network_mode.as_deref(), Some("stap-server-default"));
        assert_eq!(hc.memory, Some(DEFAULT.memory));
        assert_eq!(hc.pids_limit, Some(DEFAULT.pids));
        assert_eq!(hc.nano_cpus, Some(DEFAULT.nano_cpus));
        assert!(hc.tmpfs.unwrap()["/tmp"].contains(&format!("size={}", DEFAULT.tmp_size)));
        let ports = hc.port_bindings.unwrap();
        let binding = ports["5600/tcp"].as_ref().unwrap();
        assert_eq!(binding[0].host_port.as_deref(), Some("5600"));
        let labels = body.labels.unwrap();
        assert_eq!(labels[labels::MANAGED], "true");
        assert_eq!(labels[labels::TENANT], "default");
        assert_eq!(labels["io.stap-server.include"], "[\"/opt/tapsets\"]");
        assert_eq!(
            body.cmd.unwrap(),
            [
                "-a",
                "x86_64",
                "-r",
                "6.1.0-56-amd64",
                "--port",
                "5600",
                "-B",
                "V=1",
                "-I",
                "/opt/tapsets",
                "-D",
                "X=1",
                "--max-threads",
                "2"
            ]
        );
    }

    #[test]
    fn unpinned_port_lets_the_engine_choose() {
        let mut s = spec();
        s.port = None;
        let hc = container_body(&s, &tree(), WHO, "cli", None)
            .host_config
            .unwrap();
        let binding = hc.port_bindings.unwrap()["5600/tcp"].clone().unwrap();
        assert_eq!(binding[0].host_port.as_deref(), Some(""));
    }

    #[test]
    fn cert_init_drops_root_before_generating() {
        let body = cert_init_body("img", "vol", WHO, "default");
        let script = &body.entrypoint.unwrap()[2];
        assert!(script.contains("chown 999:995"), "{script}");
        assert!(
            script.contains("setpriv --reuid 999 --regid 995"),
            "{script}"
        );
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".into()]));
    }
}

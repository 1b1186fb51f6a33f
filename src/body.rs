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

/// Where a server sees the host paths its options name (`-I`, `-R`, `--ssl`, the log and the
/// release's modules directory): under a directory of its own, so that no host path covers
/// the image's files (`-I /usr/share/systemtap/tapset`) or collides with its mounts
/// (`-I /tmp`). Build trees and debuginfo are the exception: their absolute symlinks and
/// elfutils' search paths need them at their own paths, and `buildtree` keeps them off the
/// image's directories.
pub const HOST_VIEW: &str = "/run/host";

/// The translator stap-serverd runs for each request (`SYSTEMTAP_STAP`): stap under the
/// request limits, saying which limit stopped it.
pub const TRANSLATOR: &str = "/usr/local/lib/stap-server/translator";

/// The request sizes a server takes when none is configured. stap-serverd's own (50000 and
/// 5000 bytes) refuse some of systemtap's example scripts with their tapset arguments
/// (`tcp_trace.stp`, `latencytap.stp`) that a local translator compiles.
pub const MAX_REQUEST_SIZE: u64 = 1 << 20;
pub const MAX_COMPRESSED_REQUEST: u64 = 256 << 10;

/// Where the server sees the host path `path`.
pub fn in_host_view(path: &str) -> String {
    format!("{HOST_VIEW}{}", path.trim_end_matches('/'))
}

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

/// stap-serverd's `--max-threads`: the server's own, else as many requests at once as the
/// CPUs its cap gives (stap-serverd would count the host's processors, which a capped
/// container cannot all use); none without either (the host's processors, as it counts).
fn max_threads(spec: &ServerSpec) -> Option<u32> {
    let nano = spec.limits.nano_cpus;
    spec.max_threads
        .or_else(|| (nano > 0).then(|| ((nano + 999_999_999) / 1_000_000_000) as u32))
}

/// stap-serverd's arguments for `spec` served from `tree`. A cross tree gets its
/// `CROSS_COMPILE` as a make option (stap clears it from the environment of make), unless the
/// server's own `-B` options set one.
pub fn server_args(spec: &ServerSpec, tree: &BuildTree) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-a".into(),
        spec.arch.clone(),
        "-r".into(),
        tree.kernel_release.clone(),
        "--port".into(),
        SERVER_PORT.to_string(),
    ];
    let sets_cross = spec.builds.iter().any(|b| b.starts_with("CROSS_COMPILE="));
    if let Some(cross) = tree.cross_compile.as_ref().filter(|_| !sets_cross) {
        args.push("-B".into());
        args.push(cross.clone());
    }
    let includes: Vec<String> = spec.includes.iter().map(|p| in_host_view(p)).collect();
    for (flag, items) in [
        ("-B", &spec.builds),
        ("-I", &includes),
        ("-D", &spec.defines),
    ] {
        for item in items {
            args.push(flag.into());
            args.push(item.clone());
        }
    }
    let optional = [
        ("-R", spec.runtime.as_deref().map(in_host_view)),
        (
            "--ssl",
            spec.ssl
                .as_ref()
                .map(|p| in_host_view(&p.display().to_string())),
        ),
        ("--max-threads", max_threads(spec).map(|n| n.to_string())),
        (
            "--max-request-size",
            Some(
                spec.max_request_size
                    .unwrap_or(MAX_REQUEST_SIZE)
                    .to_string(),
            ),
        ),
        (
            "--max-compressed-request",
            Some(
                spec.max_compressed_request
                    .unwrap_or(MAX_COMPRESSED_REQUEST)
                    .to_string(),
            ),
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

/// Bind mounts as `SOURCE:TARGET:MODE`, one per target (the first wins).
#[derive(Default)]
struct Binds(Vec<(String, String, &'static str)>);

impl Binds {
    fn add(&mut self, source: &Path, target: String, mode: &'static str) {
        if !self.0.iter().any(|(_, t, _)| *t == target) {
            self.0.push((source.display().to_string(), target, mode));
        }
    }

    fn at_own_path(&mut self, path: &Path) {
        self.add(path, path.display().to_string(), "ro");
    }

    fn in_host_view(&mut self, path: &Path, mode: &'static str) {
        self.add(path, in_host_view(&path.display().to_string()), mode);
    }
}

/// The host paths a server sees, as the engine's bind list: the build tree, its source and
/// the debuginfo at their own paths; everything else the options name in the host view.
pub fn binds(spec: &ServerSpec, tree: &BuildTree) -> Vec<String> {
    let mut b = Binds::default();
    // Written first, so that no read-only view of a directory above it takes its place.
    b.in_host_view(&spec.log, "rw");
    if let Some(ssl) = &spec.ssl {
        b.in_host_view(ssl, "rw");
    }
    for path in tree.mounts.iter().chain(&tree.debuginfo) {
        b.at_own_path(path);
    }
    if let Some(dir) = &tree.modules_dir {
        b.in_host_view(dir, "ro");
    }
    for path in spec.includes.iter().chain(&spec.runtime) {
        b.in_host_view(Path::new(path), "ro");
    }
    b.0.into_iter()
        .map(|(source, target, mode)| format!("{source}:{target}:{mode}"))
        .collect()
}

/// The create body for `spec`: hardened, with the host view of `binds`, the certificate
/// volume, the host's name (which the certificate names too), and the port published on the
/// host (`spec.port`, else `host_port` when one was allotted from a port range, else one the
/// engine chooses).
pub fn container_body(
    spec: &ServerSpec,
    tree: &BuildTree,
    who: Identity,
    origin: &str,
    host_port: Option<u16>,
    host_name: &str,
) -> ContainerCreateBody {
    let volume = cert_volume(&spec.tenant, &spec.user);
    let mut labels = labels::to_labels(spec, &tree.kernel_release);
    labels.insert(labels::CERT_VOLUME.into(), volume.clone());
    labels.insert(
        labels::KERNEL_DEBUGINFO.into(),
        labels::json_paths(&tree.debuginfo),
    );
    labels.extend(labels::ownership(&spec.tenant, origin));

    let log = in_host_view(&spec.log.display().to_string());
    let mut env = vec![
        format!("STAP_SERVER_LOG={log}"),
        format!("STAP_SERVER_RELEASE={}", tree.kernel_release),
        format!("STAP_SERVER_BUILD={}", tree.build.display()),
        format!(
            "STAP_SERVER_REQUEST_LIMITS={}",
            spec.limits.request.encode()
        ),
        format!("SYSTEMTAP_STAP={TRANSLATOR}"),
        "TMPDIR=/tmp".into(),
        "HOME=/var/lib/stap-server".into(),
        format!("SYSTEMTAP_DIR={SYSTEMTAP_DIR}"),
    ];
    if let Some(source) = &tree.source {
        env.push(format!("STAP_SERVER_SOURCE={}", source.display()));
    }
    if let Some(dir) = &tree.modules_dir {
        env.push(format!(
            "STAP_SERVER_MODULES={}",
            in_host_view(&dir.display().to_string())
        ));
    }
    if spec.warm {
        env.push(format!("STAP_SERVER_WARM={}", crate::warm::mark(spec)));
        // The warm-up's DWARF probe, where there is a kernel image with debuginfo.
        if let Some(vmlinux) = tree.debuginfo.iter().find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinux-"))
        }) {
            env.push(format!("STAP_SERVER_VMLINUX={}", vmlinux.display()));
        }
    }
    if let Some(urls) = &spec.debuginfod_urls {
        env.push(format!("DEBUGINFOD_URLS={urls}"));
        env.push(format!(
            "DEBUGINFOD_CACHE_PATH={SYSTEMTAP_DIR}/debuginfod_client"
        ));
    }

    let port_key = format!("{SERVER_PORT}/tcp");
    let host_port = spec
        .port
        .or(host_port)
        .map(|p| p.to_string())
        .unwrap_or_default();
    // A port the engine chooses is published on IPv4 alone: this engine chooses the IPv4 and
    // IPv6 ports apart, and under concurrent starts one server's IPv6 port can be another's
    // IPv4 one, while the advertisement names one port for both (a client resolving the
    // host's IPv6 address then reached another server). A client's IPv6 attempt is refused
    // and it goes on to the IPv4 address. A port given or allotted is the same on both.
    let host_ip = if host_port.is_empty() { "0.0.0.0" } else { "" };
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
        cmd: Some(server_args(spec, tree)),
        user: Some(format!("{}:{}", who.uid, who.gid)),
        hostname: (!host_name.is_empty()).then(|| host_name.to_string()),
        env: Some(env),
        labels: Some(labels),
        exposed_ports: Some(vec![port_key.clone()]),
        host_config: Some(HostConfig {
            binds: Some(binds(spec, tree)),
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
                    host_ip: Some(host_ip.into()),
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
            nano_cpus: Some(spec.limits.nano_cpus).filter(|n| *n > 0),
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

/// A server's body for a swarm node `node_id` (pure): placed there, with no host log file
/// (a node has none of this host's paths: the output stays with the engine), and an entry
/// point that is root only long enough to hand the certificate volume and the modules tmpfs
/// to the server's user (a swarm's tmpfs takes no owner), then runs the image's entry point
/// as that user with every capability gone, bounding set included, and no way to gain one.
pub fn on_swarm(
    mut body: ContainerCreateBody,
    who: Identity,
    node_id: &str,
) -> ContainerCreateBody {
    let env = body.env.take().unwrap_or_default();
    let log_target = env
        .iter()
        .find_map(|e| e.strip_prefix("STAP_SERVER_LOG="))
        .map(str::to_string);
    body.env = Some(
        env.into_iter()
            .filter(|e| !e.starts_with("STAP_SERVER_LOG="))
            .collect(),
    );
    let mut host = body.host_config.take().unwrap_or_default();
    if let (Some(binds), Some(target)) = (&mut host.binds, &log_target) {
        binds.retain(|b| b.split(':').nth(1) != Some(target.as_str()));
    }
    host.cap_add = Some(
        ["CHOWN", "SETUID", "SETGID", "SETPCAP"]
            .map(String::from)
            .to_vec(),
    );
    body.host_config = Some(host);
    body.labels
        .get_or_insert_with(HashMap::new)
        .insert(labels::NODE_ID.into(), node_id.into());
    body.user = Some("0:0".into());
    body.entrypoint = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "set -e; chown {uid}:{gid} \"$SYSTEMTAP_DIR\" /lib/modules; \
             exec setpriv --reuid {uid} --regid {gid} --clear-groups --inh-caps=-all \
             --bounding-set=-all --no-new-privs {ENTRYPOINT} \"$@\"",
            uid = who.uid,
            gid = who.gid
        ),
        "stap-server".into(),
    ]);
    body
}

/// The first 12 characters of an engine id, as the engine shows them.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The image's entry point.
pub const ENTRYPOINT: &str = "/usr/local/lib/stap-server/entrypoint";

/// The create body of the one-shot container that makes the certificate in a fresh volume:
/// root only long enough to hand the volume to the server's user, then that user runs
/// `stap-gen-cert`, which names the host the container has: this host's name, so that clients
/// reaching the server by it (or by `NAME.local`, through mDNS) find it on the certificate.
/// Nothing else is granted.
pub fn cert_init_body(
    image: &str,
    volume: &str,
    who: Identity,
    tenant: &str,
    host_name: &str,
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
        hostname: (!host_name.is_empty()).then(|| host_name.to_string()),
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
            debuginfod_urls: None,
            warm: true,
        }
    }

    fn tree() -> BuildTree {
        BuildTree {
            kernel_release: "6.1.0-56-amd64".into(),
            build: "/usr/src/linux-headers-6.1.0-56-amd64".into(),
            source: Some("/usr/src/linux-headers-6.1.0-56-common".into()),
            modules_dir: Some("/lib/modules/6.1.0-56-amd64".into()),
            mounts: vec![
                "/usr/lib/linux-kbuild-6.1/scripts".into(),
                "/usr/src/linux-headers-6.1.0-56-amd64".into(),
                "/usr/src/linux-headers-6.1.0-56-common".into(),
            ],
            debuginfo: vec!["/usr/lib/debug/boot/vmlinux-6.1.0-56-amd64".into()],
            arch: Some("x86_64".into()),
            compiler: Some("gcc-12".into()),
            cross_compile: None,
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
    fn tree_and_debuginfo_at_their_paths_options_in_the_host_view() {
        let mut s = spec();
        s.ssl = Some(PathBuf::from("/etc/stap/ssl"));
        s.runtime = Some("/opt/runtime".into());
        // Paths that would cover the image's tapsets or collide with its /tmp.
        s.includes = vec![
            "/usr/share/systemtap/tapset".into(),
            "/tmp".into(),
            "/tmp/".into(),
        ];
        let body = container_body(&s, &tree(), WHO, "cli", None, "build-host");
        assert_eq!(body.hostname.as_deref(), Some("build-host"));
        let cmd = body.cmd.unwrap();
        let pairs: Vec<_> = cmd
            .windows(2)
            .map(|w| (w[0].as_str(), w[1].as_str()))
            .collect();
        assert!(
            pairs.contains(&("-I", "/run/host/usr/share/systemtap/tapset")),
            "{cmd:?}"
        );
        assert!(pairs.contains(&("-I", "/run/host/tmp")), "{cmd:?}");
        assert!(pairs.contains(&("-R", "/run/host/opt/runtime")), "{cmd:?}");
        assert!(
            pairs.contains(&("--ssl", "/run/host/etc/stap/ssl")),
            "{cmd:?}"
        );
        let hc = body.host_config.unwrap();
        assert_eq!(
            hc.binds.unwrap(),
            [
                "/var/log/stap-server/log:/run/host/var/log/stap-server/log:rw",
                "/etc/stap/ssl:/run/host/etc/stap/ssl:rw",
                "/usr/lib/linux-kbuild-6.1/scripts:/usr/lib/linux-kbuild-6.1/scripts:ro",
                "/usr/src/linux-headers-6.1.0-56-amd64:/usr/src/linux-headers-6.1.0-56-amd64:ro",
                "/usr/src/linux-headers-6.1.0-56-common:/usr/src/linux-headers-6.1.0-56-common:ro",
                "/usr/lib/debug/boot/vmlinux-6.1.0-56-amd64:/usr/lib/debug/boot/vmlinux-6.1.0-56-amd64:ro",
                "/lib/modules/6.1.0-56-amd64:/run/host/lib/modules/6.1.0-56-amd64:ro",
                "/usr/share/systemtap/tapset:/run/host/usr/share/systemtap/tapset:ro",
                "/tmp:/run/host/tmp:ro",
                "/opt/runtime:/run/host/opt/runtime:ro",
            ],
            "one bind per target"
        );
        let env = body.env.unwrap();
        for var in [
            "STAP_SERVER_LOG=/run/host/var/log/stap-server/log",
            "STAP_SERVER_SOURCE=/usr/src/linux-headers-6.1.0-56-common",
            "STAP_SERVER_MODULES=/run/host/lib/modules/6.1.0-56-amd64",
            "STAP_SERVER_REQUEST_LIMITS=cpu=60 as=4294967296 fsize=51200000 stack=1024000 nproc=0",
        ] {
            assert!(env.contains(&var.to_string()), "{var} in {env:?}");
        }
        assert!(!env.iter().any(|e| e.starts_with("DEBUGINFOD_URLS=")));
        assert_eq!(
            body.labels.unwrap()[labels::KERNEL_DEBUGINFO],
            "[\"/usr/lib/debug/boot/vmlinux-6.1.0-56-amd64\"]"
        );
        let m = &hc.mounts.unwrap()[0];
        assert_eq!(
            m.source.as_deref(),
            Some("stap-server-default-cert-stap-server")
        );
        assert_eq!(m.target.as_deref(), Some(SYSTEMTAP_DIR));
    }

    #[test]
    fn a_server_warms_where_its_spec_says() {
        let env = |spec: &ServerSpec| {
            container_body(spec, &tree(), WHO, "cli", None, "")
                .env
                .unwrap()
        };
        let warm = spec();
        let said = env(&warm);
        let mark = format!(
            "STAP_SERVER_WARM={SYSTEMTAP_DIR}/warm/{}",
            container_name(&warm)
        );
        assert!(said.contains(&mark), "{said:?}");
        let vmlinux = "STAP_SERVER_VMLINUX=/usr/lib/debug/boot/vmlinux-6.1.0-56-amd64";
        assert!(said.contains(&vmlinux.into()), "{said:?}");
        let cold = ServerSpec {
            warm: false,
            ..spec()
        };
        assert!(!env(&cold).iter().any(|e| e.starts_with("STAP_SERVER_WARM")));
    }

    #[test]
    fn requests_at_once_follow_the_cpu_cap_unless_set() {
        let threads = |max_threads, nano_cpus| {
            let mut s = spec();
            s.max_threads = max_threads;
            s.limits.nano_cpus = nano_cpus;
            let args = server_args(&s, &tree());
            args.iter()
                .position(|a| a == "--max-threads")
                .map(|i| args[i + 1].clone())
        };
        assert_eq!(threads(None, 0), None);
        assert_eq!(threads(None, 500_000_000), Some("1".into()));
        assert_eq!(threads(None, 2_500_000_000), Some("3".into()));
        assert_eq!(threads(Some(4), 500_000_000), Some("4".into()));
    }

    #[test]
    fn hardening_ports_user_and_labels() {
        let body = container_body(&spec(), &tree(), WHO, "cli", None, "");
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
        assert_eq!(hc.nano_cpus, None, "no CPU cap unless one is configured");
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
                "/run/host/opt/tapsets",
                "-D",
                "X=1",
                "--max-threads",
                "2",
                "--max-request-size",
                "1048576",
                "--max-compressed-request",
                "262144",
            ]
        );
        assert!(body.hostname.is_none());
    }

    #[test]
    fn a_cross_tree_builds_with_its_toolchain() {
        let mut s = spec();
        s.arch = "arm64".into();
        let mut t = tree();
        t.arch = Some("arm64".into());
        t.cross_compile = Some("CROSS_COMPILE=aarch64-linux-gnu-".into());
        let cmd = container_body(&s, &t, WHO, "cli", None, "").cmd.unwrap();
        assert_eq!(
            cmd[..8],
            [
                "-a",
                "arm64",
                "-r",
                "6.1.0-56-amd64",
                "--port",
                "5600",
                "-B",
                "CROSS_COMPILE=aarch64-linux-gnu-"
            ]
        );
        s.builds = vec!["CROSS_COMPILE=/opt/cross/bin/aarch64-".into()];
        let cmd = container_body(&s, &t, WHO, "cli", None, "").cmd.unwrap();
        assert_eq!(
            cmd.iter()
                .filter(|a| a.starts_with("CROSS_COMPILE="))
                .count(),
            1,
            "the server's own -B wins: {cmd:?}"
        );
    }

    #[test]
    fn debuginfod_reaches_the_server_with_its_cache_on_the_volume() {
        let mut s = spec();
        s.debuginfod_urls = Some("http://127.0.0.1:8002".into());
        let env = container_body(&s, &tree(), WHO, "cli", None, "")
            .env
            .unwrap();
        assert!(env.contains(&"DEBUGINFOD_URLS=http://127.0.0.1:8002".to_string()));
        assert!(env.contains(&format!(
            "DEBUGINFOD_CACHE_PATH={SYSTEMTAP_DIR}/debuginfod_client"
        )));
    }

    #[test]
    fn unpinned_port_lets_the_engine_choose() {
        let mut s = spec();
        s.port = None;
        let hc = container_body(&s, &tree(), WHO, "cli", None, "")
            .host_config
            .unwrap();
        let binding = hc.port_bindings.unwrap()["5600/tcp"].clone().unwrap();
        assert_eq!(binding[0].host_port.as_deref(), Some(""));
        assert_eq!(binding[0].host_ip.as_deref(), Some("0.0.0.0"));
        s.port = Some(5601);
        let hc = container_body(&s, &tree(), WHO, "cli", None, "")
            .host_config
            .unwrap();
        let binding = hc.port_bindings.unwrap()["5600/tcp"].clone().unwrap();
        assert_eq!(binding[0].host_ip.as_deref(), Some(""));
    }

    #[test]
    fn on_a_swarm_the_server_leaves_host_paths_and_root_behind() {
        let spec = spec();
        let body = on_swarm(
            container_body(&spec, &tree(), WHO, "cli", None, "node-2"),
            WHO,
            "n2id",
        );
        let log = in_host_view(&spec.log.display().to_string());
        let host = body.host_config.clone().unwrap();
        assert!(
            !host.binds.unwrap().iter().any(|b| b.contains(&log)),
            "no host log file on a node"
        );
        assert!(
            !body
                .env
                .clone()
                .unwrap()
                .iter()
                .any(|e| e.starts_with("STAP_SERVER_LOG="))
        );
        assert_eq!(body.labels.as_ref().unwrap()[labels::NODE_ID], "n2id");
        assert_eq!(body.user.as_deref(), Some("0:0"));
        assert_eq!(body.hostname.as_deref(), Some("node-2"));
        let entry = body.entrypoint.unwrap();
        let script = &entry[2];
        assert!(
            script.contains("chown 999:995 \"$SYSTEMTAP_DIR\" /lib/modules"),
            "{script}"
        );
        assert!(
            script.contains("setpriv --reuid 999 --regid 995 --clear-groups --inh-caps=-all")
                && script.contains("--bounding-set=-all --no-new-privs")
                && script.ends_with(&format!("{ENTRYPOINT} \"$@\"")),
            "{script}"
        );
        // The server's arguments follow as they were.
        assert_eq!(body.cmd, Some(server_args(&spec, &tree())));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    }

    #[test]
    fn cert_init_drops_root_before_generating() {
        let body = cert_init_body("img", "vol", WHO, "default", "build-host");
        assert_eq!(body.hostname.as_deref(), Some("build-host"));
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

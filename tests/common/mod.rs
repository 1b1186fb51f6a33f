//! Shared harness for the tests that use the real engine and the real stap client.
//!
//! Every test gets a tenant of its own (so runs never collide), a global configuration file
//! that points the state, log and avahi paths into a temporary directory, and a guard that
//! removes whatever carries the tenant's label when the test ends, passed or failed: its
//! containers, volumes and networks, its service files in the host's avahi directory, and the
//! host clients' trust of its certificates.

#![allow(dead_code)]

pub mod swarm;
pub mod view;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The directory the host's avahi-daemon watches for static services.
pub const AVAHI_SERVICES: &str = "/etc/avahi/services";

pub struct Env {
    pub tenant: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

/// Fails the test with a message when a prerequisite is missing.
pub fn require(program: &str, why: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "missing prerequisite: {program} ({why})");
}

pub fn require_engine() {
    require("docker", "the Docker CLI, to inspect what the manager made");
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "missing prerequisite: a running Docker engine (dockerd)"
    );
}

/// The release of the installed kernel headers (linux-headers-amd64).
pub fn headers_release() -> String {
    let mut found: Vec<String> = std::fs::read_dir("/lib/modules")
        .expect("missing prerequisite: /lib/modules (apt-get install linux-headers-amd64)")
        .flatten()
        .filter(|e| e.path().join("build/Makefile").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
        .pop()
        .expect("missing prerequisite: a kernel build tree under /lib/modules (apt-get install linux-headers-amd64)")
}

/// The image the tests' servers use instead of the default one (`STAP_TEST_IMAGE`), for
/// trying an image recipe without replacing the host's default image.
pub fn test_image() -> Option<String> {
    std::env::var("STAP_TEST_IMAGE")
        .ok()
        .filter(|i| !i.is_empty())
}

/// The image the tests' servers use.
pub fn image() -> String {
    test_image().unwrap_or_else(|| "stap-server:latest".into())
}

/// The line of the global file where [`Env::write_global`]'s `extra` lines begin.
pub fn first_extra_line() -> usize {
    7 + usize::from(test_image().is_some())
}

impl Env {
    pub fn new(name: &str) -> Env {
        require_engine();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tenant = format!("t{}-{}-{n}", std::process::id(), name);
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("avahi")).unwrap();
        let config = dir.path().join("global.conf");
        let env = Env {
            tenant,
            dir,
            config,
        };
        env.write_global("");
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes the global file: the tenant and temporary paths, no warm-up (its compiles would
    /// take the cores from the tests; `WARM=yes` in `extra` turns it on), the image
    /// `STAP_TEST_IMAGE` names if set, then `extra` lines (from line [`first_extra_line`] on).
    pub fn write_global(&self, extra: &str) {
        let d = self.dir.path().display();
        let image = test_image()
            .map(|i| format!("IMAGE={i}\n"))
            .unwrap_or_default();
        std::fs::write(
            &self.config,
            format!(
                "TENANT={}\nCONFIG_PATH={d}/conf.d\nSTAT_PATH={d}/stat\nLOG_FILE={d}/log/log\n\
                 AVAHI_SERVICES_PATH={d}/avahi\nWARM=no\n{image}{extra}",
                self.tenant
            ),
        )
        .unwrap();
    }

    /// Like [`Env::new`], but servers are advertised through the host's real avahi-daemon:
    /// the service files go to [`AVAHI_SERVICES`], named after the tenant (so tests never
    /// touch each other's), and are removed when the test ends.
    pub fn advertised(name: &str) -> Env {
        let env = Env::new(name);
        env.write_global(&format!("AVAHI_SERVICES_PATH={AVAHI_SERVICES}\n"));
        env
    }

    /// The tenant's service files in the host's avahi directory.
    pub fn service_files(&self) -> Vec<PathBuf> {
        let prefix = format!("stap-server-{}.", self.tenant);
        let mut found: Vec<PathBuf> = std::fs::read_dir(AVAHI_SERVICES)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// The certificate serials (stap's form) in the tenant's certificate volumes.
    pub fn serials(&self) -> Vec<String> {
        let label = format!("label=io.stap-server.tenant={}", self.tenant);
        let mut serials = Vec::new();
        for volume in lines(&docker(&["volume", "ls", "-q", "--filter", &label])) {
            let mountpoint = lines(&docker(&[
                "volume",
                "inspect",
                "--format",
                "{{.Mountpoint}}",
                &volume,
            ]));
            if let Some(m) = mountpoint.first() {
                let cert = Path::new(m).join("ssl/server/stap.cert");
                if let Ok(serial) = stap_server::certinfo::read_serial(&cert) {
                    serials.push(serial);
                }
            }
        }
        serials
    }

    /// Runs the manager with this test's configuration.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stap-server"));
        cmd.args(args).arg("-c").arg(&self.config).env(
            "STAP_SERVER_GLOBAL_CONFIG",
            "/nonexistent/stap-server-global",
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run stap-server")
    }

    /// Names of the containers of this tenant (running or not).
    pub fn containers(&self) -> Vec<String> {
        lines(&docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.stap-server.tenant={}", self.tenant),
            "--format",
            "{{.Names}}",
        ]))
    }

    /// The host port the tenant's server for `release` is published on.
    pub fn port_of(&self, status: &str) -> u16 {
        let after = status
            .split("--port \"")
            .nth(1)
            .expect("a --port in the status line");
        after[..after.find('"').unwrap()].parse().unwrap()
    }
}

impl Env {
    /// A modules directory of the test's own: one entry per name, each with a `build` link to
    /// the installed headers, as `/lib/modules/RELEASE/build` links to its tree.
    pub fn fake_modules(&self, releases: &[&str]) -> PathBuf {
        let real = format!("/lib/modules/{}/build", headers_release());
        let modules = self.path("modules");
        for release in releases {
            let dir = modules.join(release);
            std::fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::symlink(&real, dir.join("build")).unwrap();
        }
        modules
    }

    /// Runs an action, asserts its exit code, returns its standard output.
    pub fn expect(&self, args: &[&str], code: i32) -> String {
        self.expect_env(args, &[], code)
    }

    /// [`Env::expect`] with more environment variables.
    pub fn expect_env(&self, args: &[&str], env: &[(&str, &str)], code: i32) -> String {
        let out = self.run_env(args, env);
        assert_eq!(
            out.status.code(),
            Some(code),
            "stap-server {}: {}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Ids of the tenant's containers, sorted.
    pub fn container_ids(&self) -> Vec<String> {
        let mut ids = lines(&docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=io.stap-server.tenant={}", self.tenant),
        ]));
        ids.sort();
        ids
    }
}

/// A port no one listens on now (the kernel's choice of a free one).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The installed kernel version's headers of the Debian kernel `flavour`, and the release
/// its `include/config/kernel.release` gives.
pub fn foreign_tree(flavour: &str) -> (PathBuf, String) {
    let native_release = headers_release();
    let version = native_release
        .strip_suffix("-amd64")
        .unwrap_or_else(|| panic!("the installed headers {native_release} are not amd64 ones"));
    let tree = PathBuf::from(format!("/usr/src/linux-headers-{version}-{flavour}"));
    let kernel_release = std::fs::read_to_string(tree.join("include/config/kernel.release"))
        .unwrap_or_else(|e| {
            panic!(
                "missing prerequisite: the {flavour} headers {} ({e}): \
                 scripts/test-prerequisites.sh fetches linux-headers-{version}-{flavour} and \
                 unpacks it there",
                tree.display()
            )
        });
    (tree, kernel_release.trim().to_string())
}

/// The running kernel's release, as `uname -r` prints it.
pub fn running_release() -> String {
    let out = Command::new("uname").arg("-r").output().expect("uname");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Drop for Env {
    fn drop(&mut self) {
        for file in self.service_files() {
            let _ = std::fs::remove_file(file);
        }
        for serial in self.serials() {
            revoke_global_trust(&serial);
        }
        let label = format!("label=io.stap-server.tenant={}", self.tenant);
        let ids = lines(&docker(&["ps", "-aq", "--filter", &label]));
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            docker(&args);
        }
        for kind in ["volume", "network"] {
            let names = lines(&docker(&[kind, "ls", "-q", "--filter", &label]));
            if !names.is_empty() {
                let mut args = vec![kind, "rm"];
                args.extend(names.iter().map(String::as_str));
                docker(&args);
            }
        }
    }
}

/// Removes a certificate from the host's global client trust and signer databases, where
/// `start` added it (as root, with the stap client installed), under the managers' lock.
pub fn revoke_global_trust(serial: &str) {
    if !Path::new("/etc/systemtap/ssl/client").exists() {
        return;
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let _lock = stap_server::trust::lock();
    let _ = Command::new("stap")
        .args([
            "--trust-servers=ssl,signer,all-users,revoke,no-prompt",
            &format!("--use-server={serial}"),
        ])
        .env("SYSTEMTAP_DIR", scratch.path())
        .output();
}

/// The certificate serial that `status` prints for a server.
pub fn serial(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate serial "))
        .unwrap_or_else(|| panic!("no certificate serial in:\n{status}"))
        .to_string()
}

/// The host engine's containers (one line each, as `container_format` writes them), volumes
/// and networks that `label` (a `label=KEY=VALUE` filter) selects.
pub fn labelled(label: &str, container_format: &str) -> Vec<String> {
    let mut all: Vec<String> = lines(&docker(&[
        "ps",
        "-a",
        "--filter",
        label,
        "--format",
        container_format,
    ]));
    for kind in ["volume", "network"] {
        all.extend(
            lines(&docker(&[kind, "ls", "-q", "--filter", label]))
                .into_iter()
                .map(|n| format!("{kind} {n}")),
        );
    }
    all
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

pub fn lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Trusts the server at `port` in a client database of the test's own (in `client_dir`).
pub fn trust(client_dir: &Path, port: u16) {
    require("stap", "the systemtap client (apt-get install systemtap)");
    std::fs::create_dir_all(client_dir).unwrap();
    let trust = Command::new("stap")
        .args([
            "--trust-servers=ssl,no-prompt",
            &format!("--use-server=127.0.0.1:{port}"),
        ])
        .env("SYSTEMTAP_DIR", client_dir.join(".systemtap"))
        .output()
        .unwrap();
    assert!(trust.status.success(), "trust: {}", text(&trust));
}

/// Runs the stock client through the server at `port` with the trust of `client_dir`.
pub fn stap(client_dir: &Path, port: u16, args: &[&str]) -> Output {
    Command::new("stap")
        .arg(format!("--use-server=127.0.0.1:{port}"))
        .args(args)
        .current_dir(client_dir)
        .env("SYSTEMTAP_DIR", client_dir.join(".systemtap"))
        .output()
        .unwrap()
}

/// Trusts the server at `port` in a client database of the test's own, then compiles a
/// module through it with the stock client; returns the module's path.
pub fn compile(client_dir: &Path, port: u16, release: &str) -> PathBuf {
    trust(client_dir, port);
    let out = stap(
        client_dir,
        port,
        &[
            "-r",
            release,
            "-p4",
            "-m",
            "hello",
            "-e",
            "probe begin { exit() }",
        ],
    );
    let module = client_dir.join("hello.ko");
    assert!(
        out.status.success() && module.is_file(),
        "compile through 127.0.0.1:{port} for {release}: {}",
        text(&out)
    );
    module
}

impl Env {
    /// Starts the manager with this test's configuration without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.spawn_env(args, &[])
    }

    pub fn spawn_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stap-server"));
        cmd.args(args)
            .arg("-c")
            .arg(&self.config)
            .env(
                "STAP_SERVER_GLOBAL_CONFIG",
                "/nonexistent/stap-server-global",
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn stap-server")
    }

    /// Everything of this tenant the engine holds (containers with their state, volumes,
    /// networks) and the advertisement files, one sorted line each: equal snapshots mean
    /// nothing was made, removed, started or stopped in between.
    pub fn snapshot(&self) -> Vec<String> {
        let label = format!("label=io.stap-server.tenant={}", self.tenant);
        let mut all = labelled(&label, "container {{.ID}} {{.Names}} {{.State}}");
        if let Ok(dir) = std::fs::read_dir(self.path("avahi")) {
            all.extend(
                dir.flatten()
                    .map(|e| format!("advert {}", e.file_name().to_string_lossy())),
            );
        }
        all.sort();
        all
    }

    /// The advertisement files of this test's avahi directory.
    pub fn adverts(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("avahi"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// `stop` of everything succeeds and leaves no container and no advertisement.
    pub fn stop_leaves_nothing(&self) {
        let stop = self.run(&["stop"]);
        assert!(stop.status.success(), "{}", text(&stop));
        assert!(self.containers().is_empty(), "{:?}", self.containers());
        assert!(self.adverts().is_empty(), "{:?}", self.adverts());
    }

    /// `status` output and exit code, asserting the one server is healthy: running, exit 0,
    /// and its host port accepting connections. Returns the port.
    pub fn assert_one_healthy(&self) -> u16 {
        let containers = self.containers();
        assert_eq!(containers.len(), 1, "one container: {containers:?}");
        let status = self.run(&["status"]);
        let out = text(&status);
        assert_eq!(status.status.code(), Some(0), "status: {out}");
        assert!(out.contains("running as PID"), "{out}");
        let port = self.port_of(&out);
        assert!(accepts(port), "port {port} accepts connections: {out}");
        port
    }
}

/// Waits until the server in container `name` has said it listens (the published port
/// accepts before that).
pub fn wait_listening(name: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let logs = docker(&["logs", name]);
        if text(&logs).contains("Using network address") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} did not start listening: {}",
            text(&logs)
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Whether something accepts TCP connections on the host's `port`.
pub fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_secs(2),
    )
    .is_ok()
}

/// Waits for a child with a deadline; kills it and fails the test past the deadline.
pub fn wait_output(mut child: std::process::Child, limit: std::time::Duration) -> Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "stap-server still running after {} s: {}",
                limit.as_secs(),
                text(&out)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

/// Copies `from` to `to` chunk by chunk until either side closes: `before` sees each chunk
/// before it is passed on, `after` once it has been; either may hold the relay forever.
fn relay(
    mut from: std::os::unix::net::UnixStream,
    mut to: std::os::unix::net::UnixStream,
    mut before: impl FnMut(&[u8]),
    mut after: impl FnMut(&[u8]),
) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 65536];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        before(&buf[..n]);
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
        after(&buf[..n]);
    }
}

/// Whether `chunk` starts an engine request that does `action` to a container.
fn container_request(chunk: &[u8], action: &str) -> bool {
    let head = String::from_utf8_lossy(&chunk[..chunk.len().min(200)]).into_owned();
    let request = head.lines().next().unwrap_or_default();
    request.starts_with("POST ") && request.contains("/containers/") && request.contains(action)
}

/// Holds the calling thread (and whatever it relays) for good.
fn forever() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// What a [`HoldingProxy`] holds back.
#[derive(Clone, Copy, PartialEq)]
pub enum Hold {
    /// Every container start: the request never reaches the engine and never gets an
    /// answer. A manager caught there has created a container and not started it, the
    /// moment a crash leaves a half-made server behind.
    Start,
    /// The answer to every container stop: the engine gets the request and carries it
    /// out, the manager never learns it has. A manager caught there has asked for a stop
    /// that goes on without it.
    StopAnswer,
}

/// A pass-through to the real engine's socket that holds back one kind of request.
pub struct HoldingProxy {
    /// For `DOCKER_HOST`.
    pub url: String,
    /// Set once a request has been held.
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _dir: tempfile::TempDir,
}

impl HoldingProxy {
    pub fn new(hold: Hold) -> HoldingProxy {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).expect("bind the proxy socket");
        let held = Arc::new(AtomicBool::new(false));
        let flag = held.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(engine) = UnixStream::connect("/var/run/docker.sock") else {
                    return;
                };
                let (client_out, engine_in) = (
                    client.try_clone().expect("clone"),
                    engine.try_clone().expect("clone"),
                );
                // Set when this connection's next answers are to be held back.
                let mute = Arc::new(AtomicBool::new(false));
                let muted = mute.clone();
                std::thread::spawn(move || {
                    relay(
                        engine_in,
                        client_out,
                        |_| {
                            if muted.load(Ordering::SeqCst) {
                                forever()
                            }
                        },
                        |_| {},
                    )
                });
                let flag = flag.clone();
                let stop = move |chunk: &[u8]| {
                    hold == Hold::StopAnswer && container_request(chunk, "/stop")
                };
                std::thread::spawn(move || {
                    relay(
                        client,
                        engine,
                        |chunk| {
                            if hold == Hold::Start && container_request(chunk, "/start") {
                                flag.store(true, Ordering::SeqCst);
                                forever();
                            }
                            if stop(chunk) {
                                mute.store(true, Ordering::SeqCst);
                            }
                        },
                        |chunk| {
                            if stop(chunk) {
                                flag.store(true, Ordering::SeqCst);
                                forever();
                            }
                        },
                    )
                });
            }
        });
        HoldingProxy {
            url: format!("unix://{}", path.display()),
            held,
            _dir: dir,
        }
    }

    /// Whether a request has been held back.
    pub fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }
}

/// This host's name, which server certificates name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("/proc/sys/kernel/hostname")
        .trim()
        .to_string()
}

/// The kernel debuginfo the DWARF tests need, as scripts/test-prerequisites.sh installs it.
pub fn require_debuginfo(release: &str) {
    let vmlinux = format!("/usr/lib/debug/boot/vmlinux-{release}");
    assert!(
        Path::new(&vmlinux).is_file(),
        "missing prerequisite: {vmlinux}, the kernel's debuginfo (scripts/test-prerequisites.sh extracts it from linux-image-{release}-dbg)"
    );
}

/// systemtap's examples (paths under the examples directory, without `.stp`) that compile with
/// no kernel debuginfo: of tests/conformance.rs's default set, those that compile for arm64
/// (23 of 49 in the reference here; the others need DWARF), one or more of each category, in
/// CI time. The arm64 conformance test and the swarm's stack test compile them.
pub const NO_DEBUGINFO_EXAMPLES: &[&str] = &[
    "general/helloworld",
    "general/regex",
    "general/stopwatches",
    "interrupt/interrupts-by-dev",
    "io/iostats",
    "io/switchfile",
    "memory/mmreclaim",
    "network/dropwatch",
    "network/tcp_connections",
    "process/forktracker",
    "process/schedtimes",
    "process/syscalls_by_proc",
    "profiling/sched_switch",
    "profiling/topsys",
    "lwtools/execsnoop-nd",
    "security-band-aids/cve-2016-5195",
];

/// The image's translator: stap under the request limits a server's requests get.
pub const TRANSLATOR: &str = "/usr/local/lib/stap-server/translator";

/// Starts a reference container: `image`'s stap with the host's trees and debuginfo
/// (`modules` as its /lib/modules, the host's /usr/src, kbuild and /usr/lib/debug), no CPU or
/// memory limit, and `volumes` (`docker run -v` values) for the test's files. It is labelled
/// with the test's tenant so that it is removed with the rest. Its [`TRANSLATOR`] runs under
/// the classic request limits, as a classic server on the host would run a request.
pub fn reference(env: &Env, image: &str, modules: &Path, volumes: &[String]) -> String {
    let name = format!("stap-server-{}-reference", env.tenant);
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        name.clone(),
        "--label".into(),
        format!("io.stap-server.tenant={}", env.tenant),
        "--user".into(),
        "0:0".into(),
        "-e".into(),
        format!(
            "STAP_SERVER_REQUEST_LIMITS={}",
            stap_server::limits::REQUEST_DEFAULT.encode()
        ),
        "--tmpfs".into(),
        "/tmp:rw,size=1g".into(),
        "-e".into(),
        "HOME=/tmp".into(),
        "-e".into(),
        "SYSTEMTAP_DIR=/tmp/.systemtap".into(),
        "-v".into(),
        format!("{}:/lib/modules:ro", modules.display()),
    ];
    let mut host = vec!["/usr/src".to_string(), "/usr/lib/debug".into()];
    for entry in std::fs::read_dir("/usr/lib").unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("linux-kbuild-")
        {
            host.push(entry.path().display().to_string());
        }
    }
    for path in host {
        args.push("-v".into());
        args.push(format!("{path}:{path}:ro"));
    }
    for volume in volumes {
        args.push("-v".into());
        args.push(volume.clone());
    }
    args.extend([
        "--entrypoint".into(),
        "sleep".into(),
        image.into(),
        "infinity".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = docker(&args);
    assert!(run.status.success(), "reference container: {}", text(&run));
    name
}

/// A directory that scripts/test-prerequisites.sh fills in its cache (`STAP_TEST_CACHE`,
/// default /var/cache/stap-server-tests), once it holds `.version`; else the test fails
/// naming `what`.
pub fn prerequisite_dir(name: &str, what: &str) -> PathBuf {
    let cache =
        std::env::var("STAP_TEST_CACHE").unwrap_or_else(|_| "/var/cache/stap-server-tests".into());
    let dir = Path::new(&cache).join(name);
    assert!(
        dir.join(".version").is_file(),
        "missing prerequisite: {what} in {} (scripts/test-prerequisites.sh)",
        dir.display()
    );
    dir
}

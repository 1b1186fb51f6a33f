//! Discovery and trust, for real: the host's avahi-daemon (limited to docker0), the stock stap
//! client with an empty trust database of its own, `announce` following the engine.
//!
//! The tests that advertise run one at a time (a bare `stap --use-server` picks any trusted,
//! advertised server of the right release, so two advertised at once would blur which one
//! compiled); their service files are named after their tenant and removed however they end.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{AVAHI_SERVICES, Env, docker, headers_release, lines, require, text};

/// How long a change may take to show in mDNS.
const SETTLE: Duration = Duration::from_secs(10);

static ADVERTISING: Mutex<()> = Mutex::new(());

/// One advertising test at a time; a failed one does not stop the others.
fn advertising() -> MutexGuard<'static, ()> {
    ADVERTISING.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host's avahi-daemon runs, restricted to docker0 so no multicast leaves this machine.
fn require_avahi() {
    require("avahi-browse", "avahi-utils, to browse mDNS");
    require(
        "stap",
        "the systemtap client (apt-get install systemtap-client)",
    );
    let conf = std::fs::read_to_string("/etc/avahi/avahi-daemon.conf").unwrap_or_default();
    assert!(
        conf.lines().any(|l| l.trim() == "allow-interfaces=docker0"),
        "missing prerequisite: avahi-daemon limited to docker0 (allow-interfaces=docker0 in \
         /etc/avahi/avahi-daemon.conf; scripts/prerequisites.sh sets it)"
    );
    let running = Command::new("avahi-daemon")
        .arg("--check")
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        running,
        "missing prerequisite: a running avahi-daemon (scripts/prerequisites.sh starts it)"
    );
    assert!(
        Path::new(AVAHI_SERVICES).is_dir(),
        "missing prerequisite: {AVAHI_SERVICES}"
    );
}

/// One resolved `_stap._tcp` record as `avahi-browse -rpt` prints it.
#[derive(Debug)]
struct Record {
    port: u16,
    txt: String,
}

fn browse() -> Vec<Record> {
    let out = Command::new("avahi-browse")
        .args(["-rpt", "_stap._tcp"])
        .output()
        .expect("run avahi-browse");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("=;"))
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(10, ';').collect();
            Some(Record {
                port: f.get(8)?.parse().ok()?,
                txt: f.get(9)?.to_string(),
            })
        })
        .collect()
}

/// Whether mDNS shows a server on `port` with this certificate serial.
fn advertised(port: u16, serial: &str) -> bool {
    browse()
        .iter()
        .any(|r| r.port == port && r.txt.contains(&format!("\"certinfo={serial}\"")))
}

/// Polls `cond` until it holds or `SETTLE` passes; whether it held.
fn settles(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + SETTLE;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    true
}

/// Polls `cond` until it holds; fails the test if it does not within `SETTLE`.
fn eventually(what: &str, cond: impl FnMut() -> bool) {
    assert!(settles(cond), "{what}: not within {} s", SETTLE.as_secs());
}

fn status(env: &Env) -> String {
    let out = env.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "status: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A stap client whose own trust database is empty: a fresh home and `SYSTEMTAP_DIR`.
struct Client {
    home: tempfile::TempDir,
}

impl Client {
    fn new() -> Client {
        Client {
            home: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn stap(&self, args: &[&str]) -> Output {
        Command::new("stap")
            .args(args)
            .current_dir(self.home.path())
            .env("HOME", self.home.path())
            .env("SYSTEMTAP_DIR", self.home.path().join(".systemtap"))
            .output()
            .expect("run stap")
    }

    fn files(&self, suffix: &str) -> Vec<PathBuf> {
        std::fs::read_dir(self.home.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect()
    }
}

/// The number of connections a server's log shows.
fn connections(container: &str) -> usize {
    let out = docker(&["logs", container]);
    text(&out).matches("Accepted connection").count()
}

#[test]
fn start_advertises_trusts_and_compiles_for_a_bare_client() {
    require_avahi();
    let _one = advertising();
    let env = Env::advertised("disc");
    let release = headers_release();

    let start = env.run(&["start", "-r", &release]);
    assert!(start.status.success(), "start: {}", text(&start));
    assert!(
        !text(&start).contains("not advertised") && !text(&start).contains("cannot"),
        "avahi runs here, and the trust is added: {}",
        text(&start)
    );
    let st = status(&env);
    let port = env.port_of(&st);
    let serial = common::serial(&st);
    assert_eq!(env.service_files().len(), 1, "{:?}", env.service_files());

    // avahi publishes it on the host port, with the server's own release and certificate.
    eventually("the server in avahi-browse", || advertised(port, &serial));
    let record = browse().into_iter().find(|r| r.port == port).unwrap();
    assert!(
        record
            .txt
            .contains(&format!("\"sysinfo={release} x86_64\"")),
        "{record:?}"
    );
    assert!(record.txt.contains("\"version="), "{record:?}");

    // A client that trusts nothing itself lists it and finds it trusted (by the host).
    let client = Client::new();
    let all = client.stap(&["--list-servers=all"]);
    let all = text(&all);
    assert!(
        all.contains(&format!("port={port}")) && all.contains(&serial),
        "stap --list-servers=all: {all}"
    );
    // The client's own mDNS browse gives up after a short while, which a loaded host can
    // exceed: the listing is asked again until it shows the server, within 30 s.
    let listed =
        || text(&client.stap(&["--list-servers=online,trusted,compatible", "-r", &release]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut trusted = listed();
    while !trusted.contains(&serial) && Instant::now() < deadline {
        trusted = listed();
    }
    assert!(
        trusted.contains(&serial),
        "trusted through the host's global database: {trusted}\nonline: {}\ntrusted: {}",
        text(&client.stap(&["--list-servers=online"])),
        text(&client.stap(&["--list-servers=trusted"])),
    );

    // A bare --use-server compiles through it, straight after start.
    let container = env.containers().pop().unwrap();
    let before = connections(&container);
    let out = client.stap(&[
        "--use-server",
        "-r",
        &release,
        "-p4",
        "-m",
        "hello",
        "-e",
        "probe begin { exit() }",
    ]);
    assert!(
        out.status.success() && client.home.path().join("hello.ko").is_file(),
        "bare --use-server: {}",
        text(&out)
    );
    assert!(
        connections(&container) > before,
        "the compile went to this server"
    );

    // An unprivileged (stapusr) module comes back signed.
    let out = client.stap(&[
        "--use-server",
        "--privilege=stapusr",
        "-r",
        &release,
        "-p4",
        "-e",
        "probe begin { exit() }",
    ]);
    assert!(out.status.success(), "stapusr: {}", text(&out));
    let signed = client.files(".ko.sgn");
    assert_eq!(signed.len(), 1, "a signature: {:?}", client.files(""));
    let module = PathBuf::from(signed[0].to_string_lossy().trim_end_matches(".sgn"));
    assert!(module.is_file(), "{module:?}");
    assert!(std::fs::metadata(&signed[0]).unwrap().len() > 0);

    // The certificate, hence the advertised certinfo and the trust, survive every action.
    for action in ["restart", "force-reload"] {
        let out = env.run(&[action, "-r", &release]);
        assert!(out.status.success(), "{action}: {}", text(&out));
        let st = status(&env);
        assert_eq!(common::serial(&st), serial, "after {action}");
        let port = env.port_of(&st);
        eventually(&format!("advertised after {action}"), || {
            advertised(port, &serial)
        });
    }
    assert!(env.run(&["stop"]).status.success());
    let out = env.run(&["start", "-r", &release]);
    assert!(out.status.success(), "start again: {}", text(&out));
    let port = env.port_of(&status(&env));
    eventually("advertised after stop and start", || {
        advertised(port, &serial)
    });

    // stop withdraws it.
    let stop = env.run(&["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(env.service_files().is_empty(), "{:?}", env.service_files());
    eventually("the record gone after stop", || {
        !browse().iter().any(|r| r.port == port)
    });
}

/// `stap-server announce` running in the background, stopped when dropped; its lines are
/// collected for the test to read.
struct Announce {
    child: Child,
    said: Arc<Mutex<String>>,
}

impl Announce {
    fn spawn(env: &Env) -> Announce {
        Announce::spawn_with(env, &[])
    }

    fn spawn_with(env: &Env, vars: &[(&str, &str)]) -> Announce {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stap-server"))
            .args(["announce", "-c"])
            .arg(&env.config)
            .env(
                "STAP_SERVER_GLOBAL_CONFIG",
                "/nonexistent/stap-server-global",
            )
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run stap-server announce");
        let said = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = said.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Announce { child, said }
    }

    fn said(&self) -> String {
        self.said.lock().unwrap().clone()
    }
}

impl Drop for Announce {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file the test made outside its tenant's names, removed however the test ends.
struct Stray(PathBuf);

impl Drop for Stray {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn inspect(container: &str, format: &str) -> String {
    lines(&docker(&["inspect", "--format", format, container]))
        .pop()
        .unwrap_or_default()
}

/// The host port the engine currently publishes a container's server on.
fn published_port(container: &str) -> Option<u16> {
    let out = lines(&docker(&["port", container, "5600/tcp"]));
    out.iter().find_map(|l| l.rsplit(':').next()?.parse().ok())
}

#[test]
fn announce_follows_crashes_restarts_and_kills() {
    require_avahi();
    let _one = advertising();
    let env = Env::advertised("annc");
    let release = headers_release();
    let start = env.run(&["start", "-r", &release]);
    assert!(start.status.success(), "start: {}", text(&start));
    let container = env.containers().pop().unwrap();
    let serial = common::serial(&status(&env));
    let file = env
        .service_files()
        .pop()
        .expect("a service file after start");

    // --once puts back what is missing and removes what runs no more, for this tenant only.
    std::fs::remove_file(&file).unwrap();
    let stale = Path::new(AVAHI_SERVICES).join(format!(
        "stap-server-{}.stap-server-gone.service",
        env.tenant
    ));
    std::fs::write(&stale, "a server that runs no more").unwrap();
    // A tenant whose name extends this one's: not this tenant's file.
    let other = Stray(Path::new(AVAHI_SERVICES).join(format!(
        "stap-server-{}x.stap-server-other.service",
        env.tenant
    )));
    std::fs::write(&other.0, "another tenant's").unwrap();
    let once = env.run(&["announce", "--once"]);
    assert!(once.status.success(), "announce --once: {}", text(&once));
    assert_eq!(env.service_files(), vec![file.clone()], "{}", text(&once));
    assert!(!stale.exists());
    assert!(other.0.exists(), "another tenant's file is left alone");
    drop(other);

    let announce = Announce::spawn(&env);
    let port = published_port(&container).expect("a published port");
    eventually("advertised", || advertised(port, &serial));

    // A crash (the server's process killed behind the engine's back): the restart policy
    // brings it back, and announce advertises it again, on the port it has then. Its file is
    // removed first, so only announce's answer to the events can bring the record back.
    std::fs::remove_file(&file).unwrap();
    eventually("the record gone with its file", || {
        !browse().iter().any(|r| r.port == port)
    });
    let pid = inspect(&container, "{{.State.Pid}}");
    let kill = Command::new("kill").args(["-KILL", &pid]).output().unwrap();
    assert!(kill.status.success(), "kill {pid}: {}", text(&kill));
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        if inspect(&container, "{{.RestartCount}}") != "0"
            && inspect(&container, "{{.State.Running}}") == "true"
            && let Some(p) = published_port(&container)
        {
            break p;
        }
        assert!(Instant::now() < deadline, "the restart policy restarts it");
        std::thread::sleep(Duration::from_millis(250));
    };
    eventually("advertised again after the restart", || {
        advertised(port, &serial)
    });

    // docker kill: the record goes.
    let out = docker(&["kill", &container]);
    assert!(out.status.success(), "docker kill: {}", text(&out));
    assert!(
        settles(|| !browse().iter().any(|r| r.port == port)),
        "the record gone after docker kill: not within {} s; mDNS: {:?}; files: {:?}; \
         announce said:\n{}",
        SETTLE.as_secs(),
        browse(),
        env.service_files(),
        announce.said()
    );
    assert!(env.service_files().is_empty(), "{:?}", env.service_files());
    drop(announce);
}

#[test]
fn start_without_avahi_says_so_once_and_serves() {
    let env = Env::new("noavahi");
    env.write_global("AVAHI_SERVICES_PATH=/nonexistent/avahi/services\n");
    let release = headers_release();
    let start = env.run(&["start", "-r", &release]);
    assert!(start.status.success(), "start: {}", text(&start));
    let said = String::from_utf8_lossy(&start.stdout);
    assert_eq!(
        said.matches("servers are not advertised over mDNS").count(),
        1,
        "{said}"
    );
    assert!(
        said.contains("/nonexistent/avahi/services does not exist"),
        "{said}"
    );
    assert!(!Path::new("/nonexistent/avahi").exists());
    let st = status(&env);
    assert!(st.contains("running as PID"), "{st}");
    assert!(env.run(&["stop"]).status.success());
}

/// A breakable link to the real engine: a unix socket that forwards every connection to
/// `/var/run/docker.sock` until it is cut, as an engine restart cuts its clients off.
struct Link {
    path: PathBuf,
    open: Arc<std::sync::atomic::AtomicBool>,
    streams: Arc<Mutex<Vec<std::os::unix::net::UnixStream>>>,
}

impl Link {
    fn open(path: &Path) -> Link {
        use std::os::unix::net::{UnixListener, UnixStream};
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind the link's socket");
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let streams: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (still, kept) = (open.clone(), streams.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if !still.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(engine) = UnixStream::connect("/var/run/docker.sock") else {
                    continue;
                };
                let pairs = [
                    (client.try_clone().unwrap(), engine.try_clone().unwrap()),
                    (engine.try_clone().unwrap(), client.try_clone().unwrap()),
                ];
                kept.lock().unwrap().extend([client, engine]);
                for (mut from, mut to) in pairs {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Link {
            path: path.to_path_buf(),
            open,
            streams,
        }
    }

    /// Refuses new connections and breaks the open ones.
    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
    }
}

#[test]
fn announce_survives_losing_the_engine_and_catches_up() {
    require_avahi();
    let _one = advertising();
    let env = Env::advertised("recon");
    let release = headers_release();
    let start = env.run(&["start", "-r", &release]);
    assert!(start.status.success(), "start: {}", text(&start));
    let container = env.containers().pop().unwrap();
    let serial = common::serial(&status(&env));
    let port = published_port(&container).expect("a published port");

    let socket = env.path("engine.sock");
    let link = Link::open(&socket);
    let announce = Announce::spawn_with(
        &env,
        &[("DOCKER_HOST", &format!("unix://{}", socket.display()))],
    );
    eventually("advertised", || advertised(port, &serial));
    eventually("announce follows the events", || {
        announce.said().contains("following")
    });

    // The engine goes away; meanwhile the server ends.
    link.cut();
    eventually("announce noticed", || {
        announce.said().contains("lost the engine")
    });
    let out = docker(&["kill", &container]);
    assert!(out.status.success(), "docker kill: {}", text(&out));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !env.service_files().is_empty(),
        "cut off, announce cannot have seen the kill"
    );

    // It comes back: announce reconnects and catches up.
    let _link = Link::open(&socket);
    eventually("the record gone after the engine came back", || {
        env.service_files().is_empty() && !browse().iter().any(|r| r.port == port)
    });
    drop(announce);
}

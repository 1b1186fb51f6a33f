//! The Docker engine restarts under running servers (as on a host reboot or a dockerd
//! upgrade): those that ran come back, those stopped stay stopped, and the manager reads all
//! of it right afterwards.
//!
//! This restarts the machine's dockerd, so it is the only test of its binary (cargo runs test
//! binaries one after another). It fails, saying why, where the engine cannot be restarted.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, accepts, headers_release, text};

/// The running dockerd: its pid and command line, checked restartable by this test.
fn dockerd() -> (i32, Vec<String>) {
    let out = Command::new("pgrep").args(["-x", "dockerd"]).output();
    let pids = out.as_ref().map(common::lines).unwrap_or_default();
    assert_eq!(
        pids.len(),
        1,
        "cannot restart the engine: expected one dockerd process, found {pids:?}"
    );
    let pid: i32 = pids[0].parse().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_else(|e| {
        panic!("cannot restart the engine: cannot read dockerd's command line: {e}")
    });
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap();
    let supervised = Path::new("/run/systemd/system").exists() && ppid == 1;
    assert!(
        !supervised,
        "cannot restart the engine here: dockerd is supervised by systemd (restart it with systemctl)"
    );
    assert!(
        nix::unistd::geteuid().is_root(),
        "cannot restart the engine: this test must run as root"
    );
    (pid, argv)
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn engine_answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops dockerd with SIGTERM (as a service manager does) and starts it again detached, with
/// the same command line, its output appended to a log file.
fn restart_engine() {
    let (pid, argv) = dockerd();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("cannot restart the engine: SIGTERM to dockerd");
    wait_until(Duration::from_secs(120), "dockerd exits", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/var/log/dockerd-restarted-by-tests.log")
        .expect("open dockerd's log");
    let status = Command::new("setsid")
        .arg("-f")
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .expect("cannot restart the engine: setsid");
    assert!(
        status.success(),
        "cannot restart the engine: {argv:?} did not start"
    );
    wait_until(
        Duration::from_secs(120),
        "the engine answers again",
        engine_answers,
    );
}

#[test]
fn servers_survive_an_engine_restart_as_they_were() {
    let env = Env::new("restart");
    let release = headers_release();
    dockerd();
    for nick in ["kept", "gone"] {
        let out = env.run(&["start", "-n", nick, "-r", &release]);
        assert!(out.status.success(), "start {nick}: {}", text(&out));
    }
    let out = env.run(&["stop", "-n", "gone"]);
    assert!(out.status.success(), "stop gone: {}", text(&out));
    assert_eq!(env.containers().len(), 1, "{:?}", env.containers());
    let before = env.run(&["status", "-n", "kept"]);
    let old_port = env.port_of(&text(&before));

    restart_engine();

    // The restart policy brings the running server back, serving on its port.
    let mut last = String::new();
    wait_until(Duration::from_secs(120), "the server comes back", || {
        let st = env.run(&["status", "-n", "kept"]);
        last = text(&st);
        st.status.code() == Some(0) && accepts(env.port_of(&last))
    });
    assert!(last.contains("running as PID"), "{last}");
    let port = env.port_of(&last);
    eprintln!("port before the restart {old_port}, after {port}");
    let all = env.run(&["status"]);
    assert_eq!(all.status.code(), Some(0), "{}", text(&all));
    assert!(!text(&all).contains("\"gone\""), "{}", text(&all));
    // The stopped one stays absent.
    let gone = env.run(&["status", "-n", "gone"]);
    assert_eq!(gone.status.code(), Some(3), "{}", text(&gone));
    assert_eq!(env.containers().len(), 1, "{:?}", env.containers());
    // A start of the server that came back finds it whole and advertises its port.
    let again = env.run(&["start", "-n", "kept", "-r", &release]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(env.containers().len(), 1, "{:?}", env.containers());
    let adverts = env.adverts();
    assert_eq!(adverts.len(), 1, "{adverts:?}");
    let advert = std::fs::read_to_string(env.path("avahi").join(&adverts[0])).unwrap();
    assert!(advert.contains(&format!("<port>{port}</port>")), "{advert}");

    env.stop_leaves_nothing();
}

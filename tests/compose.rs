//! docker-compose deployments, for real: the shipped compose file and one written by
//! `stap-server compose`, each brought up with Debian's docker-compose, used by the stock stap
//! client, seen by `stap-server status`, and taken down with nothing left.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Env, compile, free_port, headers_release, require, text, wait_listening};

fn compose(project: &str, file: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    require(
        "docker-compose",
        "Debian's docker-compose (apt-get install docker-compose)",
    );
    let mut cmd = Command::new("docker-compose");
    cmd.arg("-p").arg(project).arg("-f").arg(file).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run docker-compose")
}

/// The service files in the test's avahi directory.
fn advertised(env: &Env) -> Vec<String> {
    std::fs::read_dir(env.path("avahi"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect()
}

/// `f()` once it gives something, within 30 s.
fn poll<T>(f: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "nothing within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Everything the tenant's label selects: containers, volumes, networks.
fn leftovers(tenant: &str) -> Vec<String> {
    let label = format!("label=io.stap-server.tenant={tenant}");
    let mut all = common::lines(&common::docker(&["ps", "-aq", "--filter", &label]));
    for kind in ["volume", "network"] {
        all.extend(common::lines(&common::docker(&[
            kind, "ls", "-q", "--filter", &label,
        ])));
    }
    all
}

#[test]
fn the_shipped_compose_file_serves_the_stock_client() {
    let env = Env::new("dc");
    let release = headers_release();
    let port = free_port();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("compose/docker-compose.yml");
    let vars = [
        ("KERNEL_RELEASE", release.clone()),
        ("STAP_PORT", port.to_string()),
        ("STAP_TENANT", env.tenant.clone()),
        (
            "STAP_SERVER_BIN",
            env!("CARGO_BIN_EXE_stap-server").to_string(),
        ),
        (
            "AVAHI_SERVICES_PATH",
            env.path("avahi").display().to_string(),
        ),
        ("STAP_IMAGE", common::image()),
        ("STAP_HOSTNAME", common::host_name()),
    ];
    let project = env.tenant.clone();
    let up = compose(&project, &file, &["up", "-d"], &vars);
    assert!(up.status.success(), "up: {}", text(&up));
    let down = || compose(&project, &file, &["down", "-v"], &vars);

    let name = common::lines(&common::docker(&[
        "ps",
        "--filter",
        &format!("label=io.stap-server.tenant={}", env.tenant),
        "--filter",
        "label=io.stap-server.release",
        "--format",
        "{{.Names}}",
    ]));
    assert_eq!(name.len(), 1, "{name:?}");
    wait_listening(&name[0]);
    compile(&env.path("client"), port, &release);
    // The server sees the kernel as the host does: the source tree, where tracepoints are
    // defined (compiled through it in the conformance test), and the kernel's debuginfo.
    let events = format!("/lib/modules/{release}/source/include/trace/events/sched.h");
    let seen = common::docker(&["exec", &name[0], "test", "-f", &events]);
    assert!(
        seen.status.success(),
        "{events} in the container: {}",
        text(&seen)
    );
    let listed = common::stap(
        &env.path("client"),
        port,
        &["-r", &release, "-L", "kernel.function(\"vfs_read\")"],
    );
    let out = text(&listed);
    assert!(
        listed.status.success() && out.contains("$count:size_t"),
        "-L kernel.function: {out}"
    );
    assert!(!out.contains(common::view::NAME_WARNING), "{out}");

    // The announce service advertises it from the host's avahi directory.
    let record = poll(|| {
        advertised(&env)
            .into_iter()
            .find(|t| t.contains(&format!("<port>{port}</port>")))
    });
    assert!(
        record.contains(&format!("sysinfo={release} x86_64")),
        "{record}"
    );

    // status shows it like one of its own; stop (nothing named) leaves it to compose.
    let status = env.expect(&["status"], 0);
    assert!(
        status.contains(&format!("-r \"{release}\"")) && status.contains("running as PID"),
        "{status}"
    );
    // Its warm-up, which the compose file asks for, is seen as one of ours is.
    assert!(status.contains("  warm-up "), "{status}");
    env.expect(&["stop"], 0);
    assert_eq!(env.containers().len(), 2, "stop left the compose server");

    let out = down();
    assert!(out.status.success(), "down: {}", text(&out));
    assert!(
        leftovers(&env.tenant).is_empty(),
        "{:?}",
        leftovers(&env.tenant)
    );
    assert!(advertised(&env).is_empty(), "the record is withdrawn");
}

#[test]
fn a_compose_file_written_by_the_manager_comes_up() {
    let env = Env::new("gen");
    let release = headers_release();
    let port = free_port();
    std::fs::write(
        env.path("conf.d/native.conf"),
        format!("RELEASE={release}\nNICKNAME=native\nPORT={port}\n"),
    )
    .unwrap();
    let file = env.path("stap-server.yml");
    env.expect(&["compose", "-o", file.to_str().unwrap()], 0);
    assert!(
        env.containers().is_empty(),
        "compose writes, it starts nothing"
    );

    let project = env.tenant.clone();
    let up = compose(&project, &file, &["up", "-d"], &[]);
    assert!(up.status.success(), "up: {}", text(&up));
    let names = env.containers();
    assert_eq!(names.len(), 1, "{names:?}");
    wait_listening(&names[0]);

    let status = env.expect(&["status", "-n", "native"], 0);
    assert!(status.contains(&format!("--port \"{port}\"")), "{status}");
    let origin = common::docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"io.stap-server.origin\"}}",
        &names[0],
    ]);
    assert_eq!(String::from_utf8_lossy(&origin.stdout).trim(), "compose");
    compile(&env.path("client"), port, &release);

    // start sees the compose server as the one asked for, and makes no second container.
    env.expect(&["start"], 0);
    assert_eq!(env.containers().len(), 1);

    let down = compose(&project, &file, &["down"], &[]);
    assert!(down.status.success(), "down: {}", text(&down));
    assert!(env.containers().is_empty(), "{:?}", env.containers());
}

//! Warm start, for real: a fresh server makes the compiles a first client would pay for ahead
//! of its clients, says how it goes in `status`, serves a client that comes meanwhile, and
//! keeps what it made across a restart. And the resource defaults: no CPU cap unless the
//! tenant sets one.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Env, docker, headers_release, require_debuginfo, stap, text, trust};

/// Much more than a warm-up takes on two cores (about two minutes from a cold cache).
const WARM_LIMIT: Duration = Duration::from_secs(900);

/// Polls `status` until the server's warm-up is no longer under way; returns the last output.
fn wait_warm(env: &Env) -> String {
    let deadline = Instant::now() + WARM_LIMIT;
    loop {
        let status = env.expect(&["status"], 0);
        if !status.contains("warm-up warming") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "still warming after {} s: {status}",
            WARM_LIMIT.as_secs()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The files of stap's cache in the tenant's certificate volume.
fn cache_files(env: &Env) -> BTreeSet<PathBuf> {
    let volume = format!("stap-server-{}-cert-stap-server", env.tenant);
    let out = docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", &volume]);
    assert!(out.status.success(), "{}", text(&out));
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("cache");
    let mut found = BTreeSet::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                found.insert(path.strip_prefix(&root).unwrap().to_path_buf());
            }
        }
    }
    found
}

fn compile_tracepoint(client: &Path, port: u16, release: &str, module: &str) {
    let out = stap(
        client,
        port,
        &[
            "-r",
            release,
            "-p4",
            "-m",
            module,
            "-e",
            "probe kernel.trace(\"sched:sched_wakeup\") { printf(\"%d\\n\", $p->pid); exit() }",
        ],
    );
    assert!(
        out.status.success() && client.join(format!("{module}.ko")).is_file(),
        "tracepoint compile through 127.0.0.1:{port}: {}",
        text(&out)
    );
}

#[test]
fn a_fresh_server_warms_while_serving_and_keeps_it_across_a_restart() {
    let env = Env::new("warm");
    env.write_global("WARM=yes\n");
    let release = headers_release();
    require_debuginfo(&release);
    let out = env.expect(&["start", "-r", &release], 0);
    let status = env.expect(&["status"], 0);
    assert!(status.contains("warm-up warming"), "{status}");
    let port = env.port_of(&format!("{out}{status}"));

    // A client that comes during the warm-up is served, and correctly.
    let client = env.path("client");
    trust(&client, port);
    let during = env.expect(&["status"], 0);
    compile_tracepoint(&client, port, &release, "during");
    assert!(during.contains("warm-up warming"), "{during}");

    let status = wait_warm(&env);
    assert!(status.contains("warm-up ready (warmed in "), "{status}");
    let json = env.expect(&["status", "--json"], 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["warm"], "ready", "{json}");
    let log = std::fs::read_to_string(env.path("log/log")).unwrap();
    assert!(
        log.contains("stap-server: warm: the first compiles took"),
        "{log}"
    );
    // What the warm-up made is in stap's cache: the kernel's tracepoint query modules among it.
    let before = cache_files(&env);
    assert!(
        before
            .iter()
            .any(|f| f.to_string_lossy().contains("tracequery")),
        "{before:?}"
    );

    // A restart's warm-up finds all of it in the cache: it compiles nothing new.
    env.expect(&["restart", "-r", &release], 0);
    let status = wait_warm(&env);
    assert!(status.contains("warm-up ready (warmed in "), "{status}");
    let after = cache_files(&env);
    let new: Vec<&PathBuf> = after.difference(&before).collect();
    assert!(new.is_empty(), "compiled again after the restart: {new:?}");
    env.expect(&["stop"], 0);
}

#[test]
fn warm_no_warms_nothing_and_cpus_caps_only_where_set() {
    let env = Env::new("nowarm");
    env.write_global("CPUS=0.5\n");
    let release = headers_release();
    env.expect(&["start", "-r", &release], 0);
    let names = env.containers();
    let inspect = |what: &str| text(&docker(&["inspect", "--format", what, &names[0]]));
    assert_eq!(inspect("{{.HostConfig.NanoCpus}}").trim(), "500000000");
    // As many requests at once as the capped CPUs (rounded up), not the host's processors.
    let args = inspect("{{json .Args}}");
    assert!(args.contains(r#""--max-threads","1""#), "{args}");
    let vars = inspect("{{json .Config.Env}}");
    assert!(!vars.contains("STAP_SERVER_WARM"), "{vars}");
    let status = env.expect(&["status"], 0);
    assert!(!status.contains("warm-up"), "{status}");
    env.expect(&["stop"], 0);
}

//! The host view of a server: started with host paths that lie over the image's own files
//! (`-I /usr/share/systemtap/tapset`) and mounts (`-I /tmp`), it must see the kernel as the
//! host does (tracepoints from the source tree, DWARF probes from the debuginfo) and keep its
//! own systemtap's tapsets. Used by the conformance test, whose server this is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Env, stap, text, trust};

/// The warning a client prints when the server's certificate does not name the host it
/// reached.
pub const NAME_WARNING: &str = "does not match the DNS name";

/// Asserts that a client run succeeded, with no certificate name warning, and returns its
/// output.
pub fn ok(what: &str, out: &std::process::Output) -> String {
    let said = text(out);
    assert!(out.status.success(), "{what}: {said}");
    assert!(!said.contains(NAME_WARNING), "{what}: {said}");
    said
}

/// A server with the host-view options, its port and trusted client directory; the tapset
/// it reads from /tmp is removed when this is dropped.
pub struct ViewServer {
    pub port: u16,
    pub client: PathBuf,
    function: String,
    tapset: PathBuf,
}

impl Drop for ViewServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tapset);
    }
}

/// Starts the tenant's server for `release` with `INCLUDE=/usr/share/systemtap/tapset` and
/// `INCLUDE+=/tmp` (where a tapset of the test's own defines one function).
pub fn start(env: &Env, release: &str) -> ViewServer {
    let function = format!("stapsrv_{}_answer", env.tenant.replace('-', "_"));
    let tapset = Path::new("/tmp").join(format!("{function}.stp"));
    std::fs::write(&tapset, format!("function {function}() {{ return 42 }}\n")).unwrap();
    let server = |port| ViewServer {
        port,
        client: env.path("client"),
        function: function.clone(),
        tapset: tapset.clone(),
    };
    std::fs::write(
        env.path("conf.d/view.conf"),
        format!("RELEASE={release}\nINCLUDE=/usr/share/systemtap/tapset\nINCLUDE+=/tmp\n"),
    )
    .unwrap();
    let started = env.expect(&["start"], 0);
    let status = format!("{started}{}", env.expect(&["status"], 0));
    let s = server(env.port_of(&status));
    trust(&s.client, s.port);
    s
}

/// The checks of the server's view; returns how long the first tracepoint compile took.
pub fn check(env: &Env, s: &ViewServer, release: &str) -> Duration {
    let (client, port, r) = (&s.client, s.port, release);
    // Tracepoints need the source tree (Debian's -common headers).
    let module = |name: &str, script: &str| {
        let started = Instant::now();
        let out = stap(client, port, &["-r", r, "-p4", "-m", name, "-e", script]);
        ok(&format!("{name}: {script}"), &out);
        assert!(client.join(format!("{name}.ko")).is_file());
        println!("{script}: {:.1?}", started.elapsed());
        started.elapsed()
    };
    let first = module(
        "tp",
        "probe kernel.trace(\"sched:sched_switch\") { printf(\"%s\\n\", $next->comm$); exit() }",
    );
    let listed = ok(
        "tracepoint listing",
        &stap(client, port, &["-r", r, "-L", "kernel.trace(\"sched:*\")"]),
    );
    for expected in [
        "kernel.trace(\"sched:sched_switch\") $preempt:bool $prev:struct task_struct*",
        "kernel.trace(\"sched:sched_process_fork\")",
    ] {
        assert!(listed.contains(expected), "{expected} in {listed}");
    }
    // DWARF probes need the kernel's debuginfo.
    module(
        "dw",
        "probe kernel.function(\"vfs_read\") { printf(\"%d\\n\", $count); exit() }",
    );

    // The server's own tapsets, and the test's tapset through -I /tmp.
    let function = &s.function;
    let parsed = ok(
        "tapsets",
        &stap(
            client,
            port,
            &[
                "-r",
                r,
                "-p2",
                "-vv",
                "-e",
                &format!("probe begin {{ printf(\"%d\\n\", {function}()); exit() }}"),
            ],
        ),
    );
    let version = image_systemtap_version();
    assert!(
        parsed.contains(&format!("Systemtap translator/driver (version {version}")),
        "the server's translator is the image's systemtap {version}"
    );
    // stap reads each tapset file name once, its own directories first: the image's are
    // read, the host's (under /run/host) are skipped, and /tmp adds the test's.
    let searched = |dir: &str| -> Vec<&str> {
        parsed
            .lines()
            .filter(|l| l.starts_with(&format!("Searched: \"{dir}")))
            .collect()
    };
    let own = searched("/usr/share/systemtap/tapset");
    assert!(
        !own.is_empty() && own.iter().all(|l| !l.ends_with("processed: 0")),
        "the image's tapsets are read: {own:?}"
    );
    let host = searched("/run/host/usr/share/systemtap/tapset");
    assert!(
        !host.is_empty() && host.iter().all(|l| l.ends_with("processed: 0")),
        "the host's tapsets do not replace the image's: {host:?}"
    );
    assert!(
        searched("/run/host/tmp\"")
            .iter()
            .any(|l| !l.ends_with("processed: 0")),
        "-I /tmp reaches the server: {parsed}"
    );
    assert!(
        parsed.contains(&format!("{function}:long ()")),
        "{function} resolved"
    );

    // The log says which debuginfo the server sees.
    let log = std::fs::read_to_string(env.path("log/log")).unwrap();
    assert!(
        log.lines().any(
            |l| l.contains(&format!("release {release}: kernel debuginfo "))
                && l.contains(&format!("/usr/lib/debug/boot/vmlinux-{release}"))
        ),
        "{log}"
    );
    first
}

/// The systemtap version the image carries (its label).
pub fn image_systemtap_version() -> String {
    let out = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"io.stap-server.systemtap-version\"}}",
            &super::image(),
        ])
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !v.is_empty(),
        "the image's systemtap version label: {}",
        text(&out)
    );
    v
}

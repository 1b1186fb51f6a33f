//! The container foundation, for real: the engine, the image, the stock stap client.

mod common;

use common::{Env, compile, headers_release, serial, text};

#[test]
fn start_compile_stop_and_the_certificate_survives() {
    let env = Env::new("found");
    let release = headers_release();

    let start = env.run(&["start", "-r", &release]);
    assert!(start.status.success(), "start: {}", text(&start));
    let out = String::from_utf8_lossy(&start.stdout).to_string();
    assert!(
        out.contains(&format!(
            "Starting stap-server -a \"x86_64\" -r \"{release}\""
        )),
        "{out}"
    );
    assert!(out.contains("OK"), "{out}");
    assert_eq!(env.containers().len(), 1);

    let status = env.run(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        status.contains(&format!("-r \"{release}\"")) && status.contains("running as PID"),
        "{status}"
    );
    let port = env.port_of(&status);
    let first_serial = serial(&status);

    let module = compile(&env.path("client"), port, &release);
    assert!(std::fs::metadata(module).unwrap().len() > 1000);

    // The server's log reaches the host's log file as well as `docker logs`.
    let log = std::fs::read_to_string(env.path("log/log")).unwrap();
    assert!(log.contains("Starting stap-server"), "{log}");
    assert!(
        log.contains("Using network address"),
        "the server's own lines: {log}"
    );

    let stop = env.run(&["stop"]);
    assert!(stop.status.success(), "stop: {}", text(&stop));
    assert!(env.containers().is_empty(), "{:?}", env.containers());
    let none = env.run(&["status"]);
    assert_eq!(none.status.code(), Some(3));
    assert!(text(&none).contains("No managed stap-server is running"));

    let again = env.run(&["start", "-r", &release]);
    assert!(again.status.success(), "{}", text(&again));
    let status = String::from_utf8_lossy(&env.run(&["status"]).stdout).to_string();
    assert_eq!(
        serial(&status),
        first_serial,
        "the certificate survives stop/start"
    );
    // start of a running server succeeds without a second container.
    let twice = env.run(&["start", "-r", &release]);
    assert!(twice.status.success(), "{}", text(&twice));
    assert_eq!(env.containers().len(), 1);
    assert!(env.run(&["stop"]).status.success());
    assert!(env.containers().is_empty());
}

#[test]
fn a_build_tree_outside_the_modules_directory() {
    let env = Env::new("tree");
    let release = headers_release();
    let tree = env.path("build");
    let copy = std::process::Command::new("cp")
        .args([
            "-rL",
            &format!("/lib/modules/{release}/build/"),
            tree.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", text(&copy));
    let kernel_release = std::fs::read_to_string(tree.join("include/config/kernel.release"))
        .unwrap()
        .trim()
        .to_string();

    let start = env.run(&["start", "-r", tree.to_str().unwrap()]);
    assert!(start.status.success(), "start: {}", text(&start));
    let status = String::from_utf8_lossy(&env.run(&["status"]).stdout).to_string();
    compile(&env.path("client"), env.port_of(&status), &kernel_release);
    assert!(env.run(&["stop"]).status.success());
    assert!(env.containers().is_empty());
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing() {
    let env = Env::new("bad");
    let release = headers_release();

    let missing = env.run(&["start", "-r", "9.9.9-nonexistent"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        text(&missing).contains("no kernel build tree for release 9.9.9-nonexistent"),
        "{}",
        text(&missing)
    );

    let engine = env.run_env(
        &["start", "-r", &release],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_ne!(engine.status.code(), Some(0));
    assert!(
        text(&engine).contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
        "{}",
        text(&engine)
    );

    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let taken = env.run(&["start", "-r", &release, "--port", &port]);
    assert_eq!(taken.status.code(), Some(1), "{}", text(&taken));
    assert!(
        text(&taken).contains(&format!("port {port} is already in use")),
        "{}",
        text(&taken)
    );

    let root = env.run(&["start", "-r", &release, "-u", "root"]);
    assert_eq!(root.status.code(), Some(1));
    assert!(
        text(&root).contains("refusing to run a server as root"),
        "{}",
        text(&root)
    );

    assert!(env.containers().is_empty(), "{:?}", env.containers());
}

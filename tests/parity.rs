//! Compile parity: what a classic server on this host has, a server in a container has too:
//! a certificate that names the host, per-request limits. (Its view of the kernel is checked
//! by the conformance test, on the server that compiles systemtap's examples.) Each test uses
//! the real engine, the image and the stock stap client on the installed kernel headers.

mod common;

use std::process::Command;

use common::{Env, headers_release, require_debuginfo, text, trust};

#[test]
fn the_certificate_names_the_host() {
    let env = Env::new("cert");
    let release = headers_release();
    env.write_global("DEBUGINFOD_URLS=http://127.0.0.1:8002\n");
    let out = env.expect(&["start", "-r", &release], 0);
    let port = env.port_of(&format!("{out}{}", env.expect(&["status"], 0)));
    // The certificate as the server presents it.
    let cert = Command::new("sh")
        .args([
            "-c",
            &format!(
                "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -subject -ext subjectAltName"
            ),
        ])
        .output()
        .unwrap();
    let said = text(&cert);
    let host = common::host_name();
    assert!(
        said.contains(&format!("DNS:{host}, DNS:{host}.local")),
        "{said}"
    );
    // The global DEBUGINFOD_URLS reaches the server, its cache on the certificate volume.
    let names = env.containers();
    let inspected = common::docker(&["inspect", "--format", "{{json .Config.Env}}", &names[0]]);
    let vars = text(&inspected);
    assert!(
        vars.contains("\"DEBUGINFOD_URLS=http://127.0.0.1:8002\""),
        "{vars}"
    );
    assert!(
        vars.contains(
            "\"DEBUGINFOD_CACHE_PATH=/var/lib/stap-server/.systemtap/debuginfod_client\""
        ),
        "{vars}"
    );
    env.expect(&["stop"], 0);
}

#[test]
fn a_request_over_its_cpu_limit_fails_while_the_server_serves_others() {
    let env = Env::new("rlimit");
    let release = headers_release();
    require_debuginfo(&release);
    // Every kernel function: far more than 15 s of translator time. The memory is raised so
    // that the CPU limit, not the container's memory, is what stops it.
    std::fs::write(
        env.path("conf.d/limits.conf"),
        format!("RELEASE={release}\nRLIMIT_CPU=15\nMEMORY=6g\nMAXTHREADS=2\n"),
    )
    .unwrap();
    let out = env.expect(&["start"], 0);
    let port = env.port_of(&format!("{out}{}", env.expect(&["status"], 0)));
    let client = env.path("client");
    trust(&client, port);
    let mut runaway = Command::new("stap");
    runaway
        .args([
            &format!("--use-server=127.0.0.1:{port}"),
            "-r",
            &release,
            "-p4",
            "-e",
            "probe kernel.function(\"*\") { }",
        ])
        .current_dir(&client)
        .env("SYSTEMTAP_DIR", client.join(".systemtap"));
    // `output` reads both pipes as the client writes (its warnings fill a pipe's buffer).
    let runaway = std::thread::spawn(move || runaway.output().unwrap());
    // Meanwhile another request on the same server succeeds.
    std::thread::sleep(std::time::Duration::from_secs(2));
    common::compile(&client, port, &release);
    let runaway = runaway.join().unwrap();
    let said = text(&runaway);
    assert!(!runaway.status.success(), "{said}");
    assert!(
        said.contains("stopped at its CPU time limit of 15 s (RLIMIT_CPU)"),
        "the client is told which limit: {said}"
    );
    // The server goes on serving.
    std::fs::remove_file(client.join("hello.ko")).unwrap();
    common::compile(&client, port, &release);
    env.assert_one_healthy();
    env.expect(&["stop"], 0);
}

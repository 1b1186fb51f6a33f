//! Isolation on a shared host, for real: the hardening every server container gets, tenants
//! that never see each other, port ranges, and requests that try to exhaust a server.

mod common;

use std::path::Path;

use common::{Env, docker, headers_release, stap, text, trust};
use serde_json::Value;

fn inspect(name: &str) -> Value {
    let out = docker(&["inspect", name]);
    assert!(out.status.success(), "inspect {name}: {}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
}

#[test]
fn every_server_is_hardened_by_default() {
    let env = Env::new("hard");
    let release = headers_release();
    let tapsets = env.path("tapsets");
    std::fs::create_dir_all(&tapsets).unwrap();
    env.expect(
        &["start", "-r", &release, "-I", tapsets.to_str().unwrap()],
        0,
    );
    let names = env.containers();
    assert_eq!(names.len(), 1);
    let c = inspect(&names[0]);
    let (config, host) = (&c["Config"], &c["HostConfig"]);

    // status names the server by its container's main process, as the engine knows it.
    let status = env.expect(&["status"], 0);
    assert!(
        status.contains(&format!("running as PID {}", c["State"]["Pid"])),
        "{status}\nengine: {}",
        c["State"]["Pid"]
    );

    let user = config["User"].as_str().unwrap();
    let uid = user.split(':').next().unwrap();
    assert!(
        !user.is_empty() && uid != "0" && uid != "root",
        "user {user}"
    );
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert!(host["CapAdd"].is_null(), "{}", host["CapAdd"]);
    assert_eq!(
        host["SecurityOpt"],
        serde_json::json!(["no-new-privileges"])
    );
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["Privileged"], false);
    // The tenant's network, attached by its id.
    let network = host["NetworkMode"].as_str().unwrap();
    let name = format!("stap-server-{}", env.tenant);
    let id = docker(&["network", "inspect", "-f", "{{.Id}}", &name]);
    assert_eq!(
        network,
        String::from_utf8_lossy(&id.stdout).trim(),
        "{name}"
    );
    assert!(
        c["NetworkSettings"]["Networks"][&name].is_object(),
        "{name}"
    );
    assert!(
        host["Tmpfs"]["/tmp"]
            .as_str()
            .unwrap()
            .contains("size=268435456"),
        "{}",
        host["Tmpfs"]
    );
    assert!(
        config["Env"]
            .as_array()
            .unwrap()
            .contains(&Value::from("TMPDIR=/tmp"))
    );
    assert_eq!(host["Memory"], 4i64 << 30);
    assert_eq!(host["NanoCpus"], 0, "no CPU cap by default");
    assert_eq!(host["PidsLimit"], 256);
    let fsize = host["Ulimits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["Name"] == "fsize")
        .expect("a file-size ulimit");
    assert_eq!(fsize["Hard"], 256i64 << 20);

    // Every host path read-only, but the server's own log; no engine socket.
    let log = env.path("log/log").display().to_string();
    for m in c["Mounts"].as_array().unwrap() {
        let source = m["Source"].as_str().unwrap();
        assert!(!source.contains("docker.sock"), "{m}");
        match m["Type"].as_str().unwrap() {
            "bind" if source == log => assert_eq!(m["RW"], true),
            "bind" => assert_eq!(m["RW"], false, "read-only: {m}"),
            "volume" => assert_eq!(m["Destination"], "/var/lib/stap-server/.systemtap", "{m}"),
            other => panic!("unexpected {other} mount {m}"),
        }
    }
    assert!(
        c["Mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["Source"] == tapsets.display().to_string()),
        "-I is mounted"
    );

    // And from inside: not root, no capabilities, a read-only root filesystem.
    let id = docker(&["exec", &names[0], "id", "-u"]);
    assert_ne!(String::from_utf8_lossy(&id.stdout).trim(), "0");
    let caps = docker(&["exec", &names[0], "grep", "CapEff", "/proc/self/status"]);
    assert!(
        text(&caps).contains("0000000000000000"),
        "no effective capabilities: {}",
        text(&caps)
    );
    let write = docker(&["exec", &names[0], "touch", "/usr/x"]);
    assert!(!write.status.success(), "the root filesystem is read-only");
    env.expect(&["stop"], 0);
}

#[test]
fn tenants_never_see_or_touch_each_other() {
    let (a, b) = (Env::new("ta"), Env::new("tb"));
    let release = headers_release();
    a.expect(&["start", "-r", &release], 0);
    b.expect(&["start", "-r", &release], 0);
    let (ca, cb) = (a.containers(), b.containers());
    assert_eq!((ca.len(), cb.len()), (1, 1));
    assert_ne!(ca, cb);

    let status = a.expect(&["status"], 0);
    assert_eq!(status.matches("running as PID").count(), 1, "{status}");
    let pid_b = b
        .expect(&["status"], 0)
        .split("running as PID ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    // Tenant a cannot name b's server by its PID either.
    let out = a.expect(&["stop", "-p", &pid_b], 1);
    assert!(
        out.contains(&format!("No stap-server running as pid {pid_b}")),
        "{out}"
    );

    a.expect(&["stop"], 0);
    assert!(a.containers().is_empty());
    assert_eq!(b.containers(), cb, "b's server untouched");
    b.expect(&["status"], 0);
    a.expect(&["status"], 3);
    b.expect(&["stop"], 0);
}

/// A network or volume that carries the tenant's name but not its labels was made by
/// someone else: start refuses to use it, makes nothing, and leaves it as it was.
#[test]
fn a_foreign_network_or_volume_of_the_tenants_name_is_never_used() {
    let env = Env::new("foreign");
    let release = headers_release();
    let network = format!("stap-server-{}", env.tenant);
    let volume = format!("stap-server-{}-cert-stap-server", env.tenant);
    for (kind, name) in [("network", network), ("volume", volume)] {
        /// Removes the foreign object, also when the test fails.
        struct Foreign(&'static str, String);
        impl Drop for Foreign {
            fn drop(&mut self) {
                docker(&[self.0, "rm", &self.1]);
            }
        }
        assert!(docker(&[kind, "create", &name]).status.success());
        let _foreign = Foreign(kind, name.clone());
        let out = env.run(&["start", "-r", &release]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(
            said.contains(&format!(
                "a {kind} named {name} exists that stap-server did not make"
            )),
            "{said}"
        );
        assert!(env.containers().is_empty(), "{:?}", env.containers());
        let labels = docker(&[kind, "inspect", "-f", "{{json .Labels}}", &name]);
        assert!(
            !text(&labels).contains("io.stap-server"),
            "the foreign {kind} is left as it was: {}",
            text(&labels)
        );
    }
}

/// Two consecutive ports that are free now, away from the engine's own range.
fn free_pair() -> u16 {
    (20000..30000u16)
        .step_by(7)
        .map(|p| p + (std::process::id() % 7) as u16)
        .find(|p| {
            std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok()
                && std::net::TcpListener::bind(("0.0.0.0", *p + 1)).is_ok()
        })
        .expect("two free ports")
}

#[test]
fn unpinned_servers_take_ports_from_the_tenant_range() {
    let env = Env::new("range");
    let low = free_pair();
    let releases = ["6.1.0-81-amd64", "6.1.0-82-amd64", "6.1.0-83-amd64"];
    let modules = env.fake_modules(&releases);
    env.write_global(&format!(
        "MODULES_PATH={}\nPORT_RANGE={low}-{}\n",
        modules.display(),
        low + 1
    ));

    // Three servers do not fit in two ports: nothing is made.
    let out = env.run(&["start", "-i"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "no free port left in PORT_RANGE {low}-{}",
            low + 1
        )),
        "{}",
        text(&out)
    );
    assert!(env.containers().is_empty());

    env.expect(&["start", "-r", releases[0], "-r", releases[1]], 0);
    let status = env.expect(&["status"], 0);
    let mut ports: Vec<u16> = status
        .lines()
        .filter(|l| l.contains("running as PID"))
        .map(|l| env.port_of(l))
        .collect();
    ports.sort();
    assert_eq!(ports, vec![low, low + 1], "{status}");
    env.expect(&["stop"], 0);
}

/// Writes a script whose macros expand to 2^depth copies of `leaf` (each distinct, so the
/// translator cannot merge them).
fn expanding_script(path: &Path, depth: usize, leaf: &str, root: &str) {
    let mut lines = vec![format!("@define p0(x) %( {leaf} %)")];
    for i in 1..=depth {
        lines.push(format!(
            "@define p{i}(x) %( @p{}(@x . \"a\") @p{}(@x . \"b\") %)",
            i - 1,
            i - 1
        ));
    }
    lines.push(format!("@p{depth}({root})"));
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn requests_that_exhaust_a_server_are_contained() {
    let env = Env::new("exhaust");
    let release = headers_release();
    env.expect(
        &["start", "-r", &release, "-n", "victim", "--tmpsize", "16m"],
        0,
    );
    env.expect(&["start", "-r", &release, "-n", "bystander"], 0);
    let status = env.expect(&["status"], 0);
    let port = |nick: &str| {
        env.port_of(
            status
                .lines()
                .find(|l| l.contains(&format!("-n \"{nick}\"")))
                .unwrap(),
        )
    };
    let (victim, bystander) = (port("victim"), port("bystander"));
    let client = env.path("client");
    trust(&client, victim);
    trust(&client, bystander);

    // Memory: a string concatenation that doubles 40 times, in the translator.
    let memory = env.path("memory.stp");
    expanding_script(
        &memory,
        40,
        "probe begin { print(@x) }",
        &format!("\"{}\"", "m".repeat(64)),
    );
    // Disk: 1024 distinct probes of 20 kB strings, more C than the victim's 16 MB /tmp.
    let disk = env.path("disk.stp");
    expanding_script(
        &disk,
        10,
        "probe begin { print(@x) }",
        &format!("\"{}\"", "d".repeat(20000)),
    );

    let r = release.clone();
    let attacks = {
        let client = client.clone();
        std::thread::spawn(move || {
            [memory, disk].map(|script| {
                stap(
                    &client,
                    victim,
                    &["-r", &r, "-p4", script.to_str().unwrap()],
                )
            })
        })
    };
    let honest = stap(
        &client,
        bystander,
        &[
            "-r",
            &release,
            "-p4",
            "-m",
            "honest",
            "-e",
            "probe begin { exit() }",
        ],
    );
    let [mem_out, disk_out] = attacks.join().unwrap();
    assert!(
        honest.status.success() && client.join("honest.ko").is_file(),
        "the bystander keeps compiling: {}",
        text(&honest)
    );
    assert!(!mem_out.status.success(), "{}", text(&mem_out));
    assert!(!disk_out.status.success(), "{}", text(&disk_out));

    // The victim's container says why: the translator killed at the memory limit, /tmp full.
    let name = env
        .containers()
        .into_iter()
        .find(|n| n.ends_with("-victim"))
        .unwrap();
    let logs = text(&docker(&["logs", &name]));
    assert!(logs.contains("No space left on device"), "{logs}");
    // It keeps serving: still running, and compiles an honest request.
    env.expect(&["status", "-n", "victim"], 0);
    let after = stap(
        &client,
        victim,
        &[
            "-r",
            &release,
            "-p4",
            "-m",
            "after",
            "-e",
            "probe begin { exit() }",
        ],
    );
    assert!(after.status.success(), "{}", text(&after));
    env.expect(&["stop"], 0);
}

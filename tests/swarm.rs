//! The swarm lab itself (tests/common/swarm.rs): three engines on this machine form a swarm
//! with each node's kernel trees where they should be, a host-mode port published on a worker
//! is reached from this host, a stopped node goes Down and comes back Ready, and once the lab
//! is dropped nothing of it is left on the host's engine.

mod common;

use std::time::{Duration, Instant};

use common::swarm::{Lab, NodeStatus, NodeTrees, remains};
use common::{free_port, headers_release, text};

#[test]
fn a_lab_of_three_engines_forms_a_swarm_and_leaves_nothing() {
    let lab = Lab::three();
    let name = lab.name.clone();
    eprintln!("lab up in {:.1} s", lab.took.as_secs_f64());

    let statuses = lab.statuses();
    assert_eq!(statuses.len(), 3, "{statuses:?}");
    assert!(statuses.iter().all(|(_, s)| s == "Ready"), "{statuses:?}");
    for node in &lab.nodes {
        assert!(
            statuses.iter().any(|(h, _)| *h == node.name),
            "{} in {statuses:?}",
            node.name
        );
    }
    let ids = lab.expect(0, &["node", "ls", "-q"]);
    for node in &lab.nodes {
        assert!(
            ids.lines().any(|l| l.trim() == node.id),
            "{} in {ids}",
            node.id
        );
    }
    let roles = lab.expect(
        0,
        &[
            "node",
            "inspect",
            "--format",
            "{{.Description.Hostname}} {{.Spec.Role}}",
            &lab.nodes[0].id,
            &lab.nodes[1].id,
        ],
    );
    assert!(
        roles.contains(&format!("{} manager", lab.nodes[0].name)),
        "{roles}"
    );
    assert!(
        roles.contains(&format!("{} worker", lab.nodes[1].name)),
        "{roles}"
    );

    // Each node's trees, as its engine would bind-mount them into a server.
    let release = headers_release();
    assert_eq!(lab.nodes[0].trees, NodeTrees::None);
    assert_eq!(lab.nodes[0].release, None);
    assert_eq!(lab.nodes[1].release.as_deref(), Some(release.as_str()));
    let other = format!("{release}-lab");
    assert_eq!(lab.nodes[2].release.as_deref(), Some(other.as_str()));
    let none = lab.exec(0, &["sh", "-c", "ls /lib/modules 2>/dev/null | wc -l"]);
    assert_eq!(text(&none).trim(), "0", "node 1 has no trees");
    for (i, r) in [(1, &release), (2, &other)] {
        let tree = format!("/lib/modules/{r}");
        let check = lab.exec(
            i,
            &[
                "sh",
                "-c",
                &format!(
                    "ls /lib/modules && test -f {tree}/build/Makefile \
                     && test -f {tree}/build/scripts/Makefile.build \
                     && test -d {tree}/source/include/trace/events \
                     && ! touch {tree}/build/x 2>/dev/null"
                ),
            ],
        );
        assert!(
            check.status.success(),
            "node {} {tree}: {}",
            i + 1,
            text(&check)
        );
        assert_eq!(
            text(&check).trim(),
            r.as_str(),
            "node {} holds {r} only",
            i + 1
        );
    }

    // A host-mode port of a service placed on node 2, reached at node 2's address.
    let image = lab.import_busybox(1);
    let port = free_port();
    let mark = format!("served by {}", lab.nodes[1].name);
    let service = format!("{name}-web");
    let started = Instant::now();
    lab.expect(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            &service,
            "--constraint",
            &format!("node.hostname=={}", lab.nodes[1].name),
            "--publish",
            &format!("mode=host,target=8080,published={port}"),
            "--env",
            &format!("MARK={mark}"),
            image,
            "sh",
            "-c",
            "echo \"$MARK\" > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
    );
    let body = common::swarm::http_get(lab.nodes[1].ip, port, Duration::from_secs(60))
        .unwrap_or_else(|e| {
            panic!(
                "the service's port on node 2: {e}\n{}",
                text(&lab.docker(0, &["service", "ps", "--no-trunc", &service]))
            )
        });
    assert_eq!(body.trim(), mark);
    eprintln!(
        "host-mode port answered {:.1} s after the service was created",
        started.elapsed().as_secs_f64()
    );
    lab.expect(0, &["service", "rm", &service]);

    // A node stopped goes Down, started again comes back Ready.
    let stopped = Instant::now();
    lab.stop_node(2);
    lab.wait_status(2, NodeStatus::Down);
    eprintln!(
        "node 3 Down {:.1} s after its stop began",
        stopped.elapsed().as_secs_f64()
    );
    let restarted = Instant::now();
    lab.start_node(2);
    lab.wait_status(2, NodeStatus::Ready);
    eprintln!(
        "node 3 Ready {:.1} s after its start",
        restarted.elapsed().as_secs_f64()
    );

    for line in lab.usage() {
        eprintln!("{line}");
    }
    assert!(!remains(&name).is_empty());
    drop(lab);
    let left = remains(&name);
    assert!(left.is_empty(), "left behind: {left:?}");
    let images = common::docker(&["images", "-q", "--filter", "label=io.stap-server.test=lab"]);
    assert!(
        common::lines(&images).is_empty(),
        "no lab image on the host's engine: {}",
        text(&images)
    );
}

/// The image is built on the manager's engine, as an admin would build it there (`stap-server
/// image build` with DOCKER_HOST naming the manager): here, loaded from this host's engine,
/// which has built it for the other tests. The nodes get it from the manager.
fn load_image(lab: &Lab) {
    let image = common::image();
    if !common::docker(&["image", "inspect", &image])
        .status
        .success()
    {
        let built = common::Env::new("image").run(&["image", "build"]);
        assert!(built.status.success(), "image build: {}", text(&built));
    }
    let loaded = Instant::now();
    let load = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "docker save '{image}' | docker -H '{}' load -q",
                lab.manager()
            ),
        ])
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "image {image} onto the manager (build it with `stap-server image build`): {}",
        text(&load)
    );
    eprintln!(
        "image onto the manager: {:.1} s",
        loaded.elapsed().as_secs_f64()
    );
}

/// One server of `status` on a swarm: its release, node, address, port, serial.
#[derive(Debug, Clone)]
struct Placed {
    release: String,
    node: String,
    address: String,
    port: u16,
    serial: String,
    /// The server's PID on its node.
    pid: Option<u32>,
    /// What `-n` shows: its nickname, else its PID.
    nick: String,
}

/// The servers `status` shows running on a swarm, with the serial line under each.
fn placed(status: &str) -> Vec<Placed> {
    let lines: Vec<&str> = status.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((head, place)) = line.split_once(" on node ") else {
            continue;
        };
        let Some((opts, running)) = head.split_once(" running") else {
            continue;
        };
        let pid = running
            .strip_prefix(" as PID ")
            .and_then(|p| p.trim().parse().ok());
        // The value of option `flag` in the classic option string.
        let value = |flag: &str| {
            opts.split(&format!("{flag} \""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let (release, nick) = (value("-r"), value("-n"));
        let (node, rest) = place.split_once(" (").expect("node (address)");
        // Running, with no port yet: the swarm has not reported it.
        let Some((address, rest)) = rest.split_once(") port ") else {
            continue;
        };
        let serial = lines
            .get(i + 1)
            .and_then(|l| l.trim().strip_prefix("certificate serial "))
            .unwrap_or_default()
            .to_string();
        found.push(Placed {
            release,
            node: node.into(),
            address: address.into(),
            port: rest.trim().parse().expect("a port"),
            serial,
            pid,
            nick,
        });
    }
    found.sort_by(|a, b| a.release.cmp(&b.release));
    found
}

/// Revokes the host's global trust of the serials seen, however the test ends.
struct Revoke(std::cell::RefCell<Vec<String>>);

impl Drop for Revoke {
    fn drop(&mut self) {
        for serial in self.0.borrow().iter() {
            common::revoke_global_trust(serial);
        }
    }
}

/// Trusts the server `s` in a client database of its own under `client`, then compiles
/// `script` through it with the stock client, by node address and port, for its release;
/// how long the compile took.
fn compile_through(client: &std::path::Path, s: &Placed, module: &str, script: &str) -> Duration {
    std::fs::create_dir_all(client).unwrap();
    let server = format!("--use-server={}:{}", s.address, s.port);
    let dir = client.join(".systemtap");
    let trusted = std::process::Command::new("stap")
        .args(["--trust-servers=ssl,no-prompt", &server])
        .env("SYSTEMTAP_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        trusted.status.success(),
        "trust {server}: {}",
        text(&trusted)
    );
    let started = Instant::now();
    let out = std::process::Command::new("stap")
        .args([&server, "-r", &s.release, "-p4", "-m", module, "-e", script])
        .current_dir(client)
        .env("SYSTEMTAP_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success() && client.join(format!("{module}.ko")).is_file(),
        "compile through {server} ({}): {}",
        s.node,
        text(&out)
    );
    started.elapsed()
}

/// Waits until `status` shows `want` servers running, at most `limit`; the last status.
fn wait_running(env: &common::Env, dh: &[(&str, &str)], want: usize, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let out = env.run_env(&["status"], dh);
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        if placed(&status).len() == want || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn start_i_on_a_swarm_serves_each_nodes_tree_to_the_stock_client() {
    common::require("stap", "the systemtap client (apt-get install systemtap)");
    let lab = Lab::three();
    let env = common::Env::new("swarm");
    env.write_global("ENGINE=swarm\n");
    let dh = [("DOCKER_HOST", lab.manager())];
    let revoke = Revoke(Default::default());
    let release = headers_release();
    let other = format!("{release}-lab");
    load_image(&lab);

    // Survey jobs a manager killed mid-survey left behind: this tenant's, made on this host
    // by a process that is gone, is removed by the next survey; another tenant's (ours
    // otherwise) is left alone. No replicas: they only have to exist.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id().to_string();
    gone.wait().unwrap();
    let here = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let left_survey = format!("stap-server-survey-{gone_pid}");
    let foreign_survey = format!("{}-x-survey", env.tenant);
    for (name, tenant) in [
        (&left_survey, env.tenant.clone()),
        (&foreign_survey, format!("{}-x", env.tenant)),
    ] {
        lab.expect(
            0,
            &[
                "service",
                "create",
                "--detach",
                "--no-resolve-image",
                "--replicas",
                "0",
                "--name",
                name,
                "--label",
                "io.stap-server.managed=true",
                "--label",
                &format!("io.stap-server.tenant={tenant}"),
                "--label",
                &format!("io.stap-server.survey.host={}", here.trim()),
                "--label",
                &format!("io.stap-server.survey.pid={gone_pid}"),
                "--label",
                &format!("io.stap-server.survey.started={now}"),
                &common::image(),
                "true",
            ],
        );
    }

    let started = Instant::now();
    let out = env.run_env(&["start", "-i"], &dh);
    let took = started.elapsed();
    assert!(out.status.success(), "start -i: {}", text(&out));
    eprintln!(
        "start -i across the swarm: {:.1} s\n{}",
        took.as_secs_f64(),
        text(&out)
    );
    let log = std::fs::read_to_string(env.path("log/log")).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("shipped")) {
        eprintln!("{line}");
    }

    let names = lab.expect(0, &["service", "ls", "--format", "{{.Name}}"]);
    assert!(
        !names.lines().any(|l| l == left_survey),
        "the survey left behind is removed: {names}"
    );
    assert!(
        names.lines().any(|l| l == foreign_survey),
        "another tenant's survey stays: {names}"
    );
    lab.expect(0, &["service", "rm", &foreign_survey]);

    let status = env.expect_env(&["status"], &dh, 0);
    let servers = placed(&status);
    revoke
        .0
        .borrow_mut()
        .extend(servers.iter().map(|s| s.serial.clone()));
    assert_eq!(
        servers
            .iter()
            .map(|s| s.release.as_str())
            .collect::<Vec<_>>(),
        [release.as_str(), other.as_str()],
        "one server per node tree:\n{status}"
    );
    let node_of = |r: &str| servers.iter().find(|s| s.release == r).unwrap().clone();
    let (native, lab_tree) = (node_of(&release), node_of(&other));
    assert_eq!(native.node, lab.nodes[1].name, "{status}");
    assert_eq!(native.address, lab.nodes[1].ip.to_string(), "{status}");
    assert_eq!(lab_tree.node, lab.nodes[2].name, "{status}");
    assert_eq!(lab_tree.address, lab.nodes[2].ip.to_string(), "{status}");
    assert!(
        servers.iter().all(|s| !s.serial.is_empty()),
        "every serial shown:\n{status}"
    );
    assert_ne!(native.serial, lab_tree.serial, "a certificate per node");

    // status agrees with the swarm's own view.
    let label = format!("label=io.stap-server.tenant={}", env.tenant);
    let services = lab.expect(0, &["service", "ls", "-q", "--filter", &label]);
    assert_eq!(services.lines().count(), 2, "{services}");
    let mut args = vec![
        "service",
        "ps",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}} {{.CurrentState}} {{.Ports}}",
    ];
    args.extend(services.lines());
    let ps = lab.expect(0, &args);
    for s in &servers {
        assert!(
            ps.lines()
                .any(|l| l.starts_with(&format!("{} Running", s.node))
                    && l.contains(&format!("*:{}->", s.port))),
            "docker service ps says\n{ps}\nwhere status says {s:?}"
        );
    }

    // Each node runs the announcer as the packaged unit does (`stap-server announce`, its own
    // engine, its own avahi-daemon), and advertises the servers whose tasks run there from
    // its own address: the manager's avahi sees node 2's server at node 2's address and port,
    // node 3's at node 3's, and nothing else.
    for i in 0..3 {
        lab.start_avahi(i);
    }
    for i in [1, 2] {
        lab.copy_to(
            i,
            std::path::Path::new(env!("CARGO_BIN_EXE_stap-server")),
            "/usr/local/bin/stap-server",
        );
        lab.expect_exec_detached(
            i,
            &format!(
                "mkdir -p /etc/sysconfig && echo TENANT={} > /etc/sysconfig/stap-server && \
                 exec stap-server announce > /var/log/stap-server-announce.log 2>&1",
                env.tenant
            ),
        );
    }
    let want: Vec<(String, u16)> = [&native, &lab_tree]
        .iter()
        .map(|s| (s.address.clone(), s.port))
        .collect();
    let browsed = Instant::now();
    let seen = loop {
        let seen = lab.browse(0, "_stap._tcp");
        let pairs: Vec<(String, u16)> = seen.iter().map(|r| (r.address.clone(), r.port)).collect();
        if pairs == want || browsed.elapsed() > Duration::from_secs(30) {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let logs: Vec<String> = [1, 2]
        .iter()
        .map(|&i| {
            text(&lab.exec(
                i,
                &[
                    "sh",
                    "-c",
                    "cat /var/log/stap-server-announce.log; ls /etc/avahi/services",
                ],
            ))
        })
        .collect();
    assert_eq!(
        seen.iter()
            .map(|r| (r.address.clone(), r.port))
            .collect::<Vec<_>>(),
        want,
        "avahi-browse on the manager: {seen:#?}\nthe nodes' announcers: {logs:#?}"
    );
    for (r, (i, s)) in seen.iter().zip([(1, &native), (2, &lab_tree)]) {
        assert!(
            r.host.starts_with(&lab.nodes[i].name)
                && r.txt.contains(&format!("sysinfo={} ", s.release))
                && r.txt
                    .contains(&format!("certinfo={}", s.serial.to_lowercase())),
            "node {}'s advertisement of {s:?}: {r:?}",
            i + 1
        );
    }
    eprintln!(
        "both nodes' servers browsed from the manager {:.1} s after their announcers started",
        browsed.elapsed().as_secs_f64()
    );

    // The stock client compiles a tracepoint script through each, by node address and port.
    for s in &servers {
        let took = compile_through(
            &env.path(&format!("client-{}", s.release)),
            s,
            "swarm_trace",
            "probe kernel.trace(\"sched:sched_switch\") { printf(\"%d\\n\", $next->pid); exit() }",
        );
        eprintln!(
            "tracepoint compiled through {}:{} on {} in {:.1} s",
            s.address,
            s.port,
            s.node,
            took.as_secs_f64()
        );
    }

    // A killed task's container: the server is back, same certificate.
    let killed = Instant::now();
    let ids = lab.expect(1, &["ps", "-q", "--filter", &label]);
    assert_eq!(
        ids.lines().count(),
        1,
        "one server container on node 2: {ids}"
    );
    lab.expect(1, &["kill", ids.trim()]);
    let back = loop {
        let status = String::from_utf8_lossy(&env.run_env(&["status"], &dh).stdout).into_owned();
        let now = placed(&status);
        if let Some(s) = now.iter().find(|s| s.release == release)
            && lab.expect(1, &["ps", "-q", "--filter", &label]).trim() != ids.trim()
            && std::net::TcpStream::connect((s.address.as_str(), s.port)).is_ok()
        {
            break s.clone();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "not back within 30 s:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        back.serial, native.serial,
        "the same certificate after the kill"
    );
    eprintln!(
        "killed task back in {:.1} s",
        killed.elapsed().as_secs_f64()
    );

    // A node stopped: its server shows as not running, and why; started again: running.
    lab.stop_node(2);
    lab.wait_status(2, NodeStatus::Down);
    let out = env.run_env(&["status"], &dh);
    let status = text(&out);
    let line = status
        .lines()
        .find(|l| l.contains(&format!("-r \"{other}\"")))
        .unwrap_or_else(|| panic!("a line for {other}:\n{status}"));
    assert!(
        line.contains("is not running")
            && line.contains(&format!("node {} is down", lab.nodes[2].name)),
        "{line}"
    );
    // As for a container that no longer runs on one host: LSB's 1, "dead".
    assert_eq!(
        out.status.code(),
        Some(1),
        "status of a server that does not run: {status}"
    );
    lab.start_node(2);
    lab.wait_status(2, NodeStatus::Ready);
    let status = wait_running(&env, &dh, 2, Duration::from_secs(90));
    assert_eq!(placed(&status).len(), 2, "both running again:\n{status}");

    // -p, restart and condrestart, as on one host.
    let now = placed(&status);
    let lab_now = now.iter().find(|s| s.release == other).unwrap();
    let pid = lab_now.pid.expect("a PID on its node").to_string();
    let by_pid = env.expect_env(&["status", "-p", &pid], &dh, 0);
    assert!(
        placed(&by_pid).iter().any(|s| s.release == other),
        "status -p {pid}:\n{by_pid}"
    );
    env.expect_env(&["restart", "-r", &other], &dh, 0);
    let status = wait_running(&env, &dh, 2, Duration::from_secs(60));
    let restarted = placed(&status);
    let again = restarted.iter().find(|s| s.release == other);
    assert!(
        again.is_some_and(|s| s.node == lab.nodes[2].name && s.serial == lab_tree.serial),
        "restart -r {other}: on its node, with its certificate:\n{status}"
    );
    env.expect_env(&["condrestart"], &dh, 0);
    let status = wait_running(&env, &dh, 2, Duration::from_secs(60));
    assert_eq!(placed(&status).len(), 2, "condrestart:\n{status}");

    // -n: a server of the configuration by its nickname, acted on alone.
    let nick_conf = env.path("conf.d/lab.conf");
    std::fs::write(&nick_conf, format!("NICKNAME=labnick\nRELEASE={other}\n")).unwrap();
    env.expect_env(&["start", "-n", "labnick"], &dh, 0);
    let status = wait_running(&env, &dh, 3, Duration::from_secs(60));
    let before = placed(&status);
    assert_eq!(
        before.len(),
        3,
        "start -n labnick adds one server:\n{status}"
    );
    let by_nick = env.expect_env(&["status", "-n", "labnick"], &dh, 0);
    let nicked = placed(&by_nick);
    assert!(
        nicked.len() == 1
            && nicked[0].nick == "labnick"
            && nicked[0].release == other
            && nicked[0].node == lab.nodes[2].name,
        "status -n labnick: that server only, on the node of its tree:\n{by_nick}"
    );
    let unknown = env.run_env(&["status", "-n", "nosuch"], &dh);
    assert!(
        !unknown.status.success() && text(&unknown).contains("'nosuch'"),
        "status -n nosuch: {}",
        text(&unknown)
    );
    env.expect_env(&["restart", "-n", "labnick"], &dh, 0);
    let status = wait_running(&env, &dh, 3, Duration::from_secs(60));
    let after = placed(&status);
    for s in &before {
        let now = after
            .iter()
            .find(|a| a.nick == s.nick || (s.nick != "labnick" && a.pid == s.pid))
            .unwrap_or_else(|| panic!("{s:?} after restart -n labnick:\n{status}"));
        if s.nick == "labnick" {
            assert!(
                now.pid != s.pid && now.node == s.node && now.serial == s.serial,
                "restarted on its node with its certificate: {s:?} -> {now:?}"
            );
        } else {
            assert_eq!(
                (&now.release, now.port),
                (&s.release, s.port),
                "untouched by restart -n labnick:\n{status}"
            );
        }
    }
    env.expect_env(&["stop", "-n", "labnick"], &dh, 0);
    let status = wait_running(&env, &dh, 2, Duration::from_secs(60));
    let left = placed(&status);
    assert!(
        left.len() == 2 && left.iter().all(|s| s.nick != "labnick"),
        "stop -n labnick stops it alone:\n{status}"
    );
    std::fs::remove_file(&nick_conf).unwrap();

    // Another tenant's service on the same swarm, untouched by this tenant's stop.
    let other_tenant = format!("{}-other", env.tenant);
    lab.expect(
        0,
        &[
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            &other_tenant,
            "--label",
            "io.stap-server.managed=true",
            "--label",
            &format!("io.stap-server.tenant={other_tenant}"),
            "--constraint",
            &format!("node.id=={}", lab.nodes[1].id),
            "--entrypoint",
            "sleep",
            &common::image(),
            "600",
        ],
    );
    env.expect_env(&["stop"], &dh, 0);
    let services = lab.expect(0, &["service", "ls", "-q", "--filter", &label]);
    assert!(
        services.trim().is_empty(),
        "no service of ours left: {services}"
    );
    let others = lab.expect(0, &["service", "ls", "--format", "{{.Name}}"]);
    assert!(others.lines().any(|l| l == other_tenant), "{others}");
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..3 {
        loop {
            let left = lab.expect(i, &["ps", "-aq", "--filter", &label]);
            if left.trim().is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "node {} keeps {left}", i + 1);
            std::thread::sleep(Duration::from_millis(250));
        }
        let networks = lab.expect(i, &["network", "ls", "-q", "--filter", &label]);
        assert!(networks.trim().is_empty(), "node {}: {networks}", i + 1);
    }
    lab.expect(0, &["service", "rm", &other_tenant]);

    // Once the nodes have the image and the certificates: what a start across the swarm
    // costs by itself, against the same start on this host's engine.
    let again = Instant::now();
    env.expect_env(&["start", "-i"], &dh, 0);
    let swarm_start = again.elapsed();
    env.expect_env(&["stop"], &dh, 0);
    let local = common::Env::new("swarm-local");
    let modules = local.fake_modules(&[&release, &other]);
    local.write_global(&format!("MODULES_PATH={}\n", modules.display()));
    local.expect(&["start", "-r", &release], 0);
    local.expect(&["stop"], 0);
    let here = Instant::now();
    local.expect(&["start", "-i"], 0);
    let local_start = here.elapsed();
    local.expect(&["stop"], 0);
    eprintln!(
        "start -i of 2 servers, image and certificates in place: swarm of 3 nodes {:.1} s, \
         this host's engine {:.1} s",
        swarm_start.as_secs_f64(),
        local_start.as_secs_f64()
    );
}

#[test]
fn a_stack_file_deploys_the_servers_start_would_make() {
    common::require("stap", "the systemtap client (apt-get install systemtap)");
    let lab = Lab::three();
    let env = common::Env::new("stack");
    env.write_global("ENGINE=swarm\n");
    let dh = [("DOCKER_HOST", lab.manager())];
    load_image(&lab);
    let release = headers_release();
    let other = format!("{release}-lab");

    let file = env.path("stack.yml");
    let out = env.run_env(
        &["compose", "--stack", "-i", "-o", file.to_str().unwrap()],
        &dh,
    );
    assert!(out.status.success(), "compose --stack: {}", text(&out));
    assert!(
        text(&out).contains("leaves out the PIDS limit"),
        "what the file cannot say is said: {}",
        text(&out)
    );
    let stack = format!("s{}", std::process::id());
    lab.expect(
        0,
        &["stack", "deploy", "-c", file.to_str().unwrap(), &stack],
    );
    let status = wait_running(&env, &dh, 2, Duration::from_secs(120));
    let servers = placed(&status);
    assert_eq!(
        servers
            .iter()
            .map(|s| (s.release.as_str(), s.node.as_str()))
            .collect::<Vec<_>>(),
        [
            (release.as_str(), lab.nodes[1].name.as_str()),
            (other.as_str(), lab.nodes[2].name.as_str())
        ],
        "the stack's servers, where start would put them:\n{status}"
    );
    // The stack's servers use the certificates made on the nodes for them.
    assert!(servers.iter().all(|s| !s.serial.is_empty()), "{status}");

    // A client of the stack's server for the other release compiles scripts nobody here
    // wrote: systemtap's own examples of every category whose `.meta` check is `stap -p4
    // NAME.stp` and that need no debuginfo (the lab's release has none).
    let s = servers.iter().find(|s| s.release == other).unwrap();
    let examples = common::prerequisite_dir("examples", "systemtap's example scripts");
    let mut compiled = 0;
    for example in common::NO_DEBUGINFO_EXAMPLES {
        let path = examples.join(format!("{example}.stp"));
        let check = std::fs::read_to_string(examples.join(format!("{example}.meta")))
            .unwrap_or_else(|e| panic!("{example}.meta: {e}"));
        let name = example.rsplit('/').next().unwrap();
        if !check.contains(&format!("test_check: stap -p4 {name}.stp")) {
            continue;
        }
        compiled += 1;
        let script = std::fs::read_to_string(&path).unwrap();
        let took = compile_through(&env.path("client"), s, &name.replace('-', "_"), &script);
        eprintln!(
            "{example} compiled through the stack's server in {:.1} s",
            took.as_secs_f64()
        );
    }
    assert!(
        compiled >= 15,
        "only {compiled} examples with a plain -p4 check"
    );

    lab.expect(0, &["stack", "rm", &stack]);
    let label = format!("label=io.stap-server.tenant={}", env.tenant);
    let services = lab.expect(0, &["service", "ls", "-q", "--filter", &label]);
    assert!(services.trim().is_empty(), "{services}");
}

/// A registry of Debian's `docker-registry` package run as a process of this host on the lab
/// bridge's gateway address (no TLS, no auth; the nodes' engines take the lab's subnet as
/// insecure), with its storage in a directory of its own. Dropping it ends the process and
/// removes the directory with all that was pushed.
struct Registry {
    child: std::process::Child,
    dir: std::path::PathBuf,
    /// `ADDRESS:PORT`, the prefix of its images' names.
    addr: String,
}

impl Registry {
    fn start(lab: &Lab) -> Registry {
        common::require(
            "docker-registry",
            "Debian's docker-registry (scripts/bench.sh swarm installs it)",
        );
        let prefix = lab.subnet.rsplit_once('.').expect("a /24").0;
        let gateway = format!("{prefix}.1");
        let port = common::free_port();
        let addr = format!("{gateway}:{port}");
        let dir = std::env::temp_dir().join(format!("{}-registry", lab.name));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run docker-registry");
        let registry = Registry { child, dir, addr };
        let ip: std::net::Ipv4Addr = gateway.parse().unwrap();
        let answer = common::swarm::http_get(ip, port, Duration::from_secs(30));
        assert!(
            answer.is_ok(),
            "the registry on {}: {answer:?}\n{}",
            registry.addr,
            std::fs::read_to_string(registry.dir.join("log")).unwrap_or_default()
        );
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes image `id` (every name of it) from node `i`'s engine.
fn drop_image(lab: &Lab, i: usize, id: &str) {
    lab.docker(i, &["rmi", "-f", id]);
    assert!(
        !lab.docker(i, &["image", "inspect", id]).status.success(),
        "image {id} still on node {}",
        i + 1
    );
}

/// Runs `f` for each of `nodes` at once; how long until all had returned.
fn at_once(nodes: &[usize], f: impl Fn(usize) + Sync) -> Duration {
    let started = Instant::now();
    std::thread::scope(|s| {
        for &i in nodes {
            let f = &f;
            s.spawn(move || f(i));
        }
    });
    started.elapsed()
}

/// How the image reaches the nodes: over each node's engine API (what `start` does: the
/// manager's `GET /images/NAME/get` streamed into the node's `POST /images/load`) against a
/// registry in the swarm (pushed once from the manager, pulled by each node), to one node
/// and to two at once. Run by `scripts/bench.sh swarm`; prints a table.
#[test]
#[ignore = "a measurement: scripts/bench.sh swarm"]
fn image_distribution_api_vs_registry() {
    let lab = Lab::three();
    load_image(&lab);
    let image = common::image();
    let id = lab
        .expect(0, &["image", "inspect", "--format", "{{.Id}}", &image])
        .trim()
        .to_string();
    let size = lab.expect(0, &["image", "inspect", "--format", "{{.Size}}", &image]);
    let mb = size.trim().parse::<u64>().unwrap_or_default() / 1_000_000;
    for i in [1, 2] {
        drop_image(&lab, i, &id);
    }

    // Over the engine APIs, with the manager's own code, which connects to DOCKER_HOST: set
    // for the connection only (the lab's own docker commands must reach this host's engine).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // SAFETY: no other thread of this test reads or writes the environment meanwhile.
    unsafe { std::env::set_var("DOCKER_HOST", lab.manager()) };
    let swarm = runtime.block_on(stap_server::engine::swarm::Swarm::connect(
        lab.manager(),
        common::swarm::ENGINE_PORT,
    ));
    // SAFETY: as above.
    unsafe { std::env::remove_var("DOCKER_HOST") };
    let swarm = swarm.expect("the manager");
    let ship = |targets: &[usize]| -> Duration {
        runtime.block_on(async {
            let nodes = swarm.nodes().await.expect("the nodes");
            let wanted: Vec<_> = targets
                .iter()
                .map(|&i| {
                    nodes
                        .iter()
                        .find(|n| n.id == lab.nodes[i].id)
                        .expect("node listed")
                        .clone()
                })
                .collect();
            let started = Instant::now();
            let shipped =
                futures_util::future::join_all(wanted.iter().map(|n| swarm.ship_image(n, &image)))
                    .await;
            let took = started.elapsed();
            for s in shipped {
                assert!(matches!(s, Ok(Some(_))), "shipped, not found there: {s:?}");
            }
            took
        })
    };
    let api_one = ship(&[1]);
    drop_image(&lab, 1, &id);
    let api_two = ship(&[1, 2]);
    for i in [1, 2] {
        drop_image(&lab, i, &id);
    }

    // Through a registry.
    let registry = Registry::start(&lab);
    let name = format!("{}/stap-server:distribution", registry.addr);
    lab.expect(0, &["tag", &image, &name]);
    let started = Instant::now();
    lab.expect(0, &["push", &name]);
    let push = started.elapsed();
    // What a pull moves: the compressed layers the registry holds.
    let du = std::process::Command::new("du")
        .args(["-sm", &registry.dir.join("data").display().to_string()])
        .output()
        .unwrap();
    let stored = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string();
    let pull = |i: usize| {
        lab.expect(i, &["pull", "-q", &name]);
        let got = lab.expect(i, &["image", "inspect", "--format", "{{.Id}}", &name]);
        assert_eq!(got.trim(), id, "node {} pulled the manager's image", i + 1);
    };
    let pull_one = at_once(&[1], pull);
    drop_image(&lab, 1, &id);
    let pull_two = at_once(&[1, 2], pull);
    for i in [1, 2] {
        drop_image(&lab, i, &id);
    }
    let storage = registry.dir.clone();
    drop(registry);
    assert!(!storage.exists(), "{} left behind", storage.display());

    let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let table = [
        format!("image distribution ({image}, {mb} MB)      1 node    2 nodes at once"),
        format!(
            "engine API (manager save -> node load)  {:>8}  {:>8}",
            s(api_one),
            s(api_two)
        ),
        format!(
            "registry: push once from the manager    {:>8}   ({stored} MB stored, compressed)",
            s(push)
        ),
        format!(
            "registry: pull                          {:>8}  {:>8}",
            s(pull_one),
            s(pull_two)
        ),
        format!(
            "registry: push + pull                   {:>8}  {:>8}",
            s(push + pull_one),
            s(push + pull_two)
        ),
    ];
    for line in table {
        println!("{line}");
    }
    let name = lab.name.clone();
    drop(lab);
    let left = remains(&name);
    assert!(left.is_empty(), "left behind: {left:?}");
}

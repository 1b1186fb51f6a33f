//! The classic command line and configuration files, on the real engine: the initscript
//! README's service test, a conf.d of several servers, `start -i` over several releases.

mod common;

use common::{Env, free_port, running_release};

/// `running as PID N` of the one status line that contains `what`.
fn pid_of(status: &str, what: &str) -> String {
    status
        .lines()
        .find(|l| l.contains(what))
        .and_then(|l| l.split("running as PID ").nth(1))
        .unwrap_or_else(|| panic!("no running line with {what} in:\n{status}"))
        .trim()
        .to_string()
}

fn running_lines(status: &str) -> usize {
    status
        .lines()
        .filter(|l| l.contains("running as PID"))
        .count()
}

/// Section 6.2 of the initscript README, step by step, with the default server (host arch,
/// running release; its build tree comes from the test's own modules directory).
#[test]
fn the_initscript_service_test_sequence() {
    let env = Env::new("seq");
    let release = running_release();
    let modules = env.fake_modules(&[&release]);
    env.write_global(&format!("MODULES_PATH={}\n", modules.display()));
    let server = format!("stap-server -a \"x86_64\" -r \"{release}\"");

    let out = env.expect(&["start"], 0);
    assert!(out.contains(&format!("Starting {server}")), "{out}");
    assert!(out.trim_end().ends_with("OK"), "{out}");
    let first = env.container_ids();
    assert_eq!(first.len(), 1);

    let status = env.expect(&["status"], 0);
    assert_eq!(running_lines(&status), 1, "{status}");
    assert!(status.contains(&server), "{status}");

    let out = env.expect(&["restart"], 0);
    assert!(out.contains(&format!("Stopping {server}")), "{out}");
    assert!(out.contains(&format!("Starting {server}")), "{out}");
    let second = env.container_ids();
    assert_eq!(second.len(), 1);
    assert_ne!(first, second, "restart makes a new container");
    assert_eq!(running_lines(&env.expect(&["status"], 0)), 1);

    let out = env.expect(&["condrestart"], 0);
    assert!(
        out.contains("Stopping") && out.contains("Starting"),
        "{out}"
    );
    let third = env.container_ids();
    assert_eq!(third.len(), 1);
    assert_ne!(second, third, "condrestart restarts a running server");
    assert_eq!(running_lines(&env.expect(&["status"], 0)), 1);

    let out = env.expect(&["force-reload"], 0);
    assert!(
        out.contains("Stopping") && out.contains("Starting"),
        "{out}"
    );
    assert_eq!(env.container_ids().len(), 1);
    assert_eq!(running_lines(&env.expect(&["status"], 0)), 1);

    let out = env.expect(&["stop"], 0);
    assert!(out.contains(&format!("Stopping {server}")), "{out}");
    assert!(env.container_ids().is_empty());
    let status = env.expect(&["status"], 3);
    assert!(
        status.contains("No managed stap-server is running"),
        "{status}"
    );

    env.expect(&["condrestart"], 0);
    assert!(env.container_ids().is_empty(), "condrestart starts nothing");
    env.expect(&["status"], 3);

    // Each message also reached the log file, with a timestamp.
    let log = std::fs::read_to_string(env.path("log/log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("Starting {server}")))
        .unwrap_or_else(|| panic!("no start line in the log:\n{log}"));
    assert!(
        line.starts_with(|c: char| c.is_ascii_alphabetic()) && line.contains(':'),
        "a timestamp before the message: {line}"
    );
}

/// Several configured servers: `start` runs them all; `-n` and `-p` act on one.
#[test]
fn a_conf_d_of_several_servers() {
    let env = Env::new("confd");
    let release = running_release();
    let modules = env.fake_modules(&[&release]);
    env.write_global(&format!("MODULES_PATH={}\n", modules.display()));
    let (tapsets, more) = (env.path("tapsets"), env.path("more"));
    std::fs::create_dir_all(&tapsets).unwrap();
    std::fs::create_dir_all(&more).unwrap();
    let (pa, pb) = (free_port(), free_port());
    std::fs::write(
        env.path("conf.d/alpha.conf"),
        format!(
            "# the first server\nNICKNAME=alpha\nPORT={pa}\nINCLUDE+={}\nINCLUDE+={}\n\nMAXTHREADS=2\n",
            tapsets.display(),
            more.display()
        ),
    )
    .unwrap();
    std::fs::write(
        env.path("conf.d/beta.conf"),
        format!("NICKNAME=beta\nPORT={pb}\nDEFINE=MAXACTION=5000\n"),
    )
    .unwrap();

    let out = env.expect(&["start"], 0);
    assert_eq!(out.matches("OK").count(), 2, "{out}");
    let status = env.expect(&["status"], 0);
    assert_eq!(running_lines(&status), 2, "{status}");
    assert!(
        status.contains(&format!(
            "-I \"{}\" -I \"{}\"",
            tapsets.display(),
            more.display()
        )),
        "both INCLUDE+= lines, in order: {status}"
    );
    assert!(status.contains(&format!("--port \"{pa}\"")), "{status}");
    assert!(status.contains(&format!("--port \"{pb}\"")), "{status}");
    let beta_pid = pid_of(&status, "-n \"beta\"");

    // stop -n: only that one.
    let out = env.expect(&["stop", "-n", "alpha"], 0);
    assert!(out.contains("-n \"alpha\""), "{out}");
    assert_eq!(env.container_ids().len(), 1);
    let status = env.expect(&["status", "-n", "alpha"], 3);
    assert!(status.contains("is not running"), "{status}");
    let status = env.expect(&["status", "-n", "beta"], 0);
    assert_eq!(running_lines(&status), 1, "{status}");

    // start brings back the missing one and leaves the running one.
    let before = env.container_ids();
    env.expect(&["start"], 0);
    let after = env.container_ids();
    assert_eq!(after.len(), 2);
    assert!(before.iter().all(|id| after.contains(id)), "beta untouched");

    // stop -p PID: the server whose container's main process has that pid.
    let out = env.expect(&["stop", "-p", &beta_pid], 0);
    assert!(out.contains("-n \"beta\""), "{out}");
    let status = env.expect(&["status"], 0);
    assert_eq!(running_lines(&status), 1, "{status}");
    assert!(status.contains("-n \"alpha\""), "{status}");
    let out = env.expect(&["stop", "-p", &beta_pid], 1);
    assert!(
        out.contains(&format!("No stap-server running as pid {beta_pid}")),
        "{out}"
    );

    // restart -n: that server only, with a new container.
    let alpha = env.container_ids();
    let out = env.expect(&["restart", "-n", "alpha"], 0);
    assert!(
        out.contains("Starting") && out.contains("-n \"alpha\""),
        "{out}"
    );
    let status = env.expect(&["status"], 0);
    assert_eq!(running_lines(&status), 1, "beta stays stopped: {status}");
    assert_ne!(alpha, env.container_ids());

    // A dead server (its container stopped behind the manager's back): status 1, and
    // start replaces it.
    let alpha = env.containers();
    common::docker(&["stop", "-t", "1", &alpha[0]]);
    let status = env.expect(&["status"], 1);
    assert!(status.contains("is no longer running"), "{status}");
    env.expect(&["start", "-n", "alpha"], 0);
    assert_eq!(running_lines(&env.expect(&["status"], 0)), 1);

    // An unknown nickname is named.
    let out = env.expect(&["status", "-n", "gamma"], 3);
    assert!(
        out.contains("No configuration found for the nickname 'gamma'"),
        "{out}"
    );

    env.expect(&["stop"], 0);
    assert!(env.container_ids().is_empty());
}

/// `start -i` makes one server per release of the modules directory; the `--port` list goes
/// to them in turn, the default after it runs out.
#[test]
fn start_i_runs_one_server_per_installed_release() {
    let env = Env::new("all");
    let releases = ["6.1.0-91-amd64", "6.1.0-92-amd64", "6.1.0-93-amd64"];
    let modules = env.fake_modules(&releases);
    env.write_global(&format!("MODULES_PATH={}\n", modules.display()));
    let (p1, p2) = (free_port(), free_port());

    let out = env.expect(
        &[
            "start",
            "-i",
            "--port",
            &p1.to_string(),
            "--port",
            &p2.to_string(),
        ],
        0,
    );
    assert_eq!(out.matches("OK").count(), 3, "{out}");
    assert_eq!(env.container_ids().len(), 3);
    let status = env.expect(&["status"], 0);
    assert_eq!(running_lines(&status), 3, "{status}");
    for release in releases {
        assert!(status.contains(&format!("-r \"{release}\"")), "{status}");
    }
    let first = status
        .lines()
        .find(|l| l.contains(releases[0]))
        .unwrap()
        .to_string();
    let second = status
        .lines()
        .find(|l| l.contains(releases[1]))
        .unwrap()
        .to_string();
    assert!(first.contains(&format!("--port \"{p1}\"")), "{first}");
    assert!(second.contains(&format!("--port \"{p2}\"")), "{second}");

    // Each is reachable on its host port.
    for line in status.lines().filter(|l| l.contains("running as PID")) {
        let port = env.port_of(line);
        std::net::TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("port {port} of {line}: {e}"));
    }

    // start -i again makes nothing new.
    let ids = env.container_ids();
    env.expect(&["start", "-i"], 0);
    assert_eq!(ids, env.container_ids());

    env.expect(&["stop"], 0);
    assert!(env.container_ids().is_empty());
}

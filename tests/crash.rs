//! The manager killed in the middle of its work: what it leaves is seen and repaired by the
//! next invocation; an interrupted start removes what it was making.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Hold, HoldingProxy, headers_release, text, wait_output};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const LIMIT: Duration = Duration::from_secs(300);

fn signal(child: &std::process::Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal the manager");
}

/// The tenant's server containers (not helpers) and their states, by name.
fn server_states(env: &Env) -> Vec<(String, String)> {
    let mut states: Vec<(String, String)> = env
        .containers()
        .into_iter()
        .filter(|n| !n.ends_with("-init"))
        .map(|name| {
            let state = common::lines(&common::docker(&[
                "inspect",
                "-f",
                "{{.State.Status}}",
                &name,
            ]))
            .join("");
            (name, state)
        })
        .collect();
    states.sort();
    states
}

/// Status must show every server container left behind, in its state, with the LSB code
/// that state gives: 0 all running, 1 one not running, 3 none left.
fn status_shows_what_is_left(env: &Env, what: &str) {
    for attempt in 1.. {
        let before = server_states(env);
        let status = env.run(&["status"]);
        let left = server_states(env);
        // The engine may still be finishing a request the killed manager sent: the states
        // are compared once two looks around the status agree.
        if before != left && attempt < 10 {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let out = text(&status);
        let running = left.iter().filter(|(_, s)| s == "running").count();
        let code = if left.is_empty() {
            3
        } else if running == left.len() {
            0
        } else {
            1
        };
        assert_eq!(status.status.code(), Some(code), "{what}: {left:?}: {out}");
        let stdout = String::from_utf8_lossy(&status.stdout).into_owned();
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("stap-server "))
            .collect();
        assert_eq!(lines.len(), left.len(), "{what}: {left:?}: {out}");
        let shown_running = lines
            .iter()
            .filter(|l| l.contains(" running as PID ") || l.ends_with(" running"))
            .count();
        assert_eq!(shown_running, running, "{what}: {left:?}: {out}");
        for (name, state) in left.iter().filter(|(_, s)| s != "running") {
            assert!(
                out.contains(&format!("(container {name} is {state})")),
                "{what}: status does not show {name} as {state}: {out}"
            );
        }
        if left.is_empty() {
            assert!(
                out.contains("No managed stap-server is running"),
                "{what}: {out}"
            );
        }
        return;
    }
}

/// Kills a `start` after `delay`, then checks that status shows what is left and that the
/// next invocations repair it: `stop` first when `stop_first`, then `start` gives one healthy,
/// advertised server and `stop` leaves nothing.
fn kill_and_repair(env: &Env, release: &str, delay: Duration, stop_first: bool) {
    let child = env.spawn(&["start", "-r", release]);
    std::thread::sleep(delay);
    signal(&child, Signal::SIGKILL);
    let killed = wait_output(child, LIMIT);
    let what = format!("killed after {delay:?}");
    eprintln!("{what}: left {:?}", env.containers());
    assert!(
        killed.status.code().is_none() || killed.status.success(),
        "{what}: {}",
        text(&killed)
    );
    status_shows_what_is_left(env, &what);
    let stop_leaves_nothing = || {
        let stop = env.run(&["stop"]);
        assert_eq!(stop.status.code(), Some(0), "{what}: {}", text(&stop));
        assert!(
            env.containers().is_empty(),
            "{what}: {:?}",
            env.containers()
        );
        assert!(env.adverts().is_empty(), "{what}: {:?}", env.adverts());
    };
    if stop_first {
        // The next invocation may be a stop: it takes away all that was left.
        stop_leaves_nothing();
    }
    let again = env.run(&["start", "-r", release]);
    assert_eq!(again.status.code(), Some(0), "{what}: {}", text(&again));
    env.assert_one_healthy();
    assert_eq!(env.adverts().len(), 1, "{what}: {:?}", env.adverts());
    stop_leaves_nothing();
}

#[test]
fn sigkill_at_any_point_of_start_is_repaired_by_the_next_start() {
    let release = headers_release();
    // A cold start (new tenant: network, certificate volume and certificate made first)
    // measures the span the kills are spread over.
    let span = {
        let env = Env::new("crash0");
        let t = Instant::now();
        let out = env.run(&["start", "-r", &release]);
        let span = t.elapsed();
        assert!(out.status.success(), "{}", text(&out));
        assert!(env.run(&["stop"]).status.success());
        span
    };
    eprintln!("a cold start took {span:?}");
    let fractions = [0.02, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.97];
    for (k, f) in fractions.iter().enumerate() {
        let delay = span.mul_f64(*f);
        let env = Env::new(&format!("crash{}", k + 1));
        kill_and_repair(&env, &release, delay, k % 2 == 1);
    }
}

#[test]
fn sigkill_during_stop_and_restart_is_repaired() {
    let env = Env::new("crashsr");
    let release = headers_release();
    warm_span(&env, &release);
    for action in ["stop", "restart"] {
        let args: &[&str] = if action == "stop" {
            &["stop"]
        } else {
            &["restart", "-r", &release]
        };
        assert!(env.run(&["start", "-r", &release]).status.success());
        let t = Instant::now();
        assert!(env.run(args).status.success());
        let span = t.elapsed();
        eprintln!("{action} took {span:?}");
        for f in [0.1, 0.3, 0.5, 0.7, 0.9] {
            let delay = span.mul_f64(f);
            let what = format!("{action} killed after {delay:?}");
            assert!(
                env.run(&["start", "-r", &release]).status.success(),
                "{what}"
            );
            let child = env.spawn(args);
            std::thread::sleep(delay);
            signal(&child, Signal::SIGKILL);
            wait_output(child, LIMIT);
            eprintln!("{what}: left {:?}", env.containers());
            status_shows_what_is_left(&env, &what);
            let again = env.run(&["start", "-r", &release]);
            assert_eq!(again.status.code(), Some(0), "{what}: {}", text(&again));
            env.assert_one_healthy();
            assert_eq!(env.adverts().len(), 1, "{what}: {:?}", env.adverts());
        }
        env.stop_leaves_nothing();
    }
}

/// A stop whose manager dies once the engine has it goes on without it: the engine ends the
/// server seconds later (stap-serverd takes a while to exit). The next start must not take
/// that server for a running one: it finishes the dead manager's stop first, and the server
/// it leaves still runs once the engine is done.
#[test]
fn a_stop_the_engine_finishes_alone_does_not_fool_the_next_start() {
    let env = Env::new("stopleft");
    let release = headers_release();
    for action in ["stop", "restart"] {
        assert!(env.run(&["start", "-r", &release]).status.success());
        let proxy = HoldingProxy::new(Hold::StopAnswer);
        let args: &[&str] = if action == "stop" {
            &["stop"]
        } else {
            &["restart", "-r", &release]
        };
        let child = env.spawn_env(args, &[("DOCKER_HOST", &proxy.url)]);
        wait_held(
            &proxy,
            &format!("the {action} never asked the engine to stop the server"),
        );
        signal(&child, Signal::SIGKILL);
        wait_output(child, LIMIT);
        let start = env.run(&["start", "-r", &release]);
        assert_eq!(start.status.code(), Some(0), "{action}: {}", text(&start));
        // Longer than the engine gives the server the dead manager asked it to stop.
        std::thread::sleep(Duration::from_secs(13));
        env.assert_one_healthy();
        assert_eq!(env.adverts().len(), 1, "{action}: {:?}", env.adverts());
    }
    env.stop_leaves_nothing();
}

/// Returns once the proxy has held a request back; fails with `never` past the limit.
fn wait_held(proxy: &HoldingProxy, never: &str) {
    let deadline = Instant::now() + LIMIT;
    while !proxy.held() {
        assert!(Instant::now() < deadline, "{never}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a warm start takes (the certificate made by a first start): the server's own
/// making. Nothing runs afterwards.
fn warm_span(env: &Env, release: &str) -> Duration {
    assert!(env.run(&["start", "-r", release]).status.success());
    assert!(env.run(&["stop"]).status.success());
    let t = Instant::now();
    assert!(env.run(&["start", "-r", release]).status.success());
    let span = t.elapsed();
    assert!(env.run(&["stop"]).status.success());
    span
}

#[test]
fn sigkill_at_any_point_of_a_warm_start_is_repaired() {
    let env = Env::new("crashw");
    let release = headers_release();
    let span = warm_span(&env, &release);
    eprintln!("a warm start took {span:?}");
    for (k, f) in [0.1, 0.3, 0.5, 0.7, 0.85, 0.95].iter().enumerate() {
        let delay = span.mul_f64(*f);
        kill_and_repair(&env, &release, delay, k % 2 == 1);
    }
}

/// Starts a server through a proxy that holds its container's start, and returns once the
/// manager is caught there: the container created, not started.
fn held_start(env: &Env, release: &str) -> (HoldingProxy, std::process::Child) {
    // Warm: the certificate exists, so the only start left to hold is the server's own.
    warm_span(env, release);
    let proxy = HoldingProxy::new(Hold::Start);
    let child = env.spawn_env(&["start", "-r", release], &[("DOCKER_HOST", &proxy.url)]);
    wait_held(&proxy, "the start never reached the engine");
    (proxy, child)
}

/// A server half made: its manager killed between creating and starting its container.
fn half_made(env: &Env, release: &str) {
    let (_proxy, child) = held_start(env, release);
    signal(&child, Signal::SIGKILL);
    wait_output(child, LIMIT);
    let states = common::lines(&common::docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=io.stap-server.tenant={}", env.tenant),
        "--format",
        "{{.State}}",
    ]));
    assert_eq!(states, ["created"], "a half-made server is left");
}

#[test]
fn a_half_made_server_is_shown_then_removed_by_stop() {
    let env = Env::new("half1");
    let release = headers_release();
    half_made(&env, &release);
    let status = env.run(&["status"]);
    let out = text(&status);
    assert_eq!(status.status.code(), Some(1), "dead, per LSB: {out}");
    assert!(out.contains("is created"), "{out}");
    let stop = env.run(&["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(env.containers().is_empty(), "{:?}", env.containers());
}

#[test]
fn a_half_made_server_is_finished_by_the_next_start() {
    let env = Env::new("half2");
    let release = headers_release();
    half_made(&env, &release);
    let start = env.run(&["start", "-r", &release]);
    assert!(start.status.success(), "{}", text(&start));
    env.assert_one_healthy();
    assert_eq!(env.adverts().len(), 1, "{:?}", env.adverts());
    assert!(env.run(&["stop"]).status.success());
    assert!(env.containers().is_empty(), "{:?}", env.containers());
}

#[test]
fn sigint_and_sigterm_during_start_remove_what_it_was_making() {
    let release = headers_release();
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        let env = Env::new("intr");
        half_made_then(&env, &release, sig);
    }
}

/// Interrupts a start caught between creating and starting its container: the container
/// it made goes; what existed before (the certificate volume, the network) stays.
fn half_made_then(env: &Env, release: &str, sig: Signal) {
    warm_span(env, release);
    let before = env.snapshot();
    let (_proxy, child) = held_start(env, release);
    assert_eq!(env.containers().len(), 1, "the start made its container");
    signal(&child, sig);
    let out = wait_output(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(130), "{sig}: {}", text(&out));
    assert!(text(&out).contains("interrupted"), "{sig}: {}", text(&out));
    assert_eq!(env.snapshot(), before, "{sig}: what the start made is gone");
}

#[test]
fn sigterm_at_spread_points_of_start_leaves_nothing_of_it() {
    let env = Env::new("term");
    let release = headers_release();
    let span = warm_span(&env, &release);
    let before = env.snapshot();
    for f in [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95] {
        let delay = span.mul_f64(f);
        let child = env.spawn(&["start", "-r", &release]);
        std::thread::sleep(delay);
        signal(&child, Signal::SIGTERM);
        let out = wait_output(child, Duration::from_secs(60));
        match out.status.code() {
            // Interrupted: nothing of the start is left.
            Some(130) => assert_eq!(env.snapshot(), before, "after {delay:?}"),
            // Finished before the signal: the server runs, and stop takes it away.
            Some(0) => {
                env.assert_one_healthy();
                assert!(env.run(&["stop"]).status.success());
                assert_eq!(env.snapshot(), before, "after {delay:?}");
            }
            other => panic!("after {delay:?}: exit {other:?}: {}", text(&out)),
        }
    }
}

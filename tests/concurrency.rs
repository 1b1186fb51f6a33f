//! Many managers at once for one tenant: they converge, never make duplicates, never fail
//! each other.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{Env, headers_release, text, wait_output};

const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn eight_simultaneous_starts_make_one_server() {
    let env = Env::new("conc8");
    let release = headers_release();
    // A fresh tenant: the eight race on the network, the certificate volume and the
    // certificate as well as on the container.
    let children: Vec<_> = (0..8)
        .map(|_| env.spawn(&["start", "-r", &release]))
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| wait_output(c, LIMIT))
        .collect();
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(out.status.code(), Some(0), "start #{i}: {}", text(out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("OK"),
            "start #{i}: {}",
            text(out)
        );
    }
    env.assert_one_healthy();
    let label = format!("label=io.stap-server.tenant={}", env.tenant);
    let networks = common::lines(&common::docker(&[
        "network", "ls", "-q", "--filter", &label,
    ]));
    assert_eq!(networks.len(), 1, "one network: {networks:?}");
    assert_eq!(
        env.adverts().len(),
        1,
        "one advertisement: {:?}",
        env.adverts()
    );

    env.stop_leaves_nothing();
}

#[test]
fn mixed_starts_stops_and_statuses_converge() {
    let env = Env::new("mix");
    let release = headers_release();
    let start = ["start", "-r", release.as_str()];
    let stop = ["stop"];
    let status = ["status"];
    let restart = ["restart", "-r", release.as_str()];
    let rounds: [&[&[&str]]; 3] = [
        &[
            &start, &stop, &start, &status, &stop, &start, &restart, &status,
        ],
        &[
            &stop, &start, &start, &stop, &status, &restart, &stop, &start,
        ],
        &[
            &restart, &restart, &start, &stop, &stop, &status, &start, &stop,
        ],
    ];
    for (round, commands) in rounds.iter().enumerate() {
        let children: Vec<_> = commands
            .iter()
            .enumerate()
            .map(|(i, args)| {
                // Staggered, so the commands overlap at different stages of each other.
                std::thread::sleep(Duration::from_millis(150 * (i as u64 % 3)));
                (args.join(" "), env.spawn(args))
            })
            .collect();
        for (what, child) in children {
            let out = wait_output(child, LIMIT);
            let code = out.status.code();
            assert!(
                matches!(code, Some(0) | Some(1) | Some(3)),
                "round {round}: {what} exited {code:?}: {}",
                text(&out)
            );
            assert!(!text(&out).contains("panicked"), "{what}: {}", text(&out));
        }
        // Whatever the mix did, what is left is whole: no duplicate, no half-made server, and
        // the advertisements are those of the servers that run.
        let left = env.containers();
        assert!(left.len() <= 1, "round {round}: {left:?}");
        let st = env.run(&["status"]);
        if left.is_empty() {
            assert_eq!(st.status.code(), Some(3), "round {round}: {}", text(&st));
        } else {
            assert_eq!(st.status.code(), Some(0), "round {round}: {}", text(&st));
        }
        assert_eq!(
            env.adverts().len(),
            left.len(),
            "round {round}: adverts {:?} for {left:?}",
            env.adverts()
        );

        // The last word decides: a start gives one healthy server, a stop none.
        let last = env.run(&start);
        assert!(last.status.success(), "round {round}: {}", text(&last));
        env.assert_one_healthy();
        assert_eq!(env.adverts().len(), 1, "{:?}", env.adverts());
        let last = env.run(&stop);
        assert!(last.status.success(), "round {round}: {}", text(&last));
        assert!(env.containers().is_empty(), "round {round}");
        assert!(
            env.adverts().is_empty(),
            "round {round}: {:?}",
            env.adverts()
        );
    }
}

#[test]
fn simultaneous_starts_of_the_same_two_servers_both_succeed() {
    let env = Env::new("conc2");
    let release = headers_release();
    // Two configured servers: every start makes both, so each manager needs two servers that
    // the others are making too.
    for nick in ["one", "two"] {
        std::fs::write(
            env.path("conf.d").join(format!("{nick}.conf")),
            format!("RELEASE={release}\nNICKNAME={nick}\n"),
        )
        .unwrap();
    }
    let children: Vec<_> = (0..4).map(|_| env.spawn(&["start"])).collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = wait_output(child, LIMIT);
        assert_eq!(out.status.code(), Some(0), "start #{i}: {}", text(&out));
    }
    let containers = env.containers();
    assert_eq!(containers.len(), 2, "{containers:?}");
    let status = env.run(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    for port in text(&status)
        .lines()
        .filter(|l| l.contains("running as PID"))
        .map(|l| env.port_of(l))
    {
        assert!(common::accepts(port), "port {port}: {}", text(&status));
    }
    assert_eq!(env.adverts().len(), 2, "{:?}", env.adverts());
    assert!(env.run(&["stop"]).status.success());
    assert!(env.containers().is_empty(), "{:?}", env.containers());
}

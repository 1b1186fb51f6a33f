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

//! The classic action semantics as pure functions of what is wanted and what runs: which
//! servers each action stops, starts, restarts or keeps ([`action`]), and what `status`
//! reports with which exit code ([`status`]). Doing it is the executor's job.

use std::collections::HashSet;

use crate::body::container_name;
use crate::cli::Action;
use crate::error::Exit;
use crate::spec::{Server, ServerSpec, Target};

/// What one service action does, decided before anything is done.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// `status`: what it reports.
    Status(Status),
    /// `reload` is not implemented (LSB).
    Unimplemented,
    /// `condrestart` with no server named and none running: said, and a success.
    NothingToRestart,
    /// Stops, then starts.
    Change(Change),
}

/// The stops and starts of an action, in the order they are carried out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// Named servers `condrestart` leaves alone because they do not run: said first.
    pub idle: Vec<ServerSpec>,
    pub stops: Vec<Stop>,
    /// Whether the certificate makers killed managers left are removed after the stops (a
    /// stop of every server).
    pub sweep: bool,
    /// Decided against what runs once the stops are done.
    pub starts: Vec<Start>,
}

/// What `status` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Lines about servers named that do not exist, said first.
    pub missing: Vec<String>,
    /// The servers shown, one status line each.
    pub shown: Vec<Server>,
    pub exit: Exit,
}

/// What `action` does. `targets`: the servers named (`None`: none was); `defaults`: the
/// servers a start-like action makes when none is named (configured, else default);
/// `observed`: the tenant's servers as listed.
pub fn action(
    action: Action,
    targets: Option<&[Target]>,
    defaults: &[ServerSpec],
    observed: &[Server],
) -> Plan {
    let wanted = || wanted(targets, defaults);
    let change = |stops: Vec<Stop>, specs: Vec<ServerSpec>| {
        let starts = start(&specs, &after(observed, &stops));
        Change {
            stops,
            starts,
            ..Change::default()
        }
    };
    match action {
        Action::Status => Plan::Status(status(targets, observed)),
        Action::Reload => Plan::Unimplemented,
        Action::Start => Plan::Change(change(vec![], wanted())),
        Action::Stop => Plan::Change(Change {
            stops: stop(targets, observed),
            sweep: targets.is_none(),
            ..Change::default()
        }),
        Action::Restart => {
            // With no server named, restart makes again what runs (the CLI's), else what
            // start would make.
            let specs = match targets {
                None if observed.iter().any(|s| s.managed_by_cli) => specs_of(&managed(observed)),
                _ => wanted(),
            };
            Plan::Change(change(stop(targets, observed), specs))
        }
        Action::CondRestart => {
            let (running, idle) = match targets {
                Some(t) => running_targets(t, observed),
                None => (managed(observed), vec![]),
            };
            if targets.is_none() && running.is_empty() {
                return Plan::NothingToRestart;
            }
            let specs = specs_of(&running);
            let stops = running.into_iter().map(Stop::Remove).collect();
            Plan::Change(Change {
                idle,
                ..change(stops, specs)
            })
        }
        Action::ForceReload => {
            let specs = wanted();
            Plan::Change(change(stop(None, observed), specs))
        }
    }
}

/// The servers a start-like action makes: those named, else `defaults`.
pub fn wanted(targets: Option<&[Target]>, defaults: &[ServerSpec]) -> Vec<ServerSpec> {
    targets.map_or_else(|| defaults.to_vec(), target_specs)
}

/// What runs once `stops` are done.
fn after(observed: &[Server], stops: &[Stop]) -> Vec<Server> {
    let removed: HashSet<&str> = stops
        .iter()
        .filter_map(|s| match s {
            Stop::Remove(server) => Some(server.id.as_str()),
            _ => None,
        })
        .collect();
    observed
        .iter()
        .filter(|s| !removed.contains(s.id.as_str()))
        .cloned()
        .collect()
}

/// The servers the command line made (not those of compose files).
fn managed(observed: &[Server]) -> Vec<Server> {
    observed
        .iter()
        .filter(|s| s.managed_by_cli)
        .cloned()
        .collect()
}

/// `status`: the servers named (every one when none is), with LSB codes: 0 all running,
/// 1 one dead, 3 none or one missing.
pub fn status(targets: Option<&[Target]>, observed: &[Server]) -> Status {
    let Some(targets) = targets else {
        if observed.is_empty() {
            return Status {
                missing: vec!["No managed stap-server is running".into()],
                shown: vec![],
                exit: Exit::NotRunning,
            };
        }
        return Status {
            missing: vec![],
            shown: observed.to_vec(),
            exit: dead_or_ok(observed),
        };
    };
    let mut missing = Vec::new();
    let mut shown = Vec::new();
    for target in targets {
        match target {
            Target::UnknownNickname { nickname, .. } => {
                missing.push(format!(
                    "No configuration found for the nickname '{nickname}'"
                ));
            }
            Target::Server(spec) => {
                let found = designated(spec, observed);
                if found.is_empty() {
                    missing.push(format!(
                        "stap-server {} is not running",
                        crate::report::spec_options(spec)
                    ));
                }
                shown.extend(found.into_iter().cloned());
            }
        }
    }
    let exit = if missing.is_empty() {
        dead_or_ok(&shown)
    } else {
        Exit::NotRunning
    };
    Status {
        missing,
        shown,
        exit,
    }
}

fn dead_or_ok(shown: &[Server]) -> Exit {
    if shown.iter().all(Server::running) {
        Exit::Success
    } else {
        Exit::Dead
    }
}

/// One step of stopping.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// Stop and remove this container.
    Remove(Server),
    /// Asked to stop a server that is not running: success, as classic.
    NotRunning(ServerSpec),
    /// `-n NICK` named nothing: a failure for stop.
    UnknownNickname(String, ServerSpec),
    /// No server was named and none runs.
    Nothing,
}

/// One step of starting.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// Create and start a container for this spec.
    Create(ServerSpec),
    /// Already running as asked: success, no second container.
    Running(Server),
    /// Running with other settings: starting it again would need a restart.
    Conflict(ServerSpec, Server),
    /// A container exists but is not running: replace it.
    Replace(Server, ServerSpec),
}

/// Stopping `targets` (or every server of ours when none is named).
pub fn stop(targets: Option<&[Target]>, observed: &[Server]) -> Vec<Stop> {
    let Some(targets) = targets else {
        let all: Vec<Stop> = observed
            .iter()
            .filter(|s| s.managed_by_cli)
            .cloned()
            .map(Stop::Remove)
            .collect();
        return if all.is_empty() {
            vec![Stop::Nothing]
        } else {
            all
        };
    };
    let mut taken = HashSet::new();
    let mut steps = Vec::new();
    for target in targets {
        match target {
            Target::UnknownNickname { nickname, spec } => {
                steps.push(Stop::UnknownNickname(nickname.clone(), spec.clone()))
            }
            Target::Server(spec) => {
                let found = designated(spec, observed);
                if found.is_empty() {
                    steps.push(Stop::NotRunning(spec.clone()));
                }
                for s in found {
                    if taken.insert(s.id.clone()) {
                        steps.push(Stop::Remove(s.clone()));
                    }
                }
            }
        }
    }
    steps
}

/// The servers `spec` designates.
fn designated<'a>(spec: &ServerSpec, observed: &'a [Server]) -> Vec<&'a Server> {
    observed
        .iter()
        .filter(|s| spec.designates(&s.spec))
        .collect()
}

/// Starting `specs` given what runs.
pub fn start(specs: &[ServerSpec], observed: &[Server]) -> Vec<Start> {
    let mut names = HashSet::new();
    let mut steps = Vec::new();
    for spec in specs {
        if !names.insert(container_name(spec)) {
            continue;
        }
        let found = observed.iter().find(|s| spec.designates(&s.spec));
        steps.push(match found {
            None => Start::Create(spec.clone()),
            Some(s) if !s.running() => Start::Replace(s.clone(), spec.clone()),
            Some(s) if spec.same_settings(&s.spec) => Start::Running(s.clone()),
            Some(s) => Start::Conflict(spec.clone(), s.clone()),
        });
    }
    steps
}

/// The specs of running servers, as a restart recreates them.
pub fn specs_of(servers: &[Server]) -> Vec<ServerSpec> {
    servers.iter().map(|s| s.spec.clone()).collect()
}

/// The targets' specs (a new nickname included).
pub fn target_specs(targets: &[Target]) -> Vec<ServerSpec> {
    targets
        .iter()
        .map(|t| match t {
            Target::Server(s) | Target::UnknownNickname { spec: s, .. } => s.clone(),
        })
        .collect()
}

/// Servers that `targets` designate, running ones only (for condrestart).
pub fn running_targets(targets: &[Target], observed: &[Server]) -> (Vec<Server>, Vec<ServerSpec>) {
    let mut running = Vec::new();
    let mut idle = Vec::new();
    for spec in target_specs(targets) {
        let found: Vec<&Server> = observed
            .iter()
            .filter(|s| s.running() && spec.designates(&s.spec))
            .collect();
        if found.is_empty() {
            idle.push(spec);
        }
        running.extend(found.into_iter().cloned());
    }
    (running, idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(release: &str) -> ServerSpec {
        ServerSpec::example(release)
    }

    fn server(spec: ServerSpec, state: &str) -> Server {
        Server {
            name: container_name(&spec),
            id: format!("id-{}", spec.release),
            spec,
            state: state.into(),
            pid: Some(1),
            host_port: Some(40000),
            managed_by_cli: true,
            kernel_release: "6.1.0-56-amd64".into(),
            cert_volume: "v".into(),
            place: None,
        }
    }

    #[test]
    fn start_is_idempotent_and_replaces_dead_containers() {
        let observed = [server(spec("a"), "running"), server(spec("b"), "exited")];
        let mut pinned = spec("c");
        pinned.port = Some(5600);
        let steps = start(
            &[spec("a"), spec("b"), pinned.clone(), spec("a")],
            &observed,
        );
        assert_eq!(
            steps,
            [
                Start::Running(observed[0].clone()),
                Start::Replace(observed[1].clone(), spec("b")),
                Start::Create(pinned),
            ]
        );
        let mut other = spec("a");
        other.includes = vec!["/x".into()];
        assert!(matches!(start(&[other], &observed)[0], Start::Conflict(..)));
    }

    #[test]
    fn stop_named_unnamed_and_unknown() {
        let mut compose = server(spec("z"), "running");
        compose.managed_by_cli = false;
        let observed = [server(spec("a"), "running"), compose];
        assert_eq!(stop(None, &observed), [Stop::Remove(observed[0].clone())]);
        assert_eq!(stop(None, &[]), [Stop::Nothing]);
        let targets = [
            Target::Server(spec("a")),
            Target::Server(spec("q")),
            Target::UnknownNickname {
                nickname: "n".into(),
                spec: spec("r"),
            },
            Target::Server(spec("z")),
        ];
        assert_eq!(
            stop(Some(&targets), &observed),
            [
                Stop::Remove(observed[0].clone()),
                Stop::NotRunning(spec("q")),
                Stop::UnknownNickname("n".into(), spec("r")),
                Stop::Remove(observed[1].clone()),
            ]
        );
    }

    #[test]
    fn condrestart_splits_running_from_idle() {
        let observed = [server(spec("a"), "running"), server(spec("b"), "exited")];
        let targets = [Target::Server(spec("a")), Target::Server(spec("b"))];
        let (running, idle) = running_targets(&targets, &observed);
        assert_eq!(running, [observed[0].clone()]);
        assert_eq!(idle, [spec("b")]);
    }

    fn named(specs: &[ServerSpec]) -> Vec<Target> {
        specs.iter().cloned().map(Target::Server).collect()
    }

    fn change(plan: Plan) -> Change {
        match plan {
            Plan::Change(c) => c,
            other => panic!("not a change: {other:?}"),
        }
    }

    /// What runs after a plan is carried out, every step succeeding.
    fn carry_out(plan: &Plan, observed: &[Server]) -> Vec<Server> {
        let Plan::Change(c) = plan else {
            return observed.to_vec();
        };
        let mut now = after(observed, &c.stops);
        for step in &c.starts {
            match step {
                Start::Create(spec) => now.push(server(spec.clone(), "running")),
                Start::Replace(old, spec) => {
                    now.retain(|s| s.id != old.id);
                    now.push(server(spec.clone(), "running"));
                }
                Start::Running(_) | Start::Conflict(..) => {}
            }
        }
        now
    }

    #[test]
    fn start_makes_the_defaults_or_the_named() {
        let observed = [server(spec("a"), "running")];
        let c = change(action(
            Action::Start,
            None,
            &[spec("a"), spec("b")],
            &observed,
        ));
        assert_eq!(c.stops, []);
        assert_eq!(
            c.starts,
            [
                Start::Running(observed[0].clone()),
                Start::Create(spec("b"))
            ]
        );
        let c = change(action(
            Action::Start,
            Some(&named(&[spec("c")])),
            &[spec("a")],
            &observed,
        ));
        assert_eq!(c.starts, [Start::Create(spec("c"))]);
        assert!(!c.sweep);
    }

    #[test]
    fn stop_of_everything_sweeps_the_leftovers() {
        let observed = [server(spec("a"), "running")];
        let c = change(action(Action::Stop, None, &[spec("b")], &observed));
        assert_eq!(c.stops, [Stop::Remove(observed[0].clone())]);
        assert!(c.sweep && c.starts.is_empty());
        let c = change(action(
            Action::Stop,
            Some(&named(&[spec("a")])),
            &[],
            &observed,
        ));
        assert_eq!(c.stops, [Stop::Remove(observed[0].clone())]);
        assert!(!c.sweep && c.starts.is_empty());
    }

    #[test]
    fn restart_makes_again_what_runs_else_the_defaults() {
        let mut compose = server(spec("z"), "running");
        compose.managed_by_cli = false;
        let observed = [server(spec("a"), "running"), compose.clone()];
        let c = change(action(Action::Restart, None, &[spec("d")], &observed));
        assert_eq!(c.stops, [Stop::Remove(observed[0].clone())]);
        assert_eq!(c.starts, [Start::Create(spec("a"))]);
        // Nothing of the CLI's runs: the defaults.
        let c = change(action(Action::Restart, None, &[spec("d")], &[compose]));
        assert_eq!(c.stops, [Stop::Nothing]);
        assert_eq!(c.starts, [Start::Create(spec("d"))]);
        // Named: those, whether they ran or not.
        let c = change(action(
            Action::Restart,
            Some(&named(&[spec("a"), spec("q")])),
            &[spec("d")],
            &observed,
        ));
        assert_eq!(
            c.stops,
            [
                Stop::Remove(observed[0].clone()),
                Stop::NotRunning(spec("q"))
            ]
        );
        assert_eq!(
            c.starts,
            [Start::Create(spec("a")), Start::Create(spec("q"))]
        );
    }

    #[test]
    fn condrestart_restarts_only_what_runs() {
        assert_eq!(
            action(Action::CondRestart, None, &[spec("d")], &[]),
            Plan::NothingToRestart
        );
        let observed = [server(spec("a"), "running"), server(spec("b"), "exited")];
        let c = change(action(Action::CondRestart, None, &[spec("d")], &observed));
        assert_eq!(
            c.stops,
            [
                Stop::Remove(observed[0].clone()),
                Stop::Remove(observed[1].clone())
            ]
        );
        assert_eq!(
            c.starts,
            [Start::Create(spec("a")), Start::Create(spec("b"))]
        );
        let c = change(action(
            Action::CondRestart,
            Some(&named(&[spec("a"), spec("b"), spec("q")])),
            &[],
            &observed,
        ));
        assert_eq!(c.idle, [spec("b"), spec("q")]);
        assert_eq!(c.stops, [Stop::Remove(observed[0].clone())]);
        // The exited b is not stopped, and a is made anew.
        assert_eq!(c.starts, [Start::Create(spec("a"))]);
    }

    #[test]
    fn force_reload_stops_everything_and_starts_the_wanted() {
        let observed = [server(spec("a"), "running")];
        let c = change(action(Action::ForceReload, None, &[spec("d")], &observed));
        assert_eq!(c.stops, [Stop::Remove(observed[0].clone())]);
        assert_eq!(c.starts, [Start::Create(spec("d"))]);
        let c = change(action(
            Action::ForceReload,
            Some(&named(&[spec("e")])),
            &[spec("d")],
            &observed,
        ));
        assert_eq!(c.stops, [Stop::Remove(observed[0].clone())]);
        assert_eq!(c.starts, [Start::Create(spec("e"))]);
    }

    #[test]
    fn reload_is_not_implemented() {
        assert_eq!(action(Action::Reload, None, &[], &[]), Plan::Unimplemented);
    }

    #[test]
    fn status_codes() {
        let none = status(None, &[]);
        assert_eq!(none.missing, ["No managed stap-server is running"]);
        assert_eq!(none.exit.code(), 3);
        let running = [server(spec("a"), "running")];
        assert_eq!(status(None, &running).exit.code(), 0);
        assert_eq!(status(None, &running).shown, running);
        let dead = [server(spec("a"), "running"), server(spec("b"), "exited")];
        assert_eq!(status(None, &dead).exit, Exit::Dead);
        assert_eq!(status(None, &dead).exit.code(), 1);
        // A named server that does not exist wins over a dead one.
        let targets = [
            Target::Server(spec("b")),
            Target::Server(spec("q")),
            Target::UnknownNickname {
                nickname: "n".into(),
                spec: spec("r"),
            },
        ];
        let s = status(Some(&targets), &dead);
        assert_eq!(s.shown, [dead[1].clone()]);
        assert_eq!(s.exit.code(), 3);
        assert_eq!(s.missing.len(), 2);
        assert!(s.missing[0].contains("is not running"), "{:?}", s.missing);
        assert_eq!(s.missing[1], "No configuration found for the nickname 'n'");
        let s = status(Some(&named(&[spec("a")])), &dead);
        assert_eq!((s.shown.len(), s.exit), (1, Exit::Success));
    }

    /// README 6.2: the default service through start, restart, condrestart, force-reload,
    /// stop and condrestart, each followed by status.
    #[test]
    fn the_readme_test_sequence() {
        let defaults = [spec("6.1.0-56-amd64")];
        let mut now: Vec<Server> = vec![];
        let mut codes = vec![];
        for act in [
            Action::Start,
            Action::Restart,
            Action::CondRestart,
            Action::ForceReload,
            Action::Stop,
            Action::CondRestart,
        ] {
            let plan = action(act, None, &defaults, &now);
            if act == Action::Stop {
                assert!(matches!(&plan, Plan::Change(c) if c.starts.is_empty()));
            }
            now = carry_out(&plan, &now);
            let Plan::Status(s) = action(Action::Status, None, &defaults, &now) else {
                panic!("status is a status");
            };
            codes.push(s.exit.code());
            assert_eq!(
                now.iter()
                    .map(|s| s.spec.release.as_str())
                    .collect::<Vec<_>>(),
                if s.exit == Exit::Success {
                    vec!["6.1.0-56-amd64"]
                } else {
                    vec![]
                }
            );
        }
        // No server runs at the end.
        assert_eq!(codes, [0, 0, 0, 0, 3, 3]);
        assert_eq!(
            action(Action::CondRestart, None, &defaults, &now),
            Plan::NothingToRestart
        );
    }
}

//! The classic action semantics as pure functions of what is wanted and what runs.

use std::collections::HashSet;

use crate::body::container_name;
use crate::spec::{Server, ServerSpec, Target};

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
                let found: Vec<&Server> = observed
                    .iter()
                    .filter(|s| spec.designates(&s.spec))
                    .collect();
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
}

//! Option resolution on arbitrary command lines and server files: the command-line parser,
//! then the resolution of the options against configured and running servers, then the
//! pure steps that follow it (plans, names, labels, stap-serverd arguments, report lines).
//! Beyond "no panic, no hang": every resolved server survives the trip through its labels
//! (status, stop and restart read servers back from them), has a name the engine accepts,
//! and has limits the engine enforces (none of them zero, which means unlimited, but the CPU,
//! which has no cap unless one is set).

#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use stap_server::cli::{self, Invocation};
use stap_server::config::{self, GlobalConfig};
use stap_server::buildtree::BuildTree;
use stap_server::spec::{self, Host, Server, Target};
use stap_server::{body, labels, plan, report};

fn host() -> Host {
    Host {
        arch: "x86_64".into(),
        release: "6.1.0-56-amd64".into(),
        installed: vec!["6.1.0-56-amd64".into(), "6.12.38+deb13-amd64".into()],
        trees: Default::default(),
    }
}

/// A running server, as the engine would report one that the manager made.
fn running(spec: spec::ServerSpec, pid: u32) -> Server {
    Server {
        name: body::container_name(&spec),
        kernel_release: spec.release.clone(),
        cert_volume: body::cert_volume(&spec.tenant, &spec.user),
        place: None,
        spec,
        id: format!("id{pid}"),
        state: "running".into(),
        pid: Some(pid),
        host_port: Some(5600),
        managed_by_cli: true,
    }
}

fn check_spec(spec: &spec::ServerSpec) {
    let mut l = labels::to_labels(spec, &spec.release);
    l.extend(labels::ownership(&spec.tenant, "cli"));
    assert_eq!(
        labels::from_labels(&l).as_ref(),
        Some(spec),
        "a server reads back from its labels"
    );
    let name = body::container_name(spec);
    let mut chars = name.chars();
    assert!(
        chars.next().is_some_and(|c| c.is_ascii_alphanumeric()),
        "{name}"
    );
    assert!(
        chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
        "container name {name:?}"
    );
    assert!(
        spec.limits.memory > 0 && spec.limits.nano_cpus >= 0,
        "{:?}",
        spec.limits
    );
    assert!(
        spec.limits.pids > 0 && spec.limits.tmp_size > 0,
        "{:?}",
        spec.limits
    );
    let tree = BuildTree {
        kernel_release: spec.release.clone(),
        build: PathBuf::from(&spec.release),
        source: None,
        modules_dir: None,
        mounts: vec![],
        debuginfo: vec![],
        arch: Some(spec.arch.clone()),
        compiler: None,
        cross_compile: None,
    };
    let _ = body::server_args(spec, &tree);
    let _ = report::spec_options(spec);
}

// The input is the arguments, separated by NUL bytes, then optionally `0xFF 0xFF` and the
// text of a server file (a form that seeds write easily: `start\0-r\0R\xff\xffPORT=1`).
fuzz_target!(|input: &[u8]| {
    let split = input.windows(2).position(|w| w == [0xff, 0xff]);
    let (args, server_file) = match split {
        Some(at) => (&input[..at], &input[at + 2..]),
        None => (input, &[][..]),
    };
    let args = args
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let argv = std::iter::once("stap-server".to_string()).chain(args);
    let Ok(Invocation::Service { opts, .. }) = cli::parse(argv) else {
        return;
    };
    let global = GlobalConfig::default();
    let configured: Vec<(PathBuf, config::ServerConfig)> =
        config::parse_server(server_file, Path::new("/etc/stap-server/conf.d/f.conf"))
            .into_iter()
            .map(|c| (PathBuf::from("/etc/stap-server/conf.d/f.conf"), c))
            .collect();
    let host = host();
    let overrides = spec::Overrides::default();
    let mut observed: Vec<Server> = spec::configured_specs(&configured, &global, &host, &overrides)
        .into_iter()
        .zip(100..)
        .map(|(s, pid)| running(s, pid))
        .collect();
    observed.extend(
        spec::default_specs(&global, &host, &spec::Lists::default(), &overrides)
            .into_iter()
            .map(|s| running(s, 42)),
    );

    let Ok(request) = spec::resolve(&opts, &global, &configured, &observed, &host) else {
        return;
    };
    let mut specs = spec::configured_specs(&configured, &global, &host, &request.overrides);
    specs.extend(spec::default_specs(
        &global,
        &host,
        &request.lists,
        &request.overrides,
    ));
    if let Some(targets) = &request.targets {
        specs.extend(plan::target_specs(targets));
        for target in targets {
            if let Target::UnknownNickname { nickname, spec } = target {
                assert_eq!(spec.nickname.as_ref(), Some(nickname));
            }
        }
    }
    for spec in &specs {
        check_spec(spec);
    }
    let _ = plan::start(&specs, &observed);
    let _ = plan::stop(request.targets.as_deref(), &observed);
    for server in &observed {
        let _ = report::status_line(server);
    }
});

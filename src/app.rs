//! The actions: settings loaded, options resolved, the plan decided ([`plan`]) and carried
//! out ([`Executor`]), the outcome reported. Each action is short glue over the other modules.

use std::fs;
use std::path::Path;

use tokio::signal::unix::{SignalKind, signal};

use crate::advertise::Publisher;
use crate::announce::{self, Avahi};
use crate::body;
use crate::cli::{Action, Invocation, Opt};
use crate::engine::Engine;
use crate::error::{Error, Exit, Result};
use crate::execute::Executor;
use crate::host;
use crate::plan::{self, Plan};
use crate::report;
use crate::settings::{self, load_settings};
use crate::spec;
use crate::warm::Warmth;
use crate::{image, lock, status_json};

pub use crate::execute::Cleanup;

/// Whether the invocation handles SIGINT and SIGTERM itself (`announce` following events
/// ends with a last reconciliation); for the others the caller interrupts and cleans up.
pub fn handles_signals(invocation: &Invocation) -> bool {
    matches!(invocation, Invocation::Announce { once: false, .. })
}

/// Runs one invocation; returns how it ended.
pub async fn run(invocation: Invocation, cleanup: Cleanup) -> Result<Exit> {
    match invocation {
        Invocation::Service { action, opts, json } => service(action, &opts, json, cleanup).await,
        Invocation::ImageBuild { registry, opts } => {
            let settings = load_settings(&opts)?;
            let g = &settings.global;
            let engine = Engine::connect_to(g.engine, g.node_engine_port).await?;
            let (name, target) = settings::image_to_build(&opts, &settings)?;
            let _lock = lock::Lock::wait(Path::new(lock::HOST_DIR), "image").await?;
            image::build(&engine, &name, target, registry).await?;
            Ok(Exit::Success)
        }
        Invocation::Announce { once, opts } => {
            let settings = load_settings(&opts)?;
            let tenant = settings.tenant();
            let dir = &settings.global.avahi_services_path;
            if let Some(warning) = Avahi::probe(dir).warning(dir) {
                eprintln!("stap-server: {warning}");
            }
            let publisher = Publisher::new(dir.clone());
            let engine = Engine::connect().await?;
            if once {
                announce::once(&engine, &tenant, &publisher).await?;
            } else {
                let mut term = signal(SignalKind::terminate())
                    .map_err(|e| Error::Invalid(format!("cannot catch SIGTERM: {e}")))?;
                tokio::select! {
                    r = announce::follow(&engine, &tenant, &publisher) => r?,
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                // Servers stopped along with this announcer (docker-compose down stops them
                // first) must not stay advertised: one last reconciliation, then leave.
                announce::once(&engine, &tenant, &publisher).await?;
            }
            Ok(Exit::Success)
        }
        Invocation::Compose {
            output,
            stack: false,
            opts,
        } => compose(&opts, output.as_deref(), cleanup).await,
        Invocation::Compose {
            output,
            stack: true,
            opts,
        } => stack(&opts, output.as_deref(), cleanup).await,
        Invocation::Log(command) => crate::loghold::run(command).await,
    }
}

async fn service(action: Action, opts: &[Opt], json: bool, cleanup: Cleanup) -> Result<Exit> {
    let settings = load_settings(opts)?;
    // Nothing to look at: decided before the engine is reached.
    if action == Action::Reload {
        return Ok(Exit::Unimplemented);
    }
    if let Some(dir) = settings.global.log_file.parent() {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io("cannot create the log directory", dir, e))?;
    }
    let tenant = settings.tenant();
    let (kind, node_port) = (settings.global.engine, settings.global.node_engine_port);
    let engine = match Engine::connect_to(kind, node_port).await {
        Ok(engine) => engine,
        // LSB: the status of a service whose state cannot be known is 4.
        Err(e @ Error::EngineUnreachable { .. }) if action == Action::Status => {
            eprintln!("stap-server: {e}");
            return Ok(Exit::Unknown);
        }
        Err(e) => return Err(e),
    };
    let mut exec = Executor::new(engine, settings, cleanup);
    if action != Action::Status {
        exec.finish_stops().await?;
    }
    let observed = exec.engine.observe(&tenant).await?;
    exec.settings.survey_running(&observed.servers);
    // On a swarm, what the nodes have stands for this host's trees (`-i`, `-r`, `-a`).
    let all = opts.iter().any(|o| matches!(o, Opt::AllReleases));
    if exec.engine.swarm().is_some() && (action.starts() || all) {
        let inventory = survey(&exec.engine, &mut exec.settings).await?;
        for (node, seconds) in &inventory.shipped {
            exec.report.log(&format!(
                "image {} shipped to swarm node {node} in {seconds:.1} s",
                exec.settings.global.default_image()
            ));
        }
        exec.inventory = Some(inventory);
    }
    let s = &exec.settings;
    let request = match spec::resolve(opts, &s.global, &s.configured, &observed.servers, &s.host) {
        Ok(r) => r,
        Err(spec::NoSuchPid(pid)) => {
            println!("No stap-server running as pid {pid}");
            return Ok(Exit::Failed);
        }
    };
    if request.overrides.password && action != Action::Status {
        return Err(Error::Invalid(
            "-P is not supported: stap-serverd would ask for the certificate database password \
             on a terminal, and a server container has none"
                .into(),
        ));
    }
    let defaults = s.defaults(&request);
    let plan = plan::action(
        action,
        request.targets.as_deref(),
        &defaults,
        &observed.servers,
    );
    let change = match plan {
        Plan::Status(status) if json => return Ok(show_status_json(&exec, status).await),
        Plan::Status(status) => return Ok(show_status(&mut exec, status).await),
        Plan::Unimplemented => return Ok(Exit::Unimplemented),
        Plan::NothingToRestart => {
            exec.report.say("No managed stap-server is running");
            exec.report.outcome("condrestart", Ok(()));
            return Ok(Exit::Success);
        }
        Plan::Change(change) => change,
    };
    exec.idle(&change.idle);
    let mut ok = exec.stop(&change.stops).await;
    if change.sweep {
        exec.remove_leftovers(&observed.helpers).await?;
    }
    ok &= exec.start(&change.starts).await?;
    exec.announce_and_hand_over(&observed.servers).await;
    Ok(Exit::of(ok))
}

/// `status`: classic lines, each server's with its certificate serial.
async fn show_status(exec: &mut Executor, status: plan::Status) -> Exit {
    for line in status.missing {
        exec.report.print(line);
    }
    let mut serials = announce::Serials::default();
    for server in &status.shown {
        exec.report.print(report::status_line(server));
        if let Ok(serial) = serials.of(&exec.engine, server).await {
            exec.report.print(format!("  certificate serial {serial}"));
        }
        if let Some(warmth) = Warmth::of(&exec.engine, server).await {
            exec.report.print(format!("  warm-up {warmth}"));
        }
    }
    status.exit
}

/// `status --json`: the servers as a JSON array (`[]` when none), what classic says of the
/// missing on standard error; the exit status is plain `status`'s.
async fn show_status_json(exec: &Executor, status: plan::Status) -> Exit {
    for line in status.missing {
        eprintln!("{line}");
    }
    let facts = status_json::gather(&exec.engine, &status.shown).await;
    println!("{}", status_json::render(&status.shown, &facts));
    status.exit
}

/// `compose`: the servers that `start` would make, written as a compose file (to `output`,
/// else standard output). Their image, network and certificate volume are made first, so the
/// file comes up as it is, and a server keeps its certificate when it moves to compose.
async fn compose(opts: &[Opt], output: Option<&Path>, cleanup: Cleanup) -> Result<Exit> {
    let mut settings = load_settings(opts)?;
    if settings.global.engine == crate::config::EngineKind::Swarm {
        return Err(Error::Invalid(
            "compose writes the servers of one engine; with ENGINE=swarm, `compose --stack` \
             writes them as a stack file for docker stack deploy"
                .into(),
        ));
    }
    let engine = Engine::connect().await?;
    let observed = engine.servers(&settings.tenant()).await?;
    settings.survey_running(&observed);
    let wanted = wanted(opts, &settings, &observed)?;
    let prepared = host::prepare_all(
        wanted.iter().map(|s| (s, None)),
        &settings.global.modules_path,
        &settings.host.arch,
        false,
    )?;
    let mut exec = Executor::new(engine, settings, cleanup);
    exec.ensure_shared(&prepared).await?;
    let services: Vec<crate::compose::Service> = prepared
        .iter()
        .map(|p| crate::compose::Service {
            name: p.name.clone(),
            body: body::container_body(&p.spec, &p.tree, p.who, "compose", None, &p.host_name),
        })
        .collect();
    write_document(&crate::compose::document(&services), output)?;
    Ok(Exit::Success)
}

/// A swarm's nodes and their trees, which then stand for this host's (`-i`, `-r`, `-a`): the
/// image made on the manager's engine if missing, and shipped to the nodes by the survey.
async fn survey(
    engine: &Engine,
    settings: &mut settings::Settings,
) -> Result<crate::swarm::Inventory> {
    let image = settings.global.default_image();
    image::ensure(engine, &image).await?;
    let inventory = crate::swarm::survey(engine, &image, &settings.tenant()).await?;
    settings.host.installed = inventory.installed();
    settings.host.trees = inventory.arches();
    Ok(inventory)
}

/// The servers `start` would make of `opts`, for a file that describes them.
fn wanted(
    opts: &[Opt],
    settings: &settings::Settings,
    observed: &[crate::spec::Server],
) -> Result<Vec<crate::spec::ServerSpec>> {
    let request = spec::resolve(
        opts,
        &settings.global,
        &settings.configured,
        observed,
        &settings.host,
    )
    .map_err(|spec::NoSuchPid(pid)| {
        Error::Invalid(format!("No stap-server running as pid {pid}"))
    })?;
    Ok(plan::wanted(
        request.targets.as_deref(),
        &settings.defaults(&request),
    ))
}

/// A compose or stack document, to `output` (whole or not at all) or standard output.
fn write_document(document: &serde_json::Value, output: Option<&Path>) -> Result<()> {
    let text = serde_json::to_string_pretty(document).expect("a document always serializes") + "\n";
    match output {
        None => print!("{text}"),
        Some(path) => {
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, &text)
                .and_then(|()| fs::rename(&tmp, path))
                .map_err(|e| Error::io("cannot write the compose file", path, e))?;
        }
    }
    Ok(())
}

/// `compose --stack`: the servers `start` would make on the swarm, written as a stack file
/// for `docker stack deploy`, from the same service specs. As for `compose`, the image goes to
/// the nodes and each node's certificate is made first, so the stack comes up as it is.
async fn stack(opts: &[Opt], output: Option<&Path>, cleanup: Cleanup) -> Result<Exit> {
    let mut settings = load_settings(opts)?;
    let g = &settings.global;
    if g.engine != crate::config::EngineKind::Swarm {
        return Err(Error::Invalid(
            "compose --stack writes the servers of a swarm: set ENGINE=swarm in the global file \
             and point DOCKER_HOST at a manager"
                .into(),
        ));
    }
    let engine = Engine::connect_to(g.engine, g.node_engine_port).await?;
    let tenant = settings.tenant();
    let observed = engine.servers(&tenant).await?;
    settings.survey_running(&observed);
    let inventory = survey(&engine, &mut settings).await?;
    let wanted = wanted(opts, &settings, &observed)?;
    let prepared = host::prepare_on_swarm(
        wanted.iter().map(|s| (s, None)),
        &inventory,
        &settings.host.arch,
    )?;
    let mut exec = Executor::new(engine, settings, cleanup);
    exec.ensure_shared(&prepared).await?;
    let specs: Vec<bollard::models::ServiceSpec> = prepared
        .iter()
        .filter_map(|p| {
            let node = p.node.as_ref()?;
            let body = body::container_body(&p.spec, &p.tree, p.who, "compose", None, &p.host_name);
            Some(crate::engine::swarm::service_spec(
                &p.name,
                body::on_swarm(body, p.who, &node.id),
            ))
        })
        .collect();
    for gap in crate::compose::stack_gaps(&specs) {
        eprintln!("stap-server: the stack file leaves out {gap}");
    }
    write_document(&crate::compose::stack_document(&specs), output)?;
    Ok(Exit::Success)
}

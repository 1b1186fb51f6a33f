//! Host preparation of servers to be made: the user's identity, free ports, the build tree,
//! and the log file and `--ssl` directory handed over to the server's user. All of it is
//! checked before anything is created.

use std::fs;
use std::net::TcpListener;
use std::path::Path;

use crate::arch;
use crate::body::Identity;
use crate::buildtree::{self, BuildTree};
use crate::engine::swarm::NodeInfo;
use crate::error::{Error, Result};
use crate::report;
use crate::spec::{Server, ServerSpec};
use crate::swarm::Inventory;

/// What a server needs from the host, checked before anything is created.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub spec: ServerSpec,
    /// Its container's name.
    pub name: String,
    /// The build tree mounted into the container.
    pub tree: BuildTree,
    /// The uid and gid the server runs as.
    pub who: Identity,
    /// A host port allotted from the tenant's `PORT_RANGE` (for servers with no `PORT`).
    pub host_port: Option<u16>,
    /// A stopped container the plan found for this server, to be removed first.
    pub replaces: Option<Server>,
    /// This host's name, which the server's container and certificate carry (on a swarm,
    /// the node's).
    pub host_name: String,
    /// On a swarm, the node the server goes to.
    pub node: Option<NodeInfo>,
}

/// Host-side checks of every server to be made (each with the stopped container it
/// replaces, if any); every problem is reported, and nothing is made if there is one.
/// `check_port`: whether a pinned port must be free now (not so for a compose file).
pub fn prepare_all<'a>(
    specs: impl Iterator<Item = (&'a ServerSpec, Option<Server>)>,
    modules_path: &Path,
    host_arch: &str,
    check_port: bool,
) -> Result<Vec<Prepared>> {
    every(specs.map(|(spec, replaces)| {
        prepare(spec, modules_path, host_arch, check_port).map(|p| Prepared { replaces, ..p })
    }))
}

/// All the values, or every problem at once.
fn every<T>(results: impl Iterator<Item = Result<T>>) -> Result<Vec<T>> {
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for r in results {
        match r {
            Ok(v) => all.push(v),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(Error::Invalid(problems.join("\n")));
    }
    Ok(all)
}

/// Host-side checks of one server to be made.
fn prepare(
    spec: &ServerSpec,
    modules_path: &Path,
    host_arch: &str,
    check_port: bool,
) -> Result<Prepared> {
    let invalid = |e: &dyn std::fmt::Display| Error::Invalid(e.to_string());
    let cross = arch::cross(&spec.arch, host_arch).map_err(|e| invalid(&e))?;
    let who = identity(&spec.user)?;
    let mut tree = buildtree::resolve(&spec.release, modules_path).map_err(|e| invalid(&e))?;
    arch::check_tree(spec, &tree, host_arch).map_err(|e| invalid(&e))?;
    tree.cross_compile = cross.map(|t| t.cross_compile());
    if let Some(port) = spec.port.filter(|_| check_port) {
        port_free(port)?;
    }
    for path in spec.includes.iter().chain(&spec.runtime) {
        if !Path::new(path).is_dir() {
            return Err(Error::Invalid(format!("{path} is not a directory")));
        }
    }
    // The server appends to its log through a bind mount: the file must exist and be
    // the server user's.
    let log = &spec.log;
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io("cannot create the log file", log, e))?;
    nix::unistd::chown(log.as_path(), Some(who.uid.into()), Some(who.gid.into()))
        .map_err(|e| Error::io("cannot hand over the log file", log, e.into()))?;
    if let Some(ssl) = &spec.ssl {
        fs::create_dir_all(ssl).map_err(|e| Error::io("cannot create", ssl, e))?;
        nix::unistd::chown(ssl.as_path(), Some(who.uid.into()), Some(who.gid.into()))
            .map_err(|e| Error::io("cannot hand over", ssl, e.into()))?;
    }
    Ok(Prepared {
        name: crate::body::container_name(spec),
        spec: spec.clone(),
        tree,
        who,
        host_port: None,
        replaces: None,
        host_name: host_name(),
        node: None,
    })
}

/// The checks of [`prepare_all`] for servers on a swarm: each goes to the node that has its
/// tree ([`Inventory::place`]), checked as that node reported it. Options that name paths
/// of this host (`-I`, `-R`, `--ssl`) are refused: a node has none of them.
pub fn prepare_on_swarm<'a>(
    specs: impl Iterator<Item = (&'a ServerSpec, Option<Server>)>,
    inventory: &Inventory,
    host_arch: &str,
) -> Result<Vec<Prepared>> {
    every(specs.map(|(spec, replaces)| -> Result<Prepared> {
        let invalid = |e: &dyn std::fmt::Display| Error::Invalid(e.to_string());
        if let Some(path) = spec
            .includes
            .iter()
            .chain(&spec.runtime)
            .map(String::as_str)
            .chain(spec.ssl.as_deref().and_then(Path::to_str))
            .next()
        {
            return Err(Error::Invalid(format!(
                "{path}: -I, -R and --ssl name directories of this host, which the nodes \
                 of a swarm do not have"
            )));
        }
        let cross = arch::cross(&spec.arch, host_arch).map_err(|e| invalid(&e))?;
        let who = identity(&spec.user)?;
        let (node, mut tree) = inventory.place(&spec.release).map_err(|e| invalid(&e))?;
        arch::check_tree(spec, &tree, host_arch).map_err(|e| invalid(&e))?;
        tree.cross_compile = cross.map(|t| t.cross_compile());
        Ok(Prepared {
            name: crate::body::container_name(spec),
            spec: spec.clone(),
            tree,
            who,
            host_port: None,
            replaces,
            host_name: node.hostname.clone(),
            node: Some(node),
        })
    }))
}

/// The host's uid and gid of `user`; root and unknown users are refused.
pub fn identity(user: &str) -> Result<Identity> {
    let found = nix::unistd::User::from_name(user)
        .map_err(|e| Error::Invalid(format!("cannot look up user {user}: {e}")))?;
    let Some(u) = found else {
        return Err(Error::Invalid(format!(
            "unknown user '{user}': create it (useradd --system {user}) or choose another with -u"
        )));
    };
    if u.uid.is_root() {
        return Err(Error::Invalid(format!(
            "refusing to run a server as root (user '{user}' has uid 0): choose an unprivileged user with -u"
        )));
    }
    Ok(Identity {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    })
}

/// Gives each server with no pinned port the lowest port of `range` that no server of the
/// tenant has, that no other server here was given, and that is free on the host.
pub fn allot_ports(prepared: &mut [Prepared], range: (u16, u16), taken: &[u16]) -> Result<()> {
    let mut used: std::collections::BTreeSet<u16> = taken.iter().copied().collect();
    used.extend(prepared.iter().filter_map(|p| p.spec.port));
    let mut next = range.0;
    for p in prepared.iter_mut().filter(|p| p.spec.port.is_none()) {
        let port = (next..=range.1)
            .find(|port| !used.contains(port) && port_free(*port).is_ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "no free port left in PORT_RANGE {}-{} for stap-server {}",
                    range.0,
                    range.1,
                    report::spec_options(&p.spec)
                ))
            })?;
        used.insert(port);
        next = port;
        p.host_port = Some(port);
    }
    Ok(())
}

/// A pinned port must be free on the host before anything is created.
fn port_free(port: u16) -> Result<()> {
    TcpListener::bind(("0.0.0.0", port))
        .map(drop)
        .map_err(|e| Error::Invalid(format!("port {port} is already in use on this host ({e})")))
}

/// This host's name, as `hostname` prints it; empty when it cannot be read.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The log line that says whether a server for `tree` sees kernel debuginfo.
pub fn debuginfo_note(tree: &BuildTree) -> String {
    let release = &tree.kernel_release;
    if tree.debuginfo.is_empty() {
        format!(
            "release {release}: no kernel debuginfo on this host; DWARF probes \
             (kernel.function, module(...).function, most syscall.*) cannot resolve unless \
             linux-image-{release}-dbg is installed or DEBUGINFOD_URLS is set"
        )
    } else {
        let paths: Vec<String> = tree
            .debuginfo
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!("release {release}: kernel debuginfo {}", paths.join(", "))
    }
}

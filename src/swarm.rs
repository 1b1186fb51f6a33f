//! What a swarm's nodes have: a survey of every ready node's kernel build trees, made with no
//! login to any node. A global job of the server image (shipped to each node first) runs on
//! every node, with the node's root mounted read-only and entered with `chroot`, and prints
//! what [`crate::buildtree`] would read of each `/lib/modules/R/build` there: the resolved
//! tree, its source, the directories its links lead to (closed over), its configuration's
//! architecture lines, its compiler, the debuginfo present. The manager reads the job's output
//! through the swarm's API and removes the job. [`Inventory`] then answers `-i` (every release
//! of every node) and where a release's server goes (the first ready node, by hostname, that
//! has its tree).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use bollard::models::{
    Mount, MountBindOptions, MountType, ServiceSpec, ServiceSpecMode, TaskSpec,
    TaskSpecContainerSpec, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use futures_util::future::join_all;

use crate::buildtree::{self, BuildTree, Reported};
use crate::engine::swarm::NodeInfo;
use crate::engine::{Engine, Op};
use crate::error::{Error, Result};
use crate::labels;

/// Where a node's root is mounted in the survey's container.
const HOST_ROOT: &str = "/host";

/// How long the survey may take on every node together.
const SURVEY_LIMIT: Duration = Duration::from_secs(180);

/// The age past which a survey job is stale whoever made it: well beyond [`SURVEY_LIMIT`],
/// so that only a survey whose maker died (on another host, or with its PID reused) is left
/// that long.
const SURVEY_STALE: Duration = Duration::from_secs(3600);

/// The survey, run by the node's own bash inside `chroot /host`. Each line:
/// `stap-server-tree NODE RELEASE KEY VALUE`, tab-separated.
const SURVEY: &str = r#"set -u
say() { printf 'stap-server-tree\t%s\t%s\t%s\t%s\n' "$NODE" "$1" "$2" "$3"; }
for link in /lib/modules/*/build; do
  release=${link%/build}
  release=${release##*/}
  build=$(readlink -e "$link") || continue
  [ -f "$build/Makefile" ] || continue
  say "$release" build "$build"
  includes=$(sed -n 's|^include \(/[^ ]*\)$|\1|p' "$build/Makefile" |
    while read -r f; do f=$(readlink -e "$f") && dirname "$f"; done)
  source=$(readlink -e "/lib/modules/$release/source" || readlink -e "$build/source" ||
    printf '%s\n' $includes | head -1)
  if [ -n "$source" ] && [ -d "$source" ]; then say "$release" source "$source"; else source=; fi
  queue=("$build" ${source:+"$source"} $includes)
  seen=()
  while [ ${#queue[@]} -gt 0 ]; do
    root=${queue[0]}
    queue=("${queue[@]:1}")
    inside=
    for s in "${seen[@]}"; do case "$root/" in "$s"/*) inside=1 ;; esac; done
    [ -z "$inside" ] || continue
    seen+=("$root")
    say "$release" root "$root"
    while IFS= read -r l; do
      t=$(readlink -e "$l") || continue
      case "$t/" in "$root"/*) ;; *) queue+=("$t") ;; esac
    done < <(find "$root" -type l 2>/dev/null)
  done
  for f in include/config/auto.conf .config; do
    if [ -f "$build/$f" ]; then
      grep -E '^CONFIG_(X86_64|X86_32|ARM64|ARM|PPC|S390|RISCV|SPARC64|MIPS|LOONGARCH)=y$' \
        "$build/$f" | while read -r c; do say "$release" config "$c"; done
      break
    fi
  done
  if [ -f "$build/.kernelvariables" ]; then
    grep -E '^[[:space:]]*CC[[:space:]]*=' "$build/.kernelvariables" |
      while read -r c; do say "$release" variables "$c"; done
  fi
  for d in "/usr/lib/debug/lib/modules/$release" "/usr/lib/debug/boot/vmlinux-$release" \
    "/usr/lib/debug/vmlinux-$release" "/boot/vmlinux-$release" "/boot/System.map-$release"; do
    if [ -e "$d" ]; then say "$release" debuginfo "$d"; fi
  done
done
echo "stap-server-survey-done $NODE"
"#;

/// The nodes of a swarm and the trees each has.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Every node, by hostname.
    pub nodes: Vec<NodeInfo>,
    /// By node id, by release: what the survey reported.
    pub trees: BTreeMap<String, BTreeMap<String, Reported>>,
    /// The nodes the image was shipped to, with the seconds it took.
    pub shipped: Vec<(String, f64)>,
}

impl Inventory {
    /// Reads a survey's output of `nodes`.
    pub fn parse(nodes: Vec<NodeInfo>, output: &str) -> Inventory {
        let mut trees: BTreeMap<String, BTreeMap<String, Reported>> = BTreeMap::new();
        for line in output.lines() {
            let mut f = line.trim_end_matches('\r').splitn(5, '\t');
            let (Some("stap-server-tree"), Some(node), Some(release), Some(key), Some(value)) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            let r = trees
                .entry(node.into())
                .or_default()
                .entry(release.into())
                .or_default();
            match key {
                "build" => r.build = value.into(),
                "source" => r.source = Some(value.into()),
                "root" => r.roots.push(value.into()),
                "config" => r.config.push_str(&format!("{value}\n")),
                "variables" => r.variables.push_str(&format!("{value}\n")),
                "debuginfo" => r.debuginfo.push(value.into()),
                _ => {}
            }
        }
        Inventory {
            nodes,
            trees,
            shipped: Vec::new(),
        }
    }

    /// Nodes a server may be placed on now.
    fn usable(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.state == "ready" && n.active)
    }

    /// Every release some usable node has a tree of, sorted, once each (`-i`).
    pub fn installed(&self) -> Vec<String> {
        let releases: BTreeSet<&String> = self
            .usable()
            .filter_map(|n| self.trees.get(&n.id))
            .flat_map(|t| t.keys())
            .collect();
        releases.into_iter().cloned().collect()
    }

    /// The architecture of each release's tree (the first node's that has it).
    pub fn arches(&self) -> crate::arch::Trees {
        let mut trees = crate::arch::Trees::default();
        for node in self.usable() {
            for (release, r) in self.trees.get(&node.id).into_iter().flatten() {
                if let Some(arch) = crate::arch::arch_of_config(&r.config) {
                    trees.record(release, arch);
                }
            }
        }
        trees
    }

    /// Where the server of `release` goes: the first usable node, by hostname, with its tree,
    /// and that tree as the node has it.
    pub fn place(&self, release: &str) -> std::result::Result<(NodeInfo, BuildTree), String> {
        if release.starts_with('/') {
            return Err(format!(
                "{release}: a build tree named by its path is a path of one machine; on a swarm, \
                 name the release (the directory under /lib/modules of a node)"
            ));
        }
        let modules = Path::new("/lib/modules");
        for node in self.usable() {
            if let Some(r) = self.trees.get(&node.id).and_then(|t| t.get(release)) {
                let tree = buildtree::from_report(release, modules, r)
                    .map_err(|e| format!("on node {}: {e}", node.hostname))?;
                return Ok((node.clone(), tree));
            }
        }
        Err(format!(
            "no ready node of the swarm has a kernel build tree for release {release} ({})",
            self.describe()
        ))
    }

    /// Each node with its state and releases, for messages.
    pub fn describe(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let releases: Vec<&str> = self
                    .trees
                    .get(&n.id)
                    .into_iter()
                    .flat_map(|t| t.keys().map(String::as_str))
                    .collect();
                format!(
                    "{} {}: {}",
                    n.hostname,
                    n.state,
                    if releases.is_empty() {
                        "no trees".to_string()
                    } else {
                        releases.join(", ")
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Who made a survey job, and when: this host's name, this process, now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maker {
    pub host: String,
    pub pid: u32,
    /// Seconds since the epoch.
    pub started: u64,
}

impl Maker {
    fn here() -> Maker {
        Maker {
            host: crate::host::host_name(),
            pid: std::process::id(),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        }
    }
}

/// Whether a survey job with `labels` is a leftover to remove (pure): one made on `here.host`
/// by a process that no longer runs (`alive` says), or, whoever made it, one older than
/// [`SURVEY_STALE`] at `here.started`. A service without a survey's labels is never one.
pub fn stale_survey(
    labels: &std::collections::HashMap<String, String>,
    here: &Maker,
    alive: impl Fn(u32) -> bool,
) -> bool {
    let Some(pid) = labels
        .get(labels::SURVEY_PID)
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    let host = labels.get(labels::SURVEY_HOST).map(String::as_str);
    let dead_here = !here.host.is_empty() && host == Some(here.host.as_str()) && !alive(pid);
    let old = labels
        .get(labels::SURVEY_STARTED)
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|s| here.started.saturating_sub(s) > SURVEY_STALE.as_secs());
    dead_here || old
}

/// Removes the tenant's survey jobs that [`stale_survey`] calls leftovers (a manager killed
/// mid-survey leaves its job behind). Only services with our ownership labels, the tenant's
/// and a survey's labels are looked at. Best effort: a failure is logged, the survey goes on.
async fn remove_stale_surveys(swarm: &crate::engine::swarm::Swarm, tenant: &str, here: &Maker) {
    let mut filter = labels::tenant_labels(tenant);
    filter.push(labels::SURVEY_PID.to_string());
    let services = match swarm
        .services_labelled(filter, Op::List(tenant.into()))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list earlier surveys");
            return;
        }
    };
    let alive = |pid: u32| Path::new("/proc").join(pid.to_string()).exists();
    for service in services {
        let spec = service.spec.unwrap_or_default();
        let labels = spec.labels.unwrap_or_default();
        let (Some(id), true) = (service.id, stale_survey(&labels, here, alive)) else {
            continue;
        };
        let name = spec.name.unwrap_or_default();
        match swarm.remove_service(&id).await {
            Ok(()) => tracing::info!(service = %name, "removed a survey left behind"),
            Err(e) => {
                tracing::warn!(service = %name, error = %e, "cannot remove a survey left behind")
            }
        }
    }
}

/// The global job that surveys every node (pure).
pub fn survey_spec(name: &str, image: &str, tenant: &str, maker: &Maker) -> ServiceSpec {
    let labels: std::collections::HashMap<String, String> =
        labels::ownership(tenant, "cli").into_iter().collect();
    let mut service_labels = labels.clone();
    service_labels.extend([
        (labels::SURVEY_HOST.to_string(), maker.host.clone()),
        (labels::SURVEY_PID.to_string(), maker.pid.to_string()),
        (
            labels::SURVEY_STARTED.to_string(),
            maker.started.to_string(),
        ),
    ]);
    ServiceSpec {
        name: Some(name.into()),
        labels: Some(service_labels),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.into()),
                labels: Some(labels),
                command: Some(vec![
                    "chroot".into(),
                    HOST_ROOT.into(),
                    "/bin/bash".into(),
                    "-c".into(),
                    SURVEY.into(),
                ]),
                env: Some(vec!["NODE={{.Node.ID}}".into()]),
                user: Some("0:0".into()),
                read_only: Some(true),
                mounts: Some(vec![Mount {
                    source: Some("/".into()),
                    target: Some(HOST_ROOT.into()),
                    typ: Some(MountType::BIND),
                    read_only: Some(true),
                    bind_options: Some(MountBindOptions::default()),
                    ..Mount::default()
                }]),
                capability_drop: Some(vec!["ALL".into()]),
                capability_add: Some(vec!["CAP_SYS_CHROOT".into()]),
                ..TaskSpecContainerSpec::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..TaskSpecRestartPolicy::default()
            }),
            ..TaskSpec::default()
        }),
        mode: Some(ServiceSpecMode {
            global_job: Some(Default::default()),
            ..ServiceSpecMode::default()
        }),
        ..ServiceSpec::default()
    }
}

/// Surveys the swarm behind `engine`: ships `image` (built on the manager's engine already)
/// to every ready node that lacks it, runs the survey job on them all, reads what it printed.
pub async fn survey(engine: &Engine, image: &str, tenant: &str) -> Result<Inventory> {
    let swarm = engine
        .swarm()
        .ok_or_else(|| Error::Invalid("a survey of nodes needs ENGINE=swarm".into()))?;
    let nodes = swarm.nodes().await?;
    let usable: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.state == "ready" && n.active)
        .collect();
    let mut shipped = Vec::new();
    for (node, result) in usable
        .iter()
        .zip(join_all(usable.iter().map(|n| swarm.ship_image(n, image))).await)
    {
        if let Some(seconds) = result? {
            shipped.push((node.hostname.clone(), seconds));
        }
    }
    let maker = Maker::here();
    remove_stale_surveys(swarm, tenant, &maker).await;
    let name = format!("stap-server-survey-{}", maker.pid);
    let id = swarm
        .create_service(survey_spec(&name, image, tenant, &maker))
        .await?;
    let ran = async {
        let tasks = swarm.job_done(&id, usable.len(), SURVEY_LIMIT).await?;
        Ok::<_, Error>((tasks, swarm.service_output(&id, None).await))
    }
    .await;
    let _ = swarm.remove_service(&id).await;
    let (tasks, output) = ran?;
    let mut inventory = Inventory::parse(nodes.clone(), &output);
    // A node whose survey did not finish has no trees it could serve: say which and why.
    for node in &usable {
        let done = output
            .lines()
            .any(|l| l.trim() == format!("stap-server-survey-done {}", node.id));
        if !done {
            let why = tasks
                .iter()
                .filter(|t| t.node_id.as_deref() == Some(&node.id))
                .filter_map(|t| t.status.as_ref()?.err.clone())
                .next()
                .unwrap_or_else(|| "it printed nothing".into());
            return Err(Error::Invalid(format!(
                "the survey of swarm node {} ({}) failed: {why}",
                node.hostname, node.addr
            )));
        }
    }
    inventory.shipped = shipped;
    Ok(inventory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn node(id: &str, host: &str, state: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            hostname: host.into(),
            addr: format!("10.0.0.{}", id.len()),
            state: state.into(),
            arch: "x86_64".into(),
            active: true,
        }
    }

    const OUTPUT: &str =
        "stap-server-tree\tn2\t6.1.0-9-amd64\tbuild\t/usr/src/linux-headers-6.1.0-9-amd64
stap-server-tree\tn2\t6.1.0-9-amd64\tsource\t/usr/src/linux-headers-6.1.0-9-common
stap-server-tree\tn2\t6.1.0-9-amd64\troot\t/usr/src/linux-headers-6.1.0-9-amd64
stap-server-tree\tn2\t6.1.0-9-amd64\troot\t/usr/src/linux-headers-6.1.0-9-common
stap-server-tree\tn2\t6.1.0-9-amd64\troot\t/usr/lib/linux-kbuild-6.1/scripts
stap-server-tree\tn2\t6.1.0-9-amd64\troot\t/usr/lib/linux-kbuild-6.1/scripts/mod
stap-server-tree\tn2\t6.1.0-9-amd64\tconfig\tCONFIG_X86_64=y
stap-server-tree\tn2\t6.1.0-9-amd64\tvariables\tCC = $(CROSS_COMPILE)gcc-12
stap-server-survey-done n2
stap-server-tree\tn3\t6.1.0-9-lab\tbuild\t/usr/src/linux-headers-6.1.0-9-amd64
stap-server-tree\tn3\t6.1.0-9-lab\troot\t/usr/src/linux-headers-6.1.0-9-amd64
stap-server-tree\tn3\t6.1.0-9-lab\tconfig\tCONFIG_X86_64=y
stap-server-survey-done n3
stap-server-survey-done n1
";

    #[test]
    fn a_survey_places_each_release_on_a_node_that_has_its_tree() {
        let inv = Inventory::parse(
            vec![
                node("n1", "a-manager", "ready"),
                node("n2", "b-node", "ready"),
                node("n3", "c-node", "ready"),
            ],
            OUTPUT,
        );
        assert_eq!(inv.installed(), ["6.1.0-9-amd64", "6.1.0-9-lab"]);
        let (n, tree) = inv.place("6.1.0-9-amd64").unwrap();
        assert_eq!(n.hostname, "b-node");
        assert_eq!(
            tree.build,
            PathBuf::from("/usr/src/linux-headers-6.1.0-9-amd64")
        );
        assert_eq!(
            tree.mounts,
            [
                "/usr/lib/linux-kbuild-6.1/scripts",
                "/usr/src/linux-headers-6.1.0-9-amd64",
                "/usr/src/linux-headers-6.1.0-9-common"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(tree.arch.as_deref(), Some("x86_64"));
        assert_eq!(tree.compiler.as_deref(), Some("gcc-12"));
        assert_eq!(
            tree.modules_dir,
            Some(PathBuf::from("/lib/modules/6.1.0-9-amd64"))
        );
        assert_eq!(inv.place("6.1.0-9-lab").unwrap().0.hostname, "c-node");
        assert_eq!(inv.arches().arch("6.1.0-9-lab"), Some("x86_64"));
    }

    #[test]
    fn a_release_no_ready_node_has_is_refused_naming_the_nodes() {
        let inv = Inventory::parse(
            vec![
                node("n1", "a-manager", "ready"),
                node("n2", "b-node", "down"),
                node("n3", "c-node", "ready"),
            ],
            OUTPUT,
        );
        // b-node is down: its release is not offered, nor placed.
        assert_eq!(inv.installed(), ["6.1.0-9-lab"]);
        let e = inv.place("6.1.0-9-amd64").unwrap_err();
        assert!(e.contains("no ready node"), "{e}");
        assert!(e.contains("b-node down: 6.1.0-9-amd64"), "{e}");
        assert!(
            inv.place("/usr/src/x")
                .unwrap_err()
                .contains("path of one machine")
        );
    }

    #[test]
    fn the_survey_job_runs_once_per_node_reading_the_root_read_only() {
        let maker = Maker {
            host: "h".into(),
            pid: 1,
            started: 100,
        };
        let s = survey_spec("stap-server-survey-1", "img:1", "t", &maker);
        let l = s.labels.clone().unwrap();
        assert_eq!(
            (&l[labels::SURVEY_HOST][..], &l[labels::SURVEY_PID][..]),
            ("h", "1")
        );
        assert_eq!(l[labels::SURVEY_STARTED], "100");
        let mode = s.mode.unwrap();
        assert!(mode.global_job.is_some() && mode.replicated.is_none());
        let c = s.task_template.unwrap().container_spec.unwrap();
        let m = &c.mounts.unwrap()[0];
        assert_eq!((m.source.as_deref(), m.read_only), (Some("/"), Some(true)));
        assert_eq!(c.capability_drop.unwrap(), ["ALL"]);
        assert_eq!(c.capability_add.unwrap(), ["CAP_SYS_CHROOT"]);
        assert_eq!(
            c.labels.unwrap().get(labels::TENANT).map(String::as_str),
            Some("t")
        );
    }

    #[test]
    fn a_survey_is_stale_once_its_maker_here_is_gone_or_it_is_long_past_its_limit() {
        let here = Maker {
            host: "mgr".into(),
            pid: 10,
            started: 100_000,
        };
        let survey = |host: &str, pid: &str, started: u64| {
            std::collections::HashMap::from([
                (labels::SURVEY_HOST.to_string(), host.to_string()),
                (labels::SURVEY_PID.to_string(), pid.to_string()),
                (labels::SURVEY_STARTED.to_string(), started.to_string()),
            ])
        };
        let alive = |pid: u32| pid == 7;
        // Made here by a process that is gone: stale, however recent.
        assert!(stale_survey(&survey("mgr", "8", 99_990), &here, alive));
        // Made here by a process that runs: a survey under way.
        assert!(!stale_survey(&survey("mgr", "7", 99_990), &here, alive));
        // Made on another host: its process cannot be seen from here; left alone until it
        // is well past the survey's limit.
        assert!(!stale_survey(&survey("other", "8", 99_990), &here, alive));
        let old = here.started - SURVEY_STALE.as_secs() - 1;
        assert!(SURVEY_STALE > SURVEY_LIMIT * 10);
        assert!(stale_survey(&survey("other", "8", old), &here, alive));
        assert!(stale_survey(&survey("mgr", "7", old), &here, alive));
        // Not a survey's labels (a server of the tenant): never.
        let server =
            std::collections::HashMap::from([(labels::MANAGED.to_string(), "true".to_string())]);
        assert!(!stale_survey(&server, &here, |_| false));
        // A host that cannot name itself recognises no process as its own.
        let nameless = Maker {
            host: String::new(),
            ..here.clone()
        };
        assert!(!stale_survey(&survey("", "8", 99_990), &nameless, alive));
    }
}

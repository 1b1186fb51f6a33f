//! A Docker swarm of several engines on this one machine, for the tests that run stap-server
//! against a real swarm with no registry.
//!
//! Each node is a container of the host's engine running an engine of its own
//! ([`NODE_IMAGE`], which scripts/test-prerequisites.sh builds offline), on a bridge network
//! of the lab's own at a fixed address, its API open on `tcp://IP:2375` to this host. The
//! first node is the swarm's manager, the others join as workers. Each node is given its own
//! kernel build trees ([`NodeTrees`]), so that placement by release can be seen.
//!
//! Everything a lab makes carries [`LAB`] and the lab's name as labels, and is removed when
//! the [`Lab`] is dropped, the test passed or failed; what a killed test process left behind
//! is removed by the next lab that comes up ([`remove_leftovers`]).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{docker, headers_release, lines, require_engine, text};

/// The image of the nodes: Debian bookworm with docker.io, and an entrypoint that starts its
/// engine (tests/swarm-node/entrypoint).
pub const NODE_IMAGE: &str = "stap-server-test-node:bookworm";

/// The label (`LAB=lab`) on everything any lab makes: networks, node containers, volumes.
pub const LAB: &str = "io.stap-server.test";

/// The label that names the lab a thing belongs to.
const LAB_NAME: &str = "io.stap-server.test.lab";

/// The label that names the process that made a lab: once it is gone, the lab is a leftover.
const LAB_PID: &str = "io.stap-server.test.pid";

/// The label the node image carries with its entrypoint's checksum.
const ENTRYPOINT_SUM: &str = "io.stap-server.test.entrypoint";

/// The port each node's engine listens on, without TLS.
pub const ENGINE_PORT: u16 = 2375;

/// The image [`Lab::import_busybox`] gives a node: a static busybox, its applets as links in
/// /bin.
pub const BUSYBOX_IMAGE: &str = "stap-lab-busybox:latest";

/// How long a node's engine may take to answer, and the swarm to see a node change.
const DEADLINE: Duration = Duration::from_secs(90);

/// The kernel build trees a node is given, read-only, at the paths the host has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeTrees {
    /// No kernel trees: no /lib/modules at all.
    None,
    /// The host's own: `/lib/modules`, `/usr/src` and the headers' kbuild directory.
    Host,
    /// The host's native headers under another release, `<R>-lab`: a modules directory the
    /// lab makes, whose `build` and `source` link to the host's trees, with `/usr/src` and the
    /// kbuild directory.
    OtherRelease,
}

/// One node of a lab.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its container's name on the host's engine, which is also its host name, so the swarm's
    /// `node.hostname`.
    pub name: String,
    /// Its fixed address on the lab's network, which this host reaches directly.
    pub ip: Ipv4Addr,
    /// Its engine's API, for `DOCKER_HOST` (`tcp://IP:2375`).
    pub engine: String,
    /// Its swarm node id.
    pub id: String,
    /// Which trees it was given.
    pub trees: NodeTrees,
    /// The release its /lib/modules holds: none, the host's, or `<R>-lab`.
    pub release: Option<String>,
}

/// A service as `avahi-browse -rp` resolves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The instance name, as avahi-browse prints it (a space is `\032`).
    pub name: String,
    pub host: String,
    pub address: String,
    pub port: u16,
    /// The TXT records, each in its quotes.
    pub txt: String,
}

impl Resolved {
    /// One `=;IFACE;PROTO;NAME;TYPE;DOMAIN;HOST;ADDRESS;PORT;TXT` line.
    fn parse(line: &str) -> Option<Resolved> {
        let f: Vec<&str> = line.splitn(10, ';').collect();
        if f.len() < 9 || f[0] != "=" {
            return None;
        }
        Some(Resolved {
            name: f[3].into(),
            host: f[6].into(),
            address: f[7].into(),
            port: f[8].parse().ok()?,
            txt: f.get(9).copied().unwrap_or_default().into(),
        })
    }
}

/// A node's state as the manager sees it (`docker node ls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    Ready,
    Down,
}

impl NodeStatus {
    fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "Ready",
            NodeStatus::Down => "Down",
        }
    }
}

/// A swarm of node engines; node 0 is its manager. Dropping it removes all it made.
pub struct Lab {
    /// The lab's name (`stap-lab-PID-NANOS`), the prefix of its nodes', volumes' and
    /// network's names, and the value of its [`LAB_NAME`] label.
    pub name: String,
    /// Its bridge network on the host's engine.
    pub network: String,
    /// That network's subnet, picked free when the lab came up.
    pub subnet: String,
    pub nodes: Vec<Node>,
    /// How long [`Lab::up`] took, from the first engine call to every node Ready.
    pub took: Duration,
    /// The modules directory of the [`NodeTrees::OtherRelease`] nodes.
    modules: Option<PathBuf>,
}

impl Lab {
    /// Brings up a swarm of one node per entry of `trees`, the first the manager, and waits
    /// until the manager sees every node Ready. Fails the test, naming the script to run,
    /// when the node image is missing or stale.
    pub fn up(trees: &[NodeTrees]) -> Lab {
        assert!(!trees.is_empty(), "a lab needs a node to manage it");
        assert!(trees.len() < 200, "a lab's nodes share a /24");
        require_engine();
        require_node_image();
        remove_leftovers();
        let start = Instant::now();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let name = format!("stap-lab-{}-{nanos}", std::process::id());
        let mut lab = Lab {
            network: format!("{name}-net"),
            name,
            subnet: String::new(),
            nodes: Vec::new(),
            took: Duration::ZERO,
            modules: None,
        };
        let prefix = lab.create_network(nanos);
        let host_release = trees
            .iter()
            .any(|t| *t != NodeTrees::None)
            .then(headers_release);
        for (i, t) in trees.iter().enumerate() {
            let node = lab.run_node(i, *t, prefix, host_release.as_deref());
            lab.nodes.push(node);
        }
        for node in &lab.nodes {
            wait_engine(node);
        }
        lab.form_swarm();
        lab.took = start.elapsed();
        lab
    }

    /// The usual lab: a manager with no kernel trees, a worker with the host's, and a worker
    /// with the host's headers under another release.
    pub fn three() -> Lab {
        Lab::up(&[NodeTrees::None, NodeTrees::Host, NodeTrees::OtherRelease])
    }

    /// The manager's engine, for `DOCKER_HOST`.
    pub fn manager(&self) -> &str {
        &self.nodes[0].engine
    }

    /// Runs the docker CLI against node `i`'s engine.
    pub fn docker(&self, i: usize, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(&self.nodes[i].engine)
            .args(args)
            .output()
            .expect("run docker")
    }

    /// Runs the docker CLI against node `i`'s engine, asserts it succeeded, returns its
    /// standard output.
    pub fn expect(&self, i: usize, args: &[&str]) -> String {
        let out = self.docker(i, args);
        assert!(
            out.status.success(),
            "docker -H {} {}: {}",
            self.nodes[i].engine,
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command in node `i`'s container itself (through the host's engine), to see the
    /// node as its engine does: its files, mounts, processes.
    pub fn exec(&self, i: usize, args: &[&str]) -> Output {
        let mut all = vec!["exec", self.nodes[i].name.as_str()];
        all.extend(args);
        docker(&all)
    }

    /// Starts `script` (sh) in node `i`'s container in the background, where it runs until
    /// it ends or the node stops.
    pub fn expect_exec_detached(&self, i: usize, script: &str) {
        let out = docker(&["exec", "-d", &self.nodes[i].name, "sh", "-c", script]);
        assert!(
            out.status.success(),
            "exec in {}: {}",
            self.nodes[i].name,
            text(&out)
        );
    }

    /// Every node the manager knows, as `(host name, status)`: `Ready`, `Down`, `Unknown`.
    pub fn statuses(&self) -> Vec<(String, String)> {
        let out = self.expect(0, &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"]);
        out.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(h, s)| (h.to_string(), s.to_string()))
            .collect()
    }

    /// Node `i`'s status as the manager sees it.
    pub fn status(&self, i: usize) -> Option<String> {
        let name = &self.nodes[i].name;
        self.statuses()
            .into_iter()
            .find(|(h, _)| h == name)
            .map(|(_, s)| s)
    }

    /// Waits until the manager sees node `i` in `status`; returns how long that took.
    pub fn wait_status(&self, i: usize, status: NodeStatus) -> Duration {
        let start = Instant::now();
        loop {
            let now = self.status(i);
            if now.as_deref() == Some(status.as_str()) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "node {} is still {now:?}, not {}, after {} s: {:?}",
                self.nodes[i].name,
                status.as_str(),
                DEADLINE.as_secs(),
                self.statuses()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops node `i`'s container (its engine and everything running on it), the way a
    /// machine goes away; returns at once. The manager sees it `Down` some 10 to 15 s later
    /// ([`Lab::wait_status`]). Stopping the manager leaves no one to ask.
    pub fn stop_node(&self, i: usize) {
        let out = docker(&["stop", &self.nodes[i].name]);
        assert!(
            out.status.success(),
            "stop {}: {}",
            self.nodes[i].name,
            text(&out)
        );
    }

    /// Starts node `i`'s container again, at the same address with the same volume, and
    /// waits until its engine answers; the swarm sees it `Ready` a moment later
    /// ([`Lab::wait_status`]).
    pub fn start_node(&self, i: usize) {
        let out = docker(&["start", &self.nodes[i].name]);
        assert!(
            out.status.success(),
            "start {}: {}",
            self.nodes[i].name,
            text(&out)
        );
        wait_engine(&self.nodes[i]);
    }

    /// Gives node `i`'s engine [`BUSYBOX_IMAGE`], imported from the host's static busybox
    /// (busybox-static): an image to run there with no registry, a few MB where the node
    /// image is 400.
    pub fn import_busybox(&self, i: usize) -> &'static str {
        let busybox = Path::new("/bin/busybox");
        let program = std::fs::read(busybox).unwrap_or_else(|e| {
            panic!(
                "missing prerequisite: {} ({e}): scripts/prerequisites.sh installs busybox-static",
                busybox.display()
            )
        });
        let list = Command::new(busybox)
            .arg("--list")
            .output()
            .expect("busybox --list");
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_size(program.len() as u64);
        archive
            .append_data(&mut header, "bin/busybox", program.as_slice())
            .unwrap();
        for applet in lines(&list) {
            if applet == "busybox" {
                continue;
            }
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_mode(0o777);
            link.set_size(0);
            archive
                .append_link(&mut link, format!("bin/{applet}"), "busybox")
                .unwrap();
        }
        for dir in ["tmp", "www"] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o1777);
            header.set_size(0);
            archive
                .append_data(&mut header, format!("{dir}/"), std::io::empty())
                .unwrap();
        }
        let tar = archive.into_inner().unwrap();
        let mut child = Command::new("docker")
            .arg("-H")
            .arg(&self.nodes[i].engine)
            .args([
                "import",
                "--change",
                &format!("LABEL {LAB}=lab"),
                "-",
                BUSYBOX_IMAGE,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker import");
        child.stdin.take().unwrap().write_all(&tar).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "import busybox into {}: {}",
            self.nodes[i].name,
            text(&out)
        );
        BUSYBOX_IMAGE
    }

    /// Copies the host's file `from` into node `i`'s container at `to` (the node runs the
    /// host's programs as is: both are Debian bookworm).
    pub fn copy_to(&self, i: usize, from: &Path, to: &str) {
        let out = docker(&[
            "cp",
            &from.display().to_string(),
            &format!("{}:{to}", self.nodes[i].name),
        ]);
        assert!(
            out.status.success(),
            "copy {} into {}: {}",
            from.display(),
            self.nodes[i].name,
            text(&out)
        );
    }

    /// Starts D-Bus and avahi-daemon in node `i`, as a machine of the swarm runs them, limited
    /// to the node's interface on the lab's network (nothing is sent on any other, and the
    /// lab's bridge reaches no other machine), IPv4 only; waits until avahi answers on its
    /// socket. They end with the node.
    pub fn start_avahi(&self, i: usize) {
        let script = format!(
            r#"set -eu
iface=$(ip -o -4 addr show | awk -v ip={ip} '{{split($4, a, "/"); if (a[1] == ip) print $2}}')
[ -n "$iface" ] || {{ echo "no interface holds {ip}"; ip -o -4 addr show; exit 1; }}
conf=/etc/avahi/avahi-daemon.conf
sed -i -E -e "s/^#?allow-interfaces=.*/allow-interfaces=$iface/" \
  -e 's/^#?use-ipv6=.*/use-ipv6=no/' -e 's/^#?deny-interfaces=.*//' "$conf"
grep -qx "allow-interfaces=$iface" "$conf"
mkdir -p /run/dbus
rm -f /run/dbus/pid /run/avahi-daemon/pid
dbus-daemon --system --fork
avahi-daemon -D
for _ in $(seq 100); do [ -S /run/avahi-daemon/socket ] && exit 0; sleep 0.1; done
echo "avahi-daemon does not answer"; exit 1
"#,
            ip = self.nodes[i].ip
        );
        let out = self.exec(i, &["sh", "-c", &script]);
        assert!(
            out.status.success(),
            "avahi-daemon in {}: {}",
            self.nodes[i].name,
            text(&out)
        );
    }

    /// The services of `kind` (`_stap._tcp`) that node `i`'s avahi-daemon sees on the lab's
    /// network, resolved (`avahi-browse -rpt`), once each.
    pub fn browse(&self, i: usize, kind: &str) -> Vec<Resolved> {
        let out = self.exec(i, &["avahi-browse", "-rpt", kind]);
        assert!(
            out.status.success(),
            "avahi-browse in {}: {}",
            self.nodes[i].name,
            text(&out)
        );
        let mut found: Vec<Resolved> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(Resolved::parse)
            .collect();
        found.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
        found.dedup();
        found
    }

    /// Each node container's memory use and process count (`docker stats`), one line each.
    pub fn usage(&self) -> Vec<String> {
        let mut args = vec![
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.MemUsage}} {{.PIDs}} pids",
        ];
        args.extend(self.nodes.iter().map(|n| n.name.as_str()));
        lines(&docker(&args))
    }

    /// Creates the lab's network on a /24 of 172.30.0.0/16 that no other network of the
    /// host's engine holds, starting from one that `seed` picks; returns its first three
    /// octets.
    fn create_network(&mut self, seed: u128) -> [u8; 3] {
        let first = (seed ^ u128::from(std::process::id())) % 256;
        let mut last = String::new();
        for k in 0..256 {
            let x = ((first + k) % 256) as u8;
            let subnet = format!("172.30.{x}.0/24");
            let out = docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &subnet,
                "--label",
                &format!("{LAB}=lab"),
                "--label",
                &format!("{LAB_NAME}={}", self.name),
                "--label",
                &format!("{LAB_PID}={}", std::process::id()),
                &self.network,
            ]);
            if out.status.success() {
                self.subnet = subnet;
                return [172, 30, x];
            }
            last = text(&out);
            // The engine refuses a subnet another network holds; anything else is an error.
            assert!(
                last.contains("overlaps"),
                "create the lab's network: {last}"
            );
        }
        panic!("no free /24 in 172.30.0.0/16 for the lab's network: {last}");
    }

    /// Starts node `i`'s container; its engine is not waited for.
    fn run_node(
        &mut self,
        i: usize,
        trees: NodeTrees,
        prefix: [u8; 3],
        host_release: Option<&str>,
    ) -> Node {
        let name = format!("{}-{}", self.name, i + 1);
        let ip = Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 11 + i as u8);
        let volume = format!("{name}-docker");
        let labels = [
            format!("{LAB}=lab"),
            format!("{LAB_NAME}={}", self.name),
            format!("{LAB_PID}={}", std::process::id()),
        ];
        let mut create = vec!["volume".to_string(), "create".into()];
        for l in &labels {
            create.extend(["--label".into(), l.clone()]);
        }
        create.push(volume.clone());
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        let out = docker(&create);
        assert!(out.status.success(), "create {volume}: {}", text(&out));

        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &name,
            "--hostname",
            &name,
            "--init",
            "--tmpfs",
            "/run",
            "--cap-add",
            "ALL",
            "--cap-drop",
            "SYS_RESOURCE",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--security-opt",
            "systempaths=unconfined",
            "--device-cgroup-rule",
            "a *:* rwm",
            "-e",
            "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1",
            "-e",
            &format!("STAP_LAB_INSECURE_REGISTRY={}", self.subnet),
            "-v",
            &format!("{volume}:/var/lib/docker"),
            "--network",
            &self.network,
            "--ip",
            &ip.to_string(),
        ]
        .map(String::from)
        .into();
        for l in &labels {
            args.extend(["--label".into(), l.clone()]);
        }
        let release = match (trees, host_release) {
            (NodeTrees::None, _) => None,
            (NodeTrees::Host, Some(r)) => {
                args.extend(["-v".into(), "/lib/modules:/lib/modules:ro".into()]);
                Some(r.to_string())
            }
            (NodeTrees::OtherRelease, Some(r)) => {
                let modules = self.other_modules(r);
                args.extend([
                    "-v".into(),
                    format!("{}:/lib/modules:ro", modules.display()),
                ]);
                Some(format!("{r}-lab"))
            }
            (_, None) => unreachable!("the host's release is read for nodes with trees"),
        };
        if let Some(r) = host_release.filter(|_| trees != NodeTrees::None) {
            let kbuild = kbuild_dir(r);
            args.extend([
                "-v".into(),
                "/usr/src:/usr/src:ro".into(),
                "-v".into(),
                format!("{0}:{0}:ro", kbuild.display()),
            ]);
        }
        args.push(NODE_IMAGE.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = docker(&args);
        assert!(out.status.success(), "start node {name}: {}", text(&out));
        Node {
            engine: format!("tcp://{ip}:{ENGINE_PORT}"),
            name,
            ip,
            id: String::new(),
            trees,
            release,
        }
    }

    /// The modules directory of the [`NodeTrees::OtherRelease`] nodes, made on first use:
    /// `<release>-lab/build` and `source` link to where the host's release's links point.
    fn other_modules(&mut self, release: &str) -> PathBuf {
        if let Some(dir) = &self.modules {
            return dir.clone();
        }
        let dir = std::env::temp_dir().join(format!("{}-modules", self.name));
        let entry = dir.join(format!("{release}-lab"));
        std::fs::create_dir_all(&entry).expect("the lab's modules directory");
        self.modules = Some(dir.clone());
        for link in ["build", "source"] {
            let host = Path::new("/lib/modules").join(release).join(link);
            if let Ok(target) = std::fs::canonicalize(&host) {
                std::os::unix::fs::symlink(&target, entry.join(link)).unwrap();
            }
        }
        dir
    }

    /// Makes node 0 the swarm's manager, joins the others as workers, waits until the manager
    /// sees them all Ready, and reads each node's id.
    fn form_swarm(&mut self) {
        let manager = self.nodes[0].ip.to_string();
        self.expect(0, &["swarm", "init", "--advertise-addr", &manager]);
        let token = self.expect(0, &["swarm", "join-token", "-q", "worker"]);
        let token = token.trim();
        let join = format!("{manager}:2377");
        for i in 1..self.nodes.len() {
            let ip = self.nodes[i].ip.to_string();
            self.expect(
                i,
                &[
                    "swarm",
                    "join",
                    "--token",
                    token,
                    "--advertise-addr",
                    &ip,
                    &join,
                ],
            );
        }
        for i in 0..self.nodes.len() {
            let id = self.expect(i, &["info", "--format", "{{.Swarm.NodeID}}"]);
            self.nodes[i].id = id.trim().to_string();
            self.wait_status(i, NodeStatus::Ready);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        remove_lab(&self.name);
        if let Some(dir) = &self.modules {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Fails the test unless the node image exists with the repository's entrypoint.
fn require_node_image() {
    let out = docker(&[
        "image",
        "inspect",
        "--format",
        &format!("{{{{index .Config.Labels \"{ENTRYPOINT_SUM}\"}}}}"),
        NODE_IMAGE,
    ]);
    if !out.status.success() {
        let mmdebstrap = Command::new("sh")
            .args(["-c", "command -v mmdebstrap"])
            .output()
            .is_ok_and(|o| o.status.success());
        panic!(
            "missing prerequisite: the swarm node image {NODE_IMAGE} (scripts/test-prerequisites.sh \
             builds it with mmdebstrap{})",
            if mmdebstrap {
                ""
            } else {
                ", which is missing too: scripts/prerequisites.sh installs it"
            }
        );
    }
    let entrypoint = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/swarm-node/entrypoint");
    let sum = Command::new("sha256sum")
        .arg(&entrypoint)
        .output()
        .expect("run sha256sum");
    let sum = String::from_utf8_lossy(&sum.stdout);
    let sum = sum.split_whitespace().next().unwrap_or_default();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sum,
        "stale prerequisite: the swarm node image {NODE_IMAGE} was built from another {}: \
         scripts/test-prerequisites.sh builds it again",
        entrypoint.display()
    );
}

/// The kbuild directory the headers of `release` use (their `scripts` link's target's
/// parent), which a node needs at the same path for the links to resolve.
pub fn kbuild_dir(release: &str) -> PathBuf {
    let scripts = Path::new("/lib/modules")
        .join(release)
        .join("build/scripts");
    let target =
        std::fs::canonicalize(&scripts).unwrap_or_else(|e| panic!("{}: {e}", scripts.display()));
    target.parent().expect("scripts has a parent").to_path_buf()
}

/// Waits until a node's engine answers on its TCP address; fails the test with the node's
/// log if it does not, or if its container stops.
fn wait_engine(node: &Node) {
    let start = Instant::now();
    loop {
        let info = Command::new("docker")
            .args(["-H", &node.engine, "info", "--format", "{{.ID}}"])
            .output()
            .expect("run docker");
        if info.status.success() {
            return;
        }
        let state = docker(&["inspect", "--format", "{{.State.Status}}", &node.name]);
        let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
        let logs = || text(&docker(&["logs", "--tail", "40", &node.name]));
        assert!(
            state == "running",
            "node {} is {state}: {}",
            node.name,
            logs()
        );
        assert!(
            start.elapsed() < DEADLINE,
            "the engine of node {} does not answer on {} after {} s: {}\n{}",
            node.name,
            node.engine,
            DEADLINE.as_secs(),
            text(&info),
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Removes everything labelled as lab `name`'s: containers, then volumes and networks.
fn remove_lab(name: &str) {
    let label = format!("label={LAB_NAME}={name}");
    let ids = lines(&docker(&["ps", "-aq", "--filter", &label]));
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        docker(&args);
    }
    for kind in ["volume", "network"] {
        let names = lines(&docker(&[kind, "ls", "-q", "--filter", &label]));
        if !names.is_empty() {
            let mut args = vec![kind, "rm"];
            args.extend(names.iter().map(String::as_str));
            docker(&args);
        }
    }
}

/// What the host's engine holds of lab `name` (containers, volumes, networks) and its
/// modules directory, one line each: empty once the lab is gone.
pub fn remains(name: &str) -> Vec<String> {
    let label = format!("label={LAB_NAME}={name}");
    let mut all = super::labelled(&label, "container {{.Names}}");
    let modules = std::env::temp_dir().join(format!("{name}-modules"));
    if modules.exists() {
        all.push(format!("directory {}", modules.display()));
    }
    all
}

/// Removes what labs of processes that no longer run left behind (a test killed before its
/// lab was dropped): their containers, volumes, networks and modules directories. Labs of
/// running processes, and anything not labelled [`LAB`], are left alone.
pub fn remove_leftovers() {
    let mut labs: Vec<String> = Vec::new();
    // The lists' `.Label` reads one label (their `.Labels` is one joined string).
    let format = format!("{{{{.Label \"{LAB_NAME}\"}}}} {{{{.Label \"{LAB_PID}\"}}}}");
    let all = format!("label={LAB}=lab");
    let mut found = Vec::new();
    for list in [&["ps", "-a"][..], &["volume", "ls"], &["network", "ls"]] {
        let mut args = list.to_vec();
        args.extend(["--filter", &all, "--format", &format]);
        found.extend(lines(&docker(&args)));
    }
    for line in found {
        if let Some((name, pid)) = line.split_once(' ')
            && !alive(pid)
            && !labs.contains(&name.to_string())
        {
            labs.push(name.to_string());
        }
    }
    for name in &labs {
        remove_lab(name);
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in dir.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let pid = file
                .strip_prefix("stap-lab-")
                .filter(|rest| rest.ends_with("-modules"))
                .and_then(|rest| rest.split('-').next());
            if pid.is_some_and(|p| !alive(p)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Whether process `pid` runs on this host.
fn alive(pid: &str) -> bool {
    !pid.is_empty() && Path::new("/proc").join(pid).exists()
}

/// The body of `GET /` at `ip:port`, once something answers there with one, or an error
/// after `limit`.
pub fn http_get(ip: Ipv4Addr, port: u16, limit: Duration) -> Result<String, String> {
    let start = Instant::now();
    let address = SocketAddr::from((ip, port));
    let mut last = String::new();
    while start.elapsed() < limit {
        let answer =
            TcpStream::connect_timeout(&address, Duration::from_secs(2)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                let mut all = String::new();
                s.read_to_string(&mut all)?;
                Ok(all)
            });
        match answer {
            Ok(all) if all.contains("\r\n\r\n") => {
                return Ok(all.split_once("\r\n\r\n").unwrap().1.to_string());
            }
            Ok(all) => last = format!("no HTTP answer: {all:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("{address} after {} s: {last}", limit.as_secs()))
}

//! Keeping the mDNS advertisements equal to the servers that really run.
//!
//! One reconciliation lists the tenant's servers once, works out the advertisement each
//! running one should have ([`advert`]), and makes avahi's service files say exactly that
//! ([`changes`]): whoever started a server (the CLI, a restart policy, docker-compose) and
//! however it ended. The actions reconcile after they change something; `announce` follows
//! the engine's events and reconciles after each batch, reconnecting when the engine goes away.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;

use crate::advertise::{Advert, Publisher, optinfo};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::spec::Server;
use crate::{body, certinfo, image, lock};

/// Where avahi-daemon accepts its clients; present while it runs.
pub const AVAHI_SOCKET: &str = "/run/avahi-daemon/socket";
/// How long to wait for more events before reconciling, so a burst costs one list call.
const BATCH: Duration = Duration::from_millis(200);
/// How soon a server that could not be advertised is looked at again.
const RETRY: Duration = Duration::from_secs(2);
/// The first and the longest pause before reconnecting to an engine that went away.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(10));

/// The key of a server's service file: the tenant, a dot (which tenant names never hold), the
/// container name. A tenant's files are then exactly those whose key starts with [`prefix`].
pub fn key(tenant: &str, container: &str) -> String {
    format!("{tenant}.{container}")
}

/// The key prefix of a tenant's service files.
pub fn prefix(tenant: &str) -> String {
    format!("{tenant}.")
}

/// The advertisement of one server, `None` unless it runs with a host port.
///
/// The instance name is fixed for the server's life, so a restart does not rename it (see
/// [`service_name`]).
pub fn advert(server: &Server, version: &str, certinfo: &str) -> Option<Advert> {
    if !server.running() {
        return None;
    }
    let spec = &server.spec;
    let which = spec.nickname.as_deref().unwrap_or(&server.kernel_release);
    // The host's name and its arch in stap's naming, as settings reads it for the servers.
    let (host, host_arch) = nix::sys::utsname::uname()
        .map(|u| {
            (
                u.nodename().to_string_lossy().into_owned(),
                crate::spec::stap_arch(&u.machine().to_string_lossy()),
            )
        })
        .unwrap_or_default();
    Some(Advert {
        name: service_name(which, &spec.arch, &host_arch, &host),
        port: server.host_port?,
        release: server.kernel_release.clone(),
        arch: spec.arch.clone(),
        version: version.into(),
        optinfo: optinfo(
            &spec.includes,
            &spec.defines,
            &spec.builds,
            spec.runtime.as_deref(),
        ),
        certinfo: certinfo.into(),
    })
}

/// The longest instance name avahi publishes: one DNS label, in bytes.
const NAME_MAX: usize = 63;

/// What the part after the host's name of a server's instance name keeps, at least, with
/// avahi's `%h` for the host's name; and what it keeps when the host's name, too long for
/// that, is written out and cut.
const WHICH_MIN: usize = 8;
const WHICH_KEEP: usize = 20;

/// A server's instance name: `Systemtap Compile Server on HOST WHICH` (its nickname, else
/// its release), with its arch after it when that is not the host's, so that a native server
/// and its cross sibling of one nickname never share a name. Two records of one name are
/// renamed by avahi as it loads them, and a client resolving that name meanwhile can pair
/// one server's port with the other's TXT records (its arch). The whole must fit in one label
/// once avahi puts the host's name in (avahi refuses a longer name, and the server goes
/// unadvertised): the part after the host's name is cut to what fits; where the host's name
/// leaves less than [`WHICH_MIN`] bytes of it, the name carries the host's name itself
/// instead of avahi's `%h`, cut in its middle (`start~end`: hosts of one cluster often
/// differ at the end) to leave [`WHICH_KEEP`] bytes.
pub fn service_name(which: &str, arch: &str, host_arch: &str, host: &str) -> String {
    const LEAD: &str = "Systemtap Compile Server on ";
    let tail = if arch == host_arch {
        String::new()
    } else {
        format!(" {arch}")
    };
    let suffix = |room: usize| {
        let s = format!("{}{tail}", cut(which, room.saturating_sub(tail.len())));
        cut(&s, room).to_string()
    };
    let host = host.split('.').next().unwrap_or_default();
    // The host's name and the part after it, with the space between them.
    let room = NAME_MAX - LEAD.len() - 1;
    let want = which.len() + tail.len();
    if host.len() + want.min(WHICH_MIN) <= room {
        return format!("{LEAD}%h {}", suffix(room - host.len()));
    }
    let after = suffix(want.min(WHICH_KEEP));
    let fits = room - after.len();
    let head = cut(host, (fits - 1) / 2);
    let end = host.len() - (fits - 1 - head.len());
    let end = (end..=host.len())
        .find(|&i| host.is_char_boundary(i))
        .unwrap_or(host.len());
    format!("{LEAD}{head}~{} {after}", &host[end..])
}

/// The longest start of `text` of at most `bytes` bytes.
fn cut(text: &str, bytes: usize) -> &str {
    let end = (0..=bytes.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..end]
}

/// One step towards the wanted service files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write (or keep, when unchanged) the file of this key.
    Publish(String, Advert),
    /// Remove the file of a server that no longer runs.
    Withdraw(String),
}

/// What makes the published files (`published`, keys) equal to `wanted`.
pub fn changes(wanted: &BTreeMap<String, Advert>, published: &[String]) -> Vec<Change> {
    let withdraw = published
        .iter()
        .filter(|k| !wanted.contains_key(*k))
        .map(|k| Change::Withdraw(k.clone()));
    let publish = wanted
        .iter()
        .map(|(k, a)| Change::Publish(k.clone(), a.clone()));
    withdraw.chain(publish).collect()
}

/// Whether avahi can publish what is written to its services directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Avahi {
    Ready,
    /// The services directory does not exist: nothing is written.
    NoDirectory,
    /// The directory exists but no avahi-daemon answers: the files wait for it to start.
    NotRunning,
}

impl Avahi {
    /// Looks at the directory and at avahi-daemon's socket.
    pub fn probe(dir: &Path) -> Avahi {
        if !dir.is_dir() {
            Avahi::NoDirectory
        } else if UnixStream::connect(AVAHI_SOCKET).is_err() {
            Avahi::NotRunning
        } else {
            Avahi::Ready
        }
    }

    /// The one line that says servers are not advertised, if they are not.
    pub fn warning(self, dir: &Path) -> Option<String> {
        match self {
            Avahi::Ready => None,
            Avahi::NoDirectory => Some(format!(
                "{} does not exist (is avahi-daemon installed?): servers are not advertised over mDNS",
                dir.display()
            )),
            Avahi::NotRunning => Some(format!(
                "avahi-daemon is not running: servers are not advertised over mDNS until it starts \
                 (it reads the service files in {})",
                dir.display()
            )),
        }
    }
}

/// What a reconciliation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Keys whose file was written (new or changed).
    pub published: Vec<String>,
    /// Keys whose file was removed.
    pub withdrawn: Vec<String>,
    /// Servers that run but could not be advertised, with the reason.
    pub failed: Vec<(String, String)>,
}

/// Where a server's certificate is inside its container: in the `--ssl` directory (in the
/// host view), else in the certificate volume on the server's `~/.systemtap`.
pub fn cert_path(server: &Server) -> String {
    match &server.spec.ssl {
        Some(ssl) => format!(
            "{}/stap.cert",
            body::in_host_view(&ssl.display().to_string())
        ),
        None => format!("{}/ssl/server/stap.cert", body::SYSTEMTAP_DIR),
    }
}

/// The certificate serial of a server in stap's form, read through the engine, so that it
/// works for any server (a compose project names its volumes itself) and from a container.
pub async fn cert_serial(engine: &Engine, server: &Server) -> Result<String> {
    let path = cert_path(server);
    let der = engine.read_file(&server.id, &path).await?;
    certinfo::serial_from_der(&der)
        .map_err(|e| Error::Invalid(format!("{path} in {}: {e}", server.name)))
}

/// Certificate serials read once per certificate: the servers the CLI made for one user
/// share one volume, hence one certificate, so `status` and the advertisements of many
/// servers cost one read, not one per server. Servers from compose files (whose project may
/// name the volume itself) and failed reads are not shared.
#[derive(Default)]
pub struct Serials(HashMap<(String, String), String>);

/// A server's certificate volume as a key: on a swarm each node has its own volume of a name.
pub fn volume_key(server: &Server) -> String {
    match &server.place {
        Some(place) => format!("{}@{}", server.cert_volume, place.node),
        None => server.cert_volume.clone(),
    }
}

impl Serials {
    pub async fn of(&mut self, engine: &Engine, server: &Server) -> Result<String> {
        if !server.managed_by_cli {
            return cert_serial(engine, server).await;
        }
        let key = (volume_key(server), cert_path(server));
        if let Some(serial) = self.0.get(&key) {
            return Ok(serial.clone());
        }
        let serial = cert_serial(engine, server).await?;
        self.0.insert(key, serial.clone());
        Ok(serial)
    }
}

/// What an action read already and an advertisement needs: the systemtap version of each
/// image (from its labels) and the certificate serials, so each is read once per action.
#[derive(Default)]
pub struct Known {
    /// By image name.
    pub versions: BTreeMap<String, String>,
    pub serials: Serials,
}

/// The advertisements of the running servers, by key; a server whose certificate or image
/// cannot be read is left out and reported.
pub async fn wanted(
    engine: &Engine,
    tenant: &str,
    servers: &[Server],
    known: &mut Known,
) -> (BTreeMap<String, Advert>, Vec<(String, String)>) {
    let Known { versions, serials } = known;
    let mut wanted = BTreeMap::new();
    let mut failed = Vec::new();
    for server in servers.iter().filter(|s| s.running()) {
        let image = &server.spec.image;
        if !versions.contains_key(image) {
            let version = match engine.image_labels(image).await {
                Ok(Some(labels)) => image::version_of(&labels),
                Ok(None) => "unknown".into(),
                Err(e) => {
                    failed.push((server.name.clone(), e.to_string()));
                    continue;
                }
            };
            versions.insert(image.clone(), version);
        }
        let serial = match serials.of(engine, server).await {
            Ok(s) => s,
            Err(e) => {
                failed.push((server.name.clone(), e.to_string()));
                continue;
            }
        };
        if let Some(a) = advert(server, &versions[image], &serial) {
            wanted.insert(key(tenant, &server.name), a);
        }
    }
    (wanted, failed)
}

/// Makes the tenant's service files in `publisher`'s directory describe exactly its running
/// servers: one list call, then only the files that differ are written or removed.
pub async fn reconcile(engine: &Engine, tenant: &str, publisher: &Publisher) -> Result<Outcome> {
    let servers = engine.servers(tenant).await?;
    let (wanted, failed) = wanted(engine, tenant, &servers, &mut Known::default()).await;
    let mut outcome = Outcome {
        failed,
        ..Outcome::default()
    };
    if !publisher.dir().is_dir() {
        return Ok(outcome);
    }
    let published = publisher
        .published(&prefix(tenant))
        .map_err(|e| Error::io("cannot read", publisher.dir(), e))?;
    for change in changes(&wanted, &published) {
        apply(publisher, change, &mut outcome)?;
    }
    Ok(outcome)
}

/// After an action, makes the tenant's service files match its servers without listing them
/// again (a list is the costliest call an action makes).
///
/// `own` are the servers the action started or found running, whose locks the caller holds:
/// their files are written as they are. `gone` are the names it stopped, whose files were
/// withdrawn under their locks. Every other server is as `observed` when the action began;
/// a file that differs from what that says is changed only under the server's lock, taken
/// only if it is free (a manager holding it hands that server over itself), and after a look
/// at the container of that name: still running on the observed port for a file written,
/// no longer running for a file removed. That look is the re-check of what a concurrent
/// manager may have changed since the list.
pub async fn after_action(
    engine: &Engine,
    tenant: &str,
    publisher: &Publisher,
    lock_dir: &Path,
    changed: (&[Server], &BTreeSet<String>),
    observed: &[Server],
    known: &mut Known,
) -> Result<Outcome> {
    let (own, gone) = changed;
    let mut outcome = Outcome::default();
    if !publisher.dir().is_dir() {
        return Ok(outcome);
    }
    let (mine, failed) = wanted(engine, tenant, own, known).await;
    outcome.failed = failed;
    for (k, a) in mine {
        apply(publisher, Change::Publish(k, a), &mut outcome)?;
    }
    let touched: BTreeSet<&str> = own
        .iter()
        .map(|s| s.name.as_str())
        .chain(gone.iter().map(String::as_str))
        .collect();
    let others: Vec<Server> = observed
        .iter()
        .filter(|s| !touched.contains(s.name.as_str()))
        .cloned()
        .collect();
    let (theirs, failed) = wanted(engine, tenant, &others, known).await;
    outcome.failed.extend(failed);
    let prefix = prefix(tenant);
    let published: Vec<String> = publisher
        .published(&prefix)
        .map_err(|e| Error::io("cannot read", publisher.dir(), e))?
        .into_iter()
        .filter(|k| !touched.contains(&k[prefix.len()..]))
        .collect();
    for change in changes(&theirs, &published) {
        let key = match &change {
            Change::Publish(k, a) if publisher.is_published(k, a) => continue,
            Change::Publish(k, _) | Change::Withdraw(k) => k,
        };
        let name = &key[prefix.len()..];
        let Some(_lock) = lock::Lock::try_take(lock_dir, name)? else {
            continue;
        };
        let now = engine.find(name).await?;
        let still = match &change {
            Change::Publish(_, a) => {
                now.is_some_and(|rt| rt.state == "running" && rt.host_port == Some(a.port))
            }
            Change::Withdraw(_) => now.is_none_or(|rt| rt.state != "running"),
        };
        if still {
            apply(publisher, change, &mut outcome)?;
        }
    }
    Ok(outcome)
}

/// Writes or removes one service file, noting it in `outcome` when something changed.
fn apply(publisher: &Publisher, change: Change, outcome: &mut Outcome) -> Result<()> {
    let dir = publisher.dir();
    match change {
        Change::Publish(k, a) => {
            if publisher
                .publish(&k, &a)
                .map_err(|e| Error::io("cannot write a service file in", dir, e))?
            {
                outcome.published.push(k);
            }
        }
        Change::Withdraw(k) => {
            if publisher
                .withdraw(&k)
                .map_err(|e| Error::io("cannot remove a service file in", dir, e))?
            {
                outcome.withdrawn.push(k);
            }
        }
    }
    Ok(())
}

/// Prints what a reconciliation did, one line per file, on standard error.
fn tell(outcome: &Outcome) {
    for k in &outcome.published {
        eprintln!("stap-server announce: advertised {k}");
    }
    for k in &outcome.withdrawn {
        eprintln!("stap-server announce: withdrew {k}");
    }
    for (name, reason) in &outcome.failed {
        eprintln!("stap-server announce: cannot advertise {name}: {reason}");
    }
}

/// `announce --once`: one reconciliation.
pub async fn once(engine: &Engine, tenant: &str, publisher: &Publisher) -> Result<Outcome> {
    let outcome = reconcile(engine, tenant, publisher).await?;
    tell(&outcome);
    Ok(outcome)
}

/// `announce`: follows the engine's events and reconciles after each batch, forever. When the
/// engine goes away it reconnects with a growing pause, then reconciles again, so what
/// happened meanwhile is caught up.
pub async fn follow(engine: &Engine, tenant: &str, publisher: &Publisher) -> Result<()> {
    let mut pause = BACKOFF.0;
    loop {
        // Events from just before the list on, so nothing between the two is missed.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .saturating_sub(1);
        let mut events = engine.server_events(tenant, since);
        let mut pending;
        match reconcile(engine, tenant, publisher).await {
            Ok(outcome) => {
                tell(&outcome);
                pending = !outcome.failed.is_empty();
                eprintln!(
                    "stap-server announce: following the engine's events for tenant {tenant}"
                );
                pause = BACKOFF.0;
            }
            Err(e) => {
                eprintln!(
                    "stap-server announce: {e}; retrying in {} ms",
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(BACKOFF.1);
                continue;
            }
        }
        let lost = loop {
            // A server that could not be advertised yet (its first certificate is still being
            // made) is looked at again after RETRY, events or not.
            let first = if pending {
                tokio::time::timeout(RETRY, events.next()).await.ok()
            } else {
                Some(events.next().await)
            };
            match first {
                None => tracing::debug!("retrying the servers not advertised yet"),
                Some(Some(Ok(()))) => tracing::debug!("an event; reconciling after the burst"),
                Some(Some(Err(e))) => break e.to_string(),
                Some(None) => break "the engine closed the event stream".to_string(),
            }
            // Take the rest of the burst before looking.
            let mut ended = None;
            while let Ok(more) = tokio::time::timeout(BATCH, events.next()).await {
                match more {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        ended = Some(e.to_string());
                        break;
                    }
                    None => {
                        ended = Some("the engine closed the event stream".to_string());
                        break;
                    }
                }
            }
            if let Some(reason) = ended {
                break reason;
            }
            match reconcile(engine, tenant, publisher).await {
                Ok(outcome) => {
                    tell(&outcome);
                    pending = !outcome.failed.is_empty();
                }
                Err(e) => break e.to_string(),
            }
        };
        eprintln!(
            "stap-server announce: lost the engine ({lost}); reconnecting in {} ms",
            pause.as_millis()
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(BACKOFF.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ServerSpec;

    fn server(nickname: Option<&str>, state: &str, port: Option<u16>) -> Server {
        Server {
            spec: ServerSpec {
                tenant: "t".into(),
                nickname: nickname.map(String::from),
                includes: vec!["/inc".into()],
                defines: vec!["X=1".into()],
                ..crate::spec::tests::spec("/srv/tree")
            },
            id: "id".into(),
            name: "stap-server-t-x86_64-tree".into(),
            state: state.into(),
            pid: Some(4242),
            host_port: port,
            managed_by_cli: true,
            kernel_release: "6.1.192".into(),
            cert_volume: "v".into(),
            place: None,
        }
    }

    #[test]
    fn the_advert_of_a_running_server() {
        let a = advert(&server(None, "running", Some(40001)), "5.1", "00:cc").unwrap();
        assert_eq!(
            a,
            Advert {
                name: "Systemtap Compile Server on %h 6.1.192".into(),
                port: 40001,
                release: "6.1.192".into(),
                arch: "x86_64".into(),
                version: "5.1".into(),
                optinfo: "-DX=1 -I/inc".into(),
                certinfo: "00:cc".into(),
            }
        );
        let named = advert(&server(Some("native"), "running", Some(1)), "5.1", "").unwrap();
        assert!(named.name.ends_with(" native"), "{}", named.name);
    }

    #[test]
    fn service_names_tell_cross_servers_apart_and_fit_one_label() {
        let name = |which, arch, host| service_name(which, arch, "x86_64", host);
        assert_eq!(
            name("native", "x86_64", "h"),
            "Systemtap Compile Server on %h native"
        );
        assert_eq!(
            name("native", "arm64", "h.example.org"),
            "Systemtap Compile Server on %h native arm64"
        );
        let host = "a-rather-long-host-name";
        let long = name("6.1.0-57-amd64", "powerpc", host);
        assert_eq!(long.replace("%h", host).len(), NAME_MAX, "{long}");
        assert!(long.ends_with(" 6.1 powerpc"), "{long}");
        // A host's name that leaves too little room: the name carries it, cut in its middle.
        let host = "stap-lab-9778-1796679345270831031-2";
        let cut = name("6.1.0-57-amd64-lab", "x86_64", host);
        assert_eq!(
            cut,
            "Systemtap Compile Server on stap-la~831031-2 6.1.0-57-amd64-lab"
        );
        assert_eq!(cut.len(), NAME_MAX, "{cut}");
        let hs = "h".repeat(80);
        let huge = name("a-nickname-longer-than-twenty", "arm64", &hs);
        assert_eq!(huge.len(), NAME_MAX, "{huge}");
        assert!(huge.ends_with("h~hhhhhhh a-nickname-lon arm64"), "{huge}");
        let single = name("x", "x86_64", &hs);
        assert_eq!(single.len(), NAME_MAX, "{single}");
        assert!(
            !single.contains("%h") && single.ends_with("h x"),
            "{single}"
        );
    }

    #[test]
    fn only_running_servers_with_a_port_are_advertised() {
        assert_eq!(advert(&server(None, "exited", Some(1)), "5.1", ""), None);
        assert_eq!(
            advert(&server(None, "restarting", Some(1)), "5.1", ""),
            None
        );
        assert_eq!(advert(&server(None, "running", None), "5.1", ""), None);
    }

    #[test]
    fn the_certificate_inside_the_container() {
        let mut s = server(None, "running", Some(1));
        assert_eq!(
            cert_path(&s),
            "/var/lib/stap-server/.systemtap/ssl/server/stap.cert"
        );
        s.spec.ssl = Some("/etc/stap/ssl".into());
        assert_eq!(cert_path(&s), "/run/host/etc/stap/ssl/stap.cert");
    }

    #[test]
    fn keys_separate_tenants() {
        assert_eq!(key("a", "stap-server-a-b-x"), "a.stap-server-a-b-x");
        // Tenant "a" must not claim tenant "a-b"'s files.
        assert!(!key("a-b", "c").starts_with(&prefix("a")));
        assert!(key("a", "c").starts_with(&prefix("a")));
    }

    #[test]
    fn changes_publish_the_wanted_and_withdraw_the_rest() {
        let a = advert(&server(None, "running", Some(1)), "5.1", "").unwrap();
        let wanted = BTreeMap::from([("t.x".to_string(), a.clone())]);
        assert_eq!(
            changes(&wanted, &["t.gone".into(), "t.x".into()]),
            [
                Change::Withdraw("t.gone".into()),
                Change::Publish("t.x".into(), a),
            ]
        );
        assert_eq!(changes(&BTreeMap::new(), &[]), []);
    }

    #[test]
    fn avahi_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("services");
        assert_eq!(Avahi::probe(&missing), Avahi::NoDirectory);
        let w = Avahi::NoDirectory.warning(&missing).unwrap();
        assert!(w.contains(&missing.display().to_string()), "{w}");
        assert!(w.contains("not advertised"), "{w}");
        assert!(
            Avahi::NotRunning
                .warning(dir.path())
                .unwrap()
                .contains("not running")
        );
        assert_eq!(Avahi::Ready.warning(dir.path()), None);
    }
}

//! Trust of the servers by the host's own stap clients.
//!
//! A client uses a server only if its certificate is in the client's own database
//! (`~/.systemtap/ssl/client`) or in the host's global one (`/etc/systemtap/ssl/client`), and
//! sends unprivileged (`--privilege=stapusr`) compiles only to a server trusted as module signer
//! (`/etc/systemtap/staprun`, which staprun checks too). When the manager runs as root on a
//! host with the stap client, `start` adds each server's certificate to both with the client's
//! own mechanism (`stap --trust-servers=ssl,signer,all-users,no-prompt
//! --use-server=127.0.0.1:PORT`), so local users need no trust step. The certificate lives in
//! the user's volume and survives restarts, so the trust does too.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use crate::lock;

/// The host's global client trust database (systemtap's `SYSCONFDIR/systemtap/ssl/client`).
pub const GLOBAL_CLIENT_DB: &str = "/etc/systemtap/ssl/client";
/// The host's database of trusted module signers (systemtap's `SYSCONFDIR/systemtap/staprun`).
pub const SIGNER_DB: &str = "/etc/systemtap/staprun";
/// Where the lock that serialises writers of the global database lives (host-wide, whatever
/// the configuration of each manager).
const LOCK_DIR: &str = "/run/lock";
/// Where managers record the certificates they added (one empty file per serial, host-wide;
/// on /run, so a reboot forgets them).
const RECORD_DIR: &str = "/run/stap-server/trusted";
/// How long the client may take to fetch and store one certificate.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The stap client to add trust with: only for root (the global database is root's), and
/// only where a client is installed. `None` otherwise.
pub fn client() -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("stap"))
        .find(|p| p.is_file())
}

/// The host lock that whoever changes the global trust databases holds meanwhile.
pub fn lock() -> crate::error::Result<lock::Lock> {
    lock::Lock::take(Path::new(LOCK_DIR), "stap-server-client-trust")
}

/// The client's arguments that trust the server on `port` of this host, for all users, as an
/// SSL peer and as a module signer.
pub fn trust_args(host: &str, port: u16) -> Vec<String> {
    vec![
        "--trust-servers=ssl,signer,all-users,no-prompt".into(),
        format!("--use-server={host}:{port}"),
    ]
}

/// Adds the certificate of the server listening on `host:port` (`127.0.0.1` for this host's)
/// to the global databases.
/// Writers of those databases (clients are not safe to run at once on them) go one at a time,
/// under a host lock.
pub async fn trust(stap: &Path, host: &str, port: u16) -> Result<(), String> {
    let _lock = lock().map_err(|e| e.to_string())?;
    // The client's own files go to a scratch directory, not to root's home.
    let scratch = tempfile::tempdir().map_err(|e| format!("cannot make a scratch dir: {e}"))?;
    let run = tokio::process::Command::new(stap)
        .args(trust_args(host, port))
        .env("SYSTEMTAP_DIR", scratch.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| {
            format!(
                "{} gave no answer within {} s",
                stap.display(),
                TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot run {}: {e}", stap.display()))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {} failed ({}): {}",
            stap.display(),
            trust_args(host, port).join(" "),
            out.status,
            said.trim()
        ))
    }
}

/// Whether a manager added `serial` to both databases and neither changed since (a revoke, a
/// rebuilt database): then the client need not run again for it.
pub fn recorded(serial: &str) -> bool {
    recorded_in(
        Path::new(RECORD_DIR),
        &[GLOBAL_CLIENT_DB, SIGNER_DB],
        serial,
    )
}

/// Records that `serial` was just added to both databases.
pub fn record(serial: &str) {
    let dir = Path::new(RECORD_DIR);
    let _ = fs::create_dir_all(dir).and_then(|()| fs::write(record_path(dir, serial), ""));
}

fn record_path(dir: &Path, serial: &str) -> PathBuf {
    dir.join(serial.replace(':', ""))
}

fn recorded_in(dir: &Path, dbs: &[&str], serial: &str) -> bool {
    let Some(at) = modified(&record_path(dir, serial)) else {
        return false;
    };
    dbs.iter()
        .all(|db| last_change(Path::new(db)).is_some_and(|t| t <= at))
}

/// The last change of a database directory: its own time (files added or removed) or any
/// of its files'.
fn last_change(dir: &Path) -> Option<SystemTime> {
    let mut last = modified(dir)?;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        last = last.max(modified(&entry.path())?);
    }
    Some(last)
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_holds_until_a_database_changes() {
        let root = tempfile::tempdir().unwrap();
        let records = root.path().join("records");
        let db = root.path().join("db");
        fs::create_dir_all(&records).unwrap();
        fs::create_dir_all(&db).unwrap();
        let file = db.join("cert9.db");
        fs::write(&file, "").unwrap();
        let dbs = [db.to_str().unwrap()];
        let set = |path: &Path, secs: u64| {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            fs::File::open(path).unwrap().set_modified(t).unwrap();
        };
        assert!(!recorded_in(&records, &dbs, "00:ab"));
        fs::write(record_path(&records, "00:ab"), "").unwrap();
        set(&file, 1_000);
        set(&db, 1_000);
        set(&record_path(&records, "00:ab"), 2_000);
        assert!(recorded_in(&records, &dbs, "00:ab"));
        assert!(!recorded_in(&records, &dbs, "00:cd"));
        set(&file, 3_000);
        assert!(!recorded_in(&records, &dbs, "00:ab"));
    }

    #[test]
    fn the_stock_trust_command() {
        assert_eq!(
            trust_args("127.0.0.1", 40001),
            [
                "--trust-servers=ssl,signer,all-users,no-prompt",
                "--use-server=127.0.0.1:40001"
            ]
        );
    }
}

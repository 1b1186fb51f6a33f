//! Trust of the servers by the host's own stap clients, as the classic service gave it.
//!
//! A client uses a server only if its certificate is in the client's own database
//! (`~/.systemtap/ssl/client`) or in the host's global one (`/etc/systemtap/ssl/client`).
//! When the manager runs as root on a host with the stap client, `start` adds each server's
//! certificate to the global database with the client's own mechanism
//! (`stap --trust-servers=ssl,all-users,no-prompt --use-server=127.0.0.1:PORT`), so local users
//! need no trust step. The certificate lives in the user's volume and survives restarts, so
//! the trust does too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::lock;

/// The host's global client trust database (systemtap's `SYSCONFDIR/systemtap/ssl/client`).
pub const GLOBAL_CLIENT_DB: &str = "/etc/systemtap/ssl/client";
/// Where the lock that serialises writers of the global database lives (host-wide, whatever
/// the configuration of each manager).
const LOCK_DIR: &str = "/run/lock";
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

/// The client's arguments that trust the server on `port` of this host for all users.
pub fn trust_args(port: u16) -> Vec<String> {
    vec![
        "--trust-servers=ssl,all-users,no-prompt".into(),
        format!("--use-server=127.0.0.1:{port}"),
    ]
}

/// Adds the certificate of the server listening on `127.0.0.1:port` to the global database.
/// Managers write that database one at a time, under a host lock.
pub async fn trust(stap: &Path, port: u16) -> Result<(), String> {
    let _lock = lock::Lock::take(Path::new(LOCK_DIR), "stap-server-client-trust")
        .map_err(|e| e.to_string())?;
    // The client's own files go to a scratch directory, not to root's home.
    let scratch = tempfile::tempdir().map_err(|e| format!("cannot make a scratch dir: {e}"))?;
    let run = tokio::process::Command::new(stap)
        .args(trust_args(port))
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
            trust_args(port).join(" "),
            out.status,
            said.trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stock_trust_command() {
        assert_eq!(
            trust_args(40001),
            [
                "--trust-servers=ssl,all-users,no-prompt",
                "--use-server=127.0.0.1:40001"
            ]
        );
    }
}

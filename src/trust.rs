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

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::lock;

/// The host's global client trust database (systemtap's `SYSCONFDIR/systemtap/ssl/client`).
pub const GLOBAL_CLIENT_DB: &str = "/etc/systemtap/ssl/client";
/// The host's database of trusted module signers (systemtap's `SYSCONFDIR/systemtap/staprun`).
pub const SIGNER_DB: &str = "/etc/systemtap/staprun";
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

/// The host lock that whoever changes the global trust databases holds meanwhile.
pub fn lock() -> crate::error::Result<lock::Lock> {
    lock::Lock::take(Path::new(LOCK_DIR), "stap-server-client-trust")
}

/// The client's arguments that trust the server on `port` of this host, for all users, as an
/// SSL peer and as a module signer.
pub fn trust_args(port: u16) -> Vec<String> {
    vec![
        "--trust-servers=ssl,signer,all-users,no-prompt".into(),
        format!("--use-server=127.0.0.1:{port}"),
    ]
}

/// Adds the certificate of the server listening on `127.0.0.1:port` to the global databases.
/// Writers of those databases (clients are not safe to run at once on them) go one at a time,
/// under a host lock.
pub async fn trust(stap: &Path, port: u16) -> Result<(), String> {
    let _lock = lock().map_err(|e| e.to_string())?;
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
                "--trust-servers=ssl,signer,all-users,no-prompt",
                "--use-server=127.0.0.1:40001"
            ]
        );
    }
}

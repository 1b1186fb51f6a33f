//! Log rotation that loses no line: `stap-server log hold FILE` and `log release FILE`, which
//! the shipped logrotate rule runs as its `prerotate` and `postrotate` around `copytruncate`.
//!
//! Why copytruncate, and why a hold: a server container writes its host log through a bind
//! mount of the file itself (`tee -a` in the image's entry point), so the container holds that
//! inode for its whole life. A rotation by renaming would leave it writing to the rotated
//! file, and no signal could make it reopen the new one (the container sees only the old
//! inode). Copying and truncating keeps the inode, but a line written between the copy and
//! the truncation would be lost. So for that moment nothing may write:
//!
//! - every running container of ours that writes FILE (label `io.stap-server.log`, any
//!   tenant) is paused: the cgroup freezer stops all its processes, and the engine answers
//!   only once they are frozen, so no write is half done; stap-serverd's output waits in
//!   the pipe to `tee`, and clients' connections wait in the kernel;
//! - the manager's own lines ([`append`]) wait while a hold marker for FILE exists. The
//!   marker is made and checked under one host lock, so a line is written either before
//!   the hold (and copied) or after the release (and goes to the truncated file).
//!
//! Every line is therefore in exactly one file, and the next line after the release goes to
//! the new (truncated) FILE. If logrotate fails between the two scripts it skips the
//! `postrotate`; a watchdog that `hold` leaves behind releases the hold after
//! [`WATCHDOG`] in that case, so servers are never left frozen.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Exit, Result};

/// Where holds are recorded: one lock for all, one marker per log file.
pub const HOLD_DIR: &str = "/run/stap-server/log-hold";
/// How long a hold may last before its watchdog releases it.
pub const WATCHDOG: Duration = Duration::from_secs(60);
/// A marker older than this is a leftover (its watchdog was killed too): lines are written.
const STALE: Duration = Duration::from_secs(120);
/// How often a manager line waiting for a release looks again.
const POLL: Duration = Duration::from_millis(20);

/// What `log` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum LogCommand {
    /// Pause the writers of each file and mark it held.
    Hold { files: Vec<PathBuf> },
    /// Resume what a hold of each file paused, and drop its marker; with `token`, only if
    /// the hold is still the one with that token (the watchdog), after waiting `after`.
    Release {
        files: Vec<PathBuf>,
        token: Option<String>,
        after: Option<Duration>,
    },
}

/// A hold of one log file, as recorded in its marker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Held {
    /// Tells this hold from a later one of the same file (for the watchdog).
    token: String,
    /// Seconds since the epoch when the hold was taken.
    since: u64,
    /// The containers this hold paused: only these are resumed.
    paused: Vec<String>,
}

/// The marker's file name for `log`: the path with `%` and `/` escaped.
fn marker_name(log: &Path) -> String {
    log.display()
        .to_string()
        .replace('%', "%25")
        .replace('/', "%2F")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether a marker taken at `since` still holds at `now`.
fn holds(since: u64, now: u64) -> bool {
    now.saturating_sub(since) < STALE.as_secs()
}

/// The host lock over every marker, made if missing (a manager that cannot make it, not
/// being root, can be no party to a hold: `None`).
fn lock(dir: &Path) -> Option<File> {
    fs::create_dir_all(dir).ok()?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".lock"))
        .or_else(|_| File::open(dir.join(".lock")))
        .ok()?;
    file.lock().ok()?;
    Some(file)
}

fn read_marker(dir: &Path, log: &Path) -> Option<Held> {
    let text = fs::read_to_string(dir.join(marker_name(log))).ok()?;
    serde_json::from_str(&text).ok()
}

/// Appends `line` to `log` once no hold of it is in force (a marker older than [`STALE`] is
/// ignored). Used for every line the manager writes to a log.
pub fn append(log: &Path, dir: &Path, line: &str) -> std::io::Result<()> {
    loop {
        let guard = lock(dir);
        let held = guard
            .as_ref()
            .and_then(|_| read_marker(dir, log))
            .is_some_and(|h| holds(h.since, now_secs()));
        if !held {
            let mut f = OpenOptions::new().create(true).append(true).open(log)?;
            return f.write_all(format!("{line}\n").as_bytes());
        }
        drop(guard);
        std::thread::sleep(POLL);
    }
}

/// Runs `log hold` or `log release`; exits 0, or fails having left nothing paused.
pub async fn run(command: LogCommand) -> Result<Exit> {
    let dir = Path::new(HOLD_DIR);
    let engine = Engine::connect().await?;
    match command {
        LogCommand::Hold { files } => {
            let mut taken = Vec::new();
            for file in &files {
                match hold(&engine, dir, file).await {
                    Ok(token) => taken.push((file.clone(), token)),
                    Err(e) => {
                        for (file, _) in &taken {
                            let _ = release(&engine, dir, file, None).await;
                        }
                        return Err(e);
                    }
                }
            }
            for (file, token) in &taken {
                spawn_watchdog(file, token);
            }
        }
        LogCommand::Release {
            files,
            token,
            after,
        } => {
            if let Some(after) = after {
                tokio::time::sleep(after).await;
            }
            for file in &files {
                release(&engine, dir, file, token.as_deref()).await?;
            }
        }
    }
    Ok(Exit::Success)
}

/// Marks `log` held (manager lines wait from now on), then pauses its writers. A hold left
/// by an earlier run is released first. On failure, what was paused is resumed.
async fn hold(engine: &Engine, dir: &Path, log: &Path) -> Result<String> {
    if read_marker(dir, log).is_some() {
        release(engine, dir, log, None).await?;
    }
    let token = format!("{}-{}", std::process::id(), now_nanos());
    let mut held = Held {
        token: token.clone(),
        since: now_secs(),
        paused: Vec::new(),
    };
    write_marker(dir, log, &held)?;
    let writers = match engine.log_writers(log).await {
        Ok(w) => w,
        Err(e) => {
            remove_marker(dir, log)?;
            return Err(e);
        }
    };
    for id in writers {
        // Recorded before the request: a pause that fails half way is resumed too.
        held.paused.push(id.clone());
        write_marker(dir, log, &held)?;
        if let Err(e) = engine.pause(&id).await {
            release(engine, dir, log, None).await?;
            return Err(e);
        }
    }
    Ok(token)
}

/// Resumes what the hold of `log` paused and drops its marker; with `token`, only when the
/// hold in force is that one.
async fn release(engine: &Engine, dir: &Path, log: &Path, token: Option<&str>) -> Result<()> {
    let Some(held) = read_marker(dir, log) else {
        return Ok(());
    };
    if token.is_some_and(|t| t != held.token) {
        return Ok(());
    }
    for id in &held.paused {
        engine.unpause(id).await?;
    }
    remove_marker(dir, log)
}

fn write_marker(dir: &Path, log: &Path, held: &Held) -> Result<()> {
    let _lock = lock(dir);
    let path = dir.join(marker_name(log));
    let tmp = dir.join(format!(".{}.tmp", marker_name(log)));
    let text = serde_json::to_string(held).expect("a hold always serializes");
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|e| Error::io("cannot record the hold in", &path, e))
}

fn remove_marker(dir: &Path, log: &Path) -> Result<()> {
    let _lock = lock(dir);
    let path = dir.join(marker_name(log));
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("cannot remove the hold", &path, e))
        }
        _ => Ok(()),
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Leaves behind `stap-server log release --token T --after WATCHDOG FILE`, in a process
/// group of its own with no terminal and no output, which logrotate does not wait for.
fn spawn_watchdog(log: &Path, token: &str) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let spawned = Command::new(exe)
        .args(["log", "release", "--token", token, "--after"])
        .arg(WATCHDOG.as_secs().to_string())
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        eprintln!(
            "stap-server: cannot leave a watchdog for the hold of {}: {e}",
            log.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_are_one_path_component() {
        assert_eq!(
            marker_name(Path::new("/var/log/stap-server/log")),
            "%2Fvar%2Flog%2Fstap-server%2Flog"
        );
        assert_ne!(
            marker_name(Path::new("/a%2Fb")),
            marker_name(Path::new("/a/b"))
        );
    }

    #[test]
    fn a_marker_holds_until_it_is_stale() {
        assert!(holds(1000, 1000));
        assert!(holds(1000, 1000 + STALE.as_secs() - 1));
        assert!(!holds(1000, 1000 + STALE.as_secs()));
        // A clock that went back keeps the hold.
        assert!(holds(1000, 10));
    }

    #[test]
    fn lines_wait_for_the_release() {
        let dir = tempfile::tempdir().unwrap();
        let holds_dir = dir.path().join("holds");
        let log = dir.path().join("log");
        append(&log, &holds_dir, "before").unwrap();
        let held = Held {
            token: "t".into(),
            since: now_secs(),
            paused: vec![],
        };
        write_marker(&holds_dir, &log, &held).unwrap();
        let writer = {
            let (log, holds_dir) = (log.clone(), holds_dir.clone());
            std::thread::spawn(move || append(&log, &holds_dir, "after").unwrap())
        };
        std::thread::sleep(Duration::from_millis(200));
        // What logrotate's copytruncate sees while the hold is in force.
        assert_eq!(fs::read_to_string(&log).unwrap(), "before\n");
        fs::write(&log, "").unwrap();
        remove_marker(&holds_dir, &log).unwrap();
        writer.join().unwrap();
        assert_eq!(fs::read_to_string(&log).unwrap(), "after\n");
    }

    #[test]
    fn a_stale_marker_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let held = Held {
            token: "t".into(),
            since: now_secs() - STALE.as_secs() - 1,
            paused: vec![],
        };
        write_marker(dir.path(), &log, &held).unwrap();
        append(&log, dir.path(), "line").unwrap();
        assert_eq!(fs::read_to_string(&log).unwrap(), "line\n");
    }
}

//! Host locks (advisory `flock`) for work that must happen once even when several managers
//! run at the same time: building the image, making a certificate or a network, making (or
//! removing) a given server; and records of stops under way, so that one whose manager was
//! killed is finished by the next.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// Where locks on what the whole host shares (the image) live, whatever the state directory
/// (`STAT_PATH`) of each manager.
pub const HOST_DIR: &str = "/run/stap-server";

/// Held while alive; released on drop (and by the kernel if the process dies).
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Blocks until `dir/NAME.lock` is ours.
    pub fn take(dir: &Path, name: &str) -> Result<Lock> {
        let (path, file) = open(dir, name)?;
        file.lock()
            .map_err(|e| Error::io("cannot lock", &path, e))?;
        Ok(Lock { _file: file })
    }

    /// `dir/NAME.lock` if it is free now, else `None` (another manager holds it).
    pub fn try_take(dir: &Path, name: &str) -> Result<Option<Lock>> {
        let (path, file) = open(dir, name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(Error::io("cannot lock", &path, e)),
        }
    }

    /// Waits until `dir/NAME.lock` is ours without blocking a thread, so that a task waiting
    /// for a lock that another manager holds can still be cancelled (interrupted).
    pub async fn wait(dir: &Path, name: &str) -> Result<Lock> {
        let (path, file) = open(dir, name)?;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Lock { _file: file }),
                Err(TryLockError::WouldBlock) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(TryLockError::Error(e)) => return Err(Error::io("cannot lock", &path, e)),
            }
        }
    }
}

/// A stop under way, recorded on the host (`dir/NAME.stopping`, holding the container's id
/// and tenant) under the server's lock before the engine is asked, and forgotten once the
/// container is gone. A manager killed in between leaves the record behind: the engine may
/// still be ending that server, so the next manager finishes the stop before it looks.
pub struct Stopping {
    path: PathBuf,
}

/// A stop that a killed manager left unfinished.
#[derive(Debug, PartialEq)]
pub struct LeftStop {
    pub name: String,
    pub id: String,
    pub tenant: String,
    path: PathBuf,
}

const STOPPING: &str = ".stopping";

impl Stopping {
    /// Records that container `id` (server `name` of `tenant`) is being stopped.
    pub fn record(dir: &Path, name: &str, id: &str, tenant: &str) -> Result<Stopping> {
        let path = dir.join(format!("{name}{STOPPING}"));
        fs::write(&path, format!("{id}\n{tenant}\n"))
            .map_err(|e| Error::io("cannot write", &path, e))?;
        Ok(Stopping { path })
    }

    /// The stop has finished: the record goes.
    pub fn done(self) -> Result<()> {
        remove(&self.path)
    }

    /// The stops of `tenant` recorded in `dir`, without their locks: an entry may be one a
    /// live manager is carrying out (see [`LeftStop::unfinished`]).
    pub fn left(dir: &Path, tenant: &str) -> Result<Vec<LeftStop>> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot read", dir, e)),
        };
        let mut left = Vec::new();
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(STOPPING)) else {
                continue;
            };
            if let Some(stop) = LeftStop::read(name, entry.path())
                && stop.tenant == tenant
            {
                left.push(stop);
            }
        }
        left.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(left)
    }
}

impl LeftStop {
    fn read(name: &str, path: PathBuf) -> Option<LeftStop> {
        let text = fs::read_to_string(&path).ok()?;
        let mut lines = text.lines();
        let (id, tenant) = (lines.next()?, lines.next()?);
        Some(LeftStop {
            name: name.to_string(),
            id: id.to_string(),
            tenant: tenant.to_string(),
            path,
        })
    }

    /// Whether the record is still there: checked under the server's lock, it is one whose
    /// manager died (a live one removes it before releasing the lock).
    pub fn unfinished(&self) -> bool {
        self.path.exists()
    }

    /// The stop has been finished by this manager.
    pub fn done(self) -> Result<()> {
        remove(&self.path)
    }
}

fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

fn open(dir: &Path, name: &str) -> Result<(PathBuf, File)> {
    fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    let path = dir.join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("cannot open", &path, e))?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_stop_is_left_until_done_and_only_for_its_tenant() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Stopping::left(dir.path(), "t1").unwrap(), vec![]);
        let a = Stopping::record(dir.path(), "stap-server-t1-x", "abc123", "t1").unwrap();
        let _b = Stopping::record(dir.path(), "stap-server-t2-x", "def456", "t2").unwrap();
        let left = Stopping::left(dir.path(), "t1").unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].name.as_str(), left[0].id.as_str()),
            ("stap-server-t1-x", "abc123")
        );
        assert!(left[0].unfinished());
        a.done().unwrap();
        assert!(!left[0].unfinished());
        assert_eq!(Stopping::left(dir.path(), "t1").unwrap(), vec![]);
        assert_eq!(Stopping::left(dir.path(), "t2").unwrap().len(), 1);
    }

    #[test]
    fn no_directory_means_no_stops() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Stopping::left(&dir.path().join("absent"), "t").unwrap(),
            vec![]
        );
    }
}

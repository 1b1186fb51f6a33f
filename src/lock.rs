//! Host locks (advisory `flock`) for work that must happen once even when several managers
//! run at the same time: building the image, making a certificate or a network, making (or
//! removing) a given server.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

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

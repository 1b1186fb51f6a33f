//! Host locks (advisory `flock`) for work that must happen once even when several managers
//! run at the same time: building the image, making a certificate.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

use crate::error::{Error, Result};

/// Held while alive; released on drop (and by the kernel if the process dies).
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Blocks until `dir/NAME.lock` is ours.
    pub fn take(dir: &Path, name: &str) -> Result<Lock> {
        fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
        let path = dir.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("cannot open", &path, e))?;
        file.lock()
            .map_err(|e| Error::io("cannot lock", &path, e))?;
        Ok(Lock { _file: file })
    }
}

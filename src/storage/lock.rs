//! One server per data directory: an exclusive `flock` on `<data dir>/runnel.lock`, taken
//! before anything in the directory is read or changed, and held for the life of the log.
//!
//! The kernel releases the lock when the process ends, however it ends (`kill -9` too), so
//! a stale lock file never keeps a restarted server out. The file holds the PID of the
//! holder, only so that a second server can say which process is in the way.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::StorageError;

pub const LOCK_FILE: &str = "runnel.lock";

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `dir`, or fails at once with [`StorageError::Locked`] naming the
    /// process that holds it. Writes nothing unless the lock is taken.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, StorageError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(StorageError::Locked {
                    dir: dir.to_path_buf(),
                    holder: holder.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(StorageError::io(&path, e)),
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|e| StorageError::io(&path, e))?;
        Ok(DataDirLock { _file: file })
    }
}

/// What a refused start says about the holder.
pub fn describe_holder(dir: &Path, holder: Option<u32>) -> String {
    let who = match holder {
        Some(pid) => format!("another runnel server (PID {pid})"),
        None => "another runnel server".to_string(),
    };
    format!(
        "data directory {} is in use by {who}; stop it first, or start this one with another --data-dir",
        display(dir).display()
    )
}

fn display(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        match DataDirLock::acquire(dir.path()) {
            Err(StorageError::Locked { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()))
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}

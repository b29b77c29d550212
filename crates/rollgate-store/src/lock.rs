//! [`OwnerLock`]: one process at a time owns a file (an embedded store, a
//! service's data dir). The lock is an advisory exclusive lock on a sibling
//! `PATH.lock` file that holds the owner's pid, so a second process is told
//! who holds it instead of corrupting the file; the operating system drops
//! the lock when the owner exits, even on SIGKILL.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Why [`OwnerLock::acquire`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    #[error("{} is locked by another process{}", lock.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held {
        /// The lock file.
        lock: PathBuf,
        /// The owner's pid, when it could be read from the lock file.
        pid: Option<u32>,
    },
    /// Creating, locking or writing the lock file failed.
    #[error("{}: {what}: {source}", lock.display())]
    Io {
        /// The lock file.
        lock: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// An exclusive ownership lock on `PATH.lock`, held until dropped.
#[derive(Debug)]
pub struct OwnerLock {
    _file: File,
    path: PathBuf,
}

impl OwnerLock {
    /// The lock file guarding `path`: `PATH.lock`.
    pub fn path_for(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".lock");
        PathBuf::from(p)
    }

    /// Takes the lock guarding `path` without waiting, and writes our pid
    /// into it; when another process holds it, says which (its pid, when
    /// the lock file holds one).
    pub fn acquire(path: &Path) -> Result<OwnerLock, LockError> {
        let lock = Self::path_for(path);
        let io = |what: &'static str| {
            let lock = lock.clone();
            move |source| LockError::Io { lock, what, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io("opening the lock file"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // At most a few bytes: a pid, not whatever the file was replaced with.
                let mut text = String::new();
                let pid = (&file).take(32).read_to_string(&mut text).ok().and_then(|_| text.trim().parse::<u32>().ok());
                return Err(LockError::Held { lock, pid });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("locking the lock file")(e)),
        }
        file.set_len(0).map_err(io("writing the lock file"))?;
        file.rewind().map_err(io("writing the lock file"))?;
        write!(file, "{}", std::process::id()).map_err(io("writing the lock file"))?;
        Ok(OwnerLock { _file: file, path: lock })
    }

    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.redb");
        let first = OwnerLock::acquire(&path).unwrap();
        assert_eq!(first.lock_path(), dir.path().join("data.redb.lock"));
        match OwnerLock::acquire(&path).unwrap_err() {
            LockError::Held { lock, pid } => {
                assert_eq!(lock, dir.path().join("data.redb.lock"));
                assert_eq!(pid, Some(std::process::id()));
            }
            e => panic!("{e}"),
        }
        drop(first);
        OwnerLock::acquire(&path).unwrap();
    }

    #[test]
    fn a_lock_file_with_garbage_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(OwnerLock::path_for(&path), vec![0xFFu8; 100_000]).unwrap();
        let _l = OwnerLock::acquire(&path).unwrap();
        assert_eq!(std::fs::read_to_string(OwnerLock::path_for(&path)).unwrap(), std::process::id().to_string());
    }
}

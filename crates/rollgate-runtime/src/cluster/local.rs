//! The node-local copy of what the node last saw enabled (invariant I2).
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory)
//! into the node's data dir **before** the node acts on a change of the
//! flags, so a binary that lacks an enabled flag can
//! refuse to start even when the metadata store is unreachable. A copy that
//! does not parse is an error naming the file, never silently ignored.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ClusterView, FlagRecord, FlagState, validate_flag_name};
use rollgate_store::Revision;

/// The file name in the data dir.
pub const LOCAL_COPY_FILE: &str = "rollgate-cluster.json";
/// Largest local copy read.
pub const MAX_LOCAL_COPY_BYTES: u64 = 1024 * 1024;
/// Most flags a local copy may list.
const MAX_FLAGS: usize = 10_000;
/// The format this code writes and reads.
const FORMAT: u32 = 1;

/// What a node last saw: the cluster id, the epoch and the flags that were
/// enabled or being enabled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalCopy {
    /// The file format (1).
    pub format: u32,
    /// The cluster the node belongs to.
    pub cluster_id: String,
    /// The epoch of the view it was taken from.
    pub epoch: u64,
    /// The store revision of that view.
    pub revision: Revision,
    /// The flags that were enabled or enabling (disabled ones are left out).
    pub flags: BTreeMap<String, FlagRecord>,
    /// When it was written (ms since the Unix epoch).
    pub written_ms: u64,
}

/// Errors of the local copy; each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalCopyError {
    /// Reading or writing failed.
    #[error("local cluster copy {}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not parse or holds impossible values.
    #[error(
        "local cluster copy {} is corrupt{}: {reason}; restore it from a backup or remove it once the metadata store is reachable",
        path.display(),
        line.map(|l| format!(" (line {l})")).unwrap_or_default()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The line of the error, when known.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// The file is larger than the limit.
    #[error("local cluster copy {} is {len} bytes, over the limit of {max}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
}

impl LocalCopy {
    /// The copy of a view.
    pub fn from_view(view: &ClusterView) -> Self {
        LocalCopy {
            format: FORMAT,
            cluster_id: view.cluster_id.clone(),
            epoch: view.epoch,
            revision: view.revision,
            flags: view
                .flags
                .iter()
                .filter(|(_, r)| !matches!(r.state, FlagState::Disabled))
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect(),
            written_ms: super::now_ms(),
        }
    }

    /// The names of the enabled flags.
    pub fn enabled(&self) -> impl Iterator<Item = &str> {
        self.flags.iter().filter(|(_, r)| r.is_enabled()).map(|(n, _)| n.as_str())
    }

    /// Whether this copy says the same as `view` about the cluster, epoch and flags.
    pub fn matches(&self, view: &ClusterView) -> bool {
        let other = LocalCopy::from_view(view);
        self.cluster_id == other.cluster_id && self.epoch == other.epoch && self.flags == other.flags
    }

    /// The file in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(LOCAL_COPY_FILE)
    }

    /// Writes the copy atomically: a crash leaves the old file or the new one.
    /// Writes in one process are serialised, and each uses its own temporary
    /// file, so two writers (e.g. two handles on one data dir) never rename
    /// each other's half-written file.
    pub fn write(&self, data_dir: &Path) -> Result<(), LocalCopyError> {
        static WRITING: std::sync::Mutex<u64> = std::sync::Mutex::new(0);
        let mut seq = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        *seq += 1;
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!("{LOCAL_COPY_FILE}.{}.{}.tmp", std::process::id(), *seq));
        let io = |what: &'static str| {
            let path = path.clone();
            move |source| LocalCopyError::Io { path, what, source }
        };
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| LocalCopyError::Corrupt {
            path: path.clone(),
            line: None,
            reason: format!("cannot encode: {e}"),
        })?;
        bytes.push(b'\n');
        let written = (|| {
            let mut file = std::fs::File::create(&tmp).map_err(io("creating the temporary file"))?;
            file.write_all(&bytes).map_err(io("writing the temporary file"))?;
            file.sync_all().map_err(io("syncing the temporary file"))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("renaming the temporary file into place")(e));
        }
        // Temporary files left by a crash mid-write (ours are all done: writes are serialised).
        if let Ok(entries) = std::fs::read_dir(data_dir) {
            let prefix = format!("{LOCAL_COPY_FILE}.");
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(&prefix) && name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let dir = std::fs::File::open(data_dir).map_err(io("opening the data dir to sync it"))?;
        dir.sync_all().map_err(io("syncing the data dir"))?;
        Ok(())
    }

    /// Reads and validates the copy in `data_dir`; `Ok(None)` when there is none.
    pub fn load(data_dir: &Path) -> Result<Option<LocalCopy>, LocalCopyError> {
        let path = Self::path(data_dir);
        let io = |what: &'static str| {
            let path = path.clone();
            move |source| LocalCopyError::Io { path, what, source }
        };
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("reading its metadata")(e)),
        };
        if meta.len() > MAX_LOCAL_COPY_BYTES {
            return Err(LocalCopyError::TooLarge { path, len: meta.len(), max: MAX_LOCAL_COPY_BYTES });
        }
        let bytes = std::fs::read(&path).map_err(io("reading it"))?;
        if bytes.len() as u64 > MAX_LOCAL_COPY_BYTES {
            return Err(LocalCopyError::TooLarge { path, len: bytes.len() as u64, max: MAX_LOCAL_COPY_BYTES });
        }
        let corrupt =
            |line: Option<usize>, reason: String| LocalCopyError::Corrupt { path: path.clone(), line, reason };
        let copy: LocalCopy = serde_json::from_slice(&bytes).map_err(|e| corrupt(Some(e.line()), e.to_string()))?;
        if copy.format != FORMAT {
            return Err(corrupt(None, format!("format {} (this build reads format {FORMAT})", copy.format)));
        }
        if copy.cluster_id.is_empty() || copy.cluster_id.len() > 128 {
            return Err(corrupt(None, "the cluster id is empty or longer than 128 bytes".into()));
        }
        if copy.flags.len() > MAX_FLAGS {
            return Err(corrupt(None, format!("more than {MAX_FLAGS} flags")));
        }
        for name in copy.flags.keys() {
            validate_flag_name(name).map_err(|e| corrupt(None, e.to_string()))?;
        }
        Ok(Some(copy))
    }
}

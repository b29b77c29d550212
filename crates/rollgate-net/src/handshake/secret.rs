//! The cluster secret: read from a file readable by its owner only, never
//! printed, and the keyed MAC of the handshake transcript.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The cluster secret: both peers prove knowledge of it and MAC the
/// negotiation transcript with it. `Debug` never prints it.
#[derive(Clone)]
pub struct ClusterSecret(Arc<[u8]>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret({} bytes, redacted)", self.0.len())
    }
}

/// Why a cluster secret was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file could not be read.
    #[error("cluster secret file {}: cannot read: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The file is over [`ClusterSecret::MAX_FILE_BYTES`].
    #[error("cluster secret file {}: {len} bytes, over the limit of {max} bytes; the file must hold only the secret", path.display(), max = ClusterSecret::MAX_FILE_BYTES)]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// Others than the file's owner may read it.
    #[error("cluster secret file {}: {reason}", path.display())]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// The permissions found and the fix.
        reason: String,
    },
    /// The secret is shorter than [`ClusterSecret::MIN_BYTES`].
    #[error("cluster secret{}: {len} bytes after trimming whitespace, at least {min} are required (e.g. `head -c 32 /dev/urandom | base64 > secret`)", path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default(), min = ClusterSecret::MIN_BYTES)]
    TooShort {
        /// The file, if read from one.
        path: Option<PathBuf>,
        /// The length found.
        len: usize,
    },
}

impl ClusterSecret {
    /// Shortest secret accepted, in bytes.
    pub const MIN_BYTES: usize = 16;
    /// Largest secret file accepted, in bytes.
    pub const MAX_FILE_BYTES: u64 = 4096;

    /// A secret from bytes (surrounding ASCII whitespace is trimmed).
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, SecretError> {
        Self::build(bytes.as_ref(), None)
    }

    fn build(bytes: &[u8], path: Option<&Path>) -> Result<Self, SecretError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < Self::MIN_BYTES {
            return Err(SecretError::TooShort { path: path.map(Path::to_path_buf), len: trimmed.len() });
        }
        Ok(ClusterSecret(Arc::from(trimmed)))
    }

    /// Reads a secret from a file: at most [`MAX_FILE_BYTES`](Self::MAX_FILE_BYTES),
    /// at least [`MIN_BYTES`](Self::MIN_BYTES) after trimming whitespace,
    /// readable by its owner only (as ssh requires of a private key).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SecretError> {
        use std::io::Read;
        let path = path.as_ref();
        let io = |e: std::io::Error| SecretError::Io { path: path.to_path_buf(), message: e.to_string() };
        if std::fs::metadata(path).is_ok() {
            crate::tls::private_file_check(path)
                .map_err(|reason| SecretError::TooOpen { path: path.to_path_buf(), reason })?;
        }
        let file = std::fs::File::open(path).map_err(io)?;
        let mut buf = Vec::new();
        // Read one byte past the limit, so a file that grows while we read is still caught.
        file.take(Self::MAX_FILE_BYTES + 1).read_to_end(&mut buf).map_err(io)?;
        if buf.len() as u64 > Self::MAX_FILE_BYTES {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(buf.len() as u64);
            return Err(SecretError::TooLarge { path: path.to_path_buf(), len });
        }
        Self::build(&buf, Some(path))
    }

    pub(super) fn mac(&self, label: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(label);
        for p in parts {
            mac.update(&(p.len() as u32).to_be_bytes());
            mac.update(p);
        }
        mac
    }

    pub(super) fn sign(&self, label: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        self.mac(label, parts).finalize().into_bytes().to_vec()
    }

    /// Constant-time verification.
    pub(super) fn verify(&self, label: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        self.mac(label, parts).verify_slice(tag).is_ok()
    }
}

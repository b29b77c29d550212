//! The write-path policy: the one function every client write passes
//! through before anything is stored, so the checks that feature flags will
//! own later have a single home.
//!
//! Today: a TTL (`?ttl_s=N`) is accepted only by a release whose transport
//! version carries entry expiry to its peers (`replicate_ttl`, release 1.1
//! on). That is not enough in a mixed cluster: a 1.1 node replicating a TTL
//! write to a 1.0 peer sends it without its expiry (the field is gated by
//! the connection's transport version), and the copies disagree. The fix is
//! the feature flag `ttl`, enabled only once every member supports it; when
//! rollgate's feature flags are wired in, [`check_write`] refuses a TTL
//! write unless `ttl` is enabled, and nothing else changes.

use crate::releases::Release;
use crate::replication;

/// Longest TTL accepted: ten years.
pub const MAX_TTL_S: u64 = 10 * 365 * 24 * 3600;

/// What a client asks to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteRequest<'a> {
    /// The key.
    pub key: &'a str,
    /// Whether it deletes the key.
    pub delete: bool,
    /// The requested time to live, in seconds.
    pub ttl_s: Option<u64>,
}

/// A write the policy refuses; the message says why and what would allow it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A TTL on a release that cannot replicate it.
    #[error(
        "ttl_s is not supported by release {release}: its transport version does not carry expiry times to peers; run release 1.1 or later on every node"
    )]
    TtlUnsupported {
        /// The node's release.
        release: &'static str,
    },
    /// A TTL on a delete.
    #[error("ttl_s applies to writes of a value, not to deletes")]
    TtlOnDelete,
    /// A TTL out of range.
    #[error("ttl_s must be between 1 and {MAX_TTL_S} seconds, got {0}")]
    TtlOutOfRange(u64),
}

/// Checks a client write against what this node (and later: the cluster's
/// enabled feature flags) allows. The single place for write-path checks.
pub fn check_write(release: &Release, req: &WriteRequest<'_>) -> Result<(), PolicyError> {
    if let Some(ttl) = req.ttl_s {
        if req.delete {
            return Err(PolicyError::TtlOnDelete);
        }
        if ttl == 0 || ttl > MAX_TTL_S {
            return Err(PolicyError::TtlOutOfRange(ttl));
        }
        if !replication::carries_expiry(release.transport) {
            return Err(PolicyError::TtlUnsupported { release: release.name });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::releases::find;

    #[test]
    fn ttl_needs_a_release_that_replicates_it() {
        let put = |ttl_s| WriteRequest { key: "k", delete: false, ttl_s };
        assert_eq!(
            check_write(find("1.0").unwrap(), &put(Some(5))),
            Err(PolicyError::TtlUnsupported { release: "1.0" })
        );
        for r in ["1.1", "1.2", "2.0"] {
            assert_eq!(check_write(find(r).unwrap(), &put(Some(5))), Ok(()), "{r}");
        }
        assert_eq!(check_write(find("1.0").unwrap(), &put(None)), Ok(()));
        assert_eq!(check_write(find("1.2").unwrap(), &put(Some(0))), Err(PolicyError::TtlOutOfRange(0)));
        let del = WriteRequest { key: "k", delete: true, ttl_s: Some(1) };
        assert_eq!(check_write(find("1.2").unwrap(), &del), Err(PolicyError::TtlOnDelete));
    }
}

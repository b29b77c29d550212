//! The write-path policy: the one function every client write passes
//! through before anything is stored.
//!
//! A TTL (`?ttl_s=N`) needs the feature flag `ttl` (release 1.1 on). Without
//! the flag a mixed cluster would disagree: a 1.1 node replicating a TTL
//! write to a 1.0 peer sends it without its expiry (the field is gated by
//! the connection's transport version), and the copies differ. `ttl` can be
//! enabled only once every member supports it, so [`check_write`] refuses a
//! TTL write until then, with a hot-path check (one atomic load) of the
//! flag's bit; a release that does not know the flag refuses it outright.

use crate::gates::KvFlags;
use crate::releases::{Release, TTL};

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
    /// A TTL on a release that does not know the flag `ttl`.
    #[error(
        "ttl_s is not supported by release {release}: it does not know feature flag `ttl` (introduced in {}); run \
         release {} or later on every node, then enable it with `rollgate flags enable ttl`",
        TTL.introduced_in,
        TTL.introduced_in
    )]
    TtlUnsupported {
        /// The node's release.
        release: &'static str,
    },
    /// A TTL while the flag `ttl` is not enabled in the cluster.
    #[error(
        "ttl_s needs feature flag `ttl`, which is not enabled in this cluster: once every node runs release {} or \
         later, enable it with `rollgate flags enable ttl` (it enables its dependency `record_meta_v2` first)",
        TTL.introduced_in
    )]
    TtlNotEnabled,
    /// A TTL on a delete.
    #[error("ttl_s applies to writes of a value, not to deletes")]
    TtlOnDelete,
    /// A TTL out of range.
    #[error("ttl_s must be between 1 and {MAX_TTL_S} seconds, got {0}")]
    TtlOutOfRange(u64),
}

/// Checks a client write against what this node's release and the
/// cluster's enabled feature flags allow. The single place for write-path checks.
pub fn check_write(release: &Release, flags: &KvFlags, req: &WriteRequest<'_>) -> Result<(), PolicyError> {
    if let Some(ttl) = req.ttl_s {
        if req.delete {
            return Err(PolicyError::TtlOnDelete);
        }
        if ttl == 0 || ttl > MAX_TTL_S {
            return Err(PolicyError::TtlOutOfRange(ttl));
        }
        if !release.supports_flag(TTL.name) {
            return Err(PolicyError::TtlUnsupported { release: release.name });
        }
        if !flags.ttl() {
            return Err(PolicyError::TtlNotEnabled);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::releases::{FlagHooks, find};

    fn flags(release: &str) -> KvFlags {
        let reg = find(release).unwrap().registry(&FlagHooks::default()).unwrap();
        let view = rollgate::cluster::ClusterView {
            cluster_id: "c".into(),
            epoch: 0,
            revision: 0,
            epoch_revision: 0,
            members: Default::default(),
            flags: Default::default(),
            flag_acks: Default::default(),
            flag_revisions: Default::default(),
            floor: None,
        };
        let view = tokio::sync::watch::channel(std::sync::Arc::new(view)).1;
        KvFlags::new(&reg, rollgate::flags::Flags::new(&reg), view)
    }

    #[test]
    fn a_ttl_needs_the_flag_and_a_release_that_knows_it() {
        let put = |ttl_s| WriteRequest { key: "k", delete: false, ttl_s };
        let e = check_write(find("1.0").unwrap(), &flags("1.0"), &put(Some(5))).unwrap_err();
        assert_eq!(e, PolicyError::TtlUnsupported { release: "1.0" });
        assert!(e.to_string().contains("release 1.1 or later") && e.to_string().contains("`ttl`"), "{e}");
        for r in ["1.1", "1.2", "2.0"] {
            let e = check_write(find(r).unwrap(), &flags(r), &put(Some(5))).unwrap_err();
            assert_eq!(e, PolicyError::TtlNotEnabled, "{r}: the flag's bit is not set");
            assert!(e.to_string().contains("rollgate flags enable ttl"), "{e}");
        }
        assert_eq!(check_write(find("1.0").unwrap(), &flags("1.0"), &put(None)), Ok(()));
        let r = find("1.2").unwrap();
        assert_eq!(check_write(r, &flags("1.2"), &put(Some(0))), Err(PolicyError::TtlOutOfRange(0)));
        let del = WriteRequest { key: "k", delete: true, ttl_s: Some(1) };
        assert_eq!(check_write(r, &flags("1.2"), &del), Err(PolicyError::TtlOnDelete));
    }
}

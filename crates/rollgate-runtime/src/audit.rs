//! The audit log in the metadata store: who enabled, disabled, forgot,
//! finalized or took over what, when, from which node, and how it ended.
//!
//! | key | value |
//! |---|---|
//! | `<root>audit/next` | the next sequence number (decimal) |
//! | `<root>audit/e/<seq, 20 digits>` | JSON [`AuditEntry`] |
//!
//! An append is one transaction fenced on `audit/next`'s revision: it takes
//! the number, writes the entry and deletes entry `seq - capacity`, so the
//! store keeps the newest `capacity` entries and drops the oldest one by one
//! (a smaller capacity configured later is applied when reading; the older
//! keys stay until their number comes round). Entries are bounded
//! ([`MAX_MESSAGE_BYTES`], [`MAX_REQUEST_BYTES`]); tokens appear only as
//! fingerprints ([`token_fingerprint`]). Entries live in the store, so every
//! node reads the same log and it survives restarts.

use rollgate_api::audit::{AuditAction, AuditEntry, AuditOutcome, Caller};
use rollgate_store::{Compare, MetaStore, StoreError, Txn, TxnOp};
use sha2::{Digest, Sha256};

/// Entries kept by default.
pub const DEFAULT_CAPACITY: usize = 1000;
/// Longest message kept in an entry.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Largest request kept in an entry (as JSON); a larger one is kept as a
/// shortened string.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// Attempts of an append racing other appends.
const MAX_ATTEMPTS: usize = 32;

/// Why the audit log could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The store failed.
    #[error("audit log: {0}")]
    Store(#[from] StoreError),
    /// Too many appends at once.
    #[error("audit log: {MAX_ATTEMPTS} appends in a row raced another one; the entry was not written")]
    Contention,
    /// The sequence key holds something else than a number.
    #[error("audit log: {key} holds {value:?}, not a sequence number; delete the key to restart numbering")]
    BadSequence {
        /// The key.
        key: String,
        /// What it holds (shortened).
        value: String,
    },
}

/// `sha256:` and the first 16 hex digits of the SHA-256 of `token`.
pub fn token_fingerprint(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    format!("sha256:{}", d[..8].iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn next_key(root: &str) -> String {
    format!("{root}audit/next")
}

fn entries_prefix(root: &str) -> String {
    format!("{root}audit/e/")
}

fn entry_key(root: &str, seq: u64) -> String {
    format!("{root}audit/e/{seq:020}")
}

/// An entry to append (its number is given by [`append`]).
pub fn entry(
    node: &str,
    action: AuditAction,
    caller: &Caller,
    request: serde_json::Value,
    outcome: AuditOutcome,
    message: &str,
) -> AuditEntry {
    let text = request.to_string();
    let request = if text.len() > MAX_REQUEST_BYTES {
        serde_json::Value::String(rollgate_util::shorten_to(&text, MAX_REQUEST_BYTES - 3))
    } else {
        request
    };
    AuditEntry {
        seq: 0,
        at_ms: rollgate_util::now_ms(),
        node: node.to_string(),
        action,
        caller: caller.clone(),
        request,
        outcome,
        message: rollgate_util::shorten_to(message, MAX_MESSAGE_BYTES - 3),
    }
}

/// Appends `entry` and drops the entry `capacity` places older; returns its number.
pub async fn append(
    store: &dyn MetaStore,
    root: &str,
    capacity: usize,
    mut entry: AuditEntry,
) -> Result<u64, AuditError> {
    let capacity = capacity.max(1) as u64;
    let key = next_key(root);
    for _ in 0..MAX_ATTEMPTS {
        let (seq, revision) = match store.get(&key).await? {
            None => (0, 0),
            Some(kv) => {
                let text = String::from_utf8_lossy(&kv.value).to_string();
                let seq = text
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| AuditError::BadSequence { key: key.clone(), value: rollgate_util::shorten(&text) })?;
                (seq, kv.mod_revision)
            }
        };
        entry.seq = seq;
        let mut ops = vec![
            TxnOp::put(key.clone(), (seq + 1).to_string().into_bytes()),
            TxnOp::put_json(entry_key(root, seq), &entry)?,
        ];
        if seq >= capacity {
            ops.push(TxnOp::delete(entry_key(root, seq - capacity)));
        }
        let r = store.txn(Txn::new().when([Compare::mod_revision(key.clone(), revision)]).and_then(ops)).await?;
        if r.succeeded {
            return Ok(seq);
        }
    }
    Err(AuditError::Contention)
}

/// [`append`], logging a failure instead of returning it: the operation
/// the entry describes already happened.
pub async fn record(store: &dyn MetaStore, root: &str, capacity: usize, entry: AuditEntry) {
    let (node, action) = (entry.node.clone(), entry.action);
    if let Err(e) = append(store, root, capacity, entry).await {
        tracing::warn!(node = %node, action = action.as_str(), error = %e, "could not write the audit entry");
    }
}

/// Records a takeover: `node` `what` (e.g. "resumed the enabling") of
/// `flag` whose driver was gone, and how it ended.
pub async fn takeover(
    store: &dyn MetaStore,
    root: &str,
    capacity: usize,
    node: &str,
    flag: &str,
    what: &str,
    result: Result<(), String>,
) {
    let (outcome, message) = match result {
        Ok(()) => (AuditOutcome::Ok, format!("{what} of `{flag}`, whose driver was gone")),
        Err(e) => (AuditOutcome::Failed, format!("{what} of `{flag}`, whose driver was gone, failed: {e}")),
    };
    let request = serde_json::json!({ "flag": flag });
    record(store, root, capacity, entry(node, AuditAction::Takeover, &Caller::node(), request, outcome, &message))
        .await;
}

/// The newest `limit` entries (at most `capacity`), newest first. An entry
/// that does not decode is skipped with a warning.
pub async fn read(
    store: &dyn MetaStore,
    root: &str,
    capacity: usize,
    limit: usize,
) -> Result<Vec<AuditEntry>, AuditError> {
    let listing = store.list(&entries_prefix(root)).await?;
    let mut out = Vec::new();
    for kv in listing.kvs.iter().rev().take(limit.min(capacity.max(1))) {
        match rollgate_store::decode_json::<AuditEntry>(&kv.key, &kv.value) {
            Ok(e) => out.push(e),
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping an audit entry that does not decode"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_never_contain_the_token() {
        let f = token_fingerprint("s3cret-token-value");
        assert!(f.starts_with("sha256:") && f.len() == 7 + 16, "{f}");
        assert!(!f.contains("s3cret"));
        assert_ne!(f, token_fingerprint("s3cret-token-valuf"));
    }

    #[tokio::test]
    async fn the_log_keeps_the_newest_entries() {
        let store = rollgate_store::open("mem:", rollgate_store::StoreOptions::default()).await.unwrap();
        for i in 0..7 {
            let e = entry(
                "n1",
                AuditAction::Enable,
                &Caller::library(),
                serde_json::json!({"i": i}),
                AuditOutcome::Ok,
                &"m".repeat(5000),
            );
            assert_eq!(append(store.as_ref(), "/c/", 3, e).await.unwrap(), i);
        }
        let entries = read(store.as_ref(), "/c/", 3, 100).await.unwrap();
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [6, 5, 4]);
        assert_eq!(store.list("/c/audit/e/").await.unwrap().kvs.len(), 3, "older entries are deleted");
        assert!(entries[0].message.len() <= MAX_MESSAGE_BYTES);
        store.put("/c/audit/next", b"garbage".to_vec()).await.unwrap();
        let e = entry("n1", AuditAction::Forget, &Caller::node(), serde_json::Value::Null, AuditOutcome::Ok, "");
        assert!(matches!(append(store.as_ref(), "/c/", 3, e).await, Err(AuditError::BadSequence { .. })));
    }
}

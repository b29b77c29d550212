//! rollgate-kv's cluster-wide settings: one record in the metadata store
//! (`<root>kv/settings`, JSON) whose format moves step by step across
//! releases, as a Ceph service's `format_version` does. The node runtime
//! runs the steps (service `kv_settings`, one lease-elected owner, each
//! write fenced on the owner key):
//!
//! | step | gate | what it does |
//! |---|---|---|
//! | 0 -> 1 `keyspace` | cluster feature `kv.prefix_scan` (every member runs 1.2 or later) | writes the keyspace limits (`max_key_bytes`, `max_value_bytes`, `max_scan_items`) |
//! | 1 -> 2 `ttl` | flag `ttl` | adds the TTL limits (`max_ttl_s`) |
//!
//! Releases 1.2 and 2.0 know both steps; 1.0 and 1.1 know none (the record
//! does not exist on their clusters). A fresh cluster of 1.2 starts at
//! format 2 without running a step, so its first node writes the record in
//! that format ([`ensure_fresh`]).

use std::sync::Arc;

use rollgate::migrate::{Gate, Migrations, ServiceStep, StepContext, StepError};
use rollgate::store::{Compare, MetaStore, Txn, TxnOp};
use serde_json::{Value, json};

use crate::record::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::releases::{PREFIX_SCAN, Release, TTL};

/// The service name of the settings' format.
pub const SERVICE: &str = "kv_settings";
/// Most items a prefix scan returns.
pub const MAX_SCAN_ITEMS: usize = 1000;
/// Longest TTL a write may ask for (a year).
pub const MAX_TTL_S: u64 = 365 * 24 * 3600;
/// Largest settings record read.
pub const MAX_SETTINGS_BYTES: usize = 64 * 1024;

/// The settings' key under the cluster root `root` (ends with `/`).
pub fn key(root: &str) -> String {
    format!("{root}kv/settings")
}

/// The settings record at format `format` (1 or 2).
pub fn at_format(format: u32) -> Value {
    let mut v = json!({
        "format": format,
        "keyspace": {
            "max_key_bytes": MAX_KEY_BYTES,
            "max_value_bytes": MAX_VALUE_BYTES,
            "max_scan_items": MAX_SCAN_ITEMS,
        },
    });
    if format >= 2 {
        v["ttl"] = json!({ "max_ttl_s": MAX_TTL_S });
    }
    v
}

/// The steps `release` knows, or `None` when it has no settings.
pub fn services(release: &Release, root: &str) -> Option<Arc<Migrations>> {
    if !release.has_feature(PREFIX_SCAN) {
        return None;
    }
    let mut m = Migrations::new();
    let steps = [(0, "keyspace", Gate::feature(PREFIX_SCAN)), (1, "ttl", Gate::flag(TTL.name))];
    for (from, name, gate) in steps {
        let key = key(root);
        let step = ServiceStep::new(SERVICE, from, name, gate, move |ctx: StepContext| {
            let key = key.clone();
            async move { write_format(ctx.store.as_ref(), &key, ctx.to).await }
        });
        match step.and_then(|s| m.add_step(s).map(|_| ())) {
            Ok(()) => {}
            Err(e) => unreachable!("the settings steps are fixed and tested: {e}"),
        }
    }
    Some(Arc::new(m))
}

/// Writes the record at `format`, keeping what a newer release may have
/// added (idempotent: a step that runs again writes the same record).
async fn write_format(store: &dyn MetaStore, key: &str, format: u32) -> Result<(), StepError> {
    let mut record = match store.get(key).await? {
        Some(kv) if kv.value.len() <= MAX_SETTINGS_BYTES => serde_json::from_slice::<Value>(&kv.value)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| StepError::new(format!("{key} is not a JSON object: remove it and run the step again")))?,
        Some(kv) => {
            return Err(StepError::new(format!("{key} is {} bytes, over {MAX_SETTINGS_BYTES}", kv.value.len())));
        }
        None => json!({}),
    };
    let target = at_format(format);
    if let (Some(out), Some(new)) = (record.as_object_mut(), target.as_object()) {
        for (k, v) in new {
            out.insert(k.clone(), v.clone());
        }
    }
    let bytes = serde_json::to_vec(&record).map_err(|e| StepError::new(e.to_string()))?;
    store.put(key, bytes).await?;
    Ok(())
}

/// On a cluster whose settings format is already past 0 without a record
/// (a fresh cluster starts at the latest format with no step run), writes
/// the record at that format; an existing record is left as it is.
pub async fn ensure_fresh(store: &dyn MetaStore, root: &str, format: u32) -> Result<(), rollgate::store::StoreError> {
    if format == 0 {
        return Ok(());
    }
    let key = key(root);
    let bytes = serde_json::to_vec(&at_format(format)).unwrap_or_default();
    let txn = Txn::new().when([Compare::absent(&key)]).and_then([TxnOp::put(&key, bytes)]);
    store.txn(txn).await.map(|_| ())
}

/// The settings as stored (for the upgrade status), or why they cannot be read.
pub async fn read(store: &dyn MetaStore, root: &str) -> Value {
    let key = key(root);
    match store.get(&key).await {
        Ok(None) => Value::Null,
        Ok(Some(kv)) if kv.value.len() > MAX_SETTINGS_BYTES => json!({ "error": format!("{key} is too large") }),
        Ok(Some(kv)) => serde_json::from_slice(&kv.value)
            .unwrap_or_else(|e| json!({ "error": format!("{key} does not decode: {e}") })),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::releases::RELEASES;

    #[test]
    fn only_releases_with_the_prefix_scan_know_the_settings() {
        for r in RELEASES {
            let m = services(r, "rollgate/");
            assert_eq!(m.is_some(), r.has_feature(PREFIX_SCAN), "{}", r.name);
            if let Some(m) = m {
                assert_eq!(m.latest(SERVICE), 2, "{}", r.name);
            }
        }
        assert!(at_format(1).get("ttl").is_none() && at_format(2)["ttl"]["max_ttl_s"] == MAX_TTL_S);
    }

    #[tokio::test]
    async fn a_step_keeps_what_it_does_not_know_and_refuses_garbage() {
        let store = rollgate::store::open("mem:", Default::default()).await.unwrap();
        let key = key("rollgate/");
        store.put(&key, br#"{"format": 1, "later_release": {"x": 1}}"#.to_vec()).await.unwrap();
        write_format(store.as_ref(), &key, 2).await.unwrap();
        let v = read(store.as_ref(), "rollgate/").await;
        assert_eq!((v["format"].as_u64(), v["later_release"]["x"].as_u64()), (Some(2), Some(1)), "{v}");
        for garbage in [b"not json".to_vec(), b"[1,2]".to_vec(), vec![b'x'; MAX_SETTINGS_BYTES + 1]] {
            store.put(&key, garbage.clone()).await.unwrap();
            assert!(write_format(store.as_ref(), &key, 1).await.is_err());
            assert_eq!(store.get(&key).await.unwrap().unwrap().value, garbage, "left as it was");
        }
        ensure_fresh(store.as_ref(), "rollgate/", 2).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap().unwrap().value.len(), MAX_SETTINGS_BYTES + 1, "not overwritten");
    }
}

//! A store whose writes are fenced: every transaction also requires one
//! guard (a fencing token, e.g. "the owner key still has the create
//! revision we took it at"), so that a writer that lost its ownership
//! cannot write any more, however late it wakes up. Reads, watches and
//! leases pass through.

use std::sync::Arc;

use super::{
    Compare, KeyValue, LeaseId, Limits, Listing, MetaStore, OpResponse, Revision, StoreError, Txn, TxnOp, TxnResponse,
    WatchStream,
};

/// A [`MetaStore`] whose transactions (and so puts and deletes) also
/// require `fence`; a write whose fence fails is [`StoreError::Fenced`] and
/// changes nothing. A transaction whose own guards fail while the fence
/// holds answers as usual (`succeeded: false`, its failure ops applied).
#[derive(Debug, Clone)]
pub struct FencedStore {
    inner: Arc<dyn MetaStore>,
    fence: Compare,
}

impl FencedStore {
    /// `inner`, with every write also requiring `fence`.
    pub fn new(inner: Arc<dyn MetaStore>, fence: Compare) -> FencedStore {
        FencedStore { inner, fence }
    }

    /// The fence.
    pub fn fence(&self) -> &Compare {
        &self.fence
    }
}

#[async_trait::async_trait]
impl MetaStore for FencedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn limits(&self) -> &Limits {
        self.inner.limits()
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.inner.list(prefix).await
    }
    async fn txn(&self, mut txn: Txn) -> Result<TxnResponse, StoreError> {
        let own_guards = txn.compares.len();
        txn.compares.push(self.fence.clone());
        // Read the fence key in the failure branch: tells a failed fence
        // from the transaction's own failed guards, atomically.
        txn.failure.push(TxnOp::get(&self.fence.key));
        let mut resp = self.inner.txn(txn).await?;
        if resp.succeeded {
            return Ok(resp);
        }
        let fence_kv = match resp.responses.pop() {
            Some(OpResponse::Get(kv)) => kv,
            _ => None,
        };
        if own_guards == 0 || !self.fence.evaluate(fence_kv.as_ref()) {
            return Err(StoreError::Fenced { key: self.fence.key.clone() });
        }
        Ok(resp)
    }
    async fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from).await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
    async fn lease_grant(&self, ttl_s: i64) -> Result<(LeaseId, i64), StoreError> {
        self.inner.lease_grant(ttl_s).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<i64, StoreError> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.lease_revoke(lease).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_whose_fence_fails_is_refused_and_changes_nothing() {
        let store: Arc<dyn MetaStore> = Arc::new(crate::engine::EngineStore::open_mem(Default::default()));
        let rev = store.put("owner", b"n1".to_vec()).await.unwrap();
        let fenced = FencedStore::new(store.clone(), Compare::mod_revision("owner", rev));
        fenced.put("data", b"1".to_vec()).await.unwrap();
        // The step's own guard fails while the fence holds: an ordinary answer.
        let txn = Txn::new().when([Compare::absent("data")]).and_then([TxnOp::put("data", b"2".to_vec())]);
        assert!(!fenced.txn(txn).await.unwrap().succeeded);
        store.put("owner", b"n2".to_vec()).await.unwrap();
        let err = fenced.put("data", b"3".to_vec()).await.unwrap_err();
        assert!(matches!(&err, StoreError::Fenced { key } if key == "owner"), "{err}");
        assert_eq!(store.get("data").await.unwrap().unwrap().value, b"1");
        let txn = Txn::new().when([Compare::absent("data")]).and_then([TxnOp::put("data", b"4".to_vec())]);
        assert!(matches!(fenced.txn(txn).await, Err(StoreError::Fenced { .. })));
    }
}

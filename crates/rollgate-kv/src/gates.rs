//! The node's view of its feature flags on the hot path: rollgate's
//! [`Flags`] bits (one atomic load each; set only once the metadata store
//! says **enabled**, I1) with the ids of the flags kv checks, and the cluster
//! features of the node's cached view. It is the [`Gates`] the write path,
//! the gated record setters and the table migrations use.

use std::sync::Arc;

use rollgate::cluster::ClusterView;
use rollgate::flags::{FlagId, FlagRegistry, Flags};
use rollgate::migrate::Gates;
use tokio::sync::watch;

use crate::releases::{RECORD_META_V2, TTL, VALUE_CHECKSUMS};

/// The flags kv checks, by id, and the node's cluster view (cheap to clone).
#[derive(Clone, Debug)]
pub struct KvFlags {
    bits: Flags,
    record_meta_v2: Option<FlagId>,
    ttl: Option<FlagId>,
    value_checksums: Option<FlagId>,
    view: watch::Receiver<Arc<ClusterView>>,
}

impl KvFlags {
    /// The flags of `registry` (the release's), following `bits`.
    pub fn new(registry: &FlagRegistry, bits: Flags, view: watch::Receiver<Arc<ClusterView>>) -> KvFlags {
        KvFlags {
            bits,
            record_meta_v2: registry.id(RECORD_META_V2.name),
            ttl: registry.id(TTL.name),
            value_checksums: registry.id(VALUE_CHECKSUMS.name),
            view,
        }
    }

    fn on(&self, id: Option<FlagId>) -> bool {
        id.is_some_and(|id| self.bits.is_enabled(id))
    }

    /// Whether `ttl` is enabled (one atomic load).
    pub fn ttl(&self) -> bool {
        self.on(self.ttl)
    }

    /// Whether `record_meta_v2` is enabled.
    pub fn record_meta_v2(&self) -> bool {
        self.on(self.record_meta_v2)
    }

    /// Whether `value_checksums` is enabled.
    pub fn value_checksums(&self) -> bool {
        self.on(self.value_checksums)
    }

    /// The id of a flag kv checks, when the release supports it.
    pub fn id(&self, name: &str) -> Option<FlagId> {
        match name {
            n if n == RECORD_META_V2.name => self.record_meta_v2,
            n if n == TTL.name => self.ttl,
            n if n == VALUE_CHECKSUMS.name => self.value_checksums,
            _ => None,
        }
    }

    /// The bits.
    pub fn bits(&self) -> &Flags {
        &self.bits
    }

    /// A receiver that changes whenever the bit of one of `flags` flips (a
    /// trigger for the table migrations: they follow the bits, not the
    /// store). The returned task must be kept running (and aborted with the node).
    pub fn changes(&self, flags: &[&str]) -> (watch::Receiver<u64>, tokio::task::JoinSet<()>) {
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let mut tasks = tokio::task::JoinSet::new();
        for id in flags.iter().filter_map(|f| self.id(f)) {
            let (bits, tx) = (self.bits.clone(), tx.clone());
            tasks.spawn(async move {
                loop {
                    bits.wait_enabled(id).await;
                    tx.send_modify(|n| *n += 1);
                    bits.wait_disabled(id).await;
                    tx.send_modify(|n| *n += 1);
                }
            });
        }
        (rx, tasks)
    }
}

impl Gates for KvFlags {
    fn flag_enabled(&self, name: &str) -> bool {
        self.on(self.id(name))
    }

    fn cluster_has_feature(&self, name: &str) -> bool {
        rollgate::features::cluster_has_feature(&self.view.borrow(), name)
    }
}

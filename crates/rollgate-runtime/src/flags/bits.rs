//! The hot path: one bit per registered flag in a few atomic words.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::registry::{FlagId, FlagRegistry};
use crate::cluster::ClusterView;

/// The enabled flags of a node, as bits indexed by [`FlagId`].
///
/// [`Flags::is_enabled`] is one atomic load and a bit test. The bits are set
/// from the node's cluster view, which the node publishes only after writing
/// its local copy; a flag's bit is set only once its record says
/// **enabled** (not while it is being enabled), so data gated by a flag is
/// never produced before the store says so (I1). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Flags {
    words: Arc<[AtomicU64]>,
    changes: Arc<watch::Sender<u64>>,
}

impl Flags {
    /// All flags of `registry` disabled.
    pub fn new(registry: &FlagRegistry) -> Flags {
        let n = registry.len().div_ceil(64).max(1);
        let words: Arc<[AtomicU64]> = (0..n).map(|_| AtomicU64::new(0)).collect();
        Flags { words, changes: Arc::new(watch::Sender::new(0)) }
    }

    /// Whether the flag is enabled (false for an id of another registry).
    #[inline]
    pub fn is_enabled(&self, id: FlagId) -> bool {
        let i = id.index();
        match self.words.get(i >> 6) {
            Some(w) => w.load(Ordering::Acquire) & (1u64 << (i & 63)) != 0,
            None => false,
        }
    }

    /// Waits until the flag is enabled.
    pub async fn wait_enabled(&self, id: FlagId) {
        self.wait_for(id, true).await
    }

    /// Waits until the flag is disabled (e.g. a reversible flag being
    /// disabled: stop producing data that needs it).
    pub async fn wait_disabled(&self, id: FlagId) {
        self.wait_for(id, false).await
    }

    async fn wait_for(&self, id: FlagId, enabled: bool) {
        let mut rx = self.changes.subscribe();
        loop {
            if self.is_enabled(id) == enabled {
                return;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`: unreachable, but never spin.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The bits a view implies.
    pub(crate) fn words_for(registry: &FlagRegistry, view: &ClusterView) -> Vec<u64> {
        let mut words = vec![0u64; registry.len().div_ceil(64).max(1)];
        for (id, decl) in registry.iter() {
            if view.flags.get(decl.name()).is_some_and(|r| r.is_enabled()) {
                words[id.index() >> 6] |= 1u64 << (id.index() & 63);
            }
        }
        words
    }

    /// Stores new bits and wakes waiters.
    pub(crate) fn store(&self, words: &[u64]) {
        let mut changed = false;
        for (w, new) in self.words.iter().zip(words) {
            if w.swap(*new, Ordering::AcqRel) != *new {
                changed = true;
            }
        }
        if changed {
            self.changes.send_modify(|g| *g += 1);
        }
    }

    /// The ids of the enabled flags.
    pub fn enabled_ids(&self) -> Vec<FlagId> {
        let mut out = Vec::new();
        for (wi, w) in self.words.iter().enumerate() {
            let bits = w.load(Ordering::Acquire);
            for b in 0..64 {
                if bits & (1u64 << b) != 0 {
                    out.push(FlagId((wi * 64 + b) as u32));
                }
            }
        }
        out
    }
}

//! The hot path: one bit per registered flag in a fixed array of atomic words.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::registry::{FlagId, FlagRegistry, MAX_WORDS};

/// The enabled flags of a node, as bits indexed by [`FlagId`].
///
/// [`Flags::is_enabled`] is one atomic load and a bit test: the id is a
/// 4-byte index whose word and bit are a shift and a mask away, and the
/// words are a fixed-size array behind a thin pointer, indexed with a mask
/// that proves the index in range (no bounds check). The bits are set from the node's cluster view, which
/// the node publishes only after writing its local copy; a flag's bit is set
/// only once its record says **enabled** (not while it is being enabled),
/// so data gated by a flag is never produced before the store says so (I1).
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Flags {
    words: Arc<[AtomicU64; MAX_WORDS]>,
    changes: Arc<watch::Sender<u64>>,
}

impl Flags {
    /// All flags of `registry` disabled.
    pub fn new(_registry: &FlagRegistry) -> Flags {
        Flags { words: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))), changes: Arc::new(watch::Sender::new(0)) }
    }

    /// Whether the flag is enabled. `id` must come from this node's
    /// registry (an id of another registry reads some other bit).
    #[inline(always)]
    pub fn is_enabled(&self, id: FlagId) -> bool {
        (self.words[id.word() & (MAX_WORDS - 1)].load(Ordering::Acquire) >> id.bit()) & 1 != 0
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

    /// Stores new bits (one per registry flag, in id order) and wakes waiters.
    pub(crate) fn store_bits(&self, bits: &[bool]) {
        let mut words = [0u64; MAX_WORDS];
        for (i, on) in bits.iter().enumerate().take(MAX_WORDS * 64) {
            if *on {
                let id = FlagId::new(i);
                words[id.word()] |= id.mask();
            }
        }
        let mut changed = false;
        for (w, new) in self.words.iter().zip(words) {
            if w.swap(new, Ordering::AcqRel) != new {
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
                    out.push(FlagId::new(wi * 64 + b));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::registry::MAX_FLAGS;

    /// Every id reads its own bit and no other, in both words.
    #[test]
    fn each_flag_id_reads_its_own_bit_only() {
        let flags = Flags {
            words: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
            changes: Arc::new(watch::Sender::new(0)),
        };
        for on in 0..MAX_FLAGS {
            let bits: Vec<bool> = (0..MAX_FLAGS).map(|i| i == on).collect();
            flags.store_bits(&bits);
            for i in 0..MAX_FLAGS {
                assert_eq!(flags.is_enabled(FlagId::new(i)), i == on, "flag {i} with only {on} set");
            }
            assert_eq!(flags.enabled_ids(), vec![FlagId::new(on)]);
        }
    }
}

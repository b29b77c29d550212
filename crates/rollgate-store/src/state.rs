//! What the embedded store's state machine (`engine`) and its redb file
//! (`redb_file`) exchange: the state loaded at open and one planned change.
//! A leaf, so that neither of the two imports the other's internals.

use std::collections::{BTreeMap, VecDeque};

use super::{KeyValue, LeaseId, Revision, WatchBatch};

/// What a store file holds, as loaded at open.
pub(crate) struct LoadedState {
    pub(crate) revision: Revision,
    pub(crate) compacted: Revision,
    pub(crate) next_lease: LeaseId,
    pub(crate) kvs: BTreeMap<String, KeyValue>,
    pub(crate) log: VecDeque<WatchBatch>,
    pub(crate) leases: BTreeMap<LeaseId, i64>,
}

/// One planned change: the new state of every key it touches, the events of
/// the new revision, lease changes and the new counters.
#[derive(Debug, Default)]
pub(crate) struct Change {
    pub(crate) writes: Vec<(String, Option<KeyValue>)>,
    pub(crate) batch: Option<WatchBatch>,
    pub(crate) leases: Vec<(LeaseId, Option<i64>)>,
    pub(crate) revision: Revision,
    pub(crate) compacted: Revision,
    /// The log below `compacted` is dropped.
    pub(crate) prune_log: bool,
    pub(crate) next_lease: LeaseId,
}

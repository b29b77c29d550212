//! The embedded stores (`mem:` and `redb:`): one in-process state machine
//! with etcd semantics. Every change is planned against the current state
//! without touching it, made durable (redb) and only then applied in memory
//! and sent to the watchers, all under one lock: a failed commit changes
//! nothing, and a watch registered at revision R sees exactly the changes
//! after R.
//!
//! Leases use the process clock: a lease expires `ttl` seconds after its last
//! keep-alive. After a restart of the embedded store every lease gets a full
//! TTL again (the clock of the previous process is gone).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::redb_file::RedbFile;
use super::state::{Change, LoadedState};
use super::{
    EventKind, KeyValue, LeaseId, Limits, Listing, MetaStore, OpResponse, Revision, StoreError, StoreOptions, Txn,
    TxnOp, TxnResponse, WatchBatch, WatchEvent, WatchStream,
};

/// Largest lease TTL, in seconds (one year).
pub(crate) const MAX_TTL_S: i64 = 365 * 24 * 3600;
/// How often the reaper looks for expired leases.
const REAP_INTERVAL: Duration = Duration::from_millis(100);

struct Lease {
    ttl_s: i64,
    deadline: Instant,
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<WatchBatch>,
    lagged: Arc<AtomicBool>,
}

struct State {
    revision: Revision,
    /// Watches from a revision below this one are refused (etcd's compact revision).
    compacted: Revision,
    next_lease: LeaseId,
    kvs: BTreeMap<String, KeyValue>,
    log: VecDeque<WatchBatch>,
    leases: BTreeMap<LeaseId, Lease>,
    watchers: Vec<Watcher>,
}

struct Engine {
    describe: String,
    limits: Limits,
    event_log_revisions: usize,
    file: Option<RedbFile>,
    state: Mutex<State>,
}

/// A `mem:` or `redb:` store.
#[derive(Clone)]
pub(crate) struct EngineStore {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for EngineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EngineStore({})", self.engine.describe)
    }
}

impl EngineStore {
    pub(crate) fn open_mem(options: StoreOptions) -> Self {
        let state = LoadedState {
            revision: 1,
            compacted: 0,
            next_lease: 1,
            kvs: BTreeMap::new(),
            log: VecDeque::new(),
            leases: BTreeMap::new(),
        };
        Self::start("mem:".into(), options, None, state)
    }

    pub(crate) async fn open_redb(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let owned = path.to_path_buf();
        let (file, state) = tokio::task::spawn_blocking(move || RedbFile::open(&owned)).await.map_err(|e| {
            StoreError::Backend { endpoint: format!("redb:{}", path.display()), reason: e.to_string() }
        })??;
        Ok(Self::start(format!("redb:{}", path.display()), options, Some(file), state))
    }

    fn start(describe: String, options: StoreOptions, file: Option<RedbFile>, loaded: LoadedState) -> Self {
        let now = Instant::now();
        let leases = loaded
            .leases
            .into_iter()
            .map(|(id, ttl_s)| (id, Lease { ttl_s, deadline: now + Duration::from_secs(ttl_s as u64) }))
            .collect();
        let state = State {
            revision: loaded.revision,
            compacted: loaded.compacted,
            next_lease: loaded.next_lease,
            kvs: loaded.kvs,
            log: loaded.log,
            leases,
            watchers: Vec::new(),
        };
        let engine = Arc::new(Engine {
            describe,
            limits: options.limits,
            event_log_revisions: options.event_log_revisions.max(1),
            file,
            state: Mutex::new(state),
        });
        spawn_reaper(Arc::downgrade(&engine));
        EngineStore { engine }
    }

    /// Runs `f` under the state lock after expiring due leases; off the async
    /// threads when the store is durable (a commit waits for the disk).
    async fn exec<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine, &mut State) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let engine = self.engine.clone();
        let run = move || {
            let mut state = engine.lock();
            engine.expire_due(&mut state, Instant::now())?;
            f(&engine, &mut state)
        };
        if self.engine.file.is_some() {
            tokio::task::spawn_blocking(run)
                .await
                .map_err(|e| StoreError::Backend { endpoint: self.engine.describe.clone(), reason: e.to_string() })?
        } else {
            run()
        }
    }
}

fn spawn_reaper(engine: Weak<Engine>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        let mut tick = tokio::time::interval(REAP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(engine) = engine.upgrade() else { return };
            let due = {
                let state = engine.lock();
                let now = Instant::now();
                state.leases.values().any(|l| l.deadline <= now)
            };
            if !due {
                continue;
            }
            let run = move || {
                let mut state = engine.lock();
                if let Err(e) = engine.expire_due(&mut state, Instant::now()) {
                    tracing::warn!(store = %engine.describe, error = %e, "expiring leases failed; retrying");
                }
            };
            let _ = tokio::task::spawn_blocking(run).await;
        }
    });
}

impl Engine {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as it was before the
        // change (changes are applied only after they are planned and durable).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Persists and applies a change; notifies watchers.
    fn commit(&self, state: &mut State, mut change: Change) -> Result<(), StoreError> {
        if let Some(batch) = &change.batch {
            let retained = state.log.len() + 1;
            if retained > self.event_log_revisions {
                let excess = retained - self.event_log_revisions;
                let first_kept =
                    state.log.iter().map(|b| b.revision).chain([batch.revision]).nth(excess).unwrap_or(batch.revision);
                change.compacted = change.compacted.max(first_kept);
                change.prune_log = true;
            }
        }
        if let Some(file) = &self.file {
            file.persist(&change)?;
        }
        for (key, entry) in change.writes {
            match entry {
                Some(kv) => {
                    state.kvs.insert(key, kv);
                }
                None => {
                    state.kvs.remove(&key);
                }
            }
        }
        let now = Instant::now();
        for (id, ttl) in change.leases {
            match ttl {
                Some(ttl_s) => {
                    state.leases.insert(id, Lease { ttl_s, deadline: now + Duration::from_secs(ttl_s as u64) });
                }
                None => {
                    state.leases.remove(&id);
                }
            }
        }
        state.revision = change.revision;
        state.next_lease = change.next_lease;
        state.compacted = change.compacted;
        if let Some(batch) = change.batch {
            state.watchers.retain(|w| {
                let events: Vec<WatchEvent> =
                    batch.events.iter().filter(|e| e.key.starts_with(&w.prefix)).cloned().collect();
                if events.is_empty() {
                    return !w.tx.is_closed();
                }
                match w.tx.try_send(WatchBatch { revision: batch.revision, events }) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        w.lagged.store(true, Ordering::SeqCst);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            state.log.push_back(batch);
        }
        if change.prune_log {
            // The log is in revision order: drop from the front, O(pruned).
            while state.log.front().is_some_and(|b| b.revision < state.compacted) {
                state.log.pop_front();
            }
        }
        Ok(())
    }

    fn empty_change(state: &State) -> Change {
        Change {
            revision: state.revision,
            compacted: state.compacted,
            next_lease: state.next_lease,
            ..Change::default()
        }
    }

    /// Deletes the keys of the given leases at one new revision and drops the leases.
    fn drop_leases(&self, state: &mut State, ids: &[LeaseId]) -> Result<(), StoreError> {
        let mut change = Self::empty_change(state);
        let revision = state.revision + 1;
        let mut events = Vec::new();
        for (key, kv) in &state.kvs {
            if kv.lease.is_some_and(|l| ids.contains(&l)) {
                change.writes.push((key.clone(), None));
                events.push(WatchEvent {
                    kind: EventKind::Delete,
                    key: key.clone(),
                    value: Vec::new(),
                    revision,
                    create_revision: 0,
                });
            }
        }
        if !events.is_empty() {
            change.revision = revision;
            change.batch = Some(WatchBatch { revision, events });
        }
        change.leases = ids.iter().map(|id| (*id, None)).collect();
        self.commit(state, change)
    }

    fn expire_due(&self, state: &mut State, now: Instant) -> Result<(), StoreError> {
        let expired: Vec<LeaseId> = state.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        if expired.is_empty() {
            return Ok(());
        }
        tracing::debug!(store = %self.describe, leases = ?expired, "leases expired");
        self.drop_leases(state, &expired)
    }

    fn txn(&self, state: &mut State, txn: &Txn) -> Result<TxnResponse, StoreError> {
        let succeeded = txn.compares.iter().all(|c| c.evaluate(state.kvs.get(&c.key)));
        let ops = if succeeded { &txn.success } else { &txn.failure };
        let revision = state.revision + 1;
        let mut overlay: BTreeMap<&str, Option<KeyValue>> = BTreeMap::new();
        let mut events = Vec::new();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let current = match overlay.get(op.key()) {
                Some(v) => v.clone(),
                None => state.kvs.get(op.key()).cloned(),
            };
            match op {
                TxnOp::Put { key, value, lease } => {
                    if let Some(lease) = lease
                        && !state.leases.contains_key(lease)
                    {
                        return Err(StoreError::LeaseNotFound { lease: *lease });
                    }
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: current.as_ref().map_or(revision, |c| c.create_revision),
                        mod_revision: revision,
                        version: current.as_ref().map_or(1, |c| c.version + 1),
                        lease: *lease,
                    };
                    events.push(WatchEvent {
                        kind: EventKind::Put,
                        key: key.clone(),
                        value: value.clone(),
                        revision,
                        create_revision: kv.create_revision,
                    });
                    overlay.insert(key, Some(kv));
                    responses.push(OpResponse::Put);
                }
                TxnOp::Delete { key } => {
                    let deleted = if current.is_some() {
                        overlay.insert(key, None);
                        events.push(WatchEvent {
                            kind: EventKind::Delete,
                            key: key.clone(),
                            value: Vec::new(),
                            revision,
                            create_revision: 0,
                        });
                        1
                    } else {
                        0
                    };
                    responses.push(OpResponse::Delete { deleted });
                }
                TxnOp::Get { .. } => responses.push(OpResponse::Get(current)),
            }
        }
        if events.is_empty() {
            return Ok(TxnResponse { succeeded, revision: state.revision, responses });
        }
        let mut change = Self::empty_change(state);
        change.revision = revision;
        change.writes = overlay.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        change.batch = Some(WatchBatch { revision, events });
        self.commit(state, change)?;
        Ok(TxnResponse { succeeded, revision, responses })
    }
}

#[async_trait::async_trait]
impl MetaStore for EngineStore {
    fn describe(&self) -> String {
        self.engine.describe.clone()
    }

    fn limits(&self) -> &Limits {
        &self.engine.limits
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.engine.limits.check_key(key)?;
        let key = key.to_string();
        self.exec(move |_, state| Ok(state.kvs.get(&key).cloned())).await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        if !prefix.is_empty() {
            self.engine.limits.check_key(prefix)?;
        }
        let prefix = prefix.to_string();
        self.exec(move |engine, state| {
            let max = engine.limits.max_list_keys;
            let kvs: Vec<KeyValue> = state
                .kvs
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .take(max + 1)
                .map(|(_, v)| v.clone())
                .collect();
            if kvs.len() > max {
                return Err(StoreError::TooManyKeys { prefix: rollgate_util::shorten(&prefix), max });
            }
            Ok(Listing { revision: state.revision, kvs })
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        txn.validate(&self.engine.limits)?;
        self.exec(move |engine, state| engine.txn(state, &txn)).await
    }

    async fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<WatchStream, StoreError> {
        if !prefix.is_empty() {
            self.engine.limits.check_key(prefix)?;
        }
        let depth = self.engine.limits.max_watch_queue.max(1);
        let prefix = prefix.to_string();
        let lagged = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(depth);
        let watcher_prefix = prefix.clone();
        let watcher_lagged = lagged.clone();
        let (replay, from) = self
            .exec(move |_, state| {
                let from = from.unwrap_or(state.revision + 1).max(1);
                if from < state.compacted {
                    return Err(StoreError::Compacted { requested: from, compacted: state.compacted });
                }
                let replay: VecDeque<WatchBatch> = state
                    .log
                    .iter()
                    .filter(|b| b.revision >= from)
                    .filter_map(|b| {
                        let events: Vec<WatchEvent> =
                            b.events.iter().filter(|e| e.key.starts_with(&watcher_prefix)).cloned().collect();
                        (!events.is_empty()).then_some(WatchBatch { revision: b.revision, events })
                    })
                    .collect();
                state.watchers.push(Watcher { prefix: watcher_prefix, tx, lagged: watcher_lagged });
                Ok((replay, from))
            })
            .await?;
        struct Cursor {
            replay: VecDeque<WatchBatch>,
            rx: mpsc::Receiver<WatchBatch>,
            lagged: Arc<AtomicBool>,
            prefix: String,
            depth: usize,
            from: Revision,
            done: bool,
        }
        let cursor = Cursor { replay, rx, lagged, prefix, depth, from, done: false };
        Ok(Box::pin(futures::stream::unfold(cursor, |mut c| async move {
            if c.done {
                return None;
            }
            if let Some(batch) = c.replay.pop_front() {
                return Some((Ok(batch), c));
            }
            // A watch from a future revision skips what comes before it.
            let next = loop {
                match c.rx.recv().await {
                    Some(batch) if batch.revision < c.from => continue,
                    other => break other,
                }
            };
            match next {
                Some(batch) => Some((Ok(batch), c)),
                None => {
                    c.done = true;
                    if c.lagged.load(Ordering::SeqCst) {
                        let err = StoreError::WatchLagged { prefix: rollgate_util::shorten(&c.prefix), depth: c.depth };
                        Some((Err(err), c))
                    } else {
                        None
                    }
                }
            }
        })))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.exec(move |engine, state| {
            if revision > state.revision {
                return Err(StoreError::Backend {
                    endpoint: engine.describe.clone(),
                    reason: format!("cannot compact at revision {revision}: the store is at {}", state.revision),
                });
            }
            if revision <= state.compacted {
                return Ok(());
            }
            let mut change = Engine::empty_change(state);
            change.compacted = revision;
            change.prune_log = true;
            engine.commit(state, change)
        })
        .await
    }

    async fn lease_grant(&self, ttl_s: i64) -> Result<(LeaseId, i64), StoreError> {
        if !(1..=MAX_TTL_S).contains(&ttl_s) {
            return Err(StoreError::InvalidTtl { ttl_s, max: MAX_TTL_S });
        }
        self.exec(move |engine, state| {
            let id = state.next_lease;
            let mut change = Engine::empty_change(state);
            change.next_lease = id + 1;
            change.leases.push((id, Some(ttl_s)));
            engine.commit(state, change)?;
            Ok((id, ttl_s))
        })
        .await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<i64, StoreError> {
        self.exec(move |_, state| match state.leases.get_mut(&lease) {
            Some(l) => {
                l.deadline = Instant::now() + Duration::from_secs(l.ttl_s as u64);
                Ok(l.ttl_s)
            }
            None => Err(StoreError::LeaseNotFound { lease }),
        })
        .await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.exec(move |engine, state| {
            if !state.leases.contains_key(&lease) {
                return Err(StoreError::LeaseNotFound { lease });
            }
            engine.drop_leases(state, &[lease])
        })
        .await
    }
}

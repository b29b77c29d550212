//! The node-side cluster handle: a cached [`ClusterView`] kept current by a
//! watch, served as-is while the store is unreachable, and resumed from the
//! last revision seen (re-listing when that history was compacted).
//!
//! [`ClusterHandle`] publishes one view per applied revision
//! ([`ClusterHandle::subscribe`], [`ClusterHandle::watch_view`]), after the
//! local copy of the flags was written when they changed (I2). When the store is
//! unreachable (a watch error, or a failed periodic probe) it keeps serving
//! the cached view, says so (`tracing::warn!` and [`StoreStatus`]: reachable,
//! since, last error, revision, relists), refuses membership and flag changes
//! with `ClusterError::StoreUnavailable`, and reconnects with bounded backoff.
//! Guarded by `tests/it/cluster_store_outage.rs` (a real etcd killed and
//! restarted under a node).
//!
//! **Confirmations** ([`ClusterHandle::watch_confirmed`]): a watch can stall
//! silently, so the handle also probes the store (every `probe_interval_ms`)
//! for the epoch key's mod revision. When the published view has that epoch
//! revision (or a later one), the view is known current as of the moment the
//! probe was sent, and that moment (this node's monotonic clock) is
//! published. A node serves only while its last confirmation is recent (I11);
//! every membership and flag change moves the epoch, so a node that cannot
//! confirm its view may miss a disable, and stops serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Cluster, ClusterError, ClusterView, Committed, LocalCopy, NodeRecord, UpdateError, ViewOp, ViewState};
use rollgate_store::{Revision, StoreError, WatchBatch};

/// Options of a [`ClusterHandle`].
#[derive(Clone, Debug)]
pub struct HandleOptions {
    /// How often the store is probed while the watch is quiet (a watch on a
    /// dead connection may never fail by itself).
    pub probe_interval_ms: u64,
    /// How long a probe may take before the store counts as unreachable.
    pub probe_timeout_ms: u64,
    /// First reconnect delay; doubled per failure up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    /// Longest reconnect delay.
    pub backoff_max_ms: u64,
    /// How many views [`ClusterHandle::subscribe`] buffers per subscriber.
    pub history: usize,
    /// The node's data dir: when set, the [`LocalCopy`] is written there
    /// before a change of the flags (or of the cluster) is published. A
    /// membership change alone does not rewrite it: a join would make every
    /// member write and fsync a file (the copy's epoch is informational).
    pub local_copy_dir: Option<PathBuf>,
}

impl Default for HandleOptions {
    fn default() -> Self {
        HandleOptions {
            probe_interval_ms: 1_000,
            probe_timeout_ms: 2_000,
            backoff_min_ms: 50,
            backoff_max_ms: 2_000,
            history: 1024,
            local_copy_dir: None,
        }
    }
}

/// Whether the store is reachable, as the handle last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreStatus {
    /// Whether the watch is up.
    pub reachable: bool,
    /// Since when `reachable` has had its value.
    pub since: SystemTime,
    /// The last error seen, if any.
    pub last_error: Option<String>,
    /// The revision of the cached view.
    pub revision: Revision,
    /// How many times the view was re-listed because the watch history was
    /// gone (compacted, or the watcher fell too far behind).
    pub relists: u64,
}

struct Shared {
    view: watch::Sender<Arc<ClusterView>>,
    status: watch::Sender<StoreStatus>,
    changes: broadcast::Sender<Arc<ClusterView>>,
    confirmed: watch::Sender<Instant>,
}

/// A node's live view of the cluster (see the module docs).
#[derive(Debug)]
pub struct ClusterHandle {
    cluster: Cluster,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("status", &*self.status.borrow()).finish()
    }
}

impl ClusterHandle {
    /// Reads the view once (the store must be reachable now), then follows it.
    pub async fn start(cluster: Cluster, options: HandleOptions) -> Result<ClusterHandle, ClusterError> {
        let sent = Instant::now();
        let listing = cluster.store().list(cluster.keys().root()).await?;
        let state = ViewState::from_kvs(cluster.keys().root(), &listing.kvs)?;
        let view = Arc::new(state.view(listing.revision));
        if let Some(dir) = &options.local_copy_dir {
            write_local_copy(dir.clone(), &view).await?;
        }
        let status = StoreStatus {
            reachable: true,
            since: SystemTime::now(),
            last_error: None,
            revision: view.revision,
            relists: 0,
        };
        let (changes, _) = broadcast::channel(options.history.max(1));
        let shared = Arc::new(Shared {
            view: watch::Sender::new(view.clone()),
            status: watch::Sender::new(status),
            changes,
            confirmed: watch::Sender::new(sent),
        });
        let follower =
            Follower { cluster: cluster.clone(), shared: shared.clone(), options, state, view, pending: None };
        let task = tokio::spawn(follower.run());
        Ok(ClusterHandle { cluster, shared, task })
    }

    /// The cached view (possibly stale while the store is unreachable).
    pub fn view(&self) -> Arc<ClusterView> {
        self.shared.view.borrow().clone()
    }

    /// The latest view, as a watch channel.
    pub fn watch_view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.shared.view.subscribe()
    }

    /// Every view the handle publishes, one per applied store revision, in
    /// order (a subscriber that falls `history` views behind sees a lag).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ClusterView>> {
        self.shared.changes.subscribe()
    }

    /// When the published view was last confirmed current (the send time
    /// of the probe or listing that confirmed it, on this node's monotonic
    /// clock), as a watch channel.
    pub fn watch_confirmed(&self) -> watch::Receiver<Instant> {
        self.shared.confirmed.subscribe()
    }

    /// The store status.
    pub fn status(&self) -> StoreStatus {
        self.shared.status.borrow().clone()
    }

    /// The store status, as a watch channel.
    pub fn watch_status(&self) -> watch::Receiver<StoreStatus> {
        self.shared.status.subscribe()
    }

    /// The cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Waits until the cached view reached `revision` (at most `timeout`).
    pub async fn wait_for_revision(&self, revision: Revision, timeout: Duration) -> Option<Arc<ClusterView>> {
        let mut rx = self.watch_view();
        let wait = rx.wait_for(|v| v.revision >= revision);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(v)) => Some(v.clone()),
            _ => None,
        }
    }

    fn refuse_if_unreachable(&self) -> Result<(), ClusterError> {
        let status = self.status();
        if status.reachable {
            return Ok(());
        }
        Err(ClusterError::StoreUnavailable {
            endpoint: self.cluster.store().describe(),
            reason: status.last_error.unwrap_or_else(|| "unreachable".into()),
        })
    }

    /// [`Cluster::update`], refused with [`ClusterError::StoreUnavailable`]
    /// while the store is unreachable.
    pub async fn update<E, F>(&self, f: F) -> Result<Committed, UpdateError<E>>
    where
        F: FnMut(&ClusterView) -> Result<Vec<ViewOp>, E>,
    {
        self.refuse_if_unreachable()?;
        self.cluster.update_from(Some(self.view()), f).await
    }

    /// [`Cluster::join`], refused while the store is unreachable.
    pub async fn join<E, F>(&self, record: NodeRecord, check: F) -> Result<Committed, UpdateError<E>>
    where
        F: FnMut(&ClusterView) -> Result<(), E>,
    {
        self.refuse_if_unreachable()?;
        self.cluster.join(record, check).await
    }

    /// [`Cluster::leave`], refused while the store is unreachable.
    pub async fn leave(&self, node: &str) -> Result<Committed, ClusterError> {
        self.refuse_if_unreachable()?;
        self.cluster.leave(node).await
    }

    /// [`Cluster::forget`], refused while the store is unreachable.
    pub async fn forget(&self, node: &str) -> Result<Committed, ClusterError> {
        self.refuse_if_unreachable()?;
        self.cluster.forget(node).await
    }
}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn write_local_copy(dir: PathBuf, view: &ClusterView) -> Result<(), ClusterError> {
    let copy = LocalCopy::from_view(view);
    tokio::task::spawn_blocking(move || copy.write(&dir))
        .await
        .map_err(|e| ClusterError::Metadata { root: String::new(), reason: format!("local copy writer: {e}") })??;
    Ok(())
}

/// Why the watch loop stopped.
enum Break {
    /// The store is out of reach.
    Down(String),
    /// The history is gone: re-list.
    Relist,
}

struct Follower {
    cluster: Cluster,
    shared: Arc<Shared>,
    options: HandleOptions,
    state: ViewState,
    view: Arc<ClusterView>,
    /// A probe that found the store's epoch ahead of the view: (sent, epoch
    /// revision); it confirms the view once the view reached that epoch.
    pending: Option<(Instant, Revision)>,
}

impl Follower {
    async fn run(mut self) {
        let min = Duration::from_millis(self.options.backoff_min_ms.max(1));
        let max = Duration::from_millis(self.options.backoff_max_ms.max(self.options.backoff_min_ms).max(1));
        let mut backoff = min;
        let mut relist = false;
        loop {
            let outcome = if relist { self.relist().await } else { self.follow().await };
            match outcome {
                Ok(()) => {}
                Err(Break::Relist) => {
                    relist = true;
                    continue;
                }
                Err(Break::Down(reason)) => {
                    self.mark_down(reason);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max);
                    continue;
                }
            }
            relist = false;
            backoff = min;
        }
    }

    /// Re-reads the whole view (after a compaction or a lag).
    async fn relist(&mut self) -> Result<(), Break> {
        let root = self.cluster.keys().root().to_string();
        let sent = Instant::now();
        let listing = self.cluster.store().list(&root).await.map_err(|e| Break::Down(e.to_string()))?;
        let state = ViewState::from_kvs(&root, &listing.kvs).map_err(|e| Break::Down(e.to_string()))?;
        tracing::info!(revision = listing.revision, "cluster view re-listed");
        self.state = state;
        self.shared.status.send_modify(|s| s.relists += 1);
        self.pending = Some((sent, self.state.epoch_revision));
        self.publish(listing.revision).await;
        Ok(())
    }

    /// Watches from the last revision seen until the watch breaks.
    async fn follow(&mut self) -> Result<(), Break> {
        let store = self.cluster.store().clone();
        let root = self.cluster.keys().root().to_string();
        let epoch_key = self.cluster.keys().epoch();
        let mut stream = match store.watch(&root, Some(self.view.revision + 1)).await {
            Ok(s) => s,
            Err(StoreError::Compacted { .. }) => return Err(Break::Relist),
            Err(e) => return Err(Break::Down(e.to_string())),
        };
        self.mark_up();
        let probe_every = Duration::from_millis(self.options.probe_interval_ms.max(1));
        let probe_timeout = Duration::from_millis(self.options.probe_timeout_ms.max(1));
        let mut probe = tokio::time::interval(probe_every);
        probe.tick().await;
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(batch)) => self.apply(batch).await,
                    Some(Err(StoreError::Compacted { .. } | StoreError::WatchLagged { .. })) => return Err(Break::Relist),
                    Some(Err(e)) => return Err(Break::Down(e.to_string())),
                    None => return Err(Break::Down("the watch ended".into())),
                },
                _ = probe.tick() => {
                    let sent = Instant::now();
                    match tokio::time::timeout(probe_timeout, store.get(&epoch_key)).await {
                        Ok(Ok(kv)) => {
                            let epoch_revision = kv.map_or(0, |kv| kv.mod_revision);
                            self.pending = Some((sent, epoch_revision));
                            self.confirm();
                        }
                        Ok(Err(e)) => return Err(Break::Down(e.to_string())),
                        Err(_) => return Err(Break::Down(format!("no answer within {} ms", probe_timeout.as_millis()))),
                    }
                }
            }
        }
    }

    async fn apply(&mut self, batch: WatchBatch) {
        let root = self.cluster.keys().root().to_string();
        for ev in &batch.events {
            if let Err(e) = self.state.apply(&root, ev.kind, &ev.key, &ev.value, ev.revision) {
                tracing::warn!(key = %ev.key, error = %e, "ignoring a cluster key that does not decode");
            }
        }
        self.publish(batch.revision).await;
    }

    /// Publishes the pending confirmation once the published view reached
    /// the epoch revision the probe saw.
    fn confirm(&mut self) {
        if let Some((sent, epoch_revision)) = self.pending
            && self.view.epoch_revision >= epoch_revision
        {
            self.pending = None;
            self.shared.confirmed.send_if_modified(|at| {
                let newer = sent > *at;
                if newer {
                    *at = sent;
                }
                newer
            });
        }
    }

    /// Publishes the view at `revision`, writing the local copy first when
    /// the epoch or the flags changed.
    async fn publish(&mut self, revision: Revision) {
        let view = Arc::new(self.state.view(revision));
        let changed = view.flags != self.view.flags || view.cluster_id != self.view.cluster_id;
        if changed && let Some(dir) = &self.options.local_copy_dir {
            // Not acting on a change before it is recorded: on failure the
            // previous view stays published; the next change retries.
            if let Err(e) = write_local_copy(dir.clone(), &view).await {
                tracing::error!(error = %e, "cannot write the local cluster copy; not acting on the change");
                self.shared.status.send_modify(|s| s.last_error = Some(e.to_string()));
                return;
            }
        }
        self.view = view.clone();
        self.shared.status.send_modify(|s| s.revision = revision);
        self.shared.view.send_replace(view.clone());
        let _ = self.shared.changes.send(view);
        self.confirm();
    }

    fn mark_down(&self, reason: String) {
        self.shared.status.send_if_modified(|s| {
            let was_up = s.reachable;
            if was_up {
                tracing::warn!(
                    store = %self.cluster.store().describe(),
                    error = %reason,
                    revision = s.revision,
                    "metadata store unreachable; serving the cached cluster view and refusing changes"
                );
                s.reachable = false;
                s.since = SystemTime::now();
            }
            let changed = was_up || s.last_error.as_deref() != Some(reason.as_str());
            s.last_error = Some(reason.clone());
            changed
        });
    }

    fn mark_up(&self) {
        self.shared.status.send_if_modified(|s| {
            if s.reachable {
                return false;
            }
            tracing::info!(store = %self.cluster.store().describe(), revision = s.revision, "metadata store reachable again");
            s.reachable = true;
            s.since = SystemTime::now();
            true
        });
    }
}

//! [`NodeHandle`]: a running node, what it reports, and its graceful stop
//! and its kill.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::api::{Api, StorageStatus};
use super::catchup::{self, CatchUpError};
use super::config::Addresses;
use super::error::NodeError;
use super::shared::{ServingState, Shared, SyncStats};
use crate::peer::link::{LinkError, PeerStatus};
use crate::record::Record;
use crate::releases::Release;
use crate::storage::StorageError;

/// A running node (see [`start()`](super::start())).
pub struct NodeHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) tasks: JoinSet<()>,
    pub(super) http_stop: Option<oneshot::Sender<()>>,
    pub(super) http_task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("node", &self.shared.node_id)
            .field("release", &self.shared.release.name)
            .field("addresses", &self.shared.addresses)
            .finish()
    }
}

impl NodeHandle {
    /// The node id.
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// The release it runs as.
    pub fn release(&self) -> &'static Release {
        self.shared.release
    }

    /// Where it serves (the bound ports, also when configured as `:0`).
    pub fn addresses(&self) -> Addresses {
        self.shared.addresses
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.shared.cluster_id
    }

    /// Its state.
    pub fn state(&self) -> ServingState {
        self.shared.state()
    }

    /// Whether it serves requests.
    pub fn is_ready(&self) -> bool {
        self.state() == ServingState::Ready
    }

    /// Waits until it serves (at most `timeout`); `false` on timeout or stop.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.state.subscribe();
        let ready = rx.wait_for(|s| matches!(s, ServingState::Ready | ServingState::Stopping | ServingState::Stopped));
        matches!(tokio::time::timeout(timeout, ready).await, Ok(Ok(s)) if *s == ServingState::Ready)
    }

    /// The client API (what the HTTP routes call).
    pub fn api(&self) -> Api {
        Api { shared: self.shared.clone() }
    }

    /// rollgate's node runtime of this node (flags, membership, the admin
    /// API's operations), while it runs. Do not keep the clone past
    /// [`stop`](Self::stop) or [`kill`](Self::kill): it would keep the
    /// node's liveness lease alive.
    pub fn runtime(&self) -> Option<rollgate::node::Node> {
        self.shared.runtime()
    }

    /// The node's `records` unit.
    pub async fn storage_status(&self) -> Result<StorageStatus, StorageError> {
        self.api().storage_status().await
    }

    /// Its links to peers (agreed protocol and transport versions, refusals).
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared.links.status()
    }

    /// The link to `peer` once it is connected or refused (at most `timeout`).
    pub async fn wait_peer(&self, peer: &str, timeout: Duration) -> Result<PeerStatus, LinkError> {
        self.shared.links.wait_status(peer, timeout).await
    }

    /// Waits (at most `timeout`) until every write this node sent to a peer
    /// so far was answered; `false` on timeout.
    pub async fn flush_replication(&self, timeout: Duration) -> bool {
        self.shared.links.flush(timeout).await
    }

    /// Group commits of its data file since it started.
    pub fn group_commits(&self) -> u64 {
        self.shared.storage.commits_made()
    }

    /// The last catch-up from each peer.
    pub fn sync_stats(&self) -> BTreeMap<String, SyncStats> {
        self.shared.sync_stats.borrow().clone()
    }

    /// Waits (at most `timeout`) until this node has made `pulls` pulls from
    /// `peer` since it started, and returns the last one's stats.
    pub async fn wait_pulls(&self, peer: &str, pulls: u64, timeout: Duration) -> Option<SyncStats> {
        let mut rx = self.shared.sync_stats.subscribe();
        let done = rx.wait_for(|all| all.get(peer).is_some_and(|s| s.pulls >= pulls));
        let all = tokio::time::timeout(timeout, done).await.ok()?.ok()?;
        all.get(peer).cloned()
    }

    /// The stored record of `key` on this node (tombstones and expired
    /// values included), for verification.
    pub async fn local_record(&self, key: &str) -> Result<Option<Record>, StorageError> {
        self.shared.storage.get(key).await
    }

    /// Compares this node's data with `peer`'s by digest ranges (the peer
    /// must speak protocol v3): the number of ranges compared and the ranges
    /// that differ. A verification helper; nothing is copied.
    pub async fn compare_with(&self, peer: &str) -> Result<catchup::Comparison, CatchUpError> {
        catchup::compare(&self.shared, peer).await
    }

    /// Stops gracefully: refuses new requests, finishes the running ones,
    /// leaves the membership (declared stopped), closes the peer links and
    /// releases the data dir.
    pub async fn stop(mut self) -> Result<(), NodeError> {
        let s = self.shared.clone();
        s.set_state(ServingState::Stopping);
        self.stop_http(Duration::from_secs(5)).await;
        if !s.links.flush(Duration::from_secs(5)).await {
            tracing::warn!(node = %s.node_id, "replication to peers still running after 5 s; stopping anyway");
        }
        // Migrations and plugins first: a batch that is cut short resumes from its checkpoint.
        self.shutdown_tasks().await;
        let runtime = s.runtime.lock().unwrap_or_else(|p| p.into_inner()).take();
        let left = match &runtime {
            Some(rt) => rt.stop().await,
            None => Ok(()),
        };
        drop(runtime);
        s.links.close_all().await;
        s.runner.lock().unwrap_or_else(|p| p.into_inner()).take();
        s.storage.close().await;
        s.set_state(ServingState::Stopped);
        tracing::info!(node = %s.node_id, "node stopped");
        left.map_err(NodeError::Runtime)
    }

    /// Stops abruptly, as a crash would: no leave (the member stays
    /// registered, running until its lease expires), connections dropped,
    /// HTTP connections fail. The data dir is released (so the node can be
    /// restarted on it in the same process).
    pub async fn kill(mut self) {
        let s = self.shared.clone();
        s.set_state(ServingState::Stopped);
        // Every HTTP connection fails now (the server task owns them);
        // closing them drops the admin API's handle on the runtime, whose
        // liveness must stop with it.
        if let Some(task) = self.http_task.take() {
            task.abort();
            let _ = task.await;
        }
        self.http_stop.take();
        self.shutdown_tasks().await;
        drop(s.runtime.lock().unwrap_or_else(|p| p.into_inner()).take());
        s.links.close_all().await;
        s.runner.lock().unwrap_or_else(|p| p.into_inner()).take();
        s.storage.close().await;
        tracing::info!(node = %s.node_id, "node killed");
    }

    /// Stops the HTTP server: no new connections, idle ones closed, running
    /// requests given `grace` to finish (then their connections fail).
    async fn stop_http(&mut self, grace: Duration) {
        if let Some(stop) = self.http_stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.http_task.take()
            && tokio::time::timeout(grace, &mut task).await.is_err()
        {
            tracing::warn!(node = %self.shared.node_id, "HTTP requests still running after {} ms; closing them", grace.as_millis());
            task.abort();
            let _ = task.await;
        }
    }

    async fn shutdown_tasks(&mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let mut bg = std::mem::take(&mut *self.shared.background.lock().unwrap_or_else(|p| p.into_inner()));
        bg.abort_all();
        while bg.join_next().await.is_some() {}
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.tasks.abort_all();
        if let Some(t) = &self.http_task {
            t.abort();
        }
        self.shared.background.lock().unwrap_or_else(|p| p.into_inner()).abort_all();
    }
}

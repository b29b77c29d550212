//! Liveness: a node's `live/<node>` key on a lease it keeps alive.
//!
//! The key is written when the lease is granted (and again after a lease
//! expired and was granted anew); between those, keep-alives alone keep it,
//! so a running cluster writes nothing per member per heartbeat and no
//! member's view changes on another member's heartbeat.
//!
//! Every keep-alive the store answers is a **confirmation**: the lease (and
//! so the live key) lives at least `ttl` after the keep-alive was *sent*.
//! [`Liveness::watch`] publishes the send time of the last one, on this
//! node's monotonic clock; the node stops serving when it cannot confirm its
//! lease in time (I11: a node whose lease the store may have expired must
//! not act as a member).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Cluster, ClusterError, LiveRecord, now_ms, validate_node_id};
use rollgate_store::{Compare, LeaseId, MetaStore, StoreError, Txn, TxnOp, encode_json};

/// What this node last confirmed about its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The lease the live key is attached to now.
    pub lease: LeaseId,
    /// When the last keep-alive the store answered was sent (this node's
    /// monotonic clock): the lease lives at least its TTL after that.
    pub confirmed_at: Instant,
    /// The store said the lease had expired (the key was gone for a while:
    /// other members saw this node stopped); a new lease was granted.
    pub regranted: bool,
}

impl Cluster {
    /// Starts keeping `node`'s live key alive on a lease of `ttl_s` seconds
    /// (refreshed every third of it). Dropping the returned [`Liveness`]
    /// stops the refreshes (as a crash would: the key expires);
    /// [`Liveness::stop`] revokes the lease at once.
    pub async fn start_liveness(&self, node: &str, ttl_s: i64) -> Result<Liveness, ClusterError> {
        validate_node_id(node)?;
        let sent = Instant::now();
        let (lease, granted) = self.store.lease_grant(ttl_s).await?;
        let beat = Heartbeat {
            store: self.store.clone(),
            live_key: self.keys.live(node),
            member_key: self.keys.member(node),
            node: node.to_string(),
            ttl_s,
        };
        beat.write(lease).await?;
        let (tx, rx) = watch::channel(LeaseStatus { lease, confirmed_at: sent, regranted: false });
        let interval = Duration::from_millis((granted.max(1) as u64 * 1000) / 3);
        let task = tokio::spawn(beat.run(lease, interval, tx));
        Ok(Liveness { store: self.store.clone(), lease, task, status: rx })
    }
}

struct Heartbeat {
    store: Arc<dyn MetaStore>,
    live_key: String,
    member_key: String,
    node: String,
    ttl_s: i64,
}

impl Heartbeat {
    /// Writes the live key on `lease`, only while the node is a member.
    async fn write(&self, lease: LeaseId) -> Result<bool, StoreError> {
        let value = encode_json(&self.live_key, &LiveRecord { lease, heartbeat_ms: now_ms() })?;
        let txn = Txn::new().when([Compare::exists(&self.member_key)]).and_then([TxnOp::put_with_lease(
            &self.live_key,
            value,
            lease,
        )]);
        Ok(self.store.txn(txn).await?.succeeded)
    }

    async fn run(self, mut lease: LeaseId, interval: Duration, status: watch::Sender<LeaseStatus>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let sent = Instant::now();
            let result = match self.store.lease_keep_alive(lease).await {
                Ok(_) => Ok(false),
                Err(StoreError::LeaseNotFound { .. }) => {
                    // Expired while the store was out of reach: a new lease and key.
                    let sent_grant = Instant::now();
                    match self.store.lease_grant(self.ttl_s).await {
                        Ok((fresh, _)) => {
                            lease = fresh;
                            match self.write(lease).await {
                                Ok(true) => {
                                    status.send_replace(LeaseStatus {
                                        lease,
                                        confirmed_at: sent_grant,
                                        regranted: true,
                                    });
                                    continue;
                                }
                                Ok(false) => Ok(true),
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(false) => {
                    status.send_modify(|s| {
                        s.lease = lease;
                        s.confirmed_at = sent;
                    });
                }
                Ok(true) => {
                    tracing::warn!(node = %self.node, "not a member any more (forgotten?); not serving until restarted")
                }
                Err(e) => tracing::warn!(node = %self.node, error = %e, "liveness heartbeat failed; retrying"),
            }
        }
    }
}

/// Keeps a node's live key alive (see [`Cluster::start_liveness`]).
#[derive(Debug)]
pub struct Liveness {
    store: Arc<dyn MetaStore>,
    lease: LeaseId,
    task: JoinHandle<()>,
    status: watch::Receiver<LeaseStatus>,
}

impl Liveness {
    /// The lease the live key was first attached to.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// The lease confirmations, as a watch channel.
    pub fn watch(&self) -> watch::Receiver<LeaseStatus> {
        self.status.clone()
    }

    /// Stops the heartbeats and revokes the lease: the live key goes at once.
    pub async fn stop(self) -> Result<(), ClusterError> {
        self.task.abort();
        let lease = self.status.borrow().lease;
        match self.store.lease_revoke(lease).await {
            Ok(()) | Err(StoreError::LeaseNotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Liveness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

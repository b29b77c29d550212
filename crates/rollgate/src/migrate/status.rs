//! Migration status: per node (published by each node's [`LocalRunner`]),
//! per service (the format records), and the cluster-wide picture any node
//! can serve (`GET /admin/upgrade/status`).
//!
//! [`LocalRunner`]: super::LocalRunner

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::service::{OwnerRecord, ServiceFormat, StepFailure, StepRecord};
use super::{Direction, Gate, MigrateError, MigrateKeys, store_err};
use crate::store::{MetaStore, decode_json};

/// What kind of migration a status describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationKind {
    /// A node-local table migration.
    Table,
    /// A service format step.
    Service,
}

/// Where a migration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// Not started, or interrupted and resumable (see `done`).
    Pending,
    /// Running now.
    Running,
    /// Finished.
    Done,
    /// The last attempt failed (see `error`); the next run retries.
    Failed,
}

/// The status of one migration on one node: what a progress bar and the
/// admin API show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrationStatus {
    /// The migration id.
    pub id: String,
    /// Table or service.
    pub kind: MigrationKind,
    /// The table or service it migrates.
    pub target: String,
    /// The node it runs on.
    pub node: String,
    /// Its gate.
    pub gate: Gate,
    /// Whether the gate was open when the status was taken (when known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_open: Option<bool>,
    /// The current (or last) pass.
    pub direction: Direction,
    /// Pending, running, done or failed.
    pub state: MigrationState,
    /// The error of a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Records processed in the current pass.
    pub done: u64,
    /// Records in the table when the pass started.
    pub total: u64,
    /// Records per second in this process's run (0 when not running).
    pub rate_per_s: f64,
    /// Seconds left at that rate, while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<u64>,
    /// When the pass started (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
}

/// A node's migrations, published at `migrations/status/<node>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub node: String,
    /// When the status was taken (ms since the Unix epoch).
    pub updated_ms: u64,
    /// Its table migrations, in registration order.
    pub migrations: Vec<MigrationStatus>,
}

/// A service's format and who migrates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service.
    pub service: String,
    /// Its format version.
    pub version: u32,
    /// Running (an owner holds the key), failed (last step failed) or done.
    pub state: MigrationState,
    /// The node running its steps now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerRecord>,
    /// The last steps committed (when, where), oldest first.
    pub history: Vec<StepRecord>,
    /// The last failure, until a step succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<StepFailure>,
}

/// A stored status entry that could not be read; reported, left as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// The key.
    pub key: String,
    /// Why.
    pub error: String,
}

/// The cluster-wide migration picture: the `migrations` part of
/// `GET /admin/upgrade/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterMigrationStatus {
    /// Every service with a format record.
    pub services: Vec<ServiceStatus>,
    /// Every node that published a status.
    pub nodes: Vec<NodeStatus>,
    /// Entries that do not decode (named, never overwritten here).
    pub unreadable: Vec<Unreadable>,
}

impl ClusterMigrationStatus {
    /// Every migration of every node, flattened (for a table).
    pub fn all_migrations(&self) -> impl Iterator<Item = &MigrationStatus> {
        self.nodes.iter().flat_map(|n| n.migrations.iter())
    }
}

/// Reads the cluster-wide migration status from the store under `root`:
/// service formats and owners, and every node's published status. An entry
/// that does not decode is listed in `unreadable` with its key; the store is
/// only read.
pub async fn cluster_status(store: &dyn MetaStore, root: &str) -> Result<ClusterMigrationStatus, MigrateError> {
    let keys = MigrateKeys::new(root);
    let mut out = ClusterMigrationStatus::default();

    let owners_prefix = keys.owners_prefix();
    let owners = store.list(&owners_prefix).await.map_err(store_err("listing the migration owners"))?;
    let mut owner_of = BTreeMap::new();
    for kv in owners.kvs {
        match decode_json::<OwnerRecord>(&kv.key, &kv.value) {
            Ok(owner) => {
                owner_of.insert(kv.key[owners_prefix.len()..].to_string(), owner);
            }
            Err(e) => out.unreadable.push(Unreadable { key: kv.key.clone(), error: e.to_string() }),
        }
    }

    let formats_prefix = keys.formats_prefix();
    let formats = store.list(&formats_prefix).await.map_err(store_err("listing the service formats"))?;
    for kv in formats.kvs {
        let service = kv.key[formats_prefix.len()..].to_string();
        match decode_json::<ServiceFormat>(&kv.key, &kv.value) {
            Ok(format) => {
                let owner = owner_of.remove(&service);
                let state = if owner.is_some() {
                    MigrationState::Running
                } else if format.failure.is_some() {
                    MigrationState::Failed
                } else {
                    MigrationState::Done
                };
                out.services.push(ServiceStatus {
                    service,
                    version: format.version,
                    state,
                    owner,
                    history: format.history,
                    failure: format.failure,
                });
            }
            Err(e) => out.unreadable.push(Unreadable { key: kv.key.clone(), error: e.to_string() }),
        }
    }
    // An owner of a service without format record yet (its first step runs).
    for (service, owner) in owner_of {
        out.services.push(ServiceStatus {
            service,
            version: 0,
            state: MigrationState::Running,
            owner: Some(owner),
            history: Vec::new(),
            failure: None,
        });
    }

    let statuses_prefix = keys.statuses_prefix();
    let statuses = store.list(&statuses_prefix).await.map_err(store_err("listing the node migration statuses"))?;
    for kv in statuses.kvs {
        let node = &kv.key[statuses_prefix.len()..];
        match decode_json::<NodeStatus>(&kv.key, &kv.value) {
            Ok(status) if status.node == node => out.nodes.push(status),
            Ok(status) => out.unreadable.push(Unreadable {
                key: kv.key.clone(),
                error: format!("the status names node {:?}, not {node:?}", rollgate_util::shorten(&status.node)),
            }),
            Err(e) => out.unreadable.push(Unreadable { key: kv.key.clone(), error: e.to_string() }),
        }
    }
    Ok(out)
}

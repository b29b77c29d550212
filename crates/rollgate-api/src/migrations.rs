//! Migrations as the admin API shows them: service format versions with
//! their owner and history, and every node's table migrations with their
//! progress (the `migrations` part of `GET /admin/upgrade/status`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// What must hold before a migration step may run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Gate {
    /// A feature flag is enabled in the metadata store.
    Flag(String),
    /// Every member of the cluster publishes a cluster feature.
    ClusterFeature(String),
}

impl Gate {
    /// A flag gate.
    pub fn flag(name: impl Into<String>) -> Gate {
        Gate::Flag(name.into())
    }

    /// A cluster feature gate.
    pub fn feature(name: impl Into<String>) -> Gate {
        Gate::ClusterFeature(name.into())
    }

    /// The flag, for a flag gate.
    pub fn flag_name(&self) -> Option<&str> {
        match self {
            Gate::Flag(f) => Some(f),
            Gate::ClusterFeature(_) => None,
        }
    }

    /// The flag or feature name.
    pub fn name(&self) -> &str {
        match self {
            Gate::Flag(n) | Gate::ClusterFeature(n) => n,
        }
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gate::Flag(n) => write!(f, "flag `{n}`"),
            Gate::ClusterFeature(n) => write!(f, "cluster feature `{n}`"),
        }
    }
}

/// Forward (upgrade) or reverse (downgrade).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Towards the newer format.
    Forward,
    /// Back to the older format.
    Reverse,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Forward => "forward",
            Direction::Reverse => "reverse",
        })
    }
}

/// One committed step, kept in the service's format record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The version before.
    pub from: u32,
    /// The version after.
    pub to: u32,
    /// The step's name.
    pub step: String,
    /// Forward or reverse.
    pub direction: Direction,
    /// The node that ran it.
    pub node: String,
    /// When it started (ms since the Unix epoch).
    pub started_ms: u64,
    /// When it was committed.
    pub finished_ms: u64,
}

/// The last failed step of a service (cleared by the next success).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailure {
    /// The version before.
    pub from: u32,
    /// The version it was heading to.
    pub to: u32,
    /// The step's name.
    pub step: String,
    /// Forward or reverse.
    pub direction: Direction,
    /// The node that ran it.
    pub node: String,
    /// The error.
    pub error: String,
    /// When it failed.
    pub at_ms: u64,
}

/// The value of `migrations/owner/<service>`, attached to the owner's lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// The owner node.
    pub node: String,
    /// Since when (ms since the Unix epoch).
    pub since_ms: u64,
    /// The lease the key is attached to.
    pub lease: i64,
}

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
    /// The newest version the answering node's release knows (its target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u32>,
    /// The closed gate holding the next step back, as the answering node sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<Gate>,
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

//! Stepwise, resumable, idempotent migrations of stored data, gated on flags
//! or cluster features.
//!
//! Two kinds, one model (Ceph's `format_version` + `upgrade_format()`):
//!
//! - **Service steps** ([`ServiceStep`], run by [`ServiceRunner`]): each
//!   service has a `format_version` in the metadata store; steps `N -> N+1`
//!   are registered in code, each behind a [`Gate`]. One node at a time, the
//!   elected owner, computes the highest version the open gates allow and
//!   runs the steps in order, committing `format_version = N+1` after each
//!   step with a compare-and-swap. A fresh cluster is created at the highest
//!   allowed version with no step run ([`ServiceRunner::create_fresh`]).
//! - **Node-local table migrations** ([`TableMigration`], run by
//!   [`LocalRunner`]): a redb table is rewritten in batches; the checkpoint
//!   (last key, counts) is written in the same redb write transaction as the
//!   batch, so a crash anywhere resumes without loss or double work.
//!
//! Both may declare a reverse, which makes downgrading possible: a flag whose
//! steps all have a reverse is reversible ([`Migrations::reversibility`]), and
//! [`ServiceRunner::disable_flag`] brings the service format and the node's
//! data back.
//!
//! Gates are evaluated through the small [`Gates`] trait: the flags runtime
//! implements it for a node; [`MemGates`] (in memory),
//! [`ClusterView`](crate::cluster::ClusterView) and
//! [`ClusterHandle`](crate::cluster::ClusterHandle) (flags and features read
//! from the store) implement it here.
//!
//! # Store key layout (under a root, `rollgate/` by default)
//!
//! | key | value | written by |
//! |---|---|---|
//! | `formats/<service>` | JSON [`ServiceFormat`]: version, last steps, last failure | the owner, compare-and-swap on the key's mod revision **and** the owner key's create revision |
//! | `migrations/owner/<service>` | JSON [`OwnerRecord`] on the owner's lease | [`ServiceRunner`] (created only when absent) |
//! | `migrations/status/<node>` | JSON [`NodeStatus`]: the node's table migrations | that node's [`LocalRunner`] |
//!
//! # The runner protocol (service steps)
//!
//! 1. Read `formats/<service>` (absent: version 0, Ceph's "no formal
//!    format"), plan with [`plan`]: nothing to do → done, no write.
//! 2. Take the owner key: grant a lease, create the key only if absent. If
//!    another node holds it, report [`ServiceOutcome::Busy`]; its lease
//!    expiring (a crashed owner) deletes the key, and the next attempt takes
//!    over. The lease is kept alive while the owner runs.
//! 3. For each step: re-read the format, re-check the gate, run the step,
//!    then commit `N+1` guarded on the format key's mod revision and the
//!    owner key's create revision. A crash between the step and the commit
//!    re-runs the step later: steps must be idempotent.
//! 4. Delete the owner key (guarded on its create revision), revoke the lease.
//!
//! Architecture invariant (I4): a crash at any point leaves every service at
//! a committed version and every table migration at a committed checkpoint:
//! not started, resumable, or done. Guarded by `tests/it/migrate_crash.rs`
//! (SIGKILL at random points of a 200,000-record table migration) and
//! `tests/it/migrate_service.rs` (an owner dropped in the middle of a step is
//! taken over after its lease expires).
//!
//! Architecture invariant (I1): a step or table migration runs only while its
//! gate is open, and a gated record key is written only with its flag
//! enabled. Guarded by `tests/it/migrate_service.rs`
//! (`a_gated_step_waits_for_its_flag`), `tests/it/migrate_local.rs` and
//! `tests/it/record_roundtrip.rs`.

mod local;
mod service;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cluster::{ClusterHandle, ClusterView};
use crate::format::FormatError;
use rollgate_store::StoreError;

pub use local::{
    CHECKPOINT_TABLE, Checkpoint, CheckpointState, CompanionFn, LocalOptions, LocalReport, LocalRunner, RateLimit,
    RecordFn, Rewrite, TableMigration,
};
pub use rollgate_api::migrations::{
    ClusterMigrationStatus, Direction, Gate, MigrationKind, MigrationState, MigrationStatus, NodeStatus, OwnerRecord,
    ServiceStatus, StepFailure, StepRecord, Unreadable,
};
pub use service::{
    DisableReport, ServiceFormat, ServiceOptions, ServiceOutcome, ServiceReport, ServiceRunner, ServiceStep,
    StepContext, StepError, StepFuture,
};
pub use status::cluster_status;

/// Longest migration id, service name or flag name.
pub const MAX_NAME_BYTES: usize = 64;

/// How migrations see flags and cluster features. The flags runtime
/// implements it for a node; [`MemGates`] and [`ClusterView`] implement it
/// here.
pub trait Gates: Send + Sync {
    /// Whether flag `name` is enabled in the metadata store.
    fn flag_enabled(&self, name: &str) -> bool;
    /// Whether every member of the cluster publishes cluster feature `name`.
    fn cluster_has_feature(&self, name: &str) -> bool;
    /// Whether `gate` is open.
    fn is_open(&self, gate: &Gate) -> bool {
        match gate {
            Gate::Flag(f) => self.flag_enabled(f),
            Gate::ClusterFeature(f) => self.cluster_has_feature(f),
        }
    }
}

impl<G: Gates + ?Sized> Gates for Arc<G> {
    fn flag_enabled(&self, name: &str) -> bool {
        (**self).flag_enabled(name)
    }
    fn cluster_has_feature(&self, name: &str) -> bool {
        (**self).cluster_has_feature(name)
    }
}

impl<G: Gates + ?Sized> Gates for &G {
    fn flag_enabled(&self, name: &str) -> bool {
        (**self).flag_enabled(name)
    }
    fn cluster_has_feature(&self, name: &str) -> bool {
        (**self).cluster_has_feature(name)
    }
}

/// Flags from the view's flag records; a cluster feature holds when every
/// member, running or stopped (a stopped member may come back), publishes
/// it, and there is at least one member.
impl Gates for ClusterView {
    fn flag_enabled(&self, name: &str) -> bool {
        self.is_enabled(name)
    }
    fn cluster_has_feature(&self, name: &str) -> bool {
        crate::features::cluster_has_feature(self, name)
    }
}

/// The handle's cached view (kept current from a watch on the store);
/// `run_on_changes(handle.watch_view())` re-runs migrations on every change.
impl Gates for ClusterHandle {
    fn flag_enabled(&self, name: &str) -> bool {
        self.view().flag_enabled(name)
    }
    fn cluster_has_feature(&self, name: &str) -> bool {
        self.view().cluster_has_feature(name)
    }
}

/// Gates held in memory, with a change notification: for tests, tools and
/// services that drive flags themselves.
#[derive(Debug)]
pub struct MemGates {
    state: RwLock<(BTreeSet<String>, BTreeSet<String>)>,
    changes: watch::Sender<u64>,
}

impl Default for MemGates {
    fn default() -> Self {
        MemGates { state: RwLock::new(Default::default()), changes: watch::channel(0).0 }
    }
}

impl MemGates {
    /// Nothing enabled.
    pub fn new() -> Self {
        MemGates::default()
    }

    /// These flags enabled.
    pub fn with_flags<'a>(flags: impl IntoIterator<Item = &'a str>) -> Self {
        let gates = MemGates::new();
        for f in flags {
            gates.enable_flag(f);
        }
        gates
    }

    fn change(&self, f: impl FnOnce(&mut (BTreeSet<String>, BTreeSet<String>)) -> bool) {
        let changed = f(&mut self.state.write().unwrap_or_else(|p| p.into_inner()));
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Enables a flag.
    pub fn enable_flag(&self, name: &str) {
        self.change(|s| s.0.insert(name.to_string()));
    }

    /// Disables a flag.
    pub fn disable_flag(&self, name: &str) {
        self.change(|s| s.0.remove(name));
    }

    /// Makes a cluster feature hold.
    pub fn add_feature(&self, name: &str) {
        self.change(|s| s.1.insert(name.to_string()));
    }

    /// Makes a cluster feature not hold.
    pub fn remove_feature(&self, name: &str) {
        self.change(|s| s.1.remove(name));
    }

    /// A receiver that is notified on every change (the value counts them).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

impl Gates for MemGates {
    fn flag_enabled(&self, name: &str) -> bool {
        self.state.read().unwrap_or_else(|p| p.into_inner()).0.contains(name)
    }
    fn cluster_has_feature(&self, name: &str) -> bool {
        self.state.read().unwrap_or_else(|p| p.into_inner()).1.contains(name)
    }
}

/// Errors of migrations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A name (service, migration id, node, flag) is not acceptable.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// What kind of name.
        what: &'static str,
        /// The name (shortened).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Steps of a service must be registered `0 -> 1`, `1 -> 2`, ... in order.
    #[error("service `{service}`: step {from} -> {to} registered where step {expected} -> {next} was expected")]
    StepOutOfOrder {
        /// The service.
        service: String,
        /// The step's from.
        from: u32,
        /// The step's to.
        to: u32,
        /// The from that was expected.
        expected: u32,
        /// The to that was expected.
        next: u32,
    },
    /// Two table migrations with one id.
    #[error("table migration `{id}` is registered twice")]
    DuplicateMigration {
        /// The id.
        id: String,
    },
    /// The metadata store failed (the error names the key).
    #[error("{what}: {source}")]
    Store {
        /// What was being done.
        what: String,
        /// The cause.
        source: StoreError,
    },
    /// A service step failed; the version stays where it was.
    #[error("service `{service}` step {from} -> {to} (`{step}`, {direction}) failed on node {node}: {reason}")]
    StepFailed {
        /// The service.
        service: String,
        /// The step's from.
        from: u32,
        /// The step's to.
        to: u32,
        /// The step's name.
        step: String,
        /// Forward or reverse.
        direction: Direction,
        /// The node that ran it.
        node: String,
        /// The step's error.
        reason: String,
    },
    /// The runner lost the owner key (its lease expired) before committing.
    #[error(
        "node {node} lost the migration ownership of service `{service}` (its lease expired); the step will run again \
         on the next owner"
    )]
    LostOwnership {
        /// The service.
        service: String,
        /// This node.
        node: String,
    },
    /// Another node owns the service's migrations.
    #[error("node {owner} is running the migrations of service `{service}`; try again when it is done")]
    Busy {
        /// The service.
        service: String,
        /// The owner.
        owner: String,
    },
    /// The format version moved under the owner (another writer).
    #[error(
        "service `{service}` format changed under the owner {node} (expected version {expected}); \
         someone wrote `formats/{service}` without the owner key"
    )]
    FormatConflict {
        /// The service.
        service: String,
        /// This node.
        node: String,
        /// The version the owner read.
        expected: u32,
    },
    /// A table migration cannot convert a record; the batch was not written.
    #[error(
        "table migration `{migration}` ({direction}) cannot convert the record at key {key} of table `{table}`: \
         {reason}; nothing of this batch was written"
    )]
    Record {
        /// The migration.
        migration: String,
        /// The table.
        table: String,
        /// The record's key (escaped).
        key: String,
        /// Forward or reverse.
        direction: Direction,
        /// What the conversion said.
        reason: String,
    },
    /// A stored checkpoint does not decode.
    #[error(
        "the checkpoint of table migration `{migration}` (table `rollgate_migrations`, key `{migration}`) is \
         unreadable: {reason}; nothing was changed (reset it with `LocalRunner::reset_checkpoint` to start over)"
    )]
    CheckpointCorrupt {
        /// The migration.
        migration: String,
        /// Why.
        reason: String,
    },
    /// The checkpoint names a key beyond the table's last record.
    #[error(
        "the checkpoint of table migration `{migration}` points past the end of table `{table}`: last processed key \
         {checkpoint} but the table ends at {last}; the table or the checkpoint was replaced (restore both from one \
         backup, or reset the checkpoint with `LocalRunner::reset_checkpoint` to start over); nothing was changed"
    )]
    CheckpointPastEnd {
        /// The migration.
        migration: String,
        /// The table.
        table: String,
        /// The checkpoint's key (escaped).
        checkpoint: String,
        /// The table's last key (escaped), or `(empty)`.
        last: String,
    },
    /// redb failed.
    #[error("table migration `{migration}`: redb failed while {what}: {reason}")]
    Redb {
        /// The migration.
        migration: String,
        /// What was being done.
        what: &'static str,
        /// The cause.
        reason: String,
    },
    /// A unit's format stamp refused the change.
    #[error("table migration `{migration}`: {source}")]
    Format {
        /// The migration.
        migration: String,
        /// The cause.
        source: FormatError,
    },
    /// Reversing a flag's migrations while writers may still produce its data.
    #[error(
        "flag `{flag}` is still enabled: writers may still produce data that needs it; mark it as being disabled first \
         (so writers produce the old format), then run its reverse migrations"
    )]
    FlagStillEnabled {
        /// The flag.
        flag: String,
    },
    /// A step on the way back has no reverse.
    #[error("flag `{flag}` cannot be disabled: {step} has no reverse step, so its data cannot be converted back")]
    Irreversible {
        /// The flag.
        flag: String,
        /// The step (described).
        step: String,
    },
    /// A background task failed.
    #[error("migration task failed: {0}")]
    Task(String),
}

pub(crate) fn store_err(what: impl Into<String>) -> impl FnOnce(StoreError) -> MigrateError {
    let what = what.into();
    move |source| MigrateError::Store { what, source }
}

/// Checks a service name, migration id or flag name: 1 to 64 of `[a-z0-9_]`.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), MigrateError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_BYTES {
        Some("it is longer than 64 bytes")
    } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        Some("only a-z, 0-9 and '_' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(MigrateError::InvalidName { what, name: rollgate_util::shorten(name), reason }),
        None => Ok(()),
    }
}

pub(crate) fn validate_gate(gate: &Gate) -> Result<(), MigrateError> {
    match gate {
        Gate::Flag(f) => validate_name("flag name", f),
        // Cluster feature names have their own rule (dots allowed: `kv.prefix_scan`).
        Gate::ClusterFeature(f) => crate::features::validate_feature_name(f).map_err(|_| MigrateError::InvalidName {
            what: "cluster feature name",
            name: rollgate_util::shorten(f),
            reason: "1 to 128 of [a-z0-9_.-]",
        }),
    }
}

pub(crate) fn validate_node(node: &str) -> Result<(), MigrateError> {
    crate::cluster::validate_node_id(node).map_err(|_| MigrateError::InvalidName {
        what: "node id",
        name: rollgate_util::shorten(node),
        reason: "1 to 64 of [A-Za-z0-9._-], not starting with '.'",
    })
}

/// What [`plan`] decides for one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The version found.
    pub current: u32,
    /// The highest version the open gates allow from `current` (`current` when none).
    pub target: u32,
    /// The newest version this release knows.
    pub latest: u32,
    /// The first closed gate, with the step it holds back (its `from`).
    pub blocked: Option<(u32, Gate)>,
}

impl Plan {
    /// Whether the store is at a version this release does not know.
    pub fn ahead(&self) -> bool {
        self.current > self.latest
    }
    /// Whether steps are to run.
    pub fn has_work(&self) -> bool {
        self.target > self.current
    }
}

/// The pure planner: step `i` goes from `i` to `i + 1` behind `step_gates[i]`;
/// from `current`, run every step whose gate is open, in order, stopping at
/// the first closed one (Ceph: the highest format the features allow).
pub fn plan(current: u32, step_gates: &[&Gate], gates: &dyn Gates) -> Plan {
    let latest = step_gates.len() as u32;
    let mut target = current;
    let mut blocked = None;
    while (target as usize) < step_gates.len() {
        let gate = step_gates[target as usize];
        if !gates.is_open(gate) {
            blocked = Some((target, gate.clone()));
            break;
        }
        target += 1;
    }
    Plan { current, target, latest, blocked }
}

/// One registered step or table migration, for messages and reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepRef {
    /// A service step.
    Service {
        /// The service.
        service: String,
        /// From.
        from: u32,
        /// To.
        to: u32,
        /// The step's name.
        name: String,
    },
    /// A table migration.
    Table {
        /// The migration id.
        id: String,
        /// The table.
        table: String,
    },
}

impl fmt::Display for StepRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepRef::Service { service, from, to, name } => {
                write!(f, "service `{service}` step {from} -> {to} (`{name}`)")
            }
            StepRef::Table { id, table } => write!(f, "table migration `{id}` on table `{table}`"),
        }
    }
}

/// Whether a flag's migrations can be undone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Reversibility {
    /// Every step gated by the flag has a reverse (a flag without steps too).
    Reversible {
        /// The steps gated by the flag.
        steps: Vec<StepRef>,
    },
    /// These steps have no reverse.
    Irreversible {
        /// The steps without reverse (at least one).
        blockers: Vec<StepRef>,
    },
}

impl Reversibility {
    /// Whether the flag is reversible.
    pub fn is_reversible(&self) -> bool {
        matches!(self, Reversibility::Reversible { .. })
    }
}

/// The registry of a release's migrations: service steps and table
/// migrations, declared in code and validated as they are added.
#[derive(Default)]
pub struct Migrations {
    services: BTreeMap<String, Vec<ServiceStep>>,
    tables: Vec<TableMigration>,
}

impl fmt::Debug for Migrations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migrations")
            .field("services", &self.services.iter().map(|(s, v)| (s, v.len())).collect::<Vec<_>>())
            .field("tables", &self.tables.iter().map(|t| t.id()).collect::<Vec<_>>())
            .finish()
    }
}

impl Migrations {
    /// An empty registry.
    pub fn new() -> Self {
        Migrations::default()
    }

    /// Adds a service step; steps of one service must come in order from
    /// `0 -> 1`.
    pub fn add_step(&mut self, step: ServiceStep) -> Result<&mut Self, MigrateError> {
        let steps = self.services.entry(step.service().to_string()).or_default();
        let expected = steps.len() as u32;
        if step.from() != expected {
            return Err(MigrateError::StepOutOfOrder {
                service: step.service().to_string(),
                from: step.from(),
                to: step.to(),
                expected,
                next: expected + 1,
            });
        }
        steps.push(step);
        Ok(self)
    }

    /// Adds a table migration (ids are unique). They run in the order added
    /// (and are reversed in the opposite order).
    pub fn add_table_migration(&mut self, migration: TableMigration) -> Result<&mut Self, MigrateError> {
        if self.tables.iter().any(|t| t.id() == migration.id()) {
            return Err(MigrateError::DuplicateMigration { id: migration.id().to_string() });
        }
        self.tables.push(migration);
        Ok(self)
    }

    /// The services that have steps.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.keys().map(String::as_str)
    }

    /// A service's steps, in order (step `i` goes from `i` to `i + 1`).
    pub fn steps(&self, service: &str) -> &[ServiceStep] {
        self.services.get(service).map_or(&[], Vec::as_slice)
    }

    /// The table migrations, in order.
    pub fn table_migrations(&self) -> &[TableMigration] {
        &self.tables
    }

    /// The newest format version of a service this release knows.
    pub fn latest(&self, service: &str) -> u32 {
        self.steps(service).len() as u32
    }

    /// Plans one service from `current` (see [`plan`]).
    pub fn plan(&self, service: &str, current: u32, gates: &dyn Gates) -> Plan {
        let step_gates: Vec<&Gate> = self.steps(service).iter().map(ServiceStep::gate).collect();
        plan(current, &step_gates, gates)
    }

    /// The version a fresh cluster starts at: every step from 0 whose gate is open.
    pub fn allowed(&self, service: &str, gates: &dyn Gates) -> u32 {
        self.plan(service, 0, gates).target
    }

    /// Every step and table migration gated by `flag`.
    pub fn gated_by(&self, flag: &str) -> Vec<StepRef> {
        let gate = Gate::Flag(flag.to_string());
        let services = self.services.values().flatten().filter(|s| *s.gate() == gate).map(ServiceStep::describe);
        let tables = self.tables.iter().filter(|t| *t.gate() == gate).map(TableMigration::describe);
        services.chain(tables).collect()
    }

    /// Whether `flag` can be disabled given the registered steps, and if not,
    /// which steps prevent it (the CLI says so before enabling).
    pub fn reversibility(&self, flag: &str) -> Reversibility {
        let gate = Gate::Flag(flag.to_string());
        let services = self.services.values().flatten().filter(|s| *s.gate() == gate);
        let tables = self.tables.iter().filter(|t| *t.gate() == gate);
        let blockers: Vec<StepRef> = services
            .filter(|s| !s.has_reverse())
            .map(ServiceStep::describe)
            .chain(tables.filter(|t| !t.has_reverse()).map(TableMigration::describe))
            .collect();
        if blockers.is_empty() {
            Reversibility::Reversible { steps: self.gated_by(flag) }
        } else {
            Reversibility::Irreversible { blockers }
        }
    }

    /// An error naming the first step that makes `flag` irreversible; for a
    /// flag declared reversible.
    pub fn require_reversible(&self, flag: &str) -> Result<(), MigrateError> {
        match self.reversibility(flag) {
            Reversibility::Reversible { .. } => Ok(()),
            Reversibility::Irreversible { blockers } => {
                Err(MigrateError::Irreversible { flag: flag.to_string(), step: blockers[0].to_string() })
            }
        }
    }
}

/// Escapes a key for a message: printable ASCII as is, other bytes as
/// `\xNN`, at most 64 bytes shown.
pub(crate) fn escape_key(key: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in key.iter().take(64) {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s.push('"');
    if key.len() > 64 {
        s.push_str(&format!("... ({} bytes)", key.len()));
    }
    s
}

/// The keys of the migration state under a root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrateKeys {
    root: String,
}

impl MigrateKeys {
    /// Keys under `root` (ends with `/`, as the cluster's).
    pub fn new(root: impl Into<String>) -> Self {
        MigrateKeys { root: root.into() }
    }
    /// `formats/`.
    pub fn formats_prefix(&self) -> String {
        format!("{}formats/", self.root)
    }
    /// `formats/<service>`.
    pub fn format(&self, service: &str) -> String {
        format!("{}formats/{service}", self.root)
    }
    /// `migrations/owner/`.
    pub fn owners_prefix(&self) -> String {
        format!("{}migrations/owner/", self.root)
    }
    /// `migrations/owner/<service>`.
    pub fn owner(&self, service: &str) -> String {
        format!("{}migrations/owner/{service}", self.root)
    }
    /// `migrations/status/`.
    pub fn statuses_prefix(&self) -> String {
        format!("{}migrations/status/", self.root)
    }
    /// `migrations/status/<node>`.
    pub fn status(&self, node: &str) -> String {
        format!("{}migrations/status/{node}", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_stops_at_the_first_closed_gate() {
        let gates = MemGates::new();
        gates.add_feature("f1");
        let (a, b, c) = (Gate::feature("f1"), Gate::feature("f2"), Gate::flag("x"));
        let p = plan(0, &[&a, &b, &c], &gates);
        assert_eq!((p.current, p.target, p.latest), (0, 1, 3));
        assert_eq!(p.blocked, Some((1, b.clone())));
        gates.add_feature("f2");
        let p = plan(0, &[&a, &b, &c], &gates);
        assert_eq!((p.target, p.blocked.clone()), (2, Some((2, c.clone()))));
        gates.enable_flag("x");
        let p = plan(1, &[&a, &b, &c], &gates);
        assert_eq!((p.target, p.blocked.clone(), p.has_work()), (3, None, true));
        let p = plan(5, &[&a, &b, &c], &gates);
        assert!(p.ahead() && !p.has_work());
        // A closed gate below the current version does not matter.
        gates.remove_feature("f1");
        assert_eq!(plan(1, &[&a, &b, &c], &gates).target, 3);
    }

    #[test]
    fn mem_gates_notify_changes() {
        let gates = MemGates::new();
        let mut rx = gates.subscribe();
        gates.enable_flag("a");
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        gates.enable_flag("a");
        assert!(!rx.has_changed().unwrap(), "no change, no notification");
        assert!(gates.flag_enabled("a") && !gates.cluster_has_feature("a"));
    }

    /// Compile-time: every runner future can be spawned on a multi-threaded runtime.
    #[allow(dead_code)]
    fn runner_futures_are_send(
        s: &ServiceRunner,
        l: &LocalRunner,
        g: &dyn Gates,
        store: &dyn rollgate_store::MetaStore,
    ) {
        fn send<T: Send>(_: T) {}
        send(s.run_once());
        send(s.create_fresh("a"));
        send(s.disable_flag("f", Some(l)));
        send(s.run_on_changes(watch::channel(()).1));
        send(l.run_once(g));
        send(l.reverse_flag("f", g));
        send(l.run_on_changes(g, watch::channel(()).1));
        send(l.status(Some(g)));
        send(l.reset_checkpoint("m"));
        send(cluster_status(store, "r/"));
    }

    #[test]
    fn names_and_keys() {
        validate_name("service", "auth_keys").unwrap();
        assert!(validate_name("service", "Auth").is_err());
        assert!(validate_name("service", "").is_err());
        assert!(validate_name("service", &"a".repeat(65)).is_err());
        assert_eq!(escape_key(b"ab\x00\"\xff"), r#""ab\x00\x22\xff""#);
        assert!(escape_key(&[b'a'; 70]).ends_with("... (70 bytes)"));
        let keys = MigrateKeys::new("r/");
        assert_eq!(keys.format("auth"), "r/formats/auth");
        assert_eq!(keys.owner("auth"), "r/migrations/owner/auth");
        assert_eq!(keys.status("n1"), "r/migrations/status/n1");
    }
}

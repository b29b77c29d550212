//! Feature flags (RabbitMQ / ZFS style): a release **supports** a set of
//! flags, the cluster **enables** them one by one once every member
//! supports them, and a node produces data gated by a flag only once the
//! metadata store says the flag is enabled.
//!
//! # Declaring
//!
//! A release declares its flags in code ([`FlagDecl`]: name `[a-z0-9_]+`,
//! description, [`Stability`], the release that introduced it, dependencies,
//! documentation URL, [`Provider`] (the service or a plugin), whether it is
//! reversible, and optional idempotent steps: one run once for the whole
//! cluster, one run by every member on itself, and a hook run before
//! disabling). [`FlagRegistry::builder`] collects them, gives each a dense
//! [`FlagId`] and validates them at startup ([`RegistryError`] lists bad
//! names, duplicates, unknown dependencies, cycles, ...). A service checks
//! its release table in a test with [`check_release_table`]: a release
//! never drops a flag, and a flag a release requires is supported by the
//! release before it.
//!
//! # The hot path
//!
//! [`Flags::is_enabled`] is one atomic load and a bit test. The bits follow
//! the node's cluster view (a watch on the store), which the node publishes
//! only after writing its local copy; a flag's bit is set only when its
//! record says **enabled** (I1). [`Flags::wait_enabled`] waits for a flag.
//!
//! # Boot, join, enable, disable
//!
//! The decisions are pure functions in [`plan`] (sans-IO); the node runtime
//! in [`crate::node`] drives them against the store:
//!
//! - boot: refuse when the store (or, with the store unreachable, the local
//!   copy) has a flag enabled that the release does not know, naming the flag
//!   and its first release ([`plan::unknown_present`]);
//! - join: refuse while a flag the node lacks is enabled or being enabled
//!   ([`plan::join_check`]), fenced by the cluster epoch (I2, I5);
//! - a fresh cluster starts with every stable and required flag enabled; a
//!   required flag found disabled is enabled by the booting node when every
//!   member supports it, otherwise the node refuses to start, naming the
//!   nodes to upgrade ([`plan::required_to_enable`]);
//! - enable: [`plan::plan_enable`] orders the flags (dependencies first) and
//!   lists what blocks; the enable protocol ([`plan`] describes it) persists
//!   an `enabling` state with its owner so that a crash at any step is
//!   resumed or rolled back by the next node that looks
//!   ([`plan::recovery_for`], I4);
//! - disable: reversible flags that no member's release requires or cannot
//!   reverse ([`plan::begin_disable`]); it completes only once no member
//!   that may still serve holds the bit ([`plan::drive_disable`]).

mod bits;
mod decl;
pub mod failpoint;
pub mod plan;
mod registry;
mod releases;

pub use bits::Flags;
pub use decl::{FlagDecl, PluginSpec, Provider, Stability, Step, StepContext, StepFuture};
pub use failpoint::fail_point;
pub use plan::{Blocker, EnablePlan, EnableRequest, JoinRefusal, NodeRef};
pub use registry::{FlagId, FlagRegistry, MAX_FLAGS, RegistryBuilder, RegistryError, RegistryProblem, ReleaseFlags};
pub use releases::{
    PlanStep, ReleaseTable, ReleaseTableError, ReleaseTableProblem, UpgradePlan, UpgradePlanError, check_release_table,
    plan_upgrade,
};

use crate::cluster::ClusterError;

/// Where a boot check read the flags from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagSource {
    /// The metadata store (its description).
    Store(String),
    /// The local copy (its path), because the store is unreachable.
    LocalCopy(String),
    /// The local copy (its path) of another cluster than the store's: the
    /// data dir was written under flags this release may not read.
    OtherCluster {
        /// The local copy.
        path: String,
        /// The cluster the copy belongs to.
        copy_cluster: String,
        /// The cluster of the store.
        store_cluster: String,
    },
}

impl std::fmt::Display for FlagSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlagSource::Store(s) => write!(f, "the metadata store {s}"),
            FlagSource::LocalCopy(p) => write!(f, "the local copy {p}; the metadata store is unreachable"),
            FlagSource::OtherCluster { path, copy_cluster, store_cluster } => write!(
                f,
                "the local copy {path} of cluster {copy_cluster}; the data dir comes from another cluster than the store's ({store_cluster})"
            ),
        }
    }
}

/// Errors of feature flags. Operator-facing refusals say what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlagError {
    /// The declarations are invalid.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The cluster has flags this release does not know: the node must not start.
    #[error(
        "node {node} (release {release}) cannot start: the cluster has feature flags that release {release} does not know (according to {origin}): {}; {}",
        flags.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", "),
        plan::unknown_flags_fix(flags)
    )]
    UnknownFlagsAtBoot {
        /// The node.
        node: String,
        /// Its release.
        release: String,
        /// Where the flags were read.
        origin: Box<FlagSource>,
        /// The unknown flags.
        flags: Vec<plan::UnknownPresentFlag>,
    },
    /// The join was refused.
    #[error("{0}")]
    JoinRefused(JoinRefusal),
    /// Required flags cannot be enabled: the node must not start.
    #[error("{message}")]
    RequiredBlocked {
        /// The flags and what blocks them.
        blocks: Vec<plan::RequiredBlock>,
        /// The operator message.
        message: String,
    },
    /// A required flag did not end up enabled.
    #[error("node {node} cannot start: release {release} requires flag `{flag}`, which is not enabled: {reason}")]
    RequiredNotEnabled {
        /// The node.
        node: String,
        /// Its release.
        release: String,
        /// The flag.
        flag: String,
        /// What happened.
        reason: String,
    },
    /// An enable request that cannot go ahead (every blocker listed).
    #[error("{}", blockers.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("\n"))]
    EnableRefused {
        /// What blocks it.
        blockers: Vec<Blocker>,
        /// The flags enabled before the refusal (a multi-flag request
        /// enables in order and stops at the first refused flag).
        enabled: Vec<String>,
    },
    /// A disable request refused.
    #[error("{0}")]
    DisableRefused(plan::DisableRefusal),
    /// A plugin whose flags are not available.
    #[error("{0}")]
    PluginRefused(plan::PluginRefusal),
    /// An enable or disable step failed; the change was rolled back.
    #[error("{what} of flag `{flag}` failed and was rolled back: {reason}")]
    StepFailed {
        /// The flag.
        flag: String,
        /// `enabling` or `disabling`.
        what: &'static str,
        /// What failed, naming the node.
        reason: String,
    },
    /// Another node took the enabling over (this node's driver was too slow).
    #[error("enabling of flag `{flag}` was taken over by node {by}; it finishes there")]
    TakenOver {
        /// The flag.
        flag: String,
        /// The node that took over.
        by: String,
    },
    /// This node stopped driving the flag because it may not serve (its
    /// lease or view could not be confirmed, or it is stopping); the next
    /// node that looks resumes or finishes it.
    #[error("node {node} stopped driving flag `{flag}`: {reason}; the next node that looks resumes or finishes it")]
    NotServing {
        /// The node.
        node: String,
        /// The flag.
        flag: String,
        /// Why it does not serve.
        reason: String,
    },
    /// A cluster-layer failure (store unreachable, contention, ...).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl FlagError {
    /// Whether this is a refusal the operator can act on (bad input or a
    /// cluster state that forbids the change), as opposed to a failure.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, FlagError::Cluster(_) | FlagError::Registry(_))
    }
}

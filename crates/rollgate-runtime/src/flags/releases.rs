//! A service's release table (which flags each release supports and
//! requires), the rules it must keep, and the upgrade plan computed from it.
//!
//! The rules ([`check_release_table`], meant to be called from a test of the
//! service over its own table):
//!
//! 1. A release never drops a flag: every flag an older release knows,
//!    every newer one knows too (declared, or removed). An enabled flag must
//!    stay known, or the nodes of the newer release could not boot on that
//!    cluster. A release may *remove* a flag (drop its code, assume it
//!    enabled) only when every release that may upgrade straight to it
//!    (its `upgrades_from` up to the one before it) requires the flag: a
//!    required flag is enabled before any node of that release serves, so
//!    no cluster reaches the removing release with it off.
//! 2. A flag required by a release is supported by the release before it.
//!    Otherwise no rolling path exists: the new nodes would need the flag
//!    enabled while the old ones cannot have it (the trap RabbitMQ fell into).
//! 3. A flag's `introduced_in` release is the first in the table that
//!    supports it.
//!
//! ```
//! use rollgate::flags::{FlagDecl, FlagRegistry, ReleaseTable, check_release_table};
//! let r10 = FlagRegistry::builder("1.0").build().unwrap();
//! let r11 = FlagRegistry::builder("1.1").with(FlagDecl::new("ttl", "expiring values").introduced_in("1.1")).build().unwrap();
//! let r20 = FlagRegistry::builder("2.0")
//!     .with(FlagDecl::new("ttl", "expiring values").introduced_in("1.1").required())
//!     .build()
//!     .unwrap();
//! check_release_table(&ReleaseTable::from_registries([&r10, &r11, &r20])).unwrap();
//! // 2.0 straight after 1.0 would require a flag that 1.0 nodes cannot have:
//! assert!(check_release_table(&ReleaseTable::from_registries([&r10, &r20])).is_err());
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use rollgate_api::upgrade::{PlanStep, UpgradePlan};

use super::registry::{FlagRegistry, ReleaseFlags};
use crate::cluster::{ClusterView, FlagState};

/// A service's releases, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseTable {
    /// The releases, oldest first.
    pub releases: Vec<ReleaseFlags>,
}

impl ReleaseTable {
    /// The table of the given registries (oldest first).
    pub fn from_registries<'a>(registries: impl IntoIterator<Item = &'a FlagRegistry>) -> ReleaseTable {
        ReleaseTable { releases: registries.into_iter().map(FlagRegistry::release_flags).collect() }
    }
    /// A release and its position.
    pub fn get(&self, release: &str) -> Option<(usize, &ReleaseFlags)> {
        self.releases.iter().enumerate().find(|(_, r)| r.release == release)
    }
    /// The first release that supports `flag`.
    pub fn first_supporting(&self, flag: &str) -> Option<&str> {
        self.releases.iter().find(|r| r.supported.contains(flag)).map(|r| r.release.as_str())
    }
    /// The release names, oldest first.
    pub fn names(&self) -> Vec<String> {
        self.releases.iter().map(|r| r.release.clone()).collect()
    }
}

/// One broken rule of a release table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseTableProblem {
    /// A release listed twice.
    #[error("release {release} is listed twice")]
    Duplicate {
        /// The release.
        release: String,
    },
    /// A newer release does not know a flag an older one does.
    #[error(
        "release {newer} drops flag `{flag}` that release {older} knows: keep declaring it, or, once every release that may upgrade to {newer} requires it, remove it with `.removed(\"{flag}\")` (and keep it removed in every later release)"
    )]
    Dropped {
        /// The flag.
        flag: String,
        /// The older release.
        older: String,
        /// The newer release.
        newer: String,
    },
    /// A required flag the previous release does not support.
    #[error(
        "release {release} requires flag `{flag}` but release {previous} does not support it: no rolling upgrade path exists; let {previous} (or a release in between) support it without requiring it"
    )]
    RequiredWithoutPredecessor {
        /// The flag.
        flag: String,
        /// The requiring release.
        release: String,
        /// The release before it.
        previous: String,
    },
    /// A removed flag that a release which may upgrade to the removing one
    /// does not require: a cluster coming from it may have the flag off.
    #[error(
        "release {release} removes flag `{flag}`, but release {from}, which may upgrade straight to {release}, does not require it, so a cluster coming from {from} may have it disabled: require it in every release that may upgrade to {release} first, and remove it a release later"
    )]
    RemovedNotRequired {
        /// The flag.
        flag: String,
        /// The removing release.
        release: String,
        /// The release that does not require it.
        from: String,
    },
    /// A removed flag the release before never had.
    #[error(
        "release {release} removes flag `{flag}`, which release {previous} does not declare: only a declared flag can be removed"
    )]
    RemovedUnknown {
        /// The flag.
        flag: String,
        /// The removing release.
        release: String,
        /// The release before it.
        previous: String,
    },
    /// `upgrades_from` names a release that is not older in the table.
    #[error("release {release} may be upgraded to from {from}, which is not a release before it in the table")]
    BadUpgradeSource {
        /// The release.
        release: String,
        /// Its `upgrades_from`.
        from: String,
    },
    /// `introduced_in` disagrees with the table.
    #[error("flag `{flag}` says it was introduced in {says}, but {reason}")]
    IntroducedMismatch {
        /// The flag.
        flag: String,
        /// Its `introduced_in`.
        says: String,
        /// What the table shows.
        reason: String,
    },
}

/// A release table that breaks the rules; lists every problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("release table breaks the flag rules:\n  {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
pub struct ReleaseTableError {
    /// What is wrong.
    pub problems: Vec<ReleaseTableProblem>,
}

/// Checks the rules of the module docs over a release table.
pub fn check_release_table(table: &ReleaseTable) -> Result<(), ReleaseTableError> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for r in &table.releases {
        if !seen.insert(r.release.as_str()) {
            problems.push(ReleaseTableProblem::Duplicate { release: r.release.clone() });
        }
    }
    for (i, pair) in table.releases.windows(2).enumerate() {
        let (older, newer) = (&pair[0], &pair[1]);
        for flag in older.known().difference(&newer.known()) {
            problems.push(ReleaseTableProblem::Dropped {
                flag: flag.clone(),
                older: older.release.clone(),
                newer: newer.release.clone(),
            });
        }
        for flag in newer.required.iter().filter(|f| !older.supported.contains(*f)) {
            problems.push(ReleaseTableProblem::RequiredWithoutPredecessor {
                flag: flag.clone(),
                release: newer.release.clone(),
                previous: older.release.clone(),
            });
        }
        problems.extend(removal_problems(table, i + 1));
    }
    let mut reported = BTreeSet::new();
    for r in &table.releases {
        for (flag, says) in &r.introduced_in {
            if !reported.insert(flag.clone()) {
                continue;
            }
            let first = table.first_supporting(flag).unwrap_or(&r.release);
            if let Some((_, intro)) = table.get(says) {
                if !intro.supported.contains(flag) {
                    problems.push(ReleaseTableProblem::IntroducedMismatch {
                        flag: flag.clone(),
                        says: says.clone(),
                        reason: format!("release {says} does not support it"),
                    });
                } else if first != says {
                    problems.push(ReleaseTableProblem::IntroducedMismatch {
                        flag: flag.clone(),
                        says: says.clone(),
                        reason: format!("the earlier release {first} already supports it"),
                    });
                }
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(ReleaseTableError { problems }) }
}

/// The releases that may upgrade straight to the one at `index`: from its
/// `upgrades_from` (default: the one before it) up to the one before it.
fn upgrade_sources(table: &ReleaseTable, index: usize) -> Result<&[ReleaseFlags], ReleaseTableProblem> {
    let release = &table.releases[index];
    let start = match &release.upgrades_from {
        None => index.saturating_sub(1),
        Some(from) => match table.releases[..index].iter().position(|r| &r.release == from) {
            Some(p) => p,
            None => {
                return Err(ReleaseTableProblem::BadUpgradeSource {
                    release: release.release.clone(),
                    from: from.clone(),
                });
            }
        },
    };
    Ok(&table.releases[start..index])
}

/// The flags the release at `index` (not the first) newly removes must be
/// declared by the release before it and required by every release that
/// may upgrade straight to it.
fn removal_problems(table: &ReleaseTable, index: usize) -> Vec<ReleaseTableProblem> {
    let (older, newer) = (&table.releases[index - 1], &table.releases[index]);
    let sources = match upgrade_sources(table, index) {
        Ok(s) => s,
        Err(p) => return vec![p],
    };
    let mut problems = Vec::new();
    for flag in newer.removed.difference(&older.removed) {
        if !older.supported.contains(flag) {
            problems.push(ReleaseTableProblem::RemovedUnknown {
                flag: flag.clone(),
                release: newer.release.clone(),
                previous: older.release.clone(),
            });
            continue;
        }
        for from in sources.iter().filter(|r| !r.required.contains(flag)) {
            problems.push(ReleaseTableProblem::RemovedNotRequired {
                flag: flag.clone(),
                release: newer.release.clone(),
                from: from.release.clone(),
            });
        }
    }
    problems
}

/// Why no plan can reach a release.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradePlanError {
    /// The release is not in the table.
    #[error("release {to} is not in the release table (known: {})", known.join(", "))]
    UnknownRelease {
        /// The release.
        to: String,
        /// The known releases.
        known: Vec<String>,
    },
    /// The target lacks flags the cluster has enabled.
    #[error("release {to} does not support flags [{}] that are enabled in this cluster, so its nodes cannot join; {fix}", flags.join(", "))]
    TargetLacksFlags {
        /// The release.
        to: String,
        /// The flags.
        flags: Vec<String>,
        /// What can be done.
        fix: String,
    },
    /// No intermediate release supports the required flags.
    #[error("release {to} requires flags [{}] that nodes [{}] do not support, and no release before {to} supports them without requiring them: fix the release table (see check_release_table)", flags.join(", "), nodes.join(", "))]
    NoPath {
        /// The release.
        to: String,
        /// The flags.
        flags: Vec<String>,
        /// The nodes lacking them.
        nodes: Vec<String>,
    },
}

/// Computes what the operator must do to bring every member of `view` to
/// release `to`, from the node records (their releases and supported flags),
/// the flag records and the release table. It plans in release-table terms
/// only: the steps are the order of upgrades and flag enables, not a
/// guarantee that each restart succeeds.
pub fn plan_upgrade(view: &ClusterView, table: &ReleaseTable, to: &str) -> Result<UpgradePlan, UpgradePlanError> {
    let Some((to_index, target)) = table.get(to) else {
        return Err(UpgradePlanError::UnknownRelease { to: to.to_string(), known: table.names() });
    };
    check_target_supports_enabled(view, target, to)?;
    let mut steps = required_flag_steps(view, table, to_index, target, to)?;
    steps.extend(member_steps(view, target, to));
    Ok(UpgradePlan { to: to.to_string(), steps, floor: view.floor.clone() })
}

/// Refuses a target release that lacks a flag the cluster has enabled (its
/// nodes could not join), saying whether disabling first is a way out.
fn check_target_supports_enabled(view: &ClusterView, target: &ReleaseFlags, to: &str) -> Result<(), UpgradePlanError> {
    let present: Vec<(&String, bool)> = view
        .flags
        .iter()
        .filter(|(_, r)| r.is_present())
        .map(|(n, r)| (n, r.info.as_ref().is_some_and(|i| i.reversible)))
        .collect();
    let lacking: Vec<String> =
        present.iter().filter(|(n, _)| !target.supported.contains(*n)).map(|(n, _)| (*n).clone()).collect();
    if !lacking.is_empty() {
        let reversible: Vec<&str> =
            present.iter().filter(|(n, rev)| *rev && lacking.contains(n)).map(|(n, _)| n.as_str()).collect();
        let fix = if reversible.len() == lacking.len() {
            format!("disable them first (`rollgate flags disable NAME` for {})", reversible.join(", "))
        } else {
            format!("a cluster cannot go back to {to} once they are enabled (they are not all reversible)")
        };
        return Err(UpgradePlanError::TargetLacksFlags { to: to.to_string(), flags: lacking, fix });
    }
    Ok(())
}

/// The steps for flags the target requires but the cluster has not enabled:
/// first upgrade the members lacking them to a bridge release that supports
/// them without requiring them, then enable them.
fn required_flag_steps(
    view: &ClusterView,
    table: &ReleaseTable,
    to_index: usize,
    target: &ReleaseFlags,
    to: &str,
) -> Result<Vec<PlanStep>, UpgradePlanError> {
    let mut steps = Vec::new();
    let missing_required: Vec<String> = target
        .required
        .iter()
        .filter(|f| !view.flags.get(*f).is_some_and(|r| matches!(r.state, FlagState::Enabled { .. })))
        .cloned()
        .collect();
    if !missing_required.is_empty() {
        let behind: Vec<String> = view
            .members
            .values()
            .filter(|m| missing_required.iter().any(|f| !m.record.supported_flags.contains(f)))
            .map(|m| m.record.node_id.clone())
            .collect();
        if !behind.is_empty() {
            let bridge = table.releases[..to_index]
                .iter()
                .rev()
                .find(|r| {
                    missing_required.iter().all(|f| r.supported.contains(f) && !r.required.contains(f))
                        && r.required.iter().all(|f| view.is_enabled(f) || missing_required.contains(f))
                })
                .ok_or_else(|| UpgradePlanError::NoPath {
                    to: to.to_string(),
                    flags: missing_required.clone(),
                    nodes: behind.clone(),
                })?;
            steps.push(PlanStep {
                action: "upgrade_nodes".into(),
                description: format!(
                    "upgrade nodes {} one at a time to release {}, which supports [{}] without requiring them",
                    behind.join(", "),
                    bridge.release,
                    missing_required.join(", ")
                ),
                nodes: behind,
                flags: missing_required.clone(),
                release: Some(bridge.release.clone()),
                command: None,
            });
        }
        steps.push(PlanStep {
            action: "enable_flags".into(),
            description: format!(
                "enable [{}], which release {to} requires (the first node of {to} also does it on its own when every member supports them)",
                missing_required.join(", ")
            ),
            nodes: Vec::new(),
            flags: missing_required.clone(),
            release: None,
            command: Some(format!("rollgate flags enable {}", missing_required.join(" "))),
        });
    }
    Ok(steps)
}

/// The steps for the members themselves: upgrade the running ones, start
/// or forget the stopped ones, then enable the flags the target adds.
fn member_steps(view: &ClusterView, target: &ReleaseFlags, to: &str) -> Vec<PlanStep> {
    let mut steps = Vec::new();
    let (stopped, to_upgrade): (Vec<_>, Vec<_>) =
        view.members.values().filter(|m| m.record.release != to).partition(|m| !m.is_running());
    if !to_upgrade.is_empty() {
        let nodes: Vec<String> = to_upgrade.iter().map(|m| m.record.node_id.clone()).collect();
        steps.push(PlanStep {
            action: "upgrade_nodes".into(),
            description: format!(
                "upgrade nodes {} one at a time to release {to}: stop a node, start it on {to} with the same data dir, wait until it is running again, then the next",
                nodes.join(", ")
            ),
            nodes,
            flags: Vec::new(),
            release: Some(to.to_string()),
            command: None,
        });
    }
    if !stopped.is_empty() {
        let nodes: Vec<String> = stopped.iter().map(|m| m.record.node_id.clone()).collect();
        steps.push(PlanStep {
            action: "forget_or_start_nodes".into(),
            description: format!(
                "nodes {} are stopped and still count as members: start each on release {to}, or, if it is gone for good, forget it",
                nodes.join(", ")
            ),
            command: Some(format!("rollgate nodes forget {}", nodes[0])),
            nodes,
            flags: Vec::new(),
            release: Some(to.to_string()),
        });
    }
    let new_stable: Vec<String> = target
        .supported
        .iter()
        .filter(|f| !target.required.contains(*f) && !view.flags.get(*f).is_some_and(|r| r.is_present()))
        .cloned()
        .collect();
    if !new_stable.is_empty() {
        steps.push(PlanStep {
            action: "enable_flags".into(),
            description: format!(
                "once every node runs {to}, enable the flags it adds ([{}]; experimental ones need --experimental); after that the nodes cannot go back to a release without them",
                new_stable.join(", ")
            ),
            nodes: Vec::new(),
            flags: new_stable,
            release: None,
            command: Some("rollgate flags enable --all".into()),
        });
    }
    steps
}

//! Raising the release floor (`POST /admin/upgrade/finalize`): the pure
//! decision. Release R may become the floor once every member, running or
//! stopped, runs R or a later release and every flag stable in R (stable or
//! required, introduced in R or before) is enabled; the floor never goes
//! down. The runtime commits the write under the epoch fence, so a member
//! that joins between the check and the commit makes it check again.

use std::collections::BTreeSet;

pub use rollgate_api::floor::{FinalizeBlocker, FinalizeReport, FinalizeRequest, ReleaseFloor};

use super::node_ref;
use crate::cluster::floor::{at_or_above, compare_releases, release_numbers};
use crate::cluster::{ClusterView, ViewOp};
use crate::flags::decl::Stability;
use crate::flags::registry::FlagRegistry;

/// A finalize the view allows: the report, and the op to commit (none for
/// a dry run or when the floor already is the release).
#[derive(Clone, Debug, PartialEq)]
pub struct Finalize {
    /// What to answer.
    pub report: FinalizeReport,
    /// What to commit.
    pub op: Option<ViewOp>,
}

/// The release a finalize without one names: the oldest the members run
/// (the first name that cannot be ordered, if any, so that it is refused).
pub fn default_release(view: &ClusterView) -> Option<String> {
    let releases: BTreeSet<&str> = view.members.values().map(|m| m.record.release.as_str()).collect();
    if let Some(bad) = releases.iter().find(|r| release_numbers(r).is_none()) {
        return Some((*bad).to_string());
    }
    releases.into_iter().min_by(|a, b| compare_releases(a, b).unwrap_or(std::cmp::Ordering::Equal)).map(String::from)
}

/// The flags of `registry` that release `release` has as stable or
/// required (introduced in it or before; a flag without a recorded first
/// release counts).
pub fn stable_flags_of(registry: &FlagRegistry, release: &str) -> Vec<String> {
    registry
        .topological()
        .filter(|d| matches!(d.get_stability(), Stability::Stable | Stability::Required))
        .filter(|d| d.get_introduced_in().is_empty() || at_or_above(release, d.get_introduced_in()))
        .map(|d| d.name().to_string())
        .collect()
}

/// The decision: `release` (already defaulted) as the floor, asked of a
/// node of release `node_release` with `registry`, on `view`.
pub fn plan_finalize(
    view: &ClusterView,
    registry: &FlagRegistry,
    node_release: &str,
    release: &str,
    dry_run: bool,
    by_node: &str,
    now_ms: u64,
) -> Result<Finalize, Vec<FinalizeBlocker>> {
    if release_numbers(release).is_none() {
        return Err(vec![FinalizeBlocker::BadRelease { release: release.to_string() }]);
    }
    let previous = view.floor.as_ref().map(|f| f.release.clone());
    if let Some(floor) = previous.as_deref().filter(|f| !at_or_above(release, f)) {
        return Err(vec![FinalizeBlocker::BelowFloor { release: release.to_string(), floor: floor.to_string() }]);
    }
    if !at_or_above(node_release, release) {
        return Err(vec![FinalizeBlocker::ReleaseUnknownHere {
            release: release.to_string(),
            node_release: node_release.to_string(),
        }]);
    }
    let mut blockers: Vec<FinalizeBlocker> = view
        .members
        .values()
        .filter(|m| !at_or_above(&m.record.release, release))
        .map(|m| FinalizeBlocker::MemberBelow { release: release.to_string(), member: node_ref(m) })
        .collect();
    blockers.extend(
        stable_flags_of(registry, release)
            .into_iter()
            .filter(|f| !view.is_enabled(f))
            .map(|flag| FinalizeBlocker::FlagNotEnabled { release: release.to_string(), flag }),
    );
    if !blockers.is_empty() {
        return Err(blockers);
    }
    let changed = !dry_run && previous.as_deref() != Some(release);
    let op = changed.then(|| {
        ViewOp::PutFloor(ReleaseFloor {
            release: release.to_string(),
            finalized_at_ms: now_ms,
            by_node: by_node.to_string(),
        })
    });
    Ok(Finalize { report: FinalizeReport { release: release.to_string(), previous, dry_run, changed }, op })
}

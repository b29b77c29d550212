//! This node's clock against the cluster's.
//!
//! Every [`Tuning::clock_check_interval`](super::Tuning::clock_check_interval)
//! the node reads the wall clock of every running peer (the `Date` header
//! of its HTTP listener, [`rollgate::admin::clock`], about a second of
//! precision) and compares its own with the **cluster's clock**: the median
//! of the running members' clocks, its own included ([`assess`]). What it
//! concludes ([`ClockStatus`]) decides three things (see the consistency
//! model in [`crate::consistency`]):
//!
//! - the **time** TTLs are stamped and judged with ([`ClockView::cluster_now_ms`]):
//!   the node's wall clock corrected by its offset from the cluster's when
//!   that offset is known and at least [`CORRECTION_MIN_MS`];
//! - the **drift bound** a version must respect to be stored here, from a
//!   peer or from this node's own client ([`ClockView::check_version`]):
//!   at most [`MAX_FORWARD_DRIFT_MS`] past that time;
//! - whether the node **coordinates writes** at all: not while its own
//!   clock is off by more than the bound ([`ClockStatus::Skewed`]), and no
//!   TTL writes or reads of values with an expiry while two running nodes
//!   disagree by more than the bound and nothing says which is right
//!   ([`ClockStatus::Ambiguous`]).
//!
//! A change of status is logged (a warning when the clock is off, naming the
//! offset, the bound and the fix) and shown in `/health`; `rollgate nodes
//! list` shows every member's offset from the median.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::hlc::{MAX_FORWARD_DRIFT_MS, Version};

/// Offsets below this are not corrected: they are within what a `Date`
/// header can tell (about a second) and what NTP keeps clocks to anyway.
pub const CORRECTION_MIN_MS: i64 = 2_000;

/// How long one reading of a peer's clock may take.
pub const CLOCK_READ_TIMEOUT: Duration = Duration::from_millis(1_000);

/// What this node knows about its clock against the cluster's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ClockStatus {
    /// No running peer's clock read yet (or none runs): the node goes by its own.
    Unknown,
    /// The node's clock agrees with the cluster's within the drift bound.
    Agrees {
        /// This node's clock minus the cluster's, in milliseconds.
        offset_ms: i64,
        /// How many clocks the median was taken over (this node's included).
        clocks: usize,
    },
    /// The node's clock is off the cluster's by more than the drift bound:
    /// it coordinates no write until it is fixed.
    Skewed {
        /// This node's clock minus the cluster's, in milliseconds.
        offset_ms: i64,
        /// How many clocks the median was taken over (this node's included).
        clocks: usize,
    },
    /// As many running clocks on each side of a gap wider than the drift
    /// bound (two running nodes a day apart): nothing says which is right.
    Ambiguous {
        /// The width of the gap, in milliseconds.
        spread_ms: i64,
        /// How many clocks were read (this node's included).
        clocks: usize,
    },
}

impl ClockStatus {
    /// Whether the node knows the cluster's clock (its offset applies).
    fn offset(self) -> Option<i64> {
        match self {
            ClockStatus::Agrees { offset_ms, .. } | ClockStatus::Skewed { offset_ms, .. } => Some(offset_ms),
            ClockStatus::Unknown | ClockStatus::Ambiguous { .. } => None,
        }
    }
}

/// What readings of the peers' clocks (`peers`: each peer's clock minus
/// this node's, in ms) say about this node's clock, with `hook_ms` (the
/// test-only shift of the versions' clock against the system clock, 0 in
/// production) added to what its versions are stamped with, against a
/// drift bound of `bound_ms`.
pub fn assess(peers: &[i64], hook_ms: i64, bound_ms: u64) -> ClockStatus {
    if peers.is_empty() {
        return ClockStatus::Unknown;
    }
    // Every clock against this node's system clock (this node's own at 0),
    // shifted by the hook: this node's versions are stamped at +hook.
    let mut clocks: Vec<i64> = peers.iter().map(|p| p.saturating_sub(hook_ms)).collect();
    clocks.push(0);
    clocks.sort_unstable();
    let n = clocks.len();
    let bound = i64::try_from(bound_ms).unwrap_or(i64::MAX);
    if n.is_multiple_of(2) {
        let (low, high) = (clocks[n / 2 - 1], clocks[n / 2]);
        let spread = high.saturating_sub(low);
        if spread > bound {
            return ClockStatus::Ambiguous { spread_ms: spread, clocks: n };
        }
    }
    let median = rollgate::admin::clock::median(clocks).unwrap_or(0);
    // This node's clock (0) minus the median.
    let offset_ms = median.saturating_neg();
    if offset_ms.unsigned_abs() > bound_ms {
        ClockStatus::Skewed { offset_ms, clocks: n }
    } else {
        ClockStatus::Agrees { offset_ms, clocks: n }
    }
}

/// Why a version is not stored here (see [`ClockView::check_version`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "version {version} is {ahead_ms} ms ahead of this node's time, beyond the drift bound of {bound_ms} ms: the clock \
     of node {} is ahead (fix it: NTP)",
    version.node
)]
pub struct BeyondDriftBound {
    /// The version.
    pub version: Version,
    /// How far past this node's time it is.
    pub ahead_ms: u64,
    /// The bound.
    pub bound_ms: u64,
}

/// This node's view of its clock (see the module docs): cheap to read on
/// the hot path (an atomic load for the time).
#[derive(Debug)]
pub struct ClockView {
    bound_ms: u64,
    hook_ms: i64,
    /// The correction applied to the system clock for TTLs and the drift
    /// bound: the system clock minus the cluster's, when known and large enough.
    correction_ms: AtomicI64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    status: ClockStatus,
    /// The last reading of each running peer: its clock minus ours (system
    /// clocks), and when it was taken.
    peers: BTreeMap<String, (i64, Instant)>,
}

impl ClockView {
    /// A view with nothing read yet, for versions stamped at `hook_ms` past
    /// the system clock (0 but in tests), against `bound_ms`.
    pub fn new(hook_ms: i64, bound_ms: u64) -> ClockView {
        ClockView {
            bound_ms,
            hook_ms,
            correction_ms: AtomicI64::new(0),
            inner: Mutex::new(Inner { status: ClockStatus::Unknown, peers: BTreeMap::new() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the node concludes now.
    pub fn status(&self) -> ClockStatus {
        self.lock().status
    }

    /// The drift bound, in milliseconds.
    pub fn bound_ms(&self) -> u64 {
        self.bound_ms
    }

    /// The last readings of the running peers' system clocks, each minus this node's.
    pub fn peer_offsets(&self) -> BTreeMap<String, i64> {
        self.lock().peers.iter().map(|(p, (o, _))| (p.clone(), *o)).collect()
    }

    /// Whether `peer`'s clock has been read (and is kept).
    pub fn has_read(&self, peer: &str) -> bool {
        self.lock().peers.contains_key(peer)
    }

    /// Takes a round of readings (`read`: the running peers that answered,
    /// each one's clock minus ours; `running`: every running peer, whose
    /// last reading is kept for `keep` when it did not answer) and returns
    /// the new status and the old one when it changed.
    pub fn update(
        &self,
        read: BTreeMap<String, i64>,
        running: &BTreeSet<String>,
        keep: Duration,
    ) -> (ClockStatus, Option<ClockStatus>) {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut peers: BTreeMap<String, (i64, Instant)> = inner
            .peers
            .iter()
            .filter(|(p, (_, at))| running.contains(*p) && now.duration_since(*at) < keep)
            .map(|(p, v)| (p.clone(), *v))
            .collect();
        peers.extend(read.into_iter().map(|(p, o)| (p, (o, now))));
        let values: Vec<i64> = peers.values().map(|(o, _)| *o).collect();
        let status = assess(&values, self.hook_ms, self.bound_ms);
        // The system clock's offset (the hook shifts versions, not TTLs).
        let system = assess(&values, 0, self.bound_ms).offset().unwrap_or(0);
        let correction = if status.offset().is_some() && system.abs() >= CORRECTION_MIN_MS { system } else { 0 };
        self.correction_ms.store(correction, Ordering::Release);
        inner.peers = peers;
        let old = std::mem::replace(&mut inner.status, status);
        let changed = std::mem::discriminant(&old) != std::mem::discriminant(&status);
        (status, changed.then_some(old))
    }

    /// The cluster's time in Unix milliseconds as this node best knows it:
    /// its system clock, corrected by its offset from the cluster's clock
    /// when that is known and at least [`CORRECTION_MIN_MS`]. TTLs are
    /// stamped and judged with it.
    pub fn cluster_now_ms(&self) -> u64 {
        let now = rollgate::cluster::now_ms();
        let c = self.correction_ms.load(Ordering::Acquire);
        if c >= 0 { now.saturating_sub(c.unsigned_abs()) } else { now.saturating_add(c.unsigned_abs()) }
    }

    /// Whether a version may be stored here (from a peer, a pull, or this
    /// node's own client): at most the drift bound past
    /// [`cluster_now_ms`](Self::cluster_now_ms).
    pub fn check_version(&self, version: &Version) -> Result<(), BeyondDriftBound> {
        let limit = self.cluster_now_ms().saturating_add(self.bound_ms);
        if version.wall_ms <= limit {
            return Ok(());
        }
        let ahead_ms = version.wall_ms.saturating_sub(self.cluster_now_ms());
        Err(BeyondDriftBound { version: version.clone(), ahead_ms, bound_ms: self.bound_ms })
    }

    /// The peers (of `peers`) that would not store `version` as far as this
    /// node knows: those whose own clock plus the drift bound is below it,
    /// and those whose clock it has not read (a peer that just started may
    /// go by any clock). While the cluster's clock is ambiguous, each goes
    /// by its own.
    pub fn peers_refusing(&self, version: &Version, peers: &[String]) -> Vec<String> {
        let inner = self.lock();
        let now = rollgate::cluster::now_ms();
        peers
            .iter()
            .filter(|p| {
                inner.peers.get(*p).is_none_or(|(offset, _)| {
                    let theirs = if *offset >= 0 {
                        now.saturating_add(offset.unsigned_abs())
                    } else {
                        now.saturating_sub(offset.unsigned_abs())
                    };
                    version.wall_ms > theirs.saturating_add(self.bound_ms)
                })
            })
            .cloned()
            .collect()
    }
}

impl Default for ClockView {
    fn default() -> Self {
        ClockView::new(crate::hlc::test_offset_ms(), MAX_FORWARD_DRIFT_MS)
    }
}

/// How a status reads in a log line or an error.
pub fn describe(status: ClockStatus, bound_ms: u64) -> String {
    let side = |o: i64| if o >= 0 { "ahead of" } else { "behind" };
    match status {
        ClockStatus::Unknown => "no running peer's clock has been read yet".into(),
        ClockStatus::Agrees { offset_ms, clocks } => {
            format!(
                "this node's clock is {} ms {} the cluster's (median of {clocks} clocks)",
                offset_ms.abs(),
                side(offset_ms)
            )
        }
        ClockStatus::Skewed { offset_ms, clocks } => format!(
            "this node's clock is {} ms {} the cluster's (median of {clocks} clocks), beyond the drift bound of \
             {bound_ms} ms: it coordinates no write until its clock is fixed (check NTP on this host)",
            offset_ms.abs(),
            side(offset_ms)
        ),
        ClockStatus::Ambiguous { spread_ms, clocks } => format!(
            "the {clocks} running clocks split into two groups {spread_ms} ms apart, beyond the drift bound of \
             {bound_ms} ms, and nothing says which is right: TTL writes and reads of values with a TTL are refused \
             until another member runs or the wrong clock is fixed (check NTP on every host)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const BOUND: u64 = 3_600_000;
    const KEEP: Duration = Duration::from_secs(20);

    fn read(peers: &[(&str, i64)]) -> BTreeMap<String, i64> {
        peers.iter().map(|(p, o)| (p.to_string(), *o)).collect()
    }

    fn running() -> BTreeSet<String> {
        ["b", "c"].into_iter().map(String::from).collect()
    }

    #[test]
    fn a_peer_that_does_not_answer_keeps_its_reading_a_while_and_a_stopped_one_goes() {
        let view = ClockView::new(0, BOUND);
        view.update(read(&[("b", -DAY), ("c", -DAY)]), &running(), KEEP);
        assert!(matches!(view.status(), ClockStatus::Skewed { .. }));
        // c does not answer this round: its reading stays.
        view.update(read(&[("b", -DAY)]), &running(), KEEP);
        assert!(matches!(view.status(), ClockStatus::Skewed { clocks: 3, .. }), "{:?}", view.status());
        // c stopped: its reading goes.
        let only_b: BTreeSet<String> = ["b".to_string()].into();
        view.update(read(&[]), &only_b, KEEP);
        assert!(matches!(view.status(), ClockStatus::Ambiguous { clocks: 2, .. }), "{:?}", view.status());
        assert!(view.has_read("b") && !view.has_read("c"));
        // Too old: gone too.
        view.update(read(&[]), &only_b, Duration::ZERO);
        assert_eq!(view.status(), ClockStatus::Unknown);
    }

    #[test]
    fn the_median_of_the_running_clocks_says_who_is_off() {
        assert_eq!(assess(&[], 0, BOUND), ClockStatus::Unknown);
        // Three nodes, this one right, a peer a day ahead.
        assert_eq!(assess(&[DAY, 300], 0, BOUND), ClockStatus::Agrees { offset_ms: -300, clocks: 3 });
        // This one a day ahead of two that agree.
        assert_eq!(assess(&[-DAY, -DAY + 500], 0, BOUND), ClockStatus::Skewed { offset_ms: DAY - 500, clocks: 3 });
        // A day behind.
        assert_eq!(assess(&[DAY, DAY], 0, BOUND), ClockStatus::Skewed { offset_ms: -DAY, clocks: 3 });
        // Two running, a day apart: nothing says who is right.
        assert_eq!(assess(&[DAY], 0, BOUND), ClockStatus::Ambiguous { spread_ms: DAY, clocks: 2 });
        // Two running within the bound: the mean of both.
        assert_eq!(assess(&[2_000], 0, BOUND), ClockStatus::Agrees { offset_ms: -1_000, clocks: 2 });
        // Four, the odd one out is outvoted.
        assert_eq!(assess(&[DAY, 0, 100], 0, BOUND), ClockStatus::Agrees { offset_ms: -50, clocks: 4 });
    }

    #[test]
    fn the_test_hook_shifts_the_versions_clock_not_the_system_one() {
        // A day ahead through the hook only: peers' clocks agree with the system clock.
        assert_eq!(assess(&[0, 0], DAY, BOUND), ClockStatus::Skewed { offset_ms: DAY, clocks: 3 });
        let view = ClockView::new(DAY, BOUND);
        let (status, old) = view.update(read(&[("b", 0), ("c", 0)]), &running(), KEEP);
        assert!(matches!(status, ClockStatus::Skewed { .. }) && old == Some(ClockStatus::Unknown), "{status:?}");
        // TTLs keep the system clock: no correction.
        assert!(view.cluster_now_ms().abs_diff(rollgate::cluster::now_ms()) < 1_000);
    }

    #[test]
    fn a_node_a_day_behind_corrects_its_time_and_refuses_nothing_from_the_present() {
        let view = ClockView::new(0, BOUND);
        let now = rollgate::cluster::now_ms();
        view.update(read(&[("b", DAY), ("c", DAY)]), &running(), KEEP);
        assert!(view.cluster_now_ms().abs_diff(now + DAY as u64) < 1_000);
        let present = Version { wall_ms: now + DAY as u64, logical: 0, node: "b".into() };
        view.check_version(&present).unwrap();
        // Small offsets are left alone.
        view.update(read(&[("b", 1_500), ("c", 1_500)]), &running(), KEEP);
        assert!(view.cluster_now_ms().abs_diff(rollgate::cluster::now_ms()) < 100);
    }

    #[test]
    fn a_version_beyond_the_bound_is_refused_naming_the_clock() {
        let view = ClockView::new(0, BOUND);
        let now = rollgate::cluster::now_ms();
        let ok = Version { wall_ms: now + BOUND - 60_000, logical: 0, node: "a".into() };
        view.check_version(&ok).unwrap();
        let ahead = Version { wall_ms: now + DAY as u64, logical: 0, node: "a".into() };
        let e = view.check_version(&ahead).unwrap_err();
        assert!(e.ahead_ms >= DAY as u64 - 1_000 && e.to_string().contains("clock of node a is ahead"), "{e}");
    }

    /// A peer connected whose clock was not read yet (it just restarted,
    /// its reading went with its stop) may go by a clock a day behind: while
    /// the clocks are ambiguous it does not count as storing a version, or a
    /// day-ahead node stores a write no majority accepts (the day-ahead
    /// fault scenario found it during a rolling upgrade).
    #[test]
    fn peers_going_by_their_own_clock_would_refuse_what_is_beyond_it_and_unread_ones_may() {
        let view = ClockView::new(0, BOUND);
        view.update(read(&[("b", -DAY), ("c", 0)]), &running(), KEEP);
        let now = rollgate::cluster::now_ms();
        let v = Version { wall_ms: now, logical: 0, node: "a".into() };
        assert_eq!(view.peers_refusing(&v, &["b".into(), "c".into(), "d".into()]), ["b", "d"]);
        assert!(describe(ClockStatus::Skewed { offset_ms: -DAY, clocks: 3 }, BOUND).contains("behind"));
    }
}

//! Versions of writes: a hybrid logical clock (wall-clock milliseconds plus a
//! logical counter) with the writing node's id as the tie-break, so every
//! write has a unique version and last-writer-wins is a total order.
//!
//! Each node keeps one [`Hlc`]; it moves forward on every local write
//! ([`Hlc::now`]) and on every version it stores from a peer
//! ([`Hlc::observe`]), so a write made after seeing another always wins over
//! it, even across nodes whose wall clocks disagree a little. A node starts
//! its clock at the highest version in its data dir, so a restart with a
//! clock that went backwards does not produce versions older than its own
//! earlier writes.
//!
//! The drift bound ([`MAX_FORWARD_DRIFT_MS`]) limits how far ahead of the
//! node's wall clock anything may push its clock: a version observed from a
//! peer, and the floor taken from the data dir at start (a data dir may hold
//! versions from a clock that was wrong). The arithmetic is checked: at the
//! top of its range the clock answers [`ClockExhausted`] instead of wrapping
//! to an old version.

use std::sync::{Mutex, OnceLock};

use rollgate::wire::{Decode, Encode};

/// The version of one write: ordered by `wall_ms`, then `logical`, then `node`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode)]
pub struct Version {
    /// Wall-clock milliseconds since the Unix epoch (or a value pushed ahead by a peer's clock).
    pub wall_ms: u64,
    /// Orders writes within one millisecond.
    pub logical: u32,
    /// The node that made the write: the tie-break between nodes.
    pub node: String,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.logical, self.node)
    }
}

/// Why a version string (`WALL_MS.LOGICAL@NODE`, as [`Version`] displays) does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {input:?}: {reason} (expected WALL_MS.LOGICAL@NODE, e.g. 1767225600000.0@n1)")]
pub struct ParseVersionError {
    /// The input, shortened.
    pub input: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl std::str::FromStr for Version {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Version, ParseVersionError> {
        let err = |reason| ParseVersionError { input: rollgate::util::shorten_to(s, 96), reason };
        let (clock, node) = s.split_once('@').ok_or_else(|| err("no `@NODE`"))?;
        let (wall, logical) = clock.split_once('.').ok_or_else(|| err("no `.LOGICAL`"))?;
        let digits = |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(wall) || !digits(logical) {
            return Err(err("WALL_MS and LOGICAL must be decimal numbers"));
        }
        let wall_ms = wall.parse().map_err(|_| err("WALL_MS is out of range"))?;
        let logical = logical.parse().map_err(|_| err("LOGICAL is out of range"))?;
        rollgate::cluster::validate_node_id(node).map_err(|_| err("NODE is not a valid node id"))?;
        Ok(Version { wall_ms, logical, node: node.to_string() })
    }
}

/// Largest step a peer's version may push our clock ahead of our wall clock
/// (a peer with a clock far in the future would otherwise drag every node
/// with it): one hour.
pub const MAX_FORWARD_DRIFT_MS: u64 = 3_600_000;

/// **Test-only hook**: when this environment variable is set to a signed
/// number of milliseconds, the HLC's wall-clock source (and nothing else in
/// the process) reads the system clock shifted by that much, as if this
/// node's clock were wrong by that amount (`86400000`: a day ahead,
/// `-86400000`: a day behind). It exists for the fault tests (a node whose
/// clock is off by hours or days); a node logs a warning naming it at start.
/// A value that is not an integer panics at the first read, so a test never
/// believes it skewed a clock that it did not.
pub const TEST_CLOCK_OFFSET_ENV: &str = "ROLLGATE_KV_TEST_CLOCK_OFFSET_MS";

/// The offset of [`TEST_CLOCK_OFFSET_ENV`] (0 when unset), read once per process.
fn test_clock_offset_ms() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| match std::env::var(TEST_CLOCK_OFFSET_ENV) {
        Err(_) => 0,
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            panic!("{TEST_CLOCK_OFFSET_ENV}={v:?} is not a whole number of milliseconds (test-only hook)")
        }),
    })
}

/// The HLC's wall clock: the system clock in Unix milliseconds, shifted by
/// the test-only [`TEST_CLOCK_OFFSET_ENV`] when it is set.
fn wall_ms() -> u64 {
    let now = rollgate::cluster::now_ms();
    let offset = test_clock_offset_ms();
    if offset >= 0 { now.saturating_add(offset.unsigned_abs()) } else { now.saturating_sub(offset.unsigned_abs()) }
}

/// The clock cannot go higher: it is at the top of its range, so any version
/// it produced would repeat or wrap below older ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the write clock of node {node} is at the top of its range ({at}): no newer version exists")]
pub struct ClockExhausted {
    /// The node.
    pub node: String,
    /// Where the clock is.
    pub at: String,
}

/// The HLC's wall clock shifted by nothing or by the test-only hook: the
/// offset of [`TEST_CLOCK_OFFSET_ENV`] in milliseconds (0 when unset), so
/// that a node can tell what its versions are stamped with against its
/// system clock.
pub fn test_offset_ms() -> i64 {
    test_clock_offset_ms()
}

/// A hybrid logical clock for one node.
#[derive(Debug)]
pub struct Hlc {
    node: String,
    state: Mutex<(u64, u32)>,
}

impl Hlc {
    /// A clock for `node`, starting at `floor` (the highest version already
    /// stored) when given.
    /// A floor beyond the wall clock plus [`MAX_FORWARD_DRIFT_MS`] (the data
    /// dir holds versions of a clock that was ahead) is clamped to that
    /// bound, as a version observed from a peer would be, and logged: writes
    /// to the keys holding such versions are then refused as superseded
    /// until real time passes them, rather than stamped a day ahead.
    pub fn new(node: impl Into<String>, floor: Option<&Version>) -> Self {
        let node = node.into();
        let limit = wall_ms().saturating_add(MAX_FORWARD_DRIFT_MS);
        let state = match floor {
            None => (0, 0),
            Some(v) if v.wall_ms > limit => {
                tracing::warn!(
                    node = %node, floor = %v, ahead_ms = v.wall_ms - wall_ms(),
                    "the data dir holds versions from a clock that was ahead of this node's by more than the drift \
                     bound ({MAX_FORWARD_DRIFT_MS} ms); new writes are stamped from now + the bound, and writes to \
                     the keys holding such versions are refused as superseded until real time passes them"
                );
                (limit, 0)
            }
            Some(v) => (v.wall_ms, v.logical),
        };
        let offset = test_clock_offset_ms();
        if offset != 0 {
            tracing::warn!(
                offset_ms = offset,
                "test-only clock offset in effect: {TEST_CLOCK_OFFSET_ENV}={offset} shifts this node's HLC wall clock"
            );
        }
        Hlc { node, state: Mutex::new(state) }
    }

    /// The node id versions are stamped with.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A fresh version, above every version this clock produced or observed;
    /// [`ClockExhausted`] at the top of the range (never a repeated or
    /// wrapped version).
    pub fn now(&self) -> Result<Version, ClockExhausted> {
        let wall = wall_ms();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let next = if wall > s.0 {
            Some((wall, 0))
        } else if let Some(logical) = s.1.checked_add(1) {
            Some((s.0, logical))
        } else {
            s.0.checked_add(1).map(|w| (w, 0))
        };
        let Some(next) = next else {
            return Err(ClockExhausted { node: self.node.clone(), at: format!("{}.{}", s.0, s.1) });
        };
        *s = next;
        Ok(Version { wall_ms: s.0, logical: s.1, node: self.node.clone() })
    }

    /// The wall clock versions are stamped from (the system clock, shifted
    /// by the test-only hook when set).
    pub fn wall_ms(&self) -> u64 {
        wall_ms()
    }

    /// Moves the clock to at least `seen` (a version stored from a peer).
    /// A version more than [`MAX_FORWARD_DRIFT_MS`] ahead of our wall clock
    /// moves it only that far.
    pub fn observe(&self, seen: &Version) {
        let limit = wall_ms().saturating_add(MAX_FORWARD_DRIFT_MS);
        let (wall, logical) = if seen.wall_ms > limit { (limit, 0) } else { (seen.wall_ms, seen.logical) };
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if (wall, logical) > *s {
            *s = (wall, logical);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_observe_moves_forward() {
        let hlc = Hlc::new("b", None);
        let a = hlc.now().unwrap();
        let b = hlc.now().unwrap();
        assert!(b > a);
        let ahead = Version { wall_ms: b.wall_ms + 10_000, logical: 7, node: "a".into() };
        hlc.observe(&ahead);
        let c = hlc.now().unwrap();
        assert!(c > ahead, "{c} after observing {ahead}");
        assert_eq!(c.node, "b");
    }

    #[test]
    fn versions_parse_back_from_their_display_and_garbage_is_refused() {
        let v = Version { wall_ms: 1_767_225_600_000, logical: 4, node: "n-1".into() };
        assert_eq!(v.to_string().parse::<Version>().unwrap(), v);
        let long = format!("1.2@{}", "n".repeat(65));
        let huge = format!("{}.0@n", "9".repeat(5000));
        for bad in ["", "@", "1.2", "1@n", ".2@n", "1.@n", "-1.2@n", "1.2@", "1.99999999999@n", "1.2@n@m", "1.2@a b"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
        assert!(long.parse::<Version>().is_err());
        let e = huge.parse::<Version>().unwrap_err();
        assert!(e.to_string().len() < 300, "the error is bounded: {e}");
    }

    #[test]
    fn the_tie_break_is_the_node_id() {
        let x = Version { wall_ms: 5, logical: 1, node: "a".into() };
        let y = Version { wall_ms: 5, logical: 1, node: "b".into() };
        assert!(y > x);
    }

    #[test]
    fn a_far_future_peer_moves_the_clock_a_bounded_step() {
        let hlc = Hlc::new("n", None);
        hlc.observe(&Version { wall_ms: u64::MAX, logical: u32::MAX, node: "evil".into() });
        let v = hlc.now().unwrap();
        assert!(v.wall_ms <= rollgate::cluster::now_ms() + MAX_FORWARD_DRIFT_MS + 1);
    }

    const DAY_MS: u64 = 86_400_000;

    /// I10: `Hlc::new` adopts the highest stored version as its
    /// floor. A data dir that stored a version a day ahead (a peer's clock
    /// was a day ahead) must not drag this node's clock past its wall clock
    /// plus [`MAX_FORWARD_DRIFT_MS`] after a restart: the floor is clamped to
    /// the drift bound like any version observed from a peer.
    #[test]
    fn a_stored_floor_beyond_the_drift_bound_is_clamped_to_it() {
        let floor = Version { wall_ms: wall_ms() + DAY_MS, logical: 0, node: "peer".into() };
        let hlc = Hlc::new("n", Some(&floor));
        let v = hlc.now().unwrap();
        let bound = wall_ms() + MAX_FORWARD_DRIFT_MS;
        assert!(
            v.wall_ms <= bound,
            "a floor a day ahead ({floor}) put the clock {} ms past now + the drift bound: first version {v}",
            v.wall_ms - bound
        );
    }

    /// `now()` computes `s.0 + 1` when the logical counter is
    /// full; with a floor at the top of the range (a stored or received
    /// `u64::MAX.u32::MAX` version) that overflows: a panic in a debug
    /// build, a version wrapped to 0 (older than everything) in release.
    /// The clock must neither panic nor go below its wall clock.
    #[test]
    fn the_clock_neither_panics_nor_wraps_at_the_top_of_its_range() {
        let top = Version { wall_ms: u64::MAX, logical: u32::MAX, node: "peer".into() };
        let hlc = Hlc::new("n", Some(&top));
        let before = wall_ms();
        let v = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hlc.now())).unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            panic!("Hlc::now() panicked with the floor at {top}: {why}")
        });
        // A version at or above the wall clock, or a clear error: never a wrapped one.
        if let Ok(v) = v {
            assert!(v.wall_ms >= before, "the clock wrapped below the wall clock ({before}): {v}");
        }
    }

    /// The arithmetic itself, with the clock put at the top of its range
    /// (which the floor clamp keeps it from reaching): the last versions
    /// come out in order, then an error, never a repeated or wrapped one.
    #[test]
    fn at_the_top_of_its_range_the_clock_says_so_instead_of_wrapping() {
        let hlc = Hlc::new("n", None);
        *hlc.state.lock().unwrap() = (u64::MAX - 1, u32::MAX - 1);
        let a = hlc.now().unwrap();
        let b = hlc.now().unwrap();
        let c = hlc.now().unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!([(a.wall_ms, a.logical), (b.wall_ms, b.logical)], [(u64::MAX - 1, u32::MAX), (u64::MAX, 0)]);
        *hlc.state.lock().unwrap() = (u64::MAX, u32::MAX);
        let e = hlc.now().unwrap_err();
        assert!(e.to_string().contains("top of its range"), "{e}");
        assert_eq!(*hlc.state.lock().unwrap(), (u64::MAX, u32::MAX), "unchanged");
    }

    #[test]
    fn the_floor_survives_a_restart() {
        // A floor ahead of the wall clock, within the drift bound (the clock
        // went back ten minutes since the last write): versions stay above it.
        let floor = Version { wall_ms: wall_ms() + 600_000, logical: 3, node: "n".into() };
        let hlc = Hlc::new("n", Some(&floor));
        assert!(hlc.now().unwrap() > floor);
    }
}

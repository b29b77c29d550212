//! Wall-clock offsets for a child: through the service's own environment
//! variable, and through `faketime` (installed by `scripts/test`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollgate_testkit::clock::ClockOffset;
use rollgate_testkit::process::{ChildProcess, ClockHook, ProcessSpec};

const LINE: Duration = Duration::from_secs(30);
const DAY_S: i64 = 86_400;

fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn offsets_have_a_sign_and_faketime_spelling() {
    assert_eq!(ClockOffset::ahead(ClockOffset::DAY).millis(), 86_400_000);
    assert_eq!(ClockOffset::behind(Duration::from_millis(3_600_500)).millis(), -3_600_500);
    assert_eq!(ClockOffset::ahead(ClockOffset::DAY).faketime_spec(), "+86400.000");
    assert_eq!(ClockOffset::behind(Duration::from_millis(3_600_500)).faketime_spec(), "-3600.500");
    assert_eq!(ClockOffset::behind(ClockOffset::DAY).env("X"), ("X".to_string(), "-86400000".to_string()));
}

#[test]
fn the_env_hook_hands_the_offset_to_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ProcessSpec::new("sh", dir.path().join("c.log"))
        .args(["-c", "echo offset=$SKEW_MS"])
        .clock(ClockOffset::behind(ClockOffset::DAY), ClockHook::Env("SKEW_MS".into()));
    let mut p = ChildProcess::spawn(spec).unwrap();
    let line = p.wait_line("offset", LINE, |l| l.starts_with("offset=")).unwrap();
    assert_eq!(line, "offset=-86400000");
}

/// The child's wall clock (as `date` reads it) is a day ahead or behind.
#[test]
fn faketime_shifts_the_whole_wall_clock_of_the_child_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    for (offset, sign) in [(ClockOffset::ahead(ClockOffset::DAY), 1), (ClockOffset::behind(ClockOffset::DAY), -1)] {
        let spec = ProcessSpec::new("date", dir.path().join("date.log")).arg("+%s").clock(offset, ClockHook::Faketime);
        let before = now_s();
        let mut p = ChildProcess::spawn(spec).unwrap_or_else(|e| panic!("{e}"));
        let line = p.wait_line("epoch seconds", LINE, |l| l.parse::<i64>().is_ok()).unwrap();
        let after = now_s();
        let seen: i64 = line.parse().unwrap();
        let want = sign * DAY_S;
        assert!(
            (before + want - 1..=after + want + 1).contains(&seen),
            "{offset:?}: the child read {seen}, expected {} ..= {}",
            before + want,
            after + want
        );
    }
}

/// A graceful stop of a service under faketime is the service's own: the
/// exit status it chose on SIGTERM, not a wrapper killed by the signal
/// while the service still shuts down (a restart would then race it for
/// its ports and data dir).
#[test]
fn a_process_under_faketime_stops_with_its_own_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let script = "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done";
    let spec = ProcessSpec::new("sh", dir.path().join("sh.log"))
        .args(["-c", script])
        .clock(ClockOffset::ahead(ClockOffset::DAY), ClockHook::Faketime);
    let mut p = ChildProcess::spawn(spec).unwrap_or_else(|e| panic!("{e}"));
    p.wait_line("ready", LINE, |l| l == "ready").unwrap();
    let status = p.terminate(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(7), "{status:?}: the exit status of the service itself");
}

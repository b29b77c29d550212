//! A per-process wall-clock offset: hours to days, ahead or behind.
//!
//! Two ways to apply one to a child (see [`crate::process::ClockHook`]):
//!
//! - the service's own test-only hook, an environment variable holding the
//!   offset in milliseconds ([`ClockOffset::env`]); rollgate-kv reads
//!   `ROLLGATE_KV_TEST_CLOCK_OFFSET_MS` in its HLC's wall-clock source only,
//!   so versions are skewed and nothing else is (leases, TTLs and timers
//!   keep the true time);
//! - Debian's `faketime` ([`ClockOffset::faketime_command`]), which works
//!   for any dynamically linked binary and shifts every wall-clock read of
//!   the process (`SystemTime::now`, log timestamps, TTLs, heartbeat times),
//!   as a real wrong clock would. Monotonic clocks are left alone
//!   (`FAKETIME_DONT_FAKE_MONOTONIC=1`), so timers and timeouts still work.
//!   Checked with the tokio-based `rollgate-kv serve`: its versions and its
//!   HTTP `date` header move by the offset.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::ProcessError;

/// A signed wall-clock offset in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClockOffset(i64);

impl ClockOffset {
    /// One day, the offset of rollgate-kv's clock-skew scenarios.
    pub const DAY: Duration = Duration::from_secs(86_400);

    /// `d` ahead of the true time.
    pub fn ahead(d: Duration) -> ClockOffset {
        ClockOffset(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// `d` behind the true time.
    pub fn behind(d: Duration) -> ClockOffset {
        ClockOffset(-i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// The offset in milliseconds (negative: behind).
    pub fn millis(self) -> i64 {
        self.0
    }

    /// The environment variable setting for a service hook named `var`.
    pub fn env(self, var: &str) -> (String, String) {
        (var.to_string(), self.0.to_string())
    }

    /// `faketime`'s relative offset spec: `+86400.000` / `-3600.500` (seconds).
    pub fn faketime_spec(self) -> String {
        let sign = if self.0 < 0 { '-' } else { '+' };
        let ms = self.0.unsigned_abs();
        format!("{sign}{}.{:03}", ms / 1000, ms % 1000)
    }

    /// `faketime -f SPEC PROGRAM ARGS...` with monotonic clocks left alone.
    /// An error (saying how to install it) when `faketime` is not on PATH.
    pub fn faketime_command(self, program: &OsStr, args: &[OsString]) -> Result<Command, ProcessError> {
        let faketime = find_faketime(std::env::var_os("PATH"))?;
        let mut cmd = Command::new(faketime);
        cmd.arg("-f").arg(self.faketime_spec()).arg(program).args(args);
        cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        Ok(cmd)
    }
}

/// Finds `faketime` in the directories of a PATH value.
pub fn find_faketime(path: Option<OsString>) -> Result<PathBuf, ProcessError> {
    path.and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("faketime")).find(|p| p.is_file())).ok_or_else(
        || {
            ProcessError(
                "`faketime` is not on PATH: run `scripts/test`, which installs it (Debian package faketime), \
                 or use the service's own clock-offset variable (ClockHook::Env)"
                    .into(),
            )
        },
    )
}

//! A per-process wall-clock offset: hours to days, ahead or behind.
//!
//! Two ways to apply one to a child (see [`crate::process::ClockHook`]):
//!
//! - the service's own test-only hook, an environment variable holding the
//!   offset in milliseconds ([`ClockOffset::env`]); rollgate-kv reads
//!   `ROLLGATE_KV_TEST_CLOCK_OFFSET_MS` in its HLC's wall-clock source only,
//!   so versions are skewed and nothing else is (leases, TTLs and timers
//!   keep the true time);
//! - Debian's libfaketime ([`ClockOffset::faketime_command`]), which works
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

    /// `PROGRAM ARGS...` with Debian's libfaketime preloaded and this
    /// offset in `FAKETIME`, monotonic clocks left alone. The library is
    /// preloaded directly rather than through the `faketime` wrapper: that
    /// wrapper forks and waits, so a SIGTERM to the process group kills it
    /// at once while the service still shuts down, and the exit status seen
    /// is the wrapper's, not the service's. An error (saying how to install
    /// it) when libfaketime is not installed.
    pub fn faketime_command(self, program: &OsStr, args: &[OsString]) -> Result<Command, ProcessError> {
        let library = find_libfaketime()?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd.env("LD_PRELOAD", library);
        cmd.env("FAKETIME", self.faketime_spec());
        cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        Ok(cmd)
    }
}

/// Where Debian and a source install put libfaketime (the multithreaded
/// build, for services with thread pools).
pub fn find_libfaketime() -> Result<PathBuf, ProcessError> {
    const NAME: &str = "faketime/libfaketimeMT.so.1";
    let mut dirs: Vec<PathBuf> = vec!["/usr/local/lib".into(), "/usr/lib".into()];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.join(NAME).is_file()));
    }
    dirs.into_iter().map(|d| d.join(NAME)).find(|p| p.is_file()).ok_or_else(|| {
        ProcessError(
            "libfaketime is not installed: run `scripts/test`, which installs it (Debian package faketime), \
             or use the service's own clock-offset variable (ClockHook::Env)"
                .into(),
        )
    })
}

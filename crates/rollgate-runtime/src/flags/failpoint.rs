//! A tiny fail-point facility for crash tests.
//!
//! When the environment variable `ROLLGATE_FAILPOINT` names a point (or a
//! comma-separated list holds it), reaching that point prints
//! `rollgate failpoint reached: <name>` on stdout and blocks the task
//! forever, so a parent process can read the line and kill this one with
//! SIGKILL at exactly that step. Without the variable a fail point costs one
//! read of a value initialised once.
//!
//! The points of the enable protocol are listed in [`ENABLE_POINTS`], those
//! of the disable protocol in [`DISABLE_POINTS`].

use std::io::Write;
use std::sync::OnceLock;

/// The environment variable naming the active fail points.
pub const FAILPOINT_ENV: &str = "ROLLGATE_FAILPOINT";

/// The fail points of the enable protocol, in the order they are reached.
pub const ENABLE_POINTS: [&str; 5] = [
    "enable.before_enabling_commit",
    "enable.after_enabling_committed",
    "enable.after_cluster_step",
    "enable.after_node_steps",
    "enable.after_enabled_committed",
];

/// The fail points of the disable protocol, in the order they are reached.
pub const DISABLE_POINTS: [&str; 2] = ["disable.after_disabling_committed", "disable.after_hook"];

fn active() -> &'static [String] {
    static ACTIVE: OnceLock<Vec<String>> = OnceLock::new();
    ACTIVE.get_or_init(|| {
        std::env::var(FAILPOINT_ENV)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    })
}

/// Whether `name` is an active fail point.
pub fn is_active(name: &str) -> bool {
    active().iter().any(|a| a == name)
}

/// Reaches the fail point `name`: blocks forever (after printing the line)
/// when it is active, returns at once otherwise.
pub async fn fail_point(name: &str) {
    if !is_active(name) {
        return;
    }
    tracing::warn!(failpoint = name, "fail point reached; blocking until killed");
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "rollgate failpoint reached: {name}");
        let _ = out.flush();
    }
    std::future::pending::<()>().await;
}

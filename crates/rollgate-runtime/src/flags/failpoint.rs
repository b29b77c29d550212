//! A tiny fail-point facility for crash tests, compiled in only with the
//! `failpoints` feature.
//!
//! Only test code enables the feature: the `rollgate` facade's
//! dev-dependency on this crate does (`features = ["failpoints"]`). Cargo's
//! resolver 2 does not unify a dev-dependency's features into a build that
//! does not build tests, so `cargo build --release -p rollgate-kv` (or any
//! service's build) has no fail point at all: [`fail_point`] is an empty
//! function and `ROLLGATE_FAILPOINT` is never read. `scripts/check-layers`
//! guards this (`cargo tree -e normal,features` of the services).
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

#[cfg(feature = "failpoints")]
fn active() -> &'static [String] {
    use std::sync::OnceLock;
    static ACTIVE: OnceLock<Vec<String>> = OnceLock::new();
    ACTIVE.get_or_init(|| {
        std::env::var(FAILPOINT_ENV)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    })
}

/// Whether `name` is an active fail point (never without the `failpoints` feature).
pub fn is_active(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    return active().iter().any(|a| a == name);
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}

/// Reaches the fail point `name`: blocks forever (after printing the line)
/// when it is active, returns at once otherwise. Without the `failpoints`
/// feature it is empty.
pub async fn fail_point(name: &str) {
    #[cfg(feature = "failpoints")]
    if is_active(name) {
        use std::io::Write;
        tracing::warn!(failpoint = name, "fail point reached; blocking until killed");
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "rollgate failpoint reached: {name}");
            let _ = out.flush();
        }
        std::future::pending::<()>().await;
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

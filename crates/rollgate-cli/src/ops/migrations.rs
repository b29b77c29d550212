//! The migrations part of `rollgate upgrade status`: a table of service
//! format versions and node-local migrations, and `--watch` progress bars.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rollgate_api::migrations::{Direction, Gate, MigrationState, MigrationStatus, ServiceStatus};
use rollgate_api::upgrade::{MigrationsSection, UpgradeStatus};
use rollgate_util::now_ms;

use super::client::Client;
use super::show::{or_dash, print_table, table, wire_name};
use crate::failure::{Failure, Outcome};

/// How often `--watch` asks the node for progress.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// `3m12s ago`-style text for a past timestamp in ms.
fn ago(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let secs = now_ms().saturating_sub(ms) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m{:02}s ago", secs / 60, secs % 60),
        _ => format!("{}h{:02}m ago", secs / 3600, (secs % 3600) / 60),
    }
}

fn duration(secs: Option<u64>) -> String {
    let Some(secs) = secs else { return "-".into() };
    if secs < 60 { format!("{secs}s") } else { format!("{}m{:02}s", secs / 60, secs % 60) }
}

fn progress(m: &MigrationStatus) -> String {
    if m.total == 0 {
        return format!("{}", m.done);
    }
    format!("{}/{} ({:.0}%)", m.done, m.total, 100.0 * m.done as f64 / m.total as f64)
}

fn gate(g: &Gate) -> String {
    match g {
        Gate::Flag(f) => format!("flag {f}"),
        Gate::ClusterFeature(f) => format!("feature {f}"),
    }
}

/// Node-local migrations of the status, flattened (none when the node could
/// not read them).
fn migrations(section: &MigrationsSection) -> Vec<&MigrationStatus> {
    match section {
        MigrationsSection::Status(m) => m.all_migrations().collect(),
        MigrationsSection::Unreadable { .. } => Vec::new(),
    }
}

pub(super) fn is_active(m: &MigrationStatus) -> bool {
    m.state == MigrationState::Running || (m.state == MigrationState::Pending && m.gate_open == Some(true))
}

/// Prints the services and node migrations tables (nothing when there are none).
pub fn print(section: &MigrationsSection) {
    let m = match section {
        MigrationsSection::Unreadable { error } => {
            println!("migrations: cannot read their status: {error}");
            return;
        }
        MigrationsSection::Status(m) => m,
    };
    if !m.services.is_empty() {
        print_services(&m.services);
    }
    let rows = migrations(section);
    if !rows.is_empty() {
        print_migrations(&rows);
    }
    for u in &m.unreadable {
        println!("warning: migration state at {} does not decode: {}", u.key, u.error);
    }
}

fn print_services(services: &[ServiceStatus]) {
    let mut t = table(&["SERVICE", "FORMAT", "TARGET", "WAITING FOR", "STATE", "OWNER", "LAST STEP"]);
    for svc in services {
        let last = match svc.history.last() {
            Some(step) => format!("{} -> {}, finished {}", step.from, step.to, ago(Some(step.finished_ms))),
            None => "-".into(),
        };
        let owner = or_dash(svc.owner.as_ref().map(|o| o.node.as_str()));
        let target = svc.target.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
        let waiting = or_dash(svc.blocked_by.as_ref().map(ToString::to_string).as_deref());
        t.add_row(vec![
            svc.service.clone(),
            svc.version.to_string(),
            target,
            waiting,
            wire_name(&svc.state),
            owner,
            last,
        ]);
    }
    print_table(&mut t);
}

fn print_migrations(rows: &[&MigrationStatus]) {
    let mut t = table(&["NODE", "MIGRATION", "TARGET", "GATE", "STATE", "PROGRESS", "RATE/S", "ETA", "FINISHED"]);
    for m in rows {
        let state = match m.direction {
            Direction::Reverse => format!("{} (reverse)", wire_name(&m.state)),
            Direction::Forward => wire_name(&m.state),
        };
        let state = match &m.error {
            Some(e) => format!("{state}: {e}"),
            None => state,
        };
        t.add_row(vec![
            m.node.clone(),
            m.id.clone(),
            m.target.clone(),
            gate(&m.gate),
            state,
            progress(m),
            format!("{:.0}", m.rate_per_s),
            if is_active(m) { duration(m.eta_s) } else { "-".into() },
            ago(m.finished_ms),
        ]);
    }
    print_table(&mut t);
}

/// `--watch`: one progress bar per node-local migration that is running or
/// about to run, refreshed until none is left or `timeout` passes.
pub async fn watch(client: &Client, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix:<28} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
        .map_err(|e| Failure::Internal(e.into()))?
        .progress_chars("=> ");
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    loop {
        ticker.tick().await;
        let status: UpgradeStatus = client.get("/admin/upgrade/status").await?.decode_report()?;
        let rows = migrations(&status.migrations);
        for m in &rows {
            let key = format!("{}/{}", m.node, m.id);
            let bar = bars.entry(key.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(style.clone());
                bar.set_prefix(key.clone());
                bar
            });
            bar.set_length(m.total);
            bar.set_position(m.done);
            bar.set_message(wire_name(&m.state));
            if !is_active(m) && !bar.is_finished() {
                bar.finish();
            }
        }
        if !rows.iter().any(|m| is_active(m)) {
            let _ = multi.clear();
            print(&status.migrations);
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let _ = multi.clear();
            print(&status.migrations);
            return Err(Failure::refused(format!(
                "migrations still running after {}s; run `rollgate upgrade status --watch` again to keep following them",
                timeout.as_secs()
            )));
        }
    }
}

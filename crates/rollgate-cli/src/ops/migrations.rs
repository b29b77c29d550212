//! The migrations part of `rollgate upgrade status`: a table of service
//! format versions and node-local migrations, and `--watch` progress bars.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rollgate_util::now_ms;
use serde_json::Value;

use super::client::Client;
use super::show::{print_table, s, table};
use crate::failure::{Failure, Outcome};

/// How often `--watch` asks the node for progress.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// `3m12s ago`-style text for a past timestamp in ms.
fn ago(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else { return "-".into() };
    let secs = now_ms().saturating_sub(ms) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m{:02}s ago", secs / 60, secs % 60),
        _ => format!("{}h{:02}m ago", secs / 3600, (secs % 3600) / 60),
    }
}

fn duration(secs: &Value) -> String {
    let Some(secs) = secs.as_u64() else { return "-".into() };
    if secs < 60 { format!("{secs}s") } else { format!("{}m{:02}s", secs / 60, secs % 60) }
}

fn progress(m: &Value) -> String {
    let done = m["done"].as_u64().unwrap_or(0);
    let total = m["total"].as_u64().unwrap_or(0);
    if total == 0 {
        return format!("{done}");
    }
    format!("{done}/{total} ({:.0}%)", 100.0 * done as f64 / total as f64)
}

fn gate(g: &Value) -> String {
    match (g["kind"].as_str(), g["name"].as_str()) {
        (Some("flag"), Some(f)) => format!("flag {f}"),
        (Some("cluster_feature"), Some(f)) => format!("feature {f}"),
        _ => s(g),
    }
}

/// Node-local migrations of the status, flattened.
fn migrations(status: &Value) -> Vec<&Value> {
    status["migrations"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["migrations"].as_array())
        .flatten()
        .collect()
}

fn is_active(m: &Value) -> bool {
    m["state"] == "running" || (m["state"] == "pending" && m["gate_open"] == true)
}

/// Prints the services and node migrations tables (nothing when there are none).
pub fn print(status: &Value) {
    let m = &status["migrations"];
    if let Some(err) = m["error"].as_str() {
        println!("migrations: cannot read their status: {err}");
        return;
    }
    let services: Vec<&Value> = m["services"].as_array().into_iter().flatten().collect();
    if !services.is_empty() {
        let mut t = table(&["SERVICE", "FORMAT", "STATE", "OWNER", "LAST STEP"]);
        for svc in services {
            let last = svc["history"].as_array().and_then(|h| h.last());
            let last = match last {
                Some(step) => {
                    format!("{} -> {}, finished {}", s(&step["from"]), s(&step["to"]), ago(&step["finished_ms"]))
                }
                None => "-".into(),
            };
            t.add_row(vec![s(&svc["service"]), s(&svc["version"]), s(&svc["state"]), s(&svc["owner"]["node"]), last]);
        }
        print_table(&mut t);
    }
    let rows = migrations(status);
    if !rows.is_empty() {
        let mut t = table(&["NODE", "MIGRATION", "TARGET", "GATE", "STATE", "PROGRESS", "RATE/S", "ETA", "FINISHED"]);
        for m in rows {
            let state = match (m["direction"].as_str(), m["state"].as_str()) {
                (Some("reverse"), Some(st)) => format!("{st} (reverse)"),
                (_, Some(st)) => st.to_string(),
                _ => "-".into(),
            };
            let state = match m["error"].as_str() {
                Some(e) => format!("{state}: {e}"),
                None => state,
            };
            t.add_row(vec![
                s(&m["node"]),
                s(&m["id"]),
                s(&m["target"]),
                gate(&m["gate"]),
                state,
                progress(m),
                format!("{:.0}", m["rate_per_s"].as_f64().unwrap_or(0.0)),
                if is_active(m) { duration(&m["eta_s"]) } else { "-".into() },
                ago(&m["finished_ms"]),
            ]);
        }
        print_table(&mut t);
    }
    let unreadable: Vec<&Value> = m["unreadable"].as_array().into_iter().flatten().collect();
    for u in unreadable {
        println!("warning: migration state at {} does not decode: {}", s(&u["key"]), s(&u["error"]));
    }
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
        let status = client.get("/admin/upgrade/status").await?;
        let rows = migrations(&status);
        for m in &rows {
            let key = format!("{}/{}", s(&m["node"]), s(&m["id"]));
            let bar = bars.entry(key.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(style.clone());
                bar.set_prefix(key.clone());
                bar
            });
            bar.set_length(m["total"].as_u64().unwrap_or(0));
            bar.set_position(m["done"].as_u64().unwrap_or(0));
            bar.set_message(s(&m["state"]));
            if !is_active(m) && !bar.is_finished() {
                bar.finish();
            }
        }
        if !rows.iter().any(|m| is_active(m)) {
            let _ = multi.clear();
            print(&status);
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let _ = multi.clear();
            print(&status);
            return Err(Failure::refused(format!(
                "migrations still running after {}s; run `rollgate upgrade status --watch` again to keep following them",
                timeout.as_secs()
            )));
        }
    }
}

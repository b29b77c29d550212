//! `rollgate upgrade wait` and `rollgate flags enable --wait`: follow the
//! cluster (members restarting, flags being enabled, migrations running)
//! with a progress bar on stderr until it reaches the state asked for; on
//! timeout, exit 2 naming what still blocks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rollgate_api::flags::{FlagList, FlagPhase};
use rollgate_api::migrations::{MigrationState, MigrationStatus};
use rollgate_api::nodes::{NodeList, NodeState};
use rollgate_api::upgrade::{MigrationsSection, UpgradeStatus};
use serde::Serialize;

use super::client::Client;
use super::migrations::is_active;
use crate::failure::{Failure, Outcome};

/// How often the node is asked.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The state to wait for.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Goal {
    /// Every member runs this release.
    pub release: Option<String>,
    /// These flags are enabled.
    pub flags: Vec<String>,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct WaitResult {
    /// Whether the cluster reached the goal.
    pub reached: bool,
    /// The goal.
    pub goal: Goal,
    /// How long it took (or how long it waited), in seconds.
    pub elapsed_s: f64,
    /// What still blocked at the end (empty when reached).
    pub blockers: Vec<String>,
}

/// What the cluster looks like now.
struct Snapshot {
    nodes: NodeList,
    flags: FlagList,
    status: UpgradeStatus,
}

fn migrations(section: &MigrationsSection) -> Vec<&MigrationStatus> {
    match section {
        MigrationsSection::Status(m) => m.all_migrations().collect(),
        MigrationsSection::Unreadable { .. } => Vec::new(),
    }
}

/// What stands between the cluster and `goal`, each with what to do.
fn blockers(s: &Snapshot, goal: &Goal) -> Vec<String> {
    let mut out = Vec::new();
    if !s.status.store.reachable {
        out.push(format!(
            "node {} cannot reach the metadata store ({}): check the store",
            s.status.node.node_id,
            s.status.store.last_error.as_deref().unwrap_or("no error given")
        ));
    }
    for n in &s.nodes.nodes {
        if n.state == NodeState::Stopped {
            out.push(format!(
                "node {} (release {}) is stopped: start it, or `rollgate nodes forget {}` if it is gone for good",
                n.node_id, n.release, n.node_id
            ));
        } else if let Some(r) = goal.release.as_deref().filter(|r| *r != n.release) {
            out.push(format!("node {} runs release {}: restart it as release {r}", n.node_id, n.release));
        }
    }
    for f in &s.flags.flags {
        match f.state {
            FlagPhase::Enabling | FlagPhase::Disabling => {
                out.push(format!("flag {} is {} (by node {})", f.name, f.state, f.owner.as_deref().unwrap_or("?")))
            }
            _ if goal.flags.contains(&f.name) && f.state != FlagPhase::Enabled => {
                out.push(format!("flag {} is {}: enable it (`rollgate flags enable {}`)", f.name, f.state, f.name));
            }
            _ => {}
        }
    }
    for missing in goal.flags.iter().filter(|g| !s.flags.flags.iter().any(|f| &f.name == *g)) {
        out.push(format!("flag {missing} is unknown to the node"));
    }
    for m in migrations(&s.status.migrations) {
        if m.state == MigrationState::Failed {
            out.push(format!(
                "migration {} on node {} failed: {} (it retries; see `rollgate upgrade status`)",
                m.id,
                m.node,
                m.error.as_deref().unwrap_or("no error given")
            ));
        } else if is_active(m) {
            let pct = (100 * m.done).checked_div(m.total).unwrap_or(0);
            let eta = m.eta_s.map(|s| format!(", about {s}s left")).unwrap_or_default();
            out.push(format!("migration {} on node {} is at {pct}% ({}/{}){eta}", m.id, m.node, m.done, m.total));
        }
    }
    if let MigrationsSection::Unreadable { error } = &s.status.migrations {
        out.push(format!("the migrations cannot be read: {error}"));
    }
    out
}

async fn snapshot(client: &Client) -> Result<Snapshot, Failure> {
    Ok(Snapshot {
        nodes: client.get("/admin/nodes").await?.decode_report()?,
        flags: client.get("/admin/flags").await?.decode_report()?,
        status: client.get("/admin/upgrade/status").await?.decode_report()?,
    })
}

/// The bars: one for the members at the goal, one per active migration.
struct Bars {
    multi: MultiProgress,
    members: ProgressBar,
    migrations: BTreeMap<String, ProgressBar>,
    style: ProgressStyle,
}

impl Bars {
    fn new(quiet: bool) -> Result<Bars, Failure> {
        let target = if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        let multi = MultiProgress::with_draw_target(target);
        let style = ProgressStyle::with_template("{prefix:<28} [{bar:30}] {pos}/{len} {msg}")
            .map_err(|e| Failure::Internal(e.into()))?
            .progress_chars("=> ");
        let members = multi.add(ProgressBar::new(0));
        members.set_style(style.clone());
        members.set_prefix("members ready");
        Ok(Bars { multi, members, migrations: BTreeMap::new(), style })
    }

    fn update(&mut self, s: &Snapshot, goal: &Goal, blockers: &[String]) {
        let ready = s
            .nodes
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Running && goal.release.as_ref().is_none_or(|r| *r == n.release))
            .count();
        self.members.set_length(s.nodes.nodes.len() as u64);
        self.members.set_position(ready as u64);
        self.members.set_message(blockers.first().cloned().unwrap_or_else(|| "done".into()));
        for m in migrations(&s.status.migrations) {
            let key = format!("{}/{}", m.node, m.id);
            if !is_active(m) && !self.migrations.contains_key(&key) {
                continue;
            }
            let bar = self.migrations.entry(key.clone()).or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(0));
                bar.set_style(self.style.clone());
                bar.set_prefix(key);
                bar
            });
            bar.set_length(m.total);
            bar.set_position(m.done);
            bar.set_message(format!("{:?}", m.state).to_lowercase());
        }
    }

    fn clear(&self) {
        let _ = self.multi.clear();
    }
}

/// Follows the cluster until it reaches `goal` or `timeout` passes.
pub async fn wait(client: &Client, goal: Goal, timeout: Duration, quiet: bool) -> Result<WaitResult, Failure> {
    let started = Instant::now();
    let mut bars = Bars::new(quiet)?;
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    loop {
        ticker.tick().await;
        let s = snapshot(client).await?;
        let blockers = blockers(&s, &goal);
        bars.update(&s, &goal, &blockers);
        let elapsed_s = started.elapsed().as_secs_f64();
        if blockers.is_empty() || started.elapsed() >= timeout {
            bars.clear();
            return Ok(WaitResult { reached: blockers.is_empty(), goal, elapsed_s, blockers });
        }
    }
}

/// How [`finish`] prints the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Print {
    /// The JSON object.
    Json,
    /// A line when reached.
    Text,
    /// Nothing (the caller printed it).
    Nothing,
}

/// Prints the result and maps a timeout to exit 2 naming the blockers.
pub fn finish(result: &WaitResult, print: Print, timeout: Duration) -> Outcome {
    match print {
        Print::Json => println!("{}", serde_json::to_string_pretty(result).map_err(|e| Failure::Internal(e.into()))?),
        Print::Text if result.reached => {
            println!("the cluster reached the state asked for in {:.1}s", result.elapsed_s);
        }
        Print::Text | Print::Nothing => {}
    }
    if result.reached {
        return Ok(());
    }
    Err(Failure::refused(format!(
        "timed out after {}s waiting for the cluster; still blocking:\n  {}",
        timeout.as_secs(),
        result.blockers.join("\n  ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollgate_api::upgrade::{FlagSummary, NodeIdentity, StoreReachability};

    fn node(id: &str, release: &str, state: NodeState) -> rollgate_api::nodes::NodeStatus {
        rollgate_api::nodes::NodeStatus {
            node_id: id.into(),
            release: release.into(),
            state,
            declared: state,
            data_addr: String::new(),
            admin_addr: String::new(),
            protocol: "v1..=v1".into(),
            transport: 0,
            supported_flags: vec![],
            cluster_features: vec![],
            started_ms: 0,
            heartbeat_ms: None,
            this_node: false,
            release_manifest: None,
            clock_offset_ms: None,
        }
    }

    #[test]
    fn blockers_name_the_node_and_the_fix() {
        let s = Snapshot {
            nodes: NodeList {
                cluster_id: "c".into(),
                epoch: 1,
                nodes: vec![
                    node("n1", "1.2", NodeState::Running),
                    node("n2", "1.0", NodeState::Stopped),
                    node("n3", "1.0", NodeState::Running),
                ],
            },
            flags: FlagList { epoch: 1, flags: vec![] },
            status: UpgradeStatus {
                cluster_id: "c".into(),
                epoch: 1,
                revision: 1,
                node: NodeIdentity { node_id: "n1".into(), release: "1.2".into() },
                store: StoreReachability { reachable: true, last_error: None },
                mixed_releases: true,
                releases: vec![],
                flags: FlagSummary {
                    enabled: vec![],
                    enabling: vec![],
                    disabling: vec![],
                    disabled: vec![],
                    ready_to_enable: vec![],
                    blocked: vec![],
                },
                migrations: MigrationsSection::Unreadable { error: "down".into() },
                floor: None,
                deprecated_links: vec![],
                sections: Default::default(),
            },
        };
        let b = blockers(&s, &Goal { release: Some("1.2".into()), flags: vec!["ttl".into()] });
        assert!(b[0].contains("n2 (release 1.0) is stopped") && b[0].contains("nodes forget n2"), "{b:?}");
        assert!(b[1].contains("node n3 runs release 1.0: restart it as release 1.2"), "{b:?}");
        assert!(b.iter().any(|x| x.contains("flag ttl is unknown")), "{b:?}");
        assert!(b.iter().any(|x| x.contains("migrations cannot be read: down")), "{b:?}");
    }
}

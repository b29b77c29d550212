//! `rollgate upgrade`: status (with the migrations) and plans.

use std::time::Duration;

use clap::{Args, Subcommand};
use rollgate_api::floor::{FinalizeReport, FinalizeRequest, ReleaseFloor};
use rollgate_api::upgrade::{FlagSummary, UpgradePlan, UpgradeStatus};

use super::args::{Connection, JsonArg, parse_release};
use super::client::{Client, block_on};
use super::show::{list, or_dash, print_table, table};
use super::{migrations, wait};
use crate::failure::{Failure, Outcome};

/// `upgrade status` options.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the node's JSON instead of tables.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// Follow running migrations with progress bars (done/total, rate, ETA)
    /// until they finish, then print the status.
    #[arg(long)]
    watch: bool,
    /// Give up following after this many seconds (exit 2).
    #[arg(long, value_name = "S", default_value_t = 3600, requires = "watch",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    watch_timeout_s: u64,
}

/// `upgrade wait` options.
#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Also wait until every member runs this release.
    #[arg(long, value_name = "RELEASE", value_parser = parse_release)]
    to: Option<String>,
    /// Give up after this many seconds (exit 2, naming what blocks).
    #[arg(long, value_name = "S", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout_s: u64,
    /// Print one JSON object ({reached, goal, elapsed_s, blockers}) and no progress bar.
    #[arg(long)]
    json: bool,
}

/// Upgrade status and plans.
#[derive(Subcommand, Debug)]
pub enum UpgradeCommand {
    /// Releases, members, flags and migrations of the cluster.
    #[command(after_help = "Examples:
  rollgate --node http://127.0.0.1:9650 upgrade status
  rollgate --node http://127.0.0.1:9650 upgrade status --watch     # progress bars until migrations finish")]
    Status(StatusArgs),
    /// Wait until every member runs and migrations are done (and, with --to, every member runs a release).
    #[command(
        long_about = "Follow the cluster with a progress bar on stderr until every member is running, no flag is \
being enabled or disabled and no migration is left to run (with --to, also until every member runs that \
release). On timeout, exit 2 naming what still blocks.",
        after_help = "Examples:
  rollgate --node http://127.0.0.1:9650 upgrade wait --to 1.2 --timeout-s 600
  rollgate --node http://127.0.0.1:9650 upgrade wait --json    # for scripts"
    )]
    Wait(WaitArgs),
    /// What to do, in order, to bring every member to a release.
    #[command(after_help = "Example:
  rollgate --node http://127.0.0.1:9650 upgrade plan --to 2.0")]
    Plan {
        /// The target release.
        #[arg(long, value_name = "RELEASE", value_parser = parse_release)]
        to: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Raise the cluster's release floor: no node below it may boot or join again.
    #[command(
        long_about = "Record RELEASE as the cluster's release floor (Ceph's require-osd-release, CockroachDB's \
finalized cluster version). Accepted once every member, running or stopped, runs RELEASE or a later one and \
every flag that is stable in RELEASE is enabled; otherwise refused, naming each blocker and its fix. From then \
on a node of an older release is refused at boot and at join, so the cluster may rely on everything RELEASE \
brought: it is the end of the road back. The floor never goes down. Without RELEASE: the oldest release the \
members run. Try it with --dry-run first.",
        after_help = "Examples:
  rollgate --node http://127.0.0.1:9650 --token-file admin.token upgrade finalize 1.2 --dry-run
  rollgate --node http://127.0.0.1:9650 --token-file admin.token upgrade finalize 1.2"
    )]
    Finalize {
        /// The release (default: the oldest release the members run).
        #[arg(value_name = "RELEASE", value_parser = parse_release)]
        release: Option<String>,
        /// Check only: say whether it would be accepted, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        json: JsonArg,
    },
}

/// `rollgate upgrade ...`.
pub fn run_upgrade(conn: &Connection, cmd: UpgradeCommand) -> Outcome {
    let client = Client::connect(conn)?;
    block_on(async move {
        match cmd {
            UpgradeCommand::Status(a) => status(&client, &a).await,
            UpgradeCommand::Plan { to, json } => plan(&client, &to, json.json).await,
            UpgradeCommand::Finalize { release, dry_run, json } => finalize(&client, release, dry_run, json.json).await,
            UpgradeCommand::Wait(a) => {
                let timeout = Duration::from_secs(a.timeout_s);
                let goal = wait::Goal { release: a.to, flags: Vec::new() };
                let result = wait::wait(&client, goal, timeout, a.json).await?;
                wait::finish(&result, if a.json { wait::Print::Json } else { wait::Print::Text }, timeout)
            }
        }
    })
}

/// `rollgate upgrade status`: releases, flags, then the migrations (or
/// their progress bars with `--watch`).
async fn status(client: &Client, a: &StatusArgs) -> Outcome {
    let answer = client.get("/admin/upgrade/status").await?;
    if a.json {
        return answer.print_json();
    }
    let status: UpgradeStatus = answer.decode()?;
    println!("cluster {} at epoch {}", status.cluster_id, status.epoch);
    let mut t = table(&["RELEASE", "NODES", "RUNNING", "STOPPED"]);
    for r in &status.releases {
        t.add_row(vec![r.release.clone(), list(&r.nodes), r.running.to_string(), r.stopped.to_string()]);
    }
    print_table(&mut t);
    println!("{}", floor_line(status.floor.as_ref()));
    for l in &status.deprecated_links {
        println!(
            "warning: link {} -> {} speaks protocol v{}, deprecated by the release of {}: upgrade the nodes that \
             still need it before a release retires it",
            l.node,
            l.peer,
            l.protocol,
            list(&l.deprecated_by)
        );
    }
    print_flags(&status.flags);
    if !status.store.reachable {
        println!("warning: the node cannot reach the metadata store: {}", or_dash(status.store.last_error.as_deref()));
    }
    if a.watch {
        return migrations::watch(client, Duration::from_secs(a.watch_timeout_s)).await;
    }
    migrations::print(&status.migrations);
    Ok(())
}

/// The flags part of the status.
fn print_flags(flags: &FlagSummary) {
    let mut t = table(&["FLAGS", ""]);
    t.add_row(vec!["enabled".to_string(), list(&flags.enabled)]);
    t.add_row(vec!["being enabled".to_string(), list(&flags.enabling)]);
    t.add_row(vec!["being disabled".to_string(), list(&flags.disabling)]);
    t.add_row(vec!["ready to enable".to_string(), list(&flags.ready_to_enable)]);
    let blocked: Vec<String> =
        flags.blocked.iter().map(|b| format!("{} (missing on {})", b.flag, list(&b.lacking))).collect();
    t.add_row(vec!["blocked".to_string(), if blocked.is_empty() { "-".into() } else { blocked.join("; ") }]);
    print_table(&mut t);
}

/// `rollgate upgrade plan --to RELEASE`.
async fn plan(client: &Client, to: &str, json: bool) -> Outcome {
    let mut url = reqwest::Url::parse("http://node/admin/upgrade/plan").map_err(|e| Failure::Internal(e.into()))?;
    url.query_pairs_mut().append_pair("to", to);
    let answer = client.get(&format!("/admin/upgrade/plan?{}", url.query().unwrap_or(""))).await?;
    if json {
        return answer.print_json();
    }
    let plan: UpgradePlan = answer.decode()?;
    if plan.floor.is_some() {
        println!("{}", floor_line(plan.floor.as_ref()));
    }
    if plan.steps.is_empty() {
        println!("every member runs {to} and every flag it adds is enabled: nothing to do");
        return Ok(());
    }
    println!("to bring every member to {to}:");
    for (i, step) in plan.steps.iter().enumerate() {
        println!("  {}. {}", i + 1, step.description);
        if let Some(cmd) = &step.command {
            println!("     $ {cmd}");
        }
    }
    Ok(())
}

/// The floor, in words.
fn floor_line(floor: Option<&ReleaseFloor>) -> String {
    match floor {
        Some(f) => format!("release floor: {} (no node below it may boot or join)", f.release),
        None => "release floor: none yet (`rollgate upgrade finalize` raises it)".to_string(),
    }
}

/// `rollgate upgrade finalize [RELEASE] [--dry-run]`.
async fn finalize(client: &Client, release: Option<String>, dry_run: bool, json: bool) -> Outcome {
    let answer = client.post("/admin/upgrade/finalize", &FinalizeRequest { release, dry_run }).await?;
    if json {
        return answer.print_json();
    }
    let report: FinalizeReport = answer.decode()?;
    let before = report.previous.as_deref().unwrap_or("none");
    match (report.dry_run, report.changed) {
        (true, _) => println!("release {} can be finalized (the floor is {before}); nothing changed", report.release),
        (false, true) => println!(
            "release floor raised from {before} to {}: nodes below it are refused at boot and at join",
            report.release
        ),
        (false, false) => println!("the release floor already is {}; nothing changed", report.release),
    }
    Ok(())
}

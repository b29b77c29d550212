//! `rollgate flags`: list, info, enable, disable.

use clap::{Args, Subcommand};
use rollgate_api::flags::{DisableReport, DisableRequest, EnableReport, EnableRequest, FlagList, FlagStatus};

use super::args::{Connection, JsonArg, parse_flag_name};
use super::client::{Client, block_on};
use super::show::{self, or_dash, print_table, table, yes_no};
use super::wait;
use crate::failure::{Failure, Outcome};

/// Feature flags: list, inspect, enable, disable.
#[derive(Subcommand, Debug)]
#[command(
    long_about = "Feature flags gate new data formats. A release supports a set of flags; the cluster enables \
a flag once every member (running or stopped) supports it, and only then do nodes produce data that needs it. \
Enabling cannot be undone, except for flags declared reversible.",
    after_help = "A rolling upgrade:
  rollgate --node http://127.0.0.1:9650 flags list            # what is enabled, what blocks the rest
  (upgrade every node, one at a time)
  rollgate --node http://127.0.0.1:9650 flags enable --all --dry-run
  rollgate --node http://127.0.0.1:9650 --token-file admin.token flags enable --all"
)]
pub enum FlagsCommand {
    /// List every flag with its state and what blocks it.
    #[command(after_help = "Columns: NAME, STATE (enabled, enabling, disabling, disabled), STABILITY, SINCE (the \
release that introduced it), REVERSIBLE, BLOCKED BY (members that do not support it), DESCRIPTION.")]
    List(JsonArg),
    /// Show one flag.
    Info {
        /// The flag.
        #[arg(value_name = "NAME", value_parser = parse_flag_name)]
        name: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Enable flags (their dependencies first).
    #[command(
        long_about = "Enable the named flags, or every stable flag with --all, dependencies first. Refused while \
any member, running or stopped, does not support a flag (upgrade it, or `rollgate nodes forget ID` a node that \
is gone for good), while a member that runs a per-node step for it is down, and for experimental flags without \
--experimental. With --dry-run, print what would be enabled, in which order, and what blocks (exit 2 when \
something blocks).",
        after_help = "Examples:
  rollgate --node http://127.0.0.1:9650 flags enable ttl --dry-run
  rollgate --node http://127.0.0.1:9650 --token-file admin.token flags enable ttl batch
  rollgate --node http://127.0.0.1:9650 --token-file admin.token flags enable --all --experimental"
    )]
    Enable(EnableArgs),
    /// Disable a reversible flag.
    #[command(long_about = "Disable a flag declared reversible: nodes stop producing data that needs it, its \
disable hook converts data back, then it is disabled. Refused for other flags and while an enabled flag depends \
on it.")]
    Disable {
        /// The flag.
        #[arg(value_name = "NAME", value_parser = parse_flag_name)]
        name: String,
        #[command(flatten)]
        json: JsonArg,
    },
}

/// `rollgate flags enable`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["names", "all"])))]
pub struct EnableArgs {
    /// The flags to enable.
    #[arg(value_name = "NAME", value_parser = parse_flag_name, conflicts_with = "all")]
    names: Vec<String>,
    /// Every stable flag (and, with --experimental, the experimental ones).
    #[arg(long)]
    all: bool,
    /// Allow experimental flags.
    #[arg(long)]
    experimental: bool,
    /// Only print what would be enabled and what blocks.
    #[arg(long)]
    dry_run: bool,
    /// Print the node's JSON report.
    #[arg(long)]
    json: bool,
    /// Then follow the migrations the flags start, with a progress bar, until they are done.
    #[arg(long, conflicts_with = "dry_run")]
    wait: bool,
    /// Give up waiting after this many seconds (exit 2, naming what blocks).
    #[arg(long, value_name = "S", default_value_t = 600, requires = "wait",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    wait_timeout_s: u64,
}

/// `rollgate flags ...`.
pub fn run_flags(conn: &Connection, cmd: FlagsCommand) -> Outcome {
    let client = Client::connect(conn)?;
    block_on(async move {
        match cmd {
            FlagsCommand::List(a) => list(&client, a.json).await,
            FlagsCommand::Info { name, json } => info(&client, &name, json.json).await,
            FlagsCommand::Enable(a) => enable(&client, &a).await,
            FlagsCommand::Disable { name, json } => disable(&client, &name, json.json).await,
        }
    })
}

/// `rollgate flags list`.
async fn list(client: &Client, json: bool) -> Outcome {
    let answer = client.get("/admin/flags").await?;
    if json {
        return answer.print_json();
    }
    let flags: FlagList = answer.decode()?;
    let mut t = table(&["NAME", "STATE", "STABILITY", "SINCE", "REVERSIBLE", "BLOCKED BY", "DESCRIPTION"]);
    for f in flags.flags {
        let mut description = f.description;
        if !f.known {
            description.push_str(" (unknown to this node)");
        }
        let state = match &f.owner {
            Some(owner) => format!("{} by {owner}", f.state),
            None => f.state.to_string(),
        };
        t.add_row(vec![
            f.name,
            state,
            f.stability.to_string(),
            f.introduced_in,
            yes_no(f.reversible),
            show::list(&f.lacking),
            description,
        ]);
    }
    print_table(&mut t);
    Ok(())
}

/// `rollgate flags info NAME`.
async fn info(client: &Client, name: &str, json: bool) -> Outcome {
    let answer = client.get(&format!("/admin/flags/{name}")).await?;
    if json {
        return answer.print_json();
    }
    let f: FlagStatus = answer.decode()?;
    let mut t = table(&["FIELD", "VALUE"]);
    for (label, value) in [
        ("name", f.name),
        ("state", f.state.to_string()),
        ("owner", or_dash(f.owner.as_deref())),
        ("description", f.description),
        ("stability", f.stability.to_string()),
        ("introduced in", f.introduced_in),
        ("depends on", show::list(&f.depends_on)),
        ("provider", f.provider),
        ("reversible", yes_no(f.reversible)),
        ("per-node step", yes_no(f.node_step)),
        ("known to this node", yes_no(f.known)),
        ("blocked by", show::list(&f.lacking)),
        ("note", or_dash(f.note.as_deref())),
        ("documentation", or_dash(f.doc_url.as_deref())),
    ] {
        t.add_row(vec![label.to_string(), value]);
    }
    print_table(&mut t);
    Ok(())
}

/// The request of `rollgate flags enable`.
fn enable_request(a: &EnableArgs, dry_run: bool) -> EnableRequest {
    EnableRequest { flags: a.names.clone(), all: a.all, experimental: a.experimental, dry_run }
}

/// `rollgate flags enable`: a note per irreversible flag first, then the
/// request; a dry run prints the order, a real one what it enabled. Exit 2
/// when the node says enabling would be refused.
async fn enable(client: &Client, a: &EnableArgs) -> Outcome {
    if !a.json {
        warn_irreversible(client, a).await?;
    }
    let answer = client.post("/admin/flags/enable", &enable_request(a, a.dry_run)).await?;
    let report: EnableReport = answer.decode()?;
    if a.wait {
        return enable_and_wait(client, a, &answer, &report).await;
    }
    if a.json {
        answer.print_json()?;
    }
    if !a.json {
        print_enable_report(&report, a.dry_run);
    }
    if !report.messages.is_empty() {
        return Err(Failure::Refused(format!("enabling would be refused:\n  {}", report.messages.join("\n  "))));
    }
    Ok(())
}

/// `--wait`: the enable went through; follow what it started. With
/// `--json`, one object: `{"enable": <the node's report>, "wait": <wait result>}`.
async fn enable_and_wait(
    client: &Client,
    a: &EnableArgs,
    answer: &super::client::Answer,
    report: &EnableReport,
) -> Outcome {
    if !a.json {
        print_enable_report(report, false);
    }
    let timeout = std::time::Duration::from_secs(a.wait_timeout_s);
    let mut flags = report.enabled.clone();
    flags.extend(report.already_enabled.iter().cloned());
    let result = wait::wait(client, wait::Goal { release: None, flags }, timeout, a.json).await?;
    if a.json {
        let both = serde_json::json!({ "enable": answer.json(), "wait": result });
        println!("{}", serde_json::to_string_pretty(&both).map_err(|e| Failure::Internal(e.into()))?);
    }
    wait::finish(&result, if a.json { wait::Print::Nothing } else { wait::Print::Text }, timeout)
}

fn print_enable_report(report: &EnableReport, dry_run: bool) {
    let done = if dry_run { &report.order } else { &report.enabled };
    if done.is_empty() {
        println!("nothing to enable");
    } else if dry_run {
        println!("would enable, in this order:");
        for (i, f) in done.iter().enumerate() {
            println!("  {}. {f}", i + 1);
        }
    } else {
        println!("enabled: {}", done.join(", "));
    }
    if !report.already_enabled.is_empty() {
        println!("already enabled: {}", report.already_enabled.join(", "));
    }
}

/// `rollgate flags disable NAME`.
async fn disable(client: &Client, name: &str, json: bool) -> Outcome {
    let request = DisableRequest { flag: name.to_string() };
    let answer = client.post("/admin/flags/disable", &request).await?;
    if json {
        return answer.print_json();
    }
    let report: DisableReport = answer.decode()?;
    if report.changed {
        println!("disabled {name}");
    } else {
        println!("{name} was not enabled; nothing changed");
    }
    Ok(())
}

/// Before enabling: says which of the flags about to be enabled cannot be
/// disabled again (no reverse for their migrations), so the operator knows a
/// rollback to an older release ends there.
async fn warn_irreversible(client: &Client, a: &EnableArgs) -> Outcome {
    let plan: EnableReport = client.post("/admin/flags/enable", &enable_request(a, true)).await?.decode()?;
    if plan.order.is_empty() || !plan.messages.is_empty() {
        // Nothing will be enabled (a refusal explains why on its own).
        return Ok(());
    }
    let flags: FlagList = client.get("/admin/flags").await?.decode()?;
    for f in flags.flags.iter().filter(|f| plan.order.contains(&f.name) && !f.reversible) {
        eprintln!(
            "note: `{}` is irreversible: once enabled it cannot be disabled, and nodes of releases that lack it (before {}) can no longer join",
            f.name, f.introduced_in
        );
    }
    Ok(())
}

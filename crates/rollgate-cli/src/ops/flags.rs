//! `rollgate flags`: list, info, enable, disable.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::args::{Connection, JsonArg, parse_flag_name};
use super::client::{Client, block_on};
use super::show::{print_json, print_table, s, table};
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
}

/// `rollgate flags ...`.
pub fn run_flags(conn: &Connection, cmd: FlagsCommand) -> Outcome {
    let client = Client::connect(conn)?;
    block_on(async move {
        match cmd {
            FlagsCommand::List(a) => list(&client, a.json).await,
            FlagsCommand::Info { name, json } => info(&client, &name, json.json).await,
            FlagsCommand::Enable(a) => enable(&client, &a).await,
            FlagsCommand::Disable { name } => disable(&client, &name).await,
        }
    })
}

/// `rollgate flags list`.
async fn list(client: &Client, json: bool) -> Outcome {
    let v = client.get("/admin/flags").await?;
    if json {
        return print_json(&v);
    }
    let mut t = table(&["NAME", "STATE", "STABILITY", "SINCE", "REVERSIBLE", "BLOCKED BY", "DESCRIPTION"]);
    for f in v["flags"].as_array().into_iter().flatten() {
        let mut description = s(&f["description"]);
        if f["known"] == false {
            description.push_str(" (unknown to this node)");
        }
        let state = match f["owner"].as_str() {
            Some(owner) => format!("{} by {owner}", s(&f["state"])),
            None => s(&f["state"]),
        };
        t.add_row(vec![
            s(&f["name"]),
            state,
            s(&f["stability"]),
            s(&f["introduced_in"]),
            s(&f["reversible"]),
            s(&f["lacking"]),
            description,
        ]);
    }
    print_table(&mut t);
    Ok(())
}

/// `rollgate flags info NAME`.
async fn info(client: &Client, name: &str, json: bool) -> Outcome {
    let v = client.get(&format!("/admin/flags/{name}")).await?;
    if json {
        return print_json(&v);
    }
    let mut t = table(&["FIELD", "VALUE"]);
    for (label, key) in [
        ("name", "name"),
        ("state", "state"),
        ("owner", "owner"),
        ("description", "description"),
        ("stability", "stability"),
        ("introduced in", "introduced_in"),
        ("depends on", "depends_on"),
        ("provider", "provider"),
        ("reversible", "reversible"),
        ("per-node step", "node_step"),
        ("known to this node", "known"),
        ("blocked by", "lacking"),
        ("note", "note"),
        ("documentation", "doc_url"),
    ] {
        t.add_row(vec![label.to_string(), s(&v[key])]);
    }
    print_table(&mut t);
    Ok(())
}

/// `rollgate flags enable`: a note per irreversible flag first, then the
/// request; a dry run prints the order, a real one what it enabled.
async fn enable(client: &Client, a: &EnableArgs) -> Outcome {
    if !a.json {
        warn_irreversible(client, a).await?;
    }
    let body = json!({"flags": a.names, "all": a.all, "experimental": a.experimental, "dry_run": a.dry_run});
    let v = client.send(Method::POST, "/admin/flags/enable", Some(body)).await?;
    if a.json {
        print_json(&v)?;
    } else if a.dry_run {
        let order: Vec<String> = v["order"].as_array().into_iter().flatten().map(s).collect();
        if order.is_empty() {
            println!("nothing to enable");
        } else {
            println!("would enable, in this order:");
            for (i, f) in order.iter().enumerate() {
                println!("  {}. {f}", i + 1);
            }
        }
        let already: Vec<String> = v["already_enabled"].as_array().into_iter().flatten().map(s).collect();
        if !already.is_empty() {
            println!("already enabled: {}", already.join(", "));
        }
    } else {
        let enabled: Vec<String> = v["enabled"].as_array().into_iter().flatten().map(s).collect();
        let already: Vec<String> = v["already_enabled"].as_array().into_iter().flatten().map(s).collect();
        if enabled.is_empty() {
            println!("nothing to enable");
        } else {
            println!("enabled: {}", enabled.join(", "));
        }
        if !already.is_empty() {
            println!("already enabled: {}", already.join(", "));
        }
    }
    let blockers: Vec<String> = v["messages"].as_array().into_iter().flatten().map(s).collect();
    if !blockers.is_empty() {
        return Err(Failure::Refused(format!("enabling would be refused:\n  {}", blockers.join("\n  "))));
    }
    Ok(())
}

/// `rollgate flags disable NAME`.
async fn disable(client: &Client, name: &str) -> Outcome {
    let v = client.send(Method::POST, "/admin/flags/disable", Some(json!({"flag": name}))).await?;
    if v["changed"] == true {
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
    let body = json!({"flags": a.names, "all": a.all, "experimental": a.experimental, "dry_run": true});
    let plan = client.send(Method::POST, "/admin/flags/enable", Some(body)).await?;
    let order: Vec<String> = plan["order"].as_array().into_iter().flatten().map(s).collect();
    let refused = plan["messages"].as_array().is_some_and(|m| !m.is_empty());
    if order.is_empty() || refused {
        // Nothing will be enabled (a refusal explains why on its own).
        return Ok(());
    }
    let flags = client.get("/admin/flags").await?;
    let irreversible: Vec<&Value> = flags["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| order.iter().any(|o| f["name"] == o.as_str()) && f["reversible"] != true)
        .collect();
    for f in irreversible {
        eprintln!(
            "note: `{}` is irreversible: once enabled it cannot be disabled, and nodes of releases that lack it (before {}) can no longer join",
            s(&f["name"]),
            s(&f["introduced_in"])
        );
    }
    Ok(())
}

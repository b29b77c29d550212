//! The operator commands: `flags`, `features`, `nodes`, `capabilities` and
//! `upgrade`, each a call to one node's admin HTTP API (`--node URL`, or
//! `ROLLGATE_NODE`). Changes need the admin token (`--token-file FILE`, or
//! `ROLLGATE_TOKEN_FILE`). Human output is an aligned table; `--json`
//! prints the node's JSON for scripts.

mod client;
mod migrations;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use comfy_table::{Cell, Table, presets};
use reqwest::Method;
use serde_json::{Value, json};

use crate::failure::{Failure, Outcome};
use client::Client;

/// Where the node is and how to authenticate (top-level options).
#[derive(Args, Debug, Default)]
pub struct Connection {
    /// The node's admin API, e.g. http://127.0.0.1:9650 (operator commands).
    #[arg(long, value_name = "URL", env = "ROLLGATE_NODE")]
    pub node: Option<String>,
    /// A file holding the node's admin token (needed to change the cluster).
    #[arg(long, value_name = "FILE", env = "ROLLGATE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// How long to wait for the node's answer, in seconds (enabling a flag
    /// waits for its steps on every member).
    #[arg(long, value_name = "S", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout_s: u64,
}

/// `--json`.
#[derive(Args, Debug)]
pub struct JsonArg {
    /// Print the node's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_flag_name(s: &str) -> Result<String, String> {
    rollgate_api::names::check_flag_name(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

fn parse_node_id(s: &str) -> Result<String, String> {
    rollgate_api::names::check_node_id(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

fn parse_release(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return Err(format!("{s:?} is not a release: use 1 to 64 of letters, digits, '.', '-' and '_'"));
    }
    Ok(s.to_string())
}

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

/// Cluster features.
#[derive(Subcommand, Debug)]
#[command(long_about = "Cluster features are published by each node for its release; the cluster has a feature \
when every member (running or stopped) publishes it, and from then on a node without it cannot join.")]
pub enum FeaturesCommand {
    /// List the features and who publishes them.
    List(JsonArg),
}

/// Members.
#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// List the members, running and stopped.
    List(JsonArg),
    /// Remove a stopped member for good (it no longer blocks flags and features).
    #[command(long_about = "Remove a stopped member that will not come back: it then no longer counts when \
flags are enabled or cluster features computed. Refused while it runs (stop it first).")]
    Forget {
        /// The node id.
        #[arg(value_name = "ID", value_parser = parse_node_id)]
        id: String,
    },
}

/// `rollgate capabilities`.
#[derive(Args, Debug)]
#[command(
    long_about = "Ask whether every member supports a REST endpoint (method + path), some of its query \
parameters and named capabilities. Prints true, false (some member does not) or null (some member did not \
answer; a stopped member answers from the routes it published).",
    after_help = "Example:
  rollgate --node http://127.0.0.1:9650 capabilities --method PUT --path /kv/k --parameters ttl_s"
)]
pub struct CapabilitiesArgs {
    /// The HTTP method.
    #[arg(long, value_name = "M", default_value = "GET")]
    method: String,
    /// The path (a concrete path or a template such as /kv/{key}).
    #[arg(long, value_name = "P")]
    path: String,
    /// Query parameters, comma-separated.
    #[arg(long, value_name = "a,b")]
    parameters: Option<String>,
    /// Capabilities, comma-separated.
    #[arg(long, value_name = "x,y")]
    capabilities: Option<String>,
    /// Print the node's JSON.
    #[arg(long)]
    json: bool,
}

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

/// Upgrade status and plans.
#[derive(Subcommand, Debug)]
pub enum UpgradeCommand {
    /// Releases, members, flags and migrations of the cluster.
    #[command(after_help = "Examples:
  rollgate --node http://127.0.0.1:9650 upgrade status
  rollgate --node http://127.0.0.1:9650 upgrade status --watch     # progress bars until migrations finish")]
    Status(StatusArgs),
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
}

fn client(conn: &Connection) -> Result<Client, Failure> {
    Client::new(conn.node.as_deref(), conn.token_file.as_deref(), Duration::from_secs(conn.timeout_s))
}

fn block_on<F: std::future::Future<Output = Outcome>>(f: F) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Internal(anyhow::anyhow!("cannot start the runtime: {e}")))?;
    rt.block_on(f)
}

fn print_json(v: &Value) -> Outcome {
    let text = serde_json::to_string_pretty(v).map_err(|e| Failure::Internal(e.into()))?;
    println!("{text}");
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.iter().map(Cell::new).collect::<Vec<_>>());
    t
}

fn print_table(t: &mut Table) {
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    for line in t.to_string().lines() {
        println!("{}", line.trim_end());
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        other => other.to_string(),
    }
}

/// `rollgate flags ...`.
pub fn run_flags(conn: &Connection, cmd: FlagsCommand) -> Outcome {
    let client = client(conn)?;
    block_on(async move {
        match cmd {
            FlagsCommand::List(a) => {
                let v = client.get("/admin/flags").await?;
                if a.json {
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
            FlagsCommand::Info { name, json } => {
                let v = client.get(&format!("/admin/flags/{name}")).await?;
                if json.json {
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
            FlagsCommand::Enable(a) => {
                if !a.json {
                    warn_irreversible(&client, &a).await?;
                }
                let body =
                    json!({"flags": a.names, "all": a.all, "experimental": a.experimental, "dry_run": a.dry_run});
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
            FlagsCommand::Disable { name } => {
                let v = client.send(Method::POST, "/admin/flags/disable", Some(json!({"flag": name}))).await?;
                if v["changed"] == true {
                    println!("disabled {name}");
                } else {
                    println!("{name} was not enabled; nothing changed");
                }
                Ok(())
            }
        }
    })
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

/// `rollgate features ...`.
pub fn run_features(conn: &Connection, cmd: FeaturesCommand) -> Outcome {
    let client = client(conn)?;
    block_on(async move {
        let FeaturesCommand::List(a) = cmd;
        let v = client.get("/admin/features").await?;
        if a.json {
            return print_json(&v);
        }
        let mut t = table(&["FEATURE", "CLUSTER HAS IT", "MISSING ON"]);
        for f in v["features"].as_array().into_iter().flatten() {
            t.add_row(vec![s(&f["name"]), s(&f["cluster_has"]), s(&f["members_without"])]);
        }
        print_table(&mut t);
        Ok(())
    })
}

/// `rollgate nodes ...`.
pub fn run_nodes(conn: &Connection, cmd: NodesCommand) -> Outcome {
    let client = client(conn)?;
    block_on(async move {
        match cmd {
            NodesCommand::List(a) => {
                let v = client.get("/admin/nodes").await?;
                if a.json {
                    return print_json(&v);
                }
                let mut t = table(&["NODE", "RELEASE", "STATE", "PROTOCOL", "TRANSPORT", "ADMIN", "FLAGS"]);
                for n in v["nodes"].as_array().into_iter().flatten() {
                    let mut id = s(&n["node_id"]);
                    if n["this_node"] == true {
                        id.push_str(" *");
                    }
                    t.add_row(vec![
                        id,
                        s(&n["release"]),
                        s(&n["state"]),
                        s(&n["protocol"]),
                        s(&n["transport"]),
                        s(&n["admin_addr"]),
                        n["supported_flags"].as_array().map_or(0, Vec::len).to_string(),
                    ]);
                }
                print_table(&mut t);
                println!("(* the node answering; FLAGS: how many flags its release supports)");
                Ok(())
            }
            NodesCommand::Forget { id } => {
                let v = client.send(Method::DELETE, &format!("/admin/nodes/{id}"), None).await?;
                println!("forgot node {id} (cluster epoch {})", s(&v["epoch"]));
                Ok(())
            }
        }
    })
}

/// `rollgate capabilities ...`.
pub fn run_capabilities(conn: &Connection, a: CapabilitiesArgs) -> Outcome {
    // The query is checked here first: bad input never reaches the node.
    rollgate_api::routes::CapabilityQuery::parse(
        Some(&a.method),
        Some(&a.path),
        a.parameters.as_deref(),
        a.capabilities.as_deref(),
    )
    .map_err(Failure::refused)?;
    let client = client(conn)?;
    let mut url = reqwest::Url::parse("http://node/_capabilities").map_err(|e| Failure::Internal(e.into()))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("method", &a.method);
        q.append_pair("path", &a.path);
        if let Some(p) = &a.parameters {
            q.append_pair("parameters", p);
        }
        if let Some(c) = &a.capabilities {
            q.append_pair("capabilities", c);
        }
    }
    let path = format!("/_capabilities?{}", url.query().unwrap_or(""));
    block_on(async move {
        let v = client.get(&path).await?;
        if a.json {
            return print_json(&v);
        }
        println!("supported: {}", v["supported"]);
        let mut t = table(&["NODE", "SUPPORTED", "FROM"]);
        for m in v["members"].as_array().into_iter().flatten() {
            t.add_row(vec![s(&m["node_id"]), m["supported"].to_string(), s(&m["source"])]);
        }
        print_table(&mut t);
        Ok(())
    })
}

/// `rollgate upgrade ...`.
pub fn run_upgrade(conn: &Connection, cmd: UpgradeCommand) -> Outcome {
    let client = client(conn)?;
    block_on(async move {
        match cmd {
            UpgradeCommand::Status(a) => {
                let v = client.get("/admin/upgrade/status").await?;
                if a.json {
                    return print_json(&v);
                }
                println!("cluster {} at epoch {}", s(&v["cluster_id"]), s(&v["epoch"]));
                let mut t = table(&["RELEASE", "NODES", "RUNNING", "STOPPED"]);
                for r in v["releases"].as_array().into_iter().flatten() {
                    t.add_row(vec![s(&r["release"]), s(&r["nodes"]), s(&r["running"]), s(&r["stopped"])]);
                }
                print_table(&mut t);
                let flags = &v["flags"];
                let mut t = table(&["FLAGS", ""]);
                t.add_row(vec!["enabled".to_string(), s(&flags["enabled"])]);
                t.add_row(vec!["being enabled".to_string(), s(&flags["enabling"])]);
                t.add_row(vec!["being disabled".to_string(), s(&flags["disabling"])]);
                t.add_row(vec!["ready to enable".to_string(), s(&flags["ready_to_enable"])]);
                let blocked: Vec<String> = flags["blocked"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| format!("{} (missing on {})", s(&b["flag"]), s(&b["lacking"])))
                    .collect();
                t.add_row(vec![
                    "blocked".to_string(),
                    if blocked.is_empty() { "-".into() } else { blocked.join("; ") },
                ]);
                print_table(&mut t);
                if v["store"]["reachable"] == false {
                    println!("warning: the node cannot reach the metadata store: {}", s(&v["store"]["last_error"]));
                }
                if a.watch {
                    return migrations::watch(&client, Duration::from_secs(a.watch_timeout_s)).await;
                }
                migrations::print(&v);
                Ok(())
            }
            UpgradeCommand::Plan { to, json } => {
                let mut url =
                    reqwest::Url::parse("http://node/admin/upgrade/plan").map_err(|e| Failure::Internal(e.into()))?;
                url.query_pairs_mut().append_pair("to", &to);
                let v = client.get(&format!("/admin/upgrade/plan?{}", url.query().unwrap_or(""))).await?;
                if json.json {
                    return print_json(&v);
                }
                let steps = v["steps"].as_array().cloned().unwrap_or_default();
                if steps.is_empty() {
                    println!("every member runs {to} and every flag it adds is enabled: nothing to do");
                    return Ok(());
                }
                println!("to bring every member to {to}:");
                for (i, step) in steps.iter().enumerate() {
                    println!("  {}. {}", i + 1, s(&step["description"]));
                    if let Some(cmd) = step["command"].as_str() {
                        println!("     $ {cmd}");
                    }
                }
                Ok(())
            }
        }
    })
}

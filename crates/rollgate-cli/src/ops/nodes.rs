//! `rollgate features` and `rollgate nodes`.

use clap::Subcommand;
use rollgate_api::features::FeatureList;
use rollgate_api::nodes::{Forgotten, NodeList};

use super::args::{Connection, JsonArg, parse_node_id};
use super::client::{Client, block_on};
use super::show::{self, print_table, table, wire_name, yes_no};
use crate::failure::Outcome;

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
        #[command(flatten)]
        json: JsonArg,
    },
}

/// `rollgate features ...`.
pub fn run_features(conn: &Connection, cmd: FeaturesCommand) -> Outcome {
    let client = Client::connect(conn)?;
    block_on(async move {
        let FeaturesCommand::List(a) = cmd;
        let answer = client.get("/admin/features").await?;
        if a.json {
            return answer.print_json();
        }
        let features: FeatureList = answer.decode()?;
        let mut t = table(&["FEATURE", "CLUSTER HAS IT", "MISSING ON"]);
        for f in features.features {
            t.add_row(vec![f.name, yes_no(f.cluster_has), show::list(&f.members_without)]);
        }
        print_table(&mut t);
        Ok(())
    })
}

/// `rollgate nodes ...`.
pub fn run_nodes(conn: &Connection, cmd: NodesCommand) -> Outcome {
    let client = Client::connect(conn)?;
    block_on(async move {
        match cmd {
            NodesCommand::List(a) => list(&client, a.json).await,
            NodesCommand::Forget { id, json } => forget(&client, &id, json.json).await,
        }
    })
}

/// `rollgate nodes list`.
async fn list(client: &Client, json: bool) -> Outcome {
    let answer = client.get("/admin/nodes").await?;
    if json {
        return answer.print_json();
    }
    let nodes: NodeList = answer.decode()?;
    let mut t = table(&["NODE", "RELEASE", "STATE", "PROTOCOL", "TRANSPORT", "MANIFEST", "ADMIN", "FLAGS", "CLOCK"]);
    for n in nodes.nodes {
        let mut id = n.node_id;
        if n.this_node {
            id.push_str(" *");
        }
        t.add_row(vec![
            id,
            n.release,
            wire_name(&n.state),
            n.protocol,
            n.transport.to_string(),
            manifest(n.release_manifest.as_deref()),
            n.admin_addr,
            n.supported_flags.len().to_string(),
            clock(n.clock_offset_ms),
        ]);
    }
    print_table(&mut t);
    println!(
        "(* the node answering; MANIFEST: the first 12 hex digits of its signed release manifest's digest, - when unsigned; FLAGS: how many flags its release supports;"
    );
    println!(" CLOCK: its clock against the running members' median, +-1 s, - when not running or not answering)");
    Ok(())
}

/// A manifest digest as the table shows it.
fn manifest(digest: Option<&str>) -> String {
    match digest.and_then(|d| d.strip_prefix("sha256:")) {
        Some(hex) => hex.chars().take(12).collect(),
        None => "-".into(),
    }
}

/// A clock offset as `+0s`, `-12s`, `+5m3s`, `+2h0m`, `+1d0h` (`-` for none).
fn clock(offset_ms: Option<i64>) -> String {
    let Some(ms) = offset_ms else { return "-".into() };
    let sign = if ms < 0 { '-' } else { '+' };
    let s = (ms.unsigned_abs() + 500) / 1000;
    let text = match s {
        86_400.. => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
        3600.. => format!("{}h{}m", s / 3600, s % 3600 / 60),
        60.. => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{s}s"),
    };
    format!("{sign}{text}")
}

/// `rollgate nodes forget ID`.
async fn forget(client: &Client, id: &str, json: bool) -> Outcome {
    let answer = client.delete(&format!("/admin/nodes/{id}")).await?;
    if json {
        return answer.print_json();
    }
    let forgotten: Forgotten = answer.decode()?;
    println!("forgot node {id} (cluster epoch {})", forgotten.epoch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::clock;

    #[test]
    fn clock_offsets_read_at_a_glance() {
        assert_eq!(clock(None), "-");
        assert_eq!(clock(Some(0)), "+0s");
        assert_eq!(clock(Some(-400)), "-0s");
        assert_eq!(clock(Some(-12_400)), "-12s");
        assert_eq!(clock(Some(303_000)), "+5m3s");
        assert_eq!(clock(Some(-7_260_000)), "-2h1m");
        assert_eq!(clock(Some(86_400_000)), "+1d0h");
        assert_eq!(clock(Some(i64::MIN)).chars().next(), Some('-'));
    }
}

//! `rollgate features` and `rollgate nodes`.

use clap::Subcommand;
use reqwest::Method;

use super::args::{Connection, JsonArg, parse_node_id};
use super::client::{Client, block_on};
use super::show::{print_json, print_table, s, table};
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
    },
}

/// `rollgate features ...`.
pub fn run_features(conn: &Connection, cmd: FeaturesCommand) -> Outcome {
    let client = Client::connect(conn)?;
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
    let client = Client::connect(conn)?;
    block_on(async move {
        match cmd {
            NodesCommand::List(a) => list(&client, a.json).await,
            NodesCommand::Forget { id } => forget(&client, &id).await,
        }
    })
}

/// `rollgate nodes list`.
async fn list(client: &Client, json: bool) -> Outcome {
    let v = client.get("/admin/nodes").await?;
    if json {
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

/// `rollgate nodes forget ID`.
async fn forget(client: &Client, id: &str) -> Outcome {
    let v = client.send(Method::DELETE, &format!("/admin/nodes/{id}"), None).await?;
    println!("forgot node {id} (cluster epoch {})", s(&v["epoch"]));
    Ok(())
}

//! `rollgate capabilities`: does every member support a REST endpoint?

use clap::Args;
use rollgate_api::routes::{CapabilitiesAnswer, CapabilityQuery};

use super::args::Connection;
use super::client::{Client, block_on};
use super::show::{print_table, table, true_false_null, wire_name};
use crate::failure::{Failure, Outcome};

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

/// `rollgate capabilities ...`.
pub fn run_capabilities(conn: &Connection, a: CapabilitiesArgs) -> Outcome {
    // The query is checked here first: bad input never reaches the node.
    CapabilityQuery::parse(Some(&a.method), Some(&a.path), a.parameters.as_deref(), a.capabilities.as_deref())
        .map_err(Failure::refused)?;
    let client = Client::connect(conn)?;
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
        let answer = client.get(&path).await?;
        if a.json {
            return answer.print_json();
        }
        let caps: CapabilitiesAnswer = answer.decode()?;
        println!("supported: {}", true_false_null(caps.supported));
        let mut t = table(&["NODE", "SUPPORTED", "FROM"]);
        for m in caps.members.into_iter().flatten() {
            t.add_row(vec![m.node_id, true_false_null(m.supported), wire_name(&m.source)]);
        }
        print_table(&mut t);
        Ok(())
    })
}

//! `rollgate audit`: who enabled, disabled, forgot, finalized or took over
//! what, newest first (the node's audit log; every node reads the same).

use clap::Args;
use rollgate_api::audit::AuditLog;
use rollgate_util::now_ms;

use super::args::Connection;
use super::client::{Client, block_on};
use super::show::{print_table, table, wire_name};
use crate::failure::Outcome;

/// `rollgate audit` options.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// How many entries, newest first.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    limit: u64,
    /// Print the node's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn when(ms: u64) -> String {
    let secs = now_ms().saturating_sub(ms) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// `rollgate audit`.
pub fn run_audit(conn: &Connection, a: AuditArgs) -> Outcome {
    let client = Client::connect(conn)?;
    block_on(async move {
        let answer = client.get(&format!("/admin/audit?limit={}", a.limit)).await?;
        if a.json {
            return answer.print_json();
        }
        let log: AuditLog = answer.decode()?;
        if log.entries.is_empty() {
            println!("nothing recorded yet (the log keeps the newest {} entries)", log.capacity);
            return Ok(());
        }
        let mut t = table(&["SEQ", "WHEN", "NODE", "ACTION", "REQUEST", "CALLER", "OUTCOME", "MESSAGE"]);
        for e in log.entries {
            let caller = match &e.caller.token {
                Some(t) => format!("{} {t}", e.caller.via),
                None => e.caller.via.clone(),
            };
            t.add_row(vec![
                e.seq.to_string(),
                when(e.at_ms),
                e.node,
                wire_name(&e.action),
                rollgate_util::shorten_to(&e.request.to_string(), 60),
                caller,
                wire_name(&e.outcome),
                e.message,
            ]);
        }
        print_table(&mut t);
        println!("(newest first; the log keeps the newest {} entries)", log.capacity);
        Ok(())
    })
}

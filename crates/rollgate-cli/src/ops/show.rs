//! How the operator commands print: aligned tables without borders, and
//! the node's JSON for `--json`.

use comfy_table::{Cell, Table, presets};
use serde_json::Value;

use crate::failure::{Failure, Outcome};

pub fn print_json(v: &Value) -> Outcome {
    let text = serde_json::to_string_pretty(v).map_err(|e| Failure::Internal(e.into()))?;
    println!("{text}");
    Ok(())
}

pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.iter().map(Cell::new).collect::<Vec<_>>());
    t
}

pub fn print_table(t: &mut Table) {
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    for line in t.to_string().lines() {
        println!("{}", line.trim_end());
    }
}

pub fn s(v: &Value) -> String {
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

//! How the operator commands print a node's answer as text: aligned tables
//! without borders, and the cell text of the API's values (`-` for nothing,
//! lists comma-separated, `yes`/`no`, enums by their name on the wire).

use comfy_table::{Cell, Table, presets};
use serde::Serialize;
use serde_json::Value;

/// A table with these column headers.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.iter().map(Cell::new).collect::<Vec<_>>());
    t
}

/// Prints a table: two spaces between columns, no trailing blanks.
pub fn print_table(t: &mut Table) {
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    for line in t.to_string().lines() {
        println!("{}", line.trim_end());
    }
}

/// A list: comma-separated, `-` when empty.
pub fn list(items: &[String]) -> String {
    if items.is_empty() { "-".into() } else { items.join(",") }
}

/// `-` for nothing.
pub fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_string()
}

/// `yes` or `no`.
pub fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.into()
}

/// `true`, `false` or `null` (unknown), as the JSON says it.
pub fn true_false_null(value: Option<bool>) -> String {
    value.map_or_else(|| "null".into(), |b| b.to_string())
}

/// The name an API enum has on the wire (`running`, `published table`):
/// tables say what the node's JSON says.
pub fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollgate_api::migrations::MigrationState;
    use rollgate_api::nodes::NodeState;
    use rollgate_api::routes::AnswerSource;

    #[test]
    fn cells_read_as_the_json_does() {
        assert_eq!(list(&[]), "-");
        assert_eq!(list(&["n1".into(), "n2".into()]), "n1,n2");
        assert_eq!(or_dash(None), "-");
        assert_eq!(yes_no(false), "no");
        assert_eq!(true_false_null(None), "null");
        assert_eq!(true_false_null(Some(true)), "true");
        assert_eq!(wire_name(&NodeState::Stopped), "stopped");
        assert_eq!(wire_name(&AnswerSource::PublishedTable), "published table");
        assert_eq!(wire_name(&MigrationState::Done), "done");
    }
}

//! The options the operator commands share: where the node is, how to
//! authenticate, `--json`, and the checks of names given on the command line
//! (the API's own rules, so bad input never reaches the node).

use std::path::PathBuf;

use clap::Args;

/// Where the node is and how to authenticate (top-level options).
#[derive(Args, Debug, Default)]
pub struct Connection {
    /// The node's admin API, e.g. http://127.0.0.1:9650 (operator commands).
    #[arg(long, value_name = "URL", env = "ROLLGATE_NODE")]
    pub node: Option<String>,
    /// A file holding the node's admin token (needed to change the cluster).
    #[arg(long, value_name = "FILE", env = "ROLLGATE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The cluster CA (PEM): talk to the node over HTTPS (`HOST:PORT` then means https://).
    #[arg(long, value_name = "FILE", env = "ROLLGATE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// A client certificate to present (PEM; `rollgate certs client NAME`). Needs --client-key and --ca-file.
    #[arg(long, value_name = "FILE", requires_all = ["client_key", "ca_file"])]
    pub client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM, readable by its owner only).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
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
    pub json: bool,
}

pub fn parse_flag_name(s: &str) -> Result<String, String> {
    rollgate_api::names::check_flag_name(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

pub fn parse_node_id(s: &str) -> Result<String, String> {
    rollgate_api::names::check_node_id(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

pub fn parse_release(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return Err(format!("{s:?} is not a release: use 1 to 64 of letters, digits, '.', '-' and '_'"));
    }
    Ok(s.to_string())
}

//! `rollgate`: developer tooling for transport versions and operator
//! commands for flags, cluster features, nodes, capabilities and upgrades.
//!
//! This file only parses the command line and dispatches; each command group
//! lives in its own module (`tv` for transport versions, `ops` for the
//! operator commands, which talk to a node's admin API). Exit codes: 0 ok,
//! 2 bad input or a refused operation (stderr says what and how to fix),
//! 1 internal error.

mod certs;
mod failure;
mod ops;
mod tv;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// rollgate: mixed-release clusters and zero-downtime rolling upgrades.
#[derive(Parser, Debug)]
#[command(name = "rollgate", version, about, long_about = None)]
#[command(
    after_help = "Operator commands talk to one node's admin API: give it with --node URL (or ROLLGATE_NODE), and \
the admin token file with --token-file FILE (or ROLLGATE_TOKEN_FILE) for commands that change the cluster:\n  \
rollgate --node http://127.0.0.1:9650 flags list\n  \
rollgate --node http://127.0.0.1:9650 --token-file admin.token flags enable --all\n  \
rollgate --node https://10.0.0.1:9650 --ca-file tls/ca.pem flags list\n\n\
Exit codes: 0 ok, 2 bad input or a refused operation (stderr says what and how to fix), 1 internal error.\n\
Logging: set RUST_LOG (e.g. RUST_LOG=debug) to see what rollgate does, on stderr."
)]
struct Cli {
    #[command(flatten)]
    connection: ops::Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(subcommand)]
    Tv(tv::TvCommand),
    /// Certificates for a test or small cluster: a CA, node and client certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Feature flags: list, info, enable, disable.
    #[command(subcommand)]
    Flags(ops::FlagsCommand),
    /// Cluster features.
    #[command(subcommand)]
    Features(ops::FeaturesCommand),
    /// Members: list, forget.
    #[command(subcommand)]
    Nodes(ops::NodesCommand),
    /// Does every member support a REST endpoint?
    Capabilities(ops::CapabilitiesArgs),
    /// Upgrade status, plans and waiting.
    #[command(subcommand)]
    Upgrade(ops::UpgradeCommand),
    /// The audit log: who changed what, when, from which node.
    Audit(ops::AuditArgs),
    /// Release keys and signed release manifests (local files, no node).
    #[command(subcommand)]
    Release(ops::ReleaseCommand),
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let conn = &cli.connection;
    let result = match cli.command {
        Command::Tv(cmd) => tv::run(cmd),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Flags(cmd) => ops::run_flags(conn, cmd),
        Command::Features(cmd) => ops::run_features(conn, cmd),
        Command::Nodes(cmd) => ops::run_nodes(conn, cmd),
        Command::Capabilities(args) => ops::run_capabilities(conn, args),
        Command::Upgrade(cmd) => ops::run_upgrade(conn, cmd),
        Command::Audit(args) => ops::run_audit(conn, args),
        Command::Release(cmd) => ops::run_release(cmd),
    };
    failure::exit(result)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

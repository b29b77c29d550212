//! `rollgate`: developer tooling for transport versions and operator
//! commands for flags, cluster features, nodes, capabilities and upgrades.
//!
//! This file only parses the command line and dispatches; each command group
//! lives in its own module (`tv` for transport versions). Exit codes: 0 ok,
//! 2 bad input or a refused operation (stderr says what and how to fix),
//! 1 internal error.

mod failure;
mod tv;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// rollgate: mixed-release clusters and zero-downtime rolling upgrades.
#[derive(Parser, Debug)]
#[command(name = "rollgate", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 ok, 2 bad input or a refused operation (stderr says what and how to fix), 1 internal error.\n\
Logging: set RUST_LOG (e.g. RUST_LOG=debug) to see what rollgate does, on stderr."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(subcommand)]
    Tv(tv::TvCommand),
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tv(cmd) => tv::run(cmd),
    };
    failure::exit(result)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

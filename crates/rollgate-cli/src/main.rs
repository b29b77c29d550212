//! `rollgate`: developer tooling for transport versions and operator
//! commands for flags, cluster features, nodes, capabilities and upgrades.

use clap::{Parser, Subcommand};

/// rollgate: mixed-release clusters and zero-downtime rolling upgrades.
#[derive(Parser, Debug)]
#[command(name = "rollgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Transport versions: generate, validate and inspect the transport/ state folder.
    #[command(subcommand)]
    Tv(TvCommand),
}

#[derive(Subcommand, Debug)]
enum TvCommand {
    /// List the transport version definitions.
    List,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Tv(TvCommand::List) => {}
    }
}

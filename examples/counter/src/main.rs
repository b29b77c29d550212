//! `counter`: run one node of the counter service, or the rolling-upgrade demo.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rollgate::handshake::ClusterSecret;
use rollgate::store::StoreOptions;
use rollgate_example_counter::demo;
use rollgate_example_counter::node::{Counter, Options};
use rollgate_example_counter::releases::Release;

/// The smallest service built on rollgate (see docs/adopting.md).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A rolling upgrade from 1.0 to 1.1 in one process, on an embedded store in a temp dir.
    Demo,
    /// Run one node until Ctrl-C.
    Serve(Serve),
}

#[derive(clap::Args)]
struct Serve {
    /// The release to run as.
    #[arg(long, value_enum, default_value = "1.1")]
    release: Release,
    /// The node id.
    #[arg(long)]
    id: String,
    /// The data dir.
    #[arg(long)]
    data: PathBuf,
    /// The metadata store: redb:PATH (this process only) or etcd:HOST:PORT (with feature etcd).
    #[arg(long)]
    store: String,
    /// Where peers connect.
    #[arg(long, default_value = "127.0.0.1:7100")]
    listen: String,
    /// The admin API (`rollgate --node http://ADDR`).
    #[arg(long, default_value = "127.0.0.1:9650")]
    admin: String,
    /// The admin API's bearer token: one line of 8 to 1024 printable characters.
    #[arg(long)]
    admin_token_file: PathBuf,
    /// The cluster secret that authenticates peers: at least 16 bytes, the same on every node.
    #[arg(long)]
    cluster_secret_file: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let done = match Cli::parse().command {
        Command::Demo => demo::run(&mut |line| println!("{line}")).await.map(drop).map_err(anyhow::Error::from),
        Command::Serve(args) => serve(args).await,
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Serve) -> anyhow::Result<()> {
    let admin_token = rollgate::admin::read_token_file(&args.admin_token_file)?;
    let secret = ClusterSecret::from_file(&args.cluster_secret_file)?;
    let store = rollgate::store::open(&args.store, StoreOptions::default()).await?;
    let options = Options {
        id: args.id,
        release: args.release,
        data_dir: args.data,
        listen: args.listen,
        admin: args.admin,
        admin_token,
        secret,
    };
    let node = Counter::start(options, store).await?;
    println!("node {} (release {}): admin API {}", node.id(), node.release().name(), node.admin_url());
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    node.stop().await?;
    Ok(())
}

//! `rollgate-kv`: the reference replicated key-value service of rollgate.
//! This file only parses the command line and calls the library.
//!
//! Exit codes: 0 ok; 2 bad input or a refused operation (the message says
//! what and how to fix it); 1 anything else.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rollgate::handshake::ClusterSecret;
use rollgate::store::{StoreError, StoreOptions};
use rollgate_kv::releases::{self, Release};
use rollgate_kv::{ClientError, ClientOptions, KvClient, NodeConfig, NodeError, node};

#[derive(Parser, Debug)]
#[command(
    name = "rollgate-kv",
    version,
    about = "The reference replicated key-value service of rollgate: releases 1.0, 1.1, 1.2 and 2.0 in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A rolling upgrade under live load, in one command (embedded store, nothing to set up).
    #[command(
        long_about = "Starts a cluster of nodes at --from on an embedded metadata store, with real TCP \
between them, drives a client load, upgrades the nodes one by one to --to (stop, restart on the same data dir \
as the new release), enables every stable flag, lets the migrations finish, uses the new features, and checks \
that every acknowledged write is readable from every node. Exits 0 only with zero failed operations and zero \
lost acknowledged writes.",
        after_help = "Examples:
  rollgate-kv demo
  rollgate-kv demo --nodes 5 --from 1.0 --to 1.2 --json > report.json"
    )]
    Demo(DemoArgs),
    /// Drive a client load against running nodes, then check every acknowledged write on every node.
    #[command(
        long_about = "Drives the demo's client load (workers writing, overwriting, deleting and reading their own \
keys under one prefix, through a failover client) against nodes that run elsewhere, for example `rollgate-kv serve` \
processes on etcd while you upgrade them one by one. It stops after --ops operations, after --duration-s, or on \
Ctrl-C, then reads every key from every node on its own; a key that is wrong somewhere is read again for up to \
--settle-s before it counts as lost. Exits 0 only with zero failed operations, zero lost acknowledged writes and zero missed reads \
(reads that did not return the worker's own last acknowledged write), \
1 otherwise, 2 on bad options.",
        after_help = "Examples:
  rollgate-kv load --node 127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003          # until Ctrl-C
  rollgate-kv load --node 127.0.0.1:8001 --node 127.0.0.1:8002 --duration-s 120 --rate 500
  rollgate-kv load --node 127.0.0.1:8001 --ops 10000 --json > load.json"
    )]
    Load(LoadArgs),
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// List the releases this binary can run as, or print one's manifest.
    Releases {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Print the release manifest of release R (what `rollgate release sign` signs).
        #[arg(long, value_name = "R", value_parser = ReleaseParser, conflicts_with = "json")]
        manifest: Option<&'static Release>,
    },
    /// Store a value.
    Put(PutArgs),
    /// Print a value (exit 1 when the key does not exist).
    Get(GetArgs),
    /// Delete a key.
    Delete(KeyArgs),
}

/// Parses `--release`; an unknown name exits 2 naming the known releases
/// (without echoing the argument in full).
#[derive(Clone, Debug)]
struct ReleaseParser;

impl clap::builder::TypedValueParser for ReleaseParser {
    type Value = &'static Release;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        releases::find(&value.to_string_lossy()).map_err(|e| {
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("--release: {e}\n")).with_cmd(cmd)
        })
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// The release to run as (see `rollgate-kv releases`).
    #[arg(long, value_name = "R", value_parser = ReleaseParser)]
    release: &'static Release,
    /// The data dir (created when missing).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// The address peers connect to (port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// The HTTP address of the client API and the admin API: PORT or
    /// localhost:PORT (loopback), or IP:PORT (port 0 picks one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9650")]
    admin: String,
    /// The metadata store: redb:PATH, etcd:HOST:PORT[,HOST:PORT...] or mem:.
    #[arg(long, value_name = "URL")]
    meta: String,
    /// A member's data address: check with a handshake that it accepts this node before joining.
    #[arg(long, value_name = "ADDR")]
    join: Option<String>,
    /// The node id (default: the one in the data dir, else a new random one).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// A file holding the cluster secret (at least 16 bytes) that authenticates handshakes.
    #[arg(long, value_name = "F")]
    cluster_secret_file: Option<PathBuf>,
    /// A file holding the bearer token of the admin API (without one, admin
    /// changes such as enabling flags are refused).
    #[arg(long, value_name = "F")]
    admin_token_file: Option<PathBuf>,
    /// Plugins to run (comma-separated or repeated; see `rollgate-kv releases`).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    plugins: Vec<String>,
    /// The release's manifest signed with the release key (`rollgate release sign`); needs --release-key.
    #[arg(long, value_name = "F", requires = "release_key")]
    release_manifest: Option<PathBuf>,
    /// The trusted release public key: run only a release it signed, accept only peers whose release it signed.
    #[arg(long, value_name = "F", requires = "release_manifest")]
    release_key: Option<PathBuf>,
    /// This node's certificate (PEM, naming ID.node.rollgate; `rollgate certs node ID`): mutual TLS between
    /// peers and HTTPS on --admin. Needs --tls-key and --tls-ca.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM, readable by its owner only).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// The cluster CA's certificate (PEM): peers and clients must present certificates it signed.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// Run without TLS although --listen, --admin or --meta is not on loopback (a network you trust).
    #[arg(long)]
    insecure: bool,
    /// TTL of the node's liveness lease: a node that stops answering (crashed,
    /// paused, cut off) counts as running this long.
    #[arg(long, value_name = "S", default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=300))]
    liveness_ttl_s: i64,
    #[command(flatten)]
    etcd: EtcdArgs,
}

/// How a node reaches etcd securely.
#[derive(Args, Debug)]
struct EtcdArgs {
    /// The CA of etcd's server certificate (PEM): talk to etcd over TLS.
    #[arg(long, value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// A client certificate for etcd (PEM; etcd's --client-cert-auth). Needs --etcd-key.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// The private key of --etcd-cert (PEM, readable by its owner only).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// An etcd user (etcd's auth). Needs --etcd-password-file.
    #[arg(long, value_name = "NAME", requires = "etcd_password_file")]
    etcd_user: Option<String>,
    /// A file holding the password of --etcd-user (one line, readable by its owner only).
    #[arg(long, value_name = "FILE", requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
}

/// HTTPS towards the nodes: the CA and, optionally, a client certificate.
#[derive(Args, Debug)]
struct ClientTlsArgs {
    /// The cluster CA (PEM): talk to the nodes over HTTPS (`HOST:PORT` then means https://).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// A client certificate to present (PEM; `rollgate certs client NAME`). Needs --client-key.
    #[arg(long, value_name = "FILE", requires_all = ["client_key", "ca_file"])]
    client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM, readable by its owner only).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

/// **Test-only hook**: `ID=HOST:PORT,...`, peers this node dials at another
/// address than the one they registered (fault tests put a proxy between
/// each ordered pair of nodes). A value that does not parse refuses the start.
const TEST_PEER_ADDRS_ENV: &str = "ROLLGATE_KV_TEST_PEER_ADDRS";

/// The dial overrides of [`TEST_PEER_ADDRS_ENV`], when set.
fn dial_overrides() -> Result<std::collections::BTreeMap<String, String>, Failure> {
    let Ok(text) = std::env::var(TEST_PEER_ADDRS_ENV) else { return Ok(Default::default()) };
    let bad = |why: &str| {
        Failure::refused(anyhow::anyhow!(
            "{TEST_PEER_ADDRS_ENV}: {why} (expected ID=HOST:PORT,...; a test-only setting)"
        ))
    };
    let mut out = std::collections::BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = pair.split_once('=').ok_or_else(|| bad("an entry without `=`"))?;
        rollgate::cluster::validate_node_id(id).map_err(|e| bad(&e.to_string()))?;
        addr.parse::<std::net::SocketAddr>().map_err(|_| bad("an address that is not IP:PORT"))?;
        out.insert(id.to_string(), addr.to_string());
    }
    Ok(out)
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Nodes in the cluster (3 to 7).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(3..=7))]
    nodes: u8,
    /// The release the cluster starts at.
    #[arg(long, value_name = "R", default_value = "1.0", value_parser = ReleaseParser)]
    from: &'static Release,
    /// The release the nodes are upgraded to.
    #[arg(long, value_name = "R", default_value = "1.2", value_parser = ReleaseParser)]
    to: &'static Release,
    /// Print the report as one JSON object on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Concurrent client workers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=64))]
    workers: u8,
    /// Seconds of load before the upgrade (half as long after it).
    #[arg(long, value_name = "S", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=600))]
    steady_s: u64,
    /// Seconds each node stays down during its upgrade, while the others serve.
    #[arg(long, value_name = "S", default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=600))]
    downtime_s: u64,
    /// Keep the cluster's data in DIR (default: a temporary dir, removed at the end).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Seed of the client load.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress on stderr.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct LoadArgs {
    #[command(flatten)]
    nodes: NodesArg,
    /// Concurrent client workers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=64))]
    workers: u8,
    /// Target operations per second, all workers together.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rate: u64,
    /// Stop after N operations.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    ops: Option<u64>,
    /// Stop after S seconds.
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration_s: Option<u64>,
    /// Seconds a key that is wrong on some node is read again before it counts as lost.
    #[arg(long, value_name = "S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    settle_s: u64,
    /// Seed of the workers' choices (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Every key starts with this (default: load-SEED-).
    #[arg(long, value_name = "P")]
    prefix: Option<String>,
    /// Print the report as one JSON object on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// No progress on stderr.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct NodesArg {
    /// A node's HTTP address (HOST:PORT, http:// or https://); repeat it or separate with commas for failover.
    #[arg(long = "node", value_name = "ADDR", required = true)]
    nodes: Vec<String>,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

#[derive(Args, Debug)]
struct PutArgs {
    #[command(flatten)]
    nodes: NodesArg,
    /// The key.
    key: String,
    /// The value.
    value: String,
    /// Time to live in seconds (release 1.1 and later).
    #[arg(long, value_name = "N")]
    ttl_s: Option<u64>,
}

#[derive(Args, Debug)]
struct KeyArgs {
    #[command(flatten)]
    nodes: NodesArg,
    /// The key.
    key: String,
}

#[derive(Args, Debug)]
struct GetArgs {
    #[command(flatten)]
    nodes: NodesArg,
    /// session: any node's answer, never older than what this command saw (one read: any node);
    /// linearizable: confirmed by a majority, so it holds every write acknowledged before it
    /// (needs nodes of release 2.0 or later; an older node is not asked).
    #[arg(long, value_name = "LEVEL", default_value = "session", value_parser = ["session", "linearizable"])]
    consistency: String,
    /// The key.
    key: String,
}

/// A failure and its exit code.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    fn refused(error: impl Into<anyhow::Error>) -> Self {
        Failure { code: 2, error: error.into() }
    }
    fn internal(error: impl Into<anyhow::Error>) -> Self {
        Failure { code: 1, error: error.into() }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Releases { json, manifest } => releases_cmd(json, manifest),
        command => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt.block_on(run(command)),
            Err(e) => Err(Failure::internal(anyhow::anyhow!("cannot start the runtime: {e}"))),
        },
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("rollgate-kv: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn releases_cmd(json: bool, manifest: Option<&'static Release>) -> Result<ExitCode, Failure> {
    let text = if let Some(release) = manifest {
        let m = releases::manifest(release).map_err(|e| Failure::internal(anyhow::anyhow!(e)))?;
        serde_json::to_string_pretty(&m).map_err(Failure::internal)?
    } else if json {
        let all: Vec<_> = releases::RELEASES.iter().map(Release::to_json).collect();
        serde_json::to_string_pretty(&all).map_err(Failure::internal)?
    } else {
        releases::table()
    };
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

async fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Demo(a) => demo(a).await,
        Command::Load(a) => load(a).await,
        Command::Serve(args) => serve(*args).await,
        Command::Put(a) => {
            let client = client(&a.nodes)?;
            let o = client.put(&a.key, a.value.into_bytes(), a.ttl_s).await.map_err(client_failure)?;
            println!("stored {:?}: version {}, acknowledged by {} of {} members", o.key, o.version, o.acks, o.members);
            Ok(ExitCode::SUCCESS)
        }
        Command::Get(a) => {
            let client = client(&a.nodes)?;
            let level = a
                .consistency
                .parse::<rollgate_kv::client::ReadLevel>()
                .map_err(|e| Failure::refused(anyhow::anyhow!(e)))?;
            match client.read(&a.key, level).await.map_err(client_failure)?.value {
                Some(value) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&value).and_then(|_| out.flush()).map_err(Failure::internal)?;
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("rollgate-kv: key {:?} not found", a.key);
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Delete(a) => {
            let client = client(&a.nodes)?;
            let o = client.delete(&a.key).await.map_err(client_failure)?;
            println!("deleted {:?}: version {}, acknowledged by {} of {} members", o.key, o.version, o.acks, o.members);
            Ok(ExitCode::SUCCESS)
        }
        Command::Releases { json, manifest } => releases_cmd(json, manifest),
    }
}

async fn demo(a: DemoArgs) -> Result<ExitCode, Failure> {
    // Node logs would drown the progress: errors only, unless RUST_LOG says otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let mut opts = rollgate_kv::demo::DemoOptions::new(a.from, a.to);
    opts.nodes = a.nodes as usize;
    opts.workers = a.workers as usize;
    opts.steady = Duration::from_secs(a.steady_s);
    opts.downtime = Duration::from_secs(a.downtime_s);
    opts.dir = a.keep;
    opts.seed = a.seed;
    opts.progress = !a.quiet;
    let report = rollgate_kv::demo::run(opts).await.map_err(|e| match e {
        rollgate_kv::demo::DemoError::Options(_) => Failure::refused(e),
        other => Failure::internal(other),
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(Failure::internal)?);
    } else {
        print!("{}", rollgate_kv::demo::render(&report));
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn load(a: LoadArgs) -> Result<ExitCode, Failure> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64)
    });
    let opts = rollgate_kv::demo::external::LoadOptions {
        // Each address on its own: the check reads from every node.
        nodes: a
            .nodes
            .nodes
            .iter()
            .flat_map(|n| n.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect(),
        workers: a.workers as usize,
        rate: a.rate,
        ops: a.ops,
        duration: a.duration_s.map(Duration::from_secs),
        settle: Duration::from_secs(a.settle_s),
        seed,
        prefix: a.prefix.unwrap_or_else(|| format!("load-{seed}-")),
        progress: !a.quiet,
        tls: client_tls(&a.nodes.tls)?,
    };
    opts.validate().map_err(Failure::refused)?;
    if !a.json {
        // On stdout too, so a script (or a test) sees when the load runs and
        // with which seed to repeat it.
        println!("rollgate-kv load: started seed={} prefix={} nodes={}", opts.seed, opts.prefix, opts.nodes.join(","));
    }
    let interrupt = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated() => {}
        }
    };
    let report = rollgate_kv::demo::external::run(opts, interrupt).await.map_err(|e| match e {
        rollgate_kv::demo::DemoError::Options(_) => Failure::refused(e),
        other => Failure::internal(other),
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(Failure::internal)?);
    } else {
        print!("{}", rollgate_kv::demo::external::render(&report));
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn client(nodes: &NodesArg) -> Result<KvClient, Failure> {
    let options = ClientOptions { tls: client_tls(&nodes.tls)?, ..ClientOptions::default() };
    KvClient::new(&nodes.nodes, options).map_err(Failure::refused)
}

/// The HTTPS setup of `--ca-file`, `--client-cert` and `--client-key`.
fn client_tls(a: &ClientTlsArgs) -> Result<Option<std::sync::Arc<rustls::ClientConfig>>, Failure> {
    use rollgate::tls;
    let Some(ca) = &a.ca_file else { return Ok(None) };
    let refused = |e: tls::TlsError| Failure::refused(anyhow::anyhow!("{e}"));
    let ca_pem = std::fs::read(ca).map_err(|e| Failure::refused(anyhow::anyhow!("--ca-file {}: {e}", ca.display())))?;
    let identity = match (&a.client_cert, &a.client_key) {
        (Some(cert), Some(key)) => {
            let pem = std::fs::read(cert)
                .map_err(|e| Failure::refused(anyhow::anyhow!("--client-cert {}: {e}", cert.display())))?;
            Some((tls::certs_from_pem("--client-cert", cert, &pem).map_err(refused)?, {
                tls::read_key_file("--client-key", key).map_err(refused)?
            }))
        }
        _ => None,
    };
    Ok(Some(std::sync::Arc::new(tls::https_client(ca, &ca_pem, identity).map_err(refused)?)))
}

fn client_failure(e: ClientError) -> Failure {
    match e {
        ClientError::Refused { .. }
        | ClientError::InvalidNode { .. }
        | ClientError::InvalidKey(_)
        | ClientError::NodeCount => Failure::refused(e),
        other => Failure::internal(other),
    }
}

fn read_token(path: &Path) -> Result<String, Failure> {
    rollgate::admin::read_token_file(path).map_err(|e| Failure::refused(anyhow::anyhow!("--admin-token-file: {e}")))
}

/// etcd outside loopback without TLS: refused unless `--insecure`.
fn refuse_plaintext_etcd(endpoints: &[String]) -> Result<(), Failure> {
    let outside: Vec<&String> = endpoints
        .iter()
        .filter(|e| {
            let host = e.rsplit_once(':').map_or(e.as_str(), |(h, _)| h).trim_matches(['[', ']']);
            !(host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()))
        })
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    Err(Failure::refused(anyhow::anyhow!(
        "--meta: etcd at {} is not on loopback and --etcd-ca is not given, so the cluster's metadata would travel \
         in the clear and unauthenticated: give --etcd-ca (and --etcd-user with --etcd-password-file, or \
         --etcd-cert with --etcd-key), or pass --insecure on a network you trust",
        outside.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    )))
}

/// The etcd TLS and authentication options.
fn etcd_security(a: &EtcdArgs) -> Result<rollgate::store::EtcdSecurity, Failure> {
    rollgate::store::EtcdSecurity::from_files(
        a.etcd_ca.as_deref(),
        a.etcd_cert.as_deref().zip(a.etcd_key.as_deref()),
        a.etcd_user.as_deref().zip(a.etcd_password_file.as_deref()),
    )
    .map_err(|e| Failure::refused(anyhow::anyhow!("{e}")))
}

fn store_failure(e: StoreError) -> Failure {
    match e {
        StoreError::InvalidUrl { .. }
        | StoreError::EtcdNotBuilt { .. }
        | StoreError::AlreadyOpen { .. }
        | StoreError::Corrupt { .. } => Failure::refused(anyhow::anyhow!("--meta: {e}")),
        other => Failure::internal(anyhow::anyhow!("--meta: {other}")),
    }
}

fn node_failure(e: NodeError) -> Failure {
    if e.is_operator_error() { Failure::refused(e) } else { Failure::internal(e) }
}

async fn serve(args: ServeArgs) -> Result<ExitCode, Failure> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();

    let secret = match &args.cluster_secret_file {
        Some(f) => Some(ClusterSecret::from_file(f).map_err(|e| Failure::refused(anyhow::anyhow!("{e}")))?),
        None => {
            tracing::warn!(
                "no --cluster-secret-file: handshakes with peers are not authenticated, so a man in the middle could \
                 push peers onto an older protocol version"
            );
            None
        }
    };
    let admin_token = args.admin_token_file.as_deref().map(read_token).transpose()?;
    let store_options = StoreOptions { etcd: etcd_security(&args.etcd)?, ..StoreOptions::default() };
    let meta: rollgate::store::StoreUrl = args.meta.parse().map_err(store_failure)?;
    if let rollgate::store::StoreUrl::Etcd(endpoints) = &meta
        && store_options.etcd.ca_pem.is_none()
        && !args.insecure
    {
        refuse_plaintext_etcd(endpoints)?;
    }
    let store = rollgate::store::open_parsed(&meta, store_options).await.map_err(store_failure)?;
    let mut config = NodeConfig::new(args.release, &args.data, &args.listen, &args.admin);
    config.join = args.join;
    config.node_id = args.node_id;
    config.cluster_secret = secret;
    config.admin_token = admin_token;
    config.plugins = args.plugins;
    if let (Some(manifest), Some(key)) = (&args.release_manifest, &args.release_key) {
        let refused = |e: rollgate::release::ReleaseError| Failure::refused(anyhow::anyhow!("{e}"));
        config.release_manifest = Some(rollgate::release::SignedManifest::read(manifest).map_err(refused)?);
        config.release_key = Some(rollgate::release::ReleaseKey::read(key).map_err(refused)?);
    }
    config.insecure = args.insecure;
    if let (Some(cert), Some(key), Some(ca)) = (args.tls_cert, args.tls_key, args.tls_ca) {
        config.tls = Some(rollgate::tls::TlsFiles { cert, key, ca });
    }
    config.tuning.liveness_ttl_s = args.liveness_ttl_s;
    config.dial_overrides = dial_overrides()?;
    let handle = node::start(config, store).await.map_err(node_failure)?;
    let addrs = handle.addresses();
    let line = format!(
        "node={} release={} data={} admin={} cluster={}",
        handle.node_id(),
        handle.release(),
        addrs.data,
        addrs.admin,
        handle.cluster_id()
    );
    println!("rollgate-kv: listening {line}");

    let mut terminate = std::pin::pin!(terminated());
    let mut ready_printed = false;
    loop {
        tokio::select! {
            ready = handle.wait_ready(Duration::from_secs(3600)), if !ready_printed => {
                if ready {
                    println!("rollgate-kv: ready {line}");
                    ready_printed = true;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = &mut terminate => break,
        }
    }
    println!("rollgate-kv: stopping node={}", handle.node_id());
    let node = handle.node_id().to_string();
    handle.stop().await.map_err(node_failure)?;
    println!("rollgate-kv: stopped node={node}");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM (never where there is none).
async fn terminated() {
    #[cfg(unix)]
    if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        s.recv().await;
        return;
    }
    std::future::pending::<()>().await
}

//! `rollgate-kv demo`: a rolling upgrade under live load, in one command.
//!
//! On an embedded (redb) metadata store, with no other set-up, the demo
//! starts a cluster of nodes at one release with real TCP between them
//! (authenticated handshakes with a generated cluster secret), drives a
//! client load through a failover client, then upgrades the nodes one by one
//! (stop, restart on the same data dir and addresses as the new release,
//! catch up before serving), enables every stable flag through the admin
//! API exactly as an operator would, waits for the migrations those flags
//! unlock, uses the new features, and finally checks that every
//! acknowledged write is readable from every node.
//!
//! The nodes run in this process: the embedded store is owned by one
//! process (use etcd and `rollgate-kv serve` for a multi-process cluster).
//! Every node still has its own data dir, listeners and peer connections,
//! and a stop closes them all.

mod admin;
pub mod external;
pub mod load;
mod report;
mod tls;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::client::{ClientOptions, KvClient};
use rollgate::handshake::ClusterSecret;
use rollgate::store::MetaStore;

use crate::node::{self, NodeConfig, NodeHandle};
use crate::releases::Release;
use admin::Admin;
pub use load::PhaseReport as Phase;
use load::{Expected, Load, PhaseReport, RestartMarks, RestartTime};
pub use report::render;
use verify::{verify, verify_keys};

/// Fewest nodes: a majority must survive one node being down.
pub const MIN_NODES: usize = 3;
/// Most nodes the demo starts.
pub const MAX_NODES: usize = 7;
/// Longest the demo waits for a node to be ready or migrations to finish.
const WAIT: Duration = Duration::from_secs(120);

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Nodes in the cluster (3 to 7).
    pub nodes: usize,
    /// The release the cluster starts at.
    pub from: &'static Release,
    /// The release the nodes are upgraded to.
    pub to: &'static Release,
    /// Concurrent client workers.
    pub workers: usize,
    /// Each worker starts at most one operation per this interval (zero:
    /// closed loop, saturation).
    pub op_interval: Duration,
    /// How long the load runs before and after the upgrade.
    pub steady: Duration,
    /// How long each node stays down during its upgrade (the time to
    /// install a new binary), while the others carry the load.
    pub downtime: Duration,
    /// Keep the data here instead of a temporary dir.
    pub dir: Option<PathBuf>,
    /// Seed of the load (printed in the report).
    pub seed: u64,
    /// Show progress on stderr.
    pub progress: bool,
}

impl DemoOptions {
    /// The defaults of `rollgate-kv demo`: 3 nodes, `from` to `to`.
    pub fn new(from: &'static Release, to: &'static Release) -> DemoOptions {
        DemoOptions {
            nodes: 3,
            from,
            to,
            workers: 4,
            op_interval: Duration::from_millis(4),
            steady: Duration::from_secs(4),
            downtime: Duration::from_secs(1),
            dir: None,
            seed: 1,
            progress: true,
        }
    }
}

/// Why the demo could not run (as opposed to a run that found failures,
/// which is a [`DemoReport`] with non-zero counts).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// Setting up the data dir, store or secret failed.
    #[error("setting up the demo: {0}")]
    Setup(String),
    /// The client load itself failed (not an operation: the load).
    #[error("the client load failed: {0}")]
    Load(String),
    /// A node did not start or did not become ready.
    #[error("node {node}: {reason}")]
    Node {
        /// The node.
        node: String,
        /// What happened.
        reason: String,
    },
}

/// Versions two connected nodes agreed on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Negotiation {
    /// The release of the node that reported the link.
    pub from: String,
    /// The peer's release.
    pub to: String,
    /// The agreed protocol version.
    pub protocol: u16,
    /// The agreed transport version.
    pub transport: u32,
    /// The reporting node.
    pub from_node: String,
    /// The peer.
    pub to_node: String,
    /// Whether the handshake was authenticated with the cluster secret.
    pub authenticated: bool,
    /// Whether the link ran mutual TLS (certificates of the demo's CA).
    pub tls: bool,
    /// The phase in which it was seen.
    pub phase: String,
}

/// Steady state against the rolling upgrade, in one run.
#[derive(Clone, Debug, Serialize)]
pub struct UpgradeImpact {
    /// The steady phases merged.
    pub steady: PhaseReport,
    /// The upgrade phases merged.
    pub upgrade: PhaseReport,
    /// `upgrade.p99_ms / steady.p99_ms`.
    pub p99_ratio: f64,
    /// `upgrade.p50_ms / steady.p50_ms`.
    pub p50_ratio: f64,
    /// `upgrade.ops_per_s / steady.ops_per_s`.
    pub throughput_ratio: f64,
}

impl UpgradeImpact {
    /// From a load's phases: those named `steady at ...` against those
    /// named `upgrade ...` (the rolling-upgrade harness names its etcd
    /// baseline's phases the same way).
    pub fn of(load: &Load) -> UpgradeImpact {
        let steady = load.merged("steady", |n| n.starts_with("steady at "));
        let upgrade = load.merged("rolling upgrade", |n| n.starts_with("upgrade "));
        let ratio = |a: f64, b: f64| if b > 0.0 { (a / b * 100.0).round() / 100.0 } else { 0.0 };
        UpgradeImpact {
            p99_ratio: ratio(upgrade.p99_ms, steady.p99_ms),
            p50_ratio: ratio(upgrade.p50_ms, steady.p50_ms),
            throughput_ratio: ratio(upgrade.ops_per_s, steady.ops_per_s),
            steady,
            upgrade,
        }
    }
}

/// The outcome of a demo run (`--json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// Operations acknowledged (or read) by the cluster.
    pub ops_ok: u64,
    /// Operations that failed on every node the client tried.
    pub ops_failed: u64,
    /// Keys whose last acknowledged write is not what some node returns.
    pub acked_writes_lost: u64,
    /// Keys checked on every node.
    pub keys_checked: u64,
    /// Reads of a key the worker had written, checked against its last
    /// acknowledged write (read-your-writes).
    pub reads_checked: u64,
    /// Of those, reads that missed the acknowledged write.
    pub missed_reads: u64,
    /// Each node's release at the end.
    pub final_releases: Vec<String>,
    /// Flags enabled at the end.
    pub flags_enabled: Vec<String>,
    /// Flags the operator step enabled.
    pub flags_enabled_by_demo: Vec<String>,
    /// Load per phase.
    pub phases: Vec<PhaseReport>,
    /// Client load in steady state (before and after the upgrade) against
    /// the load while nodes were being upgraded, in the same run.
    pub upgrade_impact: UpgradeImpact,
    /// Agreed versions between nodes, as seen during the run.
    pub negotiated: Vec<Negotiation>,
    /// New features exercised after the upgrade.
    pub features_used: Vec<String>,
    /// Node-local migrations that finished, as `node/migration`.
    pub migrations_done: Vec<String>,
    /// The release floor raised after the upgrade (`rollgate upgrade finalize`).
    pub release_floor: Option<String>,
    /// The cluster-wide service formats at the end, with the steps that ran.
    pub service_formats: Vec<String>,
    /// The first failures and losses, to start an investigation.
    pub problems: Vec<String>,
    /// Nodes, releases and seed.
    pub nodes: usize,
    /// The starting release.
    pub from: String,
    /// The target release.
    pub to: String,
    /// The load's seed.
    pub seed: u64,
    /// Wall time of the whole run, in milliseconds.
    pub duration_ms: u64,
    /// Whether every peer link seen ran mutual TLS and the client and the
    /// operator used HTTPS (certificates made in the demo's data dir).
    pub tls: bool,
    /// Each restarted node: how long it was down, and from its start to
    /// serving (opening the data dir, joining, catching up).
    pub restarts: Vec<RestartTime>,
    /// The upgrade's latency per node and step (stopping, down, catching
    /// up, the first seconds after it serves), to see where its tail comes
    /// from (see [`load::upgrade_windows`]).
    pub upgrade_windows: Vec<PhaseReport>,
}

impl DemoReport {
    /// True when nothing failed, nothing acknowledged was lost and no read missed one.
    pub fn passed(&self) -> bool {
        self.ops_failed == 0 && self.acked_writes_lost == 0 && self.missed_reads == 0
    }
}

/// Progress shown while the demo runs: a status line on a terminal, plain
/// lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    status: Arc<Mutex<String>>,
    enabled: bool,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        let bar = (enabled && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar, status: Arc::new(Mutex::new(String::new())), enabled }
    }

    /// A line above the status line (or on its own without a terminal).
    fn say(&self, line: impl AsRef<str>) {
        if !self.enabled {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(line.as_ref()),
            None => eprintln!("{}", line.as_ref()),
        }
    }

    /// What the demo is doing now (shown on the status line).
    fn status(&self, s: impl Into<String>) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = s.into();
    }

    /// Shows the load's rate while the demo runs: on the status line
    /// (refreshed 4 times a second) on a terminal, else a plain line every
    /// 2 seconds.
    fn follow(&self, load: Arc<Load>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.enabled {
            return None;
        }
        let bar = self.bar.clone();
        let status = self.status.clone();
        let period = if bar.is_some() { Duration::from_millis(250) } else { Duration::from_secs(2) };
        Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            let (mut last_ok, mut last_at) = (load.ok(), Instant::now());
            loop {
                ticker.tick().await;
                let (ok, now) = (load.ok(), Instant::now());
                let rate = (ok - last_ok) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-3);
                (last_ok, last_at) = (ok, now);
                let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let line = format!("{s}  |  {rate:>5.0} ops/s  ok {ok}  failed {}", load.failed());
                match &bar {
                    Some(bar) => bar.set_message(line),
                    None => eprintln!("  {line}"),
                }
            }
        }))
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One node slot: its fixed addresses and data dir, and the running node.
struct Slot {
    id: String,
    data: PathBuf,
    listen: String,
    admin: String,
    node: Option<NodeHandle>,
}

/// The demo's cluster: the embedded metadata store, the cluster secret and
/// admin token every node starts with, and one slot per node.
struct Cluster {
    store: Arc<dyn MetaStore>,
    secret: ClusterSecret,
    token: String,
    tls: tls::DemoTls,
    slots: Vec<Slot>,
    restarts: Vec<RestartTime>,
    marks: Vec<RestartMarks>,
}

impl Cluster {
    /// A cluster of `nodes` slots with loopback addresses, its data under
    /// `root`; no node runs yet.
    async fn set_up(root: &Path, nodes: usize) -> Result<Cluster, DemoError> {
        let store = rollgate::store::open(&format!("redb:{}", root.join("meta.redb").display()), Default::default())
            .await
            .map_err(|e| DemoError::Setup(format!("embedded metadata store: {e}")))?;
        let secret = cluster_secret(root)?;
        let token = format!("demo-{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
        let mut slots = Vec::new();
        for i in 1..=nodes {
            slots.push(Slot {
                id: format!("n{i}"),
                data: root.join(format!("n{i}")),
                listen: free_addr()?,
                admin: free_addr()?,
                node: None,
            });
        }
        let ids: Vec<String> = slots.iter().map(|s| s.id.clone()).collect();
        let tls = tls::DemoTls::make(root, &ids)?;
        Ok(Cluster { store, secret, token, tls, slots, restarts: Vec::new(), marks: Vec::new() })
    }

    /// Starts the node of slot `i` as `release` and waits until it serves.
    async fn start(&mut self, i: usize, release: &'static Release) -> Result<(), DemoError> {
        let slot = &self.slots[i];
        let mut config = NodeConfig::new(release, &slot.data, &slot.listen, &slot.admin);
        config.node_id = Some(slot.id.clone());
        config.cluster_secret = Some(self.secret.clone());
        config.admin_token = Some(self.token.clone());
        config.tls = Some(self.tls.files(&slot.id));
        let node = start(config, &self.store, &slot.id).await?;
        self.slots[i].node = Some(node);
        Ok(())
    }

    /// The HTTP addresses of the nodes.
    fn admins(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.admin.clone()).collect()
    }

    /// The rolling upgrade, one node at a time: stop it, leave it down for
    /// `downtime` while the others serve, restart it on the same data dir as
    /// `to`, and let every link come up before the next one goes down.
    async fn upgrade(
        &mut self,
        opts: &DemoOptions,
        load: &Load,
        progress: &Progress,
        negotiated: &mut Negotiated,
    ) -> Result<(), DemoError> {
        for i in 0..self.slots.len() {
            let phase = format!("upgrade {} to {}", self.slots[i].id, opts.to.name);
            load.begin(&phase);
            progress.say(format!("phase: {phase}"));
            progress.status(format!("{phase}: stopping"));
            let stopping = Instant::now();
            if let Some(node) = self.slots[i].node.take() {
                node.stop()
                    .await
                    .map_err(|e| DemoError::Node { node: self.slots[i].id.clone(), reason: e.to_string() })?;
            }
            let down = Instant::now();
            progress.status(format!("{phase}: down, the others serve"));
            tokio::time::sleep(opts.downtime).await;
            progress.status(format!("{phase}: starting on the same data dir, catching up"));
            let starting = Instant::now();
            self.start(i, opts.to).await?;
            let ready = Instant::now();
            self.restarts.push(RestartTime {
                node: self.slots[i].id.clone(),
                down_ms: starting.saturating_duration_since(down).as_millis() as u64,
                ready_ms: ready.saturating_duration_since(starting).as_millis() as u64,
            });
            let node = self.slots[i].id.clone();
            self.marks.push(RestartMarks { node, stopping, stopped: down, starting, ready });
            // Let the restarted node's links come up before the next one goes down.
            for slot in self.slots.iter() {
                if let Some(n) = &slot.node {
                    for other in self.slots.iter().filter(|o| o.id != slot.id) {
                        let _ = n.wait_peer(&other.id, Duration::from_secs(10)).await;
                    }
                }
            }
            observe(&self.slots, &phase, negotiated);
            progress.say(format!("  {} runs {} and serves", self.slots[i].id, opts.to.name));
        }
        Ok(())
    }

    /// Checks that every acknowledged write in `expected` is readable from
    /// every node, once replication drained: the number of keys lost.
    async fn verify(&self, expected: &Expected, progress: &Progress, problems: &mut Vec<String>) -> u64 {
        progress.status("verifying every acknowledged write on every node");
        for slot in &self.slots {
            if let Some(n) = &slot.node
                && !n.flush_replication(Duration::from_secs(30)).await
            {
                problems.push(format!("{}: replication did not drain within 30 s", slot.id));
            }
        }
        let (lost, lost_examples) = verify(&self.slots, expected, Some(self.tls.client.clone())).await;
        problems.extend(lost_examples);
        progress.say(format!("verified {} keys on {} nodes: {lost} lost", expected.len(), self.slots.len()));
        lost
    }

    /// The release each running node runs as.
    fn releases(&self) -> Vec<String> {
        self.slots.iter().filter_map(|s| s.node.as_ref().map(|n| n.release().name.to_string())).collect()
    }

    /// Stops every node gracefully.
    async fn stop(&mut self, problems: &mut Vec<String>) {
        for slot in &mut self.slots {
            if let Some(node) = slot.node.take()
                && let Err(e) = node.stop().await
            {
                problems.push(format!("stopping {}: {e}", slot.id));
            }
        }
    }
}

/// The versions agreed between nodes, by (node, peer, release, peer release).
type Negotiated = BTreeMap<(String, String, String, String), Negotiation>;

/// The service formats at the end, and the release floor raised: every
/// member runs the target and its stable flags are on, so no way back is
/// needed any more and the floor goes up (older nodes are refused).
async fn finalize(
    admin: &Admin,
    first_admin: &str,
    opts: &DemoOptions,
    progress: &Progress,
    problems: &mut Vec<String>,
) -> (Vec<String>, Option<String>) {
    let service_formats = admin.service_formats(first_admin).await.unwrap_or_else(|e| {
        problems.push(format!("service formats: {e}"));
        Vec::new()
    });
    let release_floor = match admin.finalize(first_admin, opts.to.name).await {
        Ok(floor) => {
            progress.say(format!("phase: finalize: release floor {floor}"));
            Some(floor)
        }
        Err(e) => {
            problems.push(format!("finalize: {e}"));
            None
        }
    };
    (service_formats, release_floor)
}

/// Runs the demo.
pub async fn run(opts: DemoOptions) -> Result<DemoReport, DemoError> {
    check(&opts)?;
    let started = Instant::now();
    let (root, _tmp) = data_root(opts.dir.as_deref())?;
    let progress = Progress::new(opts.progress);
    progress.say(format!(
        "rollgate-kv demo: {} nodes, {} -> {}, data in {} (seed {})",
        opts.nodes,
        opts.from.name,
        opts.to.name,
        root.display(),
        opts.seed
    ));
    let mut cluster = Cluster::set_up(&root, opts.nodes).await?;

    // Phase 0: the cluster at the old release.
    for i in 0..cluster.slots.len() {
        progress.say(format!("starting {} as {}", cluster.slots[i].id, opts.from.name));
        cluster.start(i, opts.from).await?;
    }
    let https = Some(cluster.tls.client.clone());
    let client = Arc::new(
        KvClient::new(&cluster.admins(), load_client_options(https.clone()))
            .map_err(|e| DemoError::Setup(e.to_string()))?,
    );
    let admin = Admin::new(&cluster.token, Some(&cluster.tls.client));
    let mut negotiated = Negotiated::new();
    let mut problems = Vec::new();

    let steady_from = format!("steady at {}", opts.from.name);
    let load = Load::new(&steady_from);
    let workers = spawn_workers(&cluster.admins(), &opts, &load, load_client_options(https.clone()))?;
    let follower = progress.follow(load.clone());
    progress.status(steady_from.clone());
    progress.say(format!("phase: {steady_from} ({} workers)", opts.workers));
    tokio::time::sleep(opts.steady).await;
    observe(&cluster.slots, &steady_from, &mut negotiated);

    cluster.upgrade(&opts, &load, &progress, &mut negotiated).await?;
    let steady_to = format!("steady at {}", opts.to.name);
    load.begin(&steady_to);
    progress.status(steady_to.clone());
    progress.say(format!("phase: {steady_to}"));
    tokio::time::sleep(opts.steady / 2).await;

    let first_admin = cluster.slots[0].admin.clone();
    let (enabled_by_demo, migrations_done) = operator_step(&admin, &first_admin, &load, &progress, &mut problems).await;
    let (service_formats, release_floor) = finalize(&admin, &first_admin, &opts, &progress, &mut problems).await;

    // Use what the upgrade unlocked.
    load.begin("new features");
    progress.status("new features");
    let features_used = admin.use_new_features(&client, &first_admin, &load).await;
    progress.say(format!(
        "phase: new features: {}",
        if features_used.is_empty() { "none available".to_string() } else { features_used.join("; ") }
    ));
    tokio::time::sleep(opts.steady / 2).await;
    load.end();

    let expected = stop_load(&load, workers, follower, &admin, &mut problems).await;
    let upgrade_windows = load::upgrade_windows(&load, &cluster.marks, Instant::now());
    let lost = cluster.verify(&expected, &progress, &mut problems).await;
    observe(&cluster.slots, "end", &mut negotiated);

    let flags_enabled = admin.enabled_flags(&first_admin).await.unwrap_or_else(|e| {
        problems.push(format!("listing flags: {e}"));
        Vec::new()
    });
    let final_releases = cluster.releases();
    let tls_everywhere = !negotiated.is_empty() && negotiated.values().all(|n| n.tls);
    problems.extend(load.failures());
    progress.finish();
    cluster.stop(&mut problems).await;

    Ok(DemoReport {
        ops_ok: load.ok(),
        ops_failed: load.failed(),
        acked_writes_lost: lost,
        keys_checked: expected.len() as u64,
        reads_checked: load.reads_checked(),
        missed_reads: load.missed_reads(),
        final_releases,
        flags_enabled,
        flags_enabled_by_demo: enabled_by_demo,
        phases: load.reports(),
        upgrade_impact: UpgradeImpact::of(&load),
        negotiated: negotiated.into_values().collect(),
        features_used,
        migrations_done,
        release_floor,
        service_formats,
        problems,
        nodes: opts.nodes,
        from: opts.from.name.to_string(),
        to: opts.to.name.to_string(),
        seed: opts.seed,
        duration_ms: started.elapsed().as_millis() as u64,
        tls: tls_everywhere,
        restarts: cluster.restarts,
        upgrade_windows,
    })
}

/// The load's workers, each with its own client starting at another node:
/// the load is spread over the nodes, as many clients spread it.
fn spawn_workers(
    admins: &[String],
    opts: &DemoOptions,
    load: &Arc<Load>,
    options: ClientOptions,
) -> Result<Vec<tokio::task::JoinHandle<Expected>>, DemoError> {
    let clients = load::spread_clients(admins, opts.workers, options).map_err(|e| DemoError::Setup(e.to_string()))?;
    Ok((clients.into_iter().enumerate())
        .map(|(w, c)| tokio::spawn(load::worker(w, load.clone(), c, opts.seed, opts.op_interval, String::new())))
        .collect())
}

/// Checks the options; the error says which one is wrong and why.
fn check(opts: &DemoOptions) -> Result<(), DemoError> {
    if !(MIN_NODES..=MAX_NODES).contains(&opts.nodes) {
        return Err(DemoError::Options(format!(
            "--nodes {} is out of range: use {MIN_NODES} to {MAX_NODES} (a majority must stay up while one node restarts)",
            opts.nodes
        )));
    }
    if opts.workers == 0 || opts.workers > 64 {
        return Err(DemoError::Options("--workers must be between 1 and 64".into()));
    }
    if opts.from.protocols.highest_common(opts.to.protocols).is_none()
        || opts.from.transport < opts.to.minimum_compatible
    {
        return Err(DemoError::Options(format!(
            "release {} cannot run next to {} (no common protocol version or transport below the minimum compatible), so a rolling upgrade between them is impossible: upgrade through an intermediate release",
            opts.from.name, opts.to.name
        )));
    }
    Ok(())
}

/// Where the demo keeps its data: `dir` (created when missing), else a
/// temporary dir, removed when the returned guard is dropped.
fn data_root(dir: Option<&Path>) -> Result<(PathBuf, Option<tempfile::TempDir>), DemoError> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| DemoError::Setup(format!("{}: {e}", d.display())))?;
            Ok((d.to_path_buf(), None))
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("rollgate-kv-demo-")
                .tempdir()
                .map_err(|e| DemoError::Setup(format!("temporary dir: {e}")))?;
            Ok((tmp.path().to_path_buf(), Some(tmp)))
        }
    }
}

/// The operator step: enable every stable flag, then let the migrations
/// they unlock run. The flags it enabled and the migrations that finished.
async fn operator_step(
    admin: &Admin,
    addr: &str,
    load: &Load,
    progress: &Progress,
    problems: &mut Vec<String>,
) -> (Vec<String>, Vec<String>) {
    load.begin("enable stable flags");
    progress.status("enable stable flags");
    let mut enabled_by_demo = Vec::new();
    match admin.enable_all(addr).await {
        Ok(enabled) => {
            progress.say(format!(
                "phase: enable stable flags: {}",
                if enabled.is_empty() { "none to enable".to_string() } else { enabled.join(", ") }
            ));
            enabled_by_demo = enabled;
        }
        Err(e) => problems.push(format!("enabling flags: {e}")),
    }
    load.begin("migrations");
    progress.say("phase: migrations");
    let migrations_done = match admin.wait_migrations(addr, WAIT, |p| progress.status(p)).await {
        Ok(done) => {
            for d in &done {
                progress.say(format!("  migration {d} done"));
            }
            done
        }
        Err(e) => {
            problems.push(format!("migrations: {e}"));
            Vec::new()
        }
    };
    (enabled_by_demo, migrations_done)
}

/// Stops the load and gathers what the workers and the feature step had
/// acknowledged.
async fn stop_load(
    load: &Load,
    workers: Vec<tokio::task::JoinHandle<Expected>>,
    follower: Option<tokio::task::JoinHandle<()>>,
    admin: &Admin,
    problems: &mut Vec<String>,
) -> Expected {
    load.stop();
    let mut expected = Expected::new();
    for w in workers {
        match w.await {
            Ok(e) => expected.extend(e),
            Err(e) => problems.push(format!("a load worker failed: {e}")),
        }
    }
    expected.extend(admin.take_feature_writes());
    if let Some(f) = follower {
        f.abort();
    }
    expected
}

/// Starts a node and waits until it serves.
async fn start(config: NodeConfig, store: &Arc<dyn MetaStore>, id: &str) -> Result<NodeHandle, DemoError> {
    let node = node::start(config, store.clone())
        .await
        .map_err(|e| DemoError::Node { node: id.to_string(), reason: e.to_string() })?;
    if !node.wait_ready(WAIT).await {
        return Err(DemoError::Node {
            node: id.to_string(),
            reason: format!("not ready after {} s (catching up)", WAIT.as_secs()),
        });
    }
    Ok(node)
}

/// A free loopback address (the port is reused when the node restarts).
fn free_addr() -> Result<String, DemoError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| DemoError::Setup(format!("loopback port: {e}")))?;
    let addr = l.local_addr().map_err(|e| DemoError::Setup(e.to_string()))?;
    Ok(addr.to_string())
}

/// A generated cluster secret in the data dir (the handshakes are
/// authenticated, as they should be in production).
fn cluster_secret(root: &Path) -> Result<ClusterSecret, DemoError> {
    let path = root.join("cluster.secret");
    let secret: String = (0..4).map(|_| format!("{:016x}", rand::random::<u64>())).collect();
    let _ = std::fs::remove_file(&path); // a kept data dir (--keep) gets a new secret
    rollgate_certs::write_private(&path, &secret).map_err(|e| DemoError::Setup(e.to_string()))?;
    ClusterSecret::from_file(&path).map_err(|e| DemoError::Setup(e.to_string()))
}

/// Records the versions each connected pair agreed on.
fn observe(slots: &[Slot], phase: &str, out: &mut Negotiated) {
    for slot in slots {
        let Some(node) = &slot.node else { continue };
        for p in node.peers() {
            let (Some(protocol), Some(transport)) = (p.protocol, p.transport) else { continue };
            let n = Negotiation {
                from: node.release().name.to_string(),
                to: p.release.clone().unwrap_or_default(),
                protocol,
                transport,
                from_node: slot.id.clone(),
                to_node: p.node_id.clone(),
                authenticated: p.authenticated.unwrap_or(false),
                tls: p.tls.unwrap_or(false),
                phase: phase.to_string(),
            };
            out.entry((n.from_node.clone(), n.to_node.clone(), n.from.clone(), n.to.clone())).or_insert(n);
        }
    }
}

/// The load's client: quick to give up on one node, patient with the
/// cluster (six rounds over every node ride out a node's restart).
fn load_client_options(tls: Option<Arc<rustls::ClientConfig>>) -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(4),
        connect_timeout: Duration::from_millis(500),
        rounds: 6,
        round_backoff: Duration::from_millis(100),
        tls,
        ..ClientOptions::default()
    }
}

//! `rollgate-kv load`: the demo's client load against a cluster that runs
//! elsewhere (separate `rollgate-kv serve` processes on etcd, say), so an
//! operator can roll an upgrade by hand under load and then check that no
//! acknowledged write was lost.
//!
//! The workers are the demo's: each writes, overwrites, deletes and reads its
//! own keys (all under one prefix) through a failover client and remembers
//! what each key must hold. When the load stops (after `--ops`, after
//! `--duration`, or on Ctrl-C) every key is read from every node on its own.
//! Writes are acknowledged by a majority, so a node may apply the newest
//! ones a little later: a key that is wrong somewhere is read again until
//! the settle time is over, and only then counted as lost.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::load::{self, Expected, Load, PhaseReport};
use super::{DemoError, Progress};
use crate::client::KvClient;

/// Most workers.
pub const MAX_WORKERS: usize = 64;
/// Highest target rate, in operations per second.
pub const MAX_RATE: u64 = 100_000;
/// Longest `--duration` and `--settle`.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Most operations (`--ops`).
pub const MAX_OPS: u64 = 100_000_000;
/// Longest key prefix, in bytes.
pub const MAX_PREFIX: usize = 64;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The nodes' HTTP addresses; the load fails over between them, and the
    /// check reads from each.
    pub nodes: Vec<String>,
    /// Concurrent workers.
    pub workers: usize,
    /// Target operations per second, all workers together.
    pub rate: u64,
    /// Stop after this many operations.
    pub ops: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// How long a key that is wrong on some node is read again before it
    /// counts as lost.
    pub settle: Duration,
    /// Seed of the workers' choices.
    pub seed: u64,
    /// Every key starts with this (letters, digits, `.`, `_`, `-`).
    pub prefix: String,
    /// Progress on stderr.
    pub progress: bool,
    /// HTTPS towards the nodes (`--ca-file`, optionally a client certificate).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl LoadOptions {
    /// Checks every limit; the error says which option is wrong and why.
    pub fn validate(&self) -> Result<(), DemoError> {
        let bad = |m: String| Err(DemoError::Options(m));
        if self.nodes.is_empty() {
            return bad("give at least one node (--node)".into());
        }
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return bad(format!("--workers must be between 1 and {MAX_WORKERS}"));
        }
        if self.rate == 0 || self.rate > MAX_RATE {
            return bad(format!("--rate must be between 1 and {MAX_RATE} operations per second"));
        }
        if let Some(n) = self.ops
            && (n == 0 || n > MAX_OPS)
        {
            return bad(format!("--ops must be between 1 and {MAX_OPS}"));
        }
        if let Some(d) = self.duration
            && (d.is_zero() || d > MAX_DURATION)
        {
            return bad("--duration must be between 1 s and 24 h".into());
        }
        if self.settle > MAX_DURATION {
            return bad("--settle must be at most 24 h".into());
        }
        if self.prefix.is_empty()
            || self.prefix.len() > MAX_PREFIX
            || !self.prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return bad(format!(
                "--prefix must be 1 to {MAX_PREFIX} letters, digits, `.`, `_` or `-` (got {:?})",
                rollgate::util::shorten_to(&self.prefix, 80)
            ));
        }
        Ok(())
    }
}

/// Why the load stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoppedBy {
    /// `--ops` operations were done.
    Ops,
    /// `--duration` was over.
    Duration,
    /// The caller's stop signal (Ctrl-C).
    Interrupt,
}

/// What a load run did and found.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// The nodes, as given.
    pub nodes: Vec<String>,
    /// The key prefix.
    pub prefix: String,
    /// The seed.
    pub seed: u64,
    /// Why the load stopped.
    pub stopped_by: StoppedBy,
    /// Operations and latencies.
    pub load: PhaseReport,
    /// Operations acknowledged (or read) by the cluster.
    pub ops_ok: u64,
    /// Operations that failed on every node the client tried.
    pub ops_failed: u64,
    /// Keys checked on every node.
    pub keys_checked: u64,
    /// Reads of a key the worker had written, checked against its last
    /// acknowledged write (read-your-writes).
    pub reads_checked: u64,
    /// Of those, reads that missed the acknowledged write.
    pub missed_reads: u64,
    /// Keys whose last acknowledged write some node still did not return
    /// after the settle time.
    pub acked_writes_lost: u64,
    /// Time the check took, in milliseconds (settling included).
    pub verify_ms: u64,
    /// Failed operations and lost keys: a few examples of each.
    pub problems: Vec<String>,
}

impl LoadReport {
    /// True when nothing failed, nothing acknowledged was lost and no read missed one.
    pub fn passed(&self) -> bool {
        self.ops_failed == 0 && self.acked_writes_lost == 0 && self.missed_reads == 0
    }
}

/// Runs the load until `--ops`, `--duration` or `interrupt` (whichever comes
/// first), then checks every acknowledged write on every node.
pub async fn run(opts: LoadOptions, interrupt: impl Future<Output = ()>) -> Result<LoadReport, DemoError> {
    opts.validate()?;
    let client = Arc::new(
        KvClient::new(&opts.nodes, super::load_client_options(opts.tls.clone()))
            .map_err(|e| DemoError::Options(e.to_string()))?,
    );
    let progress = Progress::new(opts.progress);
    let until = match (opts.ops, opts.duration) {
        (Some(n), Some(d)) => format!("{n} operations or {} s", d.as_secs()),
        (Some(n), None) => format!("{n} operations"),
        (None, Some(d)) => format!("{} s", d.as_secs()),
        (None, None) => "Ctrl-C".into(),
    };
    progress.say(format!(
        "rollgate-kv load: {} workers, {} ops/s, keys {}*, seed {}, until {until}",
        opts.workers, opts.rate, opts.prefix, opts.seed
    ));
    let every = Duration::from_secs_f64(opts.workers as f64 / opts.rate as f64);
    let load = Load::new("load");
    let workers: Vec<_> = (0..opts.workers)
        .map(|w| {
            let prefix = opts.prefix.clone();
            tokio::spawn(load::worker(w, load.clone(), client.clone(), opts.seed, every, prefix))
        })
        .collect();
    progress.status("load");
    let follower = progress.follow(load.clone());

    let started = Instant::now();
    let mut interrupt = std::pin::pin!(interrupt);
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    let stopped_by = loop {
        if opts.ops.is_some_and(|n| load.ok() + load.failed() >= n) {
            break StoppedBy::Ops;
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break StoppedBy::Duration;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut interrupt => break StoppedBy::Interrupt,
        }
    };
    load.stop();
    let mut expected = Expected::new();
    for w in workers {
        match w.await {
            Ok(e) => expected.extend(e),
            Err(e) => return Err(DemoError::Load(format!("a worker stopped: {e}"))),
        }
    }
    load.end();
    if let Some(f) = follower {
        f.abort();
    }

    progress.status(format!("checking {} keys on {} nodes", expected.len(), opts.nodes.len()));
    progress.say(format!("load stopped ({stopped_by:?}); checking {} keys on every node", expected.len()));
    let verify_started = Instant::now();
    let (lost, lost_examples) = settle(&opts.nodes, &expected, opts.settle, opts.tls.clone()).await;
    progress.say(format!("checked {} keys on {} nodes: {lost} lost", expected.len(), opts.nodes.len()));
    progress.finish();

    let mut problems = load.failures();
    problems.extend(lost_examples);
    Ok(LoadReport {
        nodes: opts.nodes.clone(),
        prefix: opts.prefix.clone(),
        seed: opts.seed,
        stopped_by,
        load: load.merged("load", |_| true),
        ops_ok: load.ok(),
        ops_failed: load.failed(),
        keys_checked: expected.len() as u64,
        reads_checked: load.reads_checked(),
        missed_reads: load.missed_reads(),
        acked_writes_lost: lost,
        verify_ms: verify_started.elapsed().as_millis() as u64,
        problems,
    })
}

/// Checks every key on every node; keys wrong somewhere are checked again
/// (every 200 ms) until they are right or `settle` is over.
async fn settle(
    nodes: &[String],
    expected: &Expected,
    settle: Duration,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> (u64, Vec<String>) {
    let pairs: Vec<(String, String)> = nodes.iter().map(|n| (n.clone(), n.clone())).collect();
    let deadline = Instant::now() + settle;
    let mut todo = expected.clone();
    loop {
        let (wrong, examples) = super::verify_keys(&pairs, &todo, tls.clone()).await;
        if wrong.is_empty() || Instant::now() >= deadline {
            return (wrong.len() as u64, examples);
        }
        let wrong: BTreeSet<String> = wrong.into_iter().collect();
        todo.retain(|k, _| wrong.contains(k));
        tokio::time::sleep(Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// The report as text, for a terminal.
pub fn render(r: &LoadReport) -> String {
    let l = &r.load;
    let mut out = format!(
        "load on {}: {} ok, {} failed in {:.1} s ({:.0} ops/s; p50 {} ms, p99 {} ms, max {} ms)\n\
         checked {} keys on every node in {:.1} s: {} lost\n\
         reads of acknowledged writes: {} checked, {} missed\n",
        r.nodes.join(","),
        r.ops_ok,
        r.ops_failed,
        l.duration_ms as f64 / 1000.0,
        l.ops_per_s,
        l.p50_ms,
        l.p99_ms,
        l.max_ms,
        r.keys_checked,
        r.verify_ms as f64 / 1000.0,
        r.acked_writes_lost,
        r.reads_checked,
        r.missed_reads,
    );
    for p in &r.problems {
        out.push_str(&format!("  problem: {p}\n"));
    }
    out.push_str(if r.passed() {
        "PASSED: no failed operation, no lost acknowledged write, no missed read\n"
    } else {
        "FAILED: see the problems above\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LoadOptions {
        LoadOptions {
            nodes: vec!["127.0.0.1:1".into()],
            workers: 4,
            rate: 200,
            ops: Some(100),
            duration: None,
            settle: Duration::from_secs(5),
            seed: 1,
            prefix: "load-1-".into(),
            progress: false,
            tls: None,
        }
    }

    type Change = Box<dyn Fn(&mut LoadOptions)>;

    #[test]
    fn every_limit_is_checked_and_named() {
        assert!(opts().validate().is_ok());
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|o| o.nodes.clear()), "--node"),
            (Box::new(|o| o.workers = 0), "--workers"),
            (Box::new(|o| o.workers = MAX_WORKERS + 1), "--workers"),
            (Box::new(|o| o.rate = 0), "--rate"),
            (Box::new(|o| o.rate = MAX_RATE + 1), "--rate"),
            (Box::new(|o| o.ops = Some(0)), "--ops"),
            (Box::new(|o| o.ops = Some(MAX_OPS + 1)), "--ops"),
            (Box::new(|o| o.duration = Some(Duration::ZERO)), "--duration"),
            (Box::new(|o| o.duration = Some(MAX_DURATION * 2)), "--duration"),
            (Box::new(|o| o.settle = MAX_DURATION * 2), "--settle"),
            (Box::new(|o| o.prefix.clear()), "--prefix"),
            (Box::new(|o| o.prefix = "a/b".into()), "--prefix"),
            (Box::new(|o| o.prefix = "x".repeat(MAX_PREFIX + 1)), "--prefix"),
            (Box::new(|o| o.prefix = "é".into()), "--prefix"),
        ];
        for (change, option) in cases {
            let mut o = opts();
            change(&mut o);
            let err = o.validate().unwrap_err().to_string();
            assert!(err.contains(option), "{option}: {err}");
        }
    }
}

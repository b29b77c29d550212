//! The demo's client load: a few workers writing, overwriting, deleting and
//! reading their own keys through a [`KvClient`] with failover, recording
//! every acknowledged write and every operation's latency per phase.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::KvClient;

/// Largest number of latency samples kept per phase (later ones are dropped;
/// the counts still include them).
const MAX_SAMPLES_PER_PHASE: usize = 1_000_000;

/// Operations and latencies of one phase.
#[derive(Debug, Default)]
struct PhaseStats {
    name: String,
    ops: u64,
    failed: u64,
    started: Option<Instant>,
    ended: Option<Instant>,
    micros: Vec<u32>,
    /// When each sampled operation started, in milliseconds since the load
    /// started (parallel to `micros`), for [`Load::window`].
    started_ms: Vec<u32>,
}

/// One phase's summary, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseReport {
    /// The phase's name.
    pub name: String,
    /// Operations that completed (acknowledged or read) in the phase.
    pub ops: u64,
    /// Operations that failed on every node.
    pub failed: u64,
    /// Wall time of the phase, in milliseconds.
    pub duration_ms: u64,
    /// Completed operations per second.
    pub ops_per_s: f64,
    /// Median latency, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Highest latency, in milliseconds.
    pub max_ms: f64,
}

/// What each key should hold after every acknowledged operation: `Some`
/// after a put, `None` after a delete.
pub type Expected = BTreeMap<String, Option<Vec<u8>>>;

/// The shared state of a running load.
#[derive(Debug)]
pub struct Load {
    origin: Instant,
    phases: Mutex<Vec<PhaseStats>>,
    current: AtomicUsize,
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    reads_checked: AtomicU64,
    missed_reads: AtomicU64,
}

/// Keeps at most this many failure messages for the report.
const MAX_FAILURE_MESSAGES: usize = 20;

impl Load {
    /// A load whose first phase is `first`.
    pub fn new(first: &str) -> Arc<Load> {
        let load = Arc::new(Load {
            origin: Instant::now(),
            phases: Mutex::new(Vec::new()),
            current: AtomicUsize::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            failures: Mutex::new(Vec::new()),
            reads_checked: AtomicU64::new(0),
            missed_reads: AtomicU64::new(0),
        });
        load.begin(first);
        load
    }

    /// Ends the current phase and starts `name`.
    pub fn begin(&self, name: &str) {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(last) = phases.last_mut() {
            last.ended = Some(now);
        }
        phases.push(PhaseStats { name: name.to_string(), started: Some(now), ..PhaseStats::default() });
        self.current.store(phases.len() - 1, Ordering::SeqCst);
    }

    /// Ends the current phase (the load keeps running until [`Load::stop`]).
    pub fn end(&self) {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = phases.last_mut() {
            last.ended.get_or_insert_with(Instant::now);
        }
    }

    fn record(&self, phase: usize, took: Duration, ok: bool, failure: Option<String>) {
        let started = Instant::now().checked_sub(took).unwrap_or(self.origin);
        self.record_started(phase, started, took, ok, failure);
    }

    fn record_started(&self, phase: usize, started: Instant, took: Duration, ok: bool, failure: Option<String>) {
        let started_ms = started.saturating_duration_since(self.origin).as_millis().min(u32::MAX as u128) as u32;
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let Some(p) = phases.get_mut(phase) else { return };
        if ok {
            p.ops += 1;
            self.ok.fetch_add(1, Ordering::Relaxed);
            if p.micros.len() < MAX_SAMPLES_PER_PHASE {
                p.micros.push(took.as_micros().min(u32::MAX as u128) as u32);
                p.started_ms.push(started_ms);
            }
        } else {
            p.failed += 1;
            self.failed.fetch_add(1, Ordering::Relaxed);
            drop(phases);
            if let Some(f) = failure {
                let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
                if failures.len() < MAX_FAILURE_MESSAGES {
                    failures.push(f);
                }
            }
        }
    }

    /// Counts a read of a key whose acknowledged write the worker knows;
    /// `missed` says what it should have read, when it did not.
    fn note_read(&self, missed: Option<String>) {
        self.reads_checked.fetch_add(1, Ordering::Relaxed);
        if let Some(what) = missed {
            self.missed_reads.fetch_add(1, Ordering::Relaxed);
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if failures.len() < MAX_FAILURE_MESSAGES {
                failures.push(what);
            }
        }
    }

    /// Reads checked against the worker's own acknowledged writes.
    pub fn reads_checked(&self) -> u64 {
        self.reads_checked.load(Ordering::Relaxed)
    }

    /// Of those, reads that missed the acknowledged write (a stale read).
    pub fn missed_reads(&self) -> u64 {
        self.missed_reads.load(Ordering::Relaxed)
    }

    /// Records an operation the demo itself made, in the current phase.
    pub fn record_now(&self, took: Duration, ok: bool, failure: Option<String>) {
        self.record(self.current.load(Ordering::SeqCst), took, ok, failure);
    }

    /// Operations completed so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Operations failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The first failure messages.
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks the workers to stop after their current operation.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Every phase's summary, in order.
    pub fn reports(&self) -> Vec<PhaseReport> {
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        phases.iter().map(summarize).collect()
    }

    /// One summary over every phase whose name `matches`, as if they were
    /// one phase (`name` names it).
    pub fn merged(&self, name: &str, matches: impl Fn(&str) -> bool) -> PhaseReport {
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = PhaseStats { name: name.to_string(), ..PhaseStats::default() };
        let mut duration = Duration::ZERO;
        for p in phases.iter().filter(|p| matches(&p.name)) {
            all.ops += p.ops;
            all.failed += p.failed;
            all.micros.extend_from_slice(&p.micros);
            if let (Some(s), Some(e)) = (p.started, p.ended) {
                duration += e.saturating_duration_since(s);
            }
        }
        let now = Instant::now();
        all.started = Some(now);
        all.ended = Some(now + duration);
        summarize(&all)
    }

    /// One summary of the operations that started in `[from, to)`, whatever
    /// their phase (`name` names it): a part of a phase, or a window across
    /// phases, to see where in a phase its tail comes from.
    pub fn window(&self, name: &str, from: Instant, to: Instant) -> PhaseReport {
        let ms = |t: Instant| t.saturating_duration_since(self.origin).as_millis().min(u32::MAX as u128) as u32;
        let (lo, hi) = (ms(from), ms(to));
        let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let mut all =
            PhaseStats { name: name.to_string(), started: Some(from), ended: Some(to), ..PhaseStats::default() };
        for p in phases.iter() {
            for (at, micros) in p.started_ms.iter().zip(&p.micros) {
                if (lo..hi).contains(at) {
                    all.ops += 1;
                    all.micros.push(*micros);
                }
            }
        }
        summarize(&all)
    }
}

fn summarize(p: &PhaseStats) -> PhaseReport {
    let mut v = p.micros.clone();
    v.sort_unstable();
    let pct = |q: usize| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let i = (v.len() * q / 100).min(v.len() - 1);
        v[i] as f64 / 1000.0
    };
    let duration = match (p.started, p.ended) {
        (Some(s), Some(e)) => e.saturating_duration_since(s),
        (Some(s), None) => s.elapsed(),
        _ => Duration::ZERO,
    };
    let secs = duration.as_secs_f64();
    PhaseReport {
        name: p.name.clone(),
        ops: p.ops,
        failed: p.failed,
        duration_ms: duration.as_millis() as u64,
        ops_per_s: if secs > 0.0 { p.ops as f64 / secs } else { 0.0 },
        p50_ms: round2(pct(50)),
        p99_ms: round2(pct(99)),
        max_ms: round2(v.last().map(|m| *m as f64 / 1000.0).unwrap_or(0.0)),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A restarted node's timing (see [`crate::demo::DemoReport::restarts`]).
#[derive(Clone, Debug, Serialize)]
pub struct RestartTime {
    /// The node.
    pub node: String,
    /// How long it was down, in milliseconds.
    pub down_ms: u64,
    /// From its start to serving (data dir, join, catch-up), in milliseconds.
    pub ready_ms: u64,
}

/// When one node's upgrade went through its steps, to break the upgrade
/// window's latency down ([`upgrade_windows`]).
#[derive(Clone, Debug)]
pub struct RestartMarks {
    /// The node.
    pub node: String,
    /// Asked to stop.
    pub stopping: Instant,
    /// Stopped (down from here).
    pub stopped: Instant,
    /// Started again (opening its data dir, joining, catching up).
    pub starting: Instant,
    /// Serving again.
    pub ready: Instant,
}

/// How long after a restarted node serves again [`upgrade_windows`] looks.
pub const AFTER_READY: Duration = Duration::from_secs(2);

/// The upgrade window of each restarted node broken down by the operations'
/// start: `stopping`, `down`, `catching up` (start to serving) and the first
/// [`AFTER_READY`] after it serves (which overlaps the next node's stop,
/// or the steady state after the last one), cut at `until` (the load's end).
pub fn upgrade_windows(load: &Load, marks: &[RestartMarks], until: Instant) -> Vec<PhaseReport> {
    let mut out = Vec::new();
    for m in marks {
        let after = (m.ready + AFTER_READY).min(until);
        let windows = [
            ("stopping", m.stopping, m.stopped),
            ("down", m.stopped, m.starting),
            ("catching up", m.starting, m.ready),
            ("after ready", m.ready, after),
        ];
        for (what, from, to) in windows {
            out.push(load.window(&format!("{} {what}", m.node), from, to));
        }
    }
    out
}

/// One client per worker over `nodes`, worker `w`'s list starting at node
/// `w % nodes`: each sends to the node that answered it last, so the
/// workers spread over the nodes instead of all following one.
pub fn spread_clients<S: AsRef<str>>(
    nodes: &[S],
    workers: usize,
    options: crate::client::ClientOptions,
) -> Result<Vec<Arc<KvClient>>, crate::client::ClientError> {
    let nodes: Vec<&str> = nodes.iter().map(AsRef::as_ref).collect();
    (0..workers)
        .map(|w| {
            let mut mine = nodes.clone();
            mine.rotate_left(w % nodes.len().max(1));
            KvClient::new(&mine, options.clone()).map(Arc::new)
        })
        .collect()
}

/// A small deterministic generator (xorshift64*), so a run can be repeated
/// from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (zero is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Where the load's operations go: rollgate-kv's failover client, or, for
/// a baseline measured in the same run, another store behind the same
/// three operations (the rolling-upgrade harness runs the load against
/// etcd this way).
pub trait LoadTarget: Send + Sync + 'static {
    /// Stores `value` under `key`; an error says why it was not acknowledged.
    fn put(&self, key: &str, value: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send;
    /// Deletes `key`.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), String>> + Send;
    /// Reads `key`: its value, `None` when not found.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, String>> + Send;
}

impl LoadTarget for KvClient {
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
        KvClient::put(self, key, value, None).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn delete(&self, key: &str) -> Result<(), String> {
        KvClient::delete(self, key).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        KvClient::get(self, key).await.map_err(|e| e.to_string())
    }
}

/// One worker: until the load stops, picks an operation on its own keys
/// (60% new key, 15% overwrite, 5% delete, 20% read), paced by `every`
/// (zero: closed loop, the next operation as soon as one ends). Every key
/// starts with `prefix`. Returns what its keys should hold.
///
/// Only this worker writes its keys, so a read of a key must return what
/// its last acknowledged write stored (read-your-writes): one that does not
/// counts as a missed read ([`Load::missed_reads`]). A key whose last write
/// failed may hold either value until the next acknowledged write, and is
/// not checked meanwhile.
pub async fn worker<T: LoadTarget>(
    id: usize,
    load: Arc<Load>,
    client: Arc<T>,
    seed: u64,
    every: Duration,
    prefix: String,
) -> Expected {
    let mut rng = Rng::new(seed ^ ((id as u64 + 1) * 0x1000_0000_01B3));
    let mut expected = Expected::new();
    let mut keys: Vec<String> = Vec::new();
    // Keys whose last write failed (its outcome unknown).
    let mut unsure: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut seq = 0u64;
    let mut ticker = (!every.is_zero()).then(|| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    while !load.stop.load(Ordering::SeqCst) {
        match ticker.as_mut() {
            Some(t) => {
                t.tick().await;
            }
            None => tokio::task::yield_now().await,
        }
        let phase = load.current.load(Ordering::SeqCst);
        let roll = rng.below(100);
        let started = Instant::now();
        let (ok, failure) = if roll < 60 || keys.is_empty() {
            let key = format!("{prefix}w{id}-{seq:06}");
            seq += 1;
            let value = format!("{key}:{}", rng.next_u64()).into_bytes();
            match client.put(&key, value.clone()).await {
                Ok(()) => {
                    keys.push(key.clone());
                    expected.insert(key, Some(value));
                    (true, None)
                }
                Err(e) => {
                    unsure.insert(key.clone());
                    (false, Some(format!("put {key}: {e}")))
                }
            }
        } else if roll < 75 {
            let key = keys[rng.below(keys.len() as u64) as usize].clone();
            let value = format!("{key}:{}", rng.next_u64()).into_bytes();
            match client.put(&key, value.clone()).await {
                Ok(()) => {
                    unsure.remove(&key);
                    expected.insert(key, Some(value));
                    (true, None)
                }
                Err(e) => {
                    unsure.insert(key.clone());
                    (false, Some(format!("overwrite {key}: {e}")))
                }
            }
        } else if roll < 80 {
            let key = keys[rng.below(keys.len() as u64) as usize].clone();
            match client.delete(&key).await {
                Ok(()) => {
                    unsure.remove(&key);
                    expected.insert(key, None);
                    (true, None)
                }
                Err(e) => {
                    unsure.insert(key.clone());
                    (false, Some(format!("delete {key}: {e}")))
                }
            }
        } else {
            let key = &keys[rng.below(keys.len() as u64) as usize];
            match client.get(key).await {
                Ok(read) => {
                    if let Some(want) = expected.get(key).filter(|_| !unsure.contains(key)) {
                        load.note_read((read != *want).then(|| missed(key, want, &read)));
                    }
                    (true, None)
                }
                Err(e) => (false, Some(format!("get {key}: {e}"))),
            }
        };
        load.record_started(phase, started, started.elapsed(), ok, failure);
    }
    expected
}

/// What a missed read is reported as.
fn missed(key: &str, want: &Option<Vec<u8>>, got: &Option<Vec<u8>>) -> String {
    let show = |v: &Option<Vec<u8>>| match v {
        Some(b) => format!("{:?}", rollgate::util::shorten_to(&String::from_utf8_lossy(b), 48)),
        None => "not found".into(),
    };
    format!("read {key}: missed its acknowledged write ({} expected, {} read)", show(want), show(got))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_per_phase() {
        let load = Load::new("a");
        for ms in 1..=100u64 {
            load.record(0, Duration::from_millis(ms), true, None);
        }
        load.record(0, Duration::from_millis(5), false, Some("boom".into()));
        load.begin("b");
        load.end();
        let r = load.reports();
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].ops, r[0].failed), (100, 1));
        assert_eq!(r[0].p50_ms, 51.0);
        assert_eq!(r[0].p99_ms, 100.0);
        assert_eq!(r[0].max_ms, 100.0);
        assert_eq!((r[1].ops, r[1].p50_ms), (0, 0.0));
        assert_eq!(load.failures(), vec!["boom".to_string()]);
        assert_eq!((load.ok(), load.failed()), (100, 1));
        load.begin("a2");
        for _ in 0..100 {
            load.record_now(Duration::from_millis(200), true, None);
        }
        load.end();
        let m = load.merged("all a", |n| n.starts_with('a'));
        assert_eq!((m.name.as_str(), m.ops, m.failed), ("all a", 200, 1));
        assert_eq!((m.p50_ms, m.p99_ms), (200.0, 200.0));
    }

    /// A window counts the operations that started in it, across phases,
    /// and nothing else.
    #[test]
    fn a_window_counts_the_operations_that_started_in_it_across_phases() {
        let load = Load::new("a");
        let at = |ms: u64| load.origin + Duration::from_millis(ms);
        load.record_started(0, at(100), Duration::from_millis(1), true, None);
        load.record_started(0, at(900), Duration::from_millis(50), true, None);
        load.begin("b");
        load.record_started(1, at(1_100), Duration::from_millis(7), true, None);
        load.record_started(1, at(2_000), Duration::from_millis(3), true, None);
        let w = load.window("w", at(500), at(2_000));
        assert_eq!((w.name.as_str(), w.ops, w.duration_ms), ("w", 2, 1_500));
        assert_eq!((w.p50_ms, w.max_ms), (50.0, 50.0));
        let marks = [RestartMarks {
            node: "n1".into(),
            stopping: at(0),
            stopped: at(500),
            starting: at(1_000),
            ready: at(1_500),
        }];
        let windows = upgrade_windows(&load, &marks, at(10_000));
        let names: Vec<&str> = windows.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["n1 stopping", "n1 down", "n1 catching up", "n1 after ready"]);
        let ops: Vec<u64> = windows.iter().map(|w| w.ops).collect();
        assert_eq!(ops, [1, 1, 1, 1]);
    }

    /// Counts what it is asked and stores it in memory; fails nothing.
    /// `stale` answers every read "not found", as a replica that missed the writes.
    #[derive(Default)]
    struct Counting(AtomicU64, Mutex<BTreeMap<String, Vec<u8>>>, bool);

    impl LoadTarget for Counting {
        fn put(&self, key: &str, value: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.lock().unwrap().insert(key.to_string(), value);
            async { Ok(()) }
        }
        fn delete(&self, key: &str) -> impl Future<Output = Result<(), String>> + Send {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.lock().unwrap().remove(key);
            async { Ok(()) }
        }
        fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, String>> + Send {
            self.0.fetch_add(1, Ordering::SeqCst);
            let value = if self.2 { None } else { self.1.lock().unwrap().get(key).cloned() };
            async { Ok(value) }
        }
    }

    /// A read that misses the worker's own acknowledged write is counted
    /// (and named in the failures); one that sees it is not.
    #[tokio::test]
    async fn reads_that_miss_the_workers_own_writes_are_counted() {
        for stale in [false, true] {
            let load = Load::new("steady");
            let target = Arc::new(Counting(AtomicU64::new(0), Mutex::default(), stale));
            let w = tokio::spawn(worker(0, load.clone(), target.clone(), 7, Duration::ZERO, "p/".into()));
            while load.reads_checked() < 200 {
                tokio::task::yield_now().await;
            }
            load.stop();
            w.await.unwrap();
            if stale {
                assert!(load.missed_reads() > 0, "a target that loses every write misses reads");
                assert!(load.failures().iter().any(|f| f.contains("missed its acknowledged write")));
            } else {
                assert_eq!(load.missed_reads(), 0, "{:?}", load.failures());
            }
        }
    }

    /// A zero interval is a closed loop (no pacing) against any target, and
    /// the worker stops when the load does.
    #[tokio::test]
    async fn a_zero_interval_runs_a_closed_loop_against_any_target() {
        let load = Load::new("saturation");
        let target = Arc::new(Counting::default());
        let w = tokio::spawn(worker(0, load.clone(), target.clone(), 7, Duration::ZERO, "p/".into()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while target.0.load(Ordering::SeqCst) < 2_000 {
            assert!(
                Instant::now() < deadline,
                "a closed loop made {} operations in 10 s",
                target.0.load(Ordering::SeqCst)
            );
            tokio::task::yield_now().await;
        }
        load.stop();
        let expected = tokio::time::timeout(Duration::from_secs(10), w).await.expect("the worker stops").unwrap();
        assert!(!expected.is_empty() && load.ok() >= 2_000);
    }

    #[test]
    fn workers_spread_over_the_nodes() {
        let nodes = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];
        let options = crate::client::ClientOptions::default();
        let clients = spread_clients(&nodes, 4, options).unwrap();
        let firsts: Vec<String> = clients.iter().map(|c| c.nodes()[0].to_string()).collect();
        assert_eq!(firsts, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1"]);
    }

    #[test]
    fn rng_is_deterministic() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.below(1000)).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.below(1000)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| *x < 1000));
        assert_ne!(Rng::new(0).next_u64(), 0);
    }
}

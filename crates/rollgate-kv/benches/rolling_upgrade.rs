//! The rolling upgrade as a benchmark: client latency (p50, p99) and
//! throughput in steady state against the same numbers while the nodes are
//! upgraded one by one, measured in the same run by the demo's load
//! generator. Not a criterion benchmark: one run is minutes of wall time and
//! the quantity of interest is a tail latency under a changing cluster, so
//! the harness runs each scenario `ROLLGATE_BENCH_RUNS` times (default 3)
//! and reports each run and the median ratios.
//!
//! ```sh
//! cargo bench -p rollgate-kv --features etcd --bench rolling_upgrade
//! ROLLGATE_BENCH_QUICK=1 ROLLGATE_BENCH_RUNS=1 cargo bench -p rollgate-kv --features etcd --bench rolling_upgrade   # smoke run: short phases
//! ROLLGATE_BENCH_PARTS=saturation cargo bench -p rollgate-kv --features etcd --bench rolling_upgrade   # one part only
//! ```
//!
//! Three parts, in one run (`ROLLGATE_BENCH_PARTS`, a comma-separated list
//! of `paced`, `saturation`, `etcd`, runs only those):
//!
//! 1. **paced**: 8 workers, each node down 3 s;
//! 2. **saturation**: 32 closed-loop workers (each starts its next operation
//!    as soon as one ends), each node down 10 s; with the time each restarted
//!    node took from its start to serving (opening its data dir, joining,
//!    catching up on 10 s of writes at saturation);
//!
//!    for both kv parts, each run also prints its upgrade window broken
//!    down per node: operations started while the node was stopping, down,
//!    catching up (start to serving) and in the first 2 s after it served
//!    (overlapping the next node's stop), with their p99 and rate, so that
//!    the tail can be attributed;
//! 3. **etcd baseline**: the same load generator (32 closed-loop workers,
//!    the same operation mix) against a 3-member etcd, each member killed,
//!    down 10 s and restarted in turn (waiting until it is healthy), through
//!    rollgate's etcd store client; failed operations and the p99 ratio.
//!    Needs `--features etcd` and `etcd` on the PATH; skipped otherwise.
//!
//! Targets: paced p99 ratio at most 2.0; saturation p99 ratio at most 1.5
//! with throughput ratio at least 0.9; zero failed operations and zero lost
//! acknowledged writes.

use std::time::Duration;

use rollgate_kv::demo::{self, DemoOptions, DemoReport};
use rollgate_kv::releases;

/// Phase lengths: the real ones, or a few seconds for a smoke run.
#[derive(Clone, Copy)]
struct Phases {
    steady: Duration,
    paced_down: Duration,
    saturated_down: Duration,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn header(extra: &str) {
    println!(
        "{:>4}  {:>12} {:>12} {:>10}  {:>12} {:>12} {:>10}  {:>9} {:>10}  {:>6} {:>5}  {extra}",
        "run",
        "steady p50",
        "steady p99",
        "steady/s",
        "upgrade p50",
        "upgrade p99",
        "upgrade/s",
        "p99 ratio",
        "tput ratio",
        "failed",
        "lost"
    );
}

/// One run's line; `lost` is `None` where it is not checked (etcd).
fn row(run: usize, i: &demo::UpgradeImpact, failed: u64, lost: Option<u64>, extra: &str) {
    let lost = lost.map_or_else(|| "-".to_string(), |l| l.to_string());
    println!(
        "{run:>4}  {:>9.2} ms {:>9.2} ms {:>10.0}  {:>9.2} ms {:>9.2} ms {:>10.0}  {:>9.2} {:>10.2}  {failed:>6} {lost:>5}  {extra}",
        i.steady.p50_ms,
        i.steady.p99_ms,
        i.steady.ops_per_s,
        i.upgrade.p50_ms,
        i.upgrade.p99_ms,
        i.upgrade.ops_per_s,
        i.p99_ratio,
        i.throughput_ratio,
    );
}

/// The kv scenario `runs` times with `workers` workers (`interval` zero:
/// closed loop) and each node down `down`.
fn kv(rt: &tokio::runtime::Runtime, runs: usize, workers: usize, interval: Duration, down: Duration, p: Phases) {
    let (mut p99, mut tput, mut failed, mut lost) = (Vec::new(), Vec::new(), 0, 0);
    header("catch-up (start to serving, per node)");
    for run in 1..=runs {
        let mut opts = DemoOptions::new(releases::find("1.0").unwrap(), releases::find("1.2").unwrap());
        opts.workers = workers;
        opts.op_interval = interval;
        opts.steady = p.steady;
        opts.downtime = down;
        opts.seed = run as u64;
        opts.progress = false;
        let report: DemoReport = rt.block_on(demo::run(opts)).expect("the demo runs");
        let catch_up: Vec<String> = report.restarts.iter().map(|r| format!("{} {} ms", r.node, r.ready_ms)).collect();
        let i = &report.upgrade_impact;
        row(run, i, report.ops_failed, Some(report.acked_writes_lost), &catch_up.join(", "));
        breakdown(&report.upgrade_windows);
        p99.push(i.p99_ratio);
        tput.push(i.throughput_ratio);
        failed += report.ops_failed;
        lost += report.acked_writes_lost;
    }
    println!(
        "median p99 ratio (upgrade / steady): {:.2}; median throughput ratio: {:.2}; failed operations: {failed}; lost acknowledged writes: {lost}",
        median(p99),
        median(tput)
    );
}

/// The upgrade window per node and step, one line per node.
fn breakdown(windows: &[demo::Phase]) {
    let mut line = String::new();
    for (i, w) in windows.iter().enumerate() {
        let (node, what) = w.name.split_once(' ').unwrap_or((&w.name, ""));
        if i % 4 == 0 {
            line = format!("      {node}:");
        }
        line += &format!(
            "  {what} {:.1} s p99 {:.1} ms max {:.0} ms {:.0}/s;",
            w.duration_ms as f64 / 1000.0,
            w.p99_ms,
            w.max_ms,
            w.ops_per_s
        );
        if i % 4 == 3 || i + 1 == windows.len() {
            println!("{line}");
        }
    }
}

/// Whether `part` is to run (`ROLLGATE_BENCH_PARTS`; all when unset).
fn part(part: &str) -> bool {
    std::env::var("ROLLGATE_BENCH_PARTS").map_or(true, |parts| parts.split(',').any(|p| p.trim() == part))
}

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent: stay quick there.
    let under_test = !std::env::args().any(|a| a == "--bench");
    let quick = under_test || std::env::var_os("ROLLGATE_BENCH_QUICK").is_some();
    let runs: usize = std::env::var("ROLLGATE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).clamp(1, 20);
    let runs = if under_test { 1 } else { runs };
    let p = if quick {
        Phases { steady: Duration::from_secs(1), paced_down: Duration::ZERO, saturated_down: Duration::from_secs(1) }
    } else {
        Phases {
            steady: Duration::from_secs(10),
            paced_down: Duration::from_secs(3),
            saturated_down: Duration::from_secs(10),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    if under_test || part("paced") {
        println!(
            "rolling upgrade 1.0 -> 1.2, 3 nodes, embedded store, 8 paced workers, each node down {:?}",
            p.paced_down
        );
        kv(&runtime, runs, 8, Duration::from_millis(4), p.paced_down, p);
        println!();
    }
    if under_test {
        return;
    }
    if part("saturation") {
        println!(
            "saturation: rolling upgrade 1.0 -> 1.2, 3 nodes, 32 closed-loop workers, each node down {:?}",
            p.saturated_down
        );
        kv(&runtime, runs, 32, Duration::ZERO, p.saturated_down, p);
        println!();
    }
    if part("etcd") {
        etcd::baseline(&runtime, runs, p);
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    //! The same load generator against a 3-member etcd restarted member by member.

    use std::sync::Arc;
    use std::time::Duration;

    use rollgate::store::{MetaStore, StoreOptions, Txn, TxnOp};
    use rollgate_kv::demo::load::{self, Load, LoadTarget};
    use rollgate_testkit::EtcdCluster;

    use super::{Phases, header, median, row};

    /// etcd through rollgate's store client.
    struct Etcd(Arc<dyn MetaStore>);

    impl LoadTarget for Etcd {
        fn put(&self, key: &str, value: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send {
            let put = TxnOp::Put { key: key.to_string(), value, lease: None };
            let txn = Txn { success: vec![put], ..Txn::default() };
            async move { self.0.txn(txn).await.map(|_| ()).map_err(|e| e.to_string()) }
        }

        fn delete(&self, key: &str) -> impl Future<Output = Result<(), String>> + Send {
            let txn = Txn { success: vec![TxnOp::Delete { key: key.to_string() }], ..Txn::default() };
            async move { self.0.txn(txn).await.map(|_| ()).map_err(|e| e.to_string()) }
        }

        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            self.0.get(key).await.map(|kv| kv.map(|kv| kv.value)).map_err(|e| e.to_string())
        }
    }

    /// 32 closed-loop workers; each member killed, down, restarted in turn.
    pub fn baseline(rt: &tokio::runtime::Runtime, runs: usize, p: Phases) {
        println!(
            "etcd baseline: the same load generator, 32 closed-loop workers, a 3-member etcd, each member killed, down {:?}, restarted",
            p.saturated_down
        );
        let (mut p99, mut tput, mut failed) = (Vec::new(), Vec::new(), 0);
        header("");
        for run in 1..=runs {
            let (impact, f) = rt.block_on(one(run as u64, p));
            row(run, &impact, f, None, "");
            p99.push(impact.p99_ratio);
            tput.push(impact.throughput_ratio);
            failed += f;
        }
        println!(
            "etcd: median p99 ratio (restarts / steady): {:.2}; median throughput ratio: {:.2}; failed operations: {failed}",
            median(p99),
            median(tput)
        );
    }

    async fn one(seed: u64, p: Phases) -> (rollgate_kv::demo::UpgradeImpact, u64) {
        let mut etcd = EtcdCluster::start(3).expect("a three-member etcd (is etcd on the PATH?)");
        let addrs: Vec<String> = etcd.client_addrs().iter().map(ToString::to_string).collect();
        let load = Load::new("steady at etcd");
        let mut workers = Vec::new();
        for w in 0..32 {
            // Spread like the kv workers: each its own client, starting at another member.
            let mut mine = addrs.clone();
            let first = w % mine.len();
            mine.rotate_left(first);
            let store = rollgate::store::open(&format!("etcd:{}", mine.join(",")), StoreOptions::default())
                .await
                .expect("an etcd client");
            let target = Arc::new(Etcd(store));
            workers.push(tokio::spawn(load::worker(w, load.clone(), target, seed, Duration::ZERO, "bench/".into())));
        }
        tokio::time::sleep(p.steady).await;
        for m in 0..etcd.len() {
            load.begin(&format!("upgrade m{m}"));
            tokio::task::block_in_place(|| etcd.kill(m));
            tokio::time::sleep(p.saturated_down).await;
            tokio::task::block_in_place(|| {
                etcd.restart(m).expect("restart the member");
                etcd.wait_healthy(m, Duration::from_secs(60)).expect("the member is healthy again");
            });
        }
        load.begin("steady at etcd after");
        tokio::time::sleep(p.steady / 2).await;
        load.end();
        load.stop();
        for w in workers {
            let _ = w.await;
        }
        (rollgate_kv::demo::UpgradeImpact::of(&load), load.failed())
    }
}

#[cfg(not(feature = "etcd"))]
mod etcd {
    pub fn baseline(_: &tokio::runtime::Runtime, _: usize, _: super::Phases) {
        println!("etcd baseline: skipped (build with --features etcd, and etcd on the PATH)");
    }
}

//! The rolling upgrade as a benchmark: client latency (p50, p99) and
//! throughput in steady state against the same numbers while the nodes are
//! upgraded one by one, measured in the same run by the demo's load
//! generator. Not a criterion benchmark: one run is minutes of wall time and
//! the quantity of interest is a tail latency under a changing cluster, so
//! the harness runs the scenario `ROLLGATE_BENCH_RUNS` times (default 3) and
//! reports each run and the median ratios.
//!
//! `cargo bench -p rollgate-kv --bench rolling_upgrade`
//!
//! Targets: p99 during the upgrade at most 2x steady state; zero failed
//! operations; zero lost acknowledged writes.

use std::time::Duration;

use rollgate_kv::demo::{self, DemoOptions};
use rollgate_kv::releases;

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent: stay quick there.
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("ROLLGATE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).clamp(1, 20);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let mut p99_ratios = Vec::new();
    let mut tput_ratios = Vec::new();
    let mut failed = 0;
    let mut lost = 0;
    println!("rolling upgrade 1.0 -> 1.2, 3 nodes, embedded store, 8 workers");
    println!(
        "{:>4}  {:>12} {:>12} {:>10}  {:>12} {:>12} {:>10}  {:>9} {:>10}  {:>6} {:>5}",
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
    for run in 1..=if quick { 1 } else { runs } {
        let mut opts = DemoOptions::new(releases::find("1.0").unwrap(), releases::find("1.2").unwrap());
        opts.workers = 8;
        opts.steady = if quick { Duration::from_secs(1) } else { Duration::from_secs(10) };
        opts.downtime = if quick { Duration::ZERO } else { Duration::from_secs(3) };
        opts.seed = run as u64;
        opts.progress = false;
        let report = runtime.block_on(demo::run(opts)).expect("the demo runs");
        let i = &report.upgrade_impact;
        println!(
            "{run:>4}  {:>9.2} ms {:>9.2} ms {:>10.0}  {:>9.2} ms {:>9.2} ms {:>10.0}  {:>9.2} {:>10.2}  {:>6} {:>5}",
            i.steady.p50_ms,
            i.steady.p99_ms,
            i.steady.ops_per_s,
            i.upgrade.p50_ms,
            i.upgrade.p99_ms,
            i.upgrade.ops_per_s,
            i.p99_ratio,
            i.throughput_ratio,
            report.ops_failed,
            report.acked_writes_lost
        );
        p99_ratios.push(i.p99_ratio);
        tput_ratios.push(i.throughput_ratio);
        failed += report.ops_failed;
        lost += report.acked_writes_lost;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median p99 ratio (upgrade / steady): {:.2} (target <= 2.0); median throughput ratio: {:.2}; failed operations: {failed}; lost acknowledged writes: {lost}",
        median(&mut p99_ratios),
        median(&mut tput_ratios)
    );
}

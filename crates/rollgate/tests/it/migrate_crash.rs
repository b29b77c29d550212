//! Invariant I4 for node-local migrations: a child process migrating a
//! 200,000-record redb table is killed with SIGKILL at random points, 20
//! times in a row; after each kill the file holds a committed checkpoint that
//! matches the data exactly (every record up to the checkpoint converted,
//! none after it); after the 20 kills the migration runs to completion, and
//! the result equals an uninterrupted run's, record for record, with the same
//! checkpoint counts and unit format.
//!
//! The child is this test binary re-executed with `ROLLGATE_MIGRATE_CHILD`
//! set; it prints `OPENED` once it has opened the file and a
//! `PROGRESS <done>` line after every committed batch, and the parent kills
//! it once it has seen the randomly chosen line (an explicit signal, no
//! timing). `ROLLGATE_CRASH_SEED` re-runs a seed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rollgate::format::{self, FormatPolicy};
use rollgate::migrate::{
    CHECKPOINT_TABLE, Checkpoint, CheckpointState, Gate, LocalOptions, LocalRunner, MemGates, Migrations, Rewrite,
    TableMigration,
};

const RECORDS: u64 = 200_000;
const BATCH: usize = 1_000;
const KILLS: usize = 20;
const CHILD_ENV: &str = "ROLLGATE_MIGRATE_CHILD";
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Bound on the whole test's wall time (it normally takes a fraction).
const MAX_RUN: Duration = Duration::from_secs(300);

fn payload(key: u64) -> [u8; 16] {
    // splitmix64, twice: deterministic bytes per key.
    let mut z = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes());
    }
    out
}

fn v1_value(key: u64) -> Vec<u8> {
    [b"v1:".as_slice(), &payload(key)].concat()
}

/// The conversion: v1 -> v2 (payload reversed, a checksum byte), every 97th
/// record deleted; v2 is kept (idempotent); anything else is an error.
fn convert(key: &[u8], value: &[u8]) -> Result<Rewrite, String> {
    let id = u64::from_be_bytes(key.try_into().map_err(|_| "key is not 8 bytes".to_string())?);
    match value {
        [b'v', b'2', b':', ..] => Ok(Rewrite::Keep),
        [b'v', b'1', b':', rest @ ..] if rest.len() == 16 => {
            if id % 97 == 0 {
                return Ok(Rewrite::Delete);
            }
            let mut v2 = b"v2:".to_vec();
            v2.extend(rest.iter().rev());
            v2.push(rest.iter().fold(0u8, |a, b| a.wrapping_add(*b)));
            Ok(Rewrite::Put(v2))
        }
        _ => Err("not a v1 or v2 record".into()),
    }
}

fn migrations() -> Arc<Migrations> {
    let mut m = Migrations::new();
    m.add_table_migration(
        TableMigration::new("records_v2", "records", Gate::flag("records_v2"), convert).unwrap().changes_format(1, 2),
    )
    .unwrap();
    Arc::new(m)
}

fn options() -> LocalOptions {
    LocalOptions { batch_records: BATCH, release: "1.1".into(), ..LocalOptions::default() }
}

fn populate(path: &Path) {
    let db = Database::create(path).unwrap();
    let wtx = db.begin_write().unwrap();
    format::open_unit(&wtx, TABLE, &FormatPolicy::new(1, 1, "1.0").unwrap()).unwrap();
    {
        let mut t = wtx.open_table(TABLE).unwrap();
        for k in 0..RECORDS {
            t.insert(k.to_be_bytes().as_slice(), v1_value(k).as_slice()).unwrap();
        }
    }
    wtx.commit().unwrap();
}

/// Runs the migration to the end in this process.
fn run_to_completion(path: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let db = Arc::new(Database::create(path).unwrap());
        let runner = LocalRunner::new(migrations(), db, "node-1", options()).unwrap();
        let report = runner.run_once(&MemGates::with_flags(["records_v2"])).await.unwrap();
        assert_eq!(report.ran.len(), 1);
    });
}

struct Dump {
    /// FNV-1a over every (key, value), in key order.
    hash: u64,
    records: u64,
    checkpoint: Option<Checkpoint>,
    format: u32,
}

fn dump(path: &Path) -> Dump {
    let db = Database::create(path).unwrap();
    let rtx = db.begin_read().unwrap();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut records = 0;
    for entry in rtx.open_table(TABLE).unwrap().iter().unwrap() {
        let (k, v) = entry.unwrap();
        for b in k.value().iter().chain(v.value()) {
            hash = (hash ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
        records += 1;
    }
    let checkpoint = match rtx.open_table(CHECKPOINT_TABLE) {
        Ok(t) => t.get("records_v2").unwrap().map(|v| Checkpoint::from_bytes("records_v2", v.value()).unwrap()),
        Err(_) => None,
    };
    let format = format::read_stamp_ro(&rtx, "records").unwrap().unwrap().format;
    Dump { hash, records, checkpoint, format }
}

/// After a kill: the checkpoint is committed and agrees with the data exactly.
fn check_consistent(path: &Path, kill: usize) -> u64 {
    let db = Database::create(path).unwrap();
    let rtx = db.begin_read().unwrap();
    let ck = match rtx.open_table(CHECKPOINT_TABLE) {
        Ok(t) => t.get("records_v2").unwrap().map(|v| Checkpoint::from_bytes("records_v2", v.value()).unwrap()),
        Err(_) => None,
    };
    let last = ck.as_ref().and_then(|c| c.last_key.as_ref()).map(|k| u64::from_be_bytes(k[..].try_into().unwrap()));
    let (mut converted, mut deleted) = (0u64, 0u64);
    let mut expected_key = 0u64;
    for entry in rtx.open_table(TABLE).unwrap().iter().unwrap() {
        let (k, v) = entry.unwrap();
        let id = u64::from_be_bytes(k.value().try_into().unwrap());
        // Keys skipped since the previous record were deleted: only multiples
        // of 97 at or before the checkpoint may be missing.
        for gone in expected_key..id {
            assert!(gone % 97 == 0 && last.is_some_and(|l| gone <= l), "kill {kill}: record {gone} lost");
            deleted += 1;
        }
        expected_key = id + 1;
        let done = last.is_some_and(|l| id <= l);
        if done {
            assert!(
                v.value().starts_with(b"v2:"),
                "kill {kill}: record {id} at or before the checkpoint not converted"
            );
            converted += 1;
        } else {
            assert_eq!(v.value(), v1_value(id).as_slice(), "kill {kill}: record {id} after the checkpoint touched");
        }
    }
    for gone in expected_key..RECORDS {
        assert!(gone % 97 == 0 && last.is_some_and(|l| gone <= l), "kill {kill}: record {gone} lost");
        deleted += 1;
    }
    if let Some(ck) = &ck {
        assert_eq!(ck.state, CheckpointState::Running, "kill {kill}: killed before the end");
        assert_eq!((ck.changed, ck.deleted), (converted, deleted), "kill {kill}: counts match the data");
        assert_eq!(ck.done, converted + deleted, "kill {kill}: every record up to the checkpoint counted once");
        assert_eq!(ck.total, RECORDS);
    }
    ck.map_or(0, |c| c.done)
}

fn child(path: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let db = Arc::new(Database::create(path).unwrap());
        println!("OPENED");
        let runner = LocalRunner::new(migrations(), db, "node-1", options()).unwrap().on_progress(|s| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "PROGRESS {}", s.done);
            let _ = out.flush();
        });
        runner.run_once(&MemGates::with_flags(["records_v2"])).await.unwrap();
        println!("DONE");
    });
}

#[test]
fn sigkill_at_random_points_then_resume_matches_an_uninterrupted_run() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
        return;
    }
    let started = Instant::now();
    let seed = rollgate_testkit::seed("ROLLGATE_CRASH_SEED");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let (path, reference) = (dir.path().join("node.redb"), dir.path().join("reference.redb"));
    populate(&path);
    std::fs::copy(&path, &reference).unwrap();

    // The uninterrupted run.
    run_to_completion(&reference);
    let want = dump(&reference);

    let mut done = 0u64;
    for kill in 0..KILLS {
        assert!(started.elapsed() < MAX_RUN, "too slow at kill {kill} (seed {seed})");
        // Kill once the child reports at least `target` records, 0 to 2
        // batches past where it resumes (0: at its first committed batch),
        // or, one time in four, as soon as it has opened the file (inside
        // its first batch).
        let at_open = rng.random_ratio(1, 4);
        let target = done + rng.random_range(0..3u64) * BATCH as u64;
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                &crate::test_name(module_path!(), "sigkill_at_random_points_then_resume_matches_an_uninterrupted_run"),
                "--nocapture",
            ])
            .args(["--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = proc.stdout.take().unwrap();
        let mut killed_at = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if at_open && line.ends_with("OPENED") {
                proc.kill().unwrap(); // SIGKILL
                killed_at = Some(done);
                break;
            }
            // The harness may print its "test ... " prefix on the same line.
            if let Some((_, n)) = line.split_once("PROGRESS ") {
                let n: u64 = n.trim().parse().unwrap();
                if n >= target && n > done {
                    proc.kill().unwrap(); // SIGKILL
                    killed_at = Some(n);
                    break;
                }
            }
            assert!(!line.ends_with("DONE"), "kill {kill}: the child finished before the kill (seed {seed})");
        }
        let status = proc.wait().unwrap();
        let seen = killed_at.unwrap_or_else(|| panic!("kill {kill}: the child exited early: {status} (seed {seed})"));
        assert!(!status.success(), "kill {kill}: killed, not exited");
        let now = check_consistent(&path, kill);
        assert!(now >= seen, "kill {kill}: progress {seen} reported but only {now} committed (seed {seed})");
        let when = if at_open { "at open".to_string() } else { format!("at target {target}") };
        eprintln!("kill {kill}: {when}, killed after {seen} reported, {now} committed");
        done = now;
    }
    assert!(done < RECORDS, "the kills all happened before the end");

    run_to_completion(&path);
    let got = dump(&path);
    assert_eq!(got.records, want.records, "record count (seed {seed})");
    assert_eq!(got.hash, want.hash, "every record equals the uninterrupted run's (seed {seed})");
    let (g, w) = (got.checkpoint.unwrap(), want.checkpoint.unwrap());
    assert_eq!(
        (g.state, g.done, g.changed, g.deleted, g.total, g.last_key.clone()),
        (w.state, w.done, w.changed, w.deleted, w.total, w.last_key.clone()),
        "checkpoint counts (seed {seed})"
    );
    assert_eq!((g.done, g.deleted), (RECORDS, RECORDS.div_ceil(97)));
    assert_eq!((got.format, want.format), (2, 2), "the unit's format moved once, with the last batch");
}

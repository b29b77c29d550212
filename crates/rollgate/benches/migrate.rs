//! Node-local table migration throughput against a same-run baseline:
//!
//! - `migrate/table_migration`: a [`LocalRunner`] migrates 1,000,000 records
//!   (8-byte keys, 35-byte values) of a redb table in place, in batches of
//!   1,000 records, each batch and its checkpoint in one write transaction
//!   committed with `Durability::Immediate` (the defaults);
//! - `migrate/raw_redb_batch_writes`: the baseline, plain redb inserts of the
//!   same 1,000,000 converted records into a fresh table, 1,000 per write
//!   transaction, same durability.
//!
//! One iteration is a whole million records (seconds), so both use
//! `iter_custom` with flat sampling and 10 samples; the file copy that
//! resets the table before each migration is not timed.
//!
//! `cargo bench -p rollgate --bench migrate`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use redb::{Database, Durability, TableDefinition};
use rollgate::migrate::{Gate, LocalOptions, LocalRunner, MemGates, Migrations, Rewrite, TableMigration};

const RECORDS: u64 = 1_000_000;
const BATCH: usize = 1_000;
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

fn v1_value(key: u64) -> Vec<u8> {
    let mut v = b"v1:".to_vec();
    v.extend_from_slice(&key.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    v.extend_from_slice(&[b'x'; 24]);
    v
}

fn convert(_key: &[u8], value: &[u8]) -> Result<Rewrite, String> {
    match value.strip_prefix(b"v1:") {
        Some(rest) => {
            let mut v2 = Vec::with_capacity(value.len());
            v2.extend_from_slice(b"v2:");
            v2.extend(rest.iter().rev());
            Ok(Rewrite::Put(v2))
        }
        None if value.starts_with(b"v2:") => Ok(Rewrite::Keep),
        None => Err("neither v1 nor v2".into()),
    }
}

fn v2_value(key: u64) -> Vec<u8> {
    match convert(&key.to_be_bytes(), &v1_value(key)) {
        Ok(Rewrite::Put(v)) => v,
        _ => unreachable!("every v1 record converts"),
    }
}

fn populate(path: &Path) {
    let db = Database::create(path).expect("create");
    let wtx = db.begin_write().expect("write");
    {
        let mut t = wtx.open_table(TABLE).expect("table");
        for k in 0..RECORDS {
            t.insert(k.to_be_bytes().as_slice(), v1_value(k).as_slice()).expect("insert");
        }
    }
    wtx.commit().expect("commit");
}

fn migrations() -> Arc<Migrations> {
    let mut m = Migrations::new();
    m.add_table_migration(TableMigration::new("records_v2", "records", Gate::flag("v2"), convert).expect("migration"))
        .expect("register");
    Arc::new(m)
}

fn raw_batch_writes(path: &Path) {
    let db = Database::create(path).expect("create");
    let mut k = 0u64;
    while k < RECORDS {
        let mut wtx = db.begin_write().expect("write");
        wtx.set_durability(Durability::Immediate).expect("durability");
        {
            let mut t = wtx.open_table(TABLE).expect("table");
            for key in k..(k + BATCH as u64).min(RECORDS) {
                t.insert(key.to_be_bytes().as_slice(), v2_value(key).as_slice()).expect("insert");
            }
        }
        wtx.commit().expect("commit");
        k += BATCH as u64;
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let template = dir.path().join("template.redb");
    populate(&template);
    let work = dir.path().join("work.redb");
    let gates = MemGates::with_flags(["v2"]);
    let migrations = migrations();

    let mut group = c.benchmark_group("migrate");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).throughput(Throughput::Elements(RECORDS));
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(30));

    group.bench_function("table_migration", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::fs::copy(&template, &work).expect("reset the table");
                let db = Arc::new(Database::create(&work).expect("open"));
                let options = LocalOptions { batch_records: BATCH, ..LocalOptions::default() };
                let runner = LocalRunner::new(migrations.clone(), db, "bench", options).expect("runner");
                let start = Instant::now();
                let report = rt.block_on(runner.run_once(&gates)).expect("migrate");
                total += start.elapsed();
                assert_eq!(report.ran[0].done, RECORDS);
            }
            total
        });
    });

    group.bench_function("raw_redb_batch_writes", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let _ = std::fs::remove_file(&work);
                let start = Instant::now();
                raw_batch_writes(&work);
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

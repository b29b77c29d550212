//! Migrations fed bad input (I8): a checkpoint pointing past the end of its
//! table, an unreadable checkpoint, a corrupt record in the table, a table
//! of another key type, and bad JSON in the metadata store (a service's
//! format record, an owner key, a node's status). Each gets a clear error
//! naming the unit, migration or key, and nothing stored is overwritten.
//! Random and mutated checkpoints and stamps decode or fail, never panic
//! (`ROLLGATE_SEED` re-runs a seed).

use std::sync::Arc;

use crate::migrate_support::{TABLE, forward};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rollgate::format::FormatStamp;
use rollgate::migrate::{
    CHECKPOINT_TABLE, Checkpoint, CheckpointState, Direction, Gate, LocalOptions, LocalRunner, MemGates, MigrateError,
    MigrateKeys, MigrationState, Migrations, ServiceOptions, ServiceOutcome, ServiceRunner, ServiceStep, StepContext,
    StepError, TableMigration, cluster_status,
};
use rollgate::store::{self, MetaStore, StoreOptions};

fn migrations() -> Arc<Migrations> {
    let mut m = Migrations::new();
    m.add_table_migration(TableMigration::new("records_v2", "records", Gate::flag("records_v2"), forward).unwrap())
        .unwrap();
    Arc::new(m)
}

fn key(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

fn data_db(dir: &tempfile::TempDir, records: u32) -> Arc<Database> {
    let db = Database::create(dir.path().join("node.redb")).unwrap();
    let wtx = db.begin_write().unwrap();
    {
        let mut t = wtx.open_table(TABLE).unwrap();
        for i in 0..records {
            t.insert(key(i).as_slice(), format!("v1:{i}").as_bytes()).unwrap();
        }
    }
    wtx.commit().unwrap();
    Arc::new(db)
}

type Contents = (Vec<(Vec<u8>, Vec<u8>)>, Vec<(String, Vec<u8>)>);

/// The records and the checkpoints.
fn contents(db: &Database) -> Contents {
    let rtx = db.begin_read().unwrap();
    let records = match rtx.open_table(TABLE) {
        Ok(t) => t.iter().unwrap().map(|e| e.unwrap()).map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).collect(),
        Err(_) => Vec::new(),
    };
    let checkpoints = match rtx.open_table(CHECKPOINT_TABLE) {
        Ok(t) => {
            t.iter().unwrap().map(|e| e.unwrap()).map(|(k, v)| (k.value().to_string(), v.value().to_vec())).collect()
        }
        Err(_) => Vec::new(),
    };
    (records, checkpoints)
}

fn put_checkpoint(db: &Database, bytes: &[u8]) {
    let wtx = db.begin_write().unwrap();
    wtx.open_table(CHECKPOINT_TABLE).unwrap().insert("records_v2", bytes).unwrap();
    wtx.commit().unwrap();
}

fn runner(db: &Arc<Database>, batch: usize) -> LocalRunner {
    let options = LocalOptions { batch_records: batch, ..LocalOptions::default() };
    LocalRunner::new(migrations(), db.clone(), "node-1", options).unwrap()
}

#[tokio::test]
async fn a_checkpoint_past_the_end_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(&dir, 100);
    let checkpoint = Checkpoint {
        direction: Direction::Forward,
        state: CheckpointState::Running,
        last_key: Some(key(500).to_vec()),
        done: 50,
        changed: 50,
        deleted: 0,
        total: 100,
        node: "node-1".into(),
        started_ms: 1,
        finished_ms: None,
    };
    put_checkpoint(&db, &serde_json::to_vec(&checkpoint).unwrap());
    let before = contents(&db);
    let gates = MemGates::with_flags(["records_v2"]);
    let r = runner(&db, 10);
    let err = r.run_once(&gates).await.unwrap_err();
    assert!(matches!(err, MigrateError::CheckpointPastEnd { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            r#"the checkpoint of table migration `records_v2` points past the end of table `records`: last processed key "\x00\x00\x01\xf4" but the table ends at "\x00\x00\x00c""#
        ),
        "{msg}"
    );
    assert!(msg.contains("reset the checkpoint") && msg.ends_with("nothing was changed"), "{msg}");
    assert!(contents(&db) == before, "records and checkpoint untouched");

    let status = r.status(None).await.unwrap().migrations.remove(0);
    assert_eq!(status.state, MigrationState::Failed);
    assert!(status.error.unwrap().contains("points past the end"));

    // The operator's way out: start over.
    assert!(r.reset_checkpoint("records_v2").await.unwrap());
    let ran = r.run_once(&gates).await.unwrap().ran;
    assert_eq!((ran[0].state, ran[0].done), (MigrationState::Done, 100));
}

#[tokio::test]
async fn an_unreadable_checkpoint_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(&dir, 30);
    let gates = MemGates::with_flags(["records_v2"]);
    for (bytes, fragment) in [
        (b"\x00\xffnot json".as_slice(), "expected value"),
        (br#"{"direction":"forward"}"#.as_slice(), "missing field"),
        (
            br#"{"direction":"forward","state":"running","last_key":"0001","done":1,"changed":5,"deleted":0,"total":3,"node":"node-1","started_ms":0,"finished_ms":null}"#
                .as_slice(),
            "5 changed + 0 deleted is more than the 1 processed",
        ),
    ] {
        put_checkpoint(&db, bytes);
        let before = contents(&db);
        let err = runner(&db, 10).run_once(&gates).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "the checkpoint of table migration `records_v2` (table `rollgate_migrations`, key `records_v2`) is unreadable"
            ),
            "{msg}"
        );
        assert!(msg.contains(fragment), "{msg:?} lacks {fragment:?}");
        assert!(contents(&db) == before, "nothing changed");
    }
}

#[tokio::test]
async fn a_corrupt_record_stops_its_batch_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let meta = store::open(&format!("redb:{}", dir.path().join("meta.redb").display()), StoreOptions::default())
        .await
        .unwrap();
    let db = data_db(&dir, 100);
    {
        let wtx = db.begin_write().unwrap();
        wtx.open_table(TABLE).unwrap().insert(key(25).as_slice(), b"\xff\xfe garbage".as_slice()).unwrap();
        wtx.commit().unwrap();
    }
    let (records_before, _) = contents(&db);
    let gates = MemGates::with_flags(["records_v2"]);
    let r = runner(&db, 10).publish_to(meta.clone());
    let err = r.run_once(&gates).await.unwrap_err();
    assert!(matches!(err, MigrateError::Record { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        r#"table migration `records_v2` (forward) cannot convert the record at key "\x00\x00\x00\x19" of table `records`: neither v1 nor v2; nothing of this batch was written"#
    );
    // The two batches before were committed; the failing batch wrote nothing.
    let (records, checkpoints) = contents(&db);
    for (i, ((k, v), (_, old))) in records.iter().zip(&records_before).enumerate() {
        if i < 20 {
            assert!(v.starts_with(b"v2:"), "record {i} converted");
        } else {
            assert_eq!(v, old, "record {i} ({k:?}) untouched");
        }
    }
    let ck = Checkpoint::from_bytes("records_v2", &checkpoints[0].1).unwrap();
    assert_eq!((ck.done, ck.last_key.clone(), ck.state), (20, Some(key(19).to_vec()), CheckpointState::Running));

    // The failure is visible cluster-wide.
    let status = cluster_status(&*meta, "rollgate/").await.unwrap();
    let s = status.all_migrations().next().unwrap();
    assert_eq!((s.node.as_str(), s.state, s.done), ("node-1", MigrationState::Failed, 20));
    assert!(s.error.as_deref().unwrap().contains(r#"at key "\x00\x00\x00\x19""#), "{s:?}");

    // Fixed, it resumes where it stopped.
    {
        let wtx = db.begin_write().unwrap();
        wtx.open_table(TABLE).unwrap().insert(key(25).as_slice(), b"v1:25".as_slice()).unwrap();
        wtx.commit().unwrap();
    }
    let ran = r.run_once(&gates).await.unwrap().ran;
    assert_eq!((ran[0].state, ran[0].done), (MigrationState::Done, 100));
    assert!(contents(&db).0.iter().all(|(_, v)| v.starts_with(b"v2:")));
}

#[tokio::test]
async fn a_table_of_another_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("node.redb")).unwrap());
    let typed: TableDefinition<&str, u64> = TableDefinition::new("records");
    {
        let wtx = db.begin_write().unwrap();
        wtx.open_table(typed).unwrap().insert("a", &1).unwrap();
        wtx.commit().unwrap();
    }
    let err = runner(&db, 10).run_once(&MemGates::with_flags(["records_v2"])).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("table migration `records_v2`: redb failed while opening the table"), "{msg}");
    assert!(msg.contains("records"), "{msg}");
    let rtx = db.begin_read().unwrap();
    assert_eq!(rtx.open_table(typed).unwrap().get("a").unwrap().unwrap().value(), 1);
    assert!(rtx.open_table(CHECKPOINT_TABLE).is_err(), "no checkpoint written");
}

#[tokio::test]
async fn bad_json_in_the_store_is_named_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetaStore> =
        store::open(&format!("redb:{}", dir.path().join("meta.redb").display()), StoreOptions::default())
            .await
            .unwrap();
    let keys = MigrateKeys::new("rollgate/");
    let mut m = Migrations::new();
    let noop = |_ctx: StepContext| async { Ok::<(), StepError>(()) };
    m.add_step(ServiceStep::new("auth", 0, "profiles", Gate::flag("f"), noop).unwrap()).unwrap();
    let m = Arc::new(m);
    let r =
        ServiceRunner::new(m, meta.clone(), Arc::new(MemGates::with_flags(["f"])), "node-1", ServiceOptions::default())
            .unwrap();

    // A format record that does not decode.
    meta.put(&keys.format("auth"), b"{not json".to_vec()).await.unwrap();
    let before = meta.get(&keys.format("auth")).await.unwrap();
    for err in [r.run_once().await.unwrap_err(), r.create_fresh("auth").await.unwrap_err()] {
        let msg = err.to_string();
        assert!(msg.contains(r#"stored value of key "rollgate/formats/auth" does not decode"#), "{msg}");
        assert!(msg.contains("service `auth`"), "{msg}");
    }
    assert_eq!(meta.get(&keys.format("auth")).await.unwrap(), before, "left as it is");

    // A format newer than this release knows: nothing is done.
    meta.put(&keys.format("auth"), br#"{"version":99}"#.to_vec()).await.unwrap();
    let before = meta.get(&keys.format("auth")).await.unwrap();
    let report = r.run_once().await.unwrap().remove(0);
    assert_eq!((report.outcome, report.version), (ServiceOutcome::Ahead, 99));
    assert_eq!(meta.get(&keys.format("auth")).await.unwrap(), before);

    // An owner key that does not decode.
    meta.delete(&keys.format("auth")).await.unwrap();
    meta.put(&keys.owner("auth"), b"\xff".to_vec()).await.unwrap();
    let owner_before = meta.get(&keys.owner("auth")).await.unwrap();
    let msg = r.run_once().await.unwrap_err().to_string();
    assert!(msg.contains(r#"stored value of key "rollgate/migrations/owner/auth" does not decode"#), "{msg}");
    assert_eq!(meta.get(&keys.owner("auth")).await.unwrap(), owner_before);
    assert!(meta.get(&keys.format("auth")).await.unwrap().is_none(), "no step committed");

    // Node statuses that do not decode (or lie about their node) are listed, not dropped or rewritten.
    meta.put(&keys.status("node-9"), b"[1,2".to_vec()).await.unwrap();
    meta.put(&keys.status("node-8"), br#"{"node":"node-7","updated_ms":0,"migrations":[]}"#.to_vec()).await.unwrap();
    meta.put(&keys.status("node-1"), br#"{"node":"node-1","updated_ms":5,"migrations":[]}"#.to_vec()).await.unwrap();
    let listing_before = meta.list("rollgate/").await.unwrap().kvs;
    let status = cluster_status(&*meta, "rollgate/").await.unwrap();
    assert_eq!(status.nodes.len(), 1);
    assert_eq!(status.nodes[0].node, "node-1");
    let unreadable: Vec<(&str, &str)> = status.unreadable.iter().map(|u| (u.key.as_str(), u.error.as_str())).collect();
    assert_eq!(unreadable.len(), 3, "{unreadable:?}");
    assert!(unreadable.iter().any(|(k, e)| *k == "rollgate/migrations/owner/auth" && e.contains("does not decode")));
    assert!(unreadable.iter().any(|(k, e)| *k == "rollgate/migrations/status/node-8" && e.contains("not \"node-8\"")));
    assert!(unreadable.iter().any(|(k, e)| *k == "rollgate/migrations/status/node-9" && e.contains("does not decode")));
    assert_eq!(meta.list("rollgate/").await.unwrap().kvs, listing_before, "the status is only read");
}

#[test]
fn random_checkpoints_and_stamps_are_errors_not_panics() {
    let seed = std::env::var("ROLLGATE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    println!("proptest seed: ROLLGATE_SEED={seed}");
    let config = Config { cases: 2048, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() };
    let valid = br#"{"direction":"forward","state":"running","last_key":"0001","done":1,"changed":1,"deleted":0,"total":3,"node":"node-1","started_ms":0,"finished_ms":null}"#;
    // Random bytes, and a valid checkpoint with random bytes overwritten.
    let mutated = proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6).prop_map(move |edits| {
        let mut bytes = valid.to_vec();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        bytes
    });
    let strategy = prop_oneof![proptest::collection::vec(any::<u8>(), 0..300), mutated];
    TestRunner::new(config)
        .run(&strategy, |bytes| {
            if let Ok(ck) = Checkpoint::from_bytes("m", &bytes) {
                prop_assert!(ck.changed + ck.deleted <= ck.done);
            }
            let _ = FormatStamp::from_bytes("u", &bytes);
            Ok(())
        })
        .unwrap();
}

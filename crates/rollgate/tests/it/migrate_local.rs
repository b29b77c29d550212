//! Node-local table migrations on real redb files: progress for a progress
//! bar, each node's status published to a real metadata store and the
//! cluster-wide picture any node can serve (which migrations run, where,
//! when each finished), and migrations following their gate (I1): nothing
//! runs while it is closed, forward when it opens, back when it closes again.

use std::sync::{Arc, Mutex};

use crate::migrate_support::{TABLE, dump, forward, meta_store, reverse, unit_format};
use redb::Database;
use rollgate::format::{self, FormatPolicy};
use rollgate::migrate::{
    Direction, Gate, LocalOptions, LocalRunner, MemGates, MigrationKind, MigrationState, MigrationStatus, Migrations,
    RateLimit, ServiceOptions, ServiceRunner, ServiceStep, StepContext, StepError, TableMigration, cluster_status,
};

fn migrations() -> Arc<Migrations> {
    let mut m = Migrations::new();
    let t = TableMigration::new("records_v2", "records", Gate::flag("records_v2"), forward).unwrap();
    m.add_table_migration(t.with_reverse(reverse).changes_format(1, 2)).unwrap();
    let step = ServiceStep::new("auth", 0, "profiles", Gate::feature("caps"), |_ctx: StepContext| async {
        Ok::<(), StepError>(())
    })
    .unwrap();
    m.add_step(step).unwrap();
    Arc::new(m)
}

fn data_db(dir: &tempfile::TempDir, name: &str, records: u32) -> Arc<Database> {
    let db = Database::create(dir.path().join(name)).unwrap();
    let wtx = db.begin_write().unwrap();
    format::open_unit(&wtx, TABLE, &FormatPolicy::new(1, 1, "1.0").unwrap()).unwrap();
    {
        let mut t = wtx.open_table(TABLE).unwrap();
        for k in 0..records {
            t.insert(k.to_be_bytes().as_slice(), format!("v1:{k}").as_bytes()).unwrap();
        }
    }
    wtx.commit().unwrap();
    Arc::new(db)
}

#[tokio::test]
async fn progress_and_the_cluster_wide_status() {
    let dir = tempfile::tempdir().unwrap();
    let meta = meta_store(&dir).await;
    let gates = Arc::new(MemGates::with_flags(["records_v2"]));
    gates.add_feature("caps");
    let m = migrations();

    let seen: Arc<Mutex<Vec<MigrationStatus>>> = Arc::default();
    let options = LocalOptions { batch_records: 500, release: "1.1".into(), ..LocalOptions::default() };
    let node1 = {
        let seen = seen.clone();
        LocalRunner::new(m.clone(), data_db(&dir, "node-1.redb", 5_000), "node-1", options.clone())
            .unwrap()
            .publish_to(meta.clone())
            .on_progress(move |s| seen.lock().unwrap().push(s.clone()))
    };
    let paced = LocalOptions { rate_limit: Some(RateLimit { records_per_s: 1_000_000, burst: 1_000 }), ..options };
    let node2 = LocalRunner::new(m.clone(), data_db(&dir, "node-2.redb", 3_000), "node-2", paced)
        .unwrap()
        .publish_to(meta.clone());

    let before = node1.status(Some(&*gates)).await.unwrap();
    assert_eq!(before.migrations.len(), 1);
    let s = &before.migrations[0];
    assert_eq!((s.state, s.done, s.gate_open, s.kind), (MigrationState::Pending, 0, Some(true), MigrationKind::Table));

    let mut watch = node1.subscribe();
    let report = node1.run_once(&*gates).await.unwrap();
    assert_eq!(report.ran.len(), 1);
    assert_eq!(report.ran[0].state, MigrationState::Done);

    // One progress report per batch of 500: done grows, total stays.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 10, "{seen:?}");
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(
            (s.done, s.total, s.node.as_str(), s.direction),
            ((i as u64 + 1) * 500, 5_000, "node-1", Direction::Forward)
        );
        assert!(s.started_ms.is_some());
    }
    let running = &seen[4];
    assert_eq!(running.state, MigrationState::Running);
    assert!(running.rate_per_s > 0.0 && running.eta_s.is_some(), "{running:?}");
    let last = seen.last().unwrap();
    assert_eq!(last.state, MigrationState::Done);
    assert!(last.finished_ms.is_some() && last.eta_s.is_none());
    assert!(watch.has_changed().unwrap());
    assert_eq!(watch.borrow_and_update().migrations[0].state, MigrationState::Done);

    node2.run_once(&*gates).await.unwrap();
    let services = ServiceRunner::new(m.clone(), meta.clone(), gates.clone(), "node-2", ServiceOptions::default());
    services.unwrap().run_once().await.unwrap();

    // Any node can show the whole cluster from the store.
    let status = cluster_status(&*meta, "rollgate/").await.unwrap();
    assert!(status.unreadable.is_empty(), "{:?}", status.unreadable);
    let nodes: Vec<&str> = status.nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(nodes, ["node-1", "node-2"]);
    for (node, total) in [("node-1", 5_000), ("node-2", 3_000)] {
        let s = status.all_migrations().find(|s| s.node == node).unwrap();
        assert_eq!((s.id.as_str(), s.state, s.done, s.total), ("records_v2", MigrationState::Done, total, total));
        assert!(s.finished_ms >= s.started_ms && s.finished_ms.is_some(), "{s:?}");
    }
    assert_eq!(status.services.len(), 1);
    let auth = &status.services[0];
    assert_eq!((auth.service.as_str(), auth.version, auth.state), ("auth", 1, MigrationState::Done));
    assert_eq!(auth.history[0].node, "node-2");

    // The JSON the admin API serves.
    let json = serde_json::to_value(&status).unwrap();
    let first = &json["nodes"][0]["migrations"][0];
    assert_eq!(first["state"], "done");
    assert_eq!(first["kind"], "table");
    assert_eq!(first["gate"], serde_json::json!({"kind": "flag", "name": "records_v2"}));
    assert_eq!(first["done"], 5_000);
    assert_eq!(json["services"][0]["history"][0]["step"], "profiles");
}

#[tokio::test]
async fn table_migrations_follow_their_gate() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(&dir, "node.redb", 1_234);
    let original = dump(&db, TABLE);
    let gates = MemGates::new();
    let options = LocalOptions { batch_records: 100, release: "1.1".into(), ..LocalOptions::default() };
    let runner = LocalRunner::new(migrations(), db.clone(), "node-1", options).unwrap();

    // Closed: nothing runs (I1).
    assert!(runner.run_once(&gates).await.unwrap().ran.is_empty());
    assert_eq!(dump(&db, TABLE), original);
    let s = runner.status(Some(&gates)).await.unwrap().migrations.remove(0);
    assert_eq!((s.state, s.gate_open), (MigrationState::Pending, Some(false)));

    // Open: forward to the end; the unit's format moves with the last batch.
    gates.enable_flag("records_v2");
    let ran = runner.run_once(&gates).await.unwrap().ran;
    assert_eq!((ran.len(), ran[0].direction, ran[0].done), (1, Direction::Forward, 1_234));
    let converted = dump(&db, TABLE);
    assert!(converted.iter().all(|(_, v)| v.starts_with(b"v2:")));
    assert_eq!(unit_format(&db, "records"), 2);
    assert!(runner.run_once(&gates).await.unwrap().ran.is_empty(), "done stays done");

    // Closed again: the data goes back, byte for byte, and the format too.
    gates.disable_flag("records_v2");
    let ran = runner.run_once(&gates).await.unwrap().ran;
    assert_eq!((ran.len(), ran[0].direction, ran[0].state), (1, Direction::Reverse, MigrationState::Done));
    assert_eq!(dump(&db, TABLE), original);
    assert_eq!(unit_format(&db, "records"), 1);
    assert!(runner.run_once(&gates).await.unwrap().ran.is_empty());

    // And forward again when it reopens.
    gates.enable_flag("records_v2");
    runner.run_once(&gates).await.unwrap();
    assert_eq!(dump(&db, TABLE), converted);
}

#[tokio::test]
async fn a_gate_watch_drives_the_local_runner() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(&dir, "node.redb", 300);
    let gates = Arc::new(MemGates::new());
    let options = LocalOptions { batch_records: 50, ..LocalOptions::default() };
    let runner = Arc::new(LocalRunner::new(migrations(), db.clone(), "node-1", options).unwrap());
    let mut status = runner.subscribe();
    let task = {
        let (runner, gates, changes) = (runner.clone(), gates.clone(), gates.subscribe());
        tokio::spawn(async move { runner.run_on_changes(&*gates, changes).await })
    };
    let state = |s: &rollgate::migrate::NodeStatus| s.migrations.first().map(|m| (m.state, m.direction));
    // The first pass finds the gate closed.
    let wait = std::time::Duration::from_secs(20);
    tokio::time::timeout(wait, status.wait_for(|s| state(s) == Some((MigrationState::Pending, Direction::Forward))))
        .await
        .unwrap()
        .unwrap();
    gates.enable_flag("records_v2");
    tokio::time::timeout(wait, status.wait_for(|s| state(s) == Some((MigrationState::Done, Direction::Forward))))
        .await
        .unwrap()
        .unwrap();
    assert!(dump(&db, TABLE).iter().all(|(_, v)| v.starts_with(b"v2:")));
    gates.disable_flag("records_v2");
    tokio::time::timeout(wait, status.wait_for(|s| state(s) == Some((MigrationState::Done, Direction::Reverse))))
        .await
        .unwrap()
        .unwrap();
    assert!(dump(&db, TABLE).iter().all(|(_, v)| v.starts_with(b"v1:")));
    task.abort();
}

#[tokio::test]
async fn a_gate_closing_mid_run_pauses_the_migration_before_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let db = data_db(&dir, "node.redb", 500);
    let original = dump(&db, TABLE);
    let gates = Arc::new(MemGates::with_flags(["records_v2"]));
    let options = LocalOptions { batch_records: 50, ..LocalOptions::default() };
    let closer = gates.clone();
    let runner = LocalRunner::new(migrations(), db.clone(), "node-1", options).unwrap().on_progress(move |s| {
        if s.done == 100 {
            closer.disable_flag("records_v2");
        }
    });
    let ran = runner.run_once(&*gates).await.unwrap().ran;
    assert_eq!((ran[0].state, ran[0].done, ran[0].gate_open), (MigrationState::Pending, 100, Some(false)));
    let converted = dump(&db, TABLE).iter().filter(|(_, v)| v.starts_with(b"v2:")).count();
    assert_eq!(converted, 100, "no batch after the gate closed (I1)");
    // Still closed: the partial conversion is undone.
    runner.run_once(&*gates).await.unwrap();
    assert_eq!(dump(&db, TABLE), original);
}

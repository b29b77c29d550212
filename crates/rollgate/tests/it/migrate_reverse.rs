//! Downgrade where it is safe: a reversible flag's reverse steps bring the
//! service format version and the node's data back (the data are extensible
//! records: `meta@2` dropped, `meta@1` made again, byte for byte); an
//! irreversible flag is reported as such, naming the step, before anything
//! runs, and disabling it changes nothing.

use std::sync::Arc;

use crate::migrate_support::{dump, meta_store, unit_format};
use redb::{Database, TableDefinition};
use rollgate::format::{self, FormatPolicy};
use rollgate::migrate::{
    Direction, Gate, Gates, LocalOptions, LocalRunner, MemGates, MigrateError, MigrateKeys, Migrations, Reversibility,
    Rewrite, ServiceOptions, ServiceOutcome, ServiceRunner, ServiceStep, StepContext, StepError, StepRef,
    TableMigration,
};
use rollgate::record::{FeatureKey, Record};
use rollgate::version::TransportVersion;
use rollgate::wire::{self, Decode, Encode, Limits};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("queues");
const TV: TransportVersion = TransportVersion::ZERO;

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
struct Queue {
    name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
struct MetaV1 {
    owner: String,
    size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
struct MetaV2 {
    owner: String,
    size: u64,
    replicas: Vec<String>,
}

const META_V1: FeatureKey<MetaV1> = FeatureKey::new("meta", 1);
const META_V2: FeatureKey<MetaV2> = FeatureKey::new("meta", 2).gated_by("meta_v2");

fn decode(value: &[u8]) -> Result<Record<Queue>, String> {
    wire::decode_frame(value, TV, Limits::DEFAULT).map_err(|e| e.to_string())
}

fn encode(record: &Record<Queue>) -> Vec<u8> {
    wire::encode_to_vec(record, TV, Limits::DEFAULT).unwrap()
}

/// Forward: `meta@1` becomes `meta@2` (written through the gated setter).
fn to_v2(gates: Arc<dyn Gates>) -> impl Fn(&[u8], &[u8]) -> Result<Rewrite, String> + Send + Sync + 'static {
    move |_key, value| {
        let mut record = decode(value)?;
        if record.features.contains(&META_V2) {
            return Ok(Rewrite::Keep);
        }
        let Some(v1) = record.features.get(&META_V1).map_err(|e| e.to_string())? else { return Ok(Rewrite::Keep) };
        let v2 = MetaV2 { owner: v1.owner, size: v1.size, replicas: Vec::new() };
        record.features.set(&META_V2, &v2, &*gates).map_err(|e| e.to_string())?;
        record.features.remove(&META_V1);
        Ok(Rewrite::Put(encode(&record)))
    }
}

/// Reverse: the record-level conversion back.
fn to_v1(_key: &[u8], value: &[u8]) -> Result<Rewrite, String> {
    let mut record = decode(value)?;
    let changed = record
        .features
        .convert_back(&META_V2, &META_V1, |m| MetaV1 { owner: m.owner, size: m.size })
        .map_err(|e| e.to_string())?;
    Ok(if changed { Rewrite::Put(encode(&record)) } else { Rewrite::Keep })
}

const INDEX_KEY: &str = "app/queues/meta_v2_index";

fn migrations(gates: Arc<dyn Gates>) -> Arc<Migrations> {
    let mut m = Migrations::new();
    let noop = |_ctx: StepContext| async { Ok::<(), StepError>(()) };
    m.add_step(ServiceStep::new("queues", 0, "names", Gate::feature("queues_base"), noop).unwrap()).unwrap();
    let step = ServiceStep::new("queues", 1, "meta_index", Gate::flag("meta_v2"), |ctx: StepContext| async move {
        ctx.store.put(INDEX_KEY, b"built".to_vec()).await?;
        Ok::<(), StepError>(())
    })
    .unwrap()
    .with_reverse(|ctx: StepContext| async move {
        ctx.store.delete(INDEX_KEY).await?;
        Ok::<(), StepError>(())
    });
    m.add_step(step).unwrap();
    let table = TableMigration::new("queues_meta_v2", "queues", Gate::flag("meta_v2"), to_v2(gates)).unwrap();
    m.add_table_migration(table.with_reverse(to_v1).changes_format(1, 2)).unwrap();
    Arc::new(m)
}

fn data_db(dir: &tempfile::TempDir) -> Arc<Database> {
    let db = Database::create(dir.path().join("node.redb")).unwrap();
    let wtx = db.begin_write().unwrap();
    format::open_unit(&wtx, TABLE, &FormatPolicy::new(1, 1, "1.0").unwrap()).unwrap();
    {
        let no_flags = MemGates::new();
        let mut t = wtx.open_table(TABLE).unwrap();
        for i in 0..700u32 {
            let mut record = Record::new(Queue { name: format!("q{i}") });
            record.features.set(&META_V1, &MetaV1 { owner: format!("o{}", i % 7), size: i as u64 }, &no_flags).unwrap();
            t.insert(i.to_be_bytes().as_slice(), encode(&record).as_slice()).unwrap();
        }
    }
    wtx.commit().unwrap();
    Arc::new(db)
}

#[tokio::test]
async fn a_reversible_flags_reverse_steps_bring_the_format_and_the_data_back() {
    let dir = tempfile::tempdir().unwrap();
    let meta = meta_store(&dir).await;
    let db = data_db(&dir);
    let original = dump(&db, TABLE);
    let gates = Arc::new(MemGates::with_flags(["meta_v2"]));
    gates.add_feature("queues_base");
    let m = migrations(gates.clone());
    let options = LocalOptions { batch_records: 64, ..LocalOptions::default() };
    let local = LocalRunner::new(m.clone(), db.clone(), "node-1", options).unwrap();
    let services =
        ServiceRunner::new(m.clone(), meta.clone(), gates.clone(), "node-1", ServiceOptions::default()).unwrap();

    assert!(m.reversibility("meta_v2").is_reversible());
    assert_eq!(
        m.reversibility("meta_v2"),
        Reversibility::Reversible {
            steps: vec![
                StepRef::Service { service: "queues".into(), from: 1, to: 2, name: "meta_index".into() },
                StepRef::Table { id: "queues_meta_v2".into(), table: "queues".into() },
            ]
        }
    );
    m.require_reversible("meta_v2").unwrap();

    // Upgrade: format 2, records carry meta@2 only.
    assert_eq!(services.run_once().await.unwrap()[0].version, 2);
    local.run_once(&*gates).await.unwrap();
    let upgraded = dump(&db, TABLE);
    for (_, v) in &upgraded {
        let record = decode(v).unwrap();
        assert!(record.features.contains(&META_V2) && !record.features.contains(&META_V1));
    }
    assert_eq!(unit_format(&db, "queues"), 2);
    assert!(meta.get(INDEX_KEY).await.unwrap().is_some());

    // Writers must stop producing meta@2 first.
    let err = services.disable_flag("meta_v2", Some(&local)).await.unwrap_err();
    assert!(matches!(err, MigrateError::FlagStillEnabled { .. }), "{err}");
    assert_eq!(dump(&db, TABLE), upgraded, "a refused disable changes nothing");

    gates.disable_flag("meta_v2");
    let report = services.disable_flag("meta_v2", Some(&local)).await.unwrap();
    assert_eq!(report.services.len(), 1);
    let queues = &report.services[0];
    assert_eq!((queues.version, queues.outcome.clone()), (1, ServiceOutcome::Migrated { from: 2 }));
    assert_eq!(
        queues.steps.iter().map(|s| (s.from, s.to, s.direction)).collect::<Vec<_>>(),
        [(2, 1, Direction::Reverse)]
    );
    let tables = report.tables.unwrap();
    assert_eq!(tables.ran.len(), 1);
    assert_eq!((tables.ran[0].direction, tables.ran[0].done), (Direction::Reverse, 700));

    assert_eq!(dump(&db, TABLE), original, "every record is back, byte for byte");
    assert_eq!(unit_format(&db, "queues"), 1);
    assert!(meta.get(INDEX_KEY).await.unwrap().is_none(), "the service step's reverse ran");
    let (format, _) = services.read_format("queues").await.unwrap();
    assert_eq!(format.version, 1);
    assert_eq!(format.history.last().unwrap().direction, Direction::Reverse);

    // Nothing runs forward again while the flag stays disabled (I1).
    let report = services.run_once().await.unwrap().remove(0);
    assert_eq!((report.outcome, report.version), (ServiceOutcome::UpToDate, 1));
    assert!(local.run_once(&*gates).await.unwrap().ran.is_empty());
    assert_eq!(dump(&db, TABLE), original);
    // Disabling again finds nothing to do.
    let again = services.disable_flag("meta_v2", Some(&local)).await.unwrap();
    assert!(again.services.is_empty() && again.tables.unwrap().ran.is_empty());
}

#[tokio::test]
async fn an_irreversible_flag_is_reported_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let meta = meta_store(&dir).await;
    let db = data_db(&dir);
    let mut m = Migrations::new();
    let noop = |_ctx: StepContext| async { Ok::<(), StepError>(()) };
    m.add_step(ServiceStep::new("auth", 0, "rekey", Gate::flag("auth_v2"), noop).unwrap()).unwrap();
    let keep = |_: &[u8], _: &[u8]| Ok(Rewrite::Keep);
    m.add_table_migration(TableMigration::new("queues_compact", "queues", Gate::flag("compact"), keep).unwrap())
        .unwrap();
    let m = Arc::new(m);

    let verdict = m.reversibility("auth_v2");
    assert!(!verdict.is_reversible());
    assert_eq!(
        verdict,
        Reversibility::Irreversible {
            blockers: vec![StepRef::Service { service: "auth".into(), from: 0, to: 1, name: "rekey".into() }]
        }
    );
    let json = serde_json::to_value(&verdict).unwrap();
    assert_eq!(json["verdict"], "irreversible");
    assert_eq!(json["blockers"][0]["name"], "rekey");
    let err = m.require_reversible("auth_v2").unwrap_err();
    assert_eq!(
        err.to_string(),
        "flag `auth_v2` cannot be disabled: service `auth` step 0 -> 1 (`rekey`) has no reverse step, so its data \
         cannot be converted back"
    );
    let err = m.require_reversible("compact").unwrap_err();
    assert!(
        err.to_string().contains("table migration `queues_compact` on table `queues` has no reverse step"),
        "{err}"
    );
    assert_eq!(m.reversibility("no_steps"), Reversibility::Reversible { steps: vec![] });

    // Applied, then refused on the way back: nothing changes.
    let gates = Arc::new(MemGates::with_flags(["auth_v2", "compact"]));
    let services =
        ServiceRunner::new(m.clone(), meta.clone(), gates.clone(), "node-1", ServiceOptions::default()).unwrap();
    let local = LocalRunner::new(m.clone(), db.clone(), "node-1", LocalOptions::default()).unwrap();
    services.run_once().await.unwrap();
    local.run_once(&*gates).await.unwrap();
    let key = MigrateKeys::new("rollgate/").format("auth");
    let before = meta.get(&key).await.unwrap();
    gates.disable_flag("auth_v2");
    let err = services.disable_flag("auth_v2", Some(&local)).await.unwrap_err();
    assert!(matches!(err, MigrateError::Irreversible { .. }), "{err}");
    assert!(err.to_string().contains("service `auth` step 0 -> 1 (`rekey`)"), "{err}");
    assert_eq!(meta.get(&key).await.unwrap(), before, "the version stays");

    let data = dump(&db, TABLE);
    gates.disable_flag("compact");
    let err = local.reverse_flag("compact", &*gates).await.unwrap_err();
    assert!(err.to_string().contains("table migration `queues_compact`"), "{err}");
    // Converging on the closed gate leaves an irreversible migration's data alone.
    assert!(local.run_once(&*gates).await.unwrap().ran.is_empty());
    assert_eq!(dump(&db, TABLE), data);
}

//! Extensible records across releases: random records written by "new"
//! code (knowing `meta@1`, `meta@2` and `tags@1`, plus entries from an even
//! newer release), read and re-written by "old" code (knowing only `meta@1`,
//! sometimes changing it), then read again by new code. Nothing is lost:
//! every entry old code does not know comes back byte for byte, and the
//! fallback from `meta@2` to `meta@1` is right. Through the wire codec and
//! through serde (JSON), and across the two.
//!
//! Seeded from `ROLLGATE_SEED` (printed), so a failure can be replayed.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use rollgate::migrate::MemGates;
use rollgate::record::{FeatureKey, FeatureMap, KeyId, Record, RecordError};
use rollgate::version::TransportVersion;
use rollgate::wire::{self, Decode, Encode, Limits};

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize, serde::Deserialize)]
struct Queue {
    name: String,
    durable: bool,
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

impl From<MetaV1> for MetaV2 {
    fn from(v1: MetaV1) -> Self {
        MetaV2 { owner: v1.owner, size: v1.size, replicas: Vec::new() }
    }
}

const META_V1: FeatureKey<MetaV1> = FeatureKey::new("meta", 1);
const META_V2: FeatureKey<MetaV2> = FeatureKey::new("meta", 2).gated_by("meta_v2");
const TAGS: FeatureKey<Vec<String>> = FeatureKey::new("tags", 1).gated_by("queue_tags");

fn runner(cases: u32) -> TestRunner {
    let seed = std::env::var("ROLLGATE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    println!("proptest seed: ROLLGATE_SEED={seed}");
    TestRunner::new(Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() })
}

/// What new code writes.
#[derive(Clone, Debug)]
struct Written {
    core: Queue,
    v1: Option<MetaV1>,
    v2: Option<MetaV2>,
    tags: Option<Vec<String>>,
    /// Entries of a release newer than "new" (raw bytes).
    future: Vec<(String, u32, Vec<u8>)>,
}

/// What old code does with the record.
#[derive(Clone, Debug)]
enum OldEdit {
    Nothing,
    /// Sets `meta@1` (creating it when absent).
    SetMeta(MetaV1),
    /// Renames the queue (core fields only).
    Rename(String),
}

/// How the record travels.
#[derive(Clone, Copy, Debug)]
enum Path {
    Wire,
    Json,
    /// New writes the wire codec, old re-writes JSON, new reads JSON.
    WireThenJson,
}

fn meta_v1() -> impl Strategy<Value = MetaV1> {
    ("[a-z]{0,8}", any::<u64>()).prop_map(|(owner, size)| MetaV1 { owner, size })
}

fn written() -> impl Strategy<Value = Written> {
    let core = (".{0,12}", any::<bool>()).prop_map(|(name, durable)| Queue { name, durable });
    let v2 = (meta_v1(), proptest::collection::vec("[a-z0-9]{1,6}", 0..4)).prop_map(|(m, replicas)| MetaV2 {
        owner: m.owner,
        size: m.size,
        replicas,
    });
    let future = proptest::collection::vec(
        ("(future|meta|zz_later)", 1u32..1000, proptest::collection::vec(any::<u8>(), 0..40)),
        0..4,
    );
    (
        core,
        proptest::option::of(meta_v1()),
        proptest::option::of(v2),
        proptest::option::of(proptest::collection::vec(".{0,5}", 0..3)),
        future,
    )
        .prop_map(|(core, v1, v2, tags, future)| Written { core, v1, v2, tags, future })
}

fn edit() -> impl Strategy<Value = OldEdit> {
    prop_oneof![Just(OldEdit::Nothing), meta_v1().prop_map(OldEdit::SetMeta), ".{0,8}".prop_map(OldEdit::Rename)]
}

fn path() -> impl Strategy<Value = Path> {
    prop_oneof![Just(Path::Wire), Just(Path::Json), Just(Path::WireThenJson)]
}

const TV: TransportVersion = TransportVersion::from_id(9_000_0_00);

fn to_wire(r: &Record<Queue>) -> Vec<u8> {
    wire::encode_to_vec(r, TV, Limits::DEFAULT).expect("encode")
}

fn from_wire(bytes: &[u8]) -> Record<Queue> {
    wire::decode_frame(bytes, TV, Limits::DEFAULT).expect("decode")
}

/// New code builds the record through the typed, gated setters.
fn new_code_writes(w: &Written) -> Record<Queue> {
    let gates = MemGates::with_flags(["meta_v2", "queue_tags"]);
    let mut record = Record::new(w.core.clone());
    if let Some(v1) = &w.v1 {
        record.features.set(&META_V1, v1, &gates).unwrap();
    }
    if let Some(v2) = &w.v2 {
        record.features.set(&META_V2, v2, &gates).unwrap();
    }
    if let Some(tags) = &w.tags {
        record.features.set(&TAGS, tags, &gates).unwrap();
    }
    // A newer release's entries arrive as bytes (e.g. from a newer node):
    // inject them through the JSON form, as any foreign map would come in.
    let mut json = serde_json::to_value(&record.features).unwrap();
    for (name, version, bytes) in &w.future {
        let key = format!("{name}@{version}");
        if KeyId::parse(&key).is_some_and(|id| id != META_V1.id() && id != META_V2.id() && id != TAGS.id()) {
            json[key] = serde_json::Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect());
        }
    }
    record.features = serde_json::from_value(json).unwrap();
    record
}

/// Old code: knows only `meta@1` and the core fields.
fn old_code_edits(mut record: Record<Queue>, edit: &OldEdit) -> Record<Queue> {
    let no_flags = MemGates::new();
    match edit {
        OldEdit::Nothing => {}
        OldEdit::SetMeta(m) => {
            let _current: Option<MetaV1> = record.features.get(&META_V1).unwrap();
            record.features.set(&META_V1, m, &no_flags).unwrap();
        }
        OldEdit::Rename(name) => record.core.name = name.clone(),
    }
    record
}

#[test]
fn old_code_round_trips_what_new_code_wrote() {
    let mut runner = runner(512);
    runner
        .run(&(written(), edit(), path()), |(w, edit, path)| {
            let original = new_code_writes(&w);
            // Through old code.
            let after_old: Record<Queue> = match path {
                Path::Wire => {
                    let seen = from_wire(&to_wire(&original));
                    from_wire(&to_wire(&old_code_edits(seen, &edit)))
                }
                Path::Json => {
                    let seen: Record<Queue> = serde_json::from_str(&serde_json::to_string(&original).unwrap()).unwrap();
                    let json = serde_json::to_string(&old_code_edits(seen, &edit)).unwrap();
                    serde_json::from_str(&json).unwrap()
                }
                Path::WireThenJson => {
                    let seen = from_wire(&to_wire(&original));
                    let json = serde_json::to_vec(&old_code_edits(seen, &edit)).unwrap();
                    serde_json::from_slice(&json).unwrap()
                }
            };

            // Every entry old code does not know is byte-identical, and none appeared.
            for (id, bytes) in original.features.entries() {
                if *id != META_V1.id() {
                    prop_assert_eq!(after_old.features.raw(id), Some(bytes), "entry {} changed", id);
                }
            }
            let expected_len = original.features.len()
                + usize::from(matches!(edit, OldEdit::SetMeta(_)) && !original.features.contains(&META_V1));
            prop_assert_eq!(after_old.features.len(), expected_len);

            // meta@1: what old code set, else what new code wrote.
            let v1_now = after_old.features.get(&META_V1).unwrap();
            let v1_expected = match &edit {
                OldEdit::SetMeta(m) => Some(m.clone()),
                _ => w.v1.clone(),
            };
            prop_assert_eq!(&v1_now, &v1_expected);

            // New code: meta@2 when present, else meta@1 converted.
            let (meta, from) = match after_old.features.lookup(&META_V2).or(&META_V1, MetaV2::from).get_with_key() {
                Ok(Some((m, k))) => (Some(m), Some(k)),
                Ok(None) => (None, None),
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            };
            match (&w.v2, &v1_expected) {
                (Some(v2), _) => {
                    prop_assert_eq!(meta.as_ref(), Some(v2));
                    prop_assert_eq!(from, Some(META_V2.id()));
                }
                (None, Some(v1)) => {
                    prop_assert_eq!(meta, Some(MetaV2::from(v1.clone())));
                    prop_assert_eq!(from, Some(META_V1.id()));
                }
                (None, None) => prop_assert_eq!(meta, None),
            }
            prop_assert_eq!(after_old.features.get(&TAGS).unwrap(), w.tags.clone());

            // Core fields.
            let mut core = w.core.clone();
            if let OldEdit::Rename(n) = &edit {
                core.name = n.clone();
            }
            prop_assert_eq!(&after_old.core, &core);

            // Without an edit, old code's bytes are exactly new code's bytes.
            if matches!(edit, OldEdit::Nothing) {
                prop_assert_eq!(to_wire(&after_old), to_wire(&original));
                prop_assert_eq!(serde_json::to_string(&after_old).unwrap(), serde_json::to_string(&original).unwrap());
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn i1_writers_cannot_add_a_gated_key_before_its_flag() {
    let gates = MemGates::new();
    let mut record = Record::new(Queue { name: "q".into(), durable: true });
    record.features.set(&META_V1, &MetaV1 { owner: "a".into(), size: 1 }, &gates).unwrap();
    let before = to_wire(&record);
    let v2 = MetaV2 { owner: "a".into(), size: 1, replicas: vec!["n2".into()] };
    let err = record.features.set(&META_V2, &v2, &gates).unwrap_err();
    assert_eq!(err, RecordError::FlagNotEnabled { key: "meta@2".into(), flag: "meta_v2".into() });
    assert_eq!(to_wire(&record), before, "a refused write changes nothing");
    gates.enable_flag("meta_v2");
    record.features.set(&META_V2, &v2, &gates).unwrap();
    assert_eq!(record.features.lookup(&META_V2).or(&META_V1, MetaV2::from).get().unwrap(), Some(v2));
}

#[test]
fn downgrade_converts_in_flight_records_back() {
    let gates = MemGates::with_flags(["meta_v2"]);
    let mut record = Record::new(Queue { name: "q".into(), durable: false });
    let v2 = MetaV2 { owner: "b".into(), size: 9, replicas: vec!["n3".into()] };
    record.features.set(&META_V2, &v2, &gates).unwrap();
    // The flag is being disabled: the new key goes, the old one is made.
    let changed =
        record.features.convert_back(&META_V2, &META_V1, |m| MetaV1 { owner: m.owner, size: m.size }).unwrap();
    assert!(changed);
    let bytes = to_wire(&record);
    let old_view = from_wire(&bytes);
    assert!(!old_view.features.contains(&META_V2));
    assert_eq!(old_view.features.get(&META_V1).unwrap(), Some(MetaV1 { owner: "b".into(), size: 9 }));
}

#[test]
fn garbage_bytes_and_json_get_errors_not_panics() {
    let mut runner = runner(2048);
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..256), |bytes| {
            let _ = wire::decode_frame::<Record<Queue>>(&bytes, TV, Limits::DEFAULT);
            let _ = FeatureMap::from_bytes(&bytes, Default::default());
            let _ = serde_json::from_slice::<Record<Queue>>(&bytes);
            Ok(())
        })
        .unwrap();
    // A truncated valid record is an error.
    let gates = MemGates::new();
    let mut record = Record::new(Queue { name: "q".into(), durable: true });
    record.features.set(&META_V1, &MetaV1 { owner: "a".into(), size: 3 }, &gates).unwrap();
    let bytes = to_wire(&record);
    for cut in 0..bytes.len() {
        assert!(wire::decode_frame::<Record<Queue>>(&bytes[..cut], TV, Limits::DEFAULT).is_err(), "cut at {cut}");
    }
}

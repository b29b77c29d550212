//! The formats of the `records` storage unit and the node-local migrations
//! between them (rollgate's [`TableMigration`]s, run by a [`LocalRunner`]
//! on every node, following the node's flag bits).
//!
//! | format | layout | reached by | gate | back |
//! |---|---|---|---|---|
//! | 1 | every record has `meta@1` | creation (every unit starts here) | - | - |
//! | 2 | every record also has `meta@2` | `records_meta_v2`: adds `meta@2` (derived from `meta@1` and the version) to each record | flag `record_meta_v2` | drops `meta@2` (`meta@1` stays): format 1 again |
//! | 3 | format 2 plus the expiry index (table `expiry`) | `records_expiry_index`: fills the index from the records' expiry times, in each batch's transaction | flag `ttl` | none: `ttl` is irreversible |
//!
//! Which release reads what: 1.0 reads 1..=1, 1.1 and 1.2 read 1..=3, 2.0
//! reads 2..=3 (see [`crate::releases`]). A unit created by any release
//! starts at format 1 (an empty unit below a release's readable formats is
//! accepted: its migrations bring it up before anything is stored).
//!
//! Each node publishes its migrations' progress to the metadata store
//! (`rollgate/migrations/status/<node>`), which `GET /admin/upgrade/status`
//! shows cluster-wide.
//!
//! Disabling `record_meta_v2` (reversible while `ttl` is disabled): the
//! flag's `before_disable` hook, run on the disabling node after every node
//! stopped writing `meta@2`, converts this node's data back
//! ([`LocalRunner::reverse_flag`]) and waits until every other running
//! member published that its own runner (which follows the cleared bit) did
//! the same ([`disable_hook`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rollgate::flags::{Step, StepContext};
use rollgate::migrate::{
    Direction, Gate, Gates, LocalRunner, MigrateError, MigrationState, Migrations, Rewrite, TableMigration,
    cluster_status,
};
use rollgate::record::RecordError as FeatureError;

use crate::record::{self, META_V1, META_V2, MetaV1, MetaV2};
use crate::releases::{RECORD_META_V2, RECORDS_UNIT, Release, TTL};
use crate::storage::{EXPIRY_TABLE, expiry_key};

/// The migration to format 2.
pub const META_V2_MIGRATION: &str = "records_meta_v2";
/// The migration to format 3.
pub const EXPIRY_MIGRATION: &str = "records_expiry_index";

fn key_text(key: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_string())
}

fn decode(key: &[u8], value: &[u8]) -> Result<record::Record, String> {
    record::decode(key_text(key)?, value).map_err(|e| e.to_string())
}

/// Format 1 -> 2: adds `meta@2`, derived from `meta@1` (or the version's
/// node) and the record's version; the release is unknown (empty).
fn add_meta_v2(key: &[u8], value: &[u8], gates: &dyn Gates) -> Result<Rewrite, String> {
    let mut r = decode(key, value)?;
    if r.features.contains(&META_V2) {
        return Ok(Rewrite::Keep);
    }
    let node = match r.features.get(&META_V1).map_err(|e| e.to_string())? {
        Some(MetaV1 { node }) => node,
        None => r.version.node.clone(),
    };
    let v2 = MetaV2 { node, release: String::new(), wall_ms: r.version.wall_ms, logical: r.version.logical };
    // The gated setter: refused (and the batch not written) if the flag's
    // bit was cleared meanwhile.
    r.features.set(&META_V2, &v2, gates).map_err(|e| e.to_string())?;
    Ok(Rewrite::Put(record::encode(&r)))
}

/// Format 2 -> 1: drops `meta@2`, making sure `meta@1` is there.
fn drop_meta_v2(key: &[u8], value: &[u8]) -> Result<Rewrite, String> {
    let mut r = decode(key, value)?;
    let changed = r
        .features
        .convert_back(&META_V2, &META_V1, |v2| MetaV1 { node: v2.node })
        .map_err(|e: FeatureError| e.to_string())?;
    Ok(if changed { Rewrite::Put(record::encode(&r)) } else { Rewrite::Keep })
}

/// Entries of a companion table: (key, value) pairs.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The expiry index entries of one record.
fn expiry_entries(key: &[u8], value: &[u8]) -> Result<Entries, String> {
    let r = decode(key, value)?;
    Ok(if r.expires_at_ms == 0 { Vec::new() } else { vec![(expiry_key(r.expires_at_ms, key), Vec::new())] })
}

/// The table migrations of `release` (none for a release without the flags).
/// `gates` is what the gated record setters check (the node's flag bits).
pub fn for_release(release: &Release, gates: Arc<dyn Gates>) -> Result<Migrations, MigrateError> {
    let mut m = Migrations::new();
    if release.supports_flag(RECORD_META_V2.name) {
        let forward = move |k: &[u8], v: &[u8]| add_meta_v2(k, v, &*gates);
        let t = TableMigration::new(META_V2_MIGRATION, RECORDS_UNIT, Gate::flag(RECORD_META_V2.name), forward)?
            .with_reverse(drop_meta_v2)
            .changes_format(1, 2);
        m.add_table_migration(t)?;
    }
    if release.supports_flag(TTL.name) {
        let keep = |k: &[u8], v: &[u8]| decode(k, v).map(|_| Rewrite::Keep);
        let t = TableMigration::new(EXPIRY_MIGRATION, RECORDS_UNIT, Gate::flag(TTL.name), keep)?
            .changes_format(2, 3)
            .with_companion(EXPIRY_TABLE, expiry_entries)?;
        m.add_table_migration(t)?;
    }
    Ok(m)
}

/// What the flag hooks of a node work on: its [`LocalRunner`] (held weakly:
/// the node owns it) and its gates.
#[derive(Clone)]
pub struct HookTarget {
    /// The node's table migrations.
    pub runner: std::sync::Weak<LocalRunner>,
    /// The node's flag bits.
    pub gates: Arc<dyn Gates>,
}

/// Where the flag hooks find their [`HookTarget`] (set once the node has
/// started: the hooks are declared before, with the flags).
pub type HookSlot = Arc<OnceLock<HookTarget>>;

/// The `before_disable` hook of `record_meta_v2`: converts this node's data
/// back, then waits (at most `wait`) until every other running member
/// published that it did too. An error keeps the flag enabled (rollgate
/// puts it back with the error as its note), and every node's runner then
/// migrates forward again.
pub fn disable_hook(slot: HookSlot, wait: Duration) -> Step {
    Arc::new(move |ctx: StepContext| {
        let slot = slot.clone();
        Box::pin(async move {
            let not_running = || format!("the storage migrations of node {} are not running", ctx.node_id);
            let target = slot.get().cloned().ok_or_else(not_running)?;
            let runner = target.runner.upgrade().ok_or_else(not_running)?;
            runner.reverse_flag(&ctx.flag, &*target.gates).await.map_err(|e| e.to_string())?;
            drop(runner);
            wait_converted_back(&ctx, wait).await
        })
    })
}

/// Waits until every running member other than this one that runs the
/// `record_meta_v2` migration published it as converted back (or never run).
async fn wait_converted_back(ctx: &StepContext, wait: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let view = ctx.cluster.view().await.map_err(|e| e.to_string())?;
        let status =
            cluster_status(ctx.cluster.store().as_ref(), ctx.cluster.keys().root()).await.map_err(|e| e.to_string())?;
        let pending: Vec<String> = view
            .members
            .values()
            .filter(|m| m.is_running() && m.record.node_id != ctx.node_id)
            .filter(|m| m.record.supported_flags.contains(RECORD_META_V2.name))
            .filter(|m| {
                let mine = status.nodes.iter().find(|n| n.node == m.record.node_id);
                let entry = mine.and_then(|n| n.migrations.iter().find(|s| s.id == META_V2_MIGRATION));
                !entry.is_some_and(|s| match (s.direction, s.state) {
                    (Direction::Reverse, MigrationState::Done) => true,
                    (Direction::Forward, MigrationState::Pending) => s.done == 0 && s.started_ms.is_none(),
                    _ => false,
                })
            })
            .map(|m| m.record.node_id.clone())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "node {} did not convert its records back to format 1 within {} s (see `rollgate upgrade status`); \
                 check that it is healthy and disable again",
                pending.join(", "),
                wait.as_secs()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use rollgate::migrate::{MemGates, Reversibility};

    use super::*;
    use crate::hlc::Version;
    use crate::record::{Record, WriteContext};
    use crate::releases::{FlagHooks, RELEASES};

    fn stored(expires_at_ms: u64, gates: &MemGates) -> Vec<u8> {
        let version = Version { wall_ms: 10, logical: 2, node: "n1".into() };
        let ctx = WriteContext { node: "n1", release: "1.0" };
        let features = record::new_features(ctx, &version, Some(b"v"), gates);
        record::encode(&Record { version, value: Some(b"v".to_vec()), expires_at_ms, features })
    }

    #[test]
    fn a_flag_declared_reversible_has_a_reverse_for_every_migration_it_gates() {
        for release in RELEASES {
            let m = for_release(release, Arc::new(MemGates::new())).unwrap();
            let registry = release.registry(&FlagHooks::default()).unwrap();
            for (_, decl) in registry.iter() {
                let verdict = m.reversibility(decl.name());
                if decl.is_reversible() {
                    assert!(
                        verdict.is_reversible(),
                        "release {release}: flag `{}` is declared reversible but {verdict:?}",
                        decl.name()
                    );
                    m.require_reversible(decl.name()).unwrap();
                } else if decl.get_stability() != rollgate::flags::Stability::Required {
                    // Not required: irreversible exactly because a migration has no way back.
                    assert!(!verdict.is_reversible(), "release {release}: flag `{}` could be reversible", decl.name());
                }
            }
        }
        // ttl is irreversible because of the expiry index.
        let m = for_release(crate::releases::find("1.2").unwrap(), Arc::new(MemGates::new())).unwrap();
        let Reversibility::Irreversible { blockers } = m.reversibility("ttl") else { panic!() };
        assert!(blockers[0].to_string().contains(EXPIRY_MIGRATION), "{blockers:?}");
        assert!(
            for_release(crate::releases::find("1.0").unwrap(), Arc::new(MemGates::new()))
                .unwrap()
                .table_migrations()
                .is_empty()
        );
    }

    #[test]
    fn meta_v2_is_added_with_its_flag_and_dropped_again() {
        let old = stored(0, &MemGates::new());
        let closed = MemGates::new();
        let e = add_meta_v2(b"k", &old, &closed).unwrap_err();
        assert!(e.contains("record_meta_v2"), "I1, the gated setter: {e}");
        let open = MemGates::with_flags(["record_meta_v2"]);
        let Rewrite::Put(new) = add_meta_v2(b"k", &old, &open).unwrap() else { panic!() };
        assert_eq!(add_meta_v2(b"k", &new, &open).unwrap(), Rewrite::Keep, "idempotent");
        let r = record::decode("k", &new).unwrap();
        let w = r.writer().unwrap().unwrap();
        assert_eq!((w.node.as_str(), w.from.as_str(), w.release), ("n1", "meta@2", None));
        assert_eq!(w.clock.as_deref(), Some("10.2"));
        let Rewrite::Put(back) = drop_meta_v2(b"k", &new).unwrap() else { panic!() };
        assert_eq!(back, old, "format 1 again, byte for byte");
        assert_eq!(drop_meta_v2(b"k", &back).unwrap(), Rewrite::Keep);
        assert!(add_meta_v2(b"k", b"garbage", &open).unwrap_err().contains("\"k\""));
    }

    #[test]
    fn the_expiry_index_holds_records_with_an_expiry() {
        let gates = MemGates::new();
        assert!(expiry_entries(b"k", &stored(0, &gates)).unwrap().is_empty());
        assert_eq!(expiry_entries(b"k", &stored(77, &gates)).unwrap(), [(expiry_key(77, b"k"), Vec::new())]);
    }
}

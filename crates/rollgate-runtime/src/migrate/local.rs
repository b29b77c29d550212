//! Node-local table migrations: a redb table rewritten in batches, the
//! checkpoint committed in the same write transaction as each batch.
//!
//! A [`TableMigration`] rewrites a table (`&[u8]` keys and values) record by
//! record ([`Rewrite::Keep`], `Put` or `Delete`, or an error naming why),
//! optionally filling a companion table as it goes
//! ([`TableMigration::with_companion`], e.g. a secondary index written in the
//! batch's transaction and removed by a reverse pass). One batch
//! ([`LocalOptions::batch_records`], default 1,000, and `max_batch_bytes`) is
//! one write transaction: read the [`Checkpoint`] (table
//! [`CHECKPOINT_TABLE`]: migration id -> JSON with direction, state, last key,
//! counts, total, node, timestamps), read the next records after the last
//! key, convert them, write them **and the new checkpoint**, commit. A batch
//! that cannot convert a record aborts (nothing of it written) naming the key;
//! a checkpoint that does not decode, or whose last key lies past the table's
//! end, is refused before anything is written
//! ([`LocalRunner::reset_checkpoint`] starts over).
//!
//! The runner follows the gates, checked before every batch: a closed gate
//! whose data was (partly) converted is reversed (newest migration first),
//! then open ones run forward in order; a gate that changes mid-run pauses
//! the migration before its next batch. An optional token bucket
//! ([`RateLimit`]) paces batches. Progress goes to a callback, a watch of the
//! node's [`NodeStatus`](super::NodeStatus) and the store
//! (`migrations/status/<node>`), which
//! [`cluster_status`](super::cluster_status) reads for the admin API.
//!
//! Downgrade: [`LocalRunner::reverse_flag`] converts a flag's data back,
//! batched and resumable like the forward pass; a migration without reverse
//! on the way is `MigrateError::Irreversible`, before anything runs.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{
    Direction, Gate, Gates, MigrateError, MigrateKeys, Migrations, StepRef, escape_key, validate_gate, validate_name,
    validate_node,
};
use super::{MigrationKind, MigrationState, MigrationStatus, NodeStatus};
use crate::format::{FormatVersion, change_format, has_table, validate_unit};
use rollgate_store::{MetaStore, MetaStoreJson};
use rollgate_util::now_ms;

/// The redb table holding checkpoints: migration id -> JSON [`Checkpoint`].
pub const CHECKPOINT_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("rollgate_migrations");
/// Largest checkpoint accepted when read, in bytes.
pub const MAX_CHECKPOINT_BYTES: usize = 64 * 1024;

/// What a conversion does with one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// Leave it as it is (already converted, or nothing to do).
    Keep,
    /// Replace its value.
    Put(Vec<u8>),
    /// Delete it.
    Delete,
}

/// A record conversion: `(key, value) -> Rewrite`, or an error message for a
/// record it cannot convert (the batch is then not written). It must be
/// idempotent: a converted record converts to itself (`Keep`).
pub type RecordFn = Arc<dyn Fn(&[u8], &[u8]) -> Result<Rewrite, String> + Send + Sync>;

/// The entries one record contributes to a companion table (e.g. a
/// secondary index): `(key, value) -> [(companion key, companion value)]`,
/// or an error message (the batch is then not written). It must be
/// deterministic: a reverse pass removes the keys it returns.
pub type CompanionFn = Arc<dyn Fn(&[u8], &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> + Send + Sync>;

/// A node-local migration of one redb table (`&[u8]` keys and values),
/// behind a gate, with an optional reverse and an optional format change of
/// the table's unit stamp.
#[derive(Clone)]
pub struct TableMigration {
    id: String,
    table: String,
    gate: Gate,
    forward: RecordFn,
    reverse: Option<RecordFn>,
    format: Option<(FormatVersion, FormatVersion)>,
    companion: Option<(String, CompanionFn)>,
}

impl fmt::Debug for TableMigration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableMigration")
            .field("id", &self.id)
            .field("table", &self.table)
            .field("gate", &self.gate)
            .field("reversible", &self.reverse.is_some())
            .field("format", &self.format)
            .field("companion", &self.companion.as_ref().map(|(t, _)| t))
            .finish()
    }
}

impl TableMigration {
    /// A migration `id` of table `table`, converting each record with
    /// `forward`, run when `gate` is open.
    pub fn new<F>(id: &str, table: &str, gate: Gate, forward: F) -> Result<Self, MigrateError>
    where
        F: Fn(&[u8], &[u8]) -> Result<Rewrite, String> + Send + Sync + 'static,
    {
        validate_name("migration id", id)?;
        validate_unit(table).map_err(|_| MigrateError::InvalidName {
            what: "table name",
            name: rollgate_util::shorten(table),
            reason: "1 to 128 bytes without control characters",
        })?;
        validate_gate(&gate)?;
        Ok(TableMigration {
            id: id.to_string(),
            table: table.to_string(),
            gate,
            forward: Arc::new(forward),
            reverse: None,
            format: None,
            companion: None,
        })
    }

    /// Declares the reverse conversion (idempotent too).
    pub fn with_reverse<F>(mut self, reverse: F) -> Self
    where
        F: Fn(&[u8], &[u8]) -> Result<Rewrite, String> + Send + Sync + 'static,
    {
        self.reverse = Some(Arc::new(reverse));
        self
    }

    /// When the migration finishes, the table's unit stamp moves from `from`
    /// to `to` (back to `from` when the reverse finishes), in the same
    /// transaction as the last batch. The table must be stamped
    /// ([`crate::format::open_unit`]).
    pub fn changes_format(mut self, from: FormatVersion, to: FormatVersion) -> Self {
        self.format = Some((from, to));
        self
    }

    /// Also fills a companion table (`&[u8]` keys and values), e.g. a
    /// secondary index of the migrated records: for every record the forward
    /// pass leaves in the table (kept or rewritten), the entries `f(key,
    /// value)` returns are put into `companion` in the same write
    /// transaction as the batch, so the companion is complete exactly when
    /// the migration is done and resumes with it after a crash. A reverse
    /// pass removes the keys `f` returns for each record it processes.
    pub fn with_companion<F>(mut self, companion: &str, f: F) -> Result<Self, MigrateError>
    where
        F: Fn(&[u8], &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> + Send + Sync + 'static,
    {
        let reserved = [self.table.as_str(), CHECKPOINT_TABLE.name(), crate::format::FORMAT_TABLE.name()];
        if validate_unit(companion).is_err() || reserved.contains(&companion) {
            return Err(MigrateError::InvalidName {
                what: "companion table name",
                name: rollgate_util::shorten(companion),
                reason: "1 to 128 bytes without control characters, not the migrated table nor a rollgate table",
            });
        }
        self.companion = Some((companion.to_string(), Arc::new(f)));
        Ok(self)
    }

    /// The companion table, if the migration fills one.
    pub fn companion(&self) -> Option<&str> {
        self.companion.as_ref().map(|(t, _)| t.as_str())
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The table.
    pub fn table(&self) -> &str {
        &self.table
    }
    /// The gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }
    /// Whether it has a reverse.
    pub fn has_reverse(&self) -> bool {
        self.reverse.is_some()
    }
    /// The format change it declares.
    pub fn format_change(&self) -> Option<(FormatVersion, FormatVersion)> {
        self.format
    }
    /// The migration, for messages.
    pub fn describe(&self) -> StepRef {
        StepRef::Table { id: self.id.clone(), table: self.table.clone() }
    }
}

/// Whether a checkpoint's pass is finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointState {
    /// Batches remain (or a crash interrupted it: resumable).
    Running,
    /// Every record was processed.
    Done,
}

/// The progress of one table migration, stored in [`CHECKPOINT_TABLE`] in
/// the same write transaction as the batch it describes. Unknown fields are
/// ignored when read, so later releases can add some.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The pass: forward or reverse.
    pub direction: Direction,
    /// Running or done.
    pub state: CheckpointState,
    /// The last key processed (hex in JSON), `None` before the first batch.
    #[serde(with = "hex_key")]
    pub last_key: Option<Vec<u8>>,
    /// Records processed.
    pub done: u64,
    /// Records rewritten.
    pub changed: u64,
    /// Records deleted.
    pub deleted: u64,
    /// Records in the table when the pass started.
    pub total: u64,
    /// The node that runs it.
    pub node: String,
    /// When the pass started (ms since the Unix epoch).
    pub started_ms: u64,
    /// When it finished.
    pub finished_ms: Option<u64>,
}

impl Checkpoint {
    fn fresh(direction: Direction, total: u64, node: &str) -> Checkpoint {
        Checkpoint {
            direction,
            state: CheckpointState::Running,
            last_key: None,
            done: 0,
            changed: 0,
            deleted: 0,
            total,
            node: node.to_string(),
            started_ms: now_ms(),
            finished_ms: None,
        }
    }

    /// Decodes a stored checkpoint; bounded and checked.
    pub fn from_bytes(migration: &str, bytes: &[u8]) -> Result<Checkpoint, MigrateError> {
        let corrupt = |reason: String| MigrateError::CheckpointCorrupt { migration: migration.to_string(), reason };
        if bytes.len() > MAX_CHECKPOINT_BYTES {
            return Err(corrupt(format!("{} bytes, over the limit of {MAX_CHECKPOINT_BYTES}", bytes.len())));
        }
        let ck: Checkpoint = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if ck.changed.checked_add(ck.deleted).is_none_or(|n| n > ck.done) {
            return Err(corrupt(format!(
                "{} changed + {} deleted is more than the {} processed",
                ck.changed, ck.deleted, ck.done
            )));
        }
        if ck.done > 0 && ck.last_key.is_none() {
            return Err(corrupt(format!("{} records processed but no last key", ck.done)));
        }
        validate_node(&ck.node).map_err(|e| corrupt(e.to_string()))?;
        Ok(ck)
    }

    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};

    const HEX: &[u8; 16] = b"0123456789abcdef";

    pub fn serialize<S: Serializer>(key: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match key {
            None => s.serialize_none(),
            Some(k) => {
                let hex: String =
                    k.iter().flat_map(|b| [HEX[(b >> 4) as usize] as char, HEX[(b & 15) as usize] as char]).collect();
                s.serialize_some(&hex)
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(hex) = Option::<String>::deserialize(d)? else { return Ok(None) };
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(serde::de::Error::custom("last_key is not lowercase hex")),
        };
        if !hex.len().is_multiple_of(2) {
            return Err(serde::de::Error::custom("last_key is not lowercase hex"));
        }
        hex.as_bytes()
            .chunks_exact(2)
            .map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?))
            .collect::<Result<_, _>>()
            .map(Some)
    }
}

/// A token bucket: at most `records_per_s` on average, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Records per second.
    pub records_per_s: u64,
    /// Records that may go at once after an idle period.
    pub burst: u64,
}

/// Options of a [`LocalRunner`].
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Most records per batch (one write transaction).
    pub batch_records: usize,
    /// Most key + value bytes read per batch.
    pub max_batch_bytes: usize,
    /// Pace (off by default).
    pub rate_limit: Option<RateLimit>,
    /// Durability of each batch's commit.
    pub durability: Durability,
    /// This release, written into a unit stamp a migration changes.
    pub release: String,
    /// The key root of the published status (ends with `/`).
    pub root: String,
    /// How often the status is published while a migration runs.
    pub publish_interval_ms: u64,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            batch_records: 1000,
            max_batch_bytes: 8 << 20,
            rate_limit: None,
            durability: Durability::Immediate,
            release: "unknown".into(),
            root: "rollgate/".into(),
            publish_interval_ms: 1000,
        }
    }
}

/// What a [`LocalRunner`] call did: the final status of each migration it ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LocalReport {
    /// The migrations that ran, in the order they ran.
    pub ran: Vec<MigrationStatus>,
}

type ProgressFn = Arc<dyn Fn(&MigrationStatus) + Send + Sync>;

#[derive(Clone, Debug, Default)]
struct Live {
    running: bool,
    error: Option<String>,
    rate_per_s: f64,
}

/// Runs the table migrations of one node's redb database.
pub struct LocalRunner {
    migrations: Arc<Migrations>,
    db: Arc<Database>,
    node: String,
    options: LocalOptions,
    keys: MigrateKeys,
    publisher: Option<Arc<dyn MetaStore>>,
    progress: Option<ProgressFn>,
    status: watch::Sender<NodeStatus>,
    live: Mutex<BTreeMap<String, Live>>,
    run_lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for LocalRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalRunner").field("node", &self.node).field("options", &self.options).finish()
    }
}

struct BatchResult {
    checkpoint: Checkpoint,
    processed: u64,
}

fn redb_err<E: Into<redb::Error>>(migration: &str, what: &'static str) -> impl FnOnce(E) -> MigrateError + use<E> {
    let migration = migration.to_string();
    move |e| MigrateError::Redb { migration, what, reason: e.into().to_string() }
}

/// One batch in one write transaction: read the checkpoint, convert the
/// next records, write them and the new checkpoint, commit. Any error
/// aborts the transaction (nothing written).
fn run_batch(
    db: &Database,
    m: &TableMigration,
    direction: Direction,
    node: &str,
    options: &LocalOptions,
) -> Result<BatchResult, MigrateError> {
    let id = m.id();
    let mut wtx = db.begin_write().map_err(redb_err(id, "starting a write transaction"))?;
    wtx.set_durability(options.durability).map_err(redb_err(id, "setting the durability"))?;
    let mut checkpoint = match read_checkpoint(&wtx, id)? {
        Some(ck) if ck.direction == direction => {
            if ck.state == CheckpointState::Done {
                wtx.abort().map_err(redb_err(id, "ending a transaction"))?;
                return Ok(BatchResult { checkpoint: ck, processed: 0 });
            }
            ck
        }
        _ => Checkpoint::fresh(direction, 0, node),
    };
    let (processed, more) = if has_table(&wtx, m.table()).map_err(redb_err(id, "listing tables"))? {
        convert_next_records(&wtx, m, direction, &mut checkpoint, options)?
    } else {
        (0, false)
    };
    checkpoint.done += processed;
    if !more {
        checkpoint.state = CheckpointState::Done;
        checkpoint.finished_ms = Some(now_ms());
        if let Some((from, to)) = m.format {
            let (from, to) = if direction == Direction::Forward { (from, to) } else { (to, from) };
            change_format(&wtx, m.table(), from, to, &options.release)
                .map_err(|source| MigrateError::Format { migration: id.to_string(), source })?;
        }
    }
    {
        let mut table = wtx.open_table(CHECKPOINT_TABLE).map_err(redb_err(id, "opening the checkpoint table"))?;
        table.insert(id, checkpoint.to_bytes().as_slice()).map_err(redb_err(id, "writing the checkpoint"))?;
    }
    wtx.commit().map_err(redb_err(id, "committing the batch"))?;
    Ok(BatchResult { checkpoint, processed })
}

/// The migration's checkpoint, as of this transaction.
fn read_checkpoint(wtx: &WriteTransaction, id: &str) -> Result<Option<Checkpoint>, MigrateError> {
    if !has_table(wtx, CHECKPOINT_TABLE.name()).map_err(redb_err(id, "listing tables"))? {
        return Ok(None);
    }
    let table = wtx.open_table(CHECKPOINT_TABLE).map_err(redb_err(id, "opening the checkpoint table"))?;
    let value = table.get(id).map_err(redb_err(id, "reading the checkpoint"))?;
    value.map(|v| Checkpoint::from_bytes(id, v.value())).transpose()
}

/// Converts the records after the checkpoint (a batch, bounded in records
/// and bytes) and their companion entries in `wtx`; advances the
/// checkpoint's counters and last key. Returns how many records it read and
/// whether more follow.
fn convert_next_records(
    wtx: &WriteTransaction,
    m: &TableMigration,
    direction: Direction,
    checkpoint: &mut Checkpoint,
    options: &LocalOptions,
) -> Result<(u64, bool), MigrateError> {
    let id = m.id();
    let convert = match direction {
        Direction::Forward => &m.forward,
        Direction::Reverse => m.reverse.as_ref().ok_or_else(|| MigrateError::Irreversible {
            flag: m.gate.flag_name().unwrap_or_default().to_string(),
            step: m.describe().to_string(),
        })?,
    };
    let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(m.table());
    let mut table = wtx.open_table(def).map_err(redb_err(id, "opening the table"))?;
    if checkpoint.done == 0 && checkpoint.last_key.is_none() {
        checkpoint.total = table.len().map_err(redb_err(id, "counting the table's records"))?;
    }
    if let Some(last) = &checkpoint.last_key {
        let table_last = table.last().map_err(redb_err(id, "reading the table's last key"))?;
        let table_last = table_last.map(|(k, _)| k.value().to_vec());
        if table_last.as_deref().is_none_or(|t| t < last.as_slice()) {
            return Err(MigrateError::CheckpointPastEnd {
                migration: id.to_string(),
                table: m.table().to_string(),
                checkpoint: escape_key(last),
                last: table_last.as_deref().map_or_else(|| "(empty)".to_string(), escape_key),
            });
        }
    }
    let mut items: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(options.batch_records.min(4096));
    let mut more = false;
    {
        let lower = match &checkpoint.last_key {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Unbounded,
        };
        let range = table.range::<&[u8]>((lower, Bound::Unbounded)).map_err(redb_err(id, "reading the next batch"))?;
        let mut bytes = 0usize;
        for entry in range {
            let (k, v) = entry.map_err(redb_err(id, "reading the next batch"))?;
            if items.len() >= options.batch_records.max(1) || bytes >= options.max_batch_bytes {
                more = true;
                break;
            }
            bytes += k.value().len() + v.value().len();
            items.push((k.value().to_vec(), v.value().to_vec()));
        }
    }
    let record_err = |key: &[u8], reason: String| MigrateError::Record {
        migration: id.to_string(),
        table: m.table().to_string(),
        key: escape_key(key),
        direction,
        reason,
    };
    // The companion entries of each record: from the value the forward
    // pass leaves, or (reverse) from the value before it is converted back.
    let mut companion_entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (key, value) in &items {
        let rewrite = convert(key, value).map_err(|reason| record_err(key, reason))?;
        if let Some((_, index)) = &m.companion {
            let source = match (&rewrite, direction) {
                (Rewrite::Delete, Direction::Forward) => None,
                (Rewrite::Put(new), Direction::Forward) => Some(new.as_slice()),
                (_, _) => Some(value.as_slice()),
            };
            if let Some(source) = source {
                companion_entries.extend(index(key, source).map_err(|reason| record_err(key, reason))?);
            }
        }
        match rewrite {
            Rewrite::Keep => {}
            Rewrite::Put(new) => {
                table.insert(key.as_slice(), new.as_slice()).map_err(redb_err(id, "writing a record"))?;
                checkpoint.changed += 1;
            }
            Rewrite::Delete => {
                table.remove(key.as_slice()).map_err(redb_err(id, "deleting a record"))?;
                checkpoint.deleted += 1;
            }
        }
    }
    write_companion(wtx, m, direction, &companion_entries)?;
    if let Some((last, _)) = items.last() {
        checkpoint.last_key = Some(last.clone());
    }
    Ok((items.len() as u64, more))
}

/// Writes (forward) or removes (reverse) a batch's companion entries.
fn write_companion(
    wtx: &WriteTransaction,
    m: &TableMigration,
    direction: Direction,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), MigrateError> {
    let id = m.id();
    if let Some((name, _)) = &m.companion {
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(name);
        let mut companion = wtx.open_table(def).map_err(redb_err(id, "opening the companion table"))?;
        for (k, v) in entries {
            match direction {
                Direction::Forward => {
                    companion.insert(k.as_slice(), v.as_slice()).map_err(redb_err(id, "writing the companion"))?;
                }
                Direction::Reverse => {
                    companion.remove(k.as_slice()).map_err(redb_err(id, "deleting from the companion"))?;
                }
            }
        }
    }
    Ok(())
}

fn read_checkpoints(db: &Database, migrations: &Migrations) -> Result<BTreeMap<String, Checkpoint>, MigrateError> {
    let mut out = BTreeMap::new();
    let rtx = db.begin_read().map_err(redb_err("*", "starting a read transaction"))?;
    let table = match rtx.open_table(CHECKPOINT_TABLE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(redb_err("*", "opening the checkpoint table")(e)),
    };
    for m in migrations.table_migrations() {
        if let Some(v) = table.get(m.id()).map_err(redb_err(m.id(), "reading the checkpoint"))? {
            out.insert(m.id().to_string(), Checkpoint::from_bytes(m.id(), v.value())?);
        }
    }
    Ok(out)
}

/// Whether the data of a migration whose gate is closed must be converted back.
fn needs_reverse(ck: Option<&Checkpoint>) -> bool {
    match ck {
        Some(ck) => ck.direction == Direction::Forward || ck.state == CheckpointState::Running,
        None => false,
    }
}

/// The token bucket of a [`RateLimit`]; pure, given the time.
struct Pacer {
    limit: RateLimit,
    tokens: f64,
    last: std::time::Instant,
}

impl Pacer {
    fn new(limit: RateLimit, now: std::time::Instant) -> Self {
        Pacer { limit, tokens: limit.burst as f64, last: now }
    }

    /// Takes `n` tokens at `now`; returns how long to wait for the deficit
    /// to refill (the tokens are then spent).
    fn take(&mut self, n: u64, now: std::time::Instant) -> Duration {
        let rate = self.limit.records_per_s.max(1) as f64;
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(self.limit.burst as f64) - n as f64;
        if self.tokens >= 0.0 {
            self.last = now;
            return Duration::ZERO;
        }
        let wait = Duration::from_secs_f64(-self.tokens / rate);
        self.tokens = 0.0;
        self.last = now + wait;
        wait
    }

    async fn acquire(&mut self, n: u64) {
        let wait = self.take(n, std::time::Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

struct NotRunningOnDrop<'a> {
    runner: &'a LocalRunner,
    id: &'a str,
}

impl Drop for NotRunningOnDrop<'_> {
    fn drop(&mut self) {
        self.runner.set_live(self.id, |l| l.running = false);
    }
}

impl LocalRunner {
    /// A runner of `migrations`' table migrations on `db` for node `node`.
    pub fn new(
        migrations: Arc<Migrations>,
        db: Arc<Database>,
        node: &str,
        options: LocalOptions,
    ) -> Result<LocalRunner, MigrateError> {
        validate_node(node)?;
        let keys = MigrateKeys::new(options.root.clone());
        let status = watch::channel(NodeStatus { node: node.to_string(), updated_ms: 0, migrations: Vec::new() }).0;
        Ok(LocalRunner {
            migrations,
            db,
            node: node.to_string(),
            options,
            keys,
            publisher: None,
            progress: None,
            status,
            live: Mutex::new(BTreeMap::new()),
            run_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Publishes the node's status to `store` under
    /// `<root>migrations/status/<node>` (on every state change and every
    /// [`LocalOptions::publish_interval_ms`] while running).
    pub fn publish_to(mut self, store: Arc<dyn MetaStore>) -> Self {
        self.publisher = Some(store);
        self
    }

    /// Calls `f` after every batch and state change (e.g. to draw a progress
    /// bar: `total` is its length, `done` its position).
    pub fn on_progress(mut self, f: impl Fn(&MigrationStatus) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// The node's status, updated after every batch.
    pub fn subscribe(&self) -> watch::Receiver<NodeStatus> {
        self.status.subscribe()
    }

    /// The node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The status of every registered table migration on this node (from the
    /// checkpoints, plus what this process is running).
    pub async fn status(&self, gates: Option<&dyn Gates>) -> Result<NodeStatus, MigrateError> {
        let checkpoints = self.checkpoints().await?;
        Ok(self.build_status(&checkpoints, gates))
    }

    async fn checkpoints(&self) -> Result<BTreeMap<String, Checkpoint>, MigrateError> {
        let (db, migrations) = (self.db.clone(), self.migrations.clone());
        tokio::task::spawn_blocking(move || read_checkpoints(&db, &migrations))
            .await
            .map_err(|e| MigrateError::Task(e.to_string()))?
    }

    fn build_status(&self, checkpoints: &BTreeMap<String, Checkpoint>, gates: Option<&dyn Gates>) -> NodeStatus {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let migrations = self
            .migrations
            .table_migrations()
            .iter()
            .map(|m| self.status_of(m, checkpoints.get(m.id()), live.get(m.id()), gates))
            .collect();
        NodeStatus { node: self.node.clone(), updated_ms: now_ms(), migrations }
    }

    fn status_of(
        &self,
        m: &TableMigration,
        ck: Option<&Checkpoint>,
        live: Option<&Live>,
        gates: Option<&dyn Gates>,
    ) -> MigrationStatus {
        let live = live.cloned().unwrap_or_default();
        let (direction, done, total, started_ms, finished_ms, finished) = match ck {
            Some(ck) => (
                ck.direction,
                ck.done,
                ck.total,
                Some(ck.started_ms),
                ck.finished_ms,
                ck.state == CheckpointState::Done,
            ),
            None => (Direction::Forward, 0, 0, None, None, false),
        };
        let state = if live.error.is_some() {
            MigrationState::Failed
        } else if live.running {
            MigrationState::Running
        } else if finished {
            MigrationState::Done
        } else {
            MigrationState::Pending
        };
        let eta_s = (state == MigrationState::Running && live.rate_per_s > 0.0)
            .then(|| (total.saturating_sub(done) as f64 / live.rate_per_s).ceil() as u64);
        MigrationStatus {
            id: m.id().to_string(),
            kind: MigrationKind::Table,
            target: m.table().to_string(),
            node: self.node.clone(),
            gate: m.gate().clone(),
            gate_open: gates.map(|g| g.is_open(m.gate())),
            direction,
            state,
            error: live.error,
            done,
            total,
            rate_per_s: live.rate_per_s,
            eta_s,
            started_ms,
            finished_ms,
        }
    }

    fn set_live(&self, id: &str, f: impl FnOnce(&mut Live)) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        f(live.entry(id.to_string()).or_default());
    }

    async fn publish(&self, status: &NodeStatus) {
        if let Some(store) = &self.publisher {
            let key = self.keys.status(&self.node);
            if let Err(e) = store.put_json(&key, status).await {
                tracing::warn!(node = %self.node, %key, error = %e, "could not publish the migration status");
            }
        }
    }

    fn notify(&self, status: &MigrationStatus) {
        self.status.send_modify(|s| {
            s.updated_ms = now_ms();
            match s.migrations.iter_mut().find(|m| m.id == status.id) {
                Some(m) => *m = status.clone(),
                None => s.migrations.push(status.clone()),
            }
        });
        if let Some(f) = &self.progress {
            f(status);
        }
    }

    /// Converges this node's data to the gates: a migration whose gate is
    /// closed but whose data was (partly) converted and that has a reverse is
    /// converted back (newest migration first); then every migration whose
    /// gate is open runs forward to the end, in order. Resumes from the
    /// checkpoints; returns the migrations that ran.
    pub async fn run_once(&self, gates: &dyn Gates) -> Result<LocalReport, MigrateError> {
        let _one_run = self.run_lock.lock().await;
        let checkpoints = self.checkpoints().await?;
        let initial = self.build_status(&checkpoints, Some(gates));
        self.status.send_replace(initial.clone());
        let mut report = LocalReport::default();
        for (index, m) in self.migrations.table_migrations().iter().enumerate().rev() {
            if !gates.is_open(m.gate()) && m.has_reverse() && needs_reverse(checkpoints.get(m.id())) {
                report.ran.push(self.run_migration(index, Direction::Reverse, gates).await?);
            }
        }
        for (index, m) in self.migrations.table_migrations().iter().enumerate() {
            let finished = checkpoints
                .get(m.id())
                .is_some_and(|ck| ck.direction == Direction::Forward && ck.state == CheckpointState::Done);
            if gates.is_open(m.gate()) && !finished {
                report.ran.push(self.run_migration(index, Direction::Forward, gates).await?);
            }
        }
        let status = self.build_status(&self.checkpoints().await?, Some(gates));
        self.status.send_replace(status.clone());
        self.publish(&status).await;
        Ok(report)
    }

    /// Runs [`run_once`](Self::run_once), then again after every change of
    /// `changes` (e.g. [`MemGates::subscribe`](super::MemGates::subscribe) or
    /// a cluster handle's `watch_view()`), until its sender is dropped. A
    /// failed run is logged and reported in the status; the next change
    /// retries it.
    pub async fn run_on_changes<T: Send + Sync>(
        &self,
        gates: &dyn Gates,
        mut changes: watch::Receiver<T>,
    ) -> Result<(), MigrateError> {
        loop {
            changes.borrow_and_update();
            if let Err(e) = self.run_once(gates).await {
                tracing::warn!(node = %self.node, error = %e, "table migrations failed; retrying on the next change");
            }
            if changes.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Converts back this node's data of every table migration gated by
    /// `flag` (which must no longer be enabled), newest first; batched and
    /// resumable like forward. A migration without reverse is
    /// [`MigrateError::Irreversible`] before anything runs.
    pub async fn reverse_flag(&self, flag: &str, gates: &dyn Gates) -> Result<LocalReport, MigrateError> {
        validate_name("flag name", flag)?;
        if gates.flag_enabled(flag) {
            return Err(MigrateError::FlagStillEnabled { flag: flag.to_string() });
        }
        let gate = Gate::Flag(flag.to_string());
        let mine: Vec<(usize, &TableMigration)> =
            self.migrations.table_migrations().iter().enumerate().filter(|(_, m)| *m.gate() == gate).collect();
        if let Some((_, m)) = mine.iter().find(|(_, m)| !m.has_reverse()) {
            return Err(MigrateError::Irreversible { flag: flag.to_string(), step: m.describe().to_string() });
        }
        let _one_run = self.run_lock.lock().await;
        let checkpoints = self.checkpoints().await?;
        let mut report = LocalReport::default();
        for (index, m) in mine.into_iter().rev() {
            if needs_reverse(checkpoints.get(m.id())) {
                report.ran.push(self.run_migration(index, Direction::Reverse, gates).await?);
            }
        }
        let status = self.build_status(&self.checkpoints().await?, Some(gates));
        self.status.send_replace(status.clone());
        self.publish(&status).await;
        Ok(report)
    }

    /// Deletes a migration's checkpoint so it starts over (the operator's way
    /// out of [`MigrateError::CheckpointCorrupt`] and
    /// [`MigrateError::CheckpointPastEnd`]). Returns whether one existed.
    pub async fn reset_checkpoint(&self, id: &str) -> Result<bool, MigrateError> {
        validate_name("migration id", id)?;
        let _one_run = self.run_lock.lock().await;
        let (db, id) = (self.db.clone(), id.to_string());
        let durability = self.options.durability;
        tokio::task::spawn_blocking(move || {
            let mut wtx = db.begin_write().map_err(redb_err(&id, "starting a write transaction"))?;
            wtx.set_durability(durability).map_err(redb_err(&id, "setting the durability"))?;
            let existed = {
                let mut table =
                    wtx.open_table(CHECKPOINT_TABLE).map_err(redb_err(&id, "opening the checkpoint table"))?;
                table.remove(id.as_str()).map_err(redb_err(&id, "deleting the checkpoint"))?.is_some()
            };
            wtx.commit().map_err(redb_err(&id, "committing"))?;
            tracing::info!(migration = %id, existed, "table migration checkpoint reset");
            Ok(existed)
        })
        .await
        .map_err(|e| MigrateError::Task(e.to_string()))?
    }

    async fn run_migration(
        &self,
        index: usize,
        direction: Direction,
        gates: &dyn Gates,
    ) -> Result<MigrationStatus, MigrateError> {
        let m = &self.migrations.table_migrations()[index];
        let id = m.id().to_string();
        tracing::info!(migration = %id, table = m.table(), %direction, node = %self.node, "table migration starting");
        self.set_live(&id, |l| *l = Live { running: true, error: None, rate_per_s: 0.0 });
        // If this future is dropped (the caller's task cancelled), the status
        // must not say running forever; the checkpoint says where it stopped.
        let _not_running_on_drop = NotRunningOnDrop { runner: self, id: &id };
        let mut pacer = self.options.rate_limit.map(|l| Pacer::new(l, std::time::Instant::now()));
        let started = tokio::time::Instant::now();
        let mut processed_here = 0u64;
        let mut last_publish: Option<tokio::time::Instant> = None;
        loop {
            if let Some(p) = &mut pacer {
                p.acquire(self.options.batch_records.max(1) as u64).await;
            }
            // The gate is checked before every batch: forward only while it
            // is open (I1), back only while it is closed.
            if gates.is_open(m.gate()) != (direction == Direction::Forward) {
                tracing::info!(migration = %id, %direction, gate = %m.gate(), "gate changed; table migration paused");
                self.set_live(&id, |l| l.running = false);
                let checkpoints = self.checkpoints().await?;
                let status = self.status_of(m, checkpoints.get(&id), self.live_of(&id).as_ref(), Some(gates));
                self.notify(&status);
                return Ok(status);
            }
            let (db, migrations, node, options) =
                (self.db.clone(), self.migrations.clone(), self.node.clone(), self.options.clone());
            let result = tokio::task::spawn_blocking(move || {
                run_batch(&db, &migrations.table_migrations()[index], direction, &node, &options)
            })
            .await
            .map_err(|e| MigrateError::Task(format!("table migration `{id}` panicked or was cancelled: {e}")))
            .and_then(|r| r);
            let batch = match result {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(migration = %id, error = %e, "table migration failed");
                    self.set_live(&id, |l| {
                        l.running = false;
                        l.error = Some(e.to_string());
                    });
                    let checkpoints = self.checkpoints().await.unwrap_or_default();
                    let status = self.status_of(m, checkpoints.get(&id), self.live_of(&id).as_ref(), Some(gates));
                    self.notify(&status);
                    let snapshot = self.status.borrow().clone();
                    self.publish(&snapshot).await;
                    return Err(e);
                }
            };
            processed_here += batch.processed;
            let elapsed = started.elapsed().as_secs_f64();
            let rate = if elapsed > 0.0 { processed_here as f64 / elapsed } else { 0.0 };
            let done = batch.checkpoint.state == CheckpointState::Done;
            self.set_live(&id, |l| {
                l.rate_per_s = rate;
                l.running = !done;
            });
            let status = self.status_of(m, Some(&batch.checkpoint), self.live_of(&id).as_ref(), Some(gates));
            self.notify(&status);
            let due =
                last_publish.is_none_or(|t| t.elapsed() >= Duration::from_millis(self.options.publish_interval_ms));
            if done || due {
                last_publish = Some(tokio::time::Instant::now());
                let snapshot = self.status.borrow().clone();
                self.publish(&snapshot).await;
            }
            if done {
                tracing::info!(migration = %id, %direction, done = batch.checkpoint.done, "table migration done");
                return Ok(status);
            }
        }
    }

    fn live_of(&self, id: &str) -> Option<Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_holds_the_average_rate() {
        let t0 = std::time::Instant::now();
        let mut pacer = Pacer::new(RateLimit { records_per_s: 1000, burst: 100 }, t0);
        let mut now = t0;
        for _ in 0..20 {
            // Batches of 100 processed instantly: only the waits take time.
            now += pacer.take(100, now);
        }
        // 2,000 records: the first 100 from the burst, 1,900 at 1,000/s.
        let elapsed = now - t0;
        assert!(elapsed >= Duration::from_millis(1899) && elapsed <= Duration::from_millis(1901), "{elapsed:?}");
        // After an idle second the burst is back, but no more than the burst.
        now += Duration::from_secs(10);
        assert_eq!(pacer.take(100, now), Duration::ZERO);
        assert!(pacer.take(100, now) >= Duration::from_millis(99));
    }

    #[tokio::test]
    async fn a_companion_table_is_filled_with_the_batches_and_emptied_by_the_reverse() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("data.redb")).unwrap());
        let records: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
        let index: TableDefinition<&[u8], &[u8]> = TableDefinition::new("by_value");
        let wtx = db.begin_write().unwrap();
        {
            let mut t = wtx.open_table(records).unwrap();
            for k in 0u32..25 {
                t.insert(k.to_be_bytes().as_slice(), format!("v{}", k % 3).as_bytes()).unwrap();
            }
        }
        wtx.commit().unwrap();
        // Index every record but the ones holding "v0" by (value, key).
        type Entries = Vec<(Vec<u8>, Vec<u8>)>;
        let entries = |key: &[u8], value: &[u8]| -> Result<Entries, String> {
            Ok(if value == b"v0" { Vec::new() } else { vec![([value, key].concat(), Vec::new())] })
        };
        let m =
            TableMigration::new("index_values", "records", Gate::flag("idx"), |_: &[u8], _: &[u8]| Ok(Rewrite::Keep))
                .unwrap()
                .with_reverse(|_: &[u8], _: &[u8]| Ok(Rewrite::Keep))
                .with_companion("by_value", entries)
                .unwrap();
        assert_eq!(m.companion(), Some("by_value"));
        assert!(m.clone().with_companion("records", entries).is_err(), "not the migrated table");
        assert!(m.clone().with_companion(CHECKPOINT_TABLE.name(), entries).is_err(), "not a rollgate table");
        let mut all = Migrations::new();
        all.add_table_migration(m).unwrap();
        let options = LocalOptions { batch_records: 4, ..LocalOptions::default() };
        let runner = LocalRunner::new(Arc::new(all), db.clone(), "n1", options).unwrap();
        let gates = super::super::MemGates::with_flags(["idx"]);
        runner.run_once(&gates).await.unwrap();
        let count = |db: &Database| db.begin_read().unwrap().open_table(index).unwrap().len().unwrap();
        assert_eq!(count(&db), 16, "every record but the 9 holding v0, over 7 batches");
        let rtx = db.begin_read().unwrap();
        let first = rtx.open_table(index).unwrap().first().unwrap().unwrap().0.value().to_vec();
        assert_eq!(first, [&b"v1"[..], &1u32.to_be_bytes()].concat());
        drop(rtx);
        gates.disable_flag("idx");
        runner.run_once(&gates).await.unwrap();
        assert_eq!(count(&db), 0, "the reverse removed what the forward pass added");
    }

    #[test]
    fn checkpoints_are_validated() {
        let good = Checkpoint::fresh(Direction::Forward, 10, "n1");
        assert_eq!(Checkpoint::from_bytes("m", &good.to_bytes()).unwrap(), good);
        let json = String::from_utf8(good.to_bytes()).unwrap();
        let cases = [
            ("{", "EOF"),
            (r#"{"direction":"sideways"}"#, "unknown variant"),
            (&json.replace(r#""done":0"#, r#""done":"0""#), "invalid type"),
            (&json.replace(r#""changed":0"#, r#""changed":5"#), "more than the 0 processed"),
            (&json.replace(r#""done":0"#, r#""done":3"#), "no last key"),
            (&json.replace(r#""last_key":null"#, r#""last_key":"zz""#), "not lowercase hex"),
            (&json.replace(r#""node":"n1""#, r#""node":"""#), "invalid node id"),
        ];
        for (bytes, fragment) in cases {
            let err = Checkpoint::from_bytes("m", bytes.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("checkpoint of table migration `m`"), "{err}");
            assert!(err.contains(fragment), "{bytes}: {err:?} lacks {fragment:?}");
        }
        let mut with_key = good.clone();
        with_key.last_key = Some(vec![0, 0xab]);
        with_key.done = 1;
        let json = String::from_utf8(with_key.to_bytes()).unwrap();
        assert!(json.contains(r#""last_key":"00ab""#), "{json}");
        assert_eq!(Checkpoint::from_bytes("m", json.as_bytes()).unwrap(), with_key);
        let newer = json.replace(r#""done":1"#, r#""done":1,"added_later":true"#);
        assert_eq!(Checkpoint::from_bytes("m", newer.as_bytes()).unwrap(), with_key, "unknown fields are ignored");
    }
}

//! Format versions stamped on stored data at creation.
//!
//! A **storage unit** is whatever the service decides is versioned as a
//! whole: a redb table, a file, an index. A unit is stamped with its format
//! version when it is created (Elasticsearch's `IndexVersion`), and every
//! node checks the stamp before it reads the unit: a unit newer than the
//! release reads, or older than its minimum readable format, is refused with
//! a message that names the unit, both versions and what to do:
//!
//! ```text
//! unit `records` has format 3 but this release reads formats 1..=2: run release 1.2 or later,
//! or restore a backup made by this release
//! ```
//!
//! [`FormatPolicy`] is the generic rule (which formats this release reads and
//! which one it writes); [`FormatStamp`] is what a unit carries. The redb
//! helpers ([`open_unit`], [`stamp_unit`], [`check_unit`], [`read_stamp`])
//! keep stamps in a small table, [`FORMAT_TABLE`], inside the same redb
//! database as the unit, and work in the caller's transaction, so a unit and
//! its stamp are created atomically and a refused check writes nothing.
//!
//! [`check_file`] checks a unit of a redb file opened read-only: a node
//! calls it before opening its data file for writing, so a refused unit
//! leaves the file byte for byte as it was.
//!
//! The stamp records the format the unit was created with
//! ([`FormatStamp::created_format`], never changed) and the layout it has now
//! ([`FormatStamp::format`]). The latter changes only when a node-local
//! migration that declares a format change finishes
//! ([`crate::migrate::TableMigration::changes_format`]), in the same write
//! transaction as its last batch. Release strings in a stamp are for the
//! operator's message only; decisions compare format numbers.

use std::ops::RangeInclusive;
use std::path::Path;

use redb::{
    Builder, Key, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle, Value, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use rollgate_util::{now_ms, shorten};

/// A format version: a plain number whose meaning the service gives.
pub type FormatVersion = u32;

/// The redb table that holds the stamps: unit name -> JSON [`FormatStamp`].
pub const FORMAT_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("rollgate_formats");

/// Longest unit name, in bytes.
pub const MAX_UNIT_NAME_BYTES: usize = 128;
/// Largest stamp accepted when read, in bytes.
pub const MAX_STAMP_BYTES: usize = 4096;
/// Longest release string kept in a stamp, in bytes.
pub const MAX_RELEASE_BYTES: usize = 64;

/// Why a unit cannot be opened or stamped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The unit was written by a newer release.
    #[error(
        "unit `{unit}` has format {found} but this release reads formats {min}..={max}: {}, or restore a backup made by \
         this release",
        too_new_fix(written_by.as_deref(), *found)
    )]
    TooNew {
        /// The unit.
        unit: String,
        /// Its format.
        found: FormatVersion,
        /// The oldest format this release reads.
        min: FormatVersion,
        /// The newest format this release reads (the one it writes).
        max: FormatVersion,
        /// The release that wrote the unit's format (from its stamp), when known.
        written_by: Option<String>,
    },
    /// The unit is older than this release's minimum readable format.
    #[error(
        "unit `{unit}` has format {found} but this release reads formats {min}..={max}: first open it with an older \
         release that reads format {found} and migrates it to format {min} or later, or restore a backup made by this release"
    )]
    TooOld {
        /// The unit.
        unit: String,
        /// Its format.
        found: FormatVersion,
        /// The oldest format this release reads.
        min: FormatVersion,
        /// The newest format this release reads.
        max: FormatVersion,
    },
    /// The unit has data but no stamp.
    #[error(
        "unit `{unit}` has data but no format stamp in table `rollgate_formats`: it was not created through \
         rollgate::format or its stamp was lost; refusing to guess its layout (restore a backup, or stamp it \
         explicitly with the format it has)"
    )]
    Missing {
        /// The unit.
        unit: String,
    },
    /// A stamp is written once, at creation.
    #[error("unit `{unit}` is already stamped with format {format}; a unit is stamped once, when it is created")]
    AlreadyStamped {
        /// The unit.
        unit: String,
        /// Its format.
        format: FormatVersion,
    },
    /// The stored stamp does not decode or is out of bounds.
    #[error("the format stamp of unit `{unit}` is unreadable: {reason}; nothing was changed")]
    CorruptStamp {
        /// The unit.
        unit: String,
        /// What is wrong.
        reason: String,
    },
    /// A format change found the unit at another format than expected.
    #[error("unit `{unit}` has format {found}, expected format {expected}; nothing was changed")]
    Unexpected {
        /// The unit.
        unit: String,
        /// The format the change expected.
        expected: FormatVersion,
        /// The format found.
        found: FormatVersion,
    },
    /// The unit name is not acceptable.
    #[error("invalid unit name {unit:?}: {reason}")]
    InvalidUnit {
        /// The name (shortened).
        unit: String,
        /// Why.
        reason: &'static str,
    },
    /// The policy is not consistent.
    #[error("invalid format policy: {reason}")]
    InvalidPolicy {
        /// Why.
        reason: String,
    },
    /// redb failed while reading or writing the stamp.
    #[error("unit `{unit}`: redb failed while {what}: {reason}")]
    Redb {
        /// The unit.
        unit: String,
        /// What was being done.
        what: &'static str,
        /// The cause.
        reason: String,
    },
}

fn too_new_fix(written_by: Option<&str>, found: FormatVersion) -> String {
    match written_by {
        Some(release) => format!("run release {release} or later"),
        None => format!("run a release that reads format {found}"),
    }
}

/// What a storage unit carries: its format now and at creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatStamp {
    /// The layout the unit has now.
    pub format: FormatVersion,
    /// The format the unit was created with (never changes).
    pub created_format: FormatVersion,
    /// The release that created the unit (for messages only).
    pub created_by: String,
    /// When the unit was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// The release that set `format` (the creator, or the release whose
    /// migration changed it); for messages only.
    pub written_by: String,
    /// When `format` was last set (ms since the Unix epoch).
    pub updated_ms: u64,
}

impl FormatStamp {
    /// Decodes a stored stamp; bounded and validated.
    pub fn from_bytes(unit: &str, bytes: &[u8]) -> Result<FormatStamp, FormatError> {
        let corrupt = |reason: String| FormatError::CorruptStamp { unit: shorten(unit), reason };
        if bytes.len() > MAX_STAMP_BYTES {
            return Err(corrupt(format!("{} bytes, over the limit of {MAX_STAMP_BYTES}", bytes.len())));
        }
        let stamp: FormatStamp = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        for (field, value) in [("created_by", &stamp.created_by), ("written_by", &stamp.written_by)] {
            if value.len() > MAX_RELEASE_BYTES || value.chars().any(char::is_control) {
                return Err(corrupt(format!("field {field} is not a release string")));
            }
        }
        if stamp.created_format > stamp.format {
            // Migrations only move a unit forward from its creation format or
            // back to it; below the creation format is not a layout it had.
            return Err(corrupt(format!(
                "format {} is below the format it was created with ({})",
                stamp.format, stamp.created_format
            )));
        }
        Ok(stamp)
    }

    /// Encodes the stamp for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of numbers and strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Which formats a release reads, and which one it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatPolicy {
    min_readable: FormatVersion,
    current: FormatVersion,
    release: String,
}

impl FormatPolicy {
    /// A policy reading `min_readable..=current` and creating units at
    /// `current`; `release` names this release in stamps and messages.
    pub fn new(
        min_readable: FormatVersion,
        current: FormatVersion,
        release: impl Into<String>,
    ) -> Result<FormatPolicy, FormatError> {
        let release = release.into();
        if min_readable > current {
            return Err(FormatError::InvalidPolicy {
                reason: format!("minimum readable format {min_readable} is above the current format {current}"),
            });
        }
        if release.is_empty() || release.len() > MAX_RELEASE_BYTES || release.chars().any(char::is_control) {
            return Err(FormatError::InvalidPolicy {
                reason: format!("release {release:?} must be 1 to {MAX_RELEASE_BYTES} printable bytes"),
            });
        }
        Ok(FormatPolicy { min_readable, current, release })
    }

    /// The format new units are created with.
    pub fn current(&self) -> FormatVersion {
        self.current
    }

    /// The oldest format this release reads.
    pub fn min_readable(&self) -> FormatVersion {
        self.min_readable
    }

    /// The formats this release reads.
    pub fn readable(&self) -> RangeInclusive<FormatVersion> {
        self.min_readable..=self.current
    }

    /// This release, as stamped on new units.
    pub fn release(&self) -> &str {
        &self.release
    }

    /// A stamp for a unit created now.
    pub fn new_stamp(&self) -> FormatStamp {
        let now = now_ms();
        FormatStamp {
            format: self.current,
            created_format: self.current,
            created_by: self.release.clone(),
            created_ms: now,
            written_by: self.release.clone(),
            updated_ms: now,
        }
    }

    /// Whether this release may open `unit` with `stamp`.
    pub fn check(&self, unit: &str, stamp: &FormatStamp) -> Result<(), FormatError> {
        self.check_version(unit, stamp.format, Some(&stamp.written_by))
    }

    /// Whether this release may open `unit` at format `found`; `written_by`
    /// is the release that wrote it, when known (for the message).
    pub fn check_version(&self, unit: &str, found: FormatVersion, written_by: Option<&str>) -> Result<(), FormatError> {
        if found > self.current {
            let written_by = written_by.filter(|r| !r.is_empty()).map(shorten);
            return Err(FormatError::TooNew {
                unit: shorten(unit),
                found,
                min: self.min_readable,
                max: self.current,
                written_by,
            });
        }
        if found < self.min_readable {
            return Err(FormatError::TooOld { unit: shorten(unit), found, min: self.min_readable, max: self.current });
        }
        Ok(())
    }
}

/// Checks a unit name: 1 to 128 bytes, no control characters.
pub fn validate_unit(unit: &str) -> Result<(), FormatError> {
    let reason = if unit.is_empty() {
        Some("it is empty")
    } else if unit.len() > MAX_UNIT_NAME_BYTES {
        Some("it is longer than 128 bytes")
    } else if unit.chars().any(char::is_control) {
        Some("it contains control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(FormatError::InvalidUnit { unit: shorten(unit), reason }),
        None => Ok(()),
    }
}

fn redb_err<'a>(unit: &'a str, what: &'static str) -> impl FnOnce(redb::Error) -> FormatError + 'a {
    move |e| FormatError::Redb { unit: shorten(unit), what, reason: e.to_string() }
}

fn stamp_from_table<T>(table: &T, unit: &str) -> Result<Option<FormatStamp>, FormatError>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let value = table.get(unit).map_err(|e| redb_err(unit, "reading the stamp")(e.into()))?;
    match value {
        None => Ok(None),
        Some(bytes) => FormatStamp::from_bytes(unit, bytes.value()).map(Some),
    }
}

/// Reads the stamp of `unit` inside a write transaction (`None`: not stamped).
pub fn read_stamp(txn: &WriteTransaction, unit: &str) -> Result<Option<FormatStamp>, FormatError> {
    validate_unit(unit)?;
    if !has_table(txn, FORMAT_TABLE.name()).map_err(redb_err(unit, "listing tables"))? {
        return Ok(None);
    }
    let table = txn.open_table(FORMAT_TABLE).map_err(|e| redb_err(unit, "opening the stamp table")(e.into()))?;
    stamp_from_table(&table, unit)
}

/// Reads the stamp of `unit` inside a read transaction (`None`: not stamped).
pub fn read_stamp_ro(txn: &ReadTransaction, unit: &str) -> Result<Option<FormatStamp>, FormatError> {
    validate_unit(unit)?;
    match txn.open_table(FORMAT_TABLE) {
        Ok(table) => stamp_from_table(&table, unit),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(redb_err(unit, "opening the stamp table")(e.into())),
    }
}

/// Stamps a new unit with the policy's current format, in the caller's
/// transaction. Refused when the unit is already stamped.
pub fn stamp_unit(txn: &WriteTransaction, unit: &str, policy: &FormatPolicy) -> Result<FormatStamp, FormatError> {
    if let Some(existing) = read_stamp(txn, unit)? {
        return Err(FormatError::AlreadyStamped { unit: shorten(unit), format: existing.format });
    }
    let stamp = policy.new_stamp();
    write_stamp(txn, unit, &stamp)?;
    Ok(stamp)
}

/// Checks an existing unit's stamp against the policy (read transaction).
/// A unit without stamp is [`FormatError::Missing`].
pub fn check_unit(txn: &ReadTransaction, unit: &str, policy: &FormatPolicy) -> Result<FormatStamp, FormatError> {
    let stamp = read_stamp_ro(txn, unit)?.ok_or_else(|| FormatError::Missing { unit: shorten(unit) })?;
    policy.check(unit, &stamp)?;
    Ok(stamp)
}

/// Checks `unit` in the redb file at `path` without modifying the file: the
/// file is opened read-only (a file that needs recovery is refused, not
/// repaired). Use it before opening a data file for writing, so a refused
/// unit leaves the file byte for byte as it was.
pub fn check_file(path: &Path, unit: &str, policy: &FormatPolicy) -> Result<FormatStamp, FormatError> {
    validate_unit(unit)?;
    let fail = |what: &'static str, reason: String| FormatError::Redb {
        unit: shorten(unit),
        what,
        reason: format!("{}: {reason}", path.display()),
    };
    // redb's own checks may assert on a file it did not write: a panic there
    // must not take the caller down.
    let opened = std::panic::catch_unwind(|| Builder::new().open_read_only(path))
        .map_err(|_| fail("opening the file read-only", "the file failed redb's consistency checks".into()))?;
    let db = opened.map_err(|e| fail("opening the file read-only", e.to_string()))?;
    let txn = db.begin_read().map_err(|e| fail("starting a read transaction", e.to_string()))?;
    check_unit(&txn, unit, policy)
}

/// The result of [`open_unit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedUnit {
    /// The unit's stamp.
    pub stamp: FormatStamp,
    /// Whether this call created the stamp (the unit is new).
    pub created: bool,
}

/// Opens the redb table `table` as a storage unit named after it, in the
/// caller's transaction: a stamped unit is checked against the policy
/// (nothing is written); an unstamped unit whose table is absent or empty is
/// new and is stamped with the current format; an unstamped table with data
/// is [`FormatError::Missing`]. On any error the caller should abort the
/// transaction; nothing was written by this call.
pub fn open_unit<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    table: TableDefinition<K, V>,
    policy: &FormatPolicy,
) -> Result<OpenedUnit, FormatError> {
    let unit = table.name();
    if let Some(stamp) = read_stamp(txn, unit)? {
        policy.check(unit, &stamp)?;
        return Ok(OpenedUnit { stamp, created: false });
    }
    if has_table(txn, unit).map_err(redb_err(unit, "listing tables"))? {
        let opened = txn.open_table(table).map_err(|e| redb_err(unit, "opening the unit's table")(e.into()))?;
        if opened.len().map_err(|e| redb_err(unit, "counting the unit's records")(e.into()))? > 0 {
            return Err(FormatError::Missing { unit: shorten(unit) });
        }
    }
    let stamp = policy.new_stamp();
    write_stamp(txn, unit, &stamp)?;
    Ok(OpenedUnit { stamp, created: true })
}

/// Moves `unit` from format `from` to `to` (a finished node-local migration
/// or its reverse), in the caller's transaction. The creation fields stay.
pub(crate) fn change_format(
    txn: &WriteTransaction,
    unit: &str,
    from: FormatVersion,
    to: FormatVersion,
    release: &str,
) -> Result<FormatStamp, FormatError> {
    let mut stamp = read_stamp(txn, unit)?.ok_or_else(|| FormatError::Missing { unit: shorten(unit) })?;
    if stamp.format == to {
        return Ok(stamp);
    }
    if stamp.format != from {
        return Err(FormatError::Unexpected { unit: shorten(unit), expected: from, found: stamp.format });
    }
    if to < stamp.created_format {
        return Err(FormatError::Unexpected { unit: shorten(unit), expected: stamp.created_format, found: to });
    }
    stamp.format = to;
    stamp.written_by = release.chars().take(MAX_RELEASE_BYTES).collect();
    stamp.updated_ms = now_ms();
    write_stamp(txn, unit, &stamp)?;
    Ok(stamp)
}

fn write_stamp(txn: &WriteTransaction, unit: &str, stamp: &FormatStamp) -> Result<(), FormatError> {
    validate_unit(unit)?;
    let mut table = txn.open_table(FORMAT_TABLE).map_err(|e| redb_err(unit, "opening the stamp table")(e.into()))?;
    table.insert(unit, stamp.to_bytes().as_slice()).map_err(|e| redb_err(unit, "writing the stamp")(e.into()))?;
    Ok(())
}

/// Whether a table of that name exists, without creating it.
pub(crate) fn has_table(txn: &WriteTransaction, name: &str) -> Result<bool, redb::Error> {
    Ok(txn.list_tables()?.any(|t| t.name() == name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase};

    const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

    fn policy() -> FormatPolicy {
        FormatPolicy::new(1, 2, "1.1").unwrap()
    }

    fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("data.redb")).unwrap();
        (dir, db)
    }

    #[test]
    fn the_message_names_the_unit_both_versions_and_the_fix() {
        let mut stamp = policy().new_stamp();
        stamp.format = 3;
        stamp.written_by = "1.2".into();
        let err = policy().check("records", &stamp).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unit `records` has format 3 but this release reads formats 1..=2: run release 1.2 or later, \
             or restore a backup made by this release"
        );
        let err = policy().check_version("records", 0, None).unwrap_err();
        assert!(matches!(err, FormatError::TooOld { found: 0, min: 1, max: 2, .. }), "{err}");
        assert!(err.to_string().contains("unit `records` has format 0 but this release reads formats 1..=2"));
        let err = policy().check_version("idx", 9, None).unwrap_err();
        assert!(err.to_string().contains(": run a release that reads format 9, or restore"), "{err}");
        policy().check_version("records", 1, None).unwrap();
        policy().check_version("records", 2, None).unwrap();
    }

    #[test]
    fn a_policy_must_be_consistent() {
        assert!(FormatPolicy::new(3, 2, "1.0").is_err());
        assert!(FormatPolicy::new(1, 2, "").is_err());
        assert!(FormatPolicy::new(1, 2, "a\nb").is_err());
        assert_eq!(FormatPolicy::new(2, 2, "1.0").unwrap().readable(), 2..=2);
    }

    #[test]
    fn open_stamps_a_new_unit_and_checks_an_existing_one() {
        let (_dir, db) = db();
        let wtx = db.begin_write().unwrap();
        let opened = open_unit(&wtx, RECORDS, &policy()).unwrap();
        assert!(opened.created);
        assert_eq!(opened.stamp.format, 2);
        assert_eq!(opened.stamp.created_by, "1.1");
        wtx.commit().unwrap();

        let wtx = db.begin_write().unwrap();
        let again = open_unit(&wtx, RECORDS, &policy()).unwrap();
        assert!(!again.created);
        assert_eq!(again.stamp, opened.stamp, "the stamp is kept as created");
        assert!(matches!(stamp_unit(&wtx, "records", &policy()), Err(FormatError::AlreadyStamped { format: 2, .. })));
        drop(wtx);

        // A release that reads only format 1 refuses it; one that reads 2..=3 opens it.
        let old = FormatPolicy::new(1, 1, "1.0").unwrap();
        let rtx = db.begin_read().unwrap();
        let err = check_unit(&rtx, "records", &old).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unit `records` has format 2 but this release reads formats 1..=1: run release 1.1 or later, \
             or restore a backup made by this release"
        );
        check_unit(&rtx, "records", &FormatPolicy::new(2, 3, "2.0").unwrap()).unwrap();
        assert!(matches!(check_unit(&rtx, "other", &old), Err(FormatError::Missing { .. })));
    }

    #[test]
    fn an_unstamped_table_with_data_is_refused_without_writing() {
        let (_dir, db) = db();
        let def: TableDefinition<&str, u64> = TableDefinition::new("legacy");
        let wtx = db.begin_write().unwrap();
        wtx.open_table(def).unwrap().insert("k", &1).unwrap();
        wtx.commit().unwrap();
        let wtx = db.begin_write().unwrap();
        let err = open_unit(&wtx, def, &policy()).unwrap_err();
        assert!(matches!(err, FormatError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("unit `legacy` has data but no format stamp"), "{err}");
        assert!(!has_table(&wtx, FORMAT_TABLE.name()).unwrap(), "nothing written");
        // An empty existing table is a new unit.
        let empty: TableDefinition<&str, u64> = TableDefinition::new("empty");
        wtx.open_table(empty).unwrap();
        assert!(open_unit(&wtx, empty, &policy()).unwrap().created);
    }

    #[test]
    fn corrupt_stamps_are_errors_naming_the_unit() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "EOF"),
            (b"not json", "expected"),
            (br#"{"format":-1}"#, "invalid value"),
            (br#"{"format":1}"#, "missing field"),
            (
                br#"{"format":1,"created_format":2,"created_by":"a","created_ms":0,"written_by":"a","updated_ms":0}"#,
                "below the format it was created with",
            ),
            (
                br#"{"format":1,"created_format":1,"created_by":"a\nb","created_ms":0,"written_by":"a","updated_ms":0}"#,
                "not a release string",
            ),
            (&[b' '; MAX_STAMP_BYTES + 1], "over the limit"),
        ];
        for (bytes, fragment) in cases {
            let err = FormatStamp::from_bytes("records", bytes).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("the format stamp of unit `records` is unreadable"), "{msg}");
            assert!(msg.contains(fragment), "{msg:?} lacks {fragment:?}");
        }
    }

    #[test]
    fn change_format_moves_only_from_the_expected_format() {
        let (_dir, db) = db();
        let wtx = db.begin_write().unwrap();
        let created = stamp_unit(&wtx, "records", &FormatPolicy::new(1, 1, "1.0").unwrap()).unwrap();
        let err = change_format(&wtx, "records", 2, 3, "1.2").unwrap_err();
        assert!(matches!(err, FormatError::Unexpected { expected: 2, found: 1, .. }), "{err}");
        let moved = change_format(&wtx, "records", 1, 2, "1.2").unwrap();
        assert_eq!((moved.format, moved.created_format, moved.written_by.as_str()), (2, 1, "1.2"));
        assert_eq!(moved.created_ms, created.created_ms);
        assert_eq!(change_format(&wtx, "records", 1, 2, "1.2").unwrap().format, 2, "idempotent");
        assert!(change_format(&wtx, "records", 2, 0, "1.2").is_err(), "never below the creation format");
        assert_eq!(change_format(&wtx, "records", 2, 1, "1.1").unwrap().format, 1);
    }

    #[test]
    fn unit_names_are_bounded() {
        assert!(validate_unit("").is_err());
        assert!(validate_unit(&"x".repeat(129)).is_err());
        assert!(validate_unit("a\u{0}b").is_err());
        validate_unit("records.v2-idx").unwrap();
    }
}

//! Format stamps as bad input (I8): a unit stamped with a future format, a
//! format below the minimum readable one, an unreadable stamp, a unit with
//! data but no stamp. Each gets an error naming the unit, both versions and
//! what to do, and the file is left byte for byte as it was.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rollgate::format::{self, FORMAT_TABLE, FormatError, FormatPolicy};

const RECORDS: TableDefinition<&str, &str> = TableDefinition::new("records");

/// A data file whose `records` unit was created by release `release`
/// writing format `format`.
fn make(path: &Path, format: u32, release: &str) {
    let db = Database::create(path).unwrap();
    let wtx = db.begin_write().unwrap();
    format::open_unit(&wtx, RECORDS, &FormatPolicy::new(format, format, release).unwrap()).unwrap();
    wtx.open_table(RECORDS).unwrap().insert("k", "v").unwrap();
    wtx.commit().unwrap();
}

/// Every entry of every table of the file (stamps and records).
fn contents(path: &Path) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let db = Database::builder().open_read_only(path).unwrap();
    let rtx = db.begin_read().unwrap();
    let mut out = Vec::new();
    if let Ok(t) = rtx.open_table(FORMAT_TABLE) {
        for e in t.iter().unwrap() {
            let (k, v) = e.unwrap();
            out.push(("stamps".into(), k.value().as_bytes().to_vec(), v.value().to_vec()));
        }
    }
    if let Ok(t) = rtx.open_table(RECORDS) {
        for e in t.iter().unwrap() {
            let (k, v) = e.unwrap();
            out.push(("records".into(), k.value().as_bytes().to_vec(), v.value().as_bytes().to_vec()));
        }
    }
    out
}

/// Opens the file as a node of this release does: the read-only check
/// first (the file must stay byte for byte as it was), then, as a second
/// line of defence, the write-path open in a transaction that is aborted on
/// error (nothing stored may change). Returns both errors.
fn open_as(path: &Path, policy: &FormatPolicy) -> (FormatError, FormatError) {
    let before = std::fs::read(path).unwrap();
    let read = format::check_file(path, "records", policy).unwrap_err();
    assert!(std::fs::read(path).unwrap() == before, "the read-only check left the file byte for byte as it was");
    let stored = contents(path);
    let write = {
        let db = Database::create(path).unwrap();
        let wtx = db.begin_write().unwrap();
        let err = format::open_unit(&wtx, RECORDS, policy).unwrap_err();
        wtx.abort().unwrap();
        err
    };
    assert_eq!(contents(path), stored, "the refused open changed nothing stored");
    (read, write)
}

fn check(path: &Path, policy: &FormatPolicy, expected: &str) {
    let (read, write) = open_as(path, policy);
    assert_eq!(read.to_string(), expected);
    assert_eq!(write, read, "the read check and the write-path open agree");
}

#[test]
fn a_unit_from_a_newer_release_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.redb");
    make(&path, 3, "1.2");
    check(
        &path,
        &FormatPolicy::new(1, 2, "1.1").unwrap(),
        "unit `records` has format 3 but this release reads formats 1..=2: run release 1.2 or later, \
         or restore a backup made by this release",
    );
    // The newer release itself opens it.
    let stamp = format::check_file(&path, "records", &FormatPolicy::new(2, 3, "1.2").unwrap()).unwrap();
    assert_eq!((stamp.format, stamp.created_by.as_str()), (3, "1.2"));
}

#[test]
fn a_unit_below_the_minimum_readable_format_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.redb");
    make(&path, 1, "1.0");
    check(
        &path,
        &FormatPolicy::new(2, 3, "2.0").unwrap(),
        "unit `records` has format 1 but this release reads formats 2..=3: first open it with an older release that \
         reads format 1 and migrates it to format 2 or later, or restore a backup made by this release",
    );
}

#[test]
fn an_unreadable_or_missing_stamp_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = FormatPolicy::new(1, 2, "1.1").unwrap();
    let garbage: &[(&[u8], &str)] = &[
        (b"\xff\x00garbage", "expected value"),
        (br#"{"format":"two"}"#, "invalid type"),
        (br#"{"format":4294967296}"#, "invalid value"),
        (
            br#"{"format":2,"created_format":9,"created_by":"x","created_ms":0,"written_by":"x","updated_ms":0}"#,
            "below",
        ),
    ];
    for (i, (bytes, fragment)) in garbage.iter().enumerate() {
        let path = dir.path().join(format!("garbage-{i}.redb"));
        make(&path, 2, "1.1");
        {
            let db = Database::create(&path).unwrap();
            let wtx = db.begin_write().unwrap();
            wtx.open_table(FORMAT_TABLE).unwrap().insert("records", *bytes).unwrap();
            wtx.commit().unwrap();
        }
        let (read, write) = open_as(&path, &policy);
        let msg = read.to_string();
        assert!(msg.starts_with("the format stamp of unit `records` is unreadable"), "{msg}");
        assert!(msg.contains(fragment) && msg.ends_with("nothing was changed"), "{msg:?} lacks {fragment:?}");
        assert_eq!(write, read);
    }

    // Data without a stamp (the stamp table lost): refused, not re-stamped.
    let path = dir.path().join("unstamped.redb");
    {
        let db = Database::create(&path).unwrap();
        let wtx = db.begin_write().unwrap();
        wtx.open_table(RECORDS).unwrap().insert("k", "v").unwrap();
        wtx.commit().unwrap();
    }
    let (read, write) = open_as(&path, &policy);
    assert!(matches!(read, FormatError::Missing { .. }), "{read}");
    assert!(read.to_string().contains("unit `records` has data but no format stamp"), "{read}");
    assert_eq!(write, read);

    // Not a redb file at all: an error naming the unit and the file.
    let path = dir.path().join("garbage.redb");
    std::fs::write(&path, b"this is not a database").unwrap();
    let err = format::check_file(&path, "records", &policy).unwrap_err().to_string();
    assert!(err.starts_with("unit `records`: redb failed while opening the file read-only"), "{err}");
    assert!(err.contains("garbage.redb"), "{err}");
    assert!(std::fs::read(&path).unwrap() == b"this is not a database");
}

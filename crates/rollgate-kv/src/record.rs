//! The on-disk encoding of one key's record: the single place that knows the
//! storage layout, stamped with a format byte so a later release can read
//! older formats and migrate them (the seam for rollgate's format versions
//! and migrations).
//!
//! Format 1 (every release today):
//!
//! ```text
//! 0x01 | wall_ms varint | logical varint | node (len varint, bytes) | expires_at_ms varint
//!      | 0x00 (tombstone) or 0x01 then value (len varint, bytes)
//! ```
//!
//! Decoding checks every length and rejects trailing bytes, so a corrupt or
//! foreign record is a [`RecordError`] naming the key, never a panic.

use rollgate::version::TransportVersion;
use rollgate::wire::{Limits, Reader, WireError, Writer};

use crate::hlc::Version;

/// Format 1: the format every release of rollgate-kv writes today.
pub const FORMAT_V1: u8 = 1;
/// The format this build writes.
pub const CURRENT_FORMAT: u8 = FORMAT_V1;
/// The formats this build reads (a migration adds its older formats here).
pub const READABLE_FORMATS: &[u8] = &[FORMAT_V1];

/// Largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Longest node id in a version.
pub const MAX_NODE_BYTES: usize = rollgate::cluster::MAX_NODE_ID_BYTES;

const LIMITS: Limits =
    Limits { max_frame_bytes: MAX_VALUE_BYTES + 4096, max_collection_len: MAX_VALUE_BYTES, max_depth: 4 };

/// One key's stored state: its newest version, value (or tombstone) and expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The version of the write that produced it.
    pub version: Version,
    /// The value; `None` is a tombstone (the key was deleted).
    pub value: Option<Vec<u8>>,
    /// When the value expires (ms since the Unix epoch); 0: never.
    pub expires_at_ms: u64,
}

impl Record {
    /// The value a read at `now_ms` sees: none for a tombstone or an expired value.
    pub fn live_value(&self, now_ms: u64) -> Option<&[u8]> {
        if self.expires_at_ms != 0 && now_ms >= self.expires_at_ms {
            return None;
        }
        self.value.as_deref()
    }
}

/// A stored record that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Written in a format this build does not read.
    #[error(
        "record of key {key:?} has storage format {found}, and this release reads formats {readable:?}: run a release that reads it (or migrate the data dir)"
    )]
    UnknownFormat {
        /// The key.
        key: String,
        /// The format byte found.
        found: u8,
        /// What this build reads.
        readable: &'static [u8],
    },
    /// The bytes do not decode.
    #[error("record of key {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Checks a key: 1 to [`MAX_KEY_BYTES`] bytes, no control characters, and
/// not `.` or `..` (URLs treat those path segments as navigation, so no
/// client could address them).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a key must not be empty".into());
    }
    if key == "." || key == ".." {
        return Err("the keys `.` and `..` cannot be used: URL paths treat them as navigation".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("the key is {} bytes, over the limit of {MAX_KEY_BYTES}", key.len()));
    }
    if key.chars().any(char::is_control) {
        return Err("a key must not contain control characters".into());
    }
    Ok(())
}

/// Checks a record's fields against the limits (what [`encode`] assumes).
pub fn check(key: &str, record: &Record) -> Result<(), String> {
    check_key(key)?;
    if record.version.node.is_empty() || record.version.node.len() > MAX_NODE_BYTES {
        return Err(format!("the version's node id is {} bytes (1 to {MAX_NODE_BYTES})", record.version.node.len()));
    }
    if let Some(v) = &record.value
        && v.len() > MAX_VALUE_BYTES
    {
        return Err(format!("the value is {} bytes, over the limit of {MAX_VALUE_BYTES}", v.len()));
    }
    Ok(())
}

/// Encodes a record in the current format.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut w = Writer::with_capacity(
        TransportVersion::ZERO,
        LIMITS,
        32 + record.version.node.len() + record.value.as_ref().map_or(0, Vec::len),
    );
    w.put_u8(CURRENT_FORMAT);
    w.put_varint(record.version.wall_ms);
    w.put_varint(record.version.logical as u64);
    w.put_bytes(record.version.node.as_bytes());
    w.put_varint(record.expires_at_ms);
    match &record.value {
        None => w.put_u8(0),
        Some(v) => {
            w.put_u8(1);
            w.put_bytes(v);
        }
    }
    w.as_bytes().to_vec()
}

/// Decodes a stored record of `key`.
pub fn decode(key: &str, bytes: &[u8]) -> Result<Record, RecordError> {
    let corrupt = |reason: String| RecordError::Corrupt { key: crate::shorten(key, 96), reason };
    let Some(&format) = bytes.first() else { return Err(corrupt("the record is empty".into())) };
    if !READABLE_FORMATS.contains(&format) {
        return Err(RecordError::UnknownFormat {
            key: crate::shorten(key, 96),
            found: format,
            readable: READABLE_FORMATS,
        });
    }
    let wire = |e: WireError| corrupt(e.to_string());
    let mut r = Reader::new(&bytes[1..], TransportVersion::ZERO, LIMITS);
    let wall_ms = r.get_varint().map_err(wire)?;
    let logical =
        u32::try_from(r.get_varint().map_err(wire)?).map_err(|_| corrupt("logical clock out of range".into()))?;
    let node = r.get_bytes().map_err(wire)?;
    let node = std::str::from_utf8(node).map_err(|_| corrupt("node id is not UTF-8".into()))?.to_string();
    let expires_at_ms = r.get_varint().map_err(wire)?;
    let value = match r.get_u8().map_err(wire)? {
        0 => None,
        1 => Some(r.get_bytes().map_err(wire)?.to_vec()),
        other => return Err(corrupt(format!("value tag {other}"))),
    };
    r.finish().map_err(wire)?;
    let record = Record { version: Version { wall_ms, logical, node }, value, expires_at_ms };
    check(key, &record).map_err(corrupt)?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: Option<&[u8]>) -> Record {
        Record {
            version: Version { wall_ms: 1_700_000_000_123, logical: 4, node: "n1".into() },
            value: value.map(<[u8]>::to_vec),
            expires_at_ms: 9,
        }
    }

    #[test]
    fn round_trips_values_and_tombstones() {
        for r in [record(Some(b"hello")), record(None), record(Some(b""))] {
            assert_eq!(decode("k", &encode(&r)).unwrap(), r);
        }
    }

    #[test]
    fn format_1_is_pinned() {
        let bytes = encode(&record(Some(b"v")));
        assert_eq!(bytes, [1, 0xfb, 0xd0, 0x95, 0xff, 0xbc, 0x31, 4, 2, b'n', b'1', 9, 1, 1, b'v']);
    }

    #[test]
    fn garbage_is_a_typed_error_naming_the_key() {
        let good = encode(&record(Some(b"value")));
        assert!(matches!(decode("k", &[]), Err(RecordError::Corrupt { .. })));
        let e = decode("the-key", &[7, 1, 2]).unwrap_err();
        assert!(matches!(e, RecordError::UnknownFormat { found: 7, .. }), "{e}");
        assert!(e.to_string().contains("the-key"), "{e}");
        for cut in 1..good.len() {
            assert!(decode("k", &good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode("k", &trailing).is_err());
        let mut bad_tag = good;
        let at = bad_tag.len() - 7;
        bad_tag[at] = 5;
        assert!(decode("k", &bad_tag).is_err());
        // Arbitrary bytes never panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode("k", &bytes);
        }
    }

    #[test]
    fn expired_and_deleted_values_are_not_live() {
        let mut r = record(Some(b"v"));
        assert_eq!(r.live_value(8), Some(&b"v"[..]));
        assert_eq!(r.live_value(9), None);
        r.expires_at_ms = 0;
        assert_eq!(r.live_value(u64::MAX), Some(&b"v"[..]));
        assert_eq!(record(None).live_value(0), None);
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("a/b c").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(check_key("a\nb").is_err());
        assert!(check_key("..").is_err() && check_key(".").is_err() && check_key("...").is_ok());
    }
}

//! One key's record, stored and replicated: the fields every release knows
//! (version, value or tombstone, expiry) and an extensible part, a
//! [`FeatureMap`] from [`rollgate::record`] (RabbitMQ's feature map), whose
//! entries are keyed by name **and** version:
//!
//! | key | value | written by | since |
//! |---|---|---|---|
//! | `meta@1` | [`MetaV1`]: the writer node | every release, on every write | 1.0 |
//! | `meta@2` | [`MetaV2`]: writer node, release and clock | 1.1 on, once flag `record_meta_v2` is enabled (the gated setter refuses before: I1) | 1.1 |
//! | `checksum@1` | a SHA-256 prefix of the value, verified by reads | 1.2 on, once the experimental flag `value_checksums` is enabled | 1.2 |
//!
//! Readers prefer `meta@2` and fall back to `meta@1` ([`Record::writer`]).
//! Code that does not know a key keeps it byte for byte: a 1.0 node storing
//! or passing on a record written by 1.2 keeps its `meta@2`, because records
//! travel between nodes with their feature map (the replication `Entry`
//! carries it from release 1.0 on) and every decode/encode keeps unknown
//! entries.
//!
//! Stored encoding (the value of table `records`, whose format stamp says
//! which keys every record has, see [`crate::migrations`]):
//!
//! ```text
//! 0x01 | wall_ms varint | logical varint | node (len varint, bytes) | expires_at_ms varint
//!      | 0x00 (tombstone) or 0x01 then value (len varint, bytes)
//!      | feature map (count, then name, version, value bytes per entry, in key order)
//! ```
//!
//! Decoding checks every length and rejects trailing bytes, so a corrupt or
//! foreign record is a [`RecordError`] naming the key, never a panic.

use rollgate::migrate::Gates;
use rollgate::record::{FeatureKey, FeatureMap, RecordLimits};
use rollgate::version::TransportVersion;
use rollgate::wire::{Decode, Encode, Limits, Reader, WireError, Writer};
use sha2::{Digest as _, Sha256};

use crate::hlc::Version;

/// The encoding tag of a stored record.
pub const ENCODING: u8 = 1;

/// Largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Longest node id in a version.
pub const MAX_NODE_BYTES: usize = rollgate::cluster::MAX_NODE_ID_BYTES;
/// Most entries in a record's feature map.
pub const MAX_FEATURES: usize = 16;
/// Largest encoded value of one feature entry.
pub const MAX_FEATURE_BYTES: usize = 1024;
/// The bounds a record's feature map is decoded with.
pub const FEATURE_LIMITS: RecordLimits = RecordLimits { max_keys: MAX_FEATURES, max_value_bytes: MAX_FEATURE_BYTES };

const LIMITS: Limits =
    Limits { max_frame_bytes: MAX_VALUE_BYTES + 64 * 1024, max_collection_len: MAX_VALUE_BYTES, max_depth: 4 };

/// `meta@1`: who wrote the record.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct MetaV1 {
    /// The node that accepted the write.
    pub node: String,
}

/// `meta@2`: who wrote the record, with which release, at which clock.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct MetaV2 {
    /// The node that accepted the write.
    pub node: String,
    /// Its release (empty when the entry was derived from `meta@1` by the
    /// format 1 -> 2 migration: the release is not known then).
    pub release: String,
    /// The write's clock: wall milliseconds.
    pub wall_ms: u64,
    /// The write's clock: logical counter.
    pub logical: u32,
}

/// The writer, by every release (1.0 on).
pub const META_V1: FeatureKey<MetaV1> = FeatureKey::new("meta", 1);
/// The writer with release and clock, once flag `record_meta_v2` is enabled.
pub const META_V2: FeatureKey<MetaV2> = FeatureKey::new("meta", 2).gated_by("record_meta_v2");
/// The value's checksum (the first 8 bytes of its SHA-256, big endian),
/// once the experimental flag `value_checksums` is enabled.
pub const CHECKSUM_V1: FeatureKey<u64> = FeatureKey::new("checksum", 1).gated_by("value_checksums");

/// One key's stored state: its newest version, value (or tombstone), expiry
/// and feature map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The version of the write that produced it.
    pub version: Version,
    /// The value; `None` is a tombstone (the key was deleted).
    pub value: Option<Vec<u8>>,
    /// When the value expires (ms since the Unix epoch); 0: never.
    pub expires_at_ms: u64,
    /// The extensible part (`meta@1`, `meta@2`, `checksum@1`, and whatever
    /// newer releases add, kept byte for byte).
    pub features: FeatureMap,
}

/// Who wrote a record, as readers see it: from `meta@2` when present, else
/// from `meta@1`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WriterInfo {
    /// The writer node.
    pub node: String,
    /// Its release (`None` when only `meta@1` is there, or `meta@2` was derived by a migration).
    pub release: Option<String>,
    /// The write's clock `wall_ms.logical` (`None` from `meta@1`).
    pub clock: Option<String>,
    /// The key it was read from: `meta@2` or `meta@1`.
    pub from: String,
}

impl Record {
    /// The value a read at `now_ms` sees: none for a tombstone or an expired value.
    pub fn live_value(&self, now_ms: u64) -> Option<&[u8]> {
        if self.expires_at_ms != 0 && now_ms >= self.expires_at_ms {
            return None;
        }
        self.value.as_deref()
    }

    /// The writer: `meta@2` preferred, `meta@1` as the fallback.
    pub fn writer(&self) -> Result<Option<WriterInfo>, rollgate::record::RecordError> {
        let found = self
            .features
            .lookup(&META_V2)
            .or(&META_V1, |v1| MetaV2 { node: v1.node, release: String::new(), wall_ms: 0, logical: 0 })
            .get_with_key()?;
        Ok(found.map(|(m, key)| {
            let from_v2 = key == META_V2.id();
            WriterInfo {
                node: m.node,
                release: (from_v2 && !m.release.is_empty()).then_some(m.release),
                clock: from_v2.then(|| format!("{}.{}", m.wall_ms, m.logical)),
                from: key.to_string(),
            }
        }))
    }

    /// Checks `checksum@1` against the value, when both are present. `Ok(true)`:
    /// verified; `Ok(false)`: nothing to verify.
    pub fn verify_checksum(&self, key: &str) -> Result<bool, RecordError> {
        let corrupt = |reason: String| RecordError::Corrupt { key: rollgate::util::shorten_to(key, 96), reason };
        let Some(expected) = self.features.get(&CHECKSUM_V1).map_err(|e| corrupt(e.to_string()))? else {
            return Ok(false);
        };
        let Some(value) = &self.value else { return Ok(false) };
        let actual = checksum(value);
        if actual != expected {
            return Err(corrupt(format!(
                "the value's checksum is {actual:016x} but checksum@1 says {expected:016x}: the value was damaged"
            )));
        }
        Ok(true)
    }
}

/// The checksum of a value: the first 8 bytes of its SHA-256, big endian.
pub fn checksum(value: &[u8]) -> u64 {
    let digest = Sha256::digest(value);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// What a writer knows when it builds a record's feature map.
#[derive(Clone, Copy, Debug)]
pub struct WriteContext<'a> {
    /// The node accepting the write.
    pub node: &'a str,
    /// Its release.
    pub release: &'a str,
}

/// The feature map of a new record: `meta@1` always; `meta@2` and
/// `checksum@1` only when their flags are enabled according to `gates` (the
/// gated setter refuses otherwise, and the key is then left out: I1).
pub fn new_features(ctx: WriteContext<'_>, version: &Version, value: Option<&[u8]>, gates: &dyn Gates) -> FeatureMap {
    let mut map = FeatureMap::new();
    let set = |r: Result<(), rollgate::record::RecordError>| {
        if let Err(e) = r
            && !matches!(e, rollgate::record::RecordError::FlagNotEnabled { .. })
        {
            // Small fixed-size values within the limits: not expected.
            tracing::error!(error = %e, "a record feature could not be set");
        }
    };
    set(map.set(&META_V1, &MetaV1 { node: ctx.node.to_string() }, gates));
    let v2 = MetaV2 {
        node: ctx.node.to_string(),
        release: ctx.release.to_string(),
        wall_ms: version.wall_ms,
        logical: version.logical,
    };
    set(map.set(&META_V2, &v2, gates));
    if let Some(value) = value {
        set(map.set(&CHECKSUM_V1, &checksum(value), gates));
    }
    map
}

/// A stored record that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Written with an encoding this build does not read.
    #[error(
        "record of key {key:?} has encoding {found}, and this release reads encoding {ENCODING}: the data file is \
         not one this release can read"
    )]
    UnknownEncoding {
        /// The key.
        key: String,
        /// The tag found.
        found: u8,
    },
    /// The bytes do not decode, or the value fails its checksum.
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
    if record.features.len() > MAX_FEATURES {
        return Err(format!("the record has {} features, over the limit of {MAX_FEATURES}", record.features.len()));
    }
    if let Some((id, v)) = record.features.entries().find(|(_, v)| v.len() > MAX_FEATURE_BYTES) {
        return Err(format!("feature {id} is {} bytes, over the limit of {MAX_FEATURE_BYTES}", v.len()));
    }
    Ok(())
}

/// Encodes a record.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut w = Writer::with_capacity(
        TransportVersion::ZERO,
        LIMITS,
        48 + record.version.node.len() + record.value.as_ref().map_or(0, Vec::len),
    );
    w.put_u8(ENCODING);
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
    record.features.encode(&mut w);
    w.as_bytes().to_vec()
}

/// Decodes a stored record of `key`.
pub fn decode(key: &str, bytes: &[u8]) -> Result<Record, RecordError> {
    let corrupt = |reason: String| RecordError::Corrupt { key: rollgate::util::shorten_to(key, 96), reason };
    let Some(&encoding) = bytes.first() else { return Err(corrupt("the record is empty".into())) };
    if encoding != ENCODING {
        return Err(RecordError::UnknownEncoding { key: rollgate::util::shorten_to(key, 96), found: encoding });
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
    let rest = r.take(r.remaining()).map_err(wire)?;
    let features = FeatureMap::from_bytes(rest, FEATURE_LIMITS).map_err(|e| corrupt(e.to_string()))?;
    let record = Record { version: Version { wall_ms, logical, node }, value, expires_at_ms, features };
    check(key, &record).map_err(corrupt)?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use rollgate::migrate::MemGates;
    use rollgate::record::KeyId;

    use super::*;

    fn version() -> Version {
        Version { wall_ms: 1_700_000_000_123, logical: 4, node: "n1".into() }
    }

    fn record(value: Option<&[u8]>, gates: &MemGates) -> Record {
        let ctx = WriteContext { node: "n1", release: "1.2" };
        Record {
            version: version(),
            value: value.map(<[u8]>::to_vec),
            expires_at_ms: 9,
            features: new_features(ctx, &version(), value, gates),
        }
    }

    #[test]
    fn round_trips_values_and_tombstones() {
        let gates = MemGates::with_flags(["record_meta_v2", "value_checksums"]);
        for r in [record(Some(b"hello"), &gates), record(None, &gates), record(Some(b""), &gates)] {
            assert_eq!(decode("k", &encode(&r)).unwrap(), r);
        }
    }

    #[test]
    fn the_encoding_is_pinned() {
        let bytes = encode(&record(Some(b"v"), &MemGates::new()));
        let core = [1, 0xfb, 0xd0, 0x95, 0xff, 0xbc, 0x31, 4, 2, b'n', b'1', 9, 1, 1, b'v'];
        // One feature, meta@1 = {node: "n1"}.
        let features = [1, 4, b'm', b'e', b't', b'a', 1, 3, 2, b'n', b'1'];
        assert_eq!(bytes, [&core[..], &features[..]].concat());
    }

    #[test]
    fn gated_keys_need_their_flags_and_readers_fall_back_to_meta_1() {
        let off = record(Some(b"v"), &MemGates::new());
        assert!(off.features.contains(&META_V1));
        assert!(!off.features.contains(&META_V2) && !off.features.contains(&CHECKSUM_V1), "I1: {off:?}");
        let w = off.writer().unwrap().unwrap();
        assert_eq!((w.node.as_str(), w.release.clone(), w.from.as_str()), ("n1", None, "meta@1"));
        assert!(!off.verify_checksum("k").unwrap());

        let on = record(Some(b"v"), &MemGates::with_flags(["record_meta_v2", "value_checksums"]));
        let w = on.writer().unwrap().unwrap();
        assert_eq!((w.release.as_deref(), w.from.as_str()), (Some("1.2"), "meta@2"));
        assert_eq!(w.clock.as_deref(), Some("1700000000123.4"));
        assert!(on.verify_checksum("k").unwrap());
        let mut damaged = on.clone();
        damaged.value = Some(b"w".to_vec());
        let e = damaged.verify_checksum("the-key").unwrap_err();
        assert!(e.to_string().contains("the-key") && e.to_string().contains("checksum@1"), "{e}");
    }

    /// Release 1.0 knows only `meta@1`: storing, reading and passing on a
    /// record written by a newer release keeps its other keys byte for byte.
    #[test]
    fn old_code_keeps_keys_it_does_not_know_byte_for_byte() {
        let mut newer = record(Some(b"v"), &MemGates::with_flags(["record_meta_v2", "value_checksums"]));
        // A key no release of this build knows, as a later one might add.
        let mut raw = FeatureMap::new();
        raw.set(&FeatureKey::<String>::new("zone", 1), &"eu-1".to_string(), &MemGates::new()).unwrap();
        let zone_bytes = raw.raw(&KeyId::new("zone", 1).unwrap()).unwrap().to_vec();
        newer.features.set(&FeatureKey::<String>::new("zone", 1), &"eu-1".to_string(), &MemGates::new()).unwrap();
        let stored = encode(&newer);
        // 1.0 decodes (to store, to serve a sync) and encodes again.
        let seen_by_old = decode("k", &stored).unwrap();
        let known = [META_V1.id()];
        let unknown: Vec<_> = seen_by_old.features.unknown(&known).map(|(k, _)| k.to_string()).collect();
        assert_eq!(unknown, ["checksum@1", "meta@2", "zone@1"]);
        assert_eq!(encode(&seen_by_old), stored, "re-encoded byte for byte");
        assert_eq!(seen_by_old.features.raw(&KeyId::new("zone", 1).unwrap()), Some(&zone_bytes[..]));
        assert_eq!(seen_by_old.writer().unwrap().unwrap().from, "meta@2", "newer readers still prefer meta@2");
    }

    #[test]
    fn garbage_is_a_typed_error_naming_the_key() {
        let good = encode(&record(Some(b"value"), &MemGates::new()));
        assert!(matches!(decode("k", &[]), Err(RecordError::Corrupt { .. })));
        let e = decode("the-key", &[7, 1, 2]).unwrap_err();
        assert!(matches!(e, RecordError::UnknownEncoding { found: 7, .. }), "{e}");
        assert!(e.to_string().contains("the-key"), "{e}");
        for cut in 1..good.len() {
            assert!(decode("k", &good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode("k", &trailing).is_err());
        // Arbitrary bytes never panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if i == 0 { ENCODING } else { x as u8 }
                })
                .collect();
            let _ = decode("k", &bytes);
        }
    }

    #[test]
    fn expired_and_deleted_values_are_not_live() {
        let mut r = record(Some(b"v"), &MemGates::new());
        assert_eq!(r.live_value(8), Some(&b"v"[..]));
        assert_eq!(r.live_value(9), None);
        r.expires_at_ms = 0;
        assert_eq!(r.live_value(u64::MAX), Some(&b"v"[..]));
        assert_eq!(record(None, &MemGates::new()).live_value(0), None);
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

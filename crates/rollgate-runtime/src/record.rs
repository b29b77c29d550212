//! Extensible records: a feature map inside a record; old code keeps keys it
//! does not know.
//!
//! This is RabbitMQ's design for records that evolve without a schema change.
//! A record carries a [`FeatureMap`]: entries keyed by a name **and a
//! version** (`meta@1`, `meta@2`, stored as distinct entries), each value
//! encoded on its own. A release knows some keys through typed
//! [`FeatureKey`] constants:
//!
//! ```
//! use rollgate::record::FeatureKey;
//! # #[derive(rollgate::wire::Encode, rollgate::wire::Decode)] struct MetaV1 { owner: String }
//! # #[derive(rollgate::wire::Encode, rollgate::wire::Decode)] struct MetaV2 { owner: String, replicas: Vec<String> }
//! const META_V1: FeatureKey<MetaV1> = FeatureKey::new("meta", 1);
//! const META_V2: FeatureKey<MetaV2> = FeatureKey::new("meta", 2).gated_by("meta_v2");
//! ```
//!
//! - **Unknown keys survive**: decoding and re-encoding a map keeps every
//!   entry the code does not know byte for byte, through the wire codec
//!   ([`Encode`]/[`Decode`]) and through serde (JSON: `{"meta@1": "<hex>"}`).
//! - **Newest first, then fall back**: [`FeatureMap::lookup`] reads the newest
//!   key version the code knows and falls back to older ones, converting
//!   (`slaves_list_v2`, else `slaves_list`):
//!   `map.lookup(&META_V2).or(&META_V1, MetaV2::from).get()?`.
//! - **Writers obey the flags (I1)**: a key declared with
//!   [`FeatureKey::gated_by`] is written only when the gate evidence says the
//!   flag is enabled; [`FeatureMap::set`] takes a [`Gates`] and refuses
//!   otherwise with [`RecordError::FlagNotEnabled`].
//! - **Going back** ([`FeatureMap::convert_back`]): drop the new key, making
//!   sure the old one is present, for a flag that is being disabled.
//! - **Bounded**: at most [`RecordLimits::max_keys`] entries and
//!   [`RecordLimits::max_value_bytes`] per value on decode; names are
//!   `[a-z0-9_]{1,64}`, versions start at 1; entries are in key order (the
//!   encoding is canonical).
//!
//! Values are encoded with the wire codec at [`VALUE_TRANSPORT_VERSION`]
//! whatever the transport version of the connection or file carrying the
//! record: a feature evolves through new key versions, not through
//! transport-gated fields.
//!
//! Old code that modifies `meta@1` while `meta@2` is present leaves `meta@2`
//! as it was; new code then prefers `meta@2`. That is why `meta@2` must be
//! gated by a flag: once the flag is enabled, every node knows `meta@2`.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::migrate::Gates;
use rollgate_version::TransportVersion;
use rollgate_wire::wire::{Decode, Encode, Limits, Reader, WireError, Writer};

/// The transport version feature values are encoded at.
pub const VALUE_TRANSPORT_VERSION: TransportVersion = TransportVersion::ZERO;
/// Longest feature name, in bytes.
pub const MAX_FEATURE_NAME_BYTES: usize = 64;

/// Bounds applied when a feature map is decoded (and checked when written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLimits {
    /// Most entries in one map.
    pub max_keys: usize,
    /// Largest encoded value of one entry, in bytes.
    pub max_value_bytes: usize,
}

impl RecordLimits {
    /// 64 entries, 64 KiB per value.
    pub const DEFAULT: RecordLimits = RecordLimits { max_keys: 64, max_value_bytes: 64 * 1024 };
}

impl Default for RecordLimits {
    fn default() -> Self {
        RecordLimits::DEFAULT
    }
}

/// Errors of feature maps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A writer tried to add a key whose flag is not enabled (I1).
    #[error(
        "feature key {key} is gated by flag `{flag}`, which is not enabled: it may be written only once the flag is \
         enabled (`rollgate flags enable {flag}` when every node supports it); write the older key meanwhile"
    )]
    FlagNotEnabled {
        /// The key (`name@version`).
        key: String,
        /// The gating flag.
        flag: String,
    },
    /// A stored value does not decode as the key's type.
    #[error("feature {key} does not decode: {source}")]
    Decode {
        /// The key.
        key: String,
        /// Why.
        source: WireError,
    },
    /// A value could not be encoded.
    #[error("feature {key} could not be encoded: {source}")]
    Encode {
        /// The key.
        key: String,
        /// Why.
        source: WireError,
    },
    /// A value over [`RecordLimits::max_value_bytes`].
    #[error("feature {key} is {len} bytes, over the limit of {max}")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More entries than [`RecordLimits::max_keys`].
    #[error("a feature map may hold at most {max} keys; adding {key} would exceed it")]
    TooManyKeys {
        /// The key being added.
        key: String,
        /// The limit.
        max: usize,
    },
    /// The bytes of a whole map do not decode.
    #[error("feature map does not decode: {0}")]
    Wire(#[from] WireError),
}

/// The identity of one entry: a name and a version (`meta@2`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId {
    /// The name, `[a-z0-9_]{1,64}`.
    pub name: String,
    /// The version, from 1.
    pub version: u32,
}

impl KeyId {
    /// A key id; checked.
    pub fn new(name: &str, version: u32) -> Option<KeyId> {
        (valid_name(name.as_bytes()) && version > 0).then(|| KeyId { name: name.to_string(), version })
    }

    /// Parses `name@version` (canonical: no sign, no leading zero).
    pub fn parse(s: &str) -> Option<KeyId> {
        let (name, version) = s.rsplit_once('@')?;
        if version.is_empty() || version.starts_with('0') || !version.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        KeyId::new(name, version.parse().ok()?)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

const fn valid_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_FEATURE_NAME_BYTES {
        return false;
    }
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

/// A typed key of a feature map, declared once as a constant. `T` is the
/// value type; the optional gate is the flag that must be enabled before a
/// writer adds this key.
pub struct FeatureKey<T> {
    name: &'static str,
    version: u32,
    gate: Option<&'static str>,
    _value: PhantomData<fn() -> T>,
}

impl<T> FeatureKey<T> {
    /// A key `name@version`. Names are `[a-z0-9_]{1,64}` and versions start
    /// at 1; a bad constant fails the build (const evaluation).
    pub const fn new(name: &'static str, version: u32) -> Self {
        assert!(valid_name(name.as_bytes()), "feature key names are 1 to 64 of [a-z0-9_]");
        assert!(version > 0, "feature key versions start at 1");
        FeatureKey { name, version, gate: None, _value: PhantomData }
    }

    /// The same key, writable only once `flag` is enabled.
    pub const fn gated_by(self, flag: &'static str) -> Self {
        assert!(valid_name(flag.as_bytes()), "flag names are 1 to 64 of [a-z0-9_]");
        FeatureKey { name: self.name, version: self.version, gate: Some(flag), _value: PhantomData }
    }

    /// The name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The version.
    pub const fn version(&self) -> u32 {
        self.version
    }

    /// The gating flag, if any.
    pub const fn gate(&self) -> Option<&'static str> {
        self.gate
    }

    /// The key's identity.
    pub fn id(&self) -> KeyId {
        KeyId { name: self.name.to_string(), version: self.version }
    }
}

impl<T> Clone for FeatureKey<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for FeatureKey<T> {}

impl<T> fmt::Debug for FeatureKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FeatureKey({}@{}", self.name, self.version)?;
        if let Some(g) = self.gate {
            write!(f, ", gated by {g}")?;
        }
        f.write_str(")")
    }
}

/// The versioned feature map inside a record. Values are kept encoded, so
/// entries the code does not know are preserved byte for byte.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureMap {
    entries: BTreeMap<KeyId, Vec<u8>>,
}

fn encode_value<T: Encode>(key: &KeyId, value: &T) -> Result<Vec<u8>, RecordError> {
    let limits = Limits { max_frame_bytes: RecordLimits::DEFAULT.max_value_bytes, ..Limits::DEFAULT };
    let mut w = Writer::new(VALUE_TRANSPORT_VERSION, limits);
    value.encode(&mut w);
    match w.into_bytes() {
        Ok(bytes) => Ok(bytes),
        Err(WireError::FrameTooLarge { len, max }) => {
            Err(RecordError::ValueTooLarge { key: key.to_string(), len: len as usize, max })
        }
        Err(source) => Err(RecordError::Encode { key: key.to_string(), source }),
    }
}

fn decode_value<T: Decode>(key: &KeyId, bytes: &[u8]) -> Result<T, RecordError> {
    rollgate_wire::wire::decode_frame(bytes, VALUE_TRANSPORT_VERSION, Limits::DEFAULT)
        .map_err(|source| RecordError::Decode { key: key.to_string(), source })
}

impl FeatureMap {
    /// An empty map.
    pub fn new() -> Self {
        FeatureMap::default()
    }

    /// Number of entries (known or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the map holds `key`.
    pub fn contains<T>(&self, key: &FeatureKey<T>) -> bool {
        self.entries.contains_key(&key.id())
    }

    /// Reads one key (no fallback). A value that does not decode as `T` is
    /// an error naming the key, never silently skipped.
    pub fn get<T: Decode>(&self, key: &FeatureKey<T>) -> Result<Option<T>, RecordError> {
        let id = key.id();
        self.entries.get(&id).map(|bytes| decode_value(&id, bytes)).transpose()
    }

    /// Starts a lookup that prefers `newest` and can fall back to older key
    /// versions with [`Lookup::or`].
    pub fn lookup<T: Decode>(&self, newest: &FeatureKey<T>) -> Lookup<'_, T> {
        let found = self.get(newest).map(|v| v.map(|v| (v, newest.id())));
        Lookup { map: self, found }
    }

    /// Writes `key`. A gated key is written only when `gates` says its flag
    /// is enabled (I1); otherwise [`RecordError::FlagNotEnabled`] and the map
    /// is unchanged.
    pub fn set<T: Encode>(&mut self, key: &FeatureKey<T>, value: &T, gates: &dyn Gates) -> Result<(), RecordError> {
        let id = key.id();
        if let Some(flag) = key.gate
            && !gates.flag_enabled(flag)
        {
            return Err(RecordError::FlagNotEnabled { key: id.to_string(), flag: flag.to_string() });
        }
        let bytes = encode_value(&id, value)?;
        self.insert_raw(id, bytes)
    }

    fn insert_raw(&mut self, id: KeyId, bytes: Vec<u8>) -> Result<(), RecordError> {
        let max = RecordLimits::DEFAULT;
        if bytes.len() > max.max_value_bytes {
            return Err(RecordError::ValueTooLarge { key: id.to_string(), len: bytes.len(), max: max.max_value_bytes });
        }
        if !self.entries.contains_key(&id) && self.entries.len() >= max.max_keys {
            return Err(RecordError::TooManyKeys { key: id.to_string(), max: max.max_keys });
        }
        self.entries.insert(id, bytes);
        Ok(())
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove<T>(&mut self, key: &FeatureKey<T>) -> bool {
        self.entries.remove(&key.id()).is_some()
    }

    /// The encoded value of an entry, known or not.
    pub fn raw(&self, id: &KeyId) -> Option<&[u8]> {
        self.entries.get(id).map(Vec::as_slice)
    }

    /// Every entry with its encoded value, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&KeyId, &[u8])> {
        self.entries.iter().map(|(k, v)| (k, v.as_slice()))
    }

    /// The entries whose key is not in `known`.
    pub fn unknown<'a>(&'a self, known: &'a [KeyId]) -> impl Iterator<Item = (&'a KeyId, &'a [u8])> + 'a {
        self.entries().filter(move |(k, _)| !known.contains(k))
    }

    /// Converts the record back for a flag being disabled: when `new` is
    /// present, makes sure `old` is present (computing it from `new` with
    /// `convert` when it is not) and drops `new`. Returns whether the map
    /// changed. An undecodable `new` value is an error and nothing changes.
    pub fn convert_back<N: Decode, O: Encode>(
        &mut self,
        new: &FeatureKey<N>,
        old: &FeatureKey<O>,
        convert: impl FnOnce(N) -> O,
    ) -> Result<bool, RecordError> {
        let Some(value) = self.get(new)? else { return Ok(false) };
        let old_id = old.id();
        if let std::collections::btree_map::Entry::Vacant(slot) = self.entries.entry(old_id) {
            let bytes = encode_value(slot.key(), &convert(value))?;
            // The new key is dropped below, so the count does not grow.
            slot.insert(bytes);
        }
        self.entries.remove(&new.id());
        Ok(true)
    }

    /// Encodes the map alone (wire codec).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(VALUE_TRANSPORT_VERSION, Limits::DEFAULT);
        self.encode(&mut w);
        w.as_bytes().to_vec()
    }

    /// Decodes a map encoded with [`to_bytes`](Self::to_bytes), with limits.
    pub fn from_bytes(bytes: &[u8], limits: RecordLimits) -> Result<FeatureMap, RecordError> {
        let mut r = Reader::new(bytes, VALUE_TRANSPORT_VERSION, Limits::DEFAULT);
        let map = decode_map(&mut r, limits)?;
        r.finish()?;
        Ok(map)
    }
}

/// A lookup in progress: the newest known key first, then older ones.
#[must_use = "a lookup does nothing until `get`"]
pub struct Lookup<'a, T> {
    map: &'a FeatureMap,
    found: Result<Option<(T, KeyId)>, RecordError>,
}

impl<T> Lookup<'_, T> {
    /// Falls back to `older` (converted with `convert`) when nothing newer
    /// was found. An entry that is present but does not decode stops the
    /// lookup with an error.
    pub fn or<U: Decode>(self, older: &FeatureKey<U>, convert: impl FnOnce(U) -> T) -> Self {
        let found = match self.found {
            Ok(None) => self.map.get(older).map(|v| v.map(|v| (convert(v), older.id()))),
            done => done,
        };
        Lookup { map: self.map, found }
    }

    /// The value, from the newest key present.
    pub fn get(self) -> Result<Option<T>, RecordError> {
        self.found.map(|v| v.map(|(v, _)| v))
    }

    /// The value and the key it came from.
    pub fn get_with_key(self) -> Result<Option<(T, KeyId)>, RecordError> {
        self.found
    }
}

// ---- wire codec ----

impl Encode for FeatureMap {
    fn encode(&self, w: &mut Writer) {
        w.put_len(self.entries.len());
        for (id, value) in &self.entries {
            id.name.encode(w);
            w.put_varint(id.version as u64);
            w.put_bytes(value);
        }
    }
}

fn decode_map(r: &mut Reader<'_>, limits: RecordLimits) -> Result<FeatureMap, WireError> {
    let offset = r.position();
    let len = r.get_len()?;
    if len > limits.max_keys {
        return Err(WireError::LengthOverLimit { offset, len: len as u64, max: limits.max_keys });
    }
    r.enter()?;
    let result = (|| {
        let mut entries = BTreeMap::new();
        let mut previous: Option<KeyId> = None;
        for _ in 0..len {
            let offset = r.position();
            let name_len = r.get_len()?;
            if name_len > MAX_FEATURE_NAME_BYTES {
                return Err(WireError::LengthOverLimit { offset, len: name_len as u64, max: MAX_FEATURE_NAME_BYTES });
            }
            let name = r.take(name_len)?;
            if !valid_name(name) {
                return Err(WireError::Invalid { offset, what: "a feature key name must be 1 to 64 of [a-z0-9_]" });
            }
            let version_offset = r.position();
            let version = r.get_varint()?;
            let version = u32::try_from(version).map_err(|_| WireError::IntegerOutOfRange {
                offset: version_offset,
                value: version,
                ty: "u32",
            })?;
            if version == 0 {
                return Err(WireError::Invalid { offset: version_offset, what: "feature key versions start at 1" });
            }
            let value_offset = r.position();
            let value = r.get_bytes()?;
            if value.len() > limits.max_value_bytes {
                return Err(WireError::LengthOverLimit {
                    offset: value_offset,
                    len: value.len() as u64,
                    max: limits.max_value_bytes,
                });
            }
            // valid_name accepted only ASCII.
            let id = KeyId { name: String::from_utf8_lossy(name).into_owned(), version };
            if let Some(prev) = &previous {
                if *prev == id {
                    return Err(WireError::DuplicateKey { ty: "FeatureMap", offset });
                }
                if *prev > id {
                    return Err(WireError::Invalid { offset, what: "feature keys are not in ascending order" });
                }
            }
            previous = Some(id.clone());
            entries.insert(id, value.to_vec());
        }
        Ok(FeatureMap { entries })
    })();
    r.leave();
    result
}

impl Decode for FeatureMap {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        decode_map(r, RecordLimits::DEFAULT)
    }
}

// ---- serde ----

const HEX: &[u8; 16] = b"0123456789abcdef";

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { s.serialize_str(&to_hex(self.0)) } else { s.serialize_bytes(self.0) }
    }
}

impl Serialize for FeatureMap {
    /// A map `"name@version" -> value`, the value as lowercase hex in
    /// human-readable formats (JSON) and as bytes otherwise.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for (id, value) in &self.entries {
            map.serialize_entry(&id.to_string(), &Raw(value))?;
        }
        map.end()
    }
}

struct RawValue(Vec<u8>);

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a feature value: lowercase hex or bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
                if v.len() > 2 * RecordLimits::DEFAULT.max_value_bytes {
                    return Err(E::custom(format_args!(
                        "feature value over the limit of {} bytes",
                        RecordLimits::DEFAULT.max_value_bytes
                    )));
                }
                from_hex(v).map(RawValue).ok_or_else(|| E::custom("feature value is not lowercase hex"))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<RawValue, E> {
                if v.len() > RecordLimits::DEFAULT.max_value_bytes {
                    return Err(E::custom(format_args!(
                        "feature value over the limit of {} bytes",
                        RecordLimits::DEFAULT.max_value_bytes
                    )));
                }
                Ok(RawValue(v.to_vec()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
                // Binary formats that write bytes as a sequence.
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    if out.len() == RecordLimits::DEFAULT.max_value_bytes {
                        return Err(de::Error::custom(format_args!(
                            "feature value over the limit of {} bytes",
                            RecordLimits::DEFAULT.max_value_bytes
                        )));
                    }
                    out.push(b);
                }
                Ok(RawValue(out))
            }
        }
        if d.is_human_readable() { d.deserialize_str(V) } else { d.deserialize_bytes(V) }
    }
}

impl<'de> Deserialize<'de> for FeatureMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FeatureMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a feature map {\"name@version\": value}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<FeatureMap, A::Error> {
                let max = RecordLimits::DEFAULT.max_keys;
                let mut entries = BTreeMap::new();
                while let Some(key) = access.next_key::<String>()? {
                    let id = KeyId::parse(&key).ok_or_else(|| {
                        de::Error::custom(format_args!(
                            "feature key {:?} is not name@version (name 1 to 64 of [a-z0-9_], version from 1)",
                            rollgate_util::shorten(&key)
                        ))
                    })?;
                    if entries.len() == max {
                        return Err(de::Error::custom(format_args!("a feature map may hold at most {max} keys")));
                    }
                    let RawValue(value) = access.next_value()?;
                    if entries.insert(id, value).is_some() {
                        return Err(de::Error::custom(format_args!("feature key {key} appears twice")));
                    }
                }
                Ok(FeatureMap { entries })
            }
        }
        d.deserialize_map(V)
    }
}

/// A record: the service's own fields (`core`) and a feature map. Encodes
/// as `core` then `features` (wire codec), or as `{"core": ..., "features":
/// {...}}` (serde).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<C> {
    /// The fields every release knows.
    pub core: C,
    /// The extensible part.
    pub features: FeatureMap,
}

impl<C> Record<C> {
    /// A record without features.
    pub fn new(core: C) -> Self {
        Record { core, features: FeatureMap::new() }
    }
}

impl<C: Encode> Encode for Record<C> {
    fn encode(&self, w: &mut Writer) {
        self.core.encode(w);
        self.features.encode(w);
    }
}

impl<C: Decode> Decode for Record<C> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let core = C::decode(r)?;
        let features = FeatureMap::decode(r)?;
        Ok(Record { core, features })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::MemGates;
    use rollgate_wire::wire::{decode_frame, encode_to_vec};

    // (slaves) and (slaves, pending_shutdown): the derives are for other crates.
    type SlavesV1 = Vec<String>;
    type SlavesV2 = (Vec<String>, Vec<String>);

    fn upgrade(v1: SlavesV1) -> SlavesV2 {
        (v1, Vec::new())
    }

    const SLAVES: FeatureKey<SlavesV1> = FeatureKey::new("slaves_list", 1);
    const SLAVES_V2: FeatureKey<SlavesV2> = FeatureKey::new("slaves_list", 2).gated_by("slaves_list_v2");

    fn v1() -> SlavesV1 {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn lookup_prefers_the_newest_and_falls_back() {
        let gates = MemGates::new();
        let mut map = FeatureMap::new();
        assert_eq!(map.lookup(&SLAVES_V2).or(&SLAVES, upgrade).get().unwrap(), None);
        map.set(&SLAVES, &v1(), &gates).unwrap();
        let (got, from) = map.lookup(&SLAVES_V2).or(&SLAVES, upgrade).get_with_key().unwrap().unwrap();
        assert_eq!(got, upgrade(v1()));
        assert_eq!(from.to_string(), "slaves_list@1");
        gates.enable_flag("slaves_list_v2");
        let v2: SlavesV2 = (vec!["c".into()], vec!["d".into()]);
        map.set(&SLAVES_V2, &v2, &gates).unwrap();
        assert_eq!(map.lookup(&SLAVES_V2).or(&SLAVES, upgrade).get().unwrap(), Some(v2));
    }

    #[test]
    fn a_gated_key_needs_its_flag() {
        let gates = MemGates::new();
        let mut map = FeatureMap::new();
        let v2 = upgrade(v1());
        let err = map.set(&SLAVES_V2, &v2, &gates).unwrap_err();
        assert_eq!(err, RecordError::FlagNotEnabled { key: "slaves_list@2".into(), flag: "slaves_list_v2".into() });
        assert!(err.to_string().contains("rollgate flags enable slaves_list_v2"), "{err}");
        assert!(map.is_empty(), "nothing written");
        gates.enable_flag("slaves_list_v2");
        map.set(&SLAVES_V2, &v2, &gates).unwrap();
        assert!(map.contains(&SLAVES_V2));
    }

    #[test]
    fn a_corrupt_newest_value_is_an_error_not_a_fallback() {
        let mut map = FeatureMap::new();
        map.set(&SLAVES, &v1(), &MemGates::new()).unwrap();
        map.entries.insert(SLAVES_V2.id(), vec![0xff]);
        let err = map.lookup(&SLAVES_V2).or(&SLAVES, upgrade).get().unwrap_err();
        assert!(matches!(&err, RecordError::Decode { key, .. } if key == "slaves_list@2"), "{err}");
    }

    #[test]
    fn convert_back_drops_the_new_key_and_keeps_or_makes_the_old_one() {
        let gates = MemGates::with_flags(["slaves_list_v2"]);
        let mut map = FeatureMap::new();
        let v2: SlavesV2 = (vec!["x".into()], vec!["y".into()]);
        map.set(&SLAVES_V2, &v2, &gates).unwrap();
        assert!(map.convert_back(&SLAVES_V2, &SLAVES, |n| n.0).unwrap());
        assert!(!map.contains(&SLAVES_V2));
        assert_eq!(map.get(&SLAVES).unwrap(), Some(vec!["x".to_string()]));
        assert!(!map.convert_back(&SLAVES_V2, &SLAVES, |n| n.0).unwrap(), "idempotent");

        // An old key already present is kept as it is.
        map.set(&SLAVES_V2, &v2, &gates).unwrap();
        let before = map.raw(&SLAVES.id()).unwrap().to_vec();
        map.convert_back(&SLAVES_V2, &SLAVES, |_| vec!["ignored".to_string()]).unwrap();
        assert_eq!(map.raw(&SLAVES.id()).unwrap(), before.as_slice());
    }

    #[test]
    fn wire_and_json_keep_unknown_entries_byte_for_byte() {
        let mut map = FeatureMap::new();
        map.set(&SLAVES, &v1(), &MemGates::new()).unwrap();
        map.entries.insert(KeyId::new("future", 7).unwrap(), vec![0, 1, 2, 0xfe]);
        let bytes = encode_to_vec(&map, TransportVersion::from_id(9_000_0_00), Limits::DEFAULT).unwrap();
        let back: FeatureMap = decode_frame(&bytes, TransportVersion::from_id(9_000_0_00), Limits::DEFAULT).unwrap();
        assert_eq!(back, map);
        let json = serde_json::to_string(&map).unwrap();
        assert!(json.contains(r#""future@7":"000102fe""#), "{json}");
        let back: FeatureMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, map);
        assert_eq!(FeatureMap::from_bytes(&map.to_bytes(), RecordLimits::DEFAULT).unwrap(), map);
    }

    #[test]
    fn decoding_refuses_bad_keys_order_and_sizes() {
        fn entry(w: &mut Writer, name: &str, version: u64, value: &[u8]) {
            name.encode(w);
            w.put_varint(version);
            w.put_bytes(value);
        }
        let frame = |f: &dyn Fn(&mut Writer)| {
            let mut w = Writer::new(VALUE_TRANSPORT_VERSION, Limits::DEFAULT);
            f(&mut w);
            w.as_bytes().to_vec()
        };
        let limits = RecordLimits { max_keys: 2, max_value_bytes: 4 };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (frame(&|w| w.put_len(3)), "exceeds the limit of 2"),
            (
                frame(&|w| {
                    w.put_len(1);
                    entry(w, "a", 1, &[0; 5]);
                }),
                "exceeds the limit of 4",
            ),
            (
                frame(&|w| {
                    w.put_len(1);
                    entry(w, "A", 1, &[]);
                }),
                "name must be",
            ),
            (
                frame(&|w| {
                    w.put_len(1);
                    entry(w, "a", 0, &[]);
                }),
                "start at 1",
            ),
            (
                frame(&|w| {
                    w.put_len(1);
                    entry(w, "a", 1 << 40, &[]);
                }),
                "does not fit in u32",
            ),
            (
                frame(&|w| {
                    w.put_len(2);
                    entry(w, "b", 1, &[]);
                    entry(w, "a", 1, &[]);
                }),
                "not in ascending order",
            ),
            (
                frame(&|w| {
                    w.put_len(2);
                    entry(w, "a", 1, &[]);
                    entry(w, "a", 1, &[]);
                }),
                "duplicate key",
            ),
            (
                frame(&|w| {
                    w.put_len(1);
                    w.put_len(65);
                }),
                "exceeds the limit of 64",
            ),
            (vec![1, 1, b'a'], "truncated"),
        ];
        for (bytes, fragment) in cases {
            let err = FeatureMap::from_bytes(&bytes, limits).unwrap_err().to_string();
            assert!(err.contains(fragment), "{bytes:?}: {err:?} lacks {fragment:?}");
        }
    }

    #[test]
    fn json_refuses_bad_keys_values_and_duplicates() {
        let cases = [
            (r#"{"meta":"00"}"#, "is not name@version"),
            (r#"{"meta@0":"00"}"#, "is not name@version"),
            (r#"{"meta@01":"00"}"#, "is not name@version"),
            (r#"{"Meta@1":"00"}"#, "is not name@version"),
            (r#"{"meta@1":"0"}"#, "not lowercase hex"),
            (r#"{"meta@1":"0G"}"#, "not lowercase hex"),
            (r#"{"meta@1":"00","meta@1":"01"}"#, "appears twice"),
            (r#"{"meta@1":5}"#, "lowercase hex"),
            (r#"[]"#, "a feature map"),
        ];
        for (json, fragment) in cases {
            let err = serde_json::from_str::<FeatureMap>(json).unwrap_err().to_string();
            assert!(err.contains(fragment), "{json}: {err:?} lacks {fragment:?}");
        }
        let many: String = (0..65).map(|i| format!("\"k{i}@1\":\"\"")).collect::<Vec<_>>().join(",");
        let err = serde_json::from_str::<FeatureMap>(&format!("{{{many}}}")).unwrap_err().to_string();
        assert!(err.contains("at most 64 keys"), "{err}");
        let big = format!(r#"{{"k@1":"{}"}}"#, "00".repeat(RecordLimits::DEFAULT.max_value_bytes + 1));
        assert!(serde_json::from_str::<FeatureMap>(&big).unwrap_err().to_string().contains("over the limit"));
    }

    #[test]
    fn writers_are_bounded_too() {
        let gates = MemGates::new();
        let mut map = FeatureMap::new();
        for i in 0..RecordLimits::DEFAULT.max_keys {
            let id = KeyId::new(&format!("k{i}"), 1).unwrap();
            map.insert_raw(id, vec![]).unwrap();
        }
        let err = map.set(&SLAVES, &v1(), &gates).unwrap_err();
        assert!(matches!(err, RecordError::TooManyKeys { max: 64, .. }), "{err}");
        const BIG: FeatureKey<Vec<u8>> = FeatureKey::new("big", 1);
        let err = FeatureMap::new().set(&BIG, &vec![0u8; 70_000], &gates).unwrap_err();
        assert!(matches!(err, RecordError::ValueTooLarge { .. }), "{err}");
    }
}

//! The versioned binary codec: [`Writer`]/[`Reader`] carry the negotiated
//! [`TransportVersion`] and the [`Limits`]; [`Encode`]/[`Decode`] are
//! implemented for the std types below and derived for service types with
//! `#[derive(Encode, Decode)]`.
//!
//! # Encoding
//!
//! | type | bytes |
//! |---|---|
//! | `u8`, `i8` | one raw byte |
//! | `u16`, `u32`, `u64`, `usize` | LEB128 varint (canonical: no redundant trailing zero groups) |
//! | `i16`, `i32`, `i64`, `isize` | zigzag, then varint |
//! | `f32`, `f64` | little-endian IEEE 754 |
//! | `bool` | `0` or `1` |
//! | `char` | its scalar value as a varint |
//! | `String`, `Vec<T>`, maps, sets | varint length, then the items (maps: key, value; in key order for `BTreeMap`) |
//! | `Option<T>` | `0`, or `1` then the value |
//! | tuples, `[T; N]`, structs | the fields in order, no length |
//! | enums (derived) | the variant's tag as a varint, then its fields |
//!
//! A derived field marked `#[wire(since = "name")]` is written and read only
//! when the stream's version `supports()` the named transport version (and is
//! `Default::default()` or `#[wire(default = "expr")]` otherwise); one marked
//! `#[wire(until = "name")]` only while the version does *not* support it.
//!
//! ```text
//! #[derive(Encode, Decode)]
//! pub struct Ping {
//!     pub seq: u64,
//!     #[wire(since = "ping_payload")]
//!     pub payload: Vec<u8>,
//! }
//! ```
//!
//! # Limits
//!
//! Decoding any byte string returns a value or a [`WireError`]; it never
//! panics and never allocates more than the input justifies: every length is
//! checked against [`Limits::max_collection_len`] and, before reserving,
//! against the bytes that remain (and at most [`MAX_PREALLOC_BYTES`] are reserved
//! up front); nesting (through `Box`, `Vec` and maps) is
//! bounded by [`Limits::max_depth`]. Encoding never fails on the spot: a
//! length over a limit is recorded in the [`Writer`] and reported by
//! [`Writer::finish`], together with a frame over [`Limits::max_frame_bytes`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hash};

pub use rollgate_derive::{Decode, Encode};

use crate::version::{NamedTransportVersion, ProtocolVersion, TransportVersion};

/// Limits applied to everything decoded (and checked when encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (one encoded message), in bytes.
    pub max_frame_bytes: usize,
    /// Most items in one string, byte string, list, set or map.
    pub max_collection_len: usize,
    /// Deepest nesting of boxes, lists and maps.
    pub max_depth: u32,
}

impl Limits {
    /// 16 MiB frames, 1 Mi items per collection, nesting depth 64.
    pub const DEFAULT: Limits = Limits { max_frame_bytes: 16 << 20, max_collection_len: 1 << 20, max_depth: 64 };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Why encoding or decoding failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended inside a value.
    #[error("truncated input: needed {needed} more byte(s) at offset {offset}, {remaining} left")]
    UnexpectedEnd {
        /// Offset of the read.
        offset: usize,
        /// Bytes the read needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A varint longer than its type allows, or not in canonical form.
    #[error("malformed varint at offset {offset}: {what}")]
    BadVarint {
        /// Offset of the varint's first byte.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// A decoded integer does not fit the target type.
    #[error("integer {value} at offset {offset} does not fit in {ty}")]
    IntegerOutOfRange {
        /// Offset of the integer.
        offset: usize,
        /// The decoded value.
        value: u64,
        /// The target type.
        ty: &'static str,
    },
    /// A length above [`Limits::max_collection_len`].
    #[error("length {len} at offset {offset} exceeds the limit of {max} items")]
    LengthOverLimit {
        /// Offset of the length prefix (or the encoder's position).
        offset: usize,
        /// The length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A frame above [`Limits::max_frame_bytes`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// Nesting deeper than [`Limits::max_depth`].
    #[error("nesting deeper than {max} at offset {offset}")]
    TooDeep {
        /// Offset where the limit was hit.
        offset: usize,
        /// The limit.
        max: u32,
    },
    /// A string that is not UTF-8.
    #[error("string at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Offset of the string's bytes.
        offset: usize,
    },
    /// A `bool` byte other than 0 or 1, or an `Option` tag other than 0 or 1.
    #[error("invalid {what} byte {byte:#04x} at offset {offset}")]
    InvalidByte {
        /// `bool` or `Option tag`.
        what: &'static str,
        /// The byte.
        byte: u8,
        /// Its offset.
        offset: usize,
    },
    /// An integer that is not a Unicode scalar value.
    #[error("invalid char {value:#x} at offset {offset}")]
    InvalidChar {
        /// The value.
        value: u32,
        /// Its offset.
        offset: usize,
    },
    /// An enum tag the type does not define.
    #[error("unknown tag {tag} for enum {ty} at offset {offset}")]
    UnknownTag {
        /// The enum.
        ty: &'static str,
        /// The tag.
        tag: u64,
        /// Offset of the tag.
        offset: usize,
    },
    /// The same key twice in a map or set (encodings are canonical).
    #[error("duplicate key in {ty} at offset {offset}")]
    DuplicateKey {
        /// The collection type.
        ty: &'static str,
        /// Offset of the repeated key.
        offset: usize,
    },
    /// A fixed-size array whose length does not match.
    #[error("array length mismatch at offset {offset}: expected {expected}, found {found}")]
    ArrayLength {
        /// Offset.
        offset: usize,
        /// The array's length.
        expected: usize,
        /// Items decoded.
        found: usize,
    },
    /// Bytes left after the value.
    #[error("{count} trailing byte(s) after the value")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A protocol version the message type does not define.
    #[error("protocol {version} is not one this build speaks ({supported})")]
    UnsupportedProtocol {
        /// The version asked for.
        version: ProtocolVersion,
        /// What the type supports.
        supported: crate::version::ProtocolRange,
    },
    /// A value that is invalid for its type.
    #[error("invalid value at offset {offset}: {what}")]
    Invalid {
        /// Offset.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
}

/// Encodes values at one transport version into a reusable buffer.
///
/// Encoding is infallible per value (no `Result` per field); the first limit
/// violation is remembered and returned by [`Writer::finish`].
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
    version: TransportVersion,
    limits: Limits,
    error: Option<WireError>,
}

impl Writer {
    /// An empty writer for `version`.
    pub fn new(version: TransportVersion, limits: Limits) -> Self {
        Writer { buf: Vec::new(), version, limits, error: None }
    }

    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(version: TransportVersion, limits: Limits, capacity: usize) -> Self {
        Writer { buf: Vec::with_capacity(capacity), version, limits, error: None }
    }

    /// The transport version this writer encodes for.
    #[inline]
    pub fn version(&self) -> TransportVersion {
        self.version
    }

    /// `self.version().supports(named)`: what derived `since`/`until` fields gate on.
    #[inline]
    pub fn supports(&self, named: &NamedTransportVersion) -> bool {
        self.version.supports(named)
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Empties the buffer (keeping its allocation) and forgets any error.
    #[inline]
    pub fn clear(&mut self) {
        self.buf.clear();
        self.error = None;
    }

    /// Bytes written so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Encodes one value.
    #[inline]
    pub fn write<T: Encode + ?Sized>(&mut self, value: &T) -> &mut Self {
        value.encode(self);
        self
    }

    /// The encoded bytes, or the first limit violation (including a total
    /// over [`Limits::max_frame_bytes`]).
    pub fn finish(&self) -> Result<&[u8], WireError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.buf.len() > self.limits.max_frame_bytes {
            return Err(WireError::FrameTooLarge { len: self.buf.len() as u64, max: self.limits.max_frame_bytes });
        }
        Ok(&self.buf)
    }

    /// Like [`finish`](Self::finish), returning the buffer.
    pub fn into_bytes(self) -> Result<Vec<u8>, WireError> {
        self.finish()?;
        Ok(self.buf)
    }

    /// The bytes written so far, without checking limits.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Appends one raw byte.
    #[inline(always)]
    pub fn put_u8(&mut self, b: u8) {
        self.buf.push(b);
    }

    /// Appends raw bytes (no length prefix).
    #[inline(always)]
    pub fn put_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Appends a LEB128 varint.
    #[inline(always)]
    pub fn put_varint(&mut self, mut v: u64) {
        if v < 0x80 {
            self.buf.push(v as u8);
            return;
        }
        let mut tmp = [0u8; 10];
        let mut n = 0;
        while v >= 0x80 {
            tmp[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        tmp[n] = v as u8;
        self.buf.extend_from_slice(&tmp[..=n]);
    }

    /// Appends a collection length, recording an error when it is over
    /// [`Limits::max_collection_len`].
    #[inline(always)]
    pub fn put_len(&mut self, len: usize) {
        if len > self.limits.max_collection_len && self.error.is_none() {
            self.error = Some(WireError::LengthOverLimit {
                offset: self.buf.len(),
                len: len as u64,
                max: self.limits.max_collection_len,
            });
        }
        self.put_varint(len as u64);
    }

    /// Appends a length-prefixed byte string.
    #[inline]
    pub fn put_bytes(&mut self, bytes: &[u8]) {
        self.put_len(bytes.len());
        self.put_raw(bytes);
    }

    /// Records an error to be returned by [`finish`](Self::finish) (for
    /// hand-written `Encode` impls that find a value they cannot encode).
    pub fn fail(&mut self, error: WireError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }
}

/// Decodes values at one transport version from a byte slice.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    version: TransportVersion,
    limits: Limits,
    depth: u32,
}

impl<'a> Reader<'a> {
    /// A reader over `buf` at `version`. A `buf` over
    /// [`Limits::max_frame_bytes`] is accepted here; use [`decode_frame`] to
    /// enforce it.
    pub fn new(buf: &'a [u8], version: TransportVersion, limits: Limits) -> Self {
        Reader { buf, pos: 0, version, limits, depth: 0 }
    }

    /// The transport version this reader decodes at.
    #[inline]
    pub fn version(&self) -> TransportVersion {
        self.version
    }

    /// `self.version().supports(named)`.
    #[inline]
    pub fn supports(&self, named: &NamedTransportVersion) -> bool {
        self.version.supports(named)
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Current offset.
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Decodes one value.
    #[inline]
    pub fn read<T: Decode>(&mut self) -> Result<T, WireError> {
        T::decode(self)
    }

    /// An error unless every byte was consumed.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(WireError::TrailingBytes { count }),
        }
    }

    #[cold]
    fn end(&self, needed: usize) -> WireError {
        WireError::UnexpectedEnd { offset: self.pos, needed, remaining: self.remaining() }
    }

    /// Reads one raw byte.
    #[inline(always)]
    pub fn get_u8(&mut self) -> Result<u8, WireError> {
        match self.buf.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(*b)
            }
            None => Err(self.end(1)),
        }
    }

    /// Reads `n` raw bytes.
    #[inline(always)]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.remaining() {
            return Err(self.end(n));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads a canonical LEB128 varint of at most 64 bits.
    #[inline(always)]
    pub fn get_varint(&mut self) -> Result<u64, WireError> {
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(b as u64);
        }
        self.get_varint_slow()
    }

    #[inline(never)]
    fn get_varint_slow(&mut self) -> Result<u64, WireError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let Some(&b) = self.buf.get(self.pos) else {
                self.pos = start;
                return Err(self.end(1));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                self.pos = start;
                return Err(WireError::BadVarint { offset: start, what: "more than 64 bits" });
            }
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                if b == 0 && i > 0 {
                    self.pos = start;
                    return Err(WireError::BadVarint { offset: start, what: "not in canonical (shortest) form" });
                }
                return Ok(v);
            }
        }
        self.pos = start;
        Err(WireError::BadVarint { offset: start, what: "more than 10 bytes" })
    }

    /// Reads a collection length: at most [`Limits::max_collection_len`].
    /// Callers that reserve memory must also bound it by
    /// [`remaining`](Self::remaining) (as every impl here does).
    #[inline(always)]
    pub fn get_len(&mut self) -> Result<usize, WireError> {
        let offset = self.pos;
        let len = self.get_varint()?;
        if len > self.limits.max_collection_len as u64 {
            return Err(WireError::LengthOverLimit { offset, len, max: self.limits.max_collection_len });
        }
        Ok(len as usize)
    }

    /// Reads a length-prefixed byte string (borrowed).
    #[inline]
    pub fn get_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.get_len()?;
        self.take(n)
    }

    /// Enters one nesting level; pair with [`leave`](Self::leave).
    #[inline]
    pub fn enter(&mut self) -> Result<(), WireError> {
        if self.depth >= self.limits.max_depth {
            return Err(WireError::TooDeep { offset: self.pos, max: self.limits.max_depth });
        }
        self.depth += 1;
        Ok(())
    }

    /// Leaves one nesting level.
    #[inline]
    pub fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// An [`WireError::UnknownTag`] at the current position (for derived enums).
    #[cold]
    pub fn unknown_tag(&self, ty: &'static str, tag: u64, offset: usize) -> WireError {
        WireError::UnknownTag { ty, tag, offset }
    }
}

/// A type that can be written at any transport version.
pub trait Encode {
    /// Appends `self` to `w`, at `w.version()`.
    fn encode(&self, w: &mut Writer);

    /// Appends a slice of values without a length (overridden for `u8`).
    #[doc(hidden)]
    #[inline]
    fn encode_slice(items: &[Self], w: &mut Writer)
    where
        Self: Sized,
    {
        for item in items {
            item.encode(w);
        }
    }
}

/// A type that can be read at any transport version.
pub trait Decode: Sized {
    /// Reads one value at `r.version()`.
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError>;

    /// Reads `len` values into a vector (overridden for `u8`). `len` was
    /// checked against the collection limit; the reservation is also bounded
    /// by the remaining input.
    #[doc(hidden)]
    #[inline]
    fn decode_vec(len: usize, r: &mut Reader<'_>) -> Result<Vec<Self>, WireError> {
        let mut v = Vec::with_capacity(prealloc::<Self>(len, r));
        for _ in 0..len {
            v.push(Self::decode(r)?);
        }
        Ok(v)
    }
}

/// Bytes reserved up front for a decoded collection, at most: beyond this a
/// collection grows only as items actually decode.
pub const MAX_PREALLOC_BYTES: usize = 64 * 1024;

/// How many items of `T` to reserve for a collection announcing `len` items:
/// never more than the remaining input (each item takes at least a byte,
/// except zero-sized ones, which take no memory) nor [`MAX_PREALLOC_BYTES`].
#[inline]
fn prealloc<T>(len: usize, r: &Reader<'_>) -> usize {
    len.min(r.remaining()).min(MAX_PREALLOC_BYTES / std::mem::size_of::<T>().max(1))
}

/// Encodes `value` at `version` into a new buffer, enforcing `limits`.
pub fn encode_to_vec<T: Encode + ?Sized>(
    value: &T,
    version: TransportVersion,
    limits: Limits,
) -> Result<Vec<u8>, WireError> {
    let mut w = Writer::new(version, limits);
    value.encode(&mut w);
    w.into_bytes()
}

/// Decodes exactly one `T` from `bytes` at `version`: the frame must be
/// within [`Limits::max_frame_bytes`] and fully consumed.
pub fn decode_frame<T: Decode>(bytes: &[u8], version: TransportVersion, limits: Limits) -> Result<T, WireError> {
    if bytes.len() > limits.max_frame_bytes {
        return Err(WireError::FrameTooLarge { len: bytes.len() as u64, max: limits.max_frame_bytes });
    }
    let mut r = Reader::new(bytes, version, limits);
    let v = T::decode(&mut r)?;
    r.finish()?;
    Ok(v)
}

// ---- primitives ----

impl Encode for u8 {
    #[inline(always)]
    fn encode(&self, w: &mut Writer) {
        w.put_u8(*self);
    }
    #[inline]
    fn encode_slice(items: &[u8], w: &mut Writer) {
        w.put_raw(items);
    }
}

impl Decode for u8 {
    #[inline(always)]
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.get_u8()
    }
    #[inline]
    fn decode_vec(len: usize, r: &mut Reader<'_>) -> Result<Vec<u8>, WireError> {
        Ok(r.take(len)?.to_vec())
    }
}

impl Encode for i8 {
    #[inline(always)]
    fn encode(&self, w: &mut Writer) {
        w.put_u8(*self as u8);
    }
}

impl Decode for i8 {
    #[inline(always)]
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(r.get_u8()? as i8)
    }
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            #[inline(always)]
            fn encode(&self, w: &mut Writer) {
                w.put_varint(*self as u64);
            }
        }
        impl Decode for $t {
            #[inline(always)]
            fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
                let offset = r.position();
                let v = r.get_varint()?;
                <$t>::try_from(v).map_err(|_| WireError::IntegerOutOfRange { offset, value: v, ty: stringify!($t) })
            }
        }
    )*};
}
unsigned!(u16, u32, u64, usize);

macro_rules! signed {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            #[inline(always)]
            fn encode(&self, w: &mut Writer) {
                let v = *self as i64;
                w.put_varint(((v << 1) ^ (v >> 63)) as u64);
            }
        }
        impl Decode for $t {
            #[inline(always)]
            fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
                let offset = r.position();
                let u = r.get_varint()?;
                let v = ((u >> 1) as i64) ^ -((u & 1) as i64);
                <$t>::try_from(v).map_err(|_| WireError::IntegerOutOfRange { offset, value: u, ty: stringify!($t) })
            }
        }
    )*};
}
signed!(i16, i32, i64, isize);

impl Encode for f32 {
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_raw(&self.to_le_bytes());
    }
}
impl Decode for f32 {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let b = r.take(4)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
impl Encode for f64 {
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_raw(&self.to_le_bytes());
    }
}
impl Decode for f64 {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let b = r.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_le_bytes(a))
    }
}

impl Encode for bool {
    #[inline(always)]
    fn encode(&self, w: &mut Writer) {
        w.put_u8(*self as u8);
    }
}
impl Decode for bool {
    #[inline(always)]
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.position();
        match r.get_u8()? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(WireError::InvalidByte { what: "bool", byte, offset }),
        }
    }
}

impl Encode for char {
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_varint(*self as u64);
    }
}
impl Decode for char {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.position();
        let v = u32::decode(r)?;
        char::from_u32(v).ok_or(WireError::InvalidChar { value: v, offset })
    }
}

impl Encode for () {
    #[inline(always)]
    fn encode(&self, _: &mut Writer) {}
}
impl Decode for () {
    #[inline(always)]
    fn decode(_: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(())
    }
}

impl Encode for str {
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_bytes(self.as_bytes());
    }
}
impl Encode for String {
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_bytes(self.as_bytes());
    }
}
impl Decode for String {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.position();
        let b = r.get_bytes()?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(WireError::InvalidUtf8 { offset }),
        }
    }
}

impl<T: Encode + ?Sized> Encode for &T {
    #[inline(always)]
    fn encode(&self, w: &mut Writer) {
        (**self).encode(w);
    }
}

impl<T: Encode + ?Sized> Encode for Box<T> {
    #[inline]
    fn encode(&self, w: &mut Writer) {
        (**self).encode(w);
    }
}
impl<T: Decode> Decode for Box<T> {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.enter()?;
        let v = T::decode(r);
        r.leave();
        Ok(Box::new(v?))
    }
}

impl<T: Encode> Encode for [T] {
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_len(self.len());
        T::encode_slice(self, w);
    }
}
impl<T: Encode> Encode for Vec<T> {
    #[inline]
    fn encode(&self, w: &mut Writer) {
        self.as_slice().encode(w);
    }
}
impl<T: Decode> Decode for Vec<T> {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let len = r.get_len()?;
        r.enter()?;
        let v = T::decode_vec(len, r);
        r.leave();
        v
    }
}

impl<T: Encode, const N: usize> Encode for [T; N] {
    #[inline]
    fn encode(&self, w: &mut Writer) {
        T::encode_slice(self, w);
    }
}
impl<T: Decode, const N: usize> Decode for [T; N] {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.position();
        let v = T::decode_vec(N, r)?;
        let found = v.len();
        v.try_into().map_err(|_| WireError::ArrayLength { offset, expected: N, found })
    }
}

impl<T: Encode> Encode for Option<T> {
    #[inline]
    fn encode(&self, w: &mut Writer) {
        match self {
            None => w.put_u8(0),
            Some(v) => {
                w.put_u8(1);
                v.encode(w);
            }
        }
    }
}
impl<T: Decode> Decode for Option<T> {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.position();
        match r.get_u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(r)?)),
            byte => Err(WireError::InvalidByte { what: "Option tag", byte, offset }),
        }
    }
}

impl<K: Encode, V: Encode> Encode for BTreeMap<K, V> {
    fn encode(&self, w: &mut Writer) {
        w.put_len(self.len());
        for (k, v) in self {
            k.encode(w);
            v.encode(w);
        }
    }
}
impl<K: Decode + Ord, V: Decode> Decode for BTreeMap<K, V> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let len = r.get_len()?;
        r.enter()?;
        let mut m = BTreeMap::new();
        let res = (|| {
            for _ in 0..len {
                let offset = r.position();
                let k = K::decode(r)?;
                let v = V::decode(r)?;
                if m.insert(k, v).is_some() {
                    return Err(WireError::DuplicateKey { ty: "BTreeMap", offset });
                }
            }
            Ok(())
        })();
        r.leave();
        res.map(|()| m)
    }
}

impl<K: Encode, V: Encode, S> Encode for HashMap<K, V, S> {
    fn encode(&self, w: &mut Writer) {
        w.put_len(self.len());
        for (k, v) in self {
            k.encode(w);
            v.encode(w);
        }
    }
}
impl<K: Decode + Eq + Hash, V: Decode, S: BuildHasher + Default> Decode for HashMap<K, V, S> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let len = r.get_len()?;
        r.enter()?;
        let mut m = HashMap::with_capacity_and_hasher(prealloc::<(K, V)>(len, r), S::default());
        let res = (|| {
            for _ in 0..len {
                let offset = r.position();
                let k = K::decode(r)?;
                let v = V::decode(r)?;
                if m.insert(k, v).is_some() {
                    return Err(WireError::DuplicateKey { ty: "HashMap", offset });
                }
            }
            Ok(())
        })();
        r.leave();
        res.map(|()| m)
    }
}

impl<T: Encode> Encode for BTreeSet<T> {
    fn encode(&self, w: &mut Writer) {
        w.put_len(self.len());
        for k in self {
            k.encode(w);
        }
    }
}
impl<T: Decode + Ord> Decode for BTreeSet<T> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let len = r.get_len()?;
        r.enter()?;
        let mut m = BTreeSet::new();
        let res = (|| {
            for _ in 0..len {
                let offset = r.position();
                if !m.insert(T::decode(r)?) {
                    return Err(WireError::DuplicateKey { ty: "BTreeSet", offset });
                }
            }
            Ok(())
        })();
        r.leave();
        res.map(|()| m)
    }
}

impl<T: Encode, S> Encode for HashSet<T, S> {
    fn encode(&self, w: &mut Writer) {
        w.put_len(self.len());
        for k in self {
            k.encode(w);
        }
    }
}
impl<T: Decode + Eq + Hash, S: BuildHasher + Default> Decode for HashSet<T, S> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let len = r.get_len()?;
        r.enter()?;
        let mut m = HashSet::with_capacity_and_hasher(prealloc::<T>(len, r), S::default());
        let res = (|| {
            for _ in 0..len {
                let offset = r.position();
                if !m.insert(T::decode(r)?) {
                    return Err(WireError::DuplicateKey { ty: "HashSet", offset });
                }
            }
            Ok(())
        })();
        r.leave();
        res.map(|()| m)
    }
}

macro_rules! tuples {
    ($(($($n:tt $t:ident),+)),*) => {$(
        impl<$($t: Encode),+> Encode for ($($t,)+) {
            #[inline]
            fn encode(&self, w: &mut Writer) {
                $(self.$n.encode(w);)+
            }
        }
        impl<$($t: Decode),+> Decode for ($($t,)+) {
            #[inline]
            fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
                Ok(($($t::decode(r)?,)+))
            }
        }
    )*};
}
tuples!((0 A), (0 A, 1 B), (0 A, 1 B, 2 C), (0 A, 1 B, 2 C, 3 D), (0 A, 1 B, 2 C, 3 D, 4 E), (0 A, 1 B, 2 C, 3 D, 4 E, 5 F));

impl Encode for TransportVersion {
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_varint(self.id() as u64);
    }
}
impl Decode for TransportVersion {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(TransportVersion::from_id(u32::decode(r)?))
    }
}

impl Encode for ProtocolVersion {
    #[inline]
    fn encode(&self, w: &mut Writer) {
        w.put_varint(self.0 as u64);
    }
}
impl Decode for ProtocolVersion {
    #[inline]
    fn decode(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(ProtocolVersion(u16::decode(r)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt<T: Encode + Decode + PartialEq + std::fmt::Debug>(v: T) -> Vec<u8> {
        let b = encode_to_vec(&v, TransportVersion::ZERO, Limits::DEFAULT).unwrap();
        let back: T = decode_frame(&b, TransportVersion::ZERO, Limits::DEFAULT).unwrap();
        assert_eq!(back, v);
        b
    }

    #[test]
    fn varints_and_zigzag() {
        assert_eq!(rt(0u64), [0]);
        assert_eq!(rt(127u64), [127]);
        assert_eq!(rt(128u64), [0x80, 1]);
        assert_eq!(rt(u64::MAX).len(), 10);
        assert_eq!(rt(-1i32), [1]);
        assert_eq!(rt(1i32), [2]);
        assert_eq!(rt(i64::MIN).len(), 10);
        rt(i64::MAX);
        rt(u16::MAX);
        rt('é');
        rt(1.5f64);
    }

    #[test]
    fn bad_varints_are_typed_errors() {
        let d = |b: &[u8]| decode_frame::<u64>(b, TransportVersion::ZERO, Limits::DEFAULT);
        assert!(matches!(d(&[0x80, 0x00]), Err(WireError::BadVarint { .. })), "overlong");
        assert!(matches!(d(&[0xff; 11]), Err(WireError::BadVarint { .. })));
        assert!(matches!(
            d(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(WireError::BadVarint { .. })
        ));
        assert!(matches!(d(&[0x80]), Err(WireError::UnexpectedEnd { .. })));
        assert!(matches!(
            decode_frame::<u16>(&[0x80, 0x80, 0x04], TransportVersion::ZERO, Limits::DEFAULT),
            Err(WireError::IntegerOutOfRange { .. })
        ));
    }

    #[test]
    fn collections() {
        rt(vec![1u8, 2, 3]);
        rt(vec!["a".to_string(), String::new()]);
        rt(Some((1u32, -2i64, true)));
        rt(BTreeMap::from([(1u32, "x".to_string())]));
        rt([7u8; 4]);
        rt(Box::new(vec![Some(1u64)]));
    }

    #[test]
    fn limits_hold() {
        let small = Limits { max_frame_bytes: 64, max_collection_len: 4, max_depth: 2 };
        let mut b = vec![];
        let mut w = Writer::new(TransportVersion::ZERO, small);
        w.write(&vec![0u8; 5]);
        assert!(matches!(w.finish(), Err(WireError::LengthOverLimit { len: 5, .. })));
        // A huge length prefix with no data: an error before any allocation.
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            decode_frame::<Vec<u8>>(&b, TransportVersion::ZERO, small),
            Err(WireError::LengthOverLimit { .. })
        ));
        let deep = Box::new(Box::new(Box::new(1u8)));
        let bytes = encode_to_vec(&deep, TransportVersion::ZERO, small).unwrap();
        assert!(matches!(
            decode_frame::<Box<Box<Box<u8>>>>(&bytes, TransportVersion::ZERO, small),
            Err(WireError::TooDeep { .. })
        ));
        assert!(matches!(
            decode_frame::<u8>(&[1, 2], TransportVersion::ZERO, small),
            Err(WireError::TrailingBytes { count: 1 })
        ));
        assert!(matches!(
            decode_frame::<u8>(&[0; 65], TransportVersion::ZERO, small),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            decode_frame::<BTreeMap<u8, u8>>(&[2, 1, 1, 1, 2], TransportVersion::ZERO, small),
            Err(WireError::DuplicateKey { .. })
        ));
        assert!(matches!(
            decode_frame::<bool>(&[2], TransportVersion::ZERO, small),
            Err(WireError::InvalidByte { .. })
        ));
        assert!(matches!(
            decode_frame::<String>(&[1, 0xff], TransportVersion::ZERO, small),
            Err(WireError::InvalidUtf8 { .. })
        ));
    }
}

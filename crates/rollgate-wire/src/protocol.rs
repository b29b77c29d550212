//! Protocol versions, Anoma style: a node speaks a contiguous range of
//! protocol versions; each protocol version has its own message enum (one
//! module per version, composed of versioned per-engine messages), and a
//! top-level enum has one variant per supported version.
//!
//! ```text
//! src/ticker/v1.rs      engine messages, ticker v1
//! src/ticker/v2.rs      engine messages, ticker v2
//! src/protocol/v1.rs    pub enum Msg { Network(network::v1::Msg), Ticker(ticker::v1::Msg) }
//! src/protocol/v2.rs    pub enum Msg { Network(network::v1::Msg), Ticker(ticker::v2::Msg) }
//! src/protocol/mod.rs   mod v1; mod v2;
//!                       rollgate::protocol_versions! {
//!                           supported = 1..=2;
//!                           pub enum Msg { 1 => V1(v1::Msg), 2 => V2(v2::Msg) }
//!                       }
//! ```
//!
//! Retiring protocol v1 means deleting `protocol/v1.rs` and raising the floor
//! (`supported = 2..=2`): the compiler then points at every place that still
//! names v1 (`mod v1;`, the variant, every handler arm), and the macro's
//! compile-time check refuses a variant outside `supported` or a version in
//! `supported` without a variant.
//!
//! A binary may run with a narrower range than it was compiled with (a newer
//! binary running as an older release): the handshake takes its range from
//! configuration and refuses one that is not within [`Protocol::SUPPORTED`].

use crate::version::{ProtocolRange, ProtocolVersion};
use crate::wire::{Reader, WireError, Writer};

/// The top-level message type of a service: one variant per supported
/// protocol version. Usually implemented by [`protocol_versions!`](crate::protocol_versions).
pub trait Protocol: Sized + Send + 'static {
    /// The protocol versions this build can speak.
    const SUPPORTED: ProtocolRange;

    /// The protocol version of this message (its variant).
    fn version(&self) -> ProtocolVersion;

    /// Encodes the message body (without the variant: the frame header
    /// carries the protocol version).
    fn encode_body(&self, w: &mut Writer);

    /// Decodes a message body of protocol `version`; an error when `version`
    /// is not in [`SUPPORTED`](Self::SUPPORTED).
    fn decode_body(version: ProtocolVersion, r: &mut Reader<'_>) -> Result<Self, WireError>;
}

/// Checks at compile time that `versions` (the variants, in order) cover
/// `min..=max` exactly. Used by [`protocol_versions!`](crate::protocol_versions).
#[doc(hidden)]
pub const fn check_versions(min: u16, max: u16, versions: &[u16]) {
    if min > max {
        panic!("protocol_versions!: `supported` is empty (min above max)");
    }
    let mut i = 0;
    while i < versions.len() {
        let v = versions[i];
        if v < min {
            panic!(
                "protocol_versions!: a variant is below the `supported` floor: delete that version's module and variant (and every use of it the compiler points at)"
            );
        }
        if v > max {
            panic!("protocol_versions!: a variant is above `supported`: raise the range's upper end or remove it");
        }
        if v != min + i as u16 {
            panic!("protocol_versions!: variants must list each version of `supported` once, ascending, without gaps");
        }
        i += 1;
    }
    if versions.len() != (max - min) as usize + 1 {
        panic!(
            "protocol_versions!: a version in `supported` has no variant: add its module and variant, or narrow the range"
        );
    }
}

/// Defines a service's top-level message enum over its supported protocol
/// versions and implements [`Protocol`] for it, with a compile-time check
/// that the variants are exactly `supported`.
///
/// ```text
/// rollgate::protocol_versions! {
///     supported = 1..=2;
///     /// Every message of the sample protocol.
///     #[derive(Clone, Debug, PartialEq)]
///     pub enum Msg {
///         1 => V1(v1::Msg),
///         2 => V2(v2::Msg),
///     }
/// }
/// ```
///
/// Also generates `From<vN::Msg> for Msg`.
#[macro_export]
macro_rules! protocol_versions {
    (
        supported = $min:literal ..= $max:literal;
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $v:literal => $variant:ident($ty:ty) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $(
                #[doc = concat!("Protocol v", stringify!($v), ".")]
                $variant($ty),
            )+
        }

        const _: () = $crate::protocol::check_versions($min, $max, &[$($v),+]);

        impl $crate::protocol::Protocol for $name {
            const SUPPORTED: $crate::version::ProtocolRange = match $crate::version::ProtocolRange::new($min, $max) {
                Ok(r) => r,
                Err(_) => panic!("protocol_versions!: empty range"),
            };

            fn version(&self) -> $crate::version::ProtocolVersion {
                match self {
                    $( $name::$variant(_) => $crate::version::ProtocolVersion($v), )+
                }
            }

            fn encode_body(&self, w: &mut $crate::wire::Writer) {
                match self {
                    $( $name::$variant(m) => $crate::wire::Encode::encode(m, w), )+
                }
            }

            fn decode_body(
                version: $crate::version::ProtocolVersion,
                r: &mut $crate::wire::Reader<'_>,
            ) -> ::core::result::Result<Self, $crate::wire::WireError> {
                match version.0 {
                    $( $v => ::core::result::Result::Ok($name::$variant(<$ty as $crate::wire::Decode>::decode(r)?)), )+
                    _ => ::core::result::Result::Err($crate::wire::WireError::UnsupportedProtocol {
                        version,
                        supported: <Self as $crate::protocol::Protocol>::SUPPORTED,
                    }),
                }
            }
        }

        $(
            impl ::core::convert::From<$ty> for $name {
                fn from(m: $ty) -> Self {
                    $name::$variant(m)
                }
            }
        )+
    };
}

/// Encodes `msg`'s body at `version` (transport) into a new buffer.
pub fn encode_message<P: Protocol>(
    msg: &P,
    transport: crate::version::TransportVersion,
    limits: crate::wire::Limits,
) -> Result<Vec<u8>, WireError> {
    let mut w = Writer::new(transport, limits);
    msg.encode_body(&mut w);
    w.into_bytes()
}

/// Decodes exactly one message body of protocol `version` at `transport`.
pub fn decode_message<P: Protocol>(
    bytes: &[u8],
    version: ProtocolVersion,
    transport: crate::version::TransportVersion,
    limits: crate::wire::Limits,
) -> Result<P, WireError> {
    if bytes.len() > limits.max_frame_bytes {
        return Err(WireError::FrameTooLarge { len: bytes.len() as u64, max: limits.max_frame_bytes });
    }
    let mut r = Reader::new(bytes, transport, limits);
    let m = P::decode_body(version, &mut r)?;
    r.finish()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::check_versions;

    #[test]
    fn version_lists() {
        check_versions(1, 2, &[1, 2]);
        check_versions(3, 3, &[3]);
        for bad in [&[1u16][..], &[2, 3], &[1, 3], &[0, 1, 2], &[2, 1]] {
            assert!(std::panic::catch_unwind(|| check_versions(1, 2, bad)).is_err(), "{bad:?}");
        }
    }
}

//! rollgate's codec layer: what two peers put on the wire, at which version.
//! Plain Rust with no async runtime, so a service that only needs the codec
//! and `protocol_versions!` pays for nothing else. Use it through the
//! `rollgate` facade (`rollgate = { default-features = false }`): the derives
//! expand to `::rollgate::wire::...` paths.
//!
//! | module | question it answers |
//! |---|---|
//! | [`version`] | which transport / protocol version ids exist (`M_NNN_S_PP`, ranges) |
//! | [`wire`] | how a message is encoded at a given transport version |
//! | [`protocol`] | which message set two peers speak (one module per protocol version) |
//! | [`golden`] | golden wire samples for a service's tests: pin every version's encoding |

#![warn(missing_docs)]

// The derives name `::rollgate::wire::...`; inside this crate that is us.
extern crate self as rollgate;

pub mod golden;
pub mod protocol;
pub mod wire;

/// Version ids: [`TransportVersion`](version::TransportVersion),
/// [`NamedTransportVersion`](version::NamedTransportVersion),
/// [`ProtocolVersion`](version::ProtocolVersion) and the `transport/` state
/// folder format ([`version::state`]).
pub mod version {
    pub use rollgate_version::*;
}

/// Includes the transport versions that `rollgate-build` generated from the
/// crate's `transport/` folder: a `transport_versions` module (constants,
/// `CURRENT`, `MINIMUM_COMPATIBLE`, `SET`) and the `transport_version!`
/// macro. Call it once at the crate root, before any `mod` item, so the macro
/// is in scope everywhere.
#[macro_export]
macro_rules! include_transport_versions {
    () => {
        include!(concat!(env!("OUT_DIR"), "/rollgate_transport_versions.rs"));
    };
}

//! Version ids shared by every rollgate component.
//!
//! - [`TransportVersion`]: Elasticsearch-style `M_NNN_S_PP` ids that gate the
//!   *fields* a message carries; [`NamedTransportVersion`] is what
//!   `transport_version!("name")` resolves to at compile time.
//! - [`ProtocolVersion`] / [`ProtocolRange`]: Anoma-style versions that select
//!   the *message set* two connected nodes speak.
//! - [`state`]: the `transport/` state folder (definitions, upper bounds,
//!   minimum compatible version, release mapping) with a strict parser.
//!
//! This crate has no runtime dependencies beyond `serde` and `thiserror`, so
//! build scripts (`rollgate-build`) and the CLI can use it cheaply.

mod protocol;
pub mod state;
mod transport;

pub use protocol::{EmptyRange, ProtocolRange, ProtocolVersion};
pub use transport::{NamedTransportVersion, TransportVersion, TransportVersionSet, release_of};

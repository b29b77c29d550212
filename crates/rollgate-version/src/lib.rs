//! Version ids shared by every rollgate component.
//!
//! - [`TransportVersion`]: Elasticsearch-style `M_NNN_S_PP` ids that gate the
//!   *fields* a message carries; [`NamedTransportVersion`] is what
//!   `transport_version!("name")` resolves to at compile time.
//! - [`ProtocolVersion`] / [`ProtocolRange`]: Anoma-style versions that select
//!   the *message set* two connected nodes speak.
//! - [`state`]: the `transport/` state folder (definitions, upper bounds,
//!   minimum compatible version, release mapping) with a strict parser.
//! - [`scan`], [`validate`], [`generate`]: the logic behind `rollgate tv`:
//!   finding `transport_version!("name")` references in sources, checking a
//!   folder against every rule, and allocating ids (idempotently, from the
//!   base revision's upper bounds) for new versions, backports and merge
//!   conflicts. Pure functions over parsed files; the CLI does the I/O.
//!
//! This crate has no runtime dependencies beyond `serde` and `thiserror`, so
//! build scripts (`rollgate-build`) and the CLI can use it cheaply.

#![warn(missing_docs)]

pub mod generate;
mod protocol;
pub mod scan;
pub mod state;
mod transport;
pub mod validate;

pub use protocol::{EmptyRange, ProtocolRange, ProtocolVersion};
pub use transport::{NamedTransportVersion, TransportVersion, TransportVersionSet, compare_releases, release_of};

//! A small sample protocol used by rollgate's tests, benchmarks and fuzz
//! targets, and the smallest complete example of a crate using rollgate:
//! its own `transport/` folder, a build script, and versioned messages.
//!
//! Layout (Anoma style: versioned engines, one module per protocol version):
//!
//! | module | content |
//! |---|---|
//! | [`network::v1`] | network engine messages, v1 (a field added in `ping_payload`, one removed in `drop_legacy_addr`) |
//! | [`ticker::v1`], [`ticker::v2`] | ticker engine messages, v1 and v2 |
//! | [`protocol::v1`] | protocol v1 = network v1 + ticker v1 |
//! | [`protocol::v2`] | protocol v2 = network v1 + ticker v2 |
//! | [`protocol`] | [`Msg`]: the top-level enum over protocol v1..=v2 |
//! | [`service`] | a tiny node handling every supported protocol version |
//! | [`samples`] | one value per message, for golden wire samples and benchmarks |
//! | `fuzz` | the entry points shared by the fuzz targets and the property tests (feature `fuzz`) |

rollgate::include_transport_versions!();

#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod network;
pub mod protocol;
pub mod samples;
pub mod service;
pub mod ticker;

pub use protocol::Msg;

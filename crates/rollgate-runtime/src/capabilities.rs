//! The `_capabilities` API (Elasticsearch style): does **every** member of
//! the cluster support a REST endpoint (method + path), some of its query
//! parameters and some of its named capabilities?
//!
//! A node registers its routes in a [`RouteTable`] (each route with its
//! supported parameters and capabilities, optionally conditional on a cluster
//! feature) and publishes the table in its node record. A query
//! ([`CapabilityQuery`]) is answered:
//!
//! - for this node, from its own table ([`RouteTable::supports`]);
//! - for every other **running** member, by asking it over HTTP
//!   (`GET /_capabilities?...&local_only=true` on its admin address), all in
//!   parallel, each bounded by a timeout (the fan-out lives with the admin
//!   API, in `rollgate-admin`);
//! - for a **stopped** member, from the route table it published in its node
//!   record (it may come back with that binary); a stopped member that
//!   published none answers "unknown".
//!
//! The answers combine ([`combine`]): `false` as soon as one member does not
//! support the query (a definite "no" wins), else `null` when one member did
//! not answer (timeout, refused connection, garbage, stopped without a
//! table), else `true`.

pub use rollgate_api::routes::*;

use crate::cluster::ClusterView;

/// The default bound on one member's answer during a fan-out.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;

/// [`RouteTable::supports`] with the cluster features of `view`.
pub fn supports_in(table: &RouteTable, query: &CapabilityQuery, view: &ClusterView) -> bool {
    table.supports(query, |f| crate::features::cluster_has_feature(view, f))
}

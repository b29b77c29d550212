//! `rollgate-kv`: the reference replicated key-value service of rollgate,
//! built only on rollgate's public API. Releases 1.0, 1.1, 1.2 and 2.0 are
//! defined in code ([`releases`]), and one binary runs as any of them.
//!
//! Embedding: [`node::start`] with a [`NodeConfig`] and the cluster's
//! metadata store returns a [`NodeHandle`] (`stop`, `kill`, `addresses`,
//! `wait_ready`, ...); [`KvClient`] talks to nodes over HTTP with failover.
//!
//! | module | content |
//! |---|---|
//! | [`releases`] | the releases table: protocol range, transport versions, flags, cluster features, storage formats, plugins |
//! | [`replication`], [`digest`] | versioned engine messages (replication v1, v2; digest v1) |
//! | [`protocol`] | protocol v1, v2, v3 and [`Msg`] over them |
//! | [`peer`] | wire conversions by protocol version; outbound links with write batching |
//! | [`node`] | a node: start, membership, inbound requests, write path, catch-up, stop |
//! | [`storage`], [`record`] | the data dir (group commit, last writer wins) and the record (core fields and a feature map) |
//! | [`migrations`] | the `records` unit's formats 1..=3 and the table migrations between them |
//! | [`gates`] | the flags kv checks, as hot-path bits |
//! | [`plugins`] | plugin-like components that start once their flags are enabled (`audit`) |
//! | [`hlc`] | write versions: hybrid logical clock + node id |
//! | [`policy`] | write-path checks (a TTL needs flag `ttl`) |
//! | [`http`] | the client HTTP API (prefix scan, audit) and rollgate's admin API on the same listener |
//! | [`client`] | [`KvClient`] |
//! | [`demo`] | `rollgate-kv demo`: a rolling upgrade under live load, in one process |
//! | [`samples`] | one value per message, for the golden wire samples |

rollgate::include_transport_versions!();

pub mod client;
pub mod demo;
pub mod digest;
pub mod gates;
pub mod hlc;
pub mod http;
pub mod migrations;
pub mod node;
pub mod peer;
pub mod plugins;
pub mod policy;
pub mod protocol;
pub mod record;
pub mod releases;
pub mod replication;
pub mod samples;
pub mod storage;

pub use client::{ClientError, ClientOptions, KvClient};
pub use node::{NodeConfig, NodeError, NodeHandle, Tuning};
pub use protocol::Msg;
pub use releases::Release;

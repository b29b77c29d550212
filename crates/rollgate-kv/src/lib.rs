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
//! | [`replication`], [`digest`], [`quorum`] | versioned engine messages (replication v1, v2; digest v1; quorum read v1) |
//! | [`protocol`] | protocol v1 to v4 and [`Msg`] over them |
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
//! | [`consistency`] | the consistency model: what a client may rely on, under which faults, and what the clock drift bound means |
//! | [`demo`] | `rollgate-kv demo`: a rolling upgrade under live load, in one process |
//! | [`samples`] | one value per message, for the golden wire samples |
//!
//! # Where each part of rollgate is exercised
//!
//! | part | in rollgate-kv |
//! |---|---|
//! | node runtime | `node::start` builds a `rollgate::node::NodeConfig` from the release (registry, features, `http::route_table`, release table, addresses, protocol and transport ranges, test mode off) and starts `rollgate::node::Node`: boot checks, the fenced join, liveness, the flag worker, recovery; kv has no join or liveness of its own. Peers come from the runtime's view; stop leaves through it, kill drops it (no leave) |
//! | admin API | `rollgate::admin::router(node, AdminConfig)` (token from `--admin-token-file`; without one, mutations are refused with the runtime's message) merged into the HTTP app on `--admin`, bound with `rollgate::admin::bind` (loopback unless told otherwise) and served by `rollgate::admin::serve_with` (HTTPS with `--tls-*`, bounded under floods) |
//! | TLS | `rollgate::tls::NodeTls` from `--tls-cert`, `--tls-key`, `--tls-ca`: mutual TLS on peer links (`NetConfig::tls`), HTTPS on `--admin`, the fan-out over HTTPS; no plaintext outside loopback without `--insecure` |
//! | a field added to a message | `Entry.expires_at_ms` (`replicate_ttl`), `SyncRequest.end_key`, `max_bytes`/`limit` (since/until) |
//! | new message types in new protocol versions | `ReplicateBatch` (v2), `DigestRequest`/`DigestReply` (v3), `ReadRequest`/`ReadReply` (v4) |
//! | extensible records with fallback | `record`: `meta@1` from 1.0, `meta@2` from 1.1 written only through the gated setter once `record_meta_v2` is enabled (I1); `Record::writer` reads `meta@2` else `meta@1`; records travel with their feature map, so a 1.0 node keeps `meta@2` and unknown keys byte for byte |
//! | a flag with `depends_on` | `ttl` depends on `record_meta_v2`: `policy::check_write` refuses a TTL (409 `flag_not_enabled`, naming the flag and `rollgate flags enable ttl`) until the bit is set |
//! | an experimental flag | `value_checksums`: enabling needs `experimental`; new records carry `checksum@1`, reads verify it (500 `corrupt_value` naming the key) |
//! | a cluster feature unlocking an endpoint | `kv.prefix_scan` (1.2): `GET /kv?prefix=P&limit=N` is a route with `requires_feature`, `_capabilities` says `true` and the route answers only once every member publishes it (409 `feature_not_available` naming the members without it before). From then on the ratchet refuses a 1.0 or 1.1 node at join |
//! | format versions and stepwise migrations | `migrations`: the `records` unit (stamped at creation, format 1) goes 1 -> 2 (gate `record_meta_v2`: adds `meta@2`; reverse drops it) and 2 -> 3 (gate `ttl`: fills the expiry index table in each batch's transaction, `TableMigration::with_companion`; no reverse, so `ttl` is irreversible), run on every node by a `LocalRunner` publishing to the store (`/admin/upgrade/status`) and following the node's flag bits (`run_on_changes`); releases read 1..=1, 1..=3, 1..=3, 2..=3 and refuse anything else before writing a byte |
//! | downgrade | `record_meta_v2`'s `before_disable` hook (`migrations::disable_hook`): `LocalRunner::reverse_flag` on the disabling node, then waits until every running member published its own reverse (their runners follow the cleared bit): format 1 everywhere before the flag is disabled. `Migrations::reversibility` is checked against the declarations in a test |
//! | a plugin requiring flags | `audit` (`--plugins audit`, 1.2): waits (logging rollgate's `PluginRefusal`) until `record_meta_v2` is enabled, then serves `GET /audit?limit=N`, recent writes with their `meta@2` writer |
//! | a required flag | 2.0 requires `record_meta_v2`: a 2.0 node joining a cluster where it is disabled enables it when every member supports it, or refuses to start with the runtime's message (nodes to upgrade, the bridge release 1.2, `nodes forget`), changing nothing |
//!
//! # Transport versions
//!
//! Each transport version was created with `rollgate tv generate --dir
//! transport --src crates/rollgate-kv/src --base <the commit that opened the
//! branch>` after opening the release branch (`upper_bounds/<M.m>.csv`, a copy
//! of the previous branch's upper bound), one per commit; `rollgate tv validate
//! --src crates/rollgate-kv/src --base main` checks the result. `replication/mod.rs` states what each transport version carries
//! (`carries_expiry`, `carries_sync_end`, `carries_sync_max_bytes`) and the
//! policy and catch-up code branch on those.

rollgate::include_transport_versions!();

pub mod client;
pub mod consistency;
pub mod demo;
pub mod digest;
pub mod gates;
pub mod hlc;
pub mod http;
pub mod metrics;
pub mod migrations;
pub mod node;
pub mod peer;
pub mod plugins;
pub mod policy;
pub mod protocol;
pub mod quorum;
pub mod record;
pub mod releases;
pub mod replication;
pub mod samples;
pub mod settings;
pub mod storage;

pub use client::{ClientError, ClientOptions, KvClient};
pub use node::{NodeConfig, NodeError, NodeHandle, Tuning};
pub use protocol::Msg;
pub use releases::Release;

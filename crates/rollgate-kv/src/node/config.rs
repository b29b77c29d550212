//! What a node is configured with: [`NodeConfig`] (`rollgate-kv serve`'s
//! flags), its [`Tuning`] (timeouts, limits, intervals), and the
//! [`Addresses`] it serves on once started.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rollgate::handshake::ClusterSecret;
use rollgate::node::NodeTimeouts;
use rollgate::tls::TlsFiles;
use serde::Serialize;

use crate::releases::Release;
use crate::storage::StorageOptions;

/// Timeouts, limits and intervals of a node. The defaults suit a LAN; tests
/// shorten the liveness TTL.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// How long a write waits for a majority of acknowledgements (and a
    /// linearizable read for a majority of answers).
    pub write_timeout: Duration,
    /// How long a session read (`x-kv-after`) waits for a version this node
    /// does not hold yet before it answers 503 `behind`.
    pub session_read_wait: Duration,
    /// TTL of the liveness lease (a crashed node counts as running this long).
    pub liveness_ttl_s: i64,
    /// Longest handshake (connect included).
    pub handshake_timeout: Duration,
    /// A peer connection with nothing received for this long is closed.
    pub idle_timeout: Duration,
    /// First reconnect delay of a link.
    pub backoff_min: Duration,
    /// Longest reconnect delay of a link.
    pub backoff_max: Duration,
    /// How long catch-up waits for a running peer to connect to us (so that
    /// its new writes reach us) before pulling from it anyway.
    pub inbound_wait: Duration,
    /// How long catch-up waits for our link to a peer.
    pub connect_wait: Duration,
    /// Longest catch-up from one peer.
    pub catch_up_timeout: Duration,
    /// How long a peer may take to answer a sync or digest request.
    pub request_timeout: Duration,
    /// Entries per sync chunk.
    pub sync_chunk_entries: u32,
    /// Bytes per sync chunk (keys and values).
    pub sync_chunk_bytes: u32,
    /// Local entries per digest range.
    pub digest_range_keys: usize,
    /// Requests handled at once per inbound connection.
    pub max_inflight_per_connection: usize,
    /// Bytes of requests (keys and values) handled at once per inbound
    /// connection; a peer beyond it is not read until some are done.
    pub max_inflight_bytes_per_connection: usize,
    /// Inbound peer connections at once.
    pub max_peer_connections: usize,
    /// HTTP connections at once; a new one beyond this evicts the oldest.
    pub max_http_connections: usize,
    /// HTTP connections at once from one source address; a new one beyond
    /// this evicts that source's oldest.
    pub max_http_connections_per_source: usize,
    /// Longest wait for an HTTP request head, and for the next request on a
    /// kept-alive connection; also bounds a TLS handshake.
    pub http_header_timeout: Duration,
    /// Longest HTTP request, body included.
    pub http_request_timeout: Duration,
    /// The data file's queues and batches.
    pub storage: StorageOptions,
    /// The bounds of rollgate's flag protocols (enable, disable, boot).
    pub flag_timeouts: NodeTimeouts,
    /// How long disabling `record_meta_v2` waits for every running member
    /// to convert its records back.
    pub convert_back_wait: Duration,
    /// Records per batch of a table migration.
    pub migration_batch_records: usize,
    /// How often the node reads its running peers' clocks (see `node::clock`).
    pub clock_check_interval: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            write_timeout: Duration::from_secs(3),
            session_read_wait: Duration::from_millis(200),
            liveness_ttl_s: 5,
            handshake_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(1_000),
            inbound_wait: Duration::from_secs(5),
            connect_wait: Duration::from_secs(3),
            catch_up_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            sync_chunk_entries: 512,
            sync_chunk_bytes: 4 << 20,
            digest_range_keys: 256,
            max_inflight_per_connection: 256,
            max_inflight_bytes_per_connection: 8 << 20,
            max_peer_connections: 256,
            max_http_connections: 1024,
            max_http_connections_per_source: 256,
            http_header_timeout: Duration::from_secs(5),
            http_request_timeout: Duration::from_secs(30),
            storage: StorageOptions::default(),
            flag_timeouts: NodeTimeouts::default(),
            convert_back_wait: Duration::from_secs(120),
            migration_batch_records: 500,
            clock_check_interval: Duration::from_secs(2),
        }
    }
}

/// What a node is configured with (`rollgate-kv serve`'s flags).
#[derive(Clone)]
pub struct NodeConfig {
    /// The release to run as.
    pub release: &'static Release,
    /// The data dir.
    pub data_dir: PathBuf,
    /// The address peers connect to (`127.0.0.1:0` picks a port).
    pub listen: String,
    /// The HTTP address of the client API and the admin API: `PORT` or
    /// `localhost:PORT` (loopback), or `IP:PORT` (bind to a non-loopback
    /// address only on purpose, with a token and a firewall).
    pub admin: String,
    /// A peer's data address to check with a handshake before joining.
    pub join: Option<String>,
    /// The node id; by default the one in the data dir, else a new random one.
    pub node_id: Option<String>,
    /// The cluster secret; `None` runs unauthenticated handshakes (warned).
    pub cluster_secret: Option<ClusterSecret>,
    /// The admin API's bearer token (`--admin-token-file`); without one,
    /// admin mutations (enable, disable, forget) are refused, saying how to
    /// configure it.
    pub admin_token: Option<String>,
    /// The plugins to run (`--plugins`), from the release's
    /// [`Release::plugins`]; each starts once the flags it requires are enabled.
    pub plugins: Vec<String>,
    /// TLS (`--tls-cert`, `--tls-key`, `--tls-ca`): mutual TLS on peer
    /// links and HTTPS on the HTTP listener. The certificate must name the
    /// node (`rollgate certs node ID`).
    pub tls: Option<TlsFiles>,
    /// Allows listening on a non-loopback address without TLS (`--insecure`).
    pub insecure: bool,
    /// Peers to dial at another address than the data address they
    /// registered (node id -> address). Empty in production; fault tests put
    /// a proxy between each ordered pair of nodes this way, so that one
    /// node can be partitioned from the others in both directions.
    pub dial_overrides: BTreeMap<String, String>,
    /// Timeouts and limits.
    pub tuning: Tuning,
    /// The release's signed manifest (`--release-manifest`), with `release_key`.
    pub release_manifest: Option<rollgate::release::SignedManifest>,
    /// The trusted release public key (`--release-key`): the node runs only
    /// a release it signed, and accepts only peers whose release it signed.
    pub release_key: Option<rollgate::release::ReleaseKey>,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("release", &self.release.name)
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("admin", &self.admin)
            .field("join", &self.join)
            .field("node_id", &self.node_id)
            .field("cluster_secret", &self.cluster_secret.is_some())
            .field("admin_token", &self.admin_token.is_some())
            .field("plugins", &self.plugins)
            .field("release_key", &self.release_key)
            .field("tls", &self.tls)
            .field("insecure", &self.insecure)
            .field("dial_overrides", &self.dial_overrides)
            .finish()
    }
}

impl NodeConfig {
    /// A configuration with defaults for everything optional.
    pub fn new(
        release: &'static Release,
        data_dir: impl Into<PathBuf>,
        listen: impl Into<String>,
        admin: impl Into<String>,
    ) -> Self {
        NodeConfig {
            release,
            data_dir: data_dir.into(),
            listen: listen.into(),
            admin: admin.into(),
            join: None,
            node_id: None,
            cluster_secret: None,
            admin_token: None,
            plugins: Vec::new(),
            tls: None,
            insecure: false,
            dial_overrides: BTreeMap::new(),
            tuning: Tuning::default(),
            release_manifest: None,
            release_key: None,
        }
    }
}

/// Where a node serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Addresses {
    /// Peer connections.
    pub data: SocketAddr,
    /// HTTP (client API).
    pub admin: SocketAddr,
}

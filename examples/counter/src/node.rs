//! A counter node: rollgate's node runtime (boot checks, membership, feature
//! flags), the admin API on its own listener, and a peer listener speaking
//! the counter protocol at the versions each connection negotiated.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rollgate::admin::{self, AdminConfig};
use rollgate::cluster::{Cluster, ClusterOptions, TransportRange};
use rollgate::flags::FlagId;
use rollgate::handshake::{ClusterSecret, HandshakeConfig, Negotiated};
use rollgate::net::{self, Connection, Listener, NetConfig};
use rollgate::node::{Node, NodeConfig};
use rollgate::record::Record;
use rollgate::store::MetaStore;
use rollgate::version::ProtocolVersion;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::Error;
use crate::entries::{Entries, Entry, FROM_V1, FROM_V2, Sender, StoredEntry};
use crate::protocol::{Msg, v1, v2};
use crate::releases::{self, ENTRY_FROM_V2, Release};

/// How long a node waits for its view to catch up or for a flag.
pub const WAIT: Duration = Duration::from_secs(30);

/// What a node is started with.
#[derive(Clone, Debug)]
pub struct Options {
    /// The node id.
    pub id: String,
    /// The release it runs as.
    pub release: Release,
    /// Its data dir: its entries and rollgate's local copy of the cluster state.
    pub data_dir: PathBuf,
    /// The peer listener (`127.0.0.1:0`: any free port).
    pub listen: String,
    /// The admin API listener.
    pub admin: String,
    /// The bearer token the admin API's mutations need.
    pub admin_token: String,
    /// Authenticates peer handshakes.
    pub secret: ClusterSecret,
}

/// What one request over one fresh connection showed.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// What the link negotiated: protocol, transport, the peer's id and release.
    pub link: Negotiated,
    /// The peer's answer.
    pub total: v1::Total,
}

struct Shared {
    node: Node,
    from_v2: Option<FlagId>,
    entries: Entries,
    net: NetConfig,
}

/// A running counter node.
pub struct Counter {
    shared: Arc<Shared>,
    release: Release,
    admin_addr: SocketAddr,
    stop_peers: oneshot::Sender<()>,
    peers: JoinHandle<()>,
    admin: JoinHandle<()>,
}

impl Counter {
    /// Starts a node on the cluster in `store`: binds its listeners, boots
    /// rollgate's runtime (which refuses, naming the fix, e.g. a 1.0 node
    /// once a 1.1 flag is enabled), then serves the admin API and peers.
    pub async fn start(options: Options, store: Arc<dyn MetaStore>) -> Result<Counter, Error> {
        let Options { id, release, data_dir, listen, admin, admin_token, secret } = options;
        let entries = Entries::open(&data_dir)?;
        // Handshakes carry the cluster id and the runtime registers the
        // addresses, so: the cluster id first, then the listeners, then boot.
        let cluster_id = Cluster::open(store.clone(), ClusterOptions::default()).await?.cluster_id().to_string();
        let transport = release.transport_set();
        let handshake = HandshakeConfig::new(&id, release.name(), cluster_id, release.protocols(), transport);
        let net = NetConfig::new(handshake.with_secret(secret));
        let peers = Listener::<Msg>::bind(listen.as_str(), net.clone()).await?;
        let admin_listener = admin::bind(Some(&admin)).await?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| Error::Io { what: "the admin listener's address".into(), source })?;

        let registry = release.flags()?;
        let from_v2 = registry.id(ENTRY_FROM_V2);
        let mut config = NodeConfig::new(&id, release.name(), &data_dir, registry);
        config.data_addr = peers.local_addr().to_string();
        config.admin_addr = admin_addr.to_string();
        config.protocol = release.protocols();
        config.transport = TransportRange { min_compatible: transport.minimum_compatible, current: transport.current };
        config.releases = Some(releases::release_table()?);
        let node = Node::start(config, store).await?;

        let router = admin::router(node.clone(), AdminConfig::with_token(&admin_token));
        let admin = tokio::spawn(async move {
            if let Err(e) = admin::serve(admin_listener, router).await {
                tracing::error!(error = %e, "the admin API stopped");
            }
        });
        let shared = Arc::new(Shared { node, from_v2, entries, net });
        let (stop_peers, stopped) = oneshot::channel();
        let peers = tokio::spawn(accept(shared.clone(), peers, stopped));
        Ok(Counter { shared, release, admin_addr, stop_peers, peers, admin })
    }

    /// The node id.
    pub fn id(&self) -> &str {
        self.shared.node.id()
    }
    /// The release it runs as.
    pub fn release(&self) -> Release {
        self.release
    }
    /// rollgate's runtime of this node (view, flags, enable, ...).
    pub fn node(&self) -> &Node {
        &self.shared.node
    }
    /// The admin API, for `rollgate --node URL`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }
    /// Every entry this node stored, oldest first.
    pub fn entries(&self) -> Result<Vec<(u64, StoredEntry)>, Error> {
        self.shared.entries.list()
    }

    /// Waits until this node's view of the cluster is at `revision` or later.
    pub async fn wait_for_revision(&self, revision: i64) -> Result<(), Error> {
        match self.shared.node.handle().wait_for_revision(revision, WAIT).await {
            Some(_) => Ok(()),
            None => Err(Error::Failed(format!("node {}: no view at revision {revision} within {WAIT:?}", self.id()))),
        }
    }

    /// Waits until `flag` is enabled on this node (its bit is set).
    pub async fn wait_enabled(&self, flag: &str) -> Result<(), Error> {
        let id = self
            .shared
            .node
            .flag_id(flag)
            .ok_or_else(|| Error::Failed(format!("release {} does not know flag {flag}", self.release.name())))?;
        tokio::time::timeout(WAIT, self.shared.node.wait_enabled(id))
            .await
            .map_err(|_| Error::Failed(format!("node {}: flag {flag} not enabled within {WAIT:?}", self.id())))
    }

    /// Adds `by` to `peer`'s counter (protocol v1 or v2, whichever the link negotiated).
    pub async fn add_to(&self, peer: &str, by: u64) -> Result<Exchange, Error> {
        self.request(peer, |protocol| match protocol {
            ProtocolVersion(1) => Some(v1::Msg::Add(v1::Add { by }).into()),
            ProtocolVersion(2) => Some(v2::Msg::Add(v2::Add { by }).into()),
            _ => None,
        })
        .await
    }

    /// Reads `peer`'s total: `Get` exists from protocol v2 on only.
    pub async fn total_of(&self, peer: &str) -> Result<Exchange, Error> {
        self.request(peer, |protocol| (protocol == ProtocolVersion(2)).then(|| v2::Msg::Get.into())).await
    }

    async fn request(
        &self,
        peer: &str,
        message: impl FnOnce(ProtocolVersion) -> Option<Msg>,
    ) -> Result<Exchange, Error> {
        // Peers are the members of the cluster view, at the address they registered.
        let view = self.shared.node.view();
        let member = view.member(peer).filter(|m| m.is_running()).ok_or_else(|| {
            Error::Failed(format!("node {peer} is not a running member in node {}'s view", self.id()))
        })?;
        let mut conn = net::connect::<Msg>(member.record.data_addr.as_str(), self.shared.net.clone()).await?;
        let agreed = conn.negotiated().clone();
        let msg = message(agreed.protocol).ok_or_else(|| {
            Error::Failed(format!(
                "the link to node {peer} (release {}) speaks protocol {}, which lacks this request",
                agreed.peer_release, agreed.protocol
            ))
        })?;
        conn.send(msg).await?;
        let total = match conn.recv().await? {
            Some(Msg::V1(v1::Msg::Total(t)) | Msg::V2(v2::Msg::Total(t))) => t,
            _ => return Err(Error::Failed(format!("node {peer} did not answer with its total"))),
        };
        conn.close().await?;
        Ok(Exchange { link: agreed, total })
    }

    /// A graceful stop: no more peers or admin requests, then rollgate's
    /// runtime leaves the cluster (declared stopped, still a member).
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.stop_peers.send(());
        let _ = self.peers.await;
        self.admin.abort();
        let _ = self.admin.await;
        Ok(self.shared.node.stop().await?)
    }
}

async fn accept(shared: Arc<Shared>, mut listener: Listener<Msg>, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    connections.spawn(serve_peer(shared.clone(), conn));
                }
                Err(e) => {
                    tracing::error!(error = %e, "the peer listener stopped");
                    break;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve_peer(shared: Arc<Shared>, mut conn: Connection<Msg>) {
    let peer = conn.negotiated().clone();
    while let Ok(Some(msg)) = conn.recv().await {
        let (s, p) = (shared.clone(), peer.clone());
        // redb commits block: off the async workers.
        let answer = tokio::task::spawn_blocking(move || s.handle(msg, &p))
            .await
            .unwrap_or_else(|e| Err(Error::Failed(format!("the request task failed: {e}"))));
        let sent = match answer {
            Ok(answer) => conn.send(answer).await.map_err(Error::from),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!(peer = %peer.peer_node_id, error = %e, "request failed; closing the connection");
            return;
        }
    }
}

impl Shared {
    fn handle(&self, msg: Msg, peer: &Negotiated) -> Result<Msg, Error> {
        Ok(match msg {
            Msg::V1(v1::Msg::Add(add)) => v1::Msg::Total(self.add(add, peer)?).into(),
            Msg::V2(v2::Msg::Add(add)) => v2::Msg::Total(self.add(add, peer)?).into(),
            Msg::V2(v2::Msg::Get) => v2::Msg::Total(self.total()?).into(),
            Msg::V1(v1::Msg::Total(_)) | Msg::V2(v2::Msg::Total(_)) => {
                return Err(Error::Failed(format!("node {} sent a total nobody asked for", peer.peer_node_id)));
            }
        })
    }

    fn add(&self, add: v1::Add, peer: &Negotiated) -> Result<v1::Total, Error> {
        let mut entry = Record::new(Entry { by: add.by });
        entry.features.set(&FROM_V1, &peer.peer_node_id, &self.node)?;
        // The new format once the flag is enabled: one atomic load. The gated
        // setter checks the flag again and refuses without it (I1).
        if self.from_v2.is_some_and(|flag| self.node.is_enabled(flag)) {
            let sender = Sender { node: peer.peer_node_id.clone(), release: peer.peer_release.clone() };
            entry.features.set(&FROM_V2, &sender, &self.node)?;
        }
        self.entries.append(&entry)?;
        self.total()
    }

    fn total(&self) -> Result<v1::Total, Error> {
        let entries = self.entries.list()?;
        let value = entries.iter().fold(0u64, |sum, (_, e)| sum.saturating_add(e.core.by));
        Ok(v1::Total { value, entries: Some(entries.len() as u64) })
    }
}

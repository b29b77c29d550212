//! Starting a node: the data dir and node id, the `--join` probe, the
//! listeners, rollgate's node runtime, the table migrations and plugins,
//! the peer links and the HTTP server (steps 1 and 2 of the life of a node,
//! see [`crate::node`]); catch-up then runs in the background.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rollgate::admin::AdminConfig;
use rollgate::cluster::{Cluster, ClusterOptions};
use rollgate::handshake::HandshakeConfig;
use rollgate::migrate::{Gates, LocalOptions, LocalRunner};
use rollgate::net::{self, Listener, NetConfig, NetError};
use rollgate::store::MetaStore;
use rollgate::tls::NodeTls;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinSet;

use super::api::Api;
use super::clock::ClockView;
use super::config::{Addresses, NodeConfig, Tuning};
use super::error::NodeError;
use super::handle::NodeHandle;
use super::shared::{ServingState, Shared};
use super::{catchup, clock_task, serve};
use crate::Msg;
use crate::gates::KvFlags;
use crate::hlc::Hlc;
use crate::migrations::{self, HookSlot, HookTarget};
use crate::peer::link::{LinkSettings, Links};
use crate::plugins::Audit;
use crate::releases::{self, FlagHooks, RECORD_META_V2, Release, TTL};
use crate::storage::Storage;

/// The file holding the node id in the data dir.
pub const NODE_ID_FILE: &str = "node_id";

/// Starts a node on `store` (the cluster's metadata store) and returns
/// once it is registered and listening; it then catches up in the
/// background ([`NodeHandle::wait_ready`]).
pub async fn start(config: NodeConfig, store: Arc<dyn MetaStore>) -> Result<NodeHandle, NodeError> {
    let release = config.release;
    if let Some(id) = &config.node_id {
        rollgate::cluster::validate_node_id(id).map_err(|e| NodeError::Config(format!("--node-id: {e}")))?;
    }
    check_plugins(release, &config.plugins)?;
    if !config.dial_overrides.is_empty() {
        tracing::warn!(overrides = ?config.dial_overrides, "dialling peers at other addresses than they registered");
    }
    let dir = config.data_dir.clone();
    let storage_options = config.tuning.storage.clone();
    let explicit = config.node_id.clone();
    let policy = release.format_policy();
    let (storage, floor, node_id) = tokio::task::spawn_blocking(move || {
        let (storage, floor) = Storage::open(&dir, storage_options, &policy)?;
        let node_id = load_or_create_node_id(&dir, explicit.as_deref())?;
        Ok::<_, NodeError>((storage, floor, node_id))
    })
    .await
    .map_err(|e| NodeError::Config(format!("opening the data dir: {e}")))??;
    match start_with(config, store, storage.clone(), floor, node_id).await {
        Ok(handle) => Ok(handle),
        Err(e) => {
            storage.close().await;
            Err(e)
        }
    }
    .inspect(|h| tracing::info!(node = %h.node_id(), release = release.name, "node started"))
}

/// Checks `--plugins` against what the release ships.
fn check_plugins(release: &Release, plugins: &[String]) -> Result<(), NodeError> {
    let mut seen = BTreeSet::new();
    for p in plugins {
        if release.plugin(p).is_none() {
            let ships = releases::RELEASES.iter().filter(|r| r.plugin(p).is_some()).map(|r| r.name).collect::<Vec<_>>();
            let theirs: Vec<&str> = release.plugins.iter().map(|p| p.name).collect();
            return Err(NodeError::Config(format!(
                "--plugins: release {} has no plugin {:?} (its plugins: {}){}",
                release.name,
                rollgate::util::shorten_to(p, 64),
                if theirs.is_empty() { "none".to_string() } else { theirs.join(", ") },
                match ships.first() {
                    Some(first) => format!("; run release {first} or later to use it"),
                    None => String::new(),
                }
            )));
        }
        if !seen.insert(p.as_str()) {
            return Err(NodeError::Config(format!("--plugins: plugin {p:?} is named twice")));
        }
    }
    Ok(())
}

async fn start_with(
    config: NodeConfig,
    store: Arc<dyn MetaStore>,
    storage: Storage,
    floor: Option<crate::hlc::Version>,
    node_id: String,
) -> Result<NodeHandle, NodeError> {
    let release = config.release;
    let tuning = config.tuning.clone();
    let cluster = Cluster::open(store.clone(), ClusterOptions::default()).await?;
    let cluster_id = cluster.cluster_id().to_string();
    drop(cluster);

    let tls = match &config.tls {
        Some(files) => Some(NodeTls::from_files(files, &node_id).map_err(|e| NodeError::Config(e.to_string()))?),
        None => None,
    };
    let mut handshake =
        HandshakeConfig::new(&node_id, release.name, &cluster_id, release.protocols, release.transport_set());
    handshake.secret = config.cluster_secret.clone();
    if let Some(signed) = &config.release_manifest {
        handshake.release_proof =
            Some(signed.proof().map_err(|e| NodeError::Config(format!("--release-manifest: {e}")))?);
    }
    handshake.trusted_release_key = config.release_key.clone();
    let mut net_config = NetConfig::new(handshake);
    net_config.handshake_timeout = tuning.handshake_timeout;
    net_config.idle_timeout = Some(tuning.idle_timeout);
    net_config.tls = tls.clone();

    if let Some(addr) = &config.join {
        probe_join(addr, net_config.clone()).await?;
    }

    if tls.is_none() && !config.insecure {
        refuse_plaintext_outside_loopback(&config.listen, &config.admin).await?;
    }
    let listener = bind_peers(&config.listen, &net_config).await?;
    let data_addr = listener.local_addr();
    let (http, admin_addr) = bind_http(&config.admin).await?;

    // rollgate's node runtime: boot checks, the fenced join, liveness, the flag worker.
    let hook_slot: HookSlot = Arc::default();
    let mut hooks = FlagHooks::default();
    if release.flags.iter().any(|f| f.spec.name == RECORD_META_V2.name && f.reversible()) {
        hooks
            .before_disable
            .insert(RECORD_META_V2.name, migrations::disable_hook(hook_slot.clone(), tuning.convert_back_wait));
    }
    let registry = release.registry(&hooks).map_err(|e| NodeError::Config(e.to_string()))?;
    let mut rc = rollgate::node::NodeConfig::new(&node_id, release.name, &config.data_dir, registry);
    rc.data_addr = data_addr.to_string();
    rc.admin_addr = admin_addr.to_string();
    releases::apply_to(release, &mut rc).map_err(|e| NodeError::Config(e.to_string()))?;
    rc.release_manifest = config.release_manifest.clone();
    rc.release_key = config.release_key.clone();
    rc.routes = crate::http::route_table(release, &config.plugins).map_err(|e| NodeError::Config(e.to_string()))?;
    rc.test_mode = false;
    rc.releases = Some(releases::release_table());
    rc.liveness_ttl_s = tuning.liveness_ttl_s;
    rc.timeouts = tuning.flag_timeouts.clone();
    rc.services = crate::settings::services(release, &rc.cluster.root);
    let runtime = rollgate::node::Node::start(rc, store.clone()).await?;
    settings_at_start(&runtime, &store).await;
    // Registered: from here on, a failure leaves the membership again.
    let addresses = Addresses { data: data_addr, admin: admin_addr };
    let identity = Identity { node_id, cluster_id, addresses, floor };
    let started = with_runtime(config, store, storage, identity, net_config, &runtime, hook_slot).await;
    let http_options = rollgate::admin::ServeOptions {
        tls: tls.as_ref().map(NodeTls::http_server),
        header_read_timeout: tuning.http_header_timeout,
        tls_handshake_timeout: tuning.http_header_timeout,
        max_connections: tuning.max_http_connections,
        max_connections_per_source: tuning.max_http_connections_per_source,
    };
    let (parts, http_app) = match started {
        Ok(x) => x,
        Err(e) => {
            if let Err(left) = runtime.stop().await {
                tracing::warn!(node = %runtime.id(), error = %left, "could not leave the membership after a failed start");
            }
            return Err(e);
        }
    };
    let Parts { shared, mut tasks } = parts;
    tasks.spawn(serve::accept_loop(shared.clone(), listener));
    let (http_stop, http_stopped) = oneshot::channel::<()>();
    let http_task = tokio::spawn(async move {
        let stopped = async move {
            let _ = http_stopped.await;
        };
        if let Err(e) = rollgate::admin::serve_with(http, http_app, http_options, stopped).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tasks.spawn(catchup::initial(shared.clone()));
    Ok(NodeHandle { shared, tasks, http_stop: Some(http_stop), http_task: Some(http_task) })
}

/// The listener of peer connections on `--listen`, at a specific address
/// (the one the node registers).
async fn bind_peers(listen: &str, net_config: &NetConfig) -> Result<Listener<Msg>, NodeError> {
    let listener = Listener::<Msg>::bind(listen, net_config.clone()).await.map_err(|e| match e {
        NetError::Io { message, .. } => {
            NodeError::Bind { addr: listen.to_string(), what: "--listen, peer connections", reason: message }
        }
        other => NodeError::Net(other),
    })?;
    let data_addr = listener.local_addr();
    if data_addr.ip().is_unspecified() {
        return Err(NodeError::Config(format!(
            "--listen {listen}: peers connect to the address a node registers, so listen on a specific address, not {}",
            data_addr.ip()
        )));
    }
    Ok(listener)
}

/// The HTTP listener on `--admin` and its address: loopback unless the
/// address says otherwise (rollgate's admin listener rules), and a specific
/// address (the one the node registers).
async fn bind_http(admin: &str) -> Result<(tokio::net::TcpListener, SocketAddr), NodeError> {
    let http = rollgate::admin::bind(Some(admin)).await.map_err(|e| NodeError::Bind {
        addr: rollgate::util::shorten_to(admin, 128),
        what: "--admin, the HTTP API",
        reason: e.to_string(),
    })?;
    let admin_addr = http.local_addr().map_err(|e| NodeError::Bind {
        addr: admin.to_string(),
        what: "--admin",
        reason: e.to_string(),
    })?;
    if admin_addr.ip().is_unspecified() {
        return Err(NodeError::Config(format!(
            "--admin {admin}: members call each other's admin API at the address a node registers (for \
             _capabilities), so listen on a specific address, not {}",
            admin_addr.ip()
        )));
    }
    Ok((http, admin_addr))
}

/// Without TLS, a node listens only on loopback unless told `--insecure`:
/// outside loopback, peers and clients would talk in the clear.
async fn refuse_plaintext_outside_loopback(listen: &str, admin: &str) -> Result<(), NodeError> {
    let mut outside = Vec::new();
    // An address that does not resolve fails at bind, with its own message.
    if let Ok(addrs) = tokio::net::lookup_host(listen).await
        && addrs.into_iter().any(|a| !a.ip().is_loopback())
    {
        outside.push(format!("--listen {listen}"));
    }
    if let Ok(a) = rollgate::admin::parse_addr(Some(admin))
        && !a.ip().is_loopback()
    {
        outside.push(format!("--admin {a}"));
    }
    if outside.is_empty() {
        return Ok(());
    }
    Err(NodeError::Config(format!(
        "{} is not a loopback address and no TLS is configured, so peers and clients would talk in the clear: give \
         --tls-cert, --tls-key and --tls-ca (make them with `rollgate certs ca` and `rollgate certs node ID --host \
         ADDR`), or pass --insecure to run without TLS on a network you trust",
        outside.join(" and ")
    )))
}

/// What a started node is made of, before it serves.
struct Parts {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

/// Who a starting node is.
struct Identity {
    node_id: String,
    cluster_id: String,
    addresses: Addresses,
    floor: Option<crate::hlc::Version>,
}

/// Everything that needs the runtime: the flags, the migrations, the plugins,
/// the links, and the HTTP app (client routes and the admin API).
async fn with_runtime(
    config: NodeConfig,
    store: Arc<dyn MetaStore>,
    storage: Storage,
    identity: Identity,
    net_config: NetConfig,
    runtime: &rollgate::node::Node,
    hook_slot: HookSlot,
) -> Result<(Parts, axum::Router), NodeError> {
    let Identity { node_id, cluster_id, addresses, floor } = identity;
    let release = config.release;
    let tuning = config.tuning.clone();
    let views = runtime.handle().watch_view();
    let flags = KvFlags::new(runtime.registry(), runtime.flags().clone(), views.clone());
    let gates: Arc<dyn Gates> = Arc::new(flags.clone());
    let mut tasks = JoinSet::new();

    // The table migrations of the records unit, following the flag bits.
    let runner = migration_runner(release, &tuning, &store, &storage, &node_id, &gates)?;
    if let Some(runner) = &runner {
        follow_flags(runner, release, &storage, &flags, &gates, &hook_slot, &mut tasks).await?;
    }

    // Plugins: each starts once the flags it requires are enabled.
    let audit = config.plugins.iter().filter_map(|p| release.plugin(p)).map(|def| Arc::new(Audit::new(def))).next();
    if let Some(audit) = &audit {
        tasks.spawn(crate::plugins::run(audit.clone(), runtime.clone(), flags.clone()));
    }

    publish_storage_status(runtime, &storage, &node_id);
    let handshakes = net_config.counters.clone();
    let net_tls = net_config.tls.clone();
    let members = net_tls.as_ref().map(|t| rollgate::admin::fanout::MemberClient::https(&t.http_client()));
    let links = peer_links(net_config, &tuning, release);
    runtime.set_link_source(crate::metrics::link_source(links.clone(), handshakes));
    let shared = Arc::new(Shared {
        hlc: Hlc::new(node_id.clone(), floor.as_ref()),
        clock: ClockView::default(),
        // The peers' clocks are read from their HTTP listeners, over HTTPS when they serve it.
        clock_http: members.clone().unwrap_or_else(rollgate::admin::fanout::MemberClient::plain),
        node_id,
        release,
        tuning: tuning.clone(),
        cluster_id,
        addresses,
        storage,
        runtime: Mutex::new(Some(runtime.clone())),
        views,
        flags,
        audit,
        runner: Mutex::new(runner),
        links,
        state: watch::Sender::new(ServingState::CatchingUp),
        inbound_seen: Mutex::default(),
        inbound_notify: Notify::new(),
        refusals: Mutex::default(),
        resyncs: Mutex::default(),
        background: Mutex::new(JoinSet::new()),
        sync_stats: watch::Sender::new(BTreeMap::new()),
        dial_overrides: config.dial_overrides.clone(),
    });
    tasks.spawn(manage_links(shared.clone()));
    tasks.spawn(clock_task::run(shared.clone()));
    let app = http_app(Api { shared: shared.clone() }, runtime, config.admin_token.as_deref(), members, &tuning);
    Ok((Parts { shared, tasks }, app))
}

/// The runner of the records unit's table migrations, publishing its
/// progress to `store`; `None` when the release has no table migration.
fn migration_runner(
    release: &'static Release,
    tuning: &Tuning,
    store: &Arc<dyn MetaStore>,
    storage: &Storage,
    node_id: &str,
    gates: &Arc<dyn Gates>,
) -> Result<Option<Arc<LocalRunner>>, NodeError> {
    let table_migrations = migrations::for_release(release, gates.clone())?;
    if table_migrations.table_migrations().is_empty() {
        return Ok(None);
    }
    let options = LocalOptions {
        release: release.name.to_string(),
        root: ClusterOptions::default().root,
        batch_records: tuning.migration_batch_records.max(1),
        publish_interval_ms: 500,
        ..LocalOptions::default()
    };
    let runner =
        LocalRunner::new(Arc::new(table_migrations), storage.database()?, node_id, options)?.publish_to(store.clone());
    Ok(Some(Arc::new(runner)))
}

/// Ties `runner` to the flags: the disable hook of `record_meta_v2` reaches
/// it, a unit below what this release reads is brought up now, and from
/// then on the migrations follow the flag bits (a task in `tasks`).
async fn follow_flags(
    runner: &Arc<LocalRunner>,
    release: &'static Release,
    storage: &Storage,
    flags: &KvFlags,
    gates: &Arc<dyn Gates>,
    hook_slot: &HookSlot,
    tasks: &mut JoinSet<()>,
) -> Result<(), NodeError> {
    let _ = hook_slot.set(HookTarget { runner: Arc::downgrade(runner), gates: gates.clone() });
    // A unit below what this release reads (an empty one, see
    // `Storage::open`) is brought up before anything is stored.
    let stamp = storage.unit_stamp().await?;
    if stamp.format < release.formats.min_readable {
        runner.run_once(&**gates).await?;
        let now = storage.unit_stamp().await?;
        if now.format < release.formats.min_readable {
            return Err(NodeError::Config(format!(
                "the records unit is at format {} but release {} reads formats {}..={}, and the flags that \
                 migrate it are not enabled: enable them from a node of an older release first",
                now.format, release.name, release.formats.min_readable, release.formats.max
            )));
        }
    }
    let (changes, watchers) = flags.changes(&[RECORD_META_V2.name, TTL.name]);
    let (runner, flags) = (runner.clone(), flags.clone());
    tasks.spawn(async move {
        let _watchers = watchers;
        let _ = runner.run_on_changes(&flags, changes).await;
    });
    Ok(())
}

/// A fresh cluster's settings start at their latest format with no step
/// run: the record is written in that format (once; a failure is logged and
/// leaves the status showing no record). The upgrade status shows them.
async fn settings_at_start(runtime: &rollgate::node::Node, store: &Arc<dyn MetaStore>) {
    use rollgate::store::MetaStoreJson;
    let root = runtime.cluster().keys().root().to_string();
    let format_key = rollgate::migrate::MigrateKeys::new(root.as_str()).format(crate::settings::SERVICE);
    match store.get_json::<rollgate::migrate::ServiceFormat>(&format_key).await {
        Ok(Some((format, _))) => {
            if let Err(e) = crate::settings::ensure_fresh(store.as_ref(), &root, format.version).await {
                tracing::warn!(error = %e, "could not write the fresh cluster settings");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the settings format"),
    }
    let (status_store, status_root) = (store.clone(), root);
    runtime.set_status_section(
        "kv_settings",
        Arc::new(move || {
            let (store, root) = (status_store.clone(), status_root.clone());
            Box::pin(async move { crate::settings::read(store.as_ref(), &root).await })
        }),
    );
}

/// `GET /admin/upgrade/status` shows this node's records unit too.
fn publish_storage_status(runtime: &rollgate::node::Node, storage: &Storage, node_id: &str) {
    let status_storage = storage.clone();
    let status_node = node_id.to_string();
    runtime.set_status_section(
        "storage",
        Arc::new(move || {
            let (storage, node) = (status_storage.clone(), status_node.clone());
            Box::pin(async move {
                match storage.unit_stamp().await {
                    Ok(stamp) => serde_json::json!({
                        "node": node,
                        "unit": releases::RECORDS_UNIT,
                        "format": stamp.format,
                        "created_format": stamp.created_format,
                        "written_by": stamp.written_by,
                    }),
                    Err(e) => serde_json::json!({"node": node, "error": e.to_string()}),
                }
            })
        }),
    );
}

/// The links to peers, with the node's handshake and write batching.
fn peer_links(net: NetConfig, tuning: &Tuning, release: &Release) -> Links {
    Links::new(LinkSettings {
        deprecated_protocols: release.deprecated_protocols,
        net,
        backoff_min: tuning.backoff_min,
        backoff_max: tuning.backoff_max,
        max_pending: 4096,
        write_queue_len: 4096,
        batch_max_entries: 256,
        batch_max_bytes: 4 << 20,
        max_inflight_batches: 4,
        replicate_timeout: tuning.write_timeout,
    })
}

/// The HTTP app: the client routes of `api` and rollgate's admin API of
/// `runtime` (its mutations need `admin_token`), on one listener.
fn http_app(
    api: Api,
    runtime: &rollgate::node::Node,
    admin_token: Option<&str>,
    members: Option<rollgate::admin::fanout::MemberClient>,
    tuning: &Tuning,
) -> axum::Router {
    let admin = match admin_token {
        Some(token) => AdminConfig::with_token(token),
        None => AdminConfig::default(),
    };
    let admin = AdminConfig {
        token_hint: "start rollgate-kv serve with --admin-token-file FILE (one line, 8 to 1024 printable characters) \
                     and give rollgate the same file with --token-file FILE"
            .into(),
        members,
        ..admin
    };
    let requests = crate::metrics::KvMetrics::register(&admin.metrics);
    crate::http::app(api, rollgate::admin::router(runtime.clone(), admin), tuning.http_request_timeout)
        .layer(axum::middleware::from_fn(move |req, next| crate::metrics::measured(req, next, requests.clone())))
}

/// Connects to `addr` once to check that it accepts us.
async fn probe_join(addr: &str, config: NetConfig) -> Result<(), NodeError> {
    match net::connect::<Msg>(addr, config).await {
        Ok(conn) => {
            tracing::info!(
                peer = %conn.negotiated().peer_node_id, protocol = %conn.negotiated().protocol,
                transport = %conn.negotiated().transport, "--join: the peer accepts this node"
            );
            let _ = conn.close().await;
            Ok(())
        }
        Err(e) => Err(NodeError::Join { addr: addr.to_string(), reason: e.to_string() }),
    }
}

/// Keeps a link to every running member.
async fn manage_links(shared: Arc<Shared>) {
    let mut tasks = JoinSet::new();
    let mut views = shared.views.clone();
    loop {
        let view = views.borrow_and_update().clone();
        let desired: BTreeMap<String, String> = view
            .running()
            .filter(|m| m.record.node_id != shared.node_id)
            .map(|m| {
                let id = m.record.node_id.clone();
                let addr = shared.dial_overrides.get(&id).unwrap_or(&m.record.data_addr).clone();
                (id, addr)
            })
            .collect();
        shared.links.reconcile(&desired, &mut tasks);
        while tasks.try_join_next().is_some() {}
        if views.changed().await.is_err() {
            break;
        }
    }
}

fn load_or_create_node_id(dir: &Path, explicit: Option<&str>) -> Result<String, NodeError> {
    let path = dir.join(NODE_ID_FILE);
    let err = |reason: String| NodeError::NodeId { path: path.clone(), reason };
    match std::fs::metadata(&path) {
        Ok(m) if m.len() > 1024 => return Err(err(format!("{} bytes, not a node id", m.len()))),
        Ok(_) => {
            let text = std::fs::read_to_string(&path).map_err(|e| err(format!("cannot read it: {e}")))?;
            let stored = text.trim();
            rollgate::cluster::validate_node_id(stored).map_err(|e| err(e.to_string()))?;
            if let Some(given) = explicit
                && given != stored
            {
                return Err(err(format!(
                    "the data dir belongs to node {stored:?}, not {given:?}: drop --node-id, or use another --data dir"
                )));
            }
            return Ok(stored.to_string());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(format!("cannot read it: {e}"))),
    }
    let id = match explicit {
        Some(id) => id.to_string(),
        None => format!("kv-{:08x}", rand::random::<u32>()),
    };
    let tmp = dir.join(format!(".{NODE_ID_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| err(format!("cannot write it: {e}")))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_is_created_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create_node_id(dir.path(), None).unwrap();
        assert!(id.starts_with("kv-"), "{id}");
        assert_eq!(load_or_create_node_id(dir.path(), None).unwrap(), id, "kept");
        assert_eq!(load_or_create_node_id(dir.path(), Some(&id)).unwrap(), id);
        let e = load_or_create_node_id(dir.path(), Some("other")).unwrap_err();
        assert!(e.to_string().contains("belongs to node") && e.to_string().contains(NODE_ID_FILE), "{e}");
        assert!(e.is_operator_error());

        let explicit = tempfile::tempdir().unwrap();
        assert_eq!(load_or_create_node_id(explicit.path(), Some("n-1")).unwrap(), "n-1");
    }

    /// I10, through a real node: a data dir whose highest stored version
    /// is a day ahead (a replica stored a peer's version unclamped, or this
    /// node ran with its clock a day ahead) is opened; the node's clock must
    /// not take that version as its floor beyond the drift bound, or every
    /// write it makes after the restart is stamped a day ahead too (and,
    /// replicated, outranks every honest node's writes for a day).
    #[tokio::test]
    async fn a_restart_on_a_data_dir_a_day_ahead_stamps_writes_within_the_drift_bound() {
        use crate::hlc::{MAX_FORWARD_DRIFT_MS, Version};
        use crate::record::Record;
        use crate::storage::{StorageOptions, StoredEntry};
        const DAY_MS: u64 = 86_400_000;
        let dir = tempfile::tempdir().unwrap();
        {
            let policy = releases::find("1.2").unwrap().format_policy();
            let (storage, _) = Storage::open(dir.path(), StorageOptions::default(), &policy).unwrap();
            let ahead = Version { wall_ms: rollgate::cluster::now_ms() + DAY_MS, logical: 0, node: "peer".into() };
            let record =
                Record { version: ahead, value: Some(b"old".to_vec()), expires_at_ms: 0, features: Default::default() };
            storage.apply(vec![StoredEntry { key: "from-a-fast-peer".into(), record }]).await.unwrap();
            storage.close().await;
        }
        let node = crate::node::testing::single_node(dir.path()).await;
        let outcome = node.api().put("fresh".into(), b"new".to_vec(), None).await.expect("a write on one node");
        let version: Version = outcome.version.parse().unwrap();
        let bound = rollgate::cluster::now_ms() + MAX_FORWARD_DRIFT_MS;
        node.stop().await.unwrap();
        assert!(
            version.wall_ms <= bound,
            "a write made after the restart is stamped {version}, {} ms past now + the drift bound",
            version.wall_ms - bound
        );
    }

    #[test]
    fn a_damaged_node_id_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NODE_ID_FILE);
        for (content, what) in
            [(&b"bad id/with slash"[..], "letters"), (&[0xff, 0xfe][..], "read"), (&[b'x'; 5000][..], "bytes")]
        {
            std::fs::write(&path, content).unwrap();
            let e = load_or_create_node_id(dir.path(), None).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()) && msg.contains(what), "{msg}");
            assert_eq!(std::fs::read(&path).unwrap(), content, "left as it was");
        }
    }
}

//! `GET /metrics`: Prometheus metrics in the OpenMetrics text exposition
//! format (`prometheus-client`). Names follow Prometheus conventions: base
//! units in the name (`_seconds`), `_total` on counters.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `rollgate_peer_protocol_version` | gauge | `peer` | protocol version agreed with a connected peer |
//! | `rollgate_peer_transport_version` | gauge | `peer` | transport version agreed with a connected peer |
//! | `rollgate_peer_connected` | gauge | `peer` | 1 while the link is up |
//! | `rollgate_handshakes_total` | counter | `outcome`, `code` | handshakes accepted, and rejected by reject code |
//! | `rollgate_flag_state` | gauge | `flag`, `state` | 1 for the flag's state, 0 for the others |
//! | `rollgate_flag_operations_total` | counter | `operation`, `outcome` | enables and disables through the admin API |
//! | `rollgate_flag_operation_duration_seconds` | histogram | `operation`, `outcome` | how long they took |
//! | `rollgate_migration_records_done` | gauge | `node`, `migration` | records processed in the current pass |
//! | `rollgate_migration_records` | gauge | `node`, `migration` | records in the table when the pass started |
//! | `rollgate_migration_rate_records_per_second` | gauge | `node`, `migration` | records per second while running |
//! | `rollgate_cluster_epoch` | gauge | | the cluster epoch of this node's view |
//! | `rollgate_members` | gauge | `state` | members running and stopped |
//! | `rollgate_store_reachable` | gauge | | 1 while the node reaches the metadata store |
//!
//! The peer, flag, member and migration gauges are read from the node when
//! scraped; a service adds its own metrics to the same registry
//! ([`Metrics::register`]).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};
use rollgate_api::flags::FlagPhase;
use rollgate_api::upgrade::MigrationsSection;
use rollgate_runtime::node::Node;

/// Label pairs.
pub type Labels = Vec<(String, String)>;
type GaugeF = Gauge<f64, AtomicU64>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The content type of `GET /metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn operation_buckets() -> Histogram {
    // 10 ms to about 5.5 minutes.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

struct Inner {
    registry: Mutex<Registry>,
    peer_protocol: Family<Labels, Gauge>,
    peer_transport: Family<Labels, Gauge>,
    peer_connected: Family<Labels, Gauge>,
    handshakes: Family<Labels, Counter>,
    /// The handshake counts last added to `handshakes` (the node reports totals).
    handshakes_seen: Mutex<BTreeMap<Labels, u64>>,
    flag_state: Family<Labels, Gauge>,
    flag_ops: Family<Labels, Counter>,
    flag_op_seconds: HistogramFamily,
    migration_done: Family<Labels, GaugeF>,
    migration_total: Family<Labels, GaugeF>,
    migration_rate: Family<Labels, GaugeF>,
    epoch: Gauge,
    members: Family<Labels, Gauge>,
    store_reachable: Gauge,
}

/// The metrics of one node's admin listener: rollgate's and the service's
/// (cheap to clone; clones share the registry).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with rollgate's metrics.
    pub fn new() -> Metrics {
        let inner = Inner {
            registry: Mutex::new(Registry::default()),
            peer_protocol: Family::default(),
            peer_transport: Family::default(),
            peer_connected: Family::default(),
            handshakes: Family::default(),
            handshakes_seen: Mutex::default(),
            flag_state: Family::default(),
            flag_ops: Family::default(),
            flag_op_seconds: Family::new_with_constructor(operation_buckets as fn() -> Histogram),
            migration_done: Family::default(),
            migration_total: Family::default(),
            migration_rate: Family::default(),
            epoch: Gauge::default(),
            members: Family::default(),
            store_reachable: Gauge::default(),
        };
        {
            let mut r = inner.registry.lock().unwrap_or_else(|p| p.into_inner());
            let i = &inner;
            r.register(
                "rollgate_peer_protocol_version",
                "Protocol version agreed with a connected peer",
                i.peer_protocol.clone(),
            );
            r.register(
                "rollgate_peer_transport_version",
                "Transport version agreed with a connected peer",
                i.peer_transport.clone(),
            );
            r.register("rollgate_peer_connected", "1 while the link to the peer is up", i.peer_connected.clone());
            r.register(
                "rollgate_handshakes",
                "Version handshakes accepted, and rejected by reject code",
                i.handshakes.clone(),
            );
            r.register("rollgate_flag_state", "1 for the flag's state, 0 for the others", i.flag_state.clone());
            r.register(
                "rollgate_flag_operations",
                "Flag enables and disables through the admin API",
                i.flag_ops.clone(),
            );
            r.register_with_unit(
                "rollgate_flag_operation_duration",
                "How long flag enables and disables took",
                Unit::Seconds,
                i.flag_op_seconds.clone(),
            );
            r.register(
                "rollgate_migration_records_done",
                "Records processed in the current pass",
                i.migration_done.clone(),
            );
            r.register(
                "rollgate_migration_records",
                "Records in the table when the pass started",
                i.migration_total.clone(),
            );
            r.register(
                "rollgate_migration_rate_records_per_second",
                "Records migrated per second while running",
                i.migration_rate.clone(),
            );
            r.register("rollgate_cluster_epoch", "The cluster epoch of this node's view", i.epoch.clone());
            r.register("rollgate_members", "Members by effective state", i.members.clone());
            r.register(
                "rollgate_store_reachable",
                "1 while the node reaches the metadata store",
                i.store_reachable.clone(),
            );
        }
        Metrics { inner: Arc::new(inner) }
    }

    /// Adds a service's metric to the registry (name without `_total` for
    /// counters and without the unit; see `prometheus-client`).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.inner.registry.lock().unwrap_or_else(|p| p.into_inner()).register(name, help, metric);
    }

    /// Adds a service's metric with a unit (`Unit::Seconds` appends `_seconds`).
    pub fn register_with_unit(&self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        self.inner.registry.lock().unwrap_or_else(|p| p.into_inner()).register_with_unit(name, help, unit, metric);
    }

    /// Counts an enable or disable and how long it took.
    pub fn observe_flag_operation(&self, operation: &str, outcome: &str, took: Duration) {
        let l = labels(&[("operation", operation), ("outcome", outcome)]);
        self.inner.flag_ops.get_or_create(&l).inc();
        self.inner.flag_op_seconds.get_or_create(&l).observe(took.as_secs_f64());
    }

    /// Reads the node's state into the gauges, then encodes everything.
    pub async fn render(&self, node: &Node) -> String {
        let migrations =
            rollgate_runtime::migrate::cluster_status(node.cluster().store().as_ref(), node.cluster().keys().root())
                .await
                .map(MigrationsSection::Status)
                .unwrap_or_else(|e| MigrationsSection::Unreadable { error: e.to_string() });
        self.refresh(node, &migrations);
        let mut out = String::new();
        let registry = self.inner.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }

    fn refresh(&self, node: &Node, migrations: &MigrationsSection) {
        let i = &self.inner;
        let report = node.links();
        for f in [&i.peer_protocol, &i.peer_transport, &i.peer_connected] {
            f.clear();
        }
        for link in &report.links {
            let l = labels(&[("peer", &link.peer)]);
            i.peer_connected.get_or_create(&l).set(i64::from(link.state == "connected"));
            if let (Some(p), Some(t)) = (link.protocol, link.transport) {
                i.peer_protocol.get_or_create(&l).set(i64::from(p));
                i.peer_transport.get_or_create(&l).set(i64::from(t));
            }
        }
        let mut seen = i.handshakes_seen.lock().unwrap_or_else(|p| p.into_inner());
        for h in &report.handshakes {
            let l = labels(&[("outcome", &h.outcome), ("code", &h.code)]);
            let before = seen.entry(l.clone()).or_default();
            if h.count > *before {
                i.handshakes.get_or_create(&l).inc_by(h.count - *before);
                *before = h.count;
            }
        }
        drop(seen);
        i.flag_state.clear();
        for f in crate::view::flag_statuses(node) {
            for phase in [FlagPhase::Enabled, FlagPhase::Enabling, FlagPhase::Disabling, FlagPhase::Disabled] {
                let l = labels(&[("flag", &f.name), ("state", phase.as_str())]);
                i.flag_state.get_or_create(&l).set(i64::from(f.state == phase));
            }
        }
        for f in [&i.migration_done, &i.migration_total, &i.migration_rate] {
            f.clear();
        }
        if let MigrationsSection::Status(m) = migrations {
            for mig in m.all_migrations() {
                let l = labels(&[("node", &mig.node), ("migration", &mig.id)]);
                i.migration_done.get_or_create(&l).set(mig.done as f64);
                i.migration_total.get_or_create(&l).set(mig.total as f64);
                i.migration_rate.get_or_create(&l).set(mig.rate_per_s);
            }
        }
        let view = node.view();
        i.epoch.set(view.epoch as i64);
        i.members.clear();
        let running = view.members.values().filter(|m| m.is_running()).count();
        i.members.get_or_create(&labels(&[("state", "running")])).set(running as i64);
        i.members.get_or_create(&labels(&[("state", "stopped")])).set((view.members.len() - running) as i64);
        i.store_reachable.set(i64::from(node.handle().status().reachable));
    }
}

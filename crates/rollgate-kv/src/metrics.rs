//! What a node reports beyond rollgate's own metrics: the client API's
//! requests by operation (counts by status code, latency histograms) on
//! the admin listener's `/metrics`, and its peer links and handshake counts
//! to rollgate's node runtime (shown by `/admin/links`, the dashboard and
//! the peer metrics).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kv_requests_total` | counter | `operation` (`get`, `put`, `delete`, `scan`), `code` (HTTP status) |
//! | `kv_request_duration_seconds` | histogram | `operation` |

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Unit;
use rollgate::api::links::{HandshakeCount, LinkReport, LinkStatus};
use rollgate::net::HandshakeCounters;

use crate::peer::link::Links;

type Labels = Vec<(String, String)>;

fn latency_buckets() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

/// The client API's request metrics.
#[derive(Clone)]
pub struct KvMetrics {
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
}

impl KvMetrics {
    /// Registers them with the admin listener's metrics.
    pub fn register(metrics: &rollgate::admin::Metrics) -> KvMetrics {
        let m = KvMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
        };
        metrics.register("kv_requests", "Client API requests by operation and HTTP status", m.requests.clone());
        metrics.register_with_unit(
            "kv_request_duration",
            "How long client API requests took, by operation",
            Unit::Seconds,
            m.latency.clone(),
        );
        m
    }

    /// Counts one request.
    pub fn observe(&self, operation: &str, code: u16, took: Duration) {
        let op = ("operation".to_string(), operation.to_string());
        self.requests.get_or_create(&vec![op.clone(), ("code".into(), code.to_string())]).inc();
        self.latency.get_or_create(&vec![op]).observe(took.as_secs_f64());
    }
}

/// The client API operation of a request (`None`: not a client API request).
pub fn operation(method: &Method, path: &str) -> Option<&'static str> {
    match (method, path) {
        (&Method::GET, "/kv") => Some("scan"),
        (m, p) if p.starts_with("/kv/") => match *m {
            Method::GET => Some("get"),
            Method::PUT => Some("put"),
            Method::DELETE => Some("delete"),
            _ => None,
        },
        _ => None,
    }
}

/// Middleware: measures client API requests.
pub async fn measured(req: Request, next: Next, metrics: KvMetrics) -> Response {
    let Some(op) = operation(req.method(), req.uri().path()) else { return next.run(req).await };
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics.observe(op, resp.status().as_u16(), started.elapsed());
    resp
}

/// Reports `links` and the handshake counts to rollgate's node runtime.
pub fn link_source(links: Links, handshakes: HandshakeCounters) -> rollgate::node::LinkSource {
    Arc::new(move || LinkReport {
        node_id: String::new(),
        published: true,
        links: links
            .status()
            .into_iter()
            .map(|p| LinkStatus {
                peer: p.node_id,
                addr: p.addr,
                state: p.state.to_string(),
                protocol: p.protocol,
                transport: p.transport,
                peer_release: p.release,
                authenticated: p.authenticated,
                peer_manifest: p.manifest,
                tls: p.tls,
                error: p.error,
            })
            .collect(),
        handshakes: handshakes
            .snapshot()
            .into_iter()
            .map(|(accepted, code, count)| HandshakeCount {
                outcome: if accepted { "accepted" } else { "rejected" }.into(),
                code,
                count,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_client_api_requests_have_an_operation() {
        assert_eq!(operation(&Method::GET, "/kv/a"), Some("get"));
        assert_eq!(operation(&Method::PUT, "/kv/a"), Some("put"));
        assert_eq!(operation(&Method::DELETE, "/kv/a"), Some("delete"));
        assert_eq!(operation(&Method::GET, "/kv"), Some("scan"));
        for (m, p) in
            [(Method::GET, "/admin/flags"), (Method::POST, "/kv/a"), (Method::GET, "/metrics"), (Method::GET, "/kvx")]
        {
            assert_eq!(operation(&m, p), None, "{m} {p}");
        }
    }
}

//! The client HTTP API, served on `--admin`:
//!
//! | method | path | answer |
//! |---|---|---|
//! | `PUT` | `/kv/{key}` (`?ttl_s=N`) | 200 JSON `{key, version, acks, members, quorum}` once a majority stored it |
//! | `GET` | `/kv/{key}` | 200 with the value as the body (`x-kv-version` header), 404 |
//! | `DELETE` | `/kv/{key}` | 200 JSON, like `PUT` (stores a tombstone) |
//! | `GET` | `/health` | 200 when ready, else 503; JSON [`crate::node::Health`] |
//!
//! Errors are JSON `{"error": "...", "code": "..."}`: 400 (`bad_request`,
//! `invalid_key`, `ttl_not_supported`), 404 (`not_found`), 405, 413
//! (`key_too_long`, `value_too_large`), 503 (`catching_up`, `stopping`,
//! `no_quorum`, `timeout`), 500 (`internal`).
//!
//! Everything is bounded: body size ([`MAX_BODY_BYTES`]), request time,
//! connections at once. [`ROUTES`] lists every route and its parameters in
//! one place (what rollgate's capabilities will be computed from), and
//! [`app`] mounts the admin API's router next to the client routes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::node::{Api, NodeState, WriteError};
use crate::policy::PolicyError;
use crate::record::MAX_VALUE_BYTES;

/// Largest request body: the largest value.
pub const MAX_BODY_BYTES: usize = MAX_VALUE_BYTES;
/// Longest query string accepted.
pub const MAX_QUERY_BYTES: usize = 256;

/// One route of the client API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The HTTP method.
    pub method: &'static str,
    /// The path pattern.
    pub path: &'static str,
    /// The query parameters it accepts.
    pub parameters: &'static [&'static str],
}

/// Every client route: the single registry that capabilities (does every
/// node support this endpoint and parameter?) will be answered from.
pub const ROUTES: &[Route] = &[
    Route { method: "GET", path: "/kv/{key}", parameters: &[] },
    Route { method: "PUT", path: "/kv/{key}", parameters: &["ttl_s"] },
    Route { method: "DELETE", path: "/kv/{key}", parameters: &[] },
    Route { method: "GET", path: "/health", parameters: &[] },
];

/// The client routes of a node.
pub fn client_routes(api: Api) -> Router {
    Router::new()
        .route("/kv/{key}", get(get_key).put(put_key).delete(delete_key))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

/// The HTTP app of a node: the client routes, the admin API's routes when
/// given (mounted on the same listener), and a bound on request time.
pub fn app(api: Api, admin: Option<Router>, request_timeout: Duration) -> Router {
    let mut app = client_routes(api);
    if let Some(admin) = admin {
        app = app.merge(admin);
    }
    app.layer(middleware::from_fn(move |req: Request, next: Next| bounded(req, next, request_timeout)))
}

async fn bounded(req: Request, next: Next, limit: Duration) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} ms", limit.as_millis()),
        ),
    }
}

/// A JSON error answer.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into(), "code": code }))).into_response()
}

fn write_error(e: WriteError) -> Response {
    let status_code = |e: &WriteError| match e {
        WriteError::NotReady { state: NodeState::CatchingUp, .. } => (StatusCode::SERVICE_UNAVAILABLE, "catching_up"),
        WriteError::NotReady { .. } => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
        WriteError::Policy(PolicyError::TtlUnsupported { .. }) => (StatusCode::BAD_REQUEST, "ttl_not_supported"),
        WriteError::Policy(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        WriteError::InvalidKey { too_long: true, .. } => (StatusCode::PAYLOAD_TOO_LARGE, "key_too_long"),
        WriteError::InvalidKey { .. } => (StatusCode::BAD_REQUEST, "invalid_key"),
        WriteError::ValueTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
        WriteError::NoQuorum { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_quorum"),
        WriteError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let (status, code) = status_code(&e);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "request failed");
    }
    error(status, code, e.to_string())
}

fn path_error(e: PathRejection) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_key", format!("the key in the path does not decode: {e}"))
}

/// Parses the query of a `PUT`: only `ttl_s` is known. The error is the
/// message of a 400 `bad_request`.
fn parse_put_query(query: Option<&str>) -> Result<Option<u64>, String> {
    let Some(q) = query.filter(|q| !q.is_empty()) else { return Ok(None) };
    if q.len() > MAX_QUERY_BYTES {
        return Err(format!("the query is over {MAX_QUERY_BYTES} bytes"));
    }
    let mut ttl = None;
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "ttl_s" if ttl.is_none() => match value.parse::<u64>() {
                Ok(n) => ttl = Some(n),
                Err(_) => {
                    return Err(format!(
                        "ttl_s must be a whole number of seconds, got {:?}",
                        crate::shorten(value, 32)
                    ));
                }
            },
            "ttl_s" => return Err("ttl_s is given twice".into()),
            other => {
                return Err(format!(
                    "unknown parameter {:?}: PUT /kv/{{key}} accepts ttl_s",
                    crate::shorten(other, 32)
                ));
            }
        }
    }
    Ok(ttl)
}

async fn put_key(
    State(api): State<Api>,
    key: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = match key {
        Ok(Path(k)) => k,
        Err(e) => return path_error(e),
    };
    let ttl_s = match parse_put_query(query.as_deref()) {
        Ok(t) => t,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "value_too_large",
                format!("the value is over the limit of {MAX_VALUE_BYTES} bytes"),
            );
        }
        Err(e) => return error(e.status(), "bad_request", format!("cannot read the body: {e}")),
    };
    match api.put(key, body.to_vec(), ttl_s).await {
        Ok(outcome) => axum::Json(outcome).into_response(),
        Err(e) => write_error(e),
    }
}

async fn delete_key(
    State(api): State<Api>,
    key: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    let key = match key {
        Ok(Path(k)) => k,
        Err(e) => return path_error(e),
    };
    if query.as_deref().is_some_and(|q| !q.is_empty()) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "DELETE /kv/{key} takes no parameters");
    }
    match api.delete(key).await {
        Ok(outcome) => axum::Json(outcome).into_response(),
        Err(e) => write_error(e),
    }
}

async fn get_key(State(api): State<Api>, key: Result<Path<String>, PathRejection>) -> Response {
    let key = match key {
        Ok(Path(k)) => k,
        Err(e) => return path_error(e),
    };
    match api.get(&key).await {
        Ok(Some(record)) => {
            let version = HeaderValue::from_str(&record.version.to_string()).unwrap_or(HeaderValue::from_static("?"));
            let value = record.value.unwrap_or_default();
            let mut r = (StatusCode::OK, value).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            r.headers_mut().insert("x-kv-version", version);
            r
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("key {:?} not found", crate::shorten(&key, 96))),
        Err(e) => write_error(e),
    }
}

async fn health(State(api): State<Api>) -> Response {
    let h = api.health();
    let status = if h.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(h)).into_response()
}

async fn not_found(req: Request) -> Response {
    let routes: BTreeMap<&str, Vec<&str>> = ROUTES.iter().fold(BTreeMap::new(), |mut m, r| {
        m.entry(r.path).or_default().push(r.method);
        m
    });
    let list: Vec<String> = routes.iter().map(|(p, ms)| format!("{} {p}", ms.join("|"))).collect();
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {} {}: the API is {}",
            req.method(),
            crate::shorten(req.uri().path(), 96),
            list.join(", ")
        ),
    )
}

async fn method_not_allowed(req: Request) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), crate::shorten(req.uri().path(), 96)),
    )
}

/// The HTTP listener of a node: bounds the connections at once, and fails
/// every connection once the node is killed (as a crashed process would).
pub struct KillableListener {
    inner: TcpListener,
    killed: Arc<AtomicBool>,
    permits: Arc<Semaphore>,
}

impl KillableListener {
    /// Wraps `inner`.
    pub fn new(inner: TcpListener, killed: Arc<AtomicBool>, max_connections: usize) -> Self {
        KillableListener { inner, killed, permits: Arc::new(Semaphore::new(max_connections.max(1))) }
    }
}

impl axum::serve::Listener for KillableListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (KillableStream { inner: stream, killed: self.killed.clone(), _permit: permit }, addr);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    // Out of file descriptors and the like: back off briefly.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted HTTP connection (see [`KillableListener`]).
pub struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
    _permit: OwnedSemaphorePermit,
}

impl KillableStream {
    fn check(&self) -> std::io::Result<()> {
        if self.killed.load(Ordering::Acquire) {
            return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "the node was killed"));
        }
        Ok(())
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_queries_are_parsed_strictly() {
        assert_eq!(parse_put_query(None).unwrap(), None);
        assert_eq!(parse_put_query(Some("")).unwrap(), None);
        assert_eq!(parse_put_query(Some("ttl_s=30")).unwrap(), Some(30));
        for bad in ["ttl_s=x", "ttl_s=-1", "ttl=5", "ttl_s=1&ttl_s=2", &"a".repeat(MAX_QUERY_BYTES + 1)] {
            assert!(parse_put_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_route_is_listed_once() {
        let mut seen = std::collections::BTreeSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{r:?}");
        }
    }
}

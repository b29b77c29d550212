//! The admin HTTP API: an axum [`Router`] a service mounts on its admin
//! listener ([`router`]), and the functions to bind that listener (loopback
//! unless told otherwise: [`bind`]) and read the admin token ([`read_token_file`]).
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/_capabilities?method=&path=&parameters=&capabilities=&local_only=` | `{"supported": true\|false\|null}` |
//! | GET | `/admin/flags` | every flag this node knows or the store has, with its state |
//! | GET | `/admin/flags/{name}` | one flag |
//! | POST | `/admin/flags/enable` | `{"flags": [...], "all": bool, "experimental": bool, "dry_run": bool}` |
//! | POST | `/admin/flags/disable` | `{"flag": "name"}` (reversible flags only) |
//! | GET | `/admin/features` | cluster features and who publishes them |
//! | GET | `/admin/nodes` | the members, with each running one's clock against the cluster's ([`clock`]) |
//! | DELETE | `/admin/nodes/{id}` | forget a stopped member |
//! | GET | `/admin/upgrade/status` | releases, members and flags (an extensible object) |
//! | GET | `/admin/upgrade/plan?to=RELEASE` | what to do to reach a release |
//! | GET | `/admin/links` | this node's peer links (as the service reports them) and handshake counts |
//! | GET | `/admin/audit?limit=N` | the audit log, newest first |
//! | GET | `/metrics` | Prometheus metrics ([`metrics`]) |
//! | GET | `/ui/` | the dashboard ([`dashboard`]; `/ui/state`, `/ui/events` for live updates) |
//!
//! Mutations (POST, DELETE) need `Authorization: Bearer <token>`, compared
//! in constant time; without a configured token they are refused with a
//! message saying how to configure one. Request bodies are bounded
//! ([`AdminConfig::max_body_bytes`]), query strings too; every error is
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.

#![warn(missing_docs)]

use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use rollgate_api::audit::{AuditLog, Caller};
use rollgate_api::error::ErrorBody;
use rollgate_api::flags::DisableRequest;
use rollgate_api::floor::FinalizeRequest;
use rollgate_api::nodes::Forgotten;
use rollgate_api::routes::CapabilitiesAnswer;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use rollgate_runtime::capabilities::CapabilityQuery;
use rollgate_runtime::cluster::{ClusterError, validate_flag_name, validate_node_id};
use rollgate_runtime::flags::plan::{Blocker, DisableRefusal, EnableRequest};
use rollgate_runtime::flags::{FlagError, UpgradePlanError};
use rollgate_runtime::node::{FinalizeError, Node, UpgradePlanRefusal};

pub mod clock;
pub mod dashboard;
pub mod fanout;
pub mod links;
pub mod metrics;
pub mod register;
pub mod server;
pub mod view;

pub use metrics::Metrics;

pub use server::{ServeOptions, serve_with};

pub use rollgate_api::token::{TokenFileError, read_token_file};

/// The admin port used when none is given.
pub const DEFAULT_ADMIN_PORT: u16 = 9650;
/// The default bound on a request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest query string accepted.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// How long `GET /admin/nodes` waits for a member's clock.
pub const CLOCK_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1000);
/// Most flags one enable request may name.
pub const MAX_REQUEST_FLAGS: usize = 1000;
/// Most audit entries one request returns.
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// Errors of `bind` and `parse_addr`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The listen address cannot be parsed.
    #[error("invalid admin address {spec:?}: {reason} (use PORT for 127.0.0.1:PORT, or IP:PORT)")]
    Addr {
        /// The address as given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// Binding failed.
    #[error("cannot listen on admin address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// How the admin API behaves. `Debug` never prints the token.
#[derive(Clone)]
pub struct AdminConfig {
    /// The bearer token mutations need (`None`: mutations are refused).
    pub token: Option<String>,
    /// The largest request body.
    pub max_body_bytes: usize,
    /// How to configure a token, for the refusal when none is set (the
    /// service's own option, e.g. `start the node with --admin-token-file FILE`).
    pub token_hint: String,
    /// The metrics `GET /metrics` serves (the service may register its own).
    pub metrics: Metrics,
    /// Dashboard event streams (`GET /ui/events`) open at once; more are refused.
    pub max_event_streams: usize,
    /// Shortest time between two events of one stream.
    pub event_min_interval: std::time::Duration,
    /// How to call the other members' admin APIs (`None`: plain HTTP); with
    /// TLS, [`fanout::MemberClient::https`].
    pub members: Option<fanout::MemberClient>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("token_hint", &self.token_hint)
            .field("metrics", &self.metrics)
            .field("max_event_streams", &self.max_event_streams)
            .field("event_min_interval", &self.event_min_interval)
            .field("members", &self.members)
            .finish()
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            token_hint: "start the node with an admin token file (e.g. --admin-token-file FILE, one line with a \
                         secret of at least 8 characters) and give rollgate the same file with --token-file FILE"
                .into(),
            metrics: Metrics::new(),
            max_event_streams: dashboard::DEFAULT_MAX_EVENT_STREAMS,
            event_min_interval: dashboard::DEFAULT_EVENT_MIN_INTERVAL,
            members: None,
        }
    }
}

impl AdminConfig {
    /// With a token.
    pub fn with_token(token: &str) -> AdminConfig {
        AdminConfig { token: Some(token.to_string()), ..AdminConfig::default() }
    }
}

/// Parses an admin listen address: `None` is `127.0.0.1:9650`, `PORT` is
/// `127.0.0.1:PORT`, `localhost:PORT` is `127.0.0.1:PORT`, `IP:PORT` is
/// taken as given (bind to a non-loopback address only on purpose).
pub fn parse_addr(spec: Option<&str>) -> Result<SocketAddr, AdminError> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let Some(spec) = spec else { return Ok(SocketAddr::new(loopback, DEFAULT_ADMIN_PORT)) };
    let bad = |reason: &str| AdminError::Addr { spec: rollgate_util::shorten(spec), reason: reason.into() };
    if spec.len() > 256 {
        return Err(bad("longer than 256 bytes"));
    }
    if let Ok(port) = spec.parse::<u16>() {
        return Ok(SocketAddr::new(loopback, port));
    }
    if let Some(port) = spec.strip_prefix("localhost:") {
        return port.parse::<u16>().map(|p| SocketAddr::new(loopback, p)).map_err(|_| bad("the port is not a number"));
    }
    spec.parse::<SocketAddr>().map_err(|_| bad("not PORT, localhost:PORT or IP:PORT"))
}

/// Binds the admin listener ([`parse_addr`]: loopback unless an address says
/// otherwise).
pub async fn bind(spec: Option<&str>) -> Result<tokio::net::TcpListener, AdminError> {
    let addr = parse_addr(spec)?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the admin API listens on a non-loopback address; protect it with a token and a firewall");
    }
    tokio::net::TcpListener::bind(addr).await.map_err(|source| AdminError::Bind { addr, source })
}

/// Serves `router` on `listener` over plain HTTP with the default bounds
/// ([`ServeOptions`]: request-head and keep-alive timeouts, connections
/// bounded per source and in total) until the future is dropped. For HTTPS
/// or other bounds, [`serve_with`].
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    serve_with(listener, router, ServeOptions::default(), std::future::pending()).await
}

#[derive(Clone)]
pub(crate) struct AppState {
    node: Node,
    metrics: Metrics,
    /// Permits for dashboard event streams.
    streams: Arc<tokio::sync::Semaphore>,
    max_streams: usize,
    event_min_interval: std::time::Duration,
    /// Asks the other members during a `_capabilities` fan-out (each request
    /// is bounded by the node's `capabilities_ms`).
    http: fanout::MemberClient,
    token_digest: Option<[u8; 32]>,
    token_hint: Arc<str>,
}

/// The admin router of `node`.
pub fn router(node: Node, config: AdminConfig) -> Router {
    let state = AppState {
        node,
        metrics: config.metrics.clone(),
        streams: Arc::new(tokio::sync::Semaphore::new(config.max_event_streams.max(1))),
        max_streams: config.max_event_streams.max(1),
        event_min_interval: config.event_min_interval,
        http: config.members.clone().unwrap_or_else(fanout::MemberClient::plain),
        token_digest: config.token.as_deref().map(digest),
        token_hint: config.token_hint.as_str().into(),
    };
    Router::new()
        .route("/_capabilities", get(capabilities))
        .route("/admin/flags", get(list_flags))
        .route("/admin/flags/enable", post(enable))
        .route("/admin/flags/disable", post(disable))
        .route("/admin/flags/{name}", get(flag_info))
        .route("/admin/features", get(features))
        .route("/admin/nodes", get(nodes))
        .route("/admin/nodes/{id}", delete(forget))
        .route("/admin/upgrade/status", get(upgrade_status))
        .route("/admin/upgrade/plan", get(upgrade_plan))
        .route("/admin/upgrade/finalize", post(finalize))
        .route("/admin/links", get(links))
        .route("/admin/audit", get(audit))
        .route("/metrics", get(metrics))
        .merge(dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two digests without an early exit.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// An API error: `{"error": {"code", "message"}}` with a status.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    bearer: bool,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(ErrorBody::new(self.code, self.message))).into_response();
        if self.bearer {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

fn error(status: StatusCode, code: &'static str, message: impl Display) -> ApiError {
    ApiError { status, code, message: message.to_string(), bearer: false }
}

type Reply = Result<Response, ApiError>;

/// Checks the bearer token; the caller (the token's fingerprint) for the audit log.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(expected) = &state.token_digest else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "admin_token_not_configured",
            format!(
                "changes through the admin API are disabled because no admin token is configured: {}",
                state.token_hint
            ),
        ));
    };
    let unauthorized = |msg: &str| ApiError { bearer: true, ..error(StatusCode::UNAUTHORIZED, "unauthorized", msg) };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "this request changes the cluster and needs `Authorization: Bearer <token>` (rollgate: --token-file FILE or ROLLGATE_TOKEN_FILE)",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("malformed Authorization header: expected `Bearer <token>`"))?;
    if !same(&digest(token.trim()), expected) {
        tracing::warn!("an admin API change was refused: wrong admin token");
        return Err(unauthorized("wrong admin token: use the token the node was started with"));
    }
    Ok(Caller::admin_api(rollgate_runtime::audit::token_fingerprint(token.trim())))
}

fn check_query(uri: &Uri) -> Result<(), ApiError> {
    match uri.query() {
        Some(q) if q.len() > MAX_QUERY_BYTES => Err(error(
            StatusCode::URI_TOO_LONG,
            "query_too_long",
            format!("the query string is {} bytes; the limit is {MAX_QUERY_BYTES}", q.len()),
        )),
        _ => Ok(()),
    }
}

fn query_error(r: QueryRejection) -> ApiError {
    error(StatusCode::BAD_REQUEST, "bad_query", format!("bad query string: {}", r.body_text()))
}

fn body_error(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is larger than the admin API accepts")
    } else {
        error(StatusCode::BAD_REQUEST, "bad_body", format!("cannot read the request body: {}", r.body_text()))
    }
}

fn path_error(r: PathRejection) -> ApiError {
    error(StatusCode::BAD_REQUEST, "bad_path", format!("bad path: {}", r.body_text()))
}

fn parse_json<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE)
        && !ct.to_str().unwrap_or("").starts_with("application/json")
    {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_content_type",
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, "bad_json", format!("bad JSON body: {e}")))
}

fn cluster_error(e: &ClusterError) -> ApiError {
    match e {
        ClusterError::StoreUnavailable { .. } => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e),
        ClusterError::EpochContention { .. } => error(StatusCode::SERVICE_UNAVAILABLE, "contention", e),
        ClusterError::UnknownNode { .. } => error(StatusCode::NOT_FOUND, "unknown_node", e),
        ClusterError::NodeRunning { .. } => error(StatusCode::CONFLICT, "node_running", e),
        ClusterError::InvalidNodeId { .. } | ClusterError::InvalidFlagName { .. } => {
            error(StatusCode::BAD_REQUEST, "bad_request", e)
        }
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    }
}

fn flag_error(e: FlagError) -> ApiError {
    match &e {
        FlagError::EnableRefused { blockers, .. }
            if blockers.iter().all(|b| matches!(b, Blocker::UnknownFlag { .. })) =>
        {
            error(StatusCode::NOT_FOUND, "unknown_flag", &e)
        }
        FlagError::DisableRefused(DisableRefusal::UnknownFlag { .. }) => {
            error(StatusCode::NOT_FOUND, "unknown_flag", &e)
        }
        FlagError::EnableRefused { .. } | FlagError::DisableRefused(_) | FlagError::PluginRefused(_) => {
            error(StatusCode::CONFLICT, "refused", &e)
        }
        FlagError::StepFailed { .. } => error(StatusCode::CONFLICT, "rolled_back", &e),
        FlagError::TakenOver { .. } => error(StatusCode::CONFLICT, "taken_over", &e),
        FlagError::Cluster(c) => cluster_error(c),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilityParams {
    method: Option<String>,
    path: Option<String>,
    parameters: Option<String>,
    capabilities: Option<String>,
    local_only: Option<String>,
}

async fn capabilities(
    State(state): State<AppState>,
    uri: Uri,
    query: Result<Query<CapabilityParams>, QueryRejection>,
) -> Reply {
    check_query(&uri)?;
    let Query(p) = query.map_err(query_error)?;
    let local_only = match p.local_only.as_deref() {
        None | Some("false") => false,
        Some("true") | Some("") => true,
        Some(other) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("local_only must be true or false, not {:?}", rollgate_util::shorten(other)),
            ));
        }
    };
    let query = CapabilityQuery::parse(
        p.method.as_deref(),
        p.path.as_deref(),
        p.parameters.as_deref(),
        p.capabilities.as_deref(),
    )
    .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_query", e))?;
    let (supported, members) = view::capabilities(&state.node, &state.http, &query, local_only).await;
    let members = (!local_only).then_some(members);
    Ok(axum::Json(CapabilitiesAnswer { supported, members }).into_response())
}

async fn list_flags(State(state): State<AppState>) -> Response {
    axum::Json(view::flag_list(&state.node)).into_response()
}

async fn flag_info(State(state): State<AppState>, name: Result<Path<String>, PathRejection>) -> Reply {
    let Path(name) = name.map_err(path_error)?;
    validate_flag_name(&name).map_err(|e| error(StatusCode::BAD_REQUEST, "bad_flag_name", e))?;
    match view::flag_status(&state.node, &name) {
        Some(status) => Ok(axum::Json(status).into_response()),
        None => Err(error(
            StatusCode::NOT_FOUND,
            "unknown_flag",
            Blocker::UnknownFlag { flag: name, release: state.node.release().to_string() },
        )),
    }
}

async fn enable(State(state): State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Reply {
    let caller = authorize(&state, &headers)?;
    let body = body.map_err(body_error)?;
    let request: EnableRequest = parse_json(&headers, &body)?;
    if request.flags.len() > MAX_REQUEST_FLAGS {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{} flags named; at most {MAX_REQUEST_FLAGS}", request.flags.len()),
        ));
    }
    for name in &request.flags {
        validate_flag_name(name).map_err(|e| error(StatusCode::BAD_REQUEST, "bad_flag_name", e))?;
    }
    let dry_run = request.dry_run;
    let started = std::time::Instant::now();
    let result = state.node.enable_as(request, &caller).await;
    if !dry_run {
        state.metrics.observe_flag_operation("enable", outcome_name(&result), started.elapsed());
    }
    let report = result.map_err(flag_error)?;
    Ok(axum::Json(report).into_response())
}

async fn disable(State(state): State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Reply {
    let caller = authorize(&state, &headers)?;
    let body = body.map_err(body_error)?;
    let request: DisableRequest = parse_json(&headers, &body)?;
    validate_flag_name(&request.flag).map_err(|e| error(StatusCode::BAD_REQUEST, "bad_flag_name", e))?;
    let started = std::time::Instant::now();
    let result = state.node.disable_as(&request.flag, &caller).await;
    state.metrics.observe_flag_operation("disable", outcome_name(&result), started.elapsed());
    let report = result.map_err(flag_error)?;
    Ok(axum::Json(report).into_response())
}

async fn features(State(state): State<AppState>) -> Response {
    axum::Json(view::feature_statuses(&state.node)).into_response()
}

async fn nodes(State(state): State<AppState>) -> Response {
    let mut list = view::node_list(&state.node);
    clock::fill_offsets(&mut list, &state.http, CLOCK_READ_TIMEOUT).await;
    axum::Json(list).into_response()
}

async fn forget(State(state): State<AppState>, headers: HeaderMap, id: Result<Path<String>, PathRejection>) -> Reply {
    let caller = authorize(&state, &headers)?;
    let Path(id) = id.map_err(path_error)?;
    validate_node_id(&id).map_err(|e| error(StatusCode::BAD_REQUEST, "bad_node_id", e))?;
    let committed = state.node.forget_as(&id, &caller).await.map_err(|e| cluster_error(&e))?;
    Ok(axum::Json(Forgotten { forgotten: id, epoch: committed.epoch }).into_response())
}

/// `ok`, `refused` or `failed`, for the metrics.
fn outcome_name<T>(result: &Result<T, FlagError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(FlagError::EnableRefused { .. } | FlagError::DisableRefused(_) | FlagError::PluginRefused(_)) => "refused",
        Err(_) => "failed",
    }
}

async fn links(State(state): State<AppState>) -> Response {
    axum::Json(state.node.links()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    limit: Option<usize>,
}

async fn audit(State(state): State<AppState>, uri: Uri, query: Result<Query<AuditParams>, QueryRejection>) -> Reply {
    check_query(&uri)?;
    let Query(p) = query.map_err(query_error)?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=MAX_AUDIT_LIMIT).contains(&limit) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("limit must be 1 to {MAX_AUDIT_LIMIT}, not {limit}"),
        ));
    }
    let entries = state.node.audit_log(limit).await.map_err(|e| match e {
        rollgate_runtime::audit::AuditError::Store(s) => cluster_error(&ClusterError::from(s)),
        other => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", other),
    })?;
    Ok(axum::Json(AuditLog { capacity: state.node.config().audit_capacity, entries }).into_response())
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state.node).await;
    ([(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE))], body).into_response()
}

async fn upgrade_status(State(state): State<AppState>) -> Response {
    axum::Json(view::upgrade_status(&state.node, &state.http).await).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanParams {
    to: Option<String>,
}

async fn upgrade_plan(
    State(state): State<AppState>,
    uri: Uri,
    query: Result<Query<PlanParams>, QueryRejection>,
) -> Reply {
    check_query(&uri)?;
    let Query(p) = query.map_err(query_error)?;
    let Some(to) = p.to.filter(|t| !t.is_empty() && t.len() <= 64) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "give the target release: ?to=RELEASE (1 to 64 bytes)",
        ));
    };
    match state.node.upgrade_plan(&to) {
        Ok(plan) => Ok(axum::Json(plan).into_response()),
        Err(e @ UpgradePlanRefusal::Plan(UpgradePlanError::UnknownRelease { .. })) => {
            Err(error(StatusCode::NOT_FOUND, "unknown_release", e))
        }
        Err(e @ UpgradePlanRefusal::NoReleaseTable { .. }) => Err(error(StatusCode::CONFLICT, "no_release_table", e)),
        Err(e) => Err(error(StatusCode::CONFLICT, "refused", e)),
    }
}

/// Longest release name a finalize request may carry.
const MAX_RELEASE_BYTES: usize = 64;

async fn finalize(State(state): State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Reply {
    let caller = authorize(&state, &headers)?;
    let body = body.map_err(body_error)?;
    let request: FinalizeRequest = parse_json(&headers, &body)?;
    if request.release.as_deref().is_some_and(|r| r.is_empty() || r.len() > MAX_RELEASE_BYTES) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("release must be 1 to {MAX_RELEASE_BYTES} bytes (or left out: the oldest release the members run)"),
        ));
    }
    match state.node.finalize_as(request, &caller).await {
        Ok(report) => Ok(axum::Json(report).into_response()),
        Err(e @ FinalizeError::Refused { .. }) => Err(error(StatusCode::CONFLICT, "refused", e)),
        Err(FinalizeError::Cluster(c)) => Err(cluster_error(&c)),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e)),
    }
}

async fn not_found(uri: Uri) -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no admin endpoint at {}; see GET /admin/flags, /admin/nodes, /admin/features, /admin/upgrade/status, /admin/audit, /_capabilities, /metrics, and the dashboard at /ui/",
            rollgate_util::shorten(uri.path())
        ),
    )
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not accept this method", rollgate_util::shorten(uri.path())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses_default_to_loopback() {
        assert_eq!(parse_addr(None).unwrap(), "127.0.0.1:9650".parse().unwrap());
        assert_eq!(parse_addr(Some("9700")).unwrap(), "127.0.0.1:9700".parse().unwrap());
        assert_eq!(parse_addr(Some("localhost:9700")).unwrap(), "127.0.0.1:9700".parse().unwrap());
        assert_eq!(parse_addr(Some("0.0.0.0:9700")).unwrap(), "0.0.0.0:9700".parse().unwrap());
        for bad in ["", "host:port", "99999", "localhost:x", &"9".repeat(300)] {
            assert!(parse_addr(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(same(&digest("abc"), &digest("abc")));
        assert!(!same(&digest("abc"), &digest("abd")));
    }
}

//! The HTTP API, served on `--admin`: the client API and rollgate's admin API.
//!
//! | method | path | answer | release |
//! |---|---|---|---|
//! | `PUT` | `/kv/{key}` (`?ttl_s=N` from 1.1, once flag `ttl` is enabled) | 200 JSON `{key, version, acks, members, quorum}` once a majority stored it | 1.0 |
//! | `GET` | `/kv/{key}` | 200 with the value as the body (`x-kv-version`, `x-kv-writer`, `x-kv-checksum` headers), 404 | 1.0 |
//! | `GET` | `/kv/{key}?consistency=session\|linearizable` with `x-kv-after: VERSION` (the session token) | as above, plus `x-kv-read` (the level served) and, on a 404, the `x-kv-version` of a tombstone held; 503 `behind` (session: the version did not arrive in time), 503 `no_quorum` (linearizable: no majority) | 2.0 |
//! | `DELETE` | `/kv/{key}` | 200 JSON, like `PUT` (stores a tombstone) | 1.0 |
//! | `GET` | `/kv?prefix=P&limit=N` | 200 JSON `{prefix, items: [{key, value or value_hex, version}], truncated}`, once every member publishes cluster feature `kv.prefix_scan`; 409 `feature_not_available` naming it before | 1.2 |
//! | `GET` | `/kv?prefix=P&limit=N&consistency=linearizable` | the scan confirmed by a majority (see [`crate::consistency`]) | 2.0 |
//! | `GET` | `/audit?limit=N` | 200 JSON `{plugin, entries}` with `--plugins audit`, once flag `record_meta_v2` is enabled; 503 `plugin_not_running` before | 1.2 |
//! | `GET` | `/health` | 200 when ready, else 503; JSON [`crate::node::Health`] | 1.0 |
//! | | `/_capabilities`, `/admin/...` | rollgate's admin API ([`rollgate::admin`]), mutations need the bearer token | 1.0 |
//!
//! A write may carry `x-kv-seen: WALL_MS.LOGICAL@NODE`, the highest version
//! the client has seen (from earlier writes' answers and reads'
//! `x-kv-version`): the node stamps the write above it, so a client's
//! later write to a key always wins over its earlier one, whichever nodes
//! took them. [`crate::client::KvClient`] sends it.
//!
//! Errors are JSON `{"error": {"code": "...", "message": "..."}}`
//! ([`ErrorBody`]), the shape of rollgate's admin API, so the listener
//! answers every error in one shape. The client API's codes: 400
//! (`bad_request`, `invalid_key`, `ttl_not_supported`), 404 (`not_found`),
//! 405 (`method_not_allowed`), 409 (`flag_not_enabled`,
//! `feature_not_available`), 413 (`key_too_long`, `value_too_large`), 503
//! (`catching_up`, `stopping`, `not_serving`, `no_quorum`, `superseded`,
//! `clock_skew`, `timeout`, `plugin_not_running`, `behind`),
//! 500 (`internal`, `corrupt_value`).
//!
//! Everything is bounded: body size ([`MAX_BODY_BYTES`]), request time,
//! connections at once, query strings. [`route_table`] lists every route
//! and its parameters in one place: the node publishes it, and
//! `/_capabilities` answers from it (the prefix scan route counts only
//! while the cluster has `kv.prefix_scan`).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use rollgate::admin::register::{RegisterError, Registered};
use rollgate::api::error::ErrorBody;
use rollgate::capabilities::{Route, RouteTable};

use crate::hlc::Version;
use crate::node::{Api, ReadAnswer, ReadLevel, ServingState, WriteError};
use crate::plugins::PluginState;
use crate::policy::PolicyError;
use crate::record::MAX_VALUE_BYTES;
use crate::releases::{PREFIX_SCAN, Release, TTL};

/// Largest request body: the largest value.
pub const MAX_BODY_BYTES: usize = MAX_VALUE_BYTES;
/// Longest query string accepted.
pub const MAX_QUERY_BYTES: usize = 256;
/// The header carrying the writer's highest seen version.
pub const SEEN_HEADER: &str = "x-kv-seen";
/// The header of a read carrying the version of the key the client has
/// seen (its session token for the key): the node answers that version or
/// a newer one (release 2.0).
pub const AFTER_HEADER: &str = "x-kv-after";
/// The header of a read's answer naming the level the node served it at
/// (`session` or `linearizable`; absent: a release without read levels,
/// which answers what it holds).
pub const READ_HEADER: &str = "x-kv-read";

/// Every client route of a node of `release` (with the audit plugin's when
/// `with_audit`), each registered once with its handler: the router serves
/// exactly what the route table publishes (the admin API's routes are
/// added by rollgate).
pub fn registered(release: &Release, with_audit: bool) -> Result<Registered<Api>, RegisterError> {
    let put = Route::new("PUT", "/kv/{key}");
    let put = if release.supports_flag(TTL.name) { put.parameters(["ttl_s"]) } else { put };
    let get = Route::new("GET", "/kv/{key}");
    let get = if release.has_read_levels() { get.parameters(["consistency"]) } else { get };
    let mut r = Registered::new()
        .route(get, get_key)?
        .route(put, put_key)?
        .route(Route::new("DELETE", "/kv/{key}"), delete_key)?;
    if release.has_feature(PREFIX_SCAN) {
        let params: &[&str] =
            if release.has_read_levels() { &["prefix", "limit", "consistency"] } else { &["prefix", "limit"] };
        r = r.route(Route::new("GET", "/kv").parameters(params.iter().copied()).requires_feature(PREFIX_SCAN), scan)?;
    }
    if with_audit {
        r = r.route(Route::new("GET", "/audit").parameters(["limit"]), audit)?;
    }
    r.route(Route::new("GET", "/health"), health)
}

/// Whether a node of `release` started with `plugins` serves the audit plugin's route.
fn serves_audit(release: &Release, plugins: &[String]) -> bool {
    let name = crate::releases::AUDIT.name;
    plugins.iter().any(|p| p == name) && release.plugin(name).is_some()
}

/// Every route a node of `release` serves with `plugins`: what it
/// publishes in its node record and what `/_capabilities` answers from.
pub fn route_table(release: &Release, plugins: &[String]) -> Result<RouteTable, RegisterError> {
    Ok(registered(release, serves_audit(release, plugins))?.into_parts().1)
}

/// The client routes of a node (answering unknown paths with the list of routes).
pub fn client_routes(api: Api) -> Router {
    let not_found_api = api.clone();
    routes(api).fallback(move |req: Request| not_found(not_found_api.clone(), req))
}

fn routes(api: Api) -> Router {
    let router = match registered(api.release(), api.audit().is_some()) {
        Ok(r) => r.into_parts().0,
        // The same registration built the node's route table at start-up.
        Err(e) => unreachable!("the node's routes were registered at start-up: {e}"),
    };
    router.method_not_allowed_fallback(method_not_allowed).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(api)
}

/// The HTTP app of a node: the client routes, rollgate's admin API (`admin`,
/// at `/_capabilities` and `/admin/...`) on the same listener, and a bound
/// on request time.
pub fn app(api: Api, admin: Router, request_timeout: Duration) -> Router {
    let not_found_api = api.clone();
    // The admin router's own fallback is replaced by the node's, which lists both APIs.
    routes(api)
        .merge(admin)
        .fallback(move |req: Request| not_found(not_found_api.clone(), req))
        .layer(middleware::from_fn(move |req: Request, next: Next| bounded(req, next, request_timeout)))
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

/// A JSON error answer: an [`ErrorBody`], as rollgate's admin API answers.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(ErrorBody::new(code, message))).into_response()
}

fn write_error(e: WriteError) -> Response {
    let status_code = |e: &WriteError| match e {
        WriteError::NotReady { state: ServingState::CatchingUp, .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "catching_up")
        }
        WriteError::NotReady { .. } => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
        WriteError::NotServing { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_serving"),
        WriteError::Policy(PolicyError::TtlUnsupported { .. }) => (StatusCode::BAD_REQUEST, "ttl_not_supported"),
        WriteError::Policy(PolicyError::TtlNotEnabled) => (StatusCode::CONFLICT, "flag_not_enabled"),
        WriteError::Policy(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        WriteError::InvalidKey { too_long: true, .. } => (StatusCode::PAYLOAD_TOO_LARGE, "key_too_long"),
        WriteError::InvalidKey { .. } => (StatusCode::BAD_REQUEST, "invalid_key"),
        WriteError::ValueTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
        WriteError::NoQuorum { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_quorum"),
        WriteError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        WriteError::Corrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt_value"),
        WriteError::ClockSkew { .. } => (StatusCode::SERVICE_UNAVAILABLE, "clock_skew"),
        WriteError::Superseded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "superseded"),
        WriteError::Behind { .. } => (StatusCode::SERVICE_UNAVAILABLE, "behind"),
        WriteError::InvalidAfter { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
        WriteError::NoReadQuorum { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_quorum"),
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
                        rollgate::util::shorten_to(value, 32)
                    ));
                }
            },
            "ttl_s" => return Err("ttl_s is given twice".into()),
            other => {
                return Err(format!(
                    "unknown parameter {:?}: PUT /kv/{{key}} accepts ttl_s",
                    rollgate::util::shorten_to(other, 32)
                ));
            }
        }
    }
    Ok(ttl)
}

/// The version in header `name` (`x-kv-seen` of a write, `x-kv-after` of
/// a read), when given. The error is the message of a 400.
fn version_header(headers: &HeaderMap, name: &str) -> Result<Option<Version>, String> {
    let Some(v) = headers.get(name) else { return Ok(None) };
    let parsed =
        v.to_str().map_err(|_| "not ASCII".to_string()).and_then(|s| s.parse::<Version>().map_err(|e| e.to_string()));
    parsed.map(Some).map_err(|e| format!("header {name}: {e}"))
}

async fn put_key(
    State(api): State<Api>,
    key: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = match key {
        Ok(Path(k)) => k,
        Err(e) => return path_error(e),
    };
    let seen = match version_header(&headers, SEEN_HEADER) {
        Ok(s) => s,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
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
    match api.write(key, Some(body.to_vec()), ttl_s, seen.as_ref()).await {
        Ok(outcome) => axum::Json(outcome).into_response(),
        Err(e) => write_error(e),
    }
}

async fn delete_key(
    State(api): State<Api>,
    key: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let key = match key {
        Ok(Path(k)) => k,
        Err(e) => return path_error(e),
    };
    let seen = match version_header(&headers, SEEN_HEADER) {
        Ok(s) => s,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    if query.as_deref().is_some_and(|q| !q.is_empty()) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "DELETE /kv/{key} takes no parameters");
    }
    match api.write(key, None, None, seen.as_ref()).await {
        Ok(outcome) => axum::Json(outcome).into_response(),
        Err(e) => write_error(e),
    }
}

/// The read level and session token of a `GET /kv/{key}` (release 2.0;
/// older releases ignore both). The error is the message of a 400.
fn read_request(api: &Api, query: Option<&str>, headers: &HeaderMap) -> Result<(ReadLevel, Option<Version>), String> {
    if !api.release().has_read_levels() {
        return Ok((ReadLevel::Session, None));
    }
    let params = parse_query(query, &["consistency"], "GET /kv/{key}")?;
    let level = params.get("consistency").map(|c| c.parse::<ReadLevel>()).transpose()?.unwrap_or_default();
    Ok((level, version_header(headers, AFTER_HEADER)?))
}

async fn get_key(
    State(api): State<Api>,
    key: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let key = match key {
        Ok(Path(k)) => k,
        Err(e) => return path_error(e),
    };
    let (level, after) = match read_request(&api, query.as_deref(), &headers) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    let levels = api.release().has_read_levels();
    let mut r = match api.read(&key, level, after.as_ref()).await {
        Ok(ReadAnswer { record: Some(record), .. }) => found(record),
        Ok(ReadAnswer { record: None, held }) => {
            let mut r = error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("key {:?} not found", rollgate::util::shorten_to(&key, 96)),
            );
            // The version of a tombstone or an expired value, for the client's session check.
            if let Some(v) = held.filter(|_| levels).and_then(|v| HeaderValue::from_str(&v.to_string()).ok()) {
                r.headers_mut().insert("x-kv-version", v);
            }
            r
        }
        Err(e) => return write_error(e),
    };
    if levels {
        r.headers_mut().insert(READ_HEADER, HeaderValue::from_static(level.as_str()));
    }
    r
}

/// A 200 answer with the value of `record` and its headers.
fn found(record: crate::record::Record) -> Response {
    let version = HeaderValue::from_str(&record.version.to_string()).unwrap_or(HeaderValue::from_static("?"));
    // The writer from meta@2, else meta@1: `node`, `node release` or `node (meta@1)`.
    let writer = match record.writer() {
        Ok(Some(w)) => match (&w.release, w.from.as_str()) {
            (Some(r), _) => format!("{} {r}", w.node),
            (None, from) => format!("{} ({from})", w.node),
        },
        _ => "unknown".into(),
    };
    let checksum = if record.features.contains(&crate::record::CHECKSUM_V1) { "verified" } else { "absent" };
    let value = record.value.unwrap_or_default();
    let mut r = (StatusCode::OK, value).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    r.headers_mut().insert("x-kv-version", version);
    if let Ok(w) = HeaderValue::from_str(&writer) {
        r.headers_mut().insert("x-kv-writer", w);
    }
    r.headers_mut().insert("x-kv-checksum", HeaderValue::from_static(checksum));
    r
}

async fn health(State(api): State<Api>) -> Response {
    let mut h = api.health();
    let status = if h.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    h.storage = api.storage_status().await.ok();
    (status, axum::Json(h)).into_response()
}

/// Parses a query of `name=value` pairs: only `allowed` names, each once,
/// values percent-decoded. The error is the message of a 400 `bad_request`.
fn parse_query(query: Option<&str>, allowed: &[&str], what: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let Some(q) = query.filter(|q| !q.is_empty()) else { return Ok(out) };
    if q.len() > MAX_SCAN_QUERY_BYTES {
        return Err(format!("the query is over {MAX_SCAN_QUERY_BYTES} bytes"));
    }
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            let plus = s.replace('+', " ");
            percent_decode(&plus).ok_or_else(|| {
                format!("{what}: the parameter {:?} is not percent-encoded UTF-8", rollgate::util::shorten_to(s, 32))
            })
        };
        let name = decode(name)?;
        if !allowed.contains(&name.as_str()) {
            return Err(format!(
                "unknown parameter {:?}: {what} accepts {}",
                rollgate::util::shorten_to(&name, 32),
                allowed.join(", ")
            ));
        }
        if out.insert(name.clone(), decode(value)?).is_some() {
            return Err(format!("{name} is given twice"));
        }
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_limit(params: &BTreeMap<String, String>, default: usize, max: usize) -> Result<usize, String> {
    match params.get("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "limit must be a whole number from 1 to {max}, got {:?}",
                rollgate::util::shorten_to(v, 32)
            )),
        },
    }
}

/// Longest query string of a prefix scan (a prefix is at most a key long, percent-encoded).
pub const MAX_SCAN_QUERY_BYTES: usize = 3 * crate::record::MAX_KEY_BYTES + 64;

async fn scan(State(api): State<Api>, RawQuery(query): RawQuery) -> Response {
    let levels = api.release().has_read_levels();
    let allowed: &[&str] = if levels { &["prefix", "limit", "consistency"] } else { &["prefix", "limit"] };
    let params = match parse_query(query.as_deref(), allowed, "GET /kv") {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    if !api.cluster_has_feature(PREFIX_SCAN) {
        return error(
            StatusCode::CONFLICT,
            "feature_not_available",
            format!(
                "GET /kv?prefix= needs cluster feature `{PREFIX_SCAN}`, which not every member publishes yet (without \
                 it: {}): upgrade those nodes to release 1.2 or later (or forget the ones gone for good); \
                 `GET /_capabilities?path=/kv&parameters=prefix` says when it is available",
                api.members_without(PREFIX_SCAN).join(", ")
            ),
        );
    }
    let prefix = params.get("prefix").cloned().unwrap_or_default();
    if prefix.len() > crate::record::MAX_KEY_BYTES || prefix.chars().any(char::is_control) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the prefix must be at most a key long, without control characters",
        );
    }
    let limit = match parse_limit(&params, 100, crate::node::MAX_SCAN_LIMIT) {
        Ok(n) => n,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    let level = match params.get("consistency").map(|c| c.parse::<ReadLevel>()).transpose() {
        Ok(l) => l.unwrap_or_default(),
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    let scanned = match level {
        ReadLevel::Linearizable => api.scan_prefix_linearizable(&prefix, limit).await,
        ReadLevel::Session => api.scan_prefix(&prefix, limit).await,
    };
    match scanned {
        Ok((entries, truncated)) => {
            let items: Vec<serde_json::Value> = entries
                .into_iter()
                .map(|e| {
                    let value = e.record.value.unwrap_or_default();
                    let version = e.record.version.to_string();
                    match String::from_utf8(value) {
                        Ok(text) => json!({"key": e.key, "value": text, "version": version}),
                        Err(bytes) => json!({"key": e.key, "value_hex": hex(bytes.as_bytes()), "version": version}),
                    }
                })
                .collect();
            let mut r = axum::Json(json!({"prefix": prefix, "items": items, "truncated": truncated})).into_response();
            if levels {
                r.headers_mut().insert(READ_HEADER, HeaderValue::from_static(level.as_str()));
            }
            r
        }
        Err(e) => write_error(e),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn audit(State(api): State<Api>, RawQuery(query): RawQuery) -> Response {
    let Some(plugin) = api.audit().cloned() else {
        return error(StatusCode::NOT_FOUND, "not_found", "the audit plugin is not configured (--plugins audit)");
    };
    let params = match parse_query(query.as_deref(), &["limit"], "GET /audit") {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    let limit = match parse_limit(&params, 100, crate::plugins::MAX_AUDIT_LIMIT) {
        Ok(n) => n,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    match plugin.state() {
        PluginState::Running => {
            axum::Json(json!({"plugin": plugin.name(), "entries": plugin.recent(limit)})).into_response()
        }
        PluginState::Waiting { reason } => error(StatusCode::SERVICE_UNAVAILABLE, "plugin_not_running", reason),
    }
}

async fn not_found(api: Api, req: Request) -> Response {
    let table = route_table(api.release(), &api.plugin_names()).unwrap_or_default();
    let routes: BTreeMap<&str, Vec<&str>> = table.routes.iter().fold(BTreeMap::new(), |mut m, r| {
        m.entry(r.path.as_str()).or_default().push(r.method.as_str());
        m
    });
    let list: Vec<String> = routes.iter().map(|(p, ms)| format!("{} {p}", ms.join("|"))).collect();
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {} {}: the API is {}, and rollgate's admin API (GET /admin/flags, /admin/nodes, \
             /admin/features, /admin/upgrade/status, /_capabilities; POST /admin/flags/enable, /admin/flags/disable; \
             DELETE /admin/nodes/{{id}})",
            req.method(),
            rollgate::util::shorten_to(req.uri().path(), 96),
            list.join(", ")
        ),
    )
}

async fn method_not_allowed(req: Request) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), rollgate::util::shorten_to(req.uri().path(), 96)),
    )
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
    fn every_route_is_listed_once_and_follows_the_release() {
        for release in crate::releases::RELEASES {
            let t = route_table(release, &["audit".to_string()]).unwrap();
            t.check().unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for r in &t.routes {
                assert!(seen.insert((r.method.clone(), r.path.clone())), "{r:?}");
            }
            let scan = t.routes.iter().find(|r| r.path == "/kv");
            assert_eq!(scan.is_some(), release.has_feature(PREFIX_SCAN), "{release}");
            if let Some(scan) = scan {
                assert_eq!(scan.requires_feature.as_deref(), Some(PREFIX_SCAN));
            }
            let put = t.routes.iter().find(|r| r.method == "PUT").unwrap();
            assert_eq!(put.parameters.contains("ttl_s"), release.supports_flag(TTL.name), "{release}");
            assert_eq!(t.routes.iter().any(|r| r.path == "/audit"), !release.plugins.is_empty(), "{release}");
        }
    }

    #[test]
    fn scan_queries_are_parsed_strictly() {
        let ok = parse_query(Some("prefix=user%2F&limit=5"), &["prefix", "limit"], "GET /kv").unwrap();
        assert_eq!((ok["prefix"].as_str(), ok["limit"].as_str()), ("user/", "5"));
        assert_eq!(parse_limit(&ok, 100, 1000), Ok(5));
        for bad in ["prefix=a&prefix=b", "other=1", "prefix=%ZZ", "prefix=%FF", &"p".repeat(MAX_SCAN_QUERY_BYTES + 1)] {
            assert!(parse_query(Some(bad), &["prefix", "limit"], "GET /kv").is_err(), "{bad}");
        }
        for bad in ["0", "1001", "-1", "x"] {
            let q = parse_query(Some(&format!("limit={bad}")), &["limit"], "GET /audit").unwrap();
            assert!(parse_limit(&q, 100, 1000).is_err(), "{bad}");
        }
    }
}

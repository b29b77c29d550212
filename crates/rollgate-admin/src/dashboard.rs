//! The dashboard: `GET /ui/` on the admin listener. No build step: one
//! HTML page, a script and a style sheet compiled into the binary
//! (`src/ui/`), served with a strict content security policy (scripts and
//! styles from this origin only, no inline script). The page embeds the
//! state ([`DashboardState`], also at `GET /ui/state`) and follows
//! `GET /ui/events`, a server-sent event stream that sends the state again
//! when the cluster view changes and every few seconds (links, migration
//! progress), at most once per `event_min_interval` per stream and with at
//! most `max_event_streams` streams open at once (more are refused with
//! 503 and a message). Enabling and disabling from the page call the admin
//! API with the token the operator types (kept in the tab's session storage
//! only when asked); irreversible flags need an explicit confirmation.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use rollgate_api::dashboard::{DashboardFlag, DashboardState};
use rollgate_api::flags::{EnableRequest, FlagPhase};
use rollgate_api::upgrade::{MigrationsSection, NodeIdentity, StoreReachability};
use rollgate_runtime::cluster::ClusterView;
use rollgate_runtime::node::Node;

use crate::fanout::MemberClient;
use crate::links::links;
pub use crate::links::{LINKS_TIMEOUT, MAX_LINKS_ANSWER_BYTES};
use crate::{AppState, error};

/// Event streams open at once by default.
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 16;
/// Shortest time between two events of one stream by default.
pub const DEFAULT_EVENT_MIN_INTERVAL: Duration = Duration::from_millis(500);
/// A stream sends the state at least this often (links and migration
/// progress change without a view change).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);
/// Audit entries the page shows.
pub const AUDIT_ENTRIES: usize = 20;

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/app.js", get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/ui/app.css", get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }))
        .route("/ui/state", get(state_json))
        .route("/ui/events", get(events))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// JSON safe inside a `<script type="application/json">` element.
fn embeddable_json(state: &DashboardState) -> String {
    serde_json::to_string(state)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

async fn index(State(app): State<AppState>) -> Response {
    let state = build(&app.node, &app.http).await;
    let body = INDEX_HTML.replace("__STATE__", &embeddable_json(&state));
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

async fn state_json(State(app): State<AppState>) -> Response {
    axum::Json(build(&app.node, &app.http).await).into_response()
}

async fn events(State(app): State<AppState>) -> Response {
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!(
                "{} dashboard event streams are open already, the most this node serves: close other dashboard tabs, or use GET /ui/state",
                app.max_streams
            ),
        )
        .into_response();
    };
    let views = app.node.handle().watch_view();
    let start = (app, views, permit, None::<Instant>);
    let stream = futures::stream::unfold(start, |(app, mut views, permit, last)| async move {
        if let Some(last) = last {
            tokio::select! {
                changed = views.changed() => if changed.is_err() { return None },
                _ = tokio::time::sleep(REFRESH_INTERVAL) => {}
            }
            // At most one event per interval, however often the view changes.
            tokio::time::sleep_until((last + app.event_min_interval).into()).await;
        }
        views.borrow_and_update();
        let state = build(&app.node, &app.http).await;
        let event = Event::default().event("state").json_data(&state).unwrap_or_else(|e| {
            Event::default().event("error").data(format!("cannot encode the dashboard state: {e}"))
        });
        Some((Ok::<_, Infallible>(event), (app, views, permit, Some(Instant::now()))))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// Each disabled flag with what blocks enabling it (each blocker names its fix).
fn flags(node: &Node, view: &ClusterView) -> Vec<DashboardFlag> {
    crate::view::flag_statuses_in(node, view)
        .into_iter()
        .map(|status| {
            let blockers = if status.state == FlagPhase::Disabled {
                // The page asks before enabling an experimental flag, so that is no blocker here.
                let request = EnableRequest::flags([status.name.clone()]).experimental();
                node.plan_enable_in(view, &request).blockers.iter().map(|b| b.to_string()).collect()
            } else {
                Vec::new()
            };
            DashboardFlag { status, blockers }
        })
        .collect()
}

/// Every running member's links: this node's from the service, the others'
/// from their admin API (bounded by [`LINKS_TIMEOUT`]).
/// The dashboard's state, from `node`'s view, the store and the members.
pub async fn build(node: &Node, http: &MemberClient) -> DashboardState {
    let view = node.view();
    let status = node.handle().status();
    let root = node.cluster().keys().root().to_string();
    let (links, migrations, audit) = tokio::join!(
        links(node, http, &view),
        rollgate_runtime::migrate::cluster_status(node.cluster().store().as_ref(), &root),
        node.audit_log(AUDIT_ENTRIES),
    );
    let migrations = match migrations {
        Ok(mut m) => {
            node.complete_service_status(&mut m);
            MigrationsSection::Status(m)
        }
        Err(e) => MigrationsSection::Unreadable { error: e.to_string() },
    };
    let audit = audit.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the dashboard cannot read the audit log");
        Vec::new()
    });
    DashboardState {
        cluster_id: view.cluster_id.clone(),
        epoch: view.epoch,
        node: NodeIdentity { node_id: node.id().to_string(), release: node.release().to_string() },
        store: StoreReachability { reachable: status.reachable, last_error: status.last_error },
        nodes: crate::view::node_statuses_in(node, &view),
        links,
        flags: flags(node, &view),
        migrations,
        releases: node.config().releases.as_ref().map(|t| t.names()).unwrap_or_default(),
        audit,
        release_floor: view.floor.clone(),
        generated_ms: rollgate_util::now_ms(),
    }
}

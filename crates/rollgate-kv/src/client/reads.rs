//! [`KvClient::read`]'s loop: failover between the nodes, and the checks of
//! each answer against the session token and the level asked for (see the
//! module docs of [`crate::client`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};

use super::base::{ClientError, ReadLevel, ReadResult, Token, describe, error_body, read_bounded, rotation};
use crate::hlc::Version;
use crate::http::{AFTER_HEADER, READ_HEADER};
use crate::record::MAX_VALUE_BYTES;

/// What a read goes through: the client's HTTP client, its nodes and where
/// to start among them, its retry rounds, its count of stale answers.
pub(super) struct Via<'a> {
    pub(super) http: &'a reqwest::Client,
    pub(super) nodes: &'a [Url],
    pub(super) next: &'a AtomicUsize,
    pub(super) rounds: usize,
    pub(super) round_backoff: Duration,
    pub(super) stale: &'a AtomicU64,
}

/// What a read found.
pub(super) struct Found {
    pub(super) value: Option<Vec<u8>>,
    pub(super) version: Option<Version>,
    node: String,
    served_at: Option<ReadLevel>,
}

impl From<Found> for ReadResult {
    fn from(f: Found) -> ReadResult {
        ReadResult { value: f.value, version: f.version, node: f.node, served_at: f.served_at }
    }
}

/// What to make of one node's answer.
enum Verdict {
    /// The answer.
    Take(Found),
    /// Older than the session token: ask another node.
    Stale(String),
    /// "Not found" from a node that cannot say which version it holds, while
    /// the token is a value: stale, unless every node says so.
    NotFoundUnsure(Found),
    /// The node does not serve the level (an older release).
    Unsupported(String),
    /// The node cannot serve now (503, 5xx): ask another node.
    Retry(String),
    /// Refused for good (a 4xx): no other node would do better.
    Refused(ClientError),
}

/// Reads `key` at `level`, checking each answer against `token`.
pub(super) async fn read(
    c: &Via<'_>,
    key: &str,
    level: ReadLevel,
    token: Option<&Token>,
) -> Result<Found, ClientError> {
    let mut errors = Vec::new();
    let mut attempts = 0;
    let rounds = c.rounds.max(1);
    for round in 0..rounds {
        let nodes = c.nodes;
        let start = c.next.load(Ordering::Relaxed);
        let mut unsure = Vec::new();
        let mut unsupported = Vec::new();
        for (idx, node, mut url) in rotation(nodes, start, key) {
            if level == ReadLevel::Linearizable {
                url.query_pairs_mut().append_pair("consistency", level.as_str());
            }
            let mut req = c.http.request(Method::GET, url);
            if let Some(t) = token {
                req = req.header(AFTER_HEADER, t.version.to_string());
            }
            attempts += 1;
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{node}: {}", describe(&e)));
                    continue;
                }
            };
            match judge(node.clone(), resp, level, token).await {
                Verdict::Take(found) => {
                    c.next.store(idx, Ordering::Relaxed);
                    c.stale.fetch_add(unsure.len() as u64, Ordering::Relaxed);
                    return Ok(found);
                }
                Verdict::Stale(why) => {
                    c.stale.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%node, %why, "stale answer refused");
                    errors.push(format!("{node}: {why}"));
                }
                Verdict::NotFoundUnsure(found) => {
                    errors.push(format!("{node}: not found, although this client has seen a value of the key"));
                    unsure.push(found);
                }
                Verdict::Unsupported(why) => {
                    errors.push(format!("{node}: {why}"));
                    unsupported.push(format!("{node} ({why})"));
                }
                Verdict::Retry(why) => errors.push(format!("{node}: {why}")),
                Verdict::Refused(e) => return Err(e),
            }
        }
        // Every node says "not found": a majority holds the token's version
        // or a newer one, so the key was deleted (or expired) since.
        if unsure.len() == nodes.len()
            && let Some(found) = unsure.into_iter().next()
        {
            return Ok(found);
        }
        if unsupported.len() == nodes.len() {
            return Err(ClientError::Unsupported { level: level.as_str(), nodes: unsupported });
        }
        if round + 1 < rounds {
            tokio::time::sleep(c.round_backoff * (round as u32 + 1)).await;
        }
    }
    Err(ClientError::Unavailable { attempts, errors })
}

/// What to make of `node`'s answer (see [`Verdict`]).
async fn judge(node: String, resp: reqwest::Response, level: ReadLevel, token: Option<&Token>) -> Verdict {
    let status = resp.status();
    if status != StatusCode::OK && status != StatusCode::NOT_FOUND {
        let retry = status == StatusCode::SERVICE_UNAVAILABLE || status.is_server_error();
        let (code, message) = error_body(&node, resp).await;
        if retry {
            return Verdict::Retry(format!("{} {code}: {message}", status.as_u16()));
        }
        return Verdict::Refused(ClientError::Refused { node, status: status.as_u16(), code, message });
    }
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let served_at = header(READ_HEADER).and_then(|l| l.parse::<ReadLevel>().ok());
    let version = header("x-kv-version").and_then(|v| v.parse::<Version>().ok());
    if level == ReadLevel::Linearizable && served_at != Some(ReadLevel::Linearizable) {
        return Verdict::Unsupported("its release has no linearizable reads".into());
    }
    let below_token = |v: &Option<Version>| token.is_some_and(|t| v.as_ref().is_none_or(|v| *v < t.version));
    if status == StatusCode::OK {
        if below_token(&version) {
            return Verdict::Stale(format!(
                "answered version {}, older than version {} this client has seen",
                version.map_or_else(|| "(none)".to_string(), |v| v.to_string()),
                token.map(|t| t.version.to_string()).unwrap_or_default()
            ));
        }
        return match read_bounded(&node, resp, MAX_VALUE_BYTES).await {
            Ok(value) => Verdict::Take(Found { value: Some(value), version, node, served_at }),
            Err(e) => Verdict::Retry(e.to_string()),
        };
    }
    let found = Found { value: None, version: version.clone(), node, served_at };
    match token {
        // A node with read levels answers "not found" only at the token's version or a newer one.
        Some(t) if t.lasting_value && below_token(&version) && served_at.is_none() => Verdict::NotFoundUnsure(found),
        Some(t) if t.lasting_value && below_token(&version) => Verdict::Stale(format!(
            "answered not found at version {}, older than the value this client has seen (version {})",
            version.map_or_else(|| "(none)".to_string(), |v| v.to_string()),
            t.version
        )),
        _ => Verdict::Take(found),
    }
}

//! The `_capabilities` fan-out: asks every running member over HTTP, in
//! parallel and each within a timeout, answers for stopped members from the
//! route tables they published, and combines the answers (see
//! `rollgate_runtime::capabilities` for the rules).

use std::time::Duration;

use rollgate_api::routes::{AnswerSource, CapabilityQuery, MemberAnswer, RouteTable, combine};
use rollgate_runtime::capabilities::supports_in;
use rollgate_runtime::cluster::ClusterView;
use serde::Deserialize;

/// Largest answer body read from a member.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How a node calls the other members' admin APIs: over HTTP, or over
/// HTTPS with the cluster CA (and its own certificate as the client's).
#[derive(Clone, Debug)]
pub struct MemberClient {
    pub(crate) http: reqwest::Client,
    pub(crate) scheme: &'static str,
}

impl MemberClient {
    /// Plain HTTP (members on loopback, tests).
    pub fn plain() -> Self {
        MemberClient { http: build(rollgate_net::tls::plain_client()), scheme: "http" }
    }

    /// HTTPS with `config` (e.g. [`rollgate_net::tls::NodeTls::http_client`]).
    pub fn https(config: &rustls::ClientConfig) -> Self {
        MemberClient { http: build(config.clone()), scheme: "https" }
    }

    /// The scheme of the members' URLs.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The HTTP client, for a member's route this module has no call for.
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }
}

fn build(tls: rustls::ClientConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("a client with a ready rustls configuration and no other option builds")
}

/// The query string of this query, for asking another node
/// (`local_only=true` added).
fn to_url(query: &CapabilityQuery, scheme: &str, admin_addr: &str) -> Option<reqwest::Url> {
    let mut url = reqwest::Url::parse(&format!("{scheme}://{admin_addr}/_capabilities")).ok()?;
    if url.path() != "/_capabilities" || url.query().is_some() || url.username() != "" {
        return None;
    }
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("method", &query.method);
        q.append_pair("path", &query.path);
        if !query.parameters.is_empty() {
            q.append_pair("parameters", &query.parameters.iter().cloned().collect::<Vec<_>>().join(","));
        }
        if !query.capabilities.is_empty() {
            q.append_pair("capabilities", &query.capabilities.iter().cloned().collect::<Vec<_>>().join(","));
        }
        q.append_pair("local_only", "true");
    }
    Some(url)
}

#[derive(Deserialize)]
struct Answer {
    supported: Option<bool>,
}

/// Asks one running member over HTTP; `None` on any failure.
async fn ask(client: &MemberClient, admin_addr: &str, query: &CapabilityQuery, timeout: Duration) -> Option<bool> {
    let url = to_url(query, client.scheme, admin_addr)?;
    let work = async {
        let mut resp = client.http.get(url).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.ok()? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return None;
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice::<Answer>(&body).ok()?.supported
    };
    tokio::time::timeout(timeout, work).await.ok().flatten()
}

/// Answers `query` for every member of `view`: `me` from `local`, the other
/// running members over HTTP in parallel (each within `timeout`), stopped
/// members from their published tables. Returns the combined answer and
/// each member's (only those collected before a definite "no", which ends
/// the wait).
pub async fn fan_out(
    client: &MemberClient,
    view: &ClusterView,
    me: &str,
    local: &RouteTable,
    query: &CapabilityQuery,
    timeout: Duration,
) -> (Option<bool>, Vec<MemberAnswer>) {
    let asks = view.members.values().map(|m| async move {
        let id = m.record.node_id.clone();
        if id == me {
            return MemberAnswer {
                node_id: id,
                supported: Some(supports_in(local, query, view)),
                source: AnswerSource::Local,
            };
        }
        if m.is_running() {
            let supported = ask(client, &m.record.admin_addr, query, timeout).await;
            return MemberAnswer { node_id: id, supported, source: AnswerSource::Http };
        }
        let supported = m.record.routes.as_ref().filter(|t| t.check().is_ok()).map(|t| supports_in(t, query, view));
        MemberAnswer { node_id: id, supported, source: AnswerSource::PublishedTable }
    });
    // A definite "no" decides: the answer is returned without waiting for
    // slower members (their entries are then missing from the list).
    let mut pending: futures::stream::FuturesUnordered<_> = asks.collect();
    let mut answers = Vec::with_capacity(view.members.len() + 1);
    while let Some(answer) = futures::StreamExt::next(&mut pending).await {
        let no = answer.supported == Some(false);
        answers.push(answer);
        if no {
            return (Some(false), answers);
        }
    }
    answers.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    if !view.members.contains_key(me) {
        answers.push(MemberAnswer {
            node_id: me.to_string(),
            supported: Some(supports_in(local, query, view)),
            source: AnswerSource::Local,
        });
    }
    (combine(answers.iter().map(|a| a.supported)), answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(method: &str, path: &str, params: &str, caps: &str) -> CapabilityQuery {
        CapabilityQuery::parse(Some(method), Some(path), Some(params), Some(caps)).unwrap()
    }

    #[test]
    fn the_member_url_is_built_safely() {
        let query = q("GET", "/kv/a&local_only=false", "x", "");
        let url = to_url(&query, "http", "127.0.0.1:9000").unwrap();
        assert_eq!(url.path(), "/_capabilities");
        let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
        assert_eq!(pairs[1], ("path".into(), "/kv/a&local_only=false".into()), "the path is encoded, not injected");
        assert!(url.query().unwrap().contains("local_only=true"));
        assert!(to_url(&query, "http", "127.0.0.1:9000/evil?").is_none());
        assert!(to_url(&query, "http", "user@127.0.0.1:9000").is_none());
    }
}

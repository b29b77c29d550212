//! Every running member's peer links, for the dashboard and the upgrade
//! status: this node's own from its service, the others' asked over their
//! admin API (`GET /admin/links`), each answer bounded in time and size.

use std::time::Duration;

use rollgate_api::dashboard::MemberLinks;
use rollgate_api::links::LinkReport;
use rollgate_runtime::cluster::ClusterView;
use rollgate_runtime::node::Node;

use crate::fanout::MemberClient;

/// How long a member may take to answer `GET /admin/links`.
pub const LINKS_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest `GET /admin/links` answer read from a member.
pub const MAX_LINKS_ANSWER_BYTES: usize = 1024 * 1024;

/// Every running member's links: this node's own, the others' asked over
/// their admin API (HTTP or HTTPS, as `http` speaks).
pub async fn links(node: &Node, http: &MemberClient, view: &ClusterView) -> Vec<MemberLinks> {
    let asks = view.running().map(|m| {
        let (id, addr) = (m.record.node_id.clone(), m.record.admin_addr.clone());
        async move {
            if id == node.id() {
                return MemberLinks { node_id: id, links: node.links().links, error: None };
            }
            match ask_links(http, &addr).await {
                Ok(r) => MemberLinks { node_id: id, links: r.links, error: None },
                Err(e) => MemberLinks { node_id: id, links: Vec::new(), error: Some(e) },
            }
        }
    });
    futures::future::join_all(asks).await
}

async fn ask_links(http: &MemberClient, addr: &str) -> Result<LinkReport, String> {
    if addr.is_empty() {
        return Err("it published no admin address".into());
    }
    let url = format!("{}://{addr}/admin/links", http.scheme());
    let mut resp =
        http.http.get(&url).timeout(LINKS_TIMEOUT).send().await.map_err(|e| format!("cannot ask it: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("it answered {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("cannot read its answer: {e}"))? {
        if body.len() + chunk.len() > MAX_LINKS_ANSWER_BYTES {
            return Err(format!("its answer is larger than {MAX_LINKS_ANSWER_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice::<LinkReport>(&body).map_err(|e| format!("its answer does not decode: {e}"))
}

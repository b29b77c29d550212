//! The demo's final check: every acknowledged write readable from every node.

use std::sync::Arc;
use std::time::Duration;

use super::Slot;
use super::load::Expected;
use crate::client::{ClientOptions, KvClient};

/// Reads every expected key from every node (each node's own answer, no
/// failover). Returns the number of keys wrong somewhere and a few examples.
pub(super) async fn verify(
    slots: &[Slot],
    expected: &Expected,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> (u64, Vec<String>) {
    let nodes: Vec<(String, String)> = slots.iter().map(|s| (s.id.clone(), s.admin.clone())).collect();
    let (wrong, examples) = verify_keys(&nodes, expected, tls).await;
    (wrong.len() as u64, examples)
}

/// Reads every expected key from every node of `nodes` (name, HTTP address),
/// each node's own answer. Returns the keys wrong somewhere (all of them
/// when a node's address is unusable) and a few examples.
pub(super) async fn verify_keys(
    nodes: &[(String, String)],
    expected: &Expected,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> (Vec<String>, Vec<String>) {
    let mut clients = Vec::new();
    for (id, addr) in nodes {
        let c = KvClient::new(
            &[addr.as_str()],
            ClientOptions {
                rounds: 2,
                round_backoff: Duration::from_millis(50),
                tls: tls.clone(),
                ..ClientOptions::default()
            },
        );
        match c {
            Ok(c) => clients.push((id.clone(), Arc::new(c))),
            Err(e) => return (expected.keys().cloned().collect(), vec![format!("client for {id}: {e}")]),
        }
    }
    let entries: Vec<(String, Option<Vec<u8>>)> = expected.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut lost = Vec::new();
    let mut examples = Vec::new();
    for chunk in entries.chunks(64) {
        let checks = chunk.iter().map(|(key, want)| {
            let clients = clients.clone();
            async move {
                let mut wrong = Vec::new();
                for (id, c) in &clients {
                    match c.get(key).await {
                        Ok(got) if got == *want => {}
                        Ok(got) => wrong.push(format!(
                            "{id} returns {} for {key}, the last acknowledged write {}",
                            describe(got.as_deref()),
                            describe(want.as_deref())
                        )),
                        Err(e) => wrong.push(format!("{id} cannot read {key}: {e}")),
                    }
                }
                (key, wrong)
            }
        });
        for (key, wrong) in futures::future::join_all(checks).await {
            if !wrong.is_empty() {
                lost.push(key.clone());
                if examples.len() < 10 {
                    examples.extend(wrong);
                }
            }
        }
    }
    (lost, examples)
}

fn describe(v: Option<&[u8]>) -> String {
    match v {
        None => "nothing (deleted)".into(),
        Some(b) => format!("{:?}", rollgate::util::shorten_to(&String::from_utf8_lossy(b), 40)),
    }
}

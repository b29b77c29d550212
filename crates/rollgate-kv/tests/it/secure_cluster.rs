//! A secure three-node cluster through rollgate-kv's own wiring: nodes with
//! certificates of one CA, a cluster secret and signed releases. The signed
//! release extension of the handshake works inside TLS (each link carries
//! the peer's digest and runs mutual TLS), and the operator's view (the
//! dashboard, whose links come from the other members over HTTPS, and
//! `/metrics`) is served by the same HTTPS listener as the client API.

use std::path::Path;
use std::time::{Duration, Instant};

use rollgate::handshake::ClusterSecret;
use rollgate::release::{SignedManifest, SigningKey};
use rollgate_certs::{Ca, Validity};
use rollgate_kv::{NodeHandle, node, releases};
use serde_json::Value;

use super::secure::node_files;
use crate::support::*;

/// How long the links of a started cluster may take to connect.
const LINKS_UP: Duration = Duration::from_secs(15);

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let resp = client.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn signed_tls_cluster(root: &Path, ca: &Ca, key: &SigningKey) -> (Vec<NodeHandle>, String) {
    let store = redb_store(root).await;
    let manifest = releases::manifest(releases::find("1.2").unwrap()).unwrap();
    let manifest = SignedManifest::sign(manifest, key).unwrap();
    let digest = manifest.manifest.digest().to_text();
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let mut c = config("1.2", &data(root, id));
        c.node_id = Some(id.into());
        c.cluster_secret = Some(ClusterSecret::new("the cluster secret of this test").unwrap());
        c.tls = Some(node_files(root, ca, id));
        c.release_manifest = Some(manifest.clone());
        c.release_key = Some(key.public());
        let n = node::start(c, store.clone()).await.expect("a signed node with TLS starts");
        assert!(n.wait_ready(READY).await, "{id} ready");
        nodes.push(n);
    }
    (nodes, digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_releases_the_dashboard_and_metrics_work_over_tls() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test", Validity::days(1)).unwrap();
    let key = SigningKey::generate();
    let (nodes, digest) = signed_tls_cluster(dir.path(), &ca, &key).await;
    let tls = rollgate::tls::https_client(Path::new("ca.pem"), ca.cert_pem().as_bytes(), None).unwrap();
    let https = reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap();
    let admin = nodes[0].addresses().admin;

    // The dashboard's state: every member's links, the others' asked over
    // HTTPS; each link connected over mutual TLS with the peer's digest.
    let started = Instant::now();
    let state = loop {
        let (status, body) = get(&https, &format!("https://{admin}/ui/state")).await;
        assert_eq!(status, 200, "{body}");
        let state: Value = serde_json::from_str(&body).unwrap();
        let members = state["links"].as_array().unwrap();
        let all_up = members.len() == 3
            && members.iter().all(|m| {
                let links = m["links"].as_array().unwrap();
                m["error"].is_null() && links.len() == 2 && links.iter().all(|l| l["state"] == "connected")
            });
        if all_up {
            break state;
        }
        assert!(started.elapsed() < LINKS_UP, "the links did not all connect within {LINKS_UP:?}: {}", state["links"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for member in state["links"].as_array().unwrap() {
        for link in member["links"].as_array().unwrap() {
            assert_eq!(link["tls"], true, "{member}");
            assert_eq!(link["authenticated"], true, "{member}");
            assert_eq!(
                link["peer_manifest"].as_str(),
                Some(digest.as_str()),
                "the handshake carried the digest: {member}"
            );
        }
    }

    // The page and the metrics, on the same HTTPS listener.
    let (status, page) = get(&https, &format!("https://{admin}/ui/")).await;
    assert!(status == 200 && page.contains("<html"), "{status}: {page}");
    let (status, metrics) = get(&https, &format!("https://{admin}/metrics")).await;
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("rollgate_") && metrics.contains("# EOF"), "{metrics}");

    // Plain HTTP there is told to use HTTPS.
    let (status, body) = get(&plain_http(), &format!("http://{admin}/metrics")).await;
    assert!(status >= 400 && body.contains("https://") && body.contains("--ca-file"), "{status}: {body}");
    for n in nodes {
        n.stop().await.unwrap();
    }
}

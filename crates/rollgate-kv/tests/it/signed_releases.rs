//! Signed releases through rollgate-kv's own wiring, on real TCP: nodes
//! started with a manifest signed by the trusted key exchange its digest in
//! the handshake (their links and `/admin/nodes` show it), and a node of an
//! unsigned release, or of a manifest signed by another key, is refused
//! with the fix.

use rollgate::release::{SignedManifest, SigningKey};
use rollgate_kv::{node, releases};
use serde_json::Value;

use crate::support::*;

fn signed(release: &str, key: &SigningKey) -> SignedManifest {
    let manifest = releases::manifest(releases::find(release).unwrap()).unwrap();
    SignedManifest::sign(manifest, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_nodes_show_their_digests_and_unsigned_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = redb_store(dir.path()).await;
    let key = SigningKey::generate();
    let manifest = signed("1.2", &key);
    let digest = manifest.manifest.digest().to_text();
    let mut nodes = Vec::new();
    for id in ["n1", "n2"] {
        let mut c = config("1.2", &data(dir.path(), id));
        c.node_id = Some(id.into());
        c.release_manifest = Some(manifest.clone());
        c.release_key = Some(key.public());
        let n = node::start(c, store.clone()).await.expect("a signed node starts");
        assert!(n.wait_ready(READY).await);
        nodes.push(n);
    }
    let client = plain_http();
    let admin = nodes[0].addresses().admin;
    let links: Value = client.get(format!("http://{admin}/admin/links")).send().await.unwrap().json().await.unwrap();
    let link = &links["links"][0];
    assert_eq!((link["peer"].as_str(), link["state"].as_str()), (Some("n2"), Some("connected")), "{links}");
    assert_eq!(link["peer_manifest"].as_str(), Some(digest.as_str()), "the handshake carried n2's digest");
    let list: Value = client.get(format!("http://{admin}/admin/nodes")).send().await.unwrap().json().await.unwrap();
    for n in list["nodes"].as_array().unwrap() {
        assert_eq!(n["release_manifest"].as_str(), Some(digest.as_str()), "{n}");
    }

    let mut unsigned = config("1.2", &data(dir.path(), "n3"));
    unsigned.node_id = Some("n3".into());
    let e =
        node::start(unsigned, store.clone()).await.map(|_| ()).expect_err("an unsigned release is refused").to_string();
    assert!(e.contains("has no signed release manifest") && e.contains(&key.public().id()), "{e}");

    let stranger = SigningKey::generate();
    let mut other = config("1.2", &data(dir.path(), "n4"));
    other.node_id = Some("n4".into());
    other.release_manifest = Some(signed("1.2", &stranger));
    other.release_key = Some(stranger.public());
    let e = node::start(other, store.clone()).await.map(|_| ()).expect_err("another key is refused").to_string();
    assert!(e.contains("runs releases signed by key") && e.contains(&key.public().id()), "{e}");

    // A 1.1 manifest does not describe a 1.2 binary.
    let mut wrong = config("1.2", &data(dir.path(), "n5"));
    wrong.node_id = Some("n5".into());
    wrong.release_manifest = Some(signed("1.1", &key));
    wrong.release_key = Some(key.public());
    let e = node::start(wrong, store.clone())
        .await
        .map(|_| ())
        .expect_err("a manifest of another release is refused")
        .to_string();
    assert!(e.contains("does not describe this binary"), "{e}");
    for n in nodes {
        n.stop().await.unwrap();
    }
}

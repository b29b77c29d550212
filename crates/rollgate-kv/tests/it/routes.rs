//! The routes a node publishes are the routes it serves: both come from one
//! registration (`http::registered`). Through a real node on loopback, per
//! release: every route of its published table is answered by its handler
//! (never the "no such route" fallback), and a route the table does not
//! list is not served.

use crate::support::*;
use rollgate::capabilities::Route;

/// A request for `route` with its placeholders filled in.
fn request(client: &reqwest::Client, base: &str, route: &Route) -> reqwest::RequestBuilder {
    let path = route.path.replace("{key}", "routes-test").replace("{name}", "x").replace("{id}", "x");
    let method = reqwest::Method::from_bytes(route.method.as_bytes()).unwrap();
    let mut req = client.request(method, format!("http://{base}{path}"));
    if route.method == "PUT" {
        req = req.body("v");
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_published_route_is_served_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = redb_store(dir.path()).await;
    let client = plain_http();
    for release in ["1.0", "1.2"] {
        let mut c = config(release, &data(dir.path(), &format!("n-{release}")));
        c.plugins = if release == "1.2" { vec!["audit".to_string()] } else { Vec::new() };
        let node = rollgate_kv::node::start(c, store.clone()).await.unwrap();
        assert!(node.wait_ready(READY).await);
        let base = node.addresses().admin.to_string();
        let published = node.runtime().unwrap().view().member(node.node_id()).unwrap().record.routes.clone().unwrap();
        let own: Vec<&Route> =
            published.routes.iter().filter(|r| !r.path.starts_with("/admin") && !r.path.starts_with("/_")).collect();
        assert!(own.iter().any(|r| r.path == "/health"), "{own:?}");
        assert_eq!(own.iter().any(|r| r.path == "/kv"), release == "1.2", "{own:?}");
        assert_eq!(own.iter().any(|r| r.path == "/audit"), release == "1.2", "{own:?}");
        for route in own {
            let resp = request(&client, &base, route).send().await.unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let message = body["error"]["message"].as_str().unwrap_or("");
            assert!(
                status != 405 && !message.starts_with("no route for"),
                "release {release}: {} {} is published but not served: {status} {body}",
                route.method,
                route.path
            );
        }
        // 1.0 publishes no prefix scan, and does not serve it either.
        if release == "1.0" {
            let resp = client.get(format!("http://{base}/kv?prefix=a")).send().await.unwrap();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            assert!(body["error"]["message"].as_str().unwrap_or("").starts_with("no route for GET /kv"), "{body}");
        }
        node.stop().await.expect("stop");
    }
}

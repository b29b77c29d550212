//! Feature flags, cluster features, storage formats and a plugin through a
//! rolling upgrade, on separate `rollgate-kv serve` processes and a real
//! etcd (started by the test on a free loopback port), driven like an
//! operator: through the admin API over HTTP with the bearer token (the
//! calls the `rollgate` CLI makes). Readiness comes from the line each
//! process prints; every wait is paced and bounded.
//!
//! One cluster goes through, in order: a node upgraded to 1.2 and rolled
//! back to 1.0 before any flag is enabled (its data is read by 1.0, it
//! rejoins); TTL writes refused before `ttl`; the audit plugin waiting for
//! `record_meta_v2`; enabling refused while a stopped 1.0 node is a member,
//! and allowed after `nodes forget`; the experimental flag needing
//! `experimental`; `record_meta_v2` enabled (records format 2, the plugin
//! starts) then disabled (format 1 again on every node); every stable flag
//! enabled (format 3), after which `record_meta_v2` cannot be disabled; and
//! a 1.0 binary refusing to boot against the cluster, naming the flag,
//! without changing the store.

#![cfg(feature = "etcd")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::{Admin, health, storage_format};
use crate::process::{Proc, serve_args, start_node};
use crate::{quick, single};
use rollgate::store::{MetaStore, StoreOptions};
use rollgate_kv::{ClientError, KvClient};
use rollgate_testkit::EtcdServer;
use serde_json::{Value, json};

/// What the store says about membership and flags (heartbeats excluded).
async fn snapshot(store: &Arc<dyn MetaStore>) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for prefix in ["rollgate/members/", "rollgate/flags/", "rollgate/epoch", "rollgate/cluster_id"] {
        for kv in store.list(prefix).await.unwrap().kvs {
            out.insert(kv.key, kv.value);
        }
    }
    out
}

/// Polls `check` (every 100 ms, at most 30 s) until it holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last = String::new();
    for _ in 0..300 {
        tick.tick().await;
        match check().await {
            Ok(()) => return,
            Err(e) => last = e,
        }
    }
    panic!("{what}: still not the case after 30 s: {last}");
}

async fn read_all(addr: &str, keys: &BTreeMap<String, String>) {
    let c = single(addr);
    for (k, v) in keys {
        assert_eq!(c.get(k).await.unwrap().as_deref(), Some(v.as_bytes()), "{k} on {addr}");
    }
}

async fn get_with_headers(addr: &str, key: &str) -> reqwest::Response {
    let resp = reqwest::Client::builder()
        .use_preconfigured_tls(rollgate::tls::plain_client())
        .build()
        .unwrap()
        .get(format!("http://{addr}/kv/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{key} on {addr}");
    resp
}

fn message(body: &Value) -> String {
    body["error"]["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_features_formats_and_a_plugin_through_a_rolling_upgrade() {
    let etcd = EtcdServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let meta = etcd.url();
    let mut n1 = start_node("1.0", "n1", dir, &meta, &[]);
    let mut n2 = start_node("1.0", "n2", dir, &meta, &[]);
    let mut n3 = start_node("1.0", "n3", dir, &meta, &[]);
    let client = KvClient::new(&[&n1.admin, &n2.admin, &n3.admin], quick()).unwrap();
    let mut acked = BTreeMap::new();
    let write = async |client: &KvClient, acked: &mut BTreeMap<String, String>, key: String| {
        let value = format!("value of {key}");
        client.put(&key, value.clone(), None).await.unwrap();
        acked.insert(key, value);
    };
    for i in 0..20 {
        write(&client, &mut acked, format!("k{i:03}")).await;
    }

    // n1 to 1.2 and back to 1.0 before any new flag is enabled: its data is
    // still format 1, read by 1.0, and it rejoins.
    assert!(n1.terminate().success(), "{}", n1.log());
    n1 = start_node("1.2", "n1", dir, &meta, &[]);
    client.set_nodes(&[&n1.admin, &n2.admin, &n3.admin]).unwrap();
    for i in 20..40 {
        write(&client, &mut acked, format!("k{i:03}")).await;
    }
    assert_eq!(storage_format(&n1.admin).await, 1);
    assert!(n1.terminate().success(), "{}", n1.log());
    n1 = start_node("1.0", "n1", dir, &meta, &[]);
    let h = health(&n1.admin).await;
    assert_eq!(
        (h["release"].as_str(), h["ready"].as_bool(), h["members"].as_u64()),
        (Some("1.0"), Some(true), Some(3))
    );
    assert_eq!(h["storage"]["format"], 1, "{h}");
    read_all(&n1.admin, &acked).await;

    // n1 and n2 to 1.2 (n2 with the audit plugin); n3 stops: a stopped 1.0 member.
    assert!(n1.terminate().success(), "{}", n1.log());
    n1 = start_node("1.2", "n1", dir, &meta, &[]);
    assert!(n2.terminate().success(), "{}", n2.log());
    n2 = start_node("1.2", "n2", dir, &meta, &["--plugins", "audit"]);
    assert!(n3.terminate().success(), "{}", n3.log());
    client.set_nodes(&[&n1.admin, &n2.admin]).unwrap();
    let admin = Admin::new(&n1.admin);

    // Before `ttl` is enabled a TTL write is refused, naming the flag and the command.
    let e = single(&n1.admin).put("ttl-early", "v", Some(60)).await.unwrap_err();
    let ClientError::Refused { status: 409, code, message: m, .. } = &e else { panic!("{e}") };
    assert_eq!(code, "flag_not_enabled");
    assert!(m.contains("`ttl`") && m.contains("rollgate flags enable ttl"), "{m}");
    // The plugin waits for its flag (and says so); nothing else is refused.
    let (status, body) = Admin::new(&n2.admin).get("/audit").await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("plugin_not_running")), "{body}");
    let m = message(&body);
    assert!(m.contains("`record_meta_v2`") && m.contains("rollgate flags enable record_meta_v2"), "{m}");
    assert_eq!(health(&n2.admin).await["plugins"]["audit"]["state"], "waiting");
    assert!(n2.logged("plugin waits"), "{}", n2.log());
    write(&client, &mut acked, "while-the-plugin-waits".into()).await;

    // Enabling is refused while n3 (1.0, stopped) is a member, naming it and the fix.
    let before = admin.get("/admin/flags").await.1;
    let (status, body) = admin.post("/admin/flags/enable", json!({"all": true})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("refused")), "{body}");
    let m = message(&body);
    assert!(m.contains("n3 (release 1.0, stopped)") && m.contains("rollgate nodes forget n3"), "{m}");
    assert_eq!(admin.get("/admin/flags").await.1, before, "nothing changed");
    let (_, status) = admin.get("/admin/upgrade/status").await;
    let blocked = status["flags"]["blocked"].as_array().unwrap();
    assert!(blocked.iter().any(|b| b["flag"] == "record_meta_v2" && b["lacking"] == json!(["n3"])), "{status}");
    // ... and allowed once n3 is forgotten (`rollgate nodes forget n3`).
    let (status, body) = admin.delete("/admin/nodes/n3").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin.post("/admin/flags/enable", json!({"flags": ["record_meta_v2"], "dry_run": true})).await;
    assert_eq!((status, body["blockers"].as_array().map(Vec::len)), (200, Some(0)), "{body}");

    // The experimental flag needs `experimental`.
    let (status, body) = admin.post("/admin/flags/enable", json!({"flags": ["value_checksums"]})).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("--experimental"), "{body}");

    // record_meta_v2 alone: every node's records go to format 2; the plugin starts.
    let (status, body) = admin.post("/admin/flags/enable", json!({"flags": ["record_meta_v2"]})).await;
    assert_eq!((status, &body["enabled"]), (200, &json!(["record_meta_v2"])), "{body}");
    for n in [&n1, &n2] {
        let addr = n.admin.clone();
        eventually(&format!("{} at format 2", n.node), || {
            let addr = addr.clone();
            async move {
                let f = storage_format(&addr).await;
                if f == 2 { Ok(()) } else { Err(format!("format {f}")) }
            }
        })
        .await;
    }
    let audit = Admin::new(&n2.admin);
    eventually("the audit plugin runs", || async {
        let (status, body) = audit.get("/audit").await;
        if status == 200 { Ok(()) } else { Err(body.to_string()) }
    })
    .await;
    assert!(n2.logged("plugin started"), "{}", n2.log());
    write(&client, &mut acked, "audited".into()).await;
    let (_, body) = audit.get("/audit?limit=10").await;
    let entry = body["entries"].as_array().unwrap().iter().find(|e| e["key"] == "audited").cloned();
    let entry = entry.unwrap_or_else(|| panic!("{body}"));
    assert_eq!(entry["writer"]["from"], "meta@2", "{entry}");
    assert_eq!(entry["writer"]["release"], "1.2", "{entry}");
    // Old records were migrated (meta@2 derived from meta@1: the release is not known).
    let writer = get_with_headers(&n1.admin, "k000").await.headers()["x-kv-writer"].to_str().unwrap().to_string();
    assert!(writer.ends_with("(meta@2)"), "{writer}");

    // Disabling record_meta_v2 (reversible while ttl is disabled) converts
    // every node's records back to format 1, and the plugin stops.
    let (status, body) = admin.post("/admin/flags/disable", json!({"flag": "record_meta_v2"})).await;
    assert_eq!((status, &body["changed"]), (200, &json!(true)), "{body}");
    for n in [&n1, &n2] {
        assert_eq!(storage_format(&n.admin).await, 1, "node {} converted back before the flag was disabled", n.node);
    }
    let writer = get_with_headers(&n1.admin, "audited").await.headers()["x-kv-writer"].to_str().unwrap().to_string();
    assert!(writer.ends_with("(meta@1)"), "{writer}");
    eventually("the audit plugin stops", || async {
        let (status, body) = audit.get("/audit").await;
        if status == 503 { Ok(()) } else { Err(body.to_string()) }
    })
    .await;

    // Every stable flag: format 3 everywhere. record_meta_v2 cannot be
    // disabled any more (ttl depends on it), and ttl is irreversible.
    let (status, body) = admin.post("/admin/flags/enable", json!({"all": true})).await;
    assert_eq!((status, &body["enabled"]), (200, &json!(["record_meta_v2", "ttl"])), "{body}");
    admin.wait_migrations_done(&["n1", "n2"]).await;
    for n in [&n1, &n2] {
        assert_eq!(storage_format(&n.admin).await, 3, "node {}", n.node);
    }
    let (status, body) = admin.post("/admin/flags/disable", json!({"flag": "record_meta_v2"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("depend on it") && message(&body).contains("`ttl`"), "{body}");
    let (status, body) = admin.post("/admin/flags/disable", json!({"flag": "ttl"})).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("not reversible"), "{body}");
    client.put("ttl-late", "v", Some(3600)).await.unwrap();
    assert_eq!(client.get("ttl-late").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(health(&n2.admin).await["storage"]["expiry_index"], 1);
    // And the experimental flag, asked for explicitly: new values carry a verified checksum.
    let (status, body) =
        admin.post("/admin/flags/enable", json!({"flags": ["value_checksums"], "experimental": true})).await;
    assert_eq!(status, 200, "{body}");
    single(&n1.admin).put("checked", "v", None).await.unwrap();
    acked.insert("checked".into(), "v".into());
    let checksum =
        get_with_headers(&n2.admin, "checked").await.headers()["x-kv-checksum"].to_str().unwrap().to_string();
    assert_eq!(checksum, "verified");

    // A 1.0 binary refuses to boot against this cluster (n3's data dir, still
    // format 1): it names the flag and its first release, exits 2, and the
    // store is as it was.
    let store = rollgate::store::open(&meta, StoreOptions::default()).await.unwrap();
    let before = snapshot(&store).await;
    let mut old = Proc::spawn(&serve_args("1.0", "n3", dir, &meta, &[]), &dir.join("n3-again.log"));
    let status = old.wait_exit();
    let log = old.log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("cannot start") && log.contains("`record_meta_v2`"), "{log}");
    assert!(log.contains("`record_meta_v2`") && log.contains("enabled, introduced in release 1.1"), "{log}");
    assert!(log.contains("run a release that knows all of them on this node"), "{log}");
    assert_eq!(snapshot(&store).await, before, "the refused node changed nothing in the store");

    // Every acknowledged write is readable from every node.
    for n in [&n1, &n2] {
        read_all(&n.admin, &acked).await;
    }
    assert!(n1.terminate().success() && n2.terminate().success());
}

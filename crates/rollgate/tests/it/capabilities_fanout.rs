//! `GET /_capabilities` across real admin listeners on loopback: `true`
//! when every member supports the query, `false` when one does not (a
//! stopped member answers from the table it published), `null` when a
//! member cannot answer (a hung running member, a stopped member that
//! published no table).

use std::time::Instant;

use crate::flags_support::*;
use rollgate::admin::AdminConfig;
use rollgate::capabilities::CapabilityQuery;
use rollgate::cluster::{Cluster, ClusterOptions, NodeState};
use serde_json::Value;

async fn ask(addr: std::net::SocketAddr, query: &str) -> Value {
    let resp = http().get(format!("http://{addr}/_capabilities?{query}")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{query}");
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_must_support_the_query_and_a_stopped_one_answers_from_its_table() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    // n3 stays on 1.0 and stops; n1 and n2 run 1.1 with real admin listeners.
    let mut nodes = rolled_cluster(&store, dir.path(), &["n1", "n2", "n3"], "1.0", &counters).await;
    let n3 = nodes.pop().unwrap();
    n3.stop().await.unwrap();
    drop(n3);
    for n in nodes.drain(..) {
        n.stop().await.unwrap();
    }
    let (n1, a1, _s1) =
        start_with_admin(&store, config("n1", "1.1", dir.path(), &counters), AdminConfig::default()).await;
    let (_n2, a2, _s2) =
        start_with_admin(&store, config("n2", "1.1", dir.path(), &counters), AdminConfig::default()).await;

    // Every member (the stopped n3 from its published table) serves GET /kv/{key}.
    let all = ask(a1, "method=GET&path=/kv/k1").await;
    assert_eq!(all["supported"], Value::Bool(true), "{all}");
    let sources: Vec<(String, String)> = all["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["node_id"].as_str().unwrap().into(), m["source"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        sources,
        [("n1".into(), "local".into()), ("n2".into(), "http".into()), ("n3".into(), "published table".into())]
    );
    // PUT with ttl_s: the stopped 1.0 member's table lacks it.
    let q = "method=PUT&path=/kv/k1&parameters=ttl_s&capabilities=ttl";
    assert_eq!(ask(a2, q).await["supported"], Value::Bool(false));
    // This node alone supports it... but only once the cluster has kv_ttl.
    assert_eq!(ask(a1, &format!("{q}&local_only=true")).await, serde_json::json!({"supported": false}));
    n1.forget("n3").await.unwrap();
    until(&n1, "n3 forgotten", |v| v.member("n3").is_none() && rollgate::features::cluster_has_feature(v, "kv_ttl"))
        .await;
    until(&_n2, "n3 forgotten on n2", |v| v.member("n3").is_none()).await;
    assert_eq!(ask(a1, &format!("{q}&local_only=true")).await, serde_json::json!({"supported": true}));
    assert_eq!(ask(a1, q).await["supported"], Value::Bool(true));
    // Unknown routes, methods, parameters: false.
    assert_eq!(ask(a1, "path=/nope").await["supported"], Value::Bool(false));
    assert_eq!(ask(a1, "method=DELETE&path=/kv/k1").await["supported"], Value::Bool(false));
    assert_eq!(ask(a1, "method=GET&path=/kv/k1&parameters=ttl_s").await["supported"], Value::Bool(false));
    // The admin API's own routes are registered too.
    assert_eq!(
        ask(a2, "method=POST&path=/admin/flags/enable&capabilities=dry_run").await["supported"],
        Value::Bool(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_cannot_answer_makes_the_answer_null() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let (n1, a1, _s1) =
        start_with_admin(&store, config("n1", "1.1", dir.path(), &counters), AdminConfig::default()).await;

    // A running member whose admin listener accepts and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            conns.push(c); // held open, never read, never answered
        }
    });
    let cluster = Cluster::open(store.clone(), ClusterOptions::default()).await.unwrap();
    let mut hung = n1.record().clone();
    hung.node_id = "hung".into();
    hung.admin_addr = hole_addr.to_string();
    cluster.join(hung, |_| Ok::<(), String>(())).await.unwrap();
    let live = cluster.start_liveness("hung", 30).await.unwrap();
    until(&n1, "hung running", |v| v.member("hung").is_some_and(|m| m.is_running())).await;

    let started = Instant::now();
    let answer = ask(a1, "method=GET&path=/kv/k1").await;
    assert_eq!(answer["supported"], Value::Null, "{answer}");
    assert!(started.elapsed().as_secs() < 10, "bounded by the fan-out timeout");
    // A definite "no" from a member that answers wins over an unknown.
    assert_eq!(ask(a1, "method=GET&path=/nope").await["supported"], Value::Bool(false));
    // Through the library too.
    let q = CapabilityQuery::parse(Some("GET"), Some("/kv/k1"), None, None).unwrap();
    let (supported, members) =
        rollgate::admin::view::capabilities(&n1, &rollgate::admin::fanout::MemberClient::plain(), &q, false).await;
    assert_eq!(supported, None);
    assert!(members.iter().any(|m| m.node_id == "hung" && m.supported.is_none()));
    held.abort();

    // A stopped member that published no route table: unknown as well.
    let mut silent = n1.record().clone();
    silent.node_id = "silent".into();
    silent.routes = None;
    silent.state = NodeState::Stopped;
    cluster.update(|_| Ok::<_, String>(vec![rollgate::cluster::ViewOp::PutMember(silent.clone())])).await.unwrap();
    live.stop().await.unwrap();
    cluster.forget("hung").await.unwrap();
    until(&n1, "silent member, hung gone", |v| v.member("silent").is_some() && v.member("hung").is_none()).await;
    assert_eq!(ask(a1, "method=GET&path=/kv/k1").await["supported"], Value::Null);
    cluster.forget("silent").await.unwrap();
    until(&n1, "silent gone", |v| v.member("silent").is_none()).await;
    assert_eq!(ask(a1, "method=GET&path=/kv/k1").await["supported"], Value::Bool(true));
}

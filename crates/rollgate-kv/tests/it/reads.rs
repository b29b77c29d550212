//! Reads a client can trust (release 2.0): a client reads its own writes
//! whichever node answers, under load and across a node's restart; a
//! linearizable read on a node cut off from its peers fails rather than
//! answering stale data.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rollgate_kv::demo::load::Rng;
use rollgate_kv::{KvClient, NodeHandle, node};
use rollgate_testkit::proxy::Proxy;

use crate::support::{READY, config, data, plain_http, quick, redb_store, start};

fn admin(n: &NodeHandle) -> String {
    n.addresses().admin.to_string()
}

/// Writes on other keys through every node until stopped, so replication
/// queues are never empty.
fn background_load(nodes: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (nodes, stop) = (nodes.clone(), stop.clone());
        tasks.spawn(async move {
            let c = KvClient::new(&nodes, quick()).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) && i < 100_000 {
                let _ = c.put(&format!("bg/{w}/{}", i % 200), vec![b'x'; 256], None).await;
                i += 1;
            }
        });
    }
    tasks
}

/// A write through one node followed at once by a read through another must
/// return the write: under a write load on every node, and while one node
/// is stopped and restarted on its data dir (the restarted one answers
/// reads at once). The client carries its session from node to node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_through_one_node_is_read_at_once_through_another_under_load_and_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let mut nodes = vec![
        start(&store, "2.0", &data(tmp.path(), "n1")).await,
        start(&store, "2.0", &data(tmp.path(), "n2")).await,
        start(&store, "2.0", &data(tmp.path(), "n3")).await,
    ];
    let seed = rollgate_testkit::seed("ROLLGATE_KV_READS_SEED");
    let mut rng = Rng::new(seed);
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = background_load(nodes.iter().map(admin).collect(), stop.clone());
    let client = KvClient::new(&[admin(&nodes[0])], quick()).unwrap();
    let mut missed = Vec::new();
    const PAIRS: usize = 600;
    for i in 0..PAIRS {
        if i == PAIRS / 3 {
            // n3 stops and misses the writes made meanwhile.
            nodes.remove(2).stop().await.unwrap();
        }
        if i == 2 * PAIRS / 3 {
            nodes.push(start(&store, "2.0", &data(tmp.path(), "n3")).await);
        }
        let w = rng.below(nodes.len() as u64) as usize;
        let other = (w + 1 + rng.below(nodes.len() as u64 - 1) as usize) % nodes.len();
        // Once restarted, n3 takes every other read the others write.
        let r = if nodes.len() == 3 && i % 2 == 0 && w != 2 { 2 } else { other };
        let key = format!("k/{}", rng.below(50));
        let value = format!("v{i}");
        client.set_nodes(&[admin(&nodes[w])]).unwrap();
        if client.put(&key, value.clone(), None).await.is_err() {
            continue;
        }
        client.set_nodes(&[admin(&nodes[r])]).unwrap();
        match client.get(&key).await {
            Ok(Some(v)) if v == value.as_bytes() => {}
            other => missed.push(format!(
                "pair {i}: wrote {key}={value} through {}, read {:?} through {}",
                nodes[w].node_id(),
                other.map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned())),
                nodes[r].node_id()
            )),
        }
    }
    stop.store(true, Ordering::Release);
    while load.join_next().await.is_some() {}
    for n in nodes {
        n.stop().await.unwrap();
    }
    assert!(
        missed.is_empty(),
        "seed {seed} (ROLLGATE_KV_READS_SEED={seed}): {} of {PAIRS} reads missed the write just acknowledged; the first: {:?}",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
}

/// Three 2.0 nodes whose links to and from n3 go through proxies, so n3
/// can be cut off its peers (both ways) while it still reaches the
/// metadata store and answers clients.
struct Partitionable {
    nodes: Vec<NodeHandle>,
    to_n3: Vec<Arc<Proxy>>,
    _tmp: tempfile::TempDir,
}

async fn partitionable(release: &str) -> Partitionable {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let id = |i: usize| format!("n{}", i + 1);
    // The proxies listen first (their ports are theirs); each learns its
    // target once the node behind it has bound its own port.
    let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut proxies = Vec::new();
    let mut overrides: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); 3];
    for (from, to) in [(0, 2), (1, 2), (2, 0), (2, 1)] {
        let p = Arc::new(Proxy::start(nowhere).unwrap());
        overrides[from].insert(id(to), p.addr().to_string());
        proxies.push((to, p));
    }
    let mut nodes = Vec::new();
    for (i, dial) in overrides.into_iter().enumerate() {
        let mut c = config(release, &data(tmp.path(), &id(i)));
        c.node_id = Some(id(i));
        c.dial_overrides = dial;
        let n = node::start(c, store.clone()).await.expect("start a node");
        for (_, p) in proxies.iter().filter(|(to, _)| *to == i) {
            p.set_target(n.addresses().data);
        }
        assert!(n.wait_ready(READY).await);
        nodes.push(n);
    }
    Partitionable { nodes, to_n3: proxies.into_iter().map(|(_, p)| p).collect(), _tmp: tmp }
}

async fn get(http: &reqwest::Client, node: &NodeHandle, key: &str, query: &str) -> (u16, String, String) {
    let url = format!("http://{}/kv/{key}{query}", admin(node));
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    let read = resp.headers().get("x-kv-read").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (status, read, resp.text().await.unwrap())
}

/// A linearizable read confirms with a majority: on a node cut off from its
/// peers it must not answer the value it holds (older than a write the
/// others acknowledged meanwhile) but fail clearly; on the majority's side,
/// and on the cut-off node once the partition heals, it answers the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_linearizable_read_on_a_node_cut_off_by_a_partition_does_not_answer_stale_data() {
    let c = partitionable("2.0").await;
    let [n1, _n2, n3] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    let http = plain_http();
    let all = KvClient::new(&c.nodes.iter().map(admin).collect::<Vec<_>>(), quick()).unwrap();
    all.put("k", "old", None).await.unwrap();
    assert!(n1.flush_replication(Duration::from_secs(5)).await);
    assert_eq!(get(&http, n3, "k", "").await.2, "old");

    for p in &c.to_n3 {
        p.partition();
    }
    let through_n1 = KvClient::new(&[admin(n1)], quick()).unwrap();
    through_n1.put("k", "new", None).await.unwrap();

    let (status, _, body) = get(&http, n3, "k", "?consistency=linearizable").await;
    assert_ne!(body, "old", "the cut-off node answered its stale value to a linearizable read");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no_quorum") && body.contains("linearizable"), "{body}");
    let (status, read, body) = get(&http, n1, "k", "?consistency=linearizable").await;
    assert_eq!((status, read.as_str(), body.as_str()), (200, "linearizable", "new"));
    // Prefix scans take the same level.
    let scan = |n: &NodeHandle| format!("http://{}/kv?prefix=k&consistency=linearizable", admin(n));
    let resp = http.get(scan(n3)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503, "a linearizable scan on the cut-off node");
    let resp = http.get(scan(n1)).send().await.unwrap();
    assert_eq!(resp.headers()["x-kv-read"], "linearizable");
    let items: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(items["items"][0]["value"], "new", "{items}");

    for p in &c.to_n3 {
        p.heal();
    }
    let deadline = tokio::time::Instant::now() + READY;
    loop {
        let (status, read, body) = get(&http, n3, "k", "?consistency=linearizable").await;
        if status == 200 {
            assert_eq!((read.as_str(), body.as_str()), ("linearizable", "new"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "n3 never served the read after the heal: {status} {body}");
        n3.wait_peer("n1", Duration::from_secs(1)).await.ok();
    }
    for n in c.nodes {
        n.stop().await.unwrap();
    }
}

/// Bad read tokens and levels get a clear 400 and change nothing; a token
/// the node does not hold yet gets 503 `behind` once the wait is over; a
/// release without read levels ignores both, as it always did; a quorum
/// read request over the limits from a peer is answered with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_read_tokens_and_levels_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let node = start(&store, "2.0", &data(tmp.path(), "n1")).await;
    let http = plain_http();
    let c = KvClient::new(&[admin(&node)], quick()).unwrap();
    let o = c.put("k", "v", None).await.unwrap();
    let held: rollgate_kv::hlc::Version = o.version.parse().unwrap();
    let url = format!("http://{}/kv/k", admin(&node));
    let ahead = rollgate_kv::hlc::Version { wall_ms: held.wall_ms + 86_400_000, ..held.clone() };
    let later = rollgate_kv::hlc::Version { logical: held.logical + 1, ..held.clone() };
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        ("a token that does not parse", url.clone(), Some("garbage".into()), 400, "x-kv-after"),
        ("a token of non-ASCII bytes", url.clone(), Some("\u{e9}".into()), 400, "x-kv-after"),
        ("a token a day ahead", url.clone(), Some(ahead.to_string()), 400, "x-kv-after"),
        ("an unknown level", format!("{url}?consistency=strong"), None, 400, "session or linearizable"),
        ("an unknown parameter", format!("{url}?stale=ok"), None, 400, "consistency"),
        ("a level given twice", format!("{url}?consistency=session&consistency=session"), None, 400, "twice"),
        ("a token not held yet", url.clone(), Some(later.to_string()), 503, "behind"),
    ];
    for (what, url, token, status, needle) in cases {
        let mut req = http.get(&url);
        if let Some(t) = &token {
            req = req.header(reqwest::header::HeaderName::from_static("x-kv-after"), t.as_bytes());
        }
        let resp = req.send().await.unwrap();
        let got = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(got, status, "{what}: {body}");
        assert!(body.contains(needle), "{what}: {body}");
    }
    let (status, read, body) = get(&http, &node, "k", "?consistency=session").await;
    assert_eq!((status, read.as_str(), body.as_str()), (200, "session", "v"), "the node still serves");
    assert_eq!(node.local_record("k").await.unwrap().unwrap().version, held, "nothing changed");

    // A peer's quorum read over the limits.
    use rollgate::net::{self, NetConfig};
    use rollgate_kv::peer::codec::{self, Incoming, Request, Response};
    use rollgate_kv::quorum::v1 as quorum;
    let live = crate::support::hand_made_member(&node, "garbage-peer").await;
    let r = rollgate_kv::releases::find("2.0").unwrap();
    let cfg = rollgate::handshake::HandshakeConfig::new(
        "garbage-peer",
        "2.0",
        node.cluster_id(),
        r.protocols,
        r.transport_set(),
    );
    let conn = net::connect::<rollgate_kv::Msg>(node.addresses().data, NetConfig::new(cfg)).await.unwrap();
    let p = conn.negotiated().protocol;
    assert_eq!(p.0, 4);
    let (tx, mut rx) = conn.split();
    let req = Request::Read(quorum::ReadRequest { req_id: 1, key: "k".repeat(5000), prefix: true, limit: u32::MAX });
    tx.send(codec::request_to_wire(p, req).unwrap()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap().unwrap();
    let Incoming::Response(Response::Read(reply)) = codec::from_wire(answer) else { panic!("not a ReadReply") };
    assert!(reply.error.as_deref().is_some_and(|e| e.contains("longer than any key")), "{reply:?}");
    let req = Request::Read(quorum::ReadRequest { req_id: 2, key: "k".into(), prefix: false, limit: u32::MAX });
    tx.send(codec::request_to_wire(p, req).unwrap()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap().unwrap();
    let Incoming::Response(Response::Read(reply)) = codec::from_wire(answer) else { panic!("not a ReadReply") };
    assert_eq!((reply.entries.len(), reply.error), (1, None), "a well-formed request is answered");
    crate::support::remove_hand_made_member(&node, "garbage-peer", live).await;
    node.stop().await.unwrap();

    // A 1.2 node knows neither: it answers what it holds, without x-kv-read.
    let old = start(&store, "1.2", &data(tmp.path(), "old")).await;
    let (status, read, _) = get(&http, &old, "nothing", "?consistency=linearizable").await;
    assert_eq!((status, read.as_str()), (404, ""));
    old.stop().await.unwrap();
}

/// Against nodes of a release without read levels (1.2), which ignore the
/// session token and the level, the client checks each answer itself: a
/// stale one (a node cut off from the write) is refused and counted, and
/// the next node answers; a linearizable read no node can serve fails
/// naming the release to upgrade to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_checks_the_answers_of_nodes_without_read_levels() {
    let c = partitionable("1.2").await;
    let [n1, n2, n3] = [&c.nodes[0], &c.nodes[1], &c.nodes[2]];
    let http = plain_http();
    let writer = KvClient::new(&[admin(n1)], quick()).unwrap();
    writer.put("k", "old", None).await.unwrap();
    writer.put("gone", "soon", None).await.unwrap();
    assert!(n1.flush_replication(Duration::from_secs(5)).await);
    for p in &c.to_n3 {
        p.partition();
    }
    let new = writer.put("k", "new", None).await.unwrap().version.parse().unwrap();
    let fresh = writer.put("fresh", "1", None).await.unwrap().version.parse().unwrap();
    assert_eq!(get(&http, n3, "k", "").await.2, "old", "n3 is stale");
    // Clients that know those writes (their session) and ask the stale node first.
    for (key, version, want) in [("k", new, "new"), ("fresh", fresh, "1")] {
        let reader = KvClient::new(&[admin(n3), admin(n2)], quick()).unwrap();
        reader.remember(key, version, true);
        assert_eq!(reader.get(key).await.unwrap().as_deref(), Some(want.as_bytes()), "{key}");
        assert_eq!(reader.stale_answers(), 1, "{key}: n3's stale answer was refused");
    }
    match writer.read("k", rollgate_kv::client::ReadLevel::Linearizable).await {
        Err(e @ rollgate_kv::ClientError::Unsupported { .. }) => {
            assert!(e.to_string().contains("release 2.0"), "{e}");
        }
        other => panic!("a linearizable read through 1.2 nodes: {other:?}"),
    }
    for p in &c.to_n3 {
        p.heal();
    }
    for n in c.nodes {
        n.stop().await.unwrap();
    }
}

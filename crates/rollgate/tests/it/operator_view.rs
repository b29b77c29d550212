//! The operator's view through real admin listeners: the audit log (every
//! node reads the same entries, they survive a restart, tokens appear only
//! as fingerprints), `/metrics` parsed strictly as the text exposition
//! format, `/admin/links`, and the dashboard's page, state and bounded
//! event streams.

use std::sync::Arc;
use std::time::Duration;

use rollgate::admin::AdminConfig;
use rollgate::api::links::{HandshakeCount, LinkReport, LinkStatus};
use serde_json::{Value, json};

use crate::flags_support::*;

const TOKEN: &str = "test-admin-token-0123";

async fn post(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    path: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let resp = client.post(format!("http://{addr}{path}")).bearer_auth(token).json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn get(client: &reqwest::Client, addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let resp = client.get(format!("http://{addr}{path}")).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn admin_node(
    store: &Arc<dyn rollgate::store::MetaStore>,
    id: &str,
    root: &std::path::Path,
    admin: AdminConfig,
) -> (rollgate::node::Node, std::net::SocketAddr) {
    let (node, addr, _task) = start_with_admin(store, config(id, "1.2", root, &Counters::default()), admin).await;
    (node, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_read_the_same_from_every_node_and_survive_a_restart() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let client = http();
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push(admin_node(&store, id, dir.path(), AdminConfig::with_token(TOKEN)).await);
    }
    let addr = |i: usize| nodes[i].1;

    let (s, _) =
        post(&client, addr(0), "/admin/flags/enable", TOKEN, json!({"flags": ["fancy"], "experimental": true})).await;
    assert_eq!(s, 200);
    let (s, _) = post(&client, addr(1), "/admin/flags/disable", TOKEN, json!({"flag": "compact"})).await;
    assert_eq!(s, 200);
    let (s, _) = post(&client, addr(2), "/admin/flags/enable", TOKEN, json!({"flags": ["nope"]})).await;
    assert_eq!(s, 404);
    let (s, _) = post(&client, addr(0), "/admin/flags/enable", "wrong-token-123", json!({"flags": ["fancy"]})).await;
    assert_eq!(s, 401, "a wrong token is refused");
    let resp = client.delete(format!("http://{}/admin/nodes/n3", addr(0))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 409, "n3 is running");
    let (s, _) = post(&client, addr(0), "/admin/flags/enable", TOKEN, json!({"all": true, "dry_run": true})).await;
    assert_eq!(s, 200);

    let (_, log) = get(&client, addr(0), "/admin/audit").await;
    let summary: Vec<(String, String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["node"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
                e["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> =
        [("n1", "forget", "refused"), ("n3", "enable", "refused"), ("n2", "disable", "ok"), ("n1", "enable", "ok")]
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
    assert_eq!(summary, expected, "newest first; the wrong token and the dry run are not recorded");
    let fingerprint = rollgate::audit::token_fingerprint(TOKEN);
    for e in log["entries"].as_array().unwrap() {
        assert_eq!(e["caller"], json!({"via": "admin_api", "token": fingerprint}));
    }
    assert!(!log.to_string().contains(TOKEN), "the token itself is never stored");
    assert_eq!(log["entries"][3]["request"]["flags"], json!(["fancy"]));
    assert!(log["entries"][0]["message"].as_str().unwrap().contains("n3"), "{}", log["entries"][0]);
    assert_eq!(log["capacity"], 1000);
    for i in 1..3 {
        assert_eq!(get(&client, addr(i), "/admin/audit").await.1, log, "node {} reads the same log", i + 1);
    }

    // A restart of every node: the log is in the store.
    let mut restarted = Vec::new();
    for (node, _) in nodes.drain(..) {
        let id = node.id().to_string();
        node.stop().await.unwrap();
        drop(node);
        restarted.push(admin_node(&store, &id, dir.path(), AdminConfig::with_token(TOKEN)).await);
    }
    for (_, a) in &restarted {
        assert_eq!(get(&client, *a, "/admin/audit").await.1, log);
    }
    let (s, bad) = get(&client, restarted[0].1, "/admin/audit?limit=0").await;
    assert_eq!(s, 400, "{bad}");
    assert_eq!(get(&client, restarted[0].1, "/admin/audit?limit=2").await.1["entries"].as_array().unwrap().len(), 2);
}

/// Checks `text` line by line as the text exposition format (OpenMetrics
/// flavour: `# UNIT` lines and a final `# EOF`): every sample parses with a
/// number and belongs to a family declared by `# TYPE`. The error names the line.
fn check_exposition(text: &str) -> Result<Vec<(String, String, f64)>, String> {
    use prometheus_parse::LineInfo;
    let lines: Vec<&str> = text.lines().collect();
    if lines.last() != Some(&"# EOF") {
        return Err("the exposition does not end with # EOF".into());
    }
    let mut families: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    for (n, line) in lines[..lines.len() - 1].iter().enumerate() {
        let bad = |why: &str| Err(format!("line {}: {why}: {line:?}", n + 1));
        if let Some(rest) = line.strip_prefix("# UNIT ") {
            if rest.split(' ').count() != 2 {
                return bad("malformed # UNIT");
            }
            continue;
        }
        match LineInfo::parse(line) {
            LineInfo::Doc { .. } => {}
            LineInfo::Type { metric_name, metric_alias, .. } => {
                families.push(metric_alias.unwrap_or(metric_name));
            }
            LineInfo::Sample { metric_name, labels, value, .. } => {
                let Ok(v) = value.parse::<f64>() else { return bad("the value is not a number") };
                if !families.iter().any(|f| metric_name.starts_with(f.as_str())) {
                    return bad("a sample of an undeclared family");
                }
                samples.push((metric_name.to_string(), labels.unwrap_or("").to_string(), v));
            }
            LineInfo::Empty | LineInfo::Ignored => return bad("not a comment, a type or a sample"),
        }
    }
    Ok(samples)
}

#[test]
fn the_exposition_checker_refuses_malformed_text() {
    let good = "# HELP a_total x\n# TYPE a counter\na_total{k=\"v\"} 1\n# EOF";
    assert_eq!(check_exposition(good).unwrap().len(), 1);
    for bad in [
        "# TYPE a counter\na_total 1",
        "# TYPE a counter\na_total{k=\"v\" 1\n# EOF",
        "# TYPE a counter\na_total one\n# EOF",
        "b 1\n# EOF",
        "# TYPE a counter\nthis is not a sample line at all\n# EOF",
    ] {
        assert!(check_exposition(bad).is_err(), "{bad:?}");
    }
}

fn value(samples: &[(String, String, f64)], name: &str, labels: &str) -> Option<f64> {
    samples.iter().find(|(n, l, _)| n == name && l == labels).map(|s| s.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_the_text_format_and_follow_the_cluster() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let client = http();
    let (n1, a1) = admin_node(&store, "n1", dir.path(), AdminConfig::with_token(TOKEN)).await;
    let (_n2, _) = admin_node(&store, "n2", dir.path(), AdminConfig::with_token(TOKEN)).await;
    until(&n1, "n2 joined", |v| v.running().count() == 2).await;
    n1.set_link_source(Arc::new(|| LinkReport {
        links: vec![LinkStatus {
            peer: "n2".into(),
            addr: "127.0.0.1:1".into(),
            state: "connected".into(),
            protocol: Some(2),
            transport: Some(1_002_0_00),
            peer_release: Some("1.2".into()),
            authenticated: Some(true),
            peer_manifest: None,
            tls: Some(true),
            error: None,
        }],
        handshakes: vec![
            HandshakeCount { outcome: "accepted".into(), code: String::new(), count: 5 },
            HandshakeCount { outcome: "rejected".into(), code: "no_common_protocol".into(), count: 2 },
        ],
        ..LinkReport::default()
    }));
    let (s, _) =
        post(&client, a1, "/admin/flags/enable", TOKEN, json!({"flags": ["fancy"], "experimental": true})).await;
    assert_eq!(s, 200);

    let resp = client.get(format!("http://{a1}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(value(&samples, "rollgate_flag_state", "flag=\"fancy\",state=\"enabled\""), Some(1.0), "{text}");
    assert_eq!(value(&samples, "rollgate_flag_state", "flag=\"fancy\",state=\"disabled\""), Some(0.0));
    assert_eq!(value(&samples, "rollgate_flag_operations_total", "operation=\"enable\",outcome=\"ok\""), Some(1.0));
    assert_eq!(
        value(&samples, "rollgate_flag_operation_duration_seconds_count", "operation=\"enable\",outcome=\"ok\""),
        Some(1.0)
    );
    assert_eq!(value(&samples, "rollgate_peer_protocol_version", "peer=\"n2\""), Some(2.0));
    assert_eq!(value(&samples, "rollgate_peer_transport_version", "peer=\"n2\""), Some(1_002_000.0));
    assert_eq!(
        value(&samples, "rollgate_handshakes_total", "outcome=\"rejected\",code=\"no_common_protocol\""),
        Some(2.0)
    );
    assert_eq!(value(&samples, "rollgate_members", "state=\"running\""), Some(2.0));
    assert_eq!(value(&samples, "rollgate_store_reachable", ""), Some(1.0));
    // Counters stay counters across scrapes (the node reports totals).
    let again =
        check_exposition(&client.get(format!("http://{a1}/metrics")).send().await.unwrap().text().await.unwrap())
            .unwrap();
    assert_eq!(value(&again, "rollgate_handshakes_total", "outcome=\"accepted\",code=\"\""), Some(5.0));

    let (_, links) = get(&client, a1, "/admin/links").await;
    assert_eq!((links["node_id"].as_str(), links["published"].as_bool()), (Some("n1"), Some(true)));
    assert_eq!(links["links"][0]["protocol"], 2);
}

/// Reads server-sent events from `resp` until `n` `state` events arrived.
async fn sse_states(resp: &mut reqwest::Response, n: usize) -> Vec<Value> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(WAIT, resp.chunk()).await.expect("an event in time").unwrap().expect("more");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.lines().any(|l| l == "event: state") {
                let data: String = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                out.push(serde_json::from_str(&data).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_serves_its_page_and_bounded_live_updates() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let client = http();
    let min = Duration::from_millis(300);
    let admin = AdminConfig { max_event_streams: 2, event_min_interval: min, ..AdminConfig::with_token(TOKEN) };
    let (_n1, a1) = admin_node(&store, "n1", dir.path(), admin).await;

    let resp = client.get(format!("http://{a1}/ui/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let page = resp.text().await.unwrap();
    assert!(page.contains("<script src=\"/ui/app.js\"") && page.contains("\"node_id\":\"n1\""), "{page}");
    assert!(!page.contains("__STATE__"));
    for (asset, kind) in [("/ui/app.js", "javascript"), ("/ui/app.css", "css")] {
        let r = client.get(format!("http://{a1}{asset}")).send().await.unwrap();
        assert!(r.headers()["content-type"].to_str().unwrap().contains(kind), "{asset}");
    }

    let (_, state) = get(&client, a1, "/ui/state").await;
    let fancy = state["flags"].as_array().unwrap().iter().find(|f| f["name"] == "fancy").unwrap().clone();
    assert_eq!((fancy["state"].as_str(), fancy["blockers"].as_array().map(Vec::len)), (Some("disabled"), Some(0)));
    assert_eq!(state["releases"], json!(["1.0", "1.1", "1.2", "2.0"]));
    assert_eq!(state["release_floor"], Value::Null);

    let mut first = client.get(format!("http://{a1}/ui/events")).send().await.unwrap();
    let mut second = client.get(format!("http://{a1}/ui/events")).send().await.unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let (s, refused) = get(&client, a1, "/ui/events").await;
    assert_eq!(s, 503);
    assert!(refused["error"]["message"].as_str().unwrap().contains("close other dashboard tabs"), "{refused}");

    let initial = sse_states(&mut first, 1).await;
    assert_eq!(initial[0]["node"]["node_id"], "n1");
    let (s, _) =
        post(&client, a1, "/admin/flags/enable", TOKEN, json!({"flags": ["fancy"], "experimental": true})).await;
    assert_eq!(s, 200);
    let next = sse_states(&mut first, 1).await;
    let gap_ms = next[0]["generated_ms"].as_u64().unwrap() - initial[0]["generated_ms"].as_u64().unwrap();
    assert!(gap_ms + 1 >= min.as_millis() as u64, "events of one stream are at least {min:?} apart, not {gap_ms} ms");
    let mut latest = next[0].clone();
    while latest["flags"].as_array().unwrap().iter().find(|f| f["name"] == "fancy").unwrap()["state"] != "enabled" {
        latest = sse_states(&mut first, 1).await[0].clone();
    }
    assert_eq!(latest["audit"][0]["action"], "enable");
    let _ = sse_states(&mut second, 1).await;
    drop(first);
    // A closed stream gives its place back.
    let mut third = None;
    for _ in 0..50 {
        let r = client.get(format!("http://{a1}/ui/events")).send().await.unwrap();
        if r.status() == 200 {
            third = Some(r);
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(third.is_some(), "the stream's permit was released");
}

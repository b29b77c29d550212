//! Bad input at the service: garbage on the data port (random bytes, a huge
//! length prefix, broken frames after a real handshake, requests over every
//! limit, a peer breaking the request/answer roles) and on the HTTP port
//! (malformed HTTP, bad paths and keys, oversized keys and values, bad
//! parameters). Each gets a clear error, the node keeps serving, and nothing
//! stored changes. Random bytes come from a printed seed
//! (`ROLLGATE_KV_SEED` re-runs one).

use std::time::Duration;

use crate::support::*;
use rand::{Rng, SeedableRng};
use rollgate::api::error::ErrorBody;
use rollgate::handshake::HandshakeConfig;
use rollgate::net::{self, NetConfig, frame_kind};
use rollgate::version::ProtocolVersion;
use rollgate_kv::digest::v1 as digest;
use rollgate_kv::hlc::Version;
use rollgate_kv::peer::codec::{self, Incoming, Request, Response};
use rollgate_kv::releases::find;
use rollgate_kv::replication::{v1 as repl1, v2 as repl2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the node closes the connection; returns what it sent.
async fn closed_by_node(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    match read {
        Ok(Ok(_)) => out,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => out,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: the node did not close the connection"),
    }
}

fn peer_config(cluster_id: &str) -> HandshakeConfig {
    let r = find("1.2").unwrap();
    HandshakeConfig::new("garbage-peer", "1.2", cluster_id, r.protocols, r.transport_set())
}

fn entry(key: String, value: Vec<u8>) -> repl1::Entry {
    repl1::Entry {
        key,
        version: Version { wall_ms: 1, logical: 0, node: "garbage-peer".into() },
        value: repl1::Value::Put(value),
        expires_at_ms: 0,
        features: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_data_port_is_refused_and_the_node_keeps_serving() {
    let seed = rollgate_testkit::seed("ROLLGATE_KV_SEED");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let node = start(&store, "1.2", &data(tmp.path(), "n1")).await;
    let c = single(&node.addresses().admin.to_string());
    c.put("before", "kept", None).await.unwrap();
    let addr = node.addresses().data;

    let mut random = vec![0u8; 4096];
    rng.fill_bytes(&mut random);
    let before_handshake: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("an HTTP request", b"GET /kv/before HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a 4 GiB handshake length", [&b"RGHS\x01\x01"[..], &[0xff, 0xff], &u32::MAX.to_be_bytes()].concat()),
    ];
    for (what, bytes) in &before_handshake {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        closed_by_node(&mut s, what).await;
    }

    // After a real handshake: a 4 GiB data frame, a frame of random bytes,
    // a frame of another protocol version.
    let cfg = peer_config(node.cluster_id());
    let mut body = vec![0u8; 64];
    rng.fill_bytes(&mut body);
    let t = find("1.2").unwrap().transport;
    let after_handshake: Vec<(&str, Vec<u8>)> = vec![
        ("a 4 GiB data frame", net::encode_header(frame_kind::DATA, ProtocolVersion(3), t, u32::MAX).to_vec()),
        ("random frame bytes", [&net::encode_header(frame_kind::DATA, ProtocolVersion(3), t, 64)[..], &body].concat()),
        ("another protocol version", net::encode_header(frame_kind::DATA, ProtocolVersion(1), t, 0).to_vec()),
    ];
    for (what, bytes) in &after_handshake {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let n = net::initiate(&mut s, &cfg).await.unwrap();
        assert_eq!(n.protocol, ProtocolVersion(3));
        s.write_all(bytes).await.unwrap();
        closed_by_node(&mut s, what).await;
    }

    // A peer that is not a running member is not served (I11): its link is closed.
    let conn = net::connect::<rollgate_kv::Msg>(addr, NetConfig::new(cfg.clone())).await.unwrap();
    let (_tx, mut rx) = conn.split();
    let end = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "a non-member's link stays open: {end:?}");
    // The garbage peer joins (unreachable itself) for what follows; it leaves before the last write.
    let peer_live = hand_made_member(&node, "garbage-peer").await;

    // Well-formed requests over every limit: each answered with an error, nothing stored.
    let conn = net::connect::<rollgate_kv::Msg>(addr, NetConfig::new(cfg.clone())).await.unwrap();
    let p = conn.negotiated().protocol;
    let (tx, mut rx) = conn.split();
    let requests = vec![
        (
            "a key over 1 KiB",
            Request::Replicate(repl1::Replicate { req_id: 1, entry: entry("k".repeat(1025), vec![1]) }),
        ),
        (
            "an empty node id in a version",
            Request::Replicate(repl1::Replicate {
                req_id: 3,
                entry: repl1::Entry { version: Version::default(), ..entry("nobody".into(), vec![1]) },
            }),
        ),
        (
            "a sync bound longer than any key",
            Request::Sync(repl1::SyncRequest {
                req_id: 5,
                after_key: Some("x".repeat(5000)),
                limit: 10,
                end_key: None,
                max_bytes: 0,
            }),
        ),
        (
            "too many digest ranges",
            Request::Digest(digest::DigestRequest {
                req_id: 6,
                ranges: (0..100).map(|_| digest::KeyRange { after: None, through: None }).collect(),
            }),
        ),
    ];
    for (what, req) in requests {
        let id = req.req_id();
        tx.send(codec::request_to_wire(p, req).unwrap()).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap().unwrap();
        let error = match codec::from_wire(answer) {
            Incoming::Response(Response::Ack(a)) => a.error,
            Incoming::Response(Response::SyncChunk(c)) => c.error,
            Incoming::Response(Response::Digest(d)) => d.error,
            other => panic!("{what}: {other:?}"),
        };
        let error = error.unwrap_or_else(|| panic!("{what}: accepted"));
        println!("{what}: {error}");
        assert!(!error.is_empty());
        let _ = id;
    }
    // A peer answering on its own connection breaks the roles: closed.
    tx.send(codec::response_to_wire(p, Response::Ack(repl1::Ack { req_id: 9, error: None })).unwrap()).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");

    // A batch over the limit: refused from its length prefix, before any
    // entry is decoded, so the frame does not decode and the connection is closed.
    let conn = net::connect::<rollgate_kv::Msg>(addr, NetConfig::new(cfg.clone())).await.unwrap();
    let batch = Request::ReplicateBatch(repl2::ReplicateBatch {
        req_id: 4,
        entries: (0..5000).map(|i| entry(format!("batch-{i}"), vec![])).collect(),
    });
    conn.send(codec::request_to_wire(p, batch).unwrap()).await.unwrap();
    let (_tx, mut rx) = conn.split();
    let end = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");

    // A value over the node's wire limit (1 Mi items per collection): the
    // frame does not decode and the connection is closed.
    let mut big = cfg.clone();
    big.limits.max_collection_len = 4 << 20;
    let conn = net::connect::<rollgate_kv::Msg>(addr, NetConfig::new(big)).await.unwrap();
    let req = Request::Replicate(repl1::Replicate { req_id: 2, entry: entry("big".into(), vec![0; (1 << 20) + 1]) });
    conn.send(codec::request_to_wire(p, req).unwrap()).await.unwrap();
    let (_tx, mut rx) = conn.split();
    let end = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");

    // The node still serves, and nothing of the above was stored.
    remove_hand_made_member(&node, "garbage-peer", peer_live).await;
    c.put("after", "ok", None).await.unwrap();
    assert_eq!(c.get("before").await.unwrap().as_deref(), Some(&b"kept"[..]));
    for key in ["nobody", "big", "batch-0"] {
        assert_eq!(node.local_record(key).await.unwrap(), None, "{key}");
    }
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_http_port_gets_clear_errors_and_changes_nothing() {
    let seed = rollgate_testkit::seed("ROLLGATE_KV_SEED");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let node = start(&store, "1.0", &data(tmp.path(), "n1")).await;
    let admin = node.addresses().admin;
    let c = single(&admin.to_string());
    c.put("keep", "v", None).await.unwrap();

    // Malformed HTTP on a raw socket: a 400, or the connection closed.
    let mut random = vec![0u8; 2048];
    rng.fill_bytes(&mut random);
    for (what, bytes) in [
        ("random bytes", [&random[..], b"\r\n\r\n"].concat()),
        ("a broken request line", b"GET /kv/\x00\x01 HTTP/9.9\r\n\r\n".to_vec()),
        (
            "a huge content length",
            b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec(),
        ),
        ("a header flood", [&b"GET /health HTTP/1.1\r\n"[..], &b"X-A: b\r\n".repeat(20_000), b"\r\n"].concat()),
    ] {
        let mut s = TcpStream::connect(admin).await.unwrap();
        let _ = s.write_all(&bytes).await;
        let answer = closed_by_node(&mut s, what).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || text.starts_with("HTTP/1.1 4"), "{what}: {text}");
    }

    let http = reqwest::Client::builder().use_preconfigured_tls(rollgate::tls::plain_client()).build().unwrap();
    let url = |path: &str| format!("http://{admin}{path}");
    // (what, method, url, body, status, code)
    type Case = (&'static str, reqwest::Method, String, Vec<u8>, u16, &'static str);
    let cases: Vec<Case> = vec![
        ("unknown path", reqwest::Method::GET, url("/nope"), vec![], 404, "not_found"),
        ("empty key", reqwest::Method::GET, url("/kv/"), vec![], 404, "not_found"),
        ("a key that is not UTF-8", reqwest::Method::PUT, url("/kv/%FF%FE"), b"v".to_vec(), 400, "invalid_key"),
        ("a control character", reqwest::Method::PUT, url("/kv/a%0Ab"), b"v".to_vec(), 400, "invalid_key"),
        (
            "a key over 1 KiB",
            reqwest::Method::PUT,
            url(&format!("/kv/{}", "k".repeat(1025))),
            b"v".to_vec(),
            413,
            "key_too_long",
        ),
        ("a value over 1 MiB", reqwest::Method::PUT, url("/kv/big"), vec![7; (1 << 20) + 1], 413, "value_too_large"),
        ("a bad ttl", reqwest::Method::PUT, url("/kv/k1?ttl_s=soon"), b"v".to_vec(), 400, "bad_request"),
        (
            "an unknown parameter",
            reqwest::Method::PUT,
            url("/kv/k2?consistency=all"),
            b"v".to_vec(),
            400,
            "bad_request",
        ),
        ("a ttl on 1.0", reqwest::Method::PUT, url("/kv/k3?ttl_s=5"), b"v".to_vec(), 400, "ttl_not_supported"),
        ("a parameter on delete", reqwest::Method::DELETE, url("/kv/keep?force=1"), vec![], 400, "bad_request"),
        ("a wrong method", reqwest::Method::POST, url("/kv/keep"), b"v".to_vec(), 405, "method_not_allowed"),
        ("a missing key", reqwest::Method::GET, url("/kv/absent"), vec![], 404, "not_found"),
    ];
    for (what, method, url, body, status, code) in cases {
        let resp = http.request(method, &url).body(body).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let body: ErrorBody = resp.json().await.unwrap_or_else(|e| panic!("{what}: not an error body: {e}"));
        assert_eq!(body.error.code, code, "{what}: {body:?}");
        assert!(!body.error.message.is_empty(), "{what}: {body:?}");
    }

    // Still serving; nothing changed.
    assert_eq!(c.get("keep").await.unwrap().as_deref(), Some(&b"v"[..]));
    for key in ["big", "k1", "k2", "k3"] {
        assert_eq!(node.local_record(key).await.unwrap(), None, "{key}");
    }
    c.put("after", "ok", None).await.unwrap();
    let health = http.get(url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let h: serde_json::Value = health.json().await.unwrap();
    assert_eq!((h["state"].as_str(), h["release"].as_str()), (Some("ready"), Some("1.0")), "{h}");
    node.stop().await.unwrap();
}

/// The client API and rollgate's admin API share the HTTP listener, and
/// answer errors in one shape: rollgate's `ErrorBody`,
/// `{"error": {"code", "message"}}`. The client reads its code and message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_admin_api_errors_on_one_listener_decode_into_one_error_body() {
    let tmp = tempfile::tempdir().unwrap();
    let store = redb_store(tmp.path()).await;
    let node = start(&store, "1.0", &data(tmp.path(), "n1")).await;
    let admin = node.addresses().admin;
    let http = reqwest::Client::builder().use_preconfigured_tls(rollgate::tls::plain_client()).build().unwrap();
    let url = |path: &str| format!("http://{admin}{path}");
    // (what, request, status, code)
    let cases = [
        ("client API, a missing key", http.get(url("/kv/absent")), 404, "not_found"),
        ("client API, a bad ttl", http.put(url("/kv/k?ttl_s=soon")).body("v"), 400, "bad_request"),
        ("client API, a wrong method", http.post(url("/kv/k")).body("v"), 405, "method_not_allowed"),
        ("an unknown path", http.get(url("/nope")), 404, "not_found"),
        ("admin API, an unknown flag", http.get(url("/admin/flags/no_such_flag")), 404, "unknown_flag"),
        ("admin API, a plan without a target", http.get(url("/admin/upgrade/plan")), 400, "bad_query"),
        (
            "admin API, a mutation without a token configured",
            http.post(url("/admin/flags/enable")).json(&serde_json::json!({"all": true})),
            403,
            "admin_token_not_configured",
        ),
    ];
    for (what, request, status, code) in cases {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(content_type.as_deref(), Some("application/json"), "{what}");
        let bytes = resp.bytes().await.unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{what}: not an ErrorBody ({e}): {}", String::from_utf8_lossy(&bytes)));
        assert_eq!(body.error.code, code, "{what}: {body:?}");
        assert!(!body.error.message.is_empty(), "{what}: {body:?}");
    }

    let refused = single(&admin.to_string()).put("k", "v", Some(5)).await.unwrap_err();
    match refused {
        rollgate_kv::ClientError::Refused { status, code, message, .. } => {
            assert_eq!((status, code.as_str()), (400, "ttl_not_supported"), "{message}");
            assert!(message.contains("release 1.0"), "{message}");
        }
        other => panic!("expected a refusal, got {other}"),
    }
    node.stop().await.unwrap();
}

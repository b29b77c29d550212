//! The admin HTTP API on a real loopback listener: what each endpoint
//! returns, and bad input of every kind (unknown flags, bad JSON, huge
//! bodies, bad query strings, missing or wrong tokens, garbage bytes): a
//! clear JSON error with a fitting status, and nothing changed in the store.

use std::time::Duration;

use crate::flags_support::*;
use rollgate::admin::AdminConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "test-admin-token-0123";

struct Api {
    addr: std::net::SocketAddr,
    client: reqwest::Client,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, token, Some(serde_json::to_vec(&body).unwrap())).await
    }
}

fn error_of(body: &Value) -> (&str, &str) {
    (body["error"]["code"].as_str().unwrap_or("?"), body["error"]["message"].as_str().unwrap_or("?"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_with_their_documented_shapes() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let mut nodes = rolled_cluster(&store, dir.path(), &["n1", "n2"], "1.0", &counters).await;
    let n2 = nodes.pop().unwrap();
    nodes.pop().unwrap().stop().await.unwrap();
    let (n1, addr, _srv) =
        start_with_admin(&store, config("n1", "1.2", dir.path(), &counters), AdminConfig::with_token(TOKEN)).await;
    let api = Api { addr, client: http() };

    let (status, flags) = api.get("/admin/flags").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = flags["flags"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["base", "batch", "compact", "fancy", "ttl"]);
    let (status, ttl) = api.get("/admin/flags/ttl").await;
    assert_eq!(status, 200);
    assert_eq!(ttl["state"], "disabled");
    assert_eq!(ttl["introduced_in"], "1.1");
    assert_eq!(ttl["lacking"], json!(["n2"]), "n2 runs 1.0");
    assert_eq!(ttl["node_step"], true);
    assert_eq!(ttl["doc_url"], "https://example.invalid/ttl");

    let (status, nodes_json) = api.get("/admin/nodes").await;
    assert_eq!(status, 200);
    let rows: Vec<(String, String, String)> = nodes_json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_str().unwrap().into(),
                n["release"].as_str().unwrap().into(),
                n["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(rows, [("n1".into(), "1.2".into(), "running".into()), ("n2".into(), "1.0".into(), "running".into())]);

    let (status, features) = api.get("/admin/features").await;
    assert_eq!(status, 200);
    assert_eq!(features["cluster_features"], json!(["kv_v1"]));

    let (status, up) = api.get("/admin/upgrade/status").await;
    assert_eq!(status, 200);
    assert_eq!(up["mixed_releases"], true);
    assert_eq!(up["releases"][0]["release"], "1.0");
    assert_eq!(up["flags"]["enabled"], json!(["base"]));
    assert_eq!(up["flags"]["blocked"][0], json!({"flag": "batch", "lacking": ["n2"]}));
    assert!(up["sections"].is_object(), "the extension point");
    n1.set_status_section(
        "migrations",
        std::sync::Arc::new(|| Box::pin(async { json!([{"name": "m1", "state": "done"}]) })),
    );
    assert_eq!(api.get("/admin/upgrade/status").await.1["sections"]["migrations"][0]["state"], "done");

    let (status, plan) = api.get("/admin/upgrade/plan?to=2.0").await;
    assert_eq!(status, 200, "{plan}");
    let actions: Vec<&str> = plan["steps"].as_array().unwrap().iter().map(|s| s["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["upgrade_nodes", "enable_flags", "upgrade_nodes", "enable_flags"], "{plan}");
    assert_eq!(plan["steps"][0]["nodes"], json!(["n2"]));
    assert_eq!(plan["steps"][0]["release"], "1.2", "a release that supports ttl without requiring it");
    assert_eq!(plan["steps"][1]["command"], "rollgate flags enable ttl");

    // Enable through the API (dry run first), then forget a stopped node.
    n2.stop().await.unwrap();
    let (status, dry) =
        api.post("/admin/flags/enable", Some(TOKEN), json!({"flags": ["batch"], "dry_run": true})).await;
    assert_eq!(status, 200);
    assert_eq!(dry["order"], json!(["ttl", "batch"]));
    assert_eq!(dry["blockers"][0]["kind"], "not_supported", "{dry}");
    let (status, _) = api.send(reqwest::Method::DELETE, "/admin/nodes/n2", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let (status, done) = api.post("/admin/flags/enable", Some(TOKEN), json!({"flags": ["batch"]})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["enabled"], json!(["ttl", "batch"]));
    let (status, done) = api.post("/admin/flags/enable", Some(TOKEN), json!({"all": true})).await;
    assert_eq!((status, &done["enabled"]), (200, &json!(["compact"])));
    let (status, off) = api.post("/admin/flags/disable", Some(TOKEN), json!({"flag": "compact"})).await;
    assert_eq!((status, &off["changed"]), (200, &json!(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let mut nodes = rolled_cluster(&store, dir.path(), &["n1", "n2"], "1.0", &counters).await;
    let _n2 = nodes.pop().unwrap();
    nodes.pop().unwrap().stop().await.unwrap();
    let mut admin = AdminConfig::with_token(TOKEN);
    admin.max_body_bytes = 4096;
    let (_n1, addr, _srv) = start_with_admin(&store, config("n1", "1.2", dir.path(), &counters), admin).await;
    let api = Api { addr, client: http() };
    let before = snapshot(&store).await;
    let post = reqwest::Method::POST;

    type Case = (
        &'static str,
        reqwest::Method,
        &'static str,
        Option<&'static str>,
        Option<Vec<u8>>,
        u16,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "no token",
            post.clone(),
            "/admin/flags/enable",
            None,
            Some(br#"{"flags":["ttl"]}"#.to_vec()),
            401,
            "unauthorized",
            "Authorization: Bearer",
        ),
        (
            "wrong token",
            post.clone(),
            "/admin/flags/enable",
            Some("wrong-token-xyz"),
            Some(br#"{"flags":["ttl"]}"#.to_vec()),
            401,
            "unauthorized",
            "wrong admin token",
        ),
        (
            "bad JSON",
            post.clone(),
            "/admin/flags/enable",
            Some(TOKEN),
            Some(b"{\"flags\": [".to_vec()),
            400,
            "bad_json",
            "bad JSON body",
        ),
        (
            "not an object",
            post.clone(),
            "/admin/flags/enable",
            Some(TOKEN),
            Some(b"42".to_vec()),
            400,
            "bad_json",
            "bad JSON body",
        ),
        (
            "unknown field",
            post.clone(),
            "/admin/flags/enable",
            Some(TOKEN),
            Some(br#"{"flag":"ttl"}"#.to_vec()),
            400,
            "bad_json",
            "unknown field `flag`",
        ),
        (
            "bad flag name",
            post.clone(),
            "/admin/flags/enable",
            Some(TOKEN),
            Some(br#"{"flags":["Bad-Name"]}"#.to_vec()),
            400,
            "bad_flag_name",
            "invalid flag name",
        ),
        (
            "unknown flag",
            post.clone(),
            "/admin/flags/enable",
            Some(TOKEN),
            Some(br#"{"flags":["nope"]}"#.to_vec()),
            404,
            "unknown_flag",
            "unknown feature flag `nope`",
        ),
        (
            "refused",
            post.clone(),
            "/admin/flags/enable",
            Some(TOKEN),
            Some(br#"{"flags":["ttl"]}"#.to_vec()),
            409,
            "refused",
            "node n2 (release 1.0, running) does not support it",
        ),
        (
            "experimental",
            post.clone(),
            "/admin/flags/enable",
            Some(TOKEN),
            Some(br#"{"flags":["fancy"]}"#.to_vec()),
            409,
            "refused",
            "pass --experimental",
        ),
        (
            "huge body",
            post.clone(),
            "/admin/flags/enable",
            Some(TOKEN),
            Some(vec![b' '; 100_000]),
            413,
            "body_too_large",
            "larger than",
        ),
        (
            "garbage body",
            post.clone(),
            "/admin/flags/enable",
            Some(TOKEN),
            Some(vec![0xff, 0x00, 0x13, 0x37]),
            400,
            "bad_json",
            "bad JSON body",
        ),
        (
            "irreversible",
            post.clone(),
            "/admin/flags/disable",
            Some(TOKEN),
            Some(br#"{"flag":"base"}"#.to_vec()),
            409,
            "refused",
            "is not reversible",
        ),
        (
            "disable unknown",
            post.clone(),
            "/admin/flags/disable",
            Some(TOKEN),
            Some(br#"{"flag":"nope"}"#.to_vec()),
            404,
            "unknown_flag",
            "unknown feature flag",
        ),
        (
            "forget running",
            reqwest::Method::DELETE,
            "/admin/nodes/n2",
            Some(TOKEN),
            None,
            409,
            "node_running",
            "is running",
        ),
        (
            "forget unknown",
            reqwest::Method::DELETE,
            "/admin/nodes/ghost",
            Some(TOKEN),
            None,
            404,
            "unknown_node",
            "not a member",
        ),
        (
            "forget bad id",
            reqwest::Method::DELETE,
            "/admin/nodes/..x",
            Some(TOKEN),
            None,
            400,
            "bad_node_id",
            "invalid node id",
        ),
        ("forget no token", reqwest::Method::DELETE, "/admin/nodes/n2", None, None, 401, "unauthorized", "Bearer"),
        (
            "unknown flag info",
            reqwest::Method::GET,
            "/admin/flags/nope",
            None,
            None,
            404,
            "unknown_flag",
            "unknown feature flag `nope`",
        ),
        (
            "bad flag info",
            reqwest::Method::GET,
            "/admin/flags/NO%20PE",
            None,
            None,
            400,
            "bad_flag_name",
            "invalid flag name",
        ),
        ("unknown path", reqwest::Method::GET, "/admin/nothing", None, None, 404, "not_found", "no admin endpoint"),
        (
            "wrong method",
            reqwest::Method::GET,
            "/admin/flags/enable",
            None,
            None,
            405,
            "method_not_allowed",
            "does not accept",
        ),
        (
            "caps unknown param",
            reqwest::Method::GET,
            "/_capabilities?path=/x&bogus=1",
            None,
            None,
            400,
            "bad_query",
            "unknown field `bogus`",
        ),
        (
            "caps no path",
            reqwest::Method::GET,
            "/_capabilities?method=GET",
            None,
            None,
            400,
            "bad_query",
            "`path` parameter is required",
        ),
        (
            "caps bad method",
            reqwest::Method::GET,
            "/_capabilities?method=FETCH&path=/x",
            None,
            None,
            400,
            "bad_query",
            "unknown HTTP method",
        ),
        (
            "caps bad local_only",
            reqwest::Method::GET,
            "/_capabilities?path=/x&local_only=maybe",
            None,
            None,
            400,
            "bad_query",
            "local_only must be true or false",
        ),
        (
            "caps bad name",
            reqwest::Method::GET,
            "/_capabilities?path=/x&parameters=a%20b",
            None,
            None,
            400,
            "bad_query",
            "invalid parameter name",
        ),
        (
            "plan unknown release",
            reqwest::Method::GET,
            "/admin/upgrade/plan?to=9.9",
            None,
            None,
            404,
            "unknown_release",
            "release 9.9 is not in the release table",
        ),
        (
            "plan without target",
            reqwest::Method::GET,
            "/admin/upgrade/plan",
            None,
            None,
            400,
            "bad_query",
            "?to=RELEASE",
        ),
        (
            "plan bad query",
            reqwest::Method::GET,
            "/admin/upgrade/plan?to=1.0&x=y",
            None,
            None,
            400,
            "bad_query",
            "unknown field",
        ),
    ];
    for (what, method, path, token, body, want_status, want_code, want_text) in cases {
        let (status, json) = api.send(method, path, token, body).await;
        let (code, message) = error_of(&json);
        assert_eq!((status, code), (want_status, want_code), "{what}: {json}");
        assert!(message.contains(want_text), "{what}: {message:?} lacks {want_text:?}");
    }
    // A query string over the limit.
    let long = format!("/_capabilities?path=/x&parameters={}", "a,".repeat(5000));
    let (status, json) = api.get(&long).await;
    assert_eq!((status, error_of(&json).0), (414, "query_too_long"));
    // Raw garbage on the admin port: the server answers or closes, and keeps serving.
    for garbage in [&b"\x00\x01\x02garbage\r\n\r\n"[..], b"GET /admin/flags HTTP/9.9\r\n\r\n", &[0xffu8; 3000][..]] {
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(garbage).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut buf)).await;
    }
    assert_eq!(snapshot(&store).await, before, "nothing changed");
    assert_eq!(api.get("/admin/flags/ttl").await.0, 200, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_token_mutations_are_refused_with_how_to_configure_one() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let (_n1, addr, _srv) =
        start_with_admin(&store, config("n1", "1.2", dir.path(), &counters), AdminConfig::default()).await;
    let api = Api { addr, client: http() };
    let before = snapshot(&store).await;
    for token in [None, Some("anything-at-all")] {
        let (status, json) =
            api.post("/admin/flags/enable", token, json!({"flags": ["fancy"], "experimental": true})).await;
        let (code, message) = error_of(&json);
        assert_eq!((status, code), (403, "admin_token_not_configured"));
        assert!(message.contains("no admin token is configured") && message.contains("--token-file"), "{message}");
    }
    assert_eq!(snapshot(&store).await, before);
    assert_eq!(api.get("/admin/flags").await.0, 200, "reads need no token");
}

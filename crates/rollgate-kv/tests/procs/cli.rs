//! The `rollgate-kv` command line: `releases`, bad arguments (exit 2 with
//! the fix), and one real `serve` process on an embedded redb metadata
//! store driven by `put`, `get` and `delete`, stopped with SIGTERM.

use crate::process::{Proc, run};

#[test]
fn releases_prints_a_table_and_json() {
    let (code, out, err) = run(&["releases"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("RELEASE") && lines[0].contains("PROTOCOL") && lines[0].contains("MIN COMPATIBLE"),
        "{out}"
    );
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[4].trim_start().starts_with("2.0") && lines[4].contains("v2..=v4"), "{out}");
    // Aligned: every row starts its protocol column at the same offset.
    let col = lines[0].find("PROTOCOL").unwrap();
    assert!(lines[1..].iter().all(|l| l[col..].starts_with('v')), "{out}");

    let (code, out, _) = run(&["releases", "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let all = json.as_array().unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[3]["release"], "2.0");
    assert_eq!(all[3]["protocol"], serde_json::json!({"min": 2, "max": 4}));
    assert_eq!(all[3]["minimum_compatible"], all[2]["transport"], "2.0 accepts 1.2 and later");
    for r in all {
        for field in ["flags", "cluster_features", "plugins"] {
            assert!(r[field].is_array(), "{r}");
        }
        assert!(r["storage_formats"]["readable"]["max"].is_u64(), "{r}");
    }
    // What each release exercises: flags with stability, dependencies and
    // reversibility, cluster features, storage formats, plugins.
    let ttl = all[1]["flags"].as_array().unwrap().iter().find(|f| f["name"] == "ttl").unwrap().clone();
    assert_eq!(ttl["depends_on"], serde_json::json!(["record_meta_v2"]), "{ttl}");
    assert_eq!((ttl["stability"].as_str(), ttl["reversible"].as_bool()), (Some("stable"), Some(false)), "{ttl}");
    let checks = all[2]["flags"].as_array().unwrap().iter().find(|f| f["name"] == "value_checksums").unwrap().clone();
    assert_eq!(checks["stability"], "experimental", "{checks}");
    assert_eq!(all[3]["flags"][0]["stability"], "required");
    assert_eq!(all[2]["cluster_features"], serde_json::json!(["kv.prefix_scan"]));
    assert_eq!(all[0]["storage_formats"]["readable"], serde_json::json!({"min": 1, "max": 1}));
    assert_eq!(all[3]["storage_formats"]["readable"], serde_json::json!({"min": 2, "max": 3}));
    assert_eq!(all[2]["plugins"][0]["name"], "audit");
    // The life of versions and features: 1.2 deprecates protocol v1 (2.0
    // retires it), 2.0 assumes 1.x's feature and requires record_meta_v2.
    assert_eq!(all[2]["deprecated_protocols"], serde_json::json!([1]));
    assert_eq!(
        (&all[3]["cluster_features"], &all[3]["assumed_features"], &all[3]["required_flags"]),
        (&serde_json::json!([]), &serde_json::json!(["kv.prefix_scan"]), &serde_json::json!(["record_meta_v2"]))
    );
    assert!(lines[0].contains("ASSUMED") && lines[0].contains("DEPRECATED"), "{out}");
    assert!(lines[3].contains("v1") && lines[4].contains("kv.prefix_scan"), "{out}");
}

#[test]
fn bad_arguments_exit_2_and_say_what_to_fix() {
    let serve = |release: &str, meta: &str| {
        run(&[
            "serve",
            "--release",
            release,
            "--data",
            "/nonexistent/x",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--meta",
            meta,
        ])
    };
    let (code, _, err) = serve("9.9", "mem:");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown release `9.9`: known releases are 1.0, 1.1, 1.2, 2.0"), "{err}");
    let (code, _, err) = serve(&"1".repeat(100_000), "mem:");
    assert_eq!(code, 2);
    assert!(err.len() < 2_000, "a huge argument is not echoed in full: {} bytes", err.len());
    let (code, _, err) = serve("1.2", "bogus:whatever");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid metadata store URL") && err.contains("redb:PATH"), "{err}");
    let (code, _, err) = run(&["put", "--node", "not an address", "k", "v"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid node address"), "{err}");
    let (code, _, err) = run(&["put", "k", "v"]);
    assert_eq!(code, 2, "--node is required: {err}");
    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, 2, "{err}");
    let base = ["serve", "--release", "1.2", "--data", "/nonexistent/x", "--listen", "127.0.0.1:0", "--meta", "mem:"];
    let (code, _, err) = run(&[&base[..], &["--liveness-ttl-s", "0"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--liveness-ttl-s"), "{err}");
    // The fault tests' dial overrides, garbled: refused before anything starts.
    for garbage in ["b", "b=nowhere", "bad id=127.0.0.1:1", &format!("b={}", "9".repeat(10_000))] {
        let out = std::process::Command::new(crate::process::binary())
            .args(base)
            .env("ROLLGATE_KV_TEST_PEER_ADDRS", garbage)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{garbage:.40}: {err}");
        assert!(err.contains("ROLLGATE_KV_TEST_PEER_ADDRS") && err.len() < 2_000, "{err:.300}");
    }
    // Port 1 on loopback: nothing listens; not bad input, but a failure.
    let (code, _, err) = run(&["get", "--node", "127.0.0.1:1", "k"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_put_get_delete_and_a_graceful_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "x".repeat(10_000)).unwrap();
    std::fs::set_permissions(&token, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600))
        .unwrap();
    let meta = format!("redb:{}", tmp.path().join("meta.redb").display());
    let data = tmp.path().join("n1").display().to_string();
    let args = |release: &str, token: &std::path::Path| -> Vec<String> {
        [
            "serve",
            "--release",
            release,
            "--data",
            &data,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--meta",
            &meta,
            "--node-id",
            "cli-node",
            "--admin-token-file",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([token.display().to_string()])
        .collect()
    };
    // An oversized token file is refused before anything starts.
    let mut p = Proc::spawn(&args("1.0", &token), &tmp.path().join("bad.log"));
    let status = p.wait_exit();
    assert_eq!(status.code(), Some(2), "{}", p.log());
    assert!(p.logged("--admin-token-file") && p.logged("at most 1024"), "{}", p.log());

    std::fs::write(&token, "secret-token\n").unwrap();
    let mut p = Proc::spawn(&args("1.0", &token), &tmp.path().join("n1.log"));
    p.wait_ready();
    assert_eq!(p.node, "cli-node");
    let node = p.admin.clone();
    let (code, out, err) = run(&["put", "--node", &node, "greeting", "hello world"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acknowledged by 1 of 1 members"), "{out}");
    let (code, out, _) = run(&["get", "--node", &format!("127.0.0.1:1,{node}"), "greeting"]);
    assert_eq!((code, out.as_str()), (0, "hello world"), "failover past a dead address");
    let (code, _, err) = run(&["put", "--node", &node, "--ttl-s", "5", "k", "v"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ttl_not_supported") && err.contains("release 1.0"), "{err}");
    let (code, out, err) = run(&["delete", "--node", &node, "greeting"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted"), "{out}");
    let (code, _, err) = run(&["get", "--node", &node, "greeting"]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    let status = p.terminate();
    assert!(status.success(), "{status:?}\n{}", p.log());

    // Restarted as 1.1 on the same data dir: same node; a TTL needs the flag
    // `ttl`, enabled through the admin API on the same port with the token.
    let mut p = Proc::spawn(&args("1.1", &token), &tmp.path().join("n1.log"));
    p.wait_ready();
    assert_eq!(p.node, "cli-node");
    let (code, _, err) = run(&["put", "--node", &p.admin, "--ttl-s", "60", "k", "v"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("flag_not_enabled") && err.contains("rollgate flags enable ttl"), "{err}");
    let http = reqwest::Client::builder().use_preconfigured_tls(rollgate::tls::plain_client()).build().unwrap();
    let enable = |auth: Option<&'static str>| {
        let mut req = http
            .post(format!("http://{}/admin/flags/enable", p.admin))
            .header("content-type", "application/json")
            .body(r#"{"flags": ["ttl"]}"#);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let refused = enable(Some("Bearer wrong-token")).await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let resp = enable(Some("Bearer secret-token")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let report: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(report["enabled"], serde_json::json!(["record_meta_v2", "ttl"]), "dependencies first: {report}");
    let (code, _, err) = run(&["put", "--node", &p.admin, "--ttl-s", "60", "k", "v"]);
    assert_eq!(code, 0, "{err}");
    assert!(p.terminate().success());
}

/// `rollgate-kv load` against one node: a bounded run reported as JSON; bad
/// options exit 2 naming the option; nodes that do not answer make every
/// operation fail, which exits 1.
#[test]
fn load_runs_a_bounded_load_and_checks_it_or_says_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let meta = format!("redb:{}", tmp.path().join("meta.redb").display());
    let mut p = crate::process::start_node("1.0", "solo", tmp.path(), &meta, &[]);
    let (code, out, err) =
        run(&["load", "--node", &p.admin, "--ops", "60", "--rate", "2000", "--seed", "3", "--json", "--quiet"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(r["stopped_by"], "ops", "{r}");
    assert_eq!((r["seed"].as_u64(), r["prefix"].as_str()), (Some(3), Some("load-3-")), "{r}");
    assert!(r["ops_ok"].as_u64().unwrap() >= 60, "{r}");
    assert_eq!(r["ops_failed"], 0, "{r}");
    assert_eq!(r["acked_writes_lost"], 0, "{r}");
    let checked = r["keys_checked"].as_u64().unwrap();
    assert!(checked > 0 && checked <= r["ops_ok"].as_u64().unwrap(), "{r}");
    assert!(r["load"]["p99_ms"].as_f64().is_some(), "{r}");
    assert!(err.is_empty(), "--quiet: {err}");

    for (bad, option) in [
        (vec!["--rate", "0"], "--rate"),
        (vec!["--workers", "65"], "--workers"),
        (vec!["--ops", "0"], "--ops"),
        (vec!["--duration-s", "0"], "--duration-s"),
        (vec!["--prefix", "a/b"], "--prefix"),
        (vec!["--prefix", &"x".repeat(100_000)], "--prefix"),
        (vec!["--seed", "minus one"], "--seed"),
    ] {
        let mut args = vec!["load", "--node", p.admin.as_str(), "--quiet"];
        args.extend(bad.iter().map(|s| &**s));
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{option}: {err}");
        assert!(err.contains(option), "{option}: {err}");
        assert!(err.len() < 2_000, "a huge argument is not echoed in full: {} bytes", err.len());
    }
    let (code, _, err) = run(&["load", "--node", "not an address", "--ops", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid node address"), "{err}");

    // Port 1 on loopback: nothing listens; every operation fails.
    let (code, out, err) = run(&["load", "--node", "127.0.0.1:1", "--ops", "3", "--settle-s", "0", "--quiet"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("FAILED") && out.contains("cannot connect"), "{out}");
    assert!(p.terminate().success());
}

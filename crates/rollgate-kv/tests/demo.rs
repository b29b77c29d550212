//! `rollgate-kv demo --json` through the real binary: a rolling upgrade
//! under load on the embedded store, and the JSON object of the contract.

// Scenario tests read top to bottom, so a long one stays in one piece.
#![allow(clippy::too_many_lines)]

use std::process::Command;

use serde_json::Value;

fn demo(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rollgate-kv"))
        .arg("demo")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rollgate-kv demo");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_json_satisfies_the_contract() {
    let (code, stdout, stderr) = demo(&["--json", "--steady-s", "1", "--downtime-s", "0", "--seed", "7"]);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(code, 0, "the demo failed:\n{stdout}\n{stderr}");
    assert!(report["ops_ok"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["ops_failed"], 0, "{report}");
    assert_eq!(report["acked_writes_lost"], 0, "{report}");
    assert!(report["keys_checked"].as_u64().unwrap() > 0, "{report}");
    // Every read of a worker's own key returned its last acknowledged write.
    assert!(report["reads_checked"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["missed_reads"], 0, "{report}");
    assert_eq!(report["final_releases"], serde_json::json!(["1.2", "1.2", "1.2"]));
    // Every stable flag of 1.2 enabled, every node's migrations finished, and
    // what they unlock used: TTL writes and the prefix scan.
    assert_eq!(report["flags_enabled"], serde_json::json!(["record_meta_v2", "ttl"]), "{report}");
    // Then the floor goes up to 1.2: no 1.0 node may come back.
    assert_eq!(report["release_floor"], "1.2", "{report}");
    // The cluster settings moved step by step: 0 -> 1 once every member ran
    // 1.2 (the cluster feature), 1 -> 2 once `ttl` was enabled.
    let formats = report["service_formats"].to_string();
    assert!(
        formats.contains("kv_settings: format 2 (0->1 keyspace by n") && formats.contains("1->2 ttl by n"),
        "{formats}"
    );
    let done: Vec<&str> = report["migrations_done"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for node in ["n1", "n2", "n3"] {
        for m in ["records_meta_v2", "records_expiry_index"] {
            assert!(done.contains(&format!("{node}/{m}").as_str()), "{node}/{m} not done: {done:?}");
        }
    }
    let used = report["features_used"].to_string();
    assert!(used.contains("10 writes with a TTL"), "{used}");
    assert!(used.contains("prefix scan") && used.contains("(10 keys, as written)"), "{used}");

    let phases = report["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names[..4], ["steady at 1.0", "upgrade n1 to 1.2", "upgrade n2 to 1.2", "upgrade n3 to 1.2"]);
    for p in phases {
        for field in ["ops", "p50_ms", "p99_ms"] {
            assert!(p[field].is_number(), "phase {p} lacks {field}");
        }
    }
    assert!(phases[0]["ops"].as_u64().unwrap() > 0, "load ran before the upgrade: {}", phases[0]);

    // Mixed releases speak protocol v1; two 1.2 nodes speak v3; every link is authenticated.
    let negotiated = report["negotiated"].as_array().unwrap();
    let link = |from: &str, to: &str| {
        negotiated
            .iter()
            .find(|n| n["from"] == from && n["to"] == to)
            .unwrap_or_else(|| panic!("no {from} -> {to} link: {negotiated:?}"))
    };
    assert_eq!(link("1.2", "1.0")["protocol"], 1);
    assert_eq!(link("1.0", "1.2")["protocol"], 1);
    assert_eq!(link("1.2", "1.2")["protocol"], 3);
    assert!(link("1.2", "1.2")["transport"].as_u64().unwrap() > link("1.0", "1.0")["transport"].as_u64().unwrap());
    assert!(negotiated.iter().all(|n| n["authenticated"] == true), "{negotiated:?}");
    // ...over mutual TLS, and the client and the operator used HTTPS.
    assert!(negotiated.iter().all(|n| n["tls"] == true), "{negotiated:?}");
    assert_eq!(report["tls"], true, "{report}");
    assert!(stderr.contains("phase: upgrade n2 to 1.2"), "progress on stderr:\n{stderr}");
}

#[test]
fn demo_refuses_bad_options() {
    let (code, _, stderr) = demo(&["--nodes", "2"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--nodes"), "{stderr}");
    let (code, _, stderr) = demo(&["--from", "1.0", "--to", "2.0", "--quiet"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("release 1.0 cannot run next to 2.0"), "{stderr}");
    let (code, _, stderr) = demo(&["--to", "9.9"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("1.0, 1.1, 1.2, 2.0") || stderr.contains("known"), "{stderr}");
}

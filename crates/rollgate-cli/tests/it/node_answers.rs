//! The operator commands against answers this CLI does not expect: a node of
//! another API version (a field renamed, fields added) and garbage. A stand-in
//! node on loopback, in this test process, answers each request with a canned
//! response built from the API's own types, then altered.
//!
//! Tables decode the node's answer into `rollgate-api`'s types: an answer that
//! does not match exits 1 naming the endpoint (never a table of "-"), while
//! `--json` prints the answer as the node sent it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use rollgate_api::error::ErrorBody;
use rollgate_api::flags::{EnableRequest, FlagList, FlagPhase, FlagStatus, Stability};
use serde_json::{Value, json};

/// Most requests one stand-in node answers (each test sends a handful).
const MAX_REQUESTS: usize = 32;
/// Longest request head or body the stand-in reads.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// One canned response.
struct Canned {
    status: u16,
    body: String,
}

fn canned(status: u16, body: impl Into<String>) -> Canned {
    Canned { status, body: body.into() }
}

/// A request the stand-in received: `METHOD /path?query` and its body.
type Received = (String, String);

/// Serves `answers` (keyed by `METHOD /path`, the query left out) on a
/// loopback port, at most `MAX_REQUESTS` requests; other paths get the
/// API's 404. Returns the node's URL and the requests it received.
fn stand_in_node(answers: BTreeMap<&'static str, Canned>) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(MAX_REQUESTS) {
            let Ok(stream) = stream else { continue };
            let Some((target, body)) = read_request(&stream) else { continue };
            let key = target.split('?').next().unwrap_or_default().to_string();
            let fallback = canned(404, serde_json::to_string(&ErrorBody::new("not_found", "no such route")).unwrap());
            let answer = answers.get(key.as_str()).unwrap_or(&fallback);
            let _ = write_response(stream, answer);
            let _ = tx.send((target, body));
        }
    });
    (url, rx)
}

/// Reads one HTTP/1.1 request: `METHOD TARGET` and its body.
fn read_request(stream: &TcpStream) -> Option<(String, String)> {
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut reader = BufReader::new(stream.take(MAX_REQUEST_BYTES as u64));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let target = format!("{} {}", parts.next()?, parts.next()?);
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((target, String::from_utf8_lossy(&body).into_owned()))
}

fn write_response(mut stream: TcpStream, answer: &Canned) -> std::io::Result<()> {
    let reason = match answer.status {
        200 => "OK",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Other",
    };
    write!(
        stream,
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        answer.status,
        answer.body.len(),
        answer.body
    )?;
    stream.flush()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `rollgate --node URL args...`, expecting `code`.
fn rollgate(url: &str, args: &[&str], code: i32) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(["--node", url, "--timeout-s", "30"])
        .args(args)
        .env_remove("ROLLGATE_NODE")
        .env_remove("ROLLGATE_TOKEN_FILE")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(run.code, code, "rollgate {args:?}\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    run
}

/// `GET /admin/flags` of a 1.1 node whose `ttl` flag n2 lacks, as this API
/// version sends it.
fn flag_list() -> Value {
    let ttl = FlagStatus {
        name: "ttl".into(),
        state: FlagPhase::Disabled,
        known: true,
        description: "values may expire".into(),
        stability: Stability::Stable,
        introduced_in: "1.1".into(),
        depends_on: vec![],
        doc_url: None,
        provider: "kv".into(),
        reversible: false,
        node_step: false,
        owner: None,
        lacking: vec!["n2".into()],
        note: None,
        since_ms: None,
    };
    serde_json::to_value(FlagList { epoch: 3, flags: vec![ttl] }).unwrap()
}

fn answers(entries: Vec<(&'static str, Canned)>) -> BTreeMap<&'static str, Canned> {
    entries.into_iter().collect()
}

#[test]
fn a_renamed_field_fails_the_table_naming_the_endpoint_and_json_still_prints_it() {
    let mut list = flag_list();
    let lacking = list["flags"][0].as_object_mut().unwrap().remove("lacking").unwrap();
    list["flags"][0]["missing_on"] = lacking;
    let (url, _) = stand_in_node(answers(vec![("GET /admin/flags", canned(200, list.to_string()))]));

    let r = rollgate(&url, &["flags", "list"], 1);
    assert_eq!(r.stdout, "", "no table of guesses");
    for part in ["GET /admin/flags", "does not match this CLI's API version", "missing field `lacking`", "--json"] {
        assert!(r.stderr.contains(part), "{part:?} not in: {}", r.stderr);
    }
    let printed: Value = serde_json::from_str(&rollgate(&url, &["flags", "list", "--json"], 0).stdout).unwrap();
    assert_eq!(printed["flags"][0]["missing_on"], json!(["n2"]));
}

#[test]
fn fields_this_cli_does_not_know_are_ignored_in_tables_and_kept_in_json() {
    let mut list = flag_list();
    list["added_later"] = json!({"by": "a newer release"});
    list["flags"][0]["added_later"] = json!(true);
    let (url, _) = stand_in_node(answers(vec![("GET /admin/flags", canned(200, list.to_string()))]));

    let out = rollgate(&url, &["flags", "list"], 0).stdout;
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["ttl", "disabled", "stable", "1.1", "no", "n2", "values", "may", "expire"], "{out}");
    let printed: Value = serde_json::from_str(&rollgate(&url, &["flags", "list", "--json"], 0).stdout).unwrap();
    assert_eq!(printed["added_later"]["by"], "a newer release");
    assert_eq!(printed["flags"][0]["added_later"], true);
}

#[test]
fn requests_are_the_api_request_types() {
    let report = json!({"dry_run": true, "order": ["ttl"], "enabled": [], "already_enabled": [], "blockers": [], "messages": []});
    let (url, received) = stand_in_node(answers(vec![("POST /admin/flags/enable", canned(200, report.to_string()))]));
    let r = rollgate(&url, &["flags", "enable", "ttl", "--dry-run", "--json"], 0);
    assert_eq!(serde_json::from_str::<Value>(&r.stdout).unwrap(), report);
    let (target, body) = received.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(target, "POST /admin/flags/enable");
    // The server refuses unknown fields in requests (deny_unknown_fields).
    let request: EnableRequest = serde_json::from_str(&body).unwrap();
    assert_eq!(request, EnableRequest::flags(["ttl"]).dry_run());
}

#[test]
fn garbage_answers_exit_1_and_error_answers_keep_their_message() {
    let (url, _) = stand_in_node(answers(vec![
        ("GET /admin/features", canned(200, "not json")),
        ("GET /admin/nodes", canned(200, "[]")),
        ("POST /admin/flags/disable", canned(200, r#"{"flag": "ttl", "changed": "yes"}"#)),
        ("DELETE /admin/nodes/n2", canned(409, "<html>busy</html>")),
        ("GET /admin/upgrade/plan", canned(409, serde_json::to_string(&ErrorBody::new("refused", "not now")).unwrap())),
    ]));

    let r = rollgate(&url, &["features", "list"], 1);
    assert!(r.stderr.contains("the node answered 200 OK without JSON"), "{}", r.stderr);
    let r = rollgate(&url, &["nodes", "list"], 1);
    assert!(r.stderr.contains("GET /admin/nodes") && r.stderr.contains("API version"), "{}", r.stderr);
    let r = rollgate(&url, &["flags", "disable", "ttl"], 1);
    assert_eq!(r.stdout, "", "neither \"disabled\" nor \"nothing changed\" from an answer it cannot read");
    assert!(r.stderr.contains("POST /admin/flags/disable") && r.stderr.contains("API version"), "{}", r.stderr);
    let r = rollgate(&url, &["nodes", "forget", "n2"], 2);
    assert_eq!(r.stderr, "error: 409 Conflict: <html>busy</html>\n");
    let r = rollgate(&url, &["upgrade", "plan", "--to", "2.0"], 2);
    assert_eq!(r.stderr, "error: not now\n");
}

#[test]
fn changes_print_the_nodes_answer_with_json_too() {
    let disabled = json!({"flag": "ttl", "changed": true, "added_later": 1});
    let forgotten = json!({"forgotten": "n2", "epoch": 7});
    let (url, _) = stand_in_node(answers(vec![
        ("POST /admin/flags/disable", canned(200, disabled.to_string())),
        ("DELETE /admin/nodes/n2", canned(200, forgotten.to_string())),
    ]));
    let out = rollgate(&url, &["flags", "disable", "ttl", "--json"], 0).stdout;
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), disabled, "as the node sent it: {out}");
    let out = rollgate(&url, &["nodes", "forget", "n2", "--json"], 0).stdout;
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), forgotten, "{out}");
    assert_eq!(rollgate(&url, &["nodes", "forget", "n2"], 0).stdout, "forgot node n2 (cluster epoch 7)\n");
}

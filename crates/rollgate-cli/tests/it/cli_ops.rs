//! The operator commands through the real `rollgate` binary, against a real
//! admin API served in this process on loopback (two nodes on a redb file):
//! tables, `--json`, exit codes (0 ok, 2 bad input or refused, 1 internal)
//! and the messages that say what to do.

use std::path::Path;
use std::sync::Arc;

use rollgate::admin::AdminConfig;
use rollgate::capabilities::{Route, RouteTable};
use rollgate::flags::{FlagDecl, FlagRegistry, ReleaseTable};
use rollgate::node::{Node, NodeConfig};
use rollgate::store::{self, MetaStore, StoreOptions};
use serde_json::Value;

const TOKEN: &str = "cli-test-token-42";

fn registry(release: &str) -> FlagRegistry {
    let mut b = FlagRegistry::builder(release).with(FlagDecl::new("base", "the 1.0 format").introduced_in("1.0"));
    if release == "1.1" {
        b = b
            .with(FlagDecl::new("ttl", "values may expire").introduced_in("1.1").doc_url("https://example.invalid/ttl"))
            .with(FlagDecl::new("fancy", "an experiment").introduced_in("1.1").experimental())
            .with(FlagDecl::new("compact", "compact records").introduced_in("1.1").reversible());
    }
    b.build().unwrap()
}

fn config(node: &str, release: &str, root: &Path) -> NodeConfig {
    let mut c = NodeConfig::new(node, release, root.join(node), registry(release));
    c.routes = RouteTable::new().with(Route::new("GET", "/kv/{key}")).unwrap();
    c.releases = Some(ReleaseTable::from_registries([&registry("1.0"), &registry("1.1")]));
    c
}

struct Cluster {
    _dir: tempfile::TempDir,
    token_file: std::path::PathBuf,
    url: String,
    n1: Node,
    n2: Option<Node>,
    store: Arc<dyn MetaStore>,
}

/// n1 (1.1) serves the admin API; n2 (1.0) is a running member; both
/// started on 1.0 (a fresh cluster: `base` enabled), then n1 upgraded.
async fn cluster() -> Cluster {
    let dir =
        if Path::new("/dev/shm").is_dir() { tempfile::tempdir_in("/dev/shm") } else { tempfile::tempdir() }.unwrap();
    let store = store::open(&format!("redb:{}", dir.path().join("meta.redb").display()), StoreOptions::default())
        .await
        .unwrap();
    let n1 = Node::start(config("n1", "1.0", dir.path()), store.clone()).await.unwrap();
    // n2 serves its admin API too (other members ask it `_capabilities`).
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut c2 = config("n2", "1.0", dir.path());
    c2.admin_addr = l2.local_addr().unwrap().to_string();
    let n2 = Node::start(c2, store.clone()).await.unwrap();
    let router = rollgate::admin::router(n2.clone(), AdminConfig::default());
    tokio::spawn(async move {
        let _ = rollgate::admin::serve(l2, router).await;
    });
    n1.stop().await.unwrap();
    drop(n1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut c1 = config("n1", "1.1", dir.path());
    c1.admin_addr = addr.to_string();
    let n1 = Node::start(c1, store.clone()).await.unwrap();
    let router = rollgate::admin::router(n1.clone(), AdminConfig::with_token(TOKEN));
    tokio::spawn(async move {
        let _ = rollgate::admin::serve(listener, router).await;
    });
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(
        &token_file,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    Cluster { _dir: dir, token_file, url: format!("http://{addr}"), n1, n2: Some(n2), store }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn rollgate(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rollgate"));
    cmd.args(args)
        .env_remove("ROLLGATE_NODE")
        .env_remove("ROLLGATE_TOKEN_FILE")
        .env_remove("ROLLGATE_CA_FILE")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Cluster {
    /// `rollgate --node URL --token-file F args...`, expecting `code`.
    async fn run(&self, args: &[&str], code: i32) -> Run {
        let token = self.token_file.to_str().unwrap();
        let mut all = vec!["--node", &self.url, "--token-file", token];
        all.extend_from_slice(args);
        let r = rollgate(&all, &[]).await;
        assert_eq!(r.code, code, "rollgate {args:?}\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
        r
    }
    async fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.run(args, 0).await.stdout).unwrap()
    }
}

/// The words of a table row, as printed.
fn row<'a>(out: &'a str, first: &str) -> Vec<&'a str> {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in:\n{out}"))
        .split_whitespace()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_list_info_enable_and_disable() {
    let c = cluster().await;
    let out = c.run(&["flags", "list"], 0).await.stdout;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATE", "STABILITY", "SINCE", "REVERSIBLE", "BLOCKED", "BY", "DESCRIPTION"]);
    assert_eq!(row(&out, "ttl"), ["ttl", "disabled", "stable", "1.1", "no", "n2", "values", "may", "expire"]);
    assert_eq!(row(&out, "base")[..3], ["base", "enabled", "stable"]);
    let list = c.json(&["flags", "list", "--json"]).await;
    let names: Vec<&str> = list["flags"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["base", "compact", "fancy", "ttl"]);

    let info = c.run(&["flags", "info", "ttl"], 0).await.stdout;
    assert_eq!(row(&info, "introduced"), ["introduced", "in", "1.1"]);
    assert_eq!(row(&info, "documentation"), ["documentation", "https://example.invalid/ttl"]);
    assert_eq!(c.json(&["flags", "info", "ttl", "--json"]).await["lacking"], serde_json::json!(["n2"]));
    let r = c.run(&["flags", "info", "nope"], 2).await;
    assert!(
        r.stderr.starts_with("error: unknown feature flag `nope`: this node's release 1.1 does not know it"),
        "{}",
        r.stderr
    );
    let r = c.run(&["flags", "info", "Bad-Name"], 2).await;
    assert!(r.stderr.contains("invalid flag name \"Bad-Name\""), "{}", r.stderr);

    // Refused while n2 (1.0) runs; a dry run says why, with the fix.
    let r = c.run(&["flags", "enable", "ttl", "--dry-run"], 2).await;
    assert_eq!(r.stdout, "would enable, in this order:\n  1. ttl\n");
    assert!(r.stderr.contains("node n2 (release 1.0, running) does not support it; upgrade n2 to a release that supports it (1.1 or later)"), "{}", r.stderr);
    let r = c.run(&["flags", "enable", "ttl"], 2).await;
    assert!(
        r.stderr.starts_with("error: flag `ttl` cannot be enabled: node n2 (release 1.0, running)"),
        "{}",
        r.stderr
    );
    let r = c.run(&["nodes", "forget", "n2"], 2).await;
    assert!(r.stderr.contains("node \"n2\" is running; stop it"), "{}", r.stderr);

    // n2 stops for good and is forgotten; now ttl can be enabled.
    let mut c = c;
    c.n2.take().unwrap().stop().await.unwrap();
    let r = c.run(&["nodes", "forget", "n2"], 0).await;
    assert!(r.stdout.starts_with("forgot node n2 (cluster epoch "), "{}", r.stdout);
    let r = c.run(&["flags", "enable", "ttl"], 0).await;
    assert_eq!(r.stdout, "enabled: ttl\n");
    assert!(
        r.stderr.contains("note: `ttl` is irreversible: once enabled it cannot be disabled, and nodes of releases that lack it (before 1.1) can no longer join"),
        "{}",
        r.stderr
    );
    let r = c.run(&["flags", "enable", "fancy"], 2).await;
    assert!(r.stderr.contains("flag `fancy` is experimental: pass --experimental"), "{}", r.stderr);
    let report = c.json(&["flags", "enable", "--all", "--experimental", "--json"]).await;
    assert_eq!(report["enabled"], serde_json::json!(["fancy", "compact"]));
    assert_eq!(report["already_enabled"], serde_json::json!(["base", "ttl"]));
    let r = c.run(&["flags", "disable", "ttl"], 2).await;
    assert!(r.stderr.contains("flag `ttl` is not reversible"), "{}", r.stderr);
    assert_eq!(c.run(&["flags", "disable", "compact"], 0).await.stdout, "disabled compact\n");
    let r = c.run(&["flags", "enable", "compact"], 0).await;
    assert!(!r.stderr.contains("irreversible"), "a reversible flag gets no note: {}", r.stderr);
    assert_eq!(c.run(&["flags", "disable", "compact"], 0).await.stdout, "disabled compact\n");
    assert_eq!(c.run(&["flags", "disable", "compact"], 0).await.stdout, "compact was not enabled; nothing changed\n");
    assert!(!c.n1.flag_enabled("compact"));
    // Every command has --json: the node's report as it sent it.
    let report = c.json(&["flags", "disable", "compact", "--json"]).await;
    assert_eq!(report, serde_json::json!({"flag": "compact", "changed": false}));
    let _ = &c.store;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_nodes_capabilities_and_upgrade() {
    let c = cluster().await;
    let out = c.run(&["nodes", "list"], 0).await.stdout;
    assert_eq!(row(&out, "n1")[..4], ["n1", "*", "1.1", "running"]);
    assert_eq!(row(&out, "n2")[..3], ["n2", "1.0", "running"]);
    assert_eq!(
        row(&out, "NODE"),
        ["NODE", "RELEASE", "STATE", "PROTOCOL", "TRANSPORT", "MANIFEST", "ADMIN", "FLAGS", "CLOCK"]
    );
    assert_eq!(row(&out, "n2")[5], "-", "n2 runs an unsigned release");
    // Both clocks are this machine's: each agrees with the median within the Date header's precision.
    for n in ["n1", "n2"] {
        let clock = *row(&out, n).last().unwrap();
        assert!(["+0s", "-0s", "+1s", "-1s"].contains(&clock), "{n}'s clock: {clock}\n{out}");
    }
    let nodes = c.json(&["nodes", "list", "--json"]).await;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 2);
    assert!(nodes["nodes"].as_array().unwrap().iter().all(|n| n["clock_offset_ms"].as_i64().unwrap().abs() <= 1500));

    let out = c.run(&["features", "list"], 0).await.stdout;
    assert!(out.starts_with("FEATURE"), "{out}");
    let features = c.json(&["features", "list", "--json"]).await;
    assert!(features["features"].is_array());

    let out = c.run(&["capabilities", "--method", "GET", "--path", "/kv/k"], 0).await.stdout;
    assert!(out.starts_with("supported: true\n"), "{out}");
    assert_eq!(row(&out, "n2"), ["n2", "true", "http"]);
    let out = c.run(&["capabilities", "--path", "/kv/k", "--parameters", "ttl_s"], 0).await.stdout;
    assert!(out.starts_with("supported: false\n"), "{out}");
    let caps = c.json(&["capabilities", "--method", "GET", "--path", "/admin/flags", "--json"]).await;
    assert_eq!(caps["supported"], true);
    let r = c.run(&["capabilities", "--method", "FETCH", "--path", "/kv/k"], 2).await;
    assert!(r.stderr.contains("unknown HTTP method"), "{}", r.stderr);

    let out = c.run(&["upgrade", "status"], 0).await.stdout;
    assert_eq!(row(&out, "1.0"), ["1.0", "n2", "1", "0"]);
    assert_eq!(row(&out, "1.1"), ["1.1", "n1", "1", "0"]);
    let blocked = row(&out, "blocked").join(" ");
    assert!(
        blocked.starts_with("blocked compact (missing on n2);") && blocked.ends_with("ttl (missing on n2)"),
        "{out}"
    );
    let status = c.json(&["upgrade", "status", "--json"]).await;
    assert_eq!(status["mixed_releases"], true);
    let out = c.run(&["upgrade", "plan", "--to", "1.1"], 0).await.stdout;
    assert!(
        out.starts_with("to bring every member to 1.1:\n  1. upgrade nodes n2 one at a time to release 1.1"),
        "{out}"
    );
    assert!(out.contains("$ rollgate flags enable --all"), "{out}");
    let plan = c.json(&["upgrade", "plan", "--to", "1.1", "--json"]).await;
    assert_eq!(plan["steps"][0]["nodes"], serde_json::json!(["n2"]));
    let r = c.run(&["upgrade", "plan", "--to", "9.9"], 2).await;
    assert!(r.stderr.contains("release 9.9 is not in the release table (known: 1.0, 1.1)"), "{}", r.stderr);
    let r = c.run(&["upgrade", "plan", "--to", "bad release"], 2).await;
    assert!(r.stderr.contains("is not a release"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_token_problems_are_clear() {
    let c = cluster().await;
    // From the environment.
    let token = c.token_file.to_str().unwrap();
    let r = rollgate(&["flags", "list", "--json"], &[("ROLLGATE_NODE", &c.url)]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r =
        rollgate(&["flags", "disable", "compact"], &[("ROLLGATE_NODE", &c.url), ("ROLLGATE_TOKEN_FILE", token)]).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "compact was not enabled; nothing changed\n"), "{}", r.stderr);
    // No node.
    let r = rollgate(&["flags", "list"], &[]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no node given: pass --node URL"), "{}", r.stderr);
    // An https node without the cluster CA.
    let r = rollgate(&["--node", "https://127.0.0.1:1", "flags", "list"], &[]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("give the cluster CA with --ca-file"), "{}", r.stderr);
    // Nobody there: an internal failure, exit 1.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let r = rollgate(&["--node", &free.to_string(), "flags", "list"], &[]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("cannot reach the node at http://127.0.0.1:"), "{}", r.stderr);
    // Without a token, and with a wrong one.
    let r = rollgate(&["--node", &c.url, "flags", "enable", "ttl"], &[]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("needs `Authorization: Bearer <token>` (rollgate: --token-file FILE"), "{}", r.stderr);
    let wrong = c._dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-right-token").unwrap();
    std::fs::set_permissions(&wrong, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600))
        .unwrap();
    let r = rollgate(&["--node", &c.url, "--token-file", wrong.to_str().unwrap(), "flags", "enable", "ttl"], &[]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("wrong admin token"), "{}", r.stderr);
    let r = rollgate(&["--node", &c.url, "--token-file", "/no/such/file", "flags", "list"], &[]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("admin token file /no/such/file: cannot read it"), "{}", r.stderr);
    // Bad arguments never reach the node.
    let r = rollgate(&["--node", &c.url, "flags", "enable"], &[]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--all"), "{}", r.stderr);
    let r = rollgate(&["--node", &c.url, "flags", "enable", "ttl", "--all"], &[]).await;
    assert_eq!(r.code, 2);
    let r = rollgate(&["--node", &c.url, "nodes", "forget", "../x"], &[]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("invalid node id"), "{}", r.stderr);
    // Help that teaches.
    let r = rollgate(&["flags", "--help"], &[]).await;
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("A rolling upgrade:") && r.stdout.contains("flags enable --all --dry-run"),
        "{}",
        r.stdout
    );
    let r = rollgate(&["--help"], &[]).await;
    assert!(r.stdout.contains("--node <URL>") && r.stdout.contains("ROLLGATE_TOKEN_FILE"), "{}", r.stdout);
}

/// `upgrade status` shows node-local migrations (published by a real
/// `LocalRunner` whose gate is this node's own flag bit) and `--watch`
/// returns once none is running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_status_shows_migrations() {
    use redb::{Database, TableDefinition};
    use rollgate::migrate::{Gate, LocalOptions, LocalRunner, Migrations, Rewrite, TableMigration};

    let c = cluster().await;
    const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("data.redb")).unwrap());
    let wtx = db.begin_write().unwrap();
    {
        let mut t = wtx.open_table(RECORDS).unwrap();
        for k in 0u32..40 {
            t.insert(k.to_be_bytes().as_slice(), b"v1".as_slice()).unwrap();
        }
    }
    wtx.commit().unwrap();
    let mut m = Migrations::new();
    let upgrade = |_: &[u8], _: &[u8]| Ok::<Rewrite, String>(Rewrite::Put(b"v2".to_vec()));
    m.add_table_migration(TableMigration::new("records_v2", "records", Gate::flag("base"), upgrade).unwrap()).unwrap();
    let runner = LocalRunner::new(Arc::new(m), db, "n1", LocalOptions::default()).unwrap().publish_to(c.store.clone());
    let report = runner.run_once(&c.n1).await.unwrap();
    assert!(format!("{report:?}").contains("records_v2"), "{report:?}");

    let out = c.run(&["upgrade", "status"], 0).await.stdout;
    let r = row(&out, "n1");
    assert_eq!(r[..7], ["n1", "records_v2", "records", "flag", "base", "done", "40/40"], "{out}");
    let status = c.json(&["upgrade", "status", "--json"]).await;
    assert_eq!(status["migrations"]["nodes"][0]["migrations"][0]["done"], 40);
    let out = c.run(&["upgrade", "status", "--watch", "--watch-timeout-s", "30"], 0).await.stdout;
    assert_eq!(row(&out, "n1")[5], "done", "{out}");
    let r = c.run(&["upgrade", "status", "--watch", "--json"], 2).await;
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_and_waiting_follow_the_cluster() {
    let c = cluster().await;
    let reached = c.json(&["upgrade", "wait", "--json", "--timeout-s", "30"]).await;
    assert_eq!((reached["reached"].as_bool(), reached["blockers"].as_array().map(Vec::len)), (Some(true), Some(0)));

    let r = c.run(&["upgrade", "wait", "--to", "1.1", "--timeout-s", "1"], 2).await;
    assert!(
        r.stderr.contains("timed out after 1s")
            && r.stderr.contains("node n2 runs release 1.0: restart it as release 1.1"),
        "{}",
        r.stderr
    );
    let r = c.run(&["upgrade", "wait", "--to", "1.1", "--timeout-s", "1", "--json"], 2).await;
    let j: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["reached"], false);
    assert_eq!(j["goal"]["release"], "1.1");

    let both = c.json(&["flags", "enable", "base", "--wait", "--json", "--wait-timeout-s", "30"]).await;
    assert_eq!(
        (both["enable"]["already_enabled"][0].as_str(), both["wait"]["reached"].as_bool()),
        (Some("base"), Some(true))
    );
    let r = c.run(&["flags", "enable", "base", "--wait"], 0).await;
    assert!(r.stdout.contains("reached the state asked for"), "{}", r.stdout);

    let r = c.run(&["nodes", "forget", "n2"], 2).await;
    assert!(r.stderr.contains("n2"), "{}", r.stderr);
    let r = c.run(&["audit"], 0).await;
    let first = r.stdout.lines().nth(1).unwrap_or_default().to_string();
    assert!(
        first.contains("forget") && first.contains("refused") && first.contains("admin_api sha256:"),
        "{}",
        r.stdout
    );
    let log = c.json(&["audit", "--json", "--limit", "2"]).await;
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!((entries[0]["action"].as_str(), entries[1]["action"].as_str()), (Some("forget"), Some("enable")));
    assert!(!log.to_string().contains(TOKEN));
    let r = c.run(&["audit", "--limit", "0"], 2).await;
    assert!(r.stderr.contains("limit"), "{}", r.stderr);

    let r = c.run(&["nodes", "list"], 0).await;
    assert!(r.stdout.contains("MANIFEST") && r.stdout.contains("MANIFEST:"), "{}", r.stdout);
    drop(c.n2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_finalize_names_each_blocker_then_raises_a_floor_that_refuses_older_nodes() {
    let mut c = cluster().await;
    let r = c.run(&["upgrade", "finalize", "1.1"], 2).await;
    assert!(
        r.stderr.contains("release 1.1 cannot be finalized as the cluster's floor")
            && r.stderr
                .contains("member n2 (release 1.0, running) runs a release older than 1.1: upgrade n2 to 1.1 or later")
            && r.stderr.contains("flag `ttl`, stable in release 1.1, is not enabled: run `rollgate flags enable ttl`"),
        "{}",
        r.stderr
    );
    let r = c.run(&["upgrade", "finalize", "1.x"], 2).await;
    assert!(r.stderr.contains("is not dotted numbers"), "{}", r.stderr);
    let r = c.run(&["upgrade", "finalize", "bad release"], 2).await;
    assert!(r.stderr.contains("is not a release"), "{}", r.stderr);

    // n2 goes for good; the stable flags of 1.1 get enabled.
    let n2 = c.n2.take().unwrap();
    n2.stop().await.unwrap();
    drop(n2);
    c.run(&["nodes", "forget", "n2"], 0).await;
    c.run(&["flags", "enable", "--all"], 0).await;

    let before = c.store.list("").await.unwrap().revision;
    let dry = c.json(&["upgrade", "finalize", "--dry-run", "--json"]).await;
    assert_eq!(dry, serde_json::json!({"release": "1.1", "previous": null, "dry_run": true, "changed": false}));
    assert_eq!(c.store.list("").await.unwrap().revision, before, "a dry run writes nothing");
    let out = c.run(&["upgrade", "finalize"], 0).await.stdout;
    assert!(out.contains("release floor raised from none to 1.1"), "{out}");
    let out = c.run(&["upgrade", "finalize", "1.1"], 0).await.stdout;
    assert!(out.contains("the release floor already is 1.1; nothing changed"), "{out}");
    let r = c.run(&["upgrade", "finalize", "1.0"], 2).await;
    assert!(r.stderr.contains("the release floor is already 1.1, above 1.0, and it never goes down"), "{}", r.stderr);

    let out = c.run(&["upgrade", "status"], 0).await.stdout;
    assert!(out.contains("release floor: 1.1 (no node below it may boot or join)"), "{out}");
    let status = c.json(&["upgrade", "status", "--json"]).await;
    assert_eq!((status["floor"]["release"].as_str(), status["floor"]["by_node"].as_str()), (Some("1.1"), Some("n1")));
    let log = c.json(&["audit", "--json", "--limit", "5"]).await;
    let finalizes: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "finalize")
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(finalizes, ["refused", "ok", "ok"], "newest first: the refusal of 1.0, the no-op, the raise");

    let dir = tempfile::tempdir().unwrap();
    let err = Node::start(config("n3", "1.0", dir.path()), c.store.clone()).await.unwrap_err().to_string();
    assert!(
        err.contains("the cluster's release floor is 1.1") && err.contains("run release 1.1 or later on n3"),
        "{err}"
    );
}

#[tokio::test]
async fn release_manifests_are_signed_and_verified_and_bad_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let run = |args: Vec<String>, code: i32| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = rollgate(&refs, &[]).await;
        assert_eq!(r.code, code, "rollgate {args:?}\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
        r
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let manifest = rollgate::node::release_manifest(&config("n1", "1.1", dir.path()));
    std::fs::write(p("m.json"), serde_json::to_string_pretty(&manifest).unwrap()).unwrap();

    run(s(&["release", "keygen", "--out", &p("release.key")]), 0).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(p("release.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let r = run(s(&["release", "keygen", "--out", &p("release.key")]), 2).await;
    assert!(r.stderr.contains("exists already"), "{}", r.stderr);
    run(s(&["release", "sign", "--key", &p("release.key"), &p("m.json"), "--out", &p("signed.json")]), 0).await;
    let r = run(s(&["release", "verify", "--key", &p("release.key.pub"), &p("signed.json"), "--json"]), 0).await;
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (v["release"].as_str(), v["digest"].as_str()),
        (Some("1.1"), Some(manifest.digest().to_text().as_str()))
    );

    // Tampered: the release's flags edited after signing.
    let mut signed: Value = serde_json::from_str(&std::fs::read_to_string(p("signed.json")).unwrap()).unwrap();
    assert_eq!(signed["manifest"]["flags"][2]["name"], "fancy");
    signed["manifest"]["flags"][2]["stability"] = "stable".into();
    std::fs::write(p("tampered.json"), signed.to_string()).unwrap();
    let r = run(s(&["release", "verify", "--key", &p("release.key.pub"), &p("tampered.json")]), 2).await;
    assert!(r.stderr.contains("changed after it was signed"), "{}", r.stderr);

    run(s(&["release", "keygen", "--out", &p("other.key")]), 0).await;
    let r = run(s(&["release", "verify", "--key", &p("other.key.pub"), &p("signed.json")]), 2).await;
    assert!(r.stderr.contains("not the trusted release key"), "{}", r.stderr);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p("release.key"), std::fs::Permissions::from_mode(0o640)).unwrap();
        let r = run(s(&["release", "sign", "--key", &p("release.key"), &p("m.json")]), 2).await;
        assert!(r.stderr.contains("group or others may read it") && r.stderr.contains("chmod 600"), "{}", r.stderr);
    }
    std::fs::write(p("garbage.json"), "{not json").unwrap();
    let r = run(s(&["release", "verify", "--key", &p("release.key.pub"), &p("garbage.json")]), 2).await;
    assert!(r.stderr.contains("rollgate release sign"), "{}", r.stderr);
}

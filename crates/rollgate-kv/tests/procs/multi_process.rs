//! Separate `rollgate-kv serve` processes on a real etcd (started by the
//! test on a free loopback port): a mixed 1.0/1.1/1.2 cluster serving
//! traffic, and a rolling upgrade 1.0 -> 1.2 under load in which one node is
//! killed with SIGKILL mid-upgrade (while it catches up) and another while
//! it serves, and both come back. Readiness comes from the
//! line each process prints; load is bounded in count and paced with an
//! interval. Every acknowledged write must be readable from every node at
//! the end, and no operation may fail (the client fails over).

#![cfg(feature = "etcd")]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::admin::{Admin, storage_format};
use crate::process::{Proc, free_addr, serve_args, serve_args_at, start_node};
use crate::quick;
use rollgate_kv::KvClient;
use rollgate_testkit::EtcdServer;
use serde_json::json;

fn start(release: &str, node: &str, dir: &Path, meta: &str) -> Proc {
    start_node(release, node, dir, meta, &[])
}

fn admins(procs: &[Proc]) -> Vec<String> {
    procs.iter().map(|p| p.admin.clone()).collect()
}

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
    stale_reads: AtomicU64,
    acked: Mutex<BTreeMap<String, String>>,
    errors: Mutex<Vec<String>>,
}

/// `workers` tasks, each at most `max_ops` operations (a put of a new key,
/// then a read of an acknowledged one), one every `every`.
fn load(
    client: Arc<KvClient>,
    state: Arc<Load>,
    workers: usize,
    max_ops: usize,
    every: Duration,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (client, state) = (client.clone(), state.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            for i in 0..max_ops {
                tick.tick().await;
                if state.stop.load(Ordering::Acquire) {
                    break;
                }
                let (key, value) = (format!("w{w}-{i:05}"), format!("value {w} {i}"));
                match client.put(&key, value.clone(), None).await {
                    Ok(_) => {
                        state.ok.fetch_add(1, Ordering::Relaxed);
                        state.acked.lock().unwrap().insert(key, value);
                    }
                    Err(e) => {
                        state.failed.fetch_add(1, Ordering::Relaxed);
                        state.errors.lock().unwrap().push(format!("put {key}: {e}"));
                    }
                }
                if i % 2 == 1 {
                    let read = format!("w{w}-{:05}", i / 2);
                    let expected = state.acked.lock().unwrap().get(&read).cloned();
                    match client.get(&read).await {
                        Ok(v) => {
                            state.ok.fetch_add(1, Ordering::Relaxed);
                            if expected.is_some() && v.as_deref() != expected.as_deref().map(str::as_bytes) {
                                state.stale_reads.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            state.failed.fetch_add(1, Ordering::Relaxed);
                            state.errors.lock().unwrap().push(format!("get {read}: {e}"));
                        }
                    }
                }
            }
        });
    }
    tasks
}

/// Every acknowledged write, read from each node alone. A node may still be
/// storing the last writes it was sent, so a missing key is read again
/// (paced, bounded) before it counts as lost.
async fn verify(procs: &[Proc], acked: &BTreeMap<String, String>) {
    for p in procs {
        let client = Arc::new(crate::single(&p.admin));
        let mut missing: Vec<(String, String)> = acked.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for _round in 0..50 {
            tick.tick().await;
            let mut tasks = tokio::task::JoinSet::new();
            for chunk in missing.chunks(64) {
                let (client, chunk) = (client.clone(), chunk.to_vec());
                tasks.spawn(async move {
                    let mut still = Vec::new();
                    for (k, v) in chunk {
                        if client.get(&k).await.ok().flatten().as_deref() != Some(v.as_bytes()) {
                            still.push((k, v));
                        }
                    }
                    still
                });
            }
            missing.clear();
            while let Some(r) = tasks.join_next().await {
                missing.extend(r.unwrap());
            }
            if missing.is_empty() {
                break;
            }
        }
        assert!(
            missing.is_empty(),
            "node {} lost {} acknowledged writes, e.g. {:?}\n{}",
            p.node,
            missing.len(),
            missing.first(),
            p.log()
        );
    }
}

async fn health(admin: &str) -> serde_json::Value {
    let resp = reqwest::Client::builder()
        .use_preconfigured_tls(rollgate::tls::plain_client())
        .build()
        .unwrap()
        .get(format!("http://{admin}/health"))
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_one_zero_one_one_one_two_cluster_serves_traffic() {
    let etcd = EtcdServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let meta = etcd.url();
    let procs = vec![
        start("1.0", "a", tmp.path(), &meta),
        start("1.1", "b", tmp.path(), &meta),
        start("1.2", "c", tmp.path(), &meta),
    ];
    let client = Arc::new(KvClient::new(&admins(&procs), quick()).unwrap());
    let state = Arc::new(Load::default());
    let mut tasks = load(client, state.clone(), 3, 60, Duration::from_millis(5));
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let errors = state.errors.lock().unwrap().clone();
    assert_eq!(state.failed.load(Ordering::Relaxed), 0, "{errors:?}");
    assert!(state.ok.load(Ordering::Relaxed) >= 240);
    let acked = state.acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 180);
    verify(&procs, &acked).await;

    // What each pair negotiated: the highest protocol both speak, the lower transport.
    let h = health(&procs[2].admin).await;
    let by_peer: BTreeMap<String, (u64, String)> = h["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["node_id"].as_str().unwrap().to_string(),
                (p["protocol"].as_u64().unwrap_or(0), p["release"].to_string()),
            )
        })
        .collect();
    assert_eq!(by_peer["a"].0, 1, "1.2 with 1.0: {h}");
    assert_eq!(by_peer["b"].0, 2, "1.2 with 1.1: {h}");
    let h = health(&procs[1].admin).await;
    let to_a = h["peers"].as_array().unwrap().iter().find(|p| p["node_id"] == "a").unwrap().clone();
    assert_eq!(to_a["protocol"], 1, "1.1 with 1.0: {h}");
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_under_load_survives_a_sigkill_mid_upgrade() {
    let etcd = EtcdServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let meta = etcd.url();
    let mut procs = vec![
        start("1.0", "n1", tmp.path(), &meta),
        start("1.0", "n2", tmp.path(), &meta),
        start("1.0", "n3", tmp.path(), &meta),
    ];
    let client = Arc::new(KvClient::new(&admins(&procs), quick()).unwrap());
    let state = Arc::new(Load::default());
    let mut tasks = load(client.clone(), state.clone(), 2, 3000, Duration::from_millis(4));

    let upgraded = |procs: &[Proc]| client.set_nodes(&admins(procs)).unwrap();
    // The load must run through every step: its count moves between steps.
    let ops = || state.ok.load(Ordering::Relaxed) + state.failed.load(Ordering::Relaxed);
    let mut steps = vec![("start", ops())];
    // n1: a clean upgrade.
    assert!(procs[0].terminate().success(), "{}", procs[0].log());
    procs[0] = start("1.2", "n1", tmp.path(), &meta);
    upgraded(&procs);
    steps.push(("n1 upgraded", ops()));
    // The prefix scan is a 1.2 route, but not every member publishes its
    // cluster feature yet: `_capabilities` says no, and the route says why.
    let admin = Admin::new(&procs[0].admin);
    let scan_query = "method=GET&path=/kv&parameters=prefix,limit";
    assert_eq!(admin.capability(scan_query).await, json!(false));
    let (status, body) = admin.get("/kv?prefix=w0-&limit=5").await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("feature_not_available")), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("kv.prefix_scan") && message.contains("n2 (release 1.0)"), "{message}");
    // n2: upgraded, then killed with SIGKILL while it catches up, then back.
    assert!(procs[1].terminate().success(), "{}", procs[1].log());
    let mut half = Proc::spawn(&serve_args("1.2", "n2", tmp.path(), &meta, &[]), &tmp.path().join("n2.log"));
    half.wait_line("rollgate-kv: listening ");
    half.kill();
    procs[1] = start("1.2", "n2", tmp.path(), &meta);
    upgraded(&procs);
    steps.push(("n2 killed mid-upgrade and back", ops()));
    // n1, upgraded and serving, crashes under load and comes back.
    procs[0].kill();
    procs[0] = start("1.2", "n1", tmp.path(), &meta);
    upgraded(&procs);
    steps.push(("n1 killed while serving and back", ops()));
    // n3: a clean upgrade.
    assert!(procs[2].terminate().success(), "{}", procs[2].log());
    procs[2] = start("1.2", "n3", tmp.path(), &meta);
    upgraded(&procs);
    steps.push(("n3 upgraded", ops()));
    println!("ops after each step: {steps:?}");
    assert!(steps.windows(2).all(|w| w[0].1 < w[1].1), "the load ran during every step: {steps:?}");

    state.stop.store(true, Ordering::Release);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let errors = state.errors.lock().unwrap().clone();
    let ok = state.ok.load(Ordering::Relaxed);
    println!(
        "ops ok {ok}, failed {}, stale reads {}",
        state.failed.load(Ordering::Relaxed),
        state.stale_reads.load(Ordering::Relaxed)
    );
    assert_eq!(state.failed.load(Ordering::Relaxed), 0, "{errors:?}");
    assert!(ok >= 30, "the load ran during the upgrade: {ok} ops");
    let acked = state.acked.lock().unwrap().clone();
    verify(&procs, &acked).await;
    // All at 1.2 now: protocol v3 everywhere.
    for p in &procs {
        let h = health(&p.admin).await;
        let peers = h["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 2, "{h}");
        assert!(peers.iter().all(|x| x["protocol"] == 3), "{h}");
    }

    // Enable every stable flag (what `rollgate flags enable --all` sends),
    // wait until every node migrated its records (format 3), and use what
    // the flags and the cluster feature unlock.
    let admin = Admin::new(&procs[2].admin);
    let (status, report) = admin.post("/admin/flags/enable", json!({"all": true})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["enabled"], json!(["record_meta_v2", "ttl"]), "dependencies first: {report}");
    let status = admin.wait_migrations_done(&["n1", "n2", "n3"]).await;
    assert_eq!(status["flags"]["enabled"], json!(["record_meta_v2", "ttl"]), "{status}");
    // The cluster settings moved 0 -> 1 (every member on 1.2) and 1 -> 2 (`ttl`),
    // each step once, by one owner, on the real etcd.
    let settings = status["migrations"]["services"].as_array().unwrap().iter().find(|s| s["service"] == "kv_settings");
    let steps: Vec<(u64, u64)> = settings.unwrap()["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["from"].as_u64().unwrap(), h["to"].as_u64().unwrap()))
        .collect();
    assert_eq!(steps, [(0, 1), (1, 2)], "{status}");
    assert_eq!(
        status["sections"]["kv_settings"]["ttl"]["max_ttl_s"],
        json!(rollgate_kv::settings::MAX_TTL_S),
        "{status}"
    );
    for p in &procs {
        assert_eq!(storage_format(&p.admin).await, 3, "node {}", p.node);
    }
    let o = client.put("ttl-after-upgrade", "short-lived", Some(3600)).await.unwrap();
    assert!(o.acks >= 2, "{o:?}");
    assert_eq!(client.get("ttl-after-upgrade").await.unwrap().as_deref(), Some(&b"short-lived"[..]));
    let h = health(&procs[1].admin).await;
    assert!(h["storage"]["expiry_index"].as_u64().is_some(), "{h}");
    assert_eq!(admin.capability(scan_query).await, json!(true));
    let (status, body) = admin.get("/kv?prefix=w0-&limit=5").await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{body}");
    assert!(items.iter().all(|i| i["key"].as_str().unwrap().starts_with("w0-")), "{body}");
    assert_eq!(body["truncated"], true);
    // Every acknowledged write is still readable from every node, now in format 3.
    verify(&procs, &acked).await;
}

/// `rollgate-kv load` as a child process, its stdout and stderr read line by
/// line (progress lines come on stderr every 2 seconds).
struct LoadCmd {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(bool, String)>,
    stdout: String,
    stderr: Vec<String>,
}

impl LoadCmd {
    fn spawn(args: &[&str]) -> LoadCmd {
        use std::io::BufRead;
        let mut child = std::process::Command::new(crate::process::binary())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for (is_out, reader) in [
            (true, Box::new(out) as Box<dyn std::io::Read + Send>),
            (false, Box::new(err) as Box<dyn std::io::Read + Send>),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(reader).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((is_out, line)).is_err() {
                        break;
                    }
                }
            });
        }
        LoadCmd { child, lines, stdout: String::new(), stderr: Vec::new() }
    }

    /// The next line for which `pick` gives a value (bounded wait).
    fn next<T>(&mut self, what: &str, pick: impl Fn(bool, &str) -> Option<T>) -> T {
        loop {
            match self.lines.recv_timeout(crate::process::LINE_TIMEOUT) {
                Ok((is_out, line)) => {
                    if is_out {
                        self.stdout.push_str(&line);
                        self.stdout.push('\n');
                    } else {
                        self.stderr.push(line.clone());
                    }
                    if let Some(v) = pick(is_out, &line) {
                        return v;
                    }
                }
                Err(e) => panic!("no {what} ({e:?}); stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr.join("\n")),
            }
        }
    }

    /// The acknowledged-operation count of the next progress line.
    fn next_ok(&mut self) -> u64 {
        self.next("progress line", |is_out, line| {
            let rest = line.split(" ok ").nth(1).filter(|_| !is_out)?;
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    /// SIGTERM (what Ctrl-C does), then the exit status and all of stdout.
    fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        loop {
            match self.lines.recv_timeout(crate::process::LINE_TIMEOUT * 4) {
                Ok((true, line)) => {
                    self.stdout.push_str(&line);
                    self.stdout.push('\n');
                }
                Ok((false, line)) => self.stderr.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("the load did not exit ({e:?}); stdout:\n{}", self.stdout),
            }
        }
        (self.child.wait().unwrap(), std::mem::take(&mut self.stdout))
    }
}

impl Drop for LoadCmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rollgate-kv load`, as an operator would run it next to a cluster they
/// upgrade by hand: three processes on etcd, restarted one by one on their
/// own addresses as 1.2 while the load runs (its progress lines show it
/// moving across every restart); SIGTERM (Ctrl-C) stops the load, which
/// then reads every acknowledged write from every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_command_runs_through_a_rolling_upgrade_and_checks_every_write() {
    let etcd = EtcdServer::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let meta = etcd.url();
    let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let node = |release: &str, i: usize| {
        let id = format!("n{}", i + 1);
        let mut p = Proc::spawn(
            &serve_args_at(release, &id, tmp.path(), &meta, &addrs[i], &[]),
            &tmp.path().join(format!("{id}.log")),
        );
        p.wait_ready();
        p
    };
    let mut procs: Vec<Proc> = (0..3).map(|i| node("1.0", i)).collect();
    let nodes = addrs.join(",");
    let mut load = LoadCmd::spawn(&[
        "load",
        "--node",
        &nodes,
        "--rate",
        "300",
        "--seed",
        "7",
        "--settle-s",
        "30",
        "--workers",
        "3",
    ]);
    let started = load.next("start line", |is_out, l| {
        (is_out && l.starts_with("rollgate-kv load: started ")).then_some(l.to_string())
    });
    assert!(started.contains("seed=7 prefix=load-7-"), "{started}");
    let mut counts = vec![load.next_ok()];
    for (i, p) in procs.iter_mut().enumerate() {
        assert!(p.terminate().success(), "{}", p.log());
        *p = node("1.2", i);
        counts.push(load.next_ok());
    }
    println!("acknowledged operations before and after each restart: {counts:?}");
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "the load moved across every restart: {counts:?}");
    let (status, out) = load.interrupt();
    println!("{out}");
    assert!(status.success(), "{status:?}\n{out}");
    assert!(out.contains("PASSED") && out.contains(" 0 failed in ") && out.contains(": 0 lost"), "{out}");
    assert!(out.contains("reads of acknowledged writes: ") && out.contains(" checked, 0 missed"), "{out}");
    let checked: u64 = out
        .split("checked ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no key count in {out}"));
    assert!(checked > 0, "{out}");
    // The keys are in the cluster, all under the prefix (every member runs
    // 1.2 now, so the prefix scan is served).
    let (status, body) = Admin::new(&addrs[0]).get("/kv?prefix=load-7-&limit=1000").await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.len() as u64 <= checked, "{body}");
    assert!(items.iter().all(|i| i["key"].as_str().unwrap().starts_with("load-7-")), "{body}");
}

//! The scenarios' client load: a few sequential clients, each making
//! seeded operations (put, put with a TTL, delete, get) on a small set of
//! shared keys, paced, bounded in count and stopped on demand, every one
//! recorded with the testkit's history [`Recorder`].
//!
//! A client sends each operation to one node (its own rotation) and, when
//! that node cannot serve it (a refused connection, a timeout, a 503),
//! fails over to the next, a bounded number of attempts, as
//! `rollgate_kv::KvClient` does; it carries the highest version it has seen
//! in `x-kv-seen` like that client, so its writes keep its order. What it
//! records:
//!
//! Reads go through `rollgate_kv::KvClient` itself, at the session level
//! (the client's own acknowledged writes are added to its session) or, for
//! one read in four, the linearizable level: the checker holds them to
//! read-your-writes and to linearizability. Nodes of a release without
//! read levels (1.x) leave the checks to the client; a linearizable read
//! that no node can serve fails.
//!
//! - acknowledged: a 2xx (the node that answered, the write's version);
//! - failed: every attempt was refused before anything was stored (a
//!   connection refused, a 4xx, a 503 whose code says nothing was stored);
//! - unknown: anything else (a timeout, a lost answer, `no_quorum` after
//!   some member stored it, `superseded`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rollgate_kv::client::{ClientOptions, ReadLevel};
use rollgate_kv::demo::load::Rng;
use rollgate_kv::hlc::Version;
use rollgate_testkit::history::{OpKind, Outcome, Recorder};

/// The shape of the load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Sequential clients.
    pub clients: usize,
    /// Shared keys (few, so that writes collide).
    pub keys: usize,
    /// Pause between two operations of one client.
    pub pace: Duration,
    /// Most operations in all.
    pub max_ops: usize,
    /// The seed.
    pub seed: u64,
}

/// A running load.
pub struct Load {
    /// Its history.
    pub recorder: Recorder,
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
    /// Whether TTL puts are made (once flag `ttl` is enabled).
    ttls: Arc<AtomicBool>,
}

/// Codes of 503 answers that say nothing was stored.
const NOTHING_STORED: [&str; 5] = ["catching_up", "stopping", "not_serving", "clock_skew", "flag_not_enabled"];

/// How one attempt ended.
enum Attempt {
    Done {
        version: Option<String>,
    },
    /// Refused before anything was stored; try the next node.
    Refused(String),
    /// Refused for good (a 4xx): do not try elsewhere.
    Final(String),
    /// May have been stored; try the next node.
    Maybe(String),
}

/// A client's reader: every node, starting at its own.
fn reader(nodes: &[String], client: usize) -> rollgate_kv::KvClient {
    let mut order = nodes.to_vec();
    order.rotate_left(client % nodes.len().max(1));
    let options = ClientOptions {
        request_timeout: Duration::from_secs(4),
        connect_timeout: Duration::from_millis(500),
        rounds: 2,
        round_backoff: Duration::from_millis(50),
        ..ClientOptions::default()
    };
    rollgate_kv::KvClient::new(&order, options).expect("the nodes' addresses")
}

impl Load {
    /// Starts the load against `nodes` (HTTP addresses).
    pub fn start(nodes: &[String], options: &LoadOptions) -> Load {
        let recorder = Recorder::new(options.max_ops);
        let stop = Arc::new(AtomicBool::new(false));
        let ttls = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(rollgate::tls::plain_client())
            .no_proxy()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(4))
            .build()
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for client in 0..options.clients {
            let ctx = Client {
                id: client,
                http: http.clone(),
                nodes: nodes.to_vec(),
                recorder: recorder.clone(),
                rng: Rng::new(options.seed ^ ((client as u64 + 1) * 0x9E37_79B9)),
                seen: None,
                next_node: client,
                keys: options.keys,
                ttls: ttls.clone(),
                reader: reader(nodes, client),
            };
            let (stop, pace) = (stop.clone(), options.pace);
            tasks.spawn(async move {
                let mut ctx = ctx;
                let mut tick = tokio::time::interval(pace);
                let mut seq = 0u64;
                while !stop.load(Ordering::Acquire) && !ctx.recorder.is_full() {
                    tick.tick().await;
                    ctx.one(seq).await;
                    seq += 1;
                }
            });
        }
        Load { recorder, stop, tasks, ttls }
    }

    /// From now on, some puts carry a TTL.
    pub fn with_ttls(&self) {
        self.ttls.store(true, Ordering::Release);
    }

    /// How many operations ended so far.
    pub fn ops(&self) -> usize {
        self.recorder.len()
    }

    /// Waits (bounded by `within`) until `n` more operations have ended, so
    /// that every step of a scenario runs under load; an error naming how
    /// far it got.
    pub async fn progress(&self, n: usize, within: Duration) -> Result<(), String> {
        let (from, deadline) = (self.ops(), tokio::time::Instant::now() + within);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while self.ops() < from + n {
            if tokio::time::Instant::now() >= deadline || self.recorder.is_full() {
                return Err(format!("{} of {n} operations ended within {} ms", self.ops() - from, within.as_millis()));
            }
            tick.tick().await;
        }
        Ok(())
    }

    /// Stops the load and waits for the operations in flight.
    pub async fn stop(mut self) -> Recorder {
        self.stop.store(true, Ordering::Release);
        while let Some(r) = self.tasks.join_next().await {
            r.expect("a load client panicked");
        }
        self.recorder
    }
}

struct Client {
    id: usize,
    http: reqwest::Client,
    nodes: Vec<String>,
    recorder: Recorder,
    rng: Rng,
    seen: Option<Version>,
    next_node: usize,
    keys: usize,
    ttls: Arc<AtomicBool>,
    /// Reads, with this client's session.
    reader: rollgate_kv::KvClient,
}

impl Client {
    /// One seeded operation, recorded.
    async fn one(&mut self, seq: u64) {
        let key = format!("k{:02}", self.rng.below(self.keys as u64));
        let roll = self.rng.below(100);
        let value = format!("c{}-{seq}", self.id);
        let kind = match roll {
            0..50 => OpKind::Put { value, ttl: None },
            50..60 if self.ttls.load(Ordering::Acquire) => {
                OpKind::Put { value, ttl: Some(Duration::from_secs(2 + self.rng.below(3))) }
            }
            50..60 => OpKind::Put { value, ttl: None },
            60..70 => OpKind::Delete,
            70..92 => OpKind::Get,
            _ => OpKind::LinearizableGet,
        };
        let pending = self.recorder.begin(self.id, &key, kind.clone());
        let (outcome, node) = self.run(&key, &kind).await;
        pending.end(outcome, node);
    }

    /// A read through the client's [`rollgate_kv::KvClient`] (its own failover).
    async fn read(&mut self, key: &str, kind: &OpKind) -> (Outcome, Option<String>) {
        let level = if *kind == OpKind::LinearizableGet { ReadLevel::Linearizable } else { ReadLevel::Session };
        match self.reader.read(key, level).await {
            Ok(r) => {
                let version = r.version.map(|v| v.to_string());
                self.saw(version.as_deref());
                let read = r.value.map(|v| String::from_utf8_lossy(&v).into_owned());
                (Outcome::Ok { read, version }, Some(r.node))
            }
            // A read has no effect: it failed either way.
            Err(e) => (Outcome::Failed(e.to_string()), None),
        }
    }

    /// Tries the nodes in turn (at most two rounds).
    async fn run(&mut self, key: &str, kind: &OpKind) -> (Outcome, Option<String>) {
        if kind.is_read() {
            return self.read(key, kind).await;
        }
        let mut errors = Vec::new();
        let mut maybe = false;
        for _ in 0..self.nodes.len() * 2 {
            let node = self.nodes[self.next_node % self.nodes.len()].clone();
            match self.attempt(&node, key, kind).await {
                Attempt::Done { version } => {
                    if let Some(v) = version.as_deref().and_then(|v| v.parse::<Version>().ok()) {
                        let lasting = matches!(kind, OpKind::Put { ttl: None, .. });
                        self.reader.remember(key, v, lasting);
                    }
                    return (Outcome::Ok { read: None, version }, Some(node));
                }
                Attempt::Final(e) if !maybe => return (Outcome::Failed(e), Some(node)),
                Attempt::Final(e) => return (Outcome::Unknown(e), Some(node)),
                Attempt::Refused(e) => errors.push(format!("{node}: {e}")),
                Attempt::Maybe(e) => {
                    maybe = true;
                    errors.push(format!("{node}: {e}"));
                }
            }
            self.next_node += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let why = errors.join("; ");
        // A read has no effect: it failed either way.
        if maybe && !kind.is_read() { (Outcome::Unknown(why), None) } else { (Outcome::Failed(why), None) }
    }

    async fn attempt(&mut self, node: &str, key: &str, kind: &OpKind) -> Attempt {
        let url = format!("http://{node}/kv/{key}");
        let req = match kind {
            // Reads go through `read`.
            OpKind::Get | OpKind::LinearizableGet => return Attempt::Final("reads go through the client".into()),
            OpKind::Delete => self.http.delete(&url),
            OpKind::Put { value, ttl } => {
                let url = match ttl {
                    Some(t) => format!("{url}?ttl_s={}", t.as_secs()),
                    None => url,
                };
                self.http.put(url).body(value.clone())
            }
        };
        let req = match (&self.seen, kind) {
            (Some(seen), OpKind::Put { .. } | OpKind::Delete) => req.header("x-kv-seen", seen.to_string()),
            _ => req,
        };
        let resp = match req.send().await {
            Ok(r) => r,
            // Nothing was sent over a connection that never opened.
            Err(e) if e.is_connect() => return Attempt::Refused(format!("cannot connect: {e}")),
            Err(e) => return Attempt::Maybe(format!("no answer: {e}")),
        };
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        match (status, kind) {
            (200, _) => {
                let version = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["version"].as_str().map(String::from));
                self.saw(version.as_deref());
                Attempt::Done { version }
            }
            (503, _) => {
                let code = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(String::from))
                    .unwrap_or_default();
                let stored_nothing = NOTHING_STORED.contains(&code.as_str())
                    || (code == "no_quorum" && body.contains("no majority: 0 of"));
                if stored_nothing { Attempt::Refused(body) } else { Attempt::Maybe(body) }
            }
            (s, _) if (400..500).contains(&s) => Attempt::Final(format!("{s}: {body}")),
            (s, _) => Attempt::Maybe(format!("{s}: {body}")),
        }
    }

    fn saw(&mut self, version: Option<&str>) {
        if let Some(v) = version.and_then(|v| v.parse::<Version>().ok())
            && self.seen.as_ref().is_none_or(|s| v > *s)
        {
            self.seen = Some(v);
        }
    }
}

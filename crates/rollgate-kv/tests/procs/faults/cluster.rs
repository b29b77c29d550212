//! The scenarios' cluster: three `rollgate-kv serve` processes on a
//! three-member etcd, every byte between them going through a proxy of the
//! testkit's fault harness:
//!
//! - each node reaches each etcd member through its own proxy (node X's
//!   `--meta` lists X's three proxies), so X alone can be cut off the store;
//! - each node dials each peer through a proxy only it uses (X -> Y), given
//!   to it with the test-only `ROLLGATE_KV_TEST_PEER_ADDRS`, so X can be cut
//!   off its peers in both directions while they still reach each other.
//!
//! Each node listens on fixed loopback ports (picked once), so a restart as
//! another release keeps its addresses, and the proxies their targets.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rollgate_testkit::proxy::{Proxy, ProxyOptions};
use rollgate_testkit::{ChildProcess, ClockHook, ClockOffset, EtcdCluster, ProcessSpec, Signaller};

use crate::process::{LINE_TIMEOUT, binary, free_addr, token_file};

/// The liveness lease of the scenarios' nodes: a paused or cut-off node
/// counts as stopped after this long.
pub const LIVENESS_TTL_S: u64 = 2;

/// One node of the cluster.
pub struct Node {
    /// Its id (`n1`, `n2`, `n3`).
    pub id: String,
    /// Its HTTP address (client and admin API), fixed.
    pub admin: String,
    /// The release it runs now.
    pub release: String,
    /// Its process.
    pub process: ChildProcess,
    /// Its proxies to the etcd members.
    etcd_proxies: Vec<Arc<Proxy>>,
    /// Its proxies to each peer (peer id, proxy).
    peer_proxies: Vec<(String, Arc<Proxy>)>,
}

/// Three nodes, three etcd members, the proxies between them.
pub struct FaultCluster {
    /// The etcd members.
    pub etcd: EtcdCluster,
    /// The nodes.
    pub nodes: Vec<Node>,
}

/// What a fault on one node acts on, usable from a fault thread while the
/// cluster restarts other nodes: the proxies that cut it off, its process.
#[derive(Clone)]
pub struct Target {
    /// The node's id.
    pub id: String,
    /// Its HTTP address.
    pub admin: String,
    proxies: Vec<Arc<Proxy>>,
    process: Signaller,
}

impl Target {
    /// Cuts the node off its peers and the store, both ways (bytes held:
    /// a black hole, as a pulled cable looks).
    pub fn partition(&self) {
        for p in &self.proxies {
            p.partition();
        }
    }

    /// Undoes [`partition`](Self::partition).
    pub fn heal(&self) {
        for p in &self.proxies {
            p.heal();
        }
    }

    /// SIGSTOP.
    pub fn pause(&self) {
        self.process.pause().expect("pause the node");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.process.resume().expect("resume the node");
    }
}

fn proxy(target: SocketAddr) -> Arc<Proxy> {
    let options = ProxyOptions { max_connections: 256, ..ProxyOptions::default() };
    Arc::new(Proxy::start_with(target, options).expect("a proxy"))
}

/// The command line of node `id` as `release`.
fn serve_args(release: &str, id: &str, dir: &Path, meta: &str, admin: &str, data: SocketAddr) -> Vec<String> {
    let data_dir = dir.join(id).display().to_string();
    let token = token_file(dir).display().to_string();
    let ttl = LIVENESS_TTL_S.to_string();
    let data = data.to_string();
    [
        "serve",
        "--release",
        release,
        "--data",
        &data_dir,
        "--listen",
        &data,
        "--admin",
        admin,
        "--meta",
        meta,
        "--node-id",
        id,
        "--admin-token-file",
        &token,
        "--liveness-ttl-s",
        &ttl,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl FaultCluster {
    /// Starts etcd and three nodes of `release`; node `skewed` (if any)
    /// runs with its whole process's clock shifted by `offset` (faketime).
    pub fn start(dir: &Path, release: &str, skewed: Option<(usize, ClockOffset)>) -> FaultCluster {
        let etcd = EtcdCluster::start(3).expect("a three-member etcd");
        let ids: Vec<String> = (1..=3).map(|i| format!("n{i}")).collect();
        let datas: Vec<SocketAddr> = ids.iter().map(|_| free_addr().parse().unwrap()).collect();
        let mut nodes = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let etcd_proxies: Vec<Arc<Proxy>> = etcd.client_addrs().into_iter().map(proxy).collect();
            let meta =
                format!("etcd:{}", etcd_proxies.iter().map(|p| p.addr().to_string()).collect::<Vec<_>>().join(","));
            let peer_proxies: Vec<(String, Arc<Proxy>)> =
                ids.iter().zip(&datas).filter(|(p, _)| *p != id).map(|(p, d)| (p.clone(), proxy(*d))).collect();
            let overrides = peer_proxies.iter().map(|(p, x)| format!("{p}={}", x.addr())).collect::<Vec<_>>().join(",");
            let admin = free_addr();
            let args = serve_args(release, id, dir, &meta, &admin, datas[i]);
            let mut spec = ProcessSpec::new(binary(), dir.join(format!("{id}.log")))
                .args(&args)
                .env("RUST_LOG", "info,rollgate_kv::node::catchup=warn")
                .env("ROLLGATE_KV_TEST_PEER_ADDRS", overrides);
            if let Some((_, offset)) = skewed.filter(|(n, _)| *n == i) {
                spec = spec.clock(offset, ClockHook::Faketime);
            }
            let process = ChildProcess::spawn(spec).expect("start a node");
            let mut node =
                Node { id: id.clone(), admin, release: release.to_string(), process, etcd_proxies, peer_proxies };
            node.wait_ready();
            nodes.push(node);
        }
        FaultCluster { etcd, nodes }
    }

    /// Every node's HTTP address.
    pub fn admins(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.admin.clone()).collect()
    }

    /// What a fault on node `i` acts on: every proxy between it and its
    /// peers (both ways) and the store, and its process as it runs now.
    pub fn target(&self, i: usize) -> Target {
        let x = &self.nodes[i].id;
        let mut proxies: Vec<Arc<Proxy>> = self.nodes[i].etcd_proxies.clone();
        for (n, node) in self.nodes.iter().enumerate() {
            for (peer, p) in &node.peer_proxies {
                if n == i || peer == x {
                    proxies.push(p.clone());
                }
            }
        }
        let node = &self.nodes[i];
        let process = node.process.signaller().expect("the node runs");
        Target { id: node.id.clone(), admin: node.admin.clone(), proxies, process }
    }

    /// Stops node `i` (SIGTERM) and starts it again as `release` on the
    /// same data dir and addresses; returns once it is ready.
    pub fn restart_as(&mut self, i: usize, release: &str) {
        let node = &mut self.nodes[i];
        let status = node.process.terminate(Duration::from_secs(20)).expect("a graceful stop");
        assert!(status.success(), "{} did not stop cleanly: {status:?}\n{}", node.id, node.process.log_tail(30));
        let args = node.process.spec_mut().args_mut();
        let at = args.iter().position(|a| a == "--release").expect("--release") + 1;
        args[at] = release.into();
        node.release = release.to_string();
        node.process.restart().expect("restart a node");
        node.wait_ready();
    }

    /// The last lines of every node's log.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(|n| format!("--- {}:\n{}", n.id, n.process.log_tail(25))).collect::<Vec<_>>().join("\n")
    }
}

impl Node {
    /// Waits for the `ready` line of its current start.
    pub fn wait_ready(&mut self) {
        self.process
            .wait_line("ready", LINE_TIMEOUT, |l| l.starts_with("rollgate-kv: ready "))
            .unwrap_or_else(|e| panic!("node {} did not become ready: {e}", self.id));
    }
}

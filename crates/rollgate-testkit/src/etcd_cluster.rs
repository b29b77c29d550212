//! A real etcd cluster of several members on loopback whose members can be
//! killed (SIGKILL), paused (SIGSTOP) and restarted on their own ports and
//! data dirs, in [`EtcdServer`](crate::EtcdServer)'s style: free ports,
//! one temporary dir, readiness from each member's log line, everything
//! killed and removed on drop.
//!
//! The members are [`ChildProcess`]es, so their logs survive restarts
//! (`DIR/<name>.log`). [`EtcdCluster::put`], [`get`](EtcdCluster::get) and
//! [`healthy`](EtcdCluster::healthy) talk to one member through etcd's JSON
//! gateway (std only), to check what a test did to the cluster.

use std::net::SocketAddr;
use std::time::Duration;

use crate::process::{ChildProcess, ProcessSpec};
use crate::{EtcdError, READY_LINES, READY_TIMEOUT, find_etcd, free_port, http};

/// Largest cluster [`EtcdCluster::start`] builds.
pub const MAX_MEMBERS: usize = 7;

/// How long a gateway request to one member may take.
const GATEWAY_TIMEOUT: Duration = Duration::from_secs(3);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: ChildProcess,
}

/// A real etcd cluster on 127.0.0.1 (see the module docs).
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster").field("url", &self.url()).field("dir", &self.dir.path()).finish()
    }
}

impl EtcdCluster {
    /// Starts `members` members (1 to [`MAX_MEMBERS`]; 3 for the fault
    /// scenarios) and returns once every one says it serves clients.
    pub fn start(members: usize) -> Result<EtcdCluster, EtcdError> {
        if !(1..=MAX_MEMBERS).contains(&members) {
            return Err(EtcdError(format!("an etcd cluster of {members} members: 1 to {MAX_MEMBERS}")));
        }
        let etcd = find_etcd(std::env::var_os("PATH"))?;
        let dir = tempfile::Builder::new()
            .prefix("rollgate-etcd-cluster-")
            .tempdir()
            .map_err(|e| EtcdError(format!("creating the cluster's dir: {e}")))?;
        let mut ports = Vec::new();
        while ports.len() < members * 2 {
            let p = free_port()?;
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let peer_url = |port: u16| format!("http://127.0.0.1:{port}");
        let names: Vec<String> = (0..members).map(|i| format!("etcd{i}")).collect();
        let initial =
            names.iter().enumerate().map(|(i, n)| format!("{n}={}", peer_url(ports[2 * i + 1]))).collect::<Vec<_>>();
        let initial = initial.join(",");
        let mut started = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let (client_port, peer_port) = (ports[2 * i], ports[2 * i + 1]);
            let client = format!("http://127.0.0.1:{client_port}");
            let spec = ProcessSpec::new(&etcd, dir.path().join(format!("{name}.log")))
                .args(["--name", name])
                .arg("--data-dir")
                .arg(dir.path().join(name))
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args([
                    "--listen-peer-urls",
                    &peer_url(peer_port),
                    "--initial-advertise-peer-urls",
                    &peer_url(peer_port),
                ])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "rollgate-test"])
                // Loopback: short ticks elect a leader quickly and notice a dead member fast.
                .args(["--heartbeat-interval", "25", "--election-timeout", "250"])
                .env_remove("ETCD_DATA_DIR");
            let process = ChildProcess::spawn(spec).map_err(|e| EtcdError(e.to_string()))?;
            started.push(Member { name: name.clone(), client_port, peer_port, process });
        }
        let mut cluster = EtcdCluster { members: started, dir };
        for i in 0..members {
            cluster.wait_ready(i)?;
        }
        Ok(cluster)
    }

    fn wait_ready(&mut self, i: usize) -> Result<(), EtcdError> {
        let m = &mut self.members[i];
        m.process
            .wait_line("etcd serving clients", READY_TIMEOUT, |l| READY_LINES.iter().any(|r| l.contains(r)))
            .map(|_| ())
            .map_err(|e| EtcdError(format!("etcd member {} did not become ready: {e}", m.name)))
    }

    fn member(&self, i: usize) -> &Member {
        assert!(i < self.members.len(), "member {i} of a {}-member cluster", self.members.len());
        &self.members[i]
    }

    fn member_mut(&mut self, i: usize) -> &mut Member {
        assert!(i < self.members.len(), "member {i} of a {}-member cluster", self.members.len());
        &mut self.members[i]
    }

    /// How many members it has (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Never: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The metadata store URL with every member: `etcd:127.0.0.1:P1,127.0.0.1:P2,...`.
    pub fn url(&self) -> String {
        format!("etcd:{}", self.client_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","))
    }

    /// The members' client addresses (to put a [`Proxy`](crate::proxy::Proxy) in front of one).
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| SocketAddr::from(([127, 0, 0, 1], m.client_port))).collect()
    }

    /// Member `i`'s client address.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.member(i).client_port))
    }

    /// Member `i`'s peer (raft) address.
    pub fn peer_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.member(i).peer_port))
    }

    /// Member `i`'s name (`etcd0`, ...).
    pub fn name(&self, i: usize) -> &str {
        &self.member(i).name
    }

    /// Whether member `i`'s process runs (paused counts as running).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.member_mut(i).process.is_running()
    }

    /// Kills member `i` with SIGKILL (a crash); its data dir stays.
    pub fn kill(&mut self, i: usize) {
        self.member_mut(i).process.kill();
    }

    /// Pauses member `i` (SIGSTOP): it holds its ports and answers nothing.
    pub fn pause(&mut self, i: usize) -> Result<(), EtcdError> {
        self.member_mut(i).process.pause().map_err(|e| EtcdError(e.to_string()))
    }

    /// Resumes a paused member `i` (SIGCONT).
    pub fn resume(&mut self, i: usize) -> Result<(), EtcdError> {
        self.member_mut(i).process.resume().map_err(|e| EtcdError(e.to_string()))
    }

    /// Restarts member `i` (killing it first if it runs) on the same ports
    /// and data dir, and waits until it serves clients again (which needs a
    /// quorum of the others).
    pub fn restart(&mut self, i: usize) -> Result<(), EtcdError> {
        self.member_mut(i).process.restart().map_err(|e| EtcdError(e.to_string()))?;
        self.wait_ready(i)
    }

    /// The last `n` lines member `i` logged (every start).
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        self.member(i).process.log_tail(n)
    }

    /// Puts `key` = `value` through member `i`; the store revision.
    pub fn put(&self, i: usize, key: &str, value: &str) -> Result<u64, EtcdError> {
        let body = serde_json::json!({"key": base64(key.as_bytes()), "value": base64(value.as_bytes())});
        let v = self.gateway(i, "/v3/kv/put", &body)?;
        v["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| EtcdError(format!("etcd member {i} answered a put without a revision: {v}")))
    }

    /// Reads `key` through member `i` (a linearizable read: it needs a quorum).
    pub fn get(&self, i: usize, key: &str) -> Result<Option<String>, EtcdError> {
        let v = self.gateway(i, "/v3/kv/range", &serde_json::json!({"key": base64(key.as_bytes())}))?;
        match v["kvs"].get(0) {
            None => Ok(None),
            Some(kv) => {
                let raw = kv["value"].as_str().unwrap_or("");
                let bytes = unbase64(raw).ok_or_else(|| EtcdError(format!("etcd member {i}: bad base64 {raw:?}")))?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
        }
    }

    /// The member that is the raft leader now, as the running members say
    /// (`/v3/maintenance/status`); `None` while there is none (an election).
    pub fn leader(&self) -> Option<usize> {
        for i in 0..self.members.len() {
            let Ok(v) = self.gateway(i, "/v3/maintenance/status", &serde_json::json!({})) else { continue };
            let (Some(leader), Some(me)) = (v["leader"].as_str(), v["header"]["member_id"].as_str()) else { continue };
            if leader == me {
                return Some(i);
            }
        }
        None
    }

    /// Whether member `i` says it is healthy (`/health`: it has a leader
    /// and a quorum answers).
    pub fn healthy(&self, i: usize) -> bool {
        http::get(&self.client_addr(i).to_string(), "/health", GATEWAY_TIMEOUT)
            .map(|r| r.status == 200 && r.body.contains("\"true\""))
            .unwrap_or(false)
    }

    /// Waits (bounded polling: an election has no event to wait on) until
    /// member `i` is [`healthy`](Self::healthy).
    pub fn wait_healthy(&self, i: usize, timeout: Duration) -> Result<(), EtcdError> {
        let deadline = std::time::Instant::now() + timeout;
        while !self.healthy(i) {
            if std::time::Instant::now() >= deadline {
                return Err(EtcdError(format!(
                    "etcd member {i} not healthy within {} ms; its log:\n{}",
                    timeout.as_millis(),
                    self.log_tail(i, 20)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn gateway(&self, i: usize, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, EtcdError> {
        let addr = self.client_addr(i).to_string();
        let r = http::request(&addr, "POST", path, Some(&body.to_string()), GATEWAY_TIMEOUT)
            .map_err(|e| EtcdError(format!("etcd member {i} ({addr}) {path}: {e}")))?;
        if r.status != 200 {
            return Err(EtcdError(format!("etcd member {i} ({addr}) {path}: status {}: {:.300}", r.status, r.body)));
        }
        serde_json::from_str(&r.body).map_err(|e| EtcdError(format!("etcd member {i} {path}: {e}: {:.300}", r.body)))
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (etcd's gateway encodes bytes so).
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= c.len() {
                out.push(ALPHABET[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == b)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_known_values() {
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"bar!"), "YmFyIQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(unbase64(&base64(&bytes)).unwrap(), bytes);
        }
        assert_eq!(unbase64("!!"), None);
    }
}

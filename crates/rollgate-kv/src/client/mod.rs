//! [`KvClient`]: an HTTP client of rollgate-kv with failover. Give it every
//! node's HTTP address; a request goes to the node that answered last, and
//! on a connection failure, a timeout, a 503 (catching up, stopping, no
//! majority) or a 5xx it moves on to the next node; after trying every node
//! it waits a little and tries them all again, a bounded number of rounds.
//!
//! Retrying a write on another node is safe: a write is "set this value"
//! (or "delete"), and a retry stores it again with a newer version.
//!
//! The client remembers the highest version it has seen (answers of writes,
//! `x-kv-version` of reads) and sends it with every write (`x-kv-seen`), so
//! its writes are ordered as it made them even when consecutive writes go
//! to different nodes within one millisecond.
//!
//! # Reads a client can trust
//!
//! **Session reads** (the default, [`ReadLevel::Session`]): the client
//! keeps a session token per key, the newest version of it that it wrote,
//! deleted or read (at most [`ClientOptions::session_keys`] keys, the oldest
//! forgotten first), and sends it with a read of the key (`x-kv-after`). A
//! node of release 2.0 answers that version or a newer one, waiting briefly
//! for replication, or answers 503 `behind`; the client then asks the next
//! node. An older node ignores the header, so the client checks every
//! answer itself: a value older than the token, or "not found" while the
//! token is a value without a TTL, is **stale**, counted
//! ([`KvClient::stale_answers`]) and not returned; the client asks the next
//! node. A key every node answers "not found" for was deleted (a majority
//! holds the token's version or a newer one), so that answer stands. Its own
//! writes are never missing from its reads, whichever node answers, across
//! node restarts and upgrades, and its reads of a key never go back.
//!
//! **Linearizable reads** ([`ReadLevel::Linearizable`],
//! `?consistency=linearizable`): the node confirms with a majority that it
//! answers every write acknowledged before the read (release 2.0; see
//! [`crate::consistency`]). A node of an older release ignores the
//! parameter: its answer has no `x-kv-read: linearizable` header, and the
//! client does not take it but asks the next node; when no node can, the
//! read fails with [`ClientError::Unsupported`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};

mod base;
mod reads;

use crate::hlc::Version;
pub use crate::node::{ReadLevel, WriteOutcome};
pub use base::{ClientError, MAX_NODES, MAX_SESSION_KEYS, ReadResult};
use base::{Session, Token, describe, error_body, read_bounded, rotation};

/// Timeouts and retries of a [`KvClient`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Longest request to one node.
    pub request_timeout: Duration,
    /// Longest connect to one node.
    pub connect_timeout: Duration,
    /// How many times every node is tried.
    pub rounds: usize,
    /// Pause after a round that failed, times the round number.
    pub round_backoff: Duration,
    /// HTTPS: the cluster CA and, optionally, a client certificate
    /// ([`rollgate::tls::https_client`]). With it, a node address without a
    /// scheme means `https://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The level of [`KvClient::get`] (see the module docs).
    pub read_level: ReadLevel,
    /// Keys the session remembers a version of (the oldest is forgotten
    /// first; a read of a forgotten key is a plain read). At most
    /// [`MAX_SESSION_KEYS`]; about 100 bytes each.
    pub session_keys: usize,
}

impl ClientOptions {
    fn default_scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            rounds: 3,
            round_backoff: Duration::from_millis(100),
            tls: None,
            read_level: ReadLevel::Session,
            session_keys: 65_536,
        }
    }
}

/// A client of a rollgate-kv cluster (see the module docs).
#[derive(Debug)]
pub struct KvClient {
    http: reqwest::Client,
    nodes: RwLock<Arc<Vec<Url>>>,
    next: AtomicUsize,
    options: ClientOptions,
    /// The highest version seen (see the module docs).
    seen: std::sync::Mutex<Option<Version>>,
    /// The session tokens (see the module docs).
    session: std::sync::Mutex<Session>,
    /// Answers refused as stale.
    stale: std::sync::atomic::AtomicU64,
}

/// Parses a node address: `HOST:PORT`, `http://HOST:PORT` or
/// `https://HOST:PORT` (`HOST:PORT` is HTTP).
pub fn parse_node(addr: &str) -> Result<Url, ClientError> {
    parse_node_as(addr, "http")
}

/// Parses a node address; `HOST:PORT` gets `default_scheme`.
pub fn parse_node_as(addr: &str, default_scheme: &str) -> Result<Url, ClientError> {
    let invalid =
        |reason: &str| ClientError::InvalidNode { addr: rollgate::util::shorten_to(addr, 128), reason: reason.into() };
    let text = addr.trim();
    if text.is_empty() || text.len() > 256 {
        return Err(invalid("empty or longer than 256 bytes"));
    }
    let with_scheme = if text.contains("://") { text.to_string() } else { format!("{default_scheme}://{text}") };
    let url = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid("only http and https are supported"));
    }
    if url.host_str().is_none() || url.port_or_known_default().is_none() {
        return Err(invalid("no host"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(invalid("give only the scheme, host and port"));
    }
    Ok(url)
}

/// Splits `--node` values: each may hold several comma-separated addresses.
pub fn parse_nodes<S: AsRef<str>>(values: &[S]) -> Result<Vec<Url>, ClientError> {
    parse_nodes_as(values, "http")
}

fn parse_nodes_as<S: AsRef<str>>(values: &[S], default_scheme: &str) -> Result<Vec<Url>, ClientError> {
    let urls = values
        .iter()
        .flat_map(|v| v.as_ref().split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_node_as(&s, default_scheme))
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() || urls.len() > MAX_NODES {
        return Err(ClientError::NodeCount);
    }
    Ok(urls)
}

impl KvClient {
    /// A client of the nodes at `nodes` (see [`parse_nodes`]).
    pub fn new<S: AsRef<str>>(nodes: &[S], options: ClientOptions) -> Result<KvClient, ClientError> {
        let nodes = parse_nodes_as(nodes, options.default_scheme())?;
        if options.tls.is_none()
            && let Some(u) = nodes.iter().find(|u| u.scheme() == "https")
        {
            return Err(ClientError::InvalidNode {
                addr: u.to_string(),
                reason: "an https:// node needs the cluster CA: give --ca-file FILE".into(),
            });
        }
        let tls = options.tls.as_deref().cloned().unwrap_or_else(rollgate::tls::plain_client);
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(|e| ClientError::InvalidNode { addr: String::new(), reason: e.to_string() })?;
        Ok(KvClient {
            http,
            nodes: RwLock::new(Arc::new(nodes)),
            next: AtomicUsize::new(0),
            session: std::sync::Mutex::new(Session::new(options.session_keys)),
            options,
            seen: std::sync::Mutex::new(None),
            stale: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The nodes, in the order they are tried first (`host:port`).
    pub fn nodes(&self) -> Vec<String> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner()).clone();
        nodes
            .iter()
            .map(|u| format!("{}:{}", u.host_str().unwrap_or(""), u.port_or_known_default().unwrap_or(0)))
            .collect()
    }

    /// Replaces the node list (e.g. after a node restarted on another port).
    pub fn set_nodes<S: AsRef<str>>(&self, nodes: &[S]) -> Result<(), ClientError> {
        let nodes = parse_nodes_as(nodes, self.options.default_scheme())?;
        *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(nodes);
        Ok(())
    }

    /// Stores `value` under `key`, with a TTL when given.
    pub async fn put(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        ttl_s: Option<u64>,
    ) -> Result<WriteOutcome, ClientError> {
        let value: Vec<u8> = value.into();
        let (node, resp) = self.send(Method::PUT, key, ttl_s, Some(value)).await?;
        let outcome = self.outcome(node, resp).await?;
        self.note_write(key, &outcome, ttl_s.is_none());
        Ok(outcome)
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<WriteOutcome, ClientError> {
        let (node, resp) = self.send(Method::DELETE, key, None, None).await?;
        let outcome = self.outcome(node, resp).await?;
        self.note_write(key, &outcome, false);
        Ok(outcome)
    }

    fn note_write(&self, key: &str, outcome: &WriteOutcome, lasting_value: bool) {
        if let Ok(version) = outcome.version.parse::<Version>() {
            self.session.lock().unwrap_or_else(|p| p.into_inner()).note(key, Token { version, lasting_value });
        }
    }

    /// Adds a write made outside this client to its session (by another
    /// client or process of the same user, which passes on the version its
    /// write was acknowledged with): this client's reads of `key` then
    /// return that write or a newer one. `value_without_ttl`: the write
    /// stored a value without a TTL (so "not found" would be stale).
    pub fn remember(&self, key: &str, version: Version, value_without_ttl: bool) {
        self.saw(&version.to_string());
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(key, Token { version, lasting_value: value_without_ttl });
    }

    /// How many answers this client refused as stale (older than its
    /// session token; see the module docs) and asked another node instead.
    pub fn stale_answers(&self) -> u64 {
        self.stale.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The value of `key`, or `None` when it does not exist (or expired),
    /// read at [`ClientOptions::read_level`] (see the module docs).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.read(key, self.options.read_level).await?.value)
    }

    /// Reads `key` at `level` (see the module docs).
    pub async fn read(&self, key: &str, level: ReadLevel) -> Result<ReadResult, ClientError> {
        crate::record::check_key(key).map_err(ClientError::InvalidKey)?;
        let token = self.session.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned();
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner()).clone();
        let via = reads::Via {
            http: &self.http,
            nodes: &nodes,
            next: &self.next,
            rounds: self.options.rounds,
            round_backoff: self.options.round_backoff,
            stale: &self.stale,
        };
        let result = reads::read(&via, key, level, token.as_ref()).await?;
        if let Some(version) = &result.version {
            self.saw(&version.to_string());
            // A value read may carry a TTL the answer does not show: only
            // its version counts (a later answer must not be older).
            self.session
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .note(key, Token { version: version.clone(), lasting_value: false });
        }
        Ok(result.into())
    }

    async fn outcome(&self, node: String, resp: reqwest::Response) -> Result<WriteOutcome, ClientError> {
        let body = read_bounded(&node, resp, 64 * 1024).await?;
        let outcome: WriteOutcome =
            serde_json::from_slice(&body).map_err(|e| ClientError::BadAnswer { node, reason: e.to_string() })?;
        self.saw(&outcome.version);
        Ok(outcome)
    }

    /// Remembers `version` when it is above the highest seen (a version
    /// that does not parse is ignored: it only orders later writes).
    fn saw(&self, version: &str) {
        if let Ok(v) = version.parse::<Version>() {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.as_ref().is_none_or(|s| v > *s) {
                *seen = Some(v);
            }
        }
    }

    /// The highest version this client has seen, sent with its writes.
    pub fn seen(&self) -> Option<Version> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends one request with failover; returns the first answer that is
    /// final (2xx, or a 4xx other than 404 for a read turned into `Refused`).
    async fn send(
        &self,
        method: Method,
        key: &str,
        ttl_s: Option<u64>,
        body: Option<Vec<u8>>,
    ) -> Result<(String, reqwest::Response), ClientError> {
        crate::record::check_key(key).map_err(ClientError::InvalidKey)?;
        let mut errors = Vec::new();
        let mut attempts = 0;
        let rounds = self.options.rounds.max(1);
        for round in 0..rounds {
            let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner()).clone();
            let start = self.next.load(Ordering::Relaxed);
            for (idx, node, mut url) in rotation(&nodes, start, key) {
                if let Some(t) = ttl_s {
                    url.query_pairs_mut().append_pair("ttl_s", &t.to_string());
                }
                let mut req = self.http.request(method.clone(), url);
                if method != Method::GET
                    && let Some(seen) = self.seen()
                {
                    req = req.header(crate::http::SEEN_HEADER, seen.to_string());
                }
                if let Some(b) = &body {
                    req = req.body(b.clone());
                }
                attempts += 1;
                match req.send().await {
                    Err(e) => errors.push(format!("{node}: {}", describe(&e))),
                    Ok(resp) => {
                        let status = resp.status();
                        if status.is_success() || (status == StatusCode::NOT_FOUND && method == Method::GET) {
                            self.next.store(idx, Ordering::Relaxed);
                            return Ok((node, resp));
                        }
                        let retry = status == StatusCode::SERVICE_UNAVAILABLE || status.is_server_error();
                        let (code, message) = error_body(&node, resp).await;
                        if !retry {
                            return Err(ClientError::Refused { node, status: status.as_u16(), code, message });
                        }
                        errors.push(format!("{node}: {} {code}: {message}", status.as_u16()));
                    }
                }
            }
            if round + 1 < rounds {
                tokio::time::sleep(self.options.round_backoff * (round as u32 + 1)).await;
            }
        }
        Err(ClientError::Unavailable { attempts, errors })
    }
}

#[cfg(test)]
mod tests {
    use super::base::key_path;
    use super::*;

    #[test]
    fn node_addresses_are_parsed_strictly() {
        assert_eq!(parse_node("127.0.0.1:8080").unwrap().as_str(), "http://127.0.0.1:8080/");
        assert_eq!(parse_node("http://localhost:1").unwrap().port(), Some(1));
        assert_eq!(parse_node("https://x:1").unwrap().scheme(), "https");
        assert_eq!(parse_node_as("x:1", "https").unwrap().as_str(), "https://x:1/");
        for bad in ["", "ftp://x:1", "127.0.0.1:8080/kv", "a b", "http://:80", &"x".repeat(300)] {
            assert!(parse_node(bad).is_err(), "{bad:?}");
        }
        let e = KvClient::new(&["https://127.0.0.1:1"], ClientOptions::default()).unwrap_err();
        assert!(e.to_string().contains("--ca-file"), "an https node without a CA names the fix: {e}");
        assert_eq!(parse_nodes(&["a:1,b:2", "c:3"]).unwrap().len(), 3);
        assert!(matches!(parse_nodes::<&str>(&[]), Err(ClientError::NodeCount)));
        assert!(matches!(parse_nodes(&[","]), Err(ClientError::NodeCount)));
    }

    #[test]
    fn keys_are_encoded_whole() {
        assert_eq!(key_path("a/b c"), "/kv/a%2Fb%20c");
        assert_eq!(key_path("é"), "/kv/%C3%A9");
        let mut url = parse_node("127.0.0.1:1").unwrap();
        url.set_path(&key_path("a.b/..."));
        assert_eq!(url.path(), "/kv/a%2Eb%2F%2E%2E%2E");
    }
}

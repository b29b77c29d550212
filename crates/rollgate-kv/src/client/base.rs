//! What the client's parts share: its error, the session tokens, a read's
//! answer, and the HTTP helpers (paths, error bodies, bounded reads).

use rollgate::api::error::ErrorBody;

use crate::hlc::Version;
pub use crate::node::ReadLevel;

/// Most nodes a client is given.
pub const MAX_NODES: usize = 64;
/// Most keys a client keeps a session token for (see `ClientOptions::session_keys`).
pub const MAX_SESSION_KEYS: usize = 1 << 24;

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A node address that is not usable.
    #[error("invalid node address {addr:?}: {reason} (expected HOST:PORT, http://HOST:PORT or https://HOST:PORT)")]
    InvalidNode {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// No node address at all, or too many.
    #[error("give between 1 and {MAX_NODES} node addresses (--node)")]
    NodeCount,
    /// A node refused the request itself (bad key, value too large, ...); retrying elsewhere would not help.
    #[error("node {node} refused the request ({status} {code}): {message}")]
    Refused {
        /// The node.
        node: String,
        /// The HTTP status.
        status: u16,
        /// The error code.
        code: String,
        /// The node's message.
        message: String,
    },
    /// No node could serve the request.
    #[error("no node could serve the request after {attempts} attempt(s): {}", errors.join("; "))]
    Unavailable {
        /// Attempts made.
        attempts: usize,
        /// What each attempt got.
        errors: Vec<String>,
    },
    /// A key no node would accept.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// No node could serve a read at the level asked for: they run a
    /// release without it.
    #[error("no node serves {level} reads: {}; upgrade the nodes to release 2.0 or later", nodes.join(", "))]
    Unsupported {
        /// The level.
        level: &'static str,
        /// What each node answered.
        nodes: Vec<String>,
    },
    /// A node's answer is not what the API promises.
    #[error("node {node} answered with something unexpected: {reason}")]
    BadAnswer {
        /// The node.
        node: String,
        /// What is wrong.
        reason: String,
    },
}

/// What the client last wrote or read of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) version: Version,
    /// A value without a TTL: "not found" would be stale.
    pub(super) lasting_value: bool,
}

/// The session tokens, at most `cap` keys, the least recently updated forgotten first.
#[derive(Debug, Default)]
pub(super) struct Session {
    cap: usize,
    next: u64,
    tokens: std::collections::HashMap<String, (Token, u64)>,
    order: std::collections::BTreeMap<u64, String>,
}

impl Session {
    pub(super) fn new(cap: usize) -> Session {
        Session { cap: cap.min(MAX_SESSION_KEYS), ..Session::default() }
    }

    pub(super) fn get(&self, key: &str) -> Option<&Token> {
        self.tokens.get(key).map(|(t, _)| t)
    }

    /// Remembers `token` unless the key's token is newer.
    pub(super) fn note(&mut self, key: &str, token: Token) {
        if self.cap == 0 {
            return;
        }
        if let Some((old, seq)) = self.tokens.get(key) {
            if old.version > token.version {
                return;
            }
            self.order.remove(seq);
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, key.to_string());
        self.tokens.insert(key.to_string(), (token, seq));
        while self.tokens.len() > self.cap {
            let Some((_, k)) = self.order.pop_first() else { break };
            self.tokens.remove(&k);
        }
    }
}

/// A read's answer (see `KvClient::read`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// The value (`None`: not found, deleted or expired).
    pub value: Option<Vec<u8>>,
    /// The version read (of a tombstone too, when the node says).
    pub version: Option<Version>,
    /// The node that answered.
    pub node: String,
    /// The level the node served the read at (`None`: a release without
    /// read levels, whose answer the client checked against its session).
    pub served_at: Option<ReadLevel>,
}

/// `/kv/{key}` with every byte of the key but `A-Z a-z 0-9 - _ ~`
/// percent-encoded (so `.`, `..` and `/` stay part of the key).
pub(super) fn key_path(key: &str) -> String {
    let mut out = String::with_capacity(4 + key.len() * 3);
    out.push_str("/kv/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A node's URL as `host:port`, as errors name it.
fn node_name(base: &reqwest::Url) -> String {
    format!("{}:{}", base.host_str().unwrap_or("?"), base.port_or_known_default().unwrap_or(0))
}

/// One round over `nodes` starting at `start`: each node's index, its name
/// and the URL of `key` on it.
pub(super) fn rotation<'a>(
    nodes: &'a [reqwest::Url],
    start: usize,
    key: &'a str,
) -> impl Iterator<Item = (usize, String, reqwest::Url)> + 'a {
    (0..nodes.len()).map(move |i| {
        let idx = (start + i) % nodes.len();
        let mut url = nodes[idx].clone();
        url.set_path(&key_path(key));
        (idx, node_name(&nodes[idx]), url)
    })
}

pub(super) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    let hint = if msg.contains("InvalidContentType") || msg.contains("corrupt message") {
        " (the node does not speak HTTPS: use http://, or start it with TLS)"
    } else if msg.contains("UnknownIssuer") || msg.contains("BadSignature") {
        " (the node's certificate is not signed by the CA of --ca-file: give the cluster CA)"
    } else if msg.contains("Expired") || msg.contains("certificate expired") {
        " (the node's certificate has expired: issue it a new one with rollgate certs node ID)"
    } else if msg.contains("NotValidForName") || msg.contains("not valid for name") {
        " (the node's certificate does not name the host you used: use an address it names, or issue it with --host)"
    } else {
        ""
    };
    msg.push_str(hint);
    msg
}

pub(super) async fn error_body(node: &str, resp: reqwest::Response) -> (String, String) {
    match read_bounded(node, resp, 64 * 1024).await {
        Ok(bytes) => match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => ("unknown".into(), String::from_utf8_lossy(&bytes).chars().take(512).collect()),
        },
        Err(e) => ("unknown".into(), e.to_string()),
    }
}

pub(super) async fn read_bounded(node: &str, mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, ClientError> {
    let too_large = || ClientError::BadAnswer { node: node.to_string(), reason: format!("an answer over {max} bytes") };
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > max {
                    return Err(too_large());
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(ClientError::BadAnswer { node: node.to_string(), reason: describe(&e) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens_are_bounded_and_never_go_back() {
        let v = |wall_ms| Version { wall_ms, logical: 0, node: "n".into() };
        let token = |wall_ms| Token { version: v(wall_ms), lasting_value: true };
        let mut s = Session::new(2);
        s.note("a", token(5));
        s.note("a", token(3));
        assert_eq!(s.get("a").map(|t| t.version.wall_ms), Some(5), "an older version does not replace a newer one");
        s.note("b", token(1));
        s.note("a", token(6));
        s.note("c", token(1));
        assert!(s.get("b").is_none(), "the least recently updated key is forgotten first");
        assert_eq!((s.get("a").map(|t| t.version.wall_ms), s.tokens.len(), s.order.len()), (Some(6), 2, 2));
        let mut off = Session::new(0);
        off.note("a", token(1));
        assert!(off.get("a").is_none(), "a session of 0 keys keeps none");
        assert_eq!(Session::new(usize::MAX).cap, MAX_SESSION_KEYS);
    }
}

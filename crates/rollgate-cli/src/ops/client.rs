//! The HTTP client of the operator commands: one node's admin API.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use rollgate_api::error::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::args::Connection;
use crate::failure::{Failure, Outcome};

/// Largest response read from a node.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A node's admin API.
pub struct Client {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

/// Parses `--node`: `http://HOST:PORT`, `https://HOST:PORT`, or `HOST:PORT`
/// (http is implied).
#[cfg(test)]
pub fn parse_node_url(spec: &str) -> Result<Url, Failure> {
    parse_node_url_as(spec, "http")
}

/// Parses `--node`; `HOST:PORT` gets `default_scheme`.
pub fn parse_node_url_as(spec: &str, default_scheme: &str) -> Result<Url, Failure> {
    let bad = |why: &str| {
        Failure::refused(format!(
            "invalid --node {:?}: {why}; give the node's admin address, e.g. --node http://127.0.0.1:9650",
            shorten(spec)
        ))
    };
    if spec.len() > 2048 {
        return Err(bad("longer than 2048 bytes"));
    }
    let with_scheme = if spec.contains("://") { spec.to_string() } else { format!("{default_scheme}://{spec}") };
    let url = Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(bad(&format!("unsupported scheme {other}"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(bad("give only the scheme, host and port (no path, query or user)"));
    }
    Ok(url)
}

fn shorten(s: &str) -> String {
    rollgate_util::shorten_to(s, 80)
}

/// Runs a command's requests on a current-thread runtime.
pub fn block_on<F: std::future::Future<Output = Outcome>>(f: F) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Internal(anyhow::anyhow!("cannot start the runtime: {e}")))?;
    rt.block_on(f)
}

impl Client {
    /// The client of the top-level options: `--node`, `--token-file`,
    /// `--timeout-s`.
    pub fn connect(conn: &Connection) -> Result<Client, Failure> {
        let tls = super::tls::client_config(conn)?;
        Client::new(conn.node.as_deref(), conn.token_file.as_deref(), Duration::from_secs(conn.timeout_s), tls)
    }

    /// A client of the node at `node` (from `--node` or `ROLLGATE_NODE`),
    /// with the token of `token_file` when given, over HTTPS with `tls`.
    pub fn new(
        node: Option<&str>,
        token_file: Option<&Path>,
        timeout: Duration,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Client, Failure> {
        let node = node.ok_or_else(|| {
            Failure::refused(
                "no node given: pass --node URL before the command (e.g. rollgate --node http://127.0.0.1:9650 flags list) or set ROLLGATE_NODE",
            )
        })?;
        let base = parse_node_url_as(node, if tls.is_some() { "https" } else { "http" })?;
        if base.scheme() == "https" && tls.is_none() {
            return Err(Failure::refused(format!(
                "--node {base} is https: give the cluster CA with --ca-file FILE (the ca.pem of `rollgate certs ca`)"
            )));
        }
        let token = match token_file {
            Some(path) => Some(rollgate_api::token::read_token_file(path).map_err(Failure::refused)?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls.unwrap_or_else(super::tls::plain))
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .build()
            .map_err(|e| Failure::Internal(anyhow::anyhow!("cannot build the HTTP client: {e}")))?;
        Ok(Client { base, token, http })
    }

    /// `GET path` (with its query).
    pub async fn get(&self, path: &str) -> Result<Answer, Failure> {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with `body`, one of the API's request types.
    pub async fn post<B: Serialize>(&self, path: &str, body: &B) -> Result<Answer, Failure> {
        let body = serde_json::to_value(body).map_err(|e| Failure::Internal(e.into()))?;
        self.send(Method::POST, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Answer, Failure> {
        self.send(Method::DELETE, path, None).await
    }

    /// Sends a request; the node's JSON on 2xx, the node's message as a
    /// refusal on 4xx, an internal failure otherwise.
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<Answer, Failure> {
        let endpoint = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let url =
            self.base.join(path).map_err(|e| Failure::Internal(anyhow::anyhow!("bad request path {path}: {e}")))?;
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let mut resp = req.send().await.map_err(|e| {
            if let Some(hint) = super::tls::hint(&e) {
                return Failure::refused(format!("cannot talk to the node at {}: {hint}", self.base));
            }
            Failure::Internal(anyhow::anyhow!(
                "cannot reach the node at {}: {e}; check --node and that its admin API listens there",
                self.base
            ))
        })?;
        let status = resp.status();
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(Failure::Internal(anyhow::anyhow!(
                            "the node's answer is larger than {MAX_RESPONSE_BYTES} bytes"
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(Failure::Internal(anyhow::anyhow!("reading the node's answer: {e}"))),
            }
        }
        if status.is_success() {
            let json = serde_json::from_slice(&bytes)
                .map_err(|_| Failure::Internal(anyhow::anyhow!("the node answered {status} without JSON")))?;
            return Ok(Answer { endpoint, json });
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| format!("{status}: {}", shorten(&String::from_utf8_lossy(&bytes))));
        if status.is_client_error() && status != StatusCode::REQUEST_TIMEOUT {
            Err(Failure::Refused(message))
        } else {
            Err(Failure::Internal(anyhow::anyhow!("the node answered {status}: {message}")))
        }
    }
}

/// A node's answer: its JSON as the node sent it, and the endpoint that
/// gave it (for messages).
pub struct Answer {
    endpoint: String,
    json: Value,
}

impl Answer {
    /// Prints the answer as the node sent it (`--json`): fields this CLI
    /// does not know stay in, for scripts.
    pub fn print_json(&self) -> Outcome {
        let text = serde_json::to_string_pretty(&self.json).map_err(|e| Failure::Internal(e.into()))?;
        println!("{text}");
        Ok(())
    }

    /// The node's JSON as it sent it.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The answer as the API type `T`, for a command that also has `--json`.
    /// An answer that does not decode (the node runs another API version)
    /// fails naming the endpoint; fields `T` does not have are ignored.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        self.decode_or("add --json to print it as the node sent it, or use the rollgate CLI of the node's release")
    }

    /// [`Answer::decode`] for a command without `--json`.
    pub fn decode_report<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        self.decode_or("use the rollgate CLI of the node's release")
    }

    fn decode_or<T: DeserializeOwned>(&self, fix: &str) -> Result<T, Failure> {
        T::deserialize(&self.json).map_err(|e| {
            Failure::Internal(anyhow::anyhow!(
                "the node's answer to {} does not match this CLI's API version ({e}): {fix}",
                self.endpoint
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_are_checked() {
        assert_eq!(parse_node_url("127.0.0.1:9650").unwrap().as_str(), "http://127.0.0.1:9650/");
        assert_eq!(parse_node_url("http://localhost:1/").unwrap().as_str(), "http://localhost:1/");
        assert_eq!(parse_node_url("https://n:1").unwrap().as_str(), "https://n:1/");
        assert_eq!(parse_node_url_as("n:1", "https").unwrap().as_str(), "https://n:1/");
        for (bad, fragment) in [
            ("ftp://n:1", "unsupported scheme ftp"),
            ("http://n:1/admin", "no path"),
            ("http://n:1?x=1", "no path"),
            ("http://u@n:1", "no path"),
            ("http://:99999", "invalid"),
        ] {
            let Err(Failure::Refused(msg)) = parse_node_url(bad) else { panic!("{bad} accepted") };
            assert!(msg.contains(fragment), "{bad}: {msg}");
        }
    }
}

//! The demo's operator: the same admin API calls `rollgate` makes (enable
//! flags, follow migrations, ask `_capabilities`), over HTTP with the token.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::load::{Expected, Load};
use crate::client::KvClient;

/// Largest admin answer read.
const MAX_ANSWER_BYTES: usize = 8 << 20;

pub(super) struct Admin {
    http: reqwest::Client,
    scheme: &'static str,
    token: String,
    feature_writes: Mutex<Expected>,
}

impl Admin {
    /// The operator with `token`, over HTTPS with `tls` (else HTTP).
    pub(super) fn new(token: &str, tls: Option<&rustls::ClientConfig>) -> Admin {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let config = tls.cloned().unwrap_or_else(rollgate::tls::plain_client);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .use_preconfigured_tls(config)
            .build()
            .expect("a client with a ready rustls configuration builds");
        Admin { http, scheme, token: token.to_string(), feature_writes: Mutex::new(Expected::new()) }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}://{addr}{path}", self.scheme)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| format!("{path} on {addr}: {e}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| format!("{path} on {addr}: {e}"))?;
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(format!("{path} on {addr}: answer over {MAX_ANSWER_BYTES} bytes"));
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| status.to_string());
            return Err(format!("{path} on {addr}: {msg}"));
        }
        Ok(v)
    }

    /// `rollgate flags enable --all`: the flags it enabled.
    pub(super) async fn enable_all(&self, addr: &str) -> Result<Vec<String>, String> {
        let v = self.call(reqwest::Method::POST, addr, "/admin/flags/enable", Some(json!({"all": true}))).await?;
        Ok(strings(&v["enabled"]))
    }

    /// `rollgate upgrade finalize RELEASE`: the release floor it raised.
    pub(super) async fn finalize(&self, addr: &str, release: &str) -> Result<String, String> {
        let body = json!({ "release": release });
        let v = self.call(reqwest::Method::POST, addr, "/admin/upgrade/finalize", Some(body)).await?;
        let report: rollgate::api::floor::FinalizeReport =
            serde_json::from_value(v).map_err(|e| format!("/admin/upgrade/finalize on {addr}: {e}"))?;
        Ok(report.release)
    }

    /// Each service format as `service: format N (from->to step by node, ...)`.
    pub(super) async fn service_formats(&self, addr: &str) -> Result<Vec<String>, String> {
        let status = self.call(reqwest::Method::GET, addr, "/admin/upgrade/status", None).await?;
        Ok(status["migrations"]["services"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let steps: Vec<String> = s["history"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| {
                        format!(
                            "{}->{} {} by {}",
                            h["from"],
                            h["to"],
                            h["step"].as_str().unwrap_or("?"),
                            h["node"].as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                let steps = if steps.is_empty() { "no step run".to_string() } else { steps.join(", ") };
                format!("{}: format {} ({steps})", s["service"].as_str().unwrap_or("?"), s["version"])
            })
            .collect())
    }

    /// The names of the enabled flags.
    pub(super) async fn enabled_flags(&self, addr: &str) -> Result<Vec<String>, String> {
        let v = self.call(reqwest::Method::GET, addr, "/admin/flags", None).await?;
        Ok(v["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["state"] == "enabled")
            .filter_map(|f| f["name"].as_str().map(str::to_string))
            .collect())
    }

    /// Follows `/admin/upgrade/status` until no node-local migration is
    /// running or waiting on a gate that is open (or an enabled flag), and
    /// returns the finished ones as `node/migration`. `show` gets a progress
    /// line at each poll.
    pub(super) async fn wait_migrations(
        &self,
        addr: &str,
        timeout: Duration,
        show: impl Fn(String),
    ) -> Result<Vec<String>, String> {
        let started = Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        let mut quiet_polls = 0;
        loop {
            ticker.tick().await;
            let status = self.call(reqwest::Method::GET, addr, "/admin/upgrade/status", None).await?;
            let enabled = strings(&status["flags"]["enabled"]);
            let migrations: Vec<&Value> = status["migrations"]["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|n| n["migrations"].as_array().into_iter().flatten())
                .collect();
            let active: Vec<&&Value> = migrations
                .iter()
                .filter(|m| {
                    let gate_enabled = m["gate"]["kind"] == "flag"
                        && m["gate"]["name"].as_str().is_some_and(|g| enabled.iter().any(|e| e == g));
                    m["state"] == "running" || (m["state"] == "pending" && (m["gate_open"] == true || gate_enabled))
                })
                .collect();
            // A service format with a step due (its gate open) counts as running.
            let services_due = status["migrations"]["services"].as_array().into_iter().flatten().any(|s| {
                s["state"] == "running" || (s["blocked_by"].is_null() && s["target"].as_u64() > s["version"].as_u64())
            });
            if let Some(failed) = migrations.iter().find(|m| m["state"] == "failed") {
                return Err(format!(
                    "migration {} on {} failed: {}",
                    failed["id"].as_str().unwrap_or("?"),
                    failed["node"].as_str().unwrap_or("?"),
                    failed["error"].as_str().unwrap_or("?")
                ));
            }
            if active.is_empty() && !services_due {
                // Twice in a row, so a runner that is just picking up a gate is seen.
                quiet_polls += 1;
                if quiet_polls >= 2 {
                    return Ok(migrations
                        .iter()
                        .filter(|m| m["state"] == "done")
                        .map(|m| format!("{}/{}", m["node"].as_str().unwrap_or("?"), m["id"].as_str().unwrap_or("?")))
                        .collect());
                }
            } else {
                quiet_polls = 0;
                let line = active
                    .iter()
                    .map(|m| {
                        let (done, total) = (m["done"].as_u64().unwrap_or(0), m["total"].as_u64().unwrap_or(0));
                        format!(
                            "{}/{} {done}/{total}",
                            m["node"].as_str().unwrap_or("?"),
                            m["id"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                show(format!("migrations: {line}"));
            }
            if started.elapsed() > timeout {
                return Err(format!("migrations still running after {} s", timeout.as_secs()));
            }
        }
    }

    /// Uses what the upgrade unlocked, when this release has it: writes with
    /// a TTL (flag `ttl`), and the prefix scan endpoint once `_capabilities`
    /// says every member supports it. Returns what was used.
    pub(super) async fn use_new_features(&self, client: &KvClient, addr: &str, load: &Load) -> Vec<String> {
        let mut used = Vec::new();
        let mut ttl_ok = 0;
        for i in 0..10 {
            let key = format!("feature-ttl-{i:02}");
            let value = format!("expires in an hour ({i})").into_bytes();
            let started = Instant::now();
            match client.put(&key, value.clone(), Some(3600)).await {
                Ok(_) => {
                    load.record_now(started.elapsed(), true, None);
                    self.feature_writes.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Some(value));
                    ttl_ok += 1;
                }
                // Refused (the flag is not enabled in this release): not a failure of the cluster.
                Err(crate::client::ClientError::Refused { .. }) => break,
                Err(e) => load.record_now(started.elapsed(), false, Some(format!("ttl write {key}: {e}"))),
            }
        }
        if ttl_ok > 0 {
            used.push(format!("{ttl_ok} writes with a TTL (PUT /kv/KEY?ttl_s=3600)"));
        }
        let caps = self
            .call(reqwest::Method::GET, addr, "/_capabilities?method=GET&path=/kv&parameters=prefix,limit", None)
            .await;
        if let Ok(v) = caps
            && v["supported"] == true
        {
            // The scan must return exactly the TTL keys written above, in key order.
            let started = Instant::now();
            match self.call(reqwest::Method::GET, addr, "/kv?prefix=feature-ttl-&limit=100", None).await {
                Ok(v) => {
                    let keys: Vec<String> = v["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|i| i["key"].as_str().map(str::to_string))
                        .collect();
                    let expected: Vec<String> = (0..ttl_ok).map(|i| format!("feature-ttl-{i:02}")).collect();
                    if keys == expected {
                        load.record_now(started.elapsed(), true, None);
                        used.push(format!(
                            "prefix scan GET /kv?prefix=feature-ttl- ({} keys, as written), available once _capabilities said every member supports it",
                            keys.len()
                        ));
                    } else {
                        let e = format!("prefix scan returned {keys:?}, expected {expected:?}");
                        load.record_now(started.elapsed(), false, Some(e));
                    }
                }
                Err(e) => load.record_now(started.elapsed(), false, Some(format!("prefix scan: {e}"))),
            }
        }
        used
    }

    /// The writes `use_new_features` had acknowledged.
    pub(super) fn take_feature_writes(&self) -> Expected {
        std::mem::take(&mut *self.feature_writes.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

//! rollgate's admin API of a node over HTTP, with the bearer token: the
//! same calls the `rollgate` operator CLI makes.

use std::time::Duration;

use serde_json::Value;

use super::process::TOKEN;

/// The admin API of one node.
pub struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    /// The admin API at `addr` (`HOST:PORT`).
    pub fn new(addr: &str) -> Admin {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(rollgate::tls::plain_client())
            .timeout(Duration::from_secs(150))
            .build()
            .unwrap();
        Admin { http, base: format!("http://{addr}") }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.header("authorization", format!("Bearer {TOKEN}")).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into())))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let req = self.http.post(format!("{}{path}", self.base)).json(&body);
        self.send(req).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.base))).await
    }

    /// `GET /_capabilities?...`: `supported`.
    pub async fn capability(&self, query: &str) -> Value {
        let (status, body) = self.get(&format!("/_capabilities?{query}")).await;
        assert_eq!(status, 200, "{body}");
        body["supported"].clone()
    }

    /// Waits (paced, at most 60 s) until `GET /admin/upgrade/status` shows
    /// every table migration of each of `nodes` done forward; returns the status.
    pub async fn wait_migrations_done(&self, nodes: &[&str]) -> Value {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last = Value::Null;
        for _ in 0..600 {
            tick.tick().await;
            let (status, body) = self.get("/admin/upgrade/status").await;
            assert_eq!(status, 200, "{body}");
            // The cluster settings (a service format) reach their target too.
            let settings_done = body["migrations"]["services"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["service"] == "kv_settings"))
                .is_some_and(|s| s["version"] == 2 && s["state"] == "done");
            let done = settings_done
                && nodes.iter().all(|n| {
                    let published =
                        body["migrations"]["nodes"].as_array().and_then(|a| a.iter().find(|s| s["node"] == *n));
                    published.and_then(|s| s["migrations"].as_array()).is_some_and(|ms| {
                        !ms.is_empty() && ms.iter().all(|m| m["state"] == "done" && m["direction"] == "forward")
                    })
                });
            if done {
                return body;
            }
            last = body;
        }
        panic!("the migrations of {nodes:?} did not finish within 60 s: {last}");
    }
}

/// A node's `/health` (whatever its status code).
pub async fn health(addr: &str) -> Value {
    reqwest::Client::builder()
        .use_preconfigured_tls(rollgate::tls::plain_client())
        .build()
        .unwrap()
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The format of a node's `records` unit, from `/health`.
pub async fn storage_format(addr: &str) -> u64 {
    let h = health(addr).await;
    h["storage"]["format"].as_u64().unwrap_or_else(|| panic!("no storage format in {h}"))
}

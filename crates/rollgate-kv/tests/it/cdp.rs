//! A small client of headless Chromium's DevTools protocol over a
//! WebSocket: start the browser (fresh profile, no network services, no
//! sandbox), open a page, evaluate scripts (awaiting promises), take a
//! screenshot. Blocking: run it in `spawn_blocking`.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long the browser may take to start and to answer one command.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium with one page.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Chromium binary: `ROLLGATE_CHROMIUM`, else `chromium` (Debian's).
fn binary() -> String {
    std::env::var("ROLLGATE_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

impl Browser {
    /// Starts Chromium and opens a blank page (`width` x `height`).
    pub fn start(width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e}; install Debian's chromium (scripts/test does: apt-get install -y chromium chromium-driver) or set ROLLGATE_CHROMIUM",
                    binary()
                )
            });
        // Ready once it prints its DevTools address.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx.recv_timeout(TIMEOUT).expect("chromium printed its DevTools address");
        let (socket, _) = tungstenite::connect(url.as_str()).expect("connect to the DevTools WebSocket");
        if let MaybeTlsStream::Plain(s) = socket.get_ref() {
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
        }
        let mut b = Browser { child, _profile: profile, socket, session: String::new(), next_id: 1 };
        let target = b.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call_browser("Target.attachToTarget", json!({"targetId": target_id, "flatten": true}));
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Page.enable", json!({}));
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        self.socket.send(Message::Text(msg.to_string().into())).expect("send a DevTools command");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "no answer to {method} within {TIMEOUT:?}");
            let text = match self.socket.read().expect("read from the DevTools WebSocket") {
                Message::Text(t) => t.to_string(),
                _ => continue,
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"].as_u64() == Some(id) {
                assert!(v.get("error").is_none(), "{method} failed: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A command on the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = Some(self.session.clone());
        self.send(method, params, session)
    }

    /// Opens `url` and waits until its load event.
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for("document.readyState === 'complete'");
    }

    /// Evaluates `expression` (awaiting a promise) and returns its value;
    /// a thrown error fails the test with its message.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expression, "awaitPromise": true, "returnByValue": true}));
        if let Some(e) = r.get("exceptionDetails") {
            panic!("script failed: {}\n{expression}", e["exception"]["description"].as_str().unwrap_or(&e.to_string()));
        }
        r["result"]["value"].clone()
    }

    /// Waits (bounded, on DOM changes, no polling) until `condition` (a JS
    /// expression) is truthy; returns its value.
    pub fn wait_for(&mut self, condition: &str) -> Value {
        let script = format!(
            r#"new Promise((resolve, reject) => {{
                const check = () => {{ try {{ const v = ({condition}); if (v) {{ resolve(v); return true; }} }} catch (e) {{}} return false; }};
                if (check()) return;
                const obs = new MutationObserver(() => {{ if (check()) obs.disconnect(); }});
                obs.observe(document, {{ subtree: true, childList: true, characterData: true, attributes: true }});
                document.addEventListener("readystatechange", check);
                setTimeout(() => {{ obs.disconnect(); reject(new Error("timed out waiting for: " + {src})); }}, 20000);
            }})"#,
            src = serde_json::to_string(condition).unwrap()
        );
        self.eval(&script)
    }

    /// A PNG of the page as it is shown.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": false}));
        base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).unwrap()
    }
}

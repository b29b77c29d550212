//! The dashboard in a real headless Chromium (Debian's `chromium`, driven
//! over the DevTools protocol) against a running 3-node cluster: the page
//! shows the members with the versions each link agreed on and the flags;
//! a wrong token is refused with the node's message; enabling a flag from
//! the page changes the cluster; and a change made elsewhere reaches the
//! open page without a reload. Set `ROLLGATE_DASHBOARD_PNG=FILE` to keep
//! the screenshot (the README's is made this way).

use std::time::Duration;

use serde_json::{Value, json};

use crate::cdp::Browser;
use crate::support::*;
use rollgate_kv::node;

const TOKEN: &str = "dashboard-test-token";

fn text(b: &mut Browser, selector: &str) -> String {
    b.eval(&format!("document.querySelector({}).textContent", json!(selector))).as_str().unwrap_or_default().to_string()
}

async fn flag_state(client: &reqwest::Client, admin: std::net::SocketAddr, flag: &str) -> String {
    let v: Value = client.get(format!("http://{admin}/admin/flags/{flag}")).send().await.unwrap().json().await.unwrap();
    v["state"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_and_changes_it_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let store = redb_store(dir.path()).await;
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let mut c = config("1.2", &data(dir.path(), id));
        c.node_id = Some(id.into());
        c.admin_token = Some(TOKEN.into());
        let n = node::start(c, store.clone()).await.expect("start a node");
        assert!(n.wait_ready(READY).await, "{id} ready");
        nodes.push(n);
    }
    let admins: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.addresses().admin).collect();
    let url = format!("http://{}/ui/", admins[0]);
    let rt = tokio::runtime::Handle::current();
    let first = admins[0];
    let meta = store.clone();
    let png = tokio::task::spawn_blocking(move || {
        let client = plain_http();
        let mut b = Browser::start(1280, 1000);
        b.open(&url);
        b.eval("window.notReloaded = true");

        // Members, each running 1.2, and every link at the versions the handshake agreed on (v3 between 1.2 nodes).
        b.wait_for("document.querySelectorAll('#members tbody tr').length === 3");
        b.wait_for("[...document.querySelectorAll('#members .link')].filter(l => l.textContent.includes('v3 /')).length === 6");
        // These test nodes run plaintext on loopback, and the page says so on each link.
        b.wait_for("[...document.querySelectorAll('#members .link')].filter(l => l.textContent.includes('plaintext')).length === 6");
        for id in ["n1", "n2", "n3"] {
            let row = text(&mut b, &format!("#members tr[data-node='{id}']"));
            assert!(row.contains(id) && row.contains("1.2") && row.contains("running") && row.contains("v1..=v3"), "{row}");
        }
        assert!(text(&mut b, "#summary").contains("3 of 3 members running"), "{}", text(&mut b, "#summary"));

        // Flags with state, stability and what blocks them.
        let ttl = text(&mut b, "#flags tr[data-flag='ttl']");
        assert!(ttl.contains("enabled") && ttl.contains("stable"), "{ttl}");
        let checksums = text(&mut b, "#flags tr[data-flag='value_checksums']");
        assert!(checksums.contains("disabled") && checksums.contains("experimental") && checksums.contains("ready to enable"), "{checksums}");

        // An irreversible flag asks for an explicit confirmation before the button works.
        b.eval("openDialog('enable', {name: 'forever', reversible: false, introduced_in: '9.9', stability: 'stable', description: 'a test flag'})");
        assert!(text(&mut b, "#dialog-warning").contains("cannot be undone"));
        assert_eq!(b.eval("document.getElementById('dialog-ok').disabled"), json!(true));
        b.eval("const c = document.getElementById('dialog-confirm'); c.checked = true; c.dispatchEvent(new Event('change'))");
        assert_eq!(b.eval("document.getElementById('dialog-ok').disabled"), json!(false));
        b.eval("document.getElementById('dialog-cancel').click()");
        b.wait_for("!document.getElementById('dialog').open");

        // The plan to a chosen release.
        b.eval("document.getElementById('plan-release').value = '2.0'; document.querySelector('#plan-form button').click()");
        let plan = b.wait_for("(t => t.includes('2.0') && t)(document.getElementById('plan').textContent)");
        assert!(plan.as_str().unwrap().contains("n1"), "{plan}");

        // A wrong token: the node's message in the dialog, nothing changed.
        b.eval("document.querySelector(\"tr[data-flag='value_checksums'] button.action\").click()");
        b.wait_for("document.getElementById('dialog').open");
        assert!(text(&mut b, "#dialog-warning").contains("experimental"));
        b.eval("document.getElementById('dialog-token').value = 'not-the-token-1'; document.getElementById('dialog-ok').click()");
        let refused = b.wait_for("(t => t.includes('wrong admin token') && t)(document.getElementById('dialog-error').textContent)");
        assert!(refused.as_str().unwrap().contains("use the token the node was started with"), "{refused}");
        assert_eq!(rt.block_on(flag_state(&client, admins[1], "value_checksums")), "disabled");

        // The right token: the flag is enabled, the dialog closes, the page follows.
        b.eval(&format!("document.getElementById('dialog-token').value = {}; document.getElementById('dialog-ok').click()", json!(TOKEN)));
        b.wait_for("!document.getElementById('dialog').open");
        b.wait_for("document.querySelector(\"#flags tr[data-flag='value_checksums'] .state\").textContent === 'enabled'");
        // The cluster changed: the metadata store says enabled.
        let record = rt.block_on(meta.get("rollgate/flags/value_checksums")).unwrap().expect("the flag's record");
        let record: rollgate::cluster::FlagRecord = serde_json::from_slice(&record.value).unwrap();
        assert!(record.is_enabled(), "{record:?}");
        b.wait_for("document.querySelector('#audit tbody').textContent.includes('enabled value_checksums')");
        let png = b.screenshot();

        // A change made elsewhere reaches the open page (server-sent events, no reload).
        let resp = rt.block_on(
            client
                .post(format!("http://{}/admin/flags/disable", admins[1]))
                .bearer_auth(TOKEN)
                .json(&json!({"flag": "value_checksums"}))
                .timeout(Duration::from_secs(60))
                .send(),
        );
        assert_eq!(resp.unwrap().status(), 200);
        b.wait_for("document.querySelector(\"#flags tr[data-flag='value_checksums'] .state\").textContent === 'disabled'");
        assert_eq!(b.eval("window.notReloaded === true"), json!(true), "the page was not reloaded");
        assert!(text(&mut b, "#audit tbody").contains("disabled value_checksums"));
        png
    })
    .await
    .unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a PNG of the page");

    // The node's /metrics: its links at the agreed versions, its handshakes, and its requests by operation.
    let client = plain_http();
    let kv = rollgate_kv::KvClient::new(&[first.to_string()], quick()).unwrap();
    kv.put("metrics-key", b"v".to_vec(), None).await.unwrap();
    let metrics = client.get(format!("http://{first}/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "rollgate_peer_protocol_version{peer=\"n2\"} 3",
        "kv_requests_total{operation=\"put\",code=\"200\"} 1",
        "kv_request_duration_seconds_count{operation=\"put\"} 1",
        "rollgate_flag_state{flag=\"value_checksums\",state=\"disabled\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.lines().any(|l| l.starts_with("rollgate_handshakes_total{outcome=\"accepted\",code=\"\"}")),
        "{metrics}"
    );
    if let Some(path) = std::env::var_os("ROLLGATE_DASHBOARD_PNG") {
        std::fs::write(path, &png).unwrap();
    }
    for n in nodes {
        n.stop().await.unwrap();
    }
}

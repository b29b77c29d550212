//! The release floor through real node runtimes on the embedded store:
//! finalize refuses until every member runs the release and its stable
//! flags are enabled, a raised floor refuses older releases at boot and at
//! join (a restarted member included) and survives restarts, it never goes
//! down, and the admin endpoint refuses bad requests without changing
//! anything.

use crate::flags_support::*;
use rollgate::admin::AdminConfig;
use rollgate::flags::plan::{FinalizeBlocker, JoinRefusal};
use rollgate::flags::{EnableRequest, FlagError};
use rollgate::node::{FinalizeError, FinalizeRequest, NodeError};
use serde_json::{Value, json};

fn finalize(release: Option<&str>, dry_run: bool) -> FinalizeRequest {
    FinalizeRequest { release: release.map(String::from), dry_run }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_below_the_floor_is_refused_at_boot_and_the_floor_survives_restarts() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let n1 = start(&store, config("n1", "1.1", dir.path(), &counters)).await;
    let n2 = start(&store, config("n2", "1.1", dir.path(), &counters)).await;
    let report = n1.finalize(finalize(None, false)).await.unwrap();
    assert_eq!((report.release.as_str(), report.previous, report.changed), ("1.1", None, true));
    let seen = until(&n2, "the floor", |v| v.floor.is_some()).await;
    assert_eq!(seen.floor.as_ref().map(|f| f.release.as_str()), Some("1.1"), "every member sees it");

    // A new node and a restarted member on an older release: refused, nothing written.
    n2.stop().await.unwrap();
    drop(n2);
    for id in ["n3", "n2"] {
        let before = snapshot(&store).await;
        let err =
            rollgate::node::Node::start(config(id, "1.0", dir.path(), &counters), store.clone()).await.unwrap_err();
        assert!(
            matches!(&err, NodeError::Flag(FlagError::JoinRefused(JoinRefusal::BelowFloor { floor, .. })) if floor == "1.1"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "node {id} (release 1.0) cannot join: the cluster's release floor is 1.1 (finalized with `rollgate \
                 upgrade finalize`), and release 1.0 is below it; run release 1.1 or later on {id}"
            )
        );
        assert_eq!(snapshot(&store).await, before, "a refused boot changes nothing in the store");
    }

    // Upgraded, the member boots; the floor outlives every restart.
    let n2 = start(&store, config("n2", "1.2", dir.path(), &counters)).await;
    n1.stop().await.unwrap();
    drop(n1);
    let n1 = start(&store, config("n1", "1.2", dir.path(), &counters)).await;
    assert_eq!(n1.view().floor.as_ref().map(|f| (f.release.as_str(), f.by_node.as_str())), Some(("1.1", "n1")));

    // 1.2 needs its stable flag `compact` enabled first; then it may be the floor.
    let err = n2.finalize(finalize(Some("1.2"), false)).await.unwrap_err();
    let FinalizeError::Refused { blockers, .. } = &err else { panic!("{err:?}") };
    assert_eq!(blockers, &[FinalizeBlocker::FlagNotEnabled { release: "1.2".into(), flag: "compact".into() }]);
    n2.enable(EnableRequest::flags(["compact"])).await.unwrap();
    let report = n2.finalize(finalize(None, false)).await.unwrap();
    assert_eq!((report.release.as_str(), report.previous.as_deref(), report.changed), ("1.2", Some("1.1"), true));
    // It never goes down; asking again for the same release changes nothing.
    let err = n1.finalize(finalize(Some("1.1"), false)).await.unwrap_err();
    assert!(err.to_string().contains("the release floor is already 1.2, above 1.1, and it never goes down"), "{err}");
    let epoch = n1.cluster().view().await.unwrap().epoch;
    assert!(!n1.finalize(finalize(Some("1.2"), false)).await.unwrap().changed);
    assert_eq!(n1.cluster().view().await.unwrap().epoch, epoch, "a no-op finalize writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_names_every_blocker_and_a_dry_run_changes_nothing() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let n1 = start(&store, config("n1", "1.0", dir.path(), &counters)).await;
    let n2 = start(&store, config("n2", "1.0", dir.path(), &counters)).await;
    n1.stop().await.unwrap();
    drop(n1);
    let n1 = start(&store, config("n1", "1.2", dir.path(), &counters)).await;
    let before = snapshot(&store).await;
    for dry_run in [true, false] {
        let err = n1.finalize(finalize(Some("1.2"), dry_run)).await.unwrap_err();
        let FinalizeError::Refused { blockers, .. } = &err else { panic!("{err:?}") };
        let kinds: Vec<String> = blockers
            .iter()
            .map(|b| match b {
                FinalizeBlocker::MemberBelow { member, .. } => format!("member {}", member.node_id),
                FinalizeBlocker::FlagNotEnabled { flag, .. } => format!("flag {flag}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["member n2", "flag ttl", "flag batch", "flag compact"], "dry run {dry_run}");
    }
    // A node cannot vouch for a release newer than its own, nor for a name that cannot be ordered.
    let err = n2.finalize(finalize(Some("1.2"), true)).await.unwrap_err();
    assert!(err.to_string().contains("this node runs release 1.0, older than 1.2"), "{err}");
    let err = n2.finalize(finalize(Some("1.2-rc1"), true)).await.unwrap_err();
    assert!(err.to_string().contains("is not dotted numbers"), "{err}");
    // The default is the oldest release the members run: 1.0 has only `base`, enabled.
    let report = n1.finalize(finalize(None, true)).await.unwrap();
    assert_eq!((report.release.as_str(), report.dry_run, report.changed), ("1.0", true, false));
    assert_eq!(snapshot(&store).await, before, "refusals and dry runs change nothing (audit aside)");
    drop(n2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finalize_endpoint_refuses_bad_requests_and_a_garbage_stored_floor_is_named() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let (n1, addr, _task) =
        start_with_admin(&store, config("n1", "1.1", dir.path(), &counters), AdminConfig::with_token("tok-0123456789"))
            .await;
    let client = http();
    let post = |token: Option<&'static str>, body: Vec<u8>| {
        let mut req = client.post(format!("http://{addr}/admin/upgrade/finalize")).body(body);
        req = req.header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let before = snapshot(&store).await;
    let long = "1.".repeat(40) + "1";
    let cases: Vec<(Option<&'static str>, Vec<u8>, u16, &str)> = vec![
        (None, b"{}".to_vec(), 401, "unauthorized"),
        (Some("tok-0123456789"), b"{not json".to_vec(), 400, "bad_json"),
        (Some("tok-0123456789"), br#"{"release": 12}"#.to_vec(), 400, "bad_json"),
        (Some("tok-0123456789"), br#"{"relase": "1.1"}"#.to_vec(), 400, "bad_json"),
        (Some("tok-0123456789"), br#"{"release": ""}"#.to_vec(), 400, "bad_request"),
        (Some("tok-0123456789"), json!({ "release": long }).to_string().into_bytes(), 400, "bad_request"),
        (Some("tok-0123456789"), vec![0xff, 0x00, 0x7b], 400, "bad_json"),
        (Some("tok-0123456789"), br#"{"release": "v1"}"#.to_vec(), 409, "refused"),
        (Some("tok-0123456789"), br#"{"release": "1.2"}"#.to_vec(), 409, "refused"),
    ];
    for (token, body, status, code) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (got, answer) = post(token, body).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{shown}: {answer}");
    }
    assert_eq!(snapshot(&store).await, before, "no bad request changed anything");
    let (got, answer) = post(Some("tok-0123456789"), br#"{"release": "1.1"}"#.to_vec()).await;
    assert_eq!((got, answer["changed"].as_bool()), (200, Some(true)), "{answer}");

    // A floor record that does not decode is an error naming its key, not a panic or a silent "no floor".
    let key = format!("{}floor", n1.cluster().keys().root());
    store.put(&key, b"\x00garbage".to_vec()).await.unwrap();
    let err = n1.cluster().view().await.unwrap_err().to_string();
    assert!(err.contains(&key), "{err}");
}

//! Deprecated protocol versions: a release marks a version it still speaks
//! deprecated, its record says so, and `GET /admin/upgrade/status` on any
//! member lists every link between running members that negotiated one,
//! with the members whose release deprecates it; other links are not listed.

use std::sync::Arc;

use rollgate::admin::AdminConfig;
use rollgate::api::links::{LinkReport, LinkStatus};
use rollgate::api::upgrade::{DeprecatedLink, UpgradeStatus};

use crate::flags_support::*;

fn link(peer: &str, protocol: u16) -> LinkStatus {
    LinkStatus {
        peer: peer.into(),
        addr: "127.0.0.1:1".into(),
        state: "connected".into(),
        protocol: Some(protocol),
        transport: Some(1),
        peer_release: Some("1.2".into()),
        authenticated: Some(true),
        peer_manifest: None,
        tls: None,
        error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_status_lists_links_on_a_deprecated_protocol_version_from_every_member() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let counters = Counters::default();
    let mut c1 = config("n1", "1.2", dir.path(), &counters);
    c1.deprecated_protocols = [1].into();
    let (n1, _a1, _t1) = start_with_admin(&store, c1, AdminConfig::default()).await;
    let (n2, a2, _t2) =
        start_with_admin(&store, config("n2", "1.2", dir.path(), &counters), AdminConfig::default()).await;
    let (n3, _a3, _t3) =
        start_with_admin(&store, config("n3", "1.2", dir.path(), &counters), AdminConfig::default()).await;
    until(&n2, "three members", |v| v.running().count() == 3).await;
    assert_eq!(n2.view().member("n1").unwrap().record.deprecated_protocols, [1].into(), "published");
    // n1 and n2 speak v1 with each other, n3 speaks v2 with both.
    n1.set_link_source(Arc::new(|| LinkReport { links: vec![link("n2", 1), link("n3", 2)], ..LinkReport::default() }));
    n2.set_link_source(Arc::new(|| LinkReport { links: vec![link("n1", 1), link("n3", 2)], ..LinkReport::default() }));
    n3.set_link_source(Arc::new(|| LinkReport { links: vec![link("n1", 2), link("n2", 2)], ..LinkReport::default() }));

    let status: UpgradeStatus =
        http().get(format!("http://{a2}/admin/upgrade/status")).send().await.unwrap().json().await.unwrap();
    let mut found = status.deprecated_links.clone();
    found.sort_by(|a, b| a.node.cmp(&b.node));
    assert_eq!(
        found,
        [
            DeprecatedLink { node: "n1".into(), peer: "n2".into(), protocol: 1, deprecated_by: vec!["n1".into()] },
            DeprecatedLink { node: "n2".into(), peer: "n1".into(), protocol: 1, deprecated_by: vec!["n1".into()] },
        ]
    );
}

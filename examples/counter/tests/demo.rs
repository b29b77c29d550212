//! The demo's rolling upgrade, through real node runtimes, real sockets and
//! an embedded metadata store: what each link negotiated, the flag, the
//! entries' formats and the refused downgrade.

use rollgate::version::{ProtocolVersion, TransportVersion};
use rollgate_example_counter::demo::{self, Link};
use rollgate_example_counter::entries::{self, FROM_V1, FROM_V2};
use rollgate_example_counter::releases::{ENTRY_FROM_V2, Release};

fn versions(link: &Link) -> (&str, &str, ProtocolVersion, TransportVersion, Option<u64>) {
    let x = &link.exchange;
    (link.from_release.name(), &x.link.peer_release, x.link.protocol, x.link.transport, x.total.entries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_negotiates_per_link_and_writes_the_new_format_only_once_enabled() {
    let mut lines = Vec::new();
    let report = demo::run(&mut |line| lines.push(line)).await.unwrap_or_else(|e| panic!("{e}\n{}", lines.join("\n")));
    let log = lines.join("\n");
    println!("{log}");

    let (v1, v2) = (ProtocolVersion(1), ProtocolVersion(2));
    let (t10, t11) = (Release::V1_0.transport(), Release::V1_1.transport());
    // Each link, by the releases at its ends: 1.0 on either end means
    // protocol v1 at 1.0's transport version, without the entry count.
    for link in &report.links {
        let (from, to, protocol, transport, count) = versions(link);
        if from == "1.1" && to == "1.1" {
            assert_eq!((protocol, transport), (v2, t11), "{link:?}");
            assert!(count.is_some(), "the 1.1 transport version carries the entry count: {link:?}");
        } else {
            assert_eq!((protocol, transport, count), (v1, t10, None), "{link:?}");
        }
    }
    let pairs: Vec<(&str, &str)> =
        report.links.iter().map(|l| (l.from_release.name(), l.exchange.link.peer_release.as_str())).collect();
    for pair in [("1.0", "1.0"), ("1.1", "1.0"), ("1.1", "1.1")] {
        assert!(pairs.contains(&pair), "no {pair:?} link in {pairs:?}");
    }
    let get = report.get.as_ref().expect("a Get between 1.1 nodes");
    assert_eq!(get.exchange.link.protocol, v2);

    assert_eq!(report.enabled.enabled, [ENTRY_FROM_V2]);
    // n2's entries: every one has from@1; only those stored after the flag have from@2.
    let (after, before): (Vec<_>, Vec<_>) = report.entries.iter().partition(|(_, e)| e.features.contains(&FROM_V2));
    assert!(report.entries.iter().all(|(_, e)| e.features.contains(&FROM_V1)));
    assert!(!before.is_empty() && !after.is_empty(), "{log}");
    let newest_before = before.iter().map(|(seq, _)| *seq).max();
    assert!(after.iter().all(|(seq, _)| Some(*seq) > newest_before), "from@2 only after the flag: {log}");
    for (_, entry) in &after {
        let sender = entries::sender(entry).unwrap().unwrap();
        assert_eq!((sender.node.as_str(), sender.release.as_str()), ("n1", "1.1"));
    }
    let (_, old) = before.first().unwrap();
    assert_eq!(entries::sender(old).unwrap().unwrap().release, "", "an old entry reads through from@1");

    assert!(
        report.downgrade_refused.contains(ENTRY_FROM_V2) && report.downgrade_refused.contains("1.0"),
        "{}",
        report.downgrade_refused
    );
}

//! One value per message of the sample protocol: the golden wire samples
//! (`testdata/wire/<name>/<transport_version>.bin`) and the benchmarks use
//! these.

use std::collections::BTreeMap;

use crate::network::v1::{Gossip, Hello, Member, Ping};
use crate::protocol::{self, Msg};
use crate::{network, ticker};

/// `(name, message)` for every message of every supported protocol version.
pub fn messages() -> Vec<(&'static str, Msg)> {
    let mut out = Vec::new();
    for (name, m) in network_messages() {
        out.push((name.0, protocol::v1::Msg::Network(m.clone()).into()));
        out.push((name.1, protocol::v2::Msg::Network(m).into()));
    }
    out.push(("v1_ticker_increment", protocol::v1::Msg::Ticker(ticker::v1::Msg::Increment).into()));
    out.push(("v1_ticker_count", protocol::v1::Msg::Ticker(ticker::v1::Msg::Count(300)).into()));
    out.push(("v2_ticker_increment", protocol::v2::Msg::Ticker(ticker::v2::Msg::Increment { by: 5 }).into()));
    out.push(("v2_ticker_decrement", protocol::v2::Msg::Ticker(ticker::v2::Msg::Decrement { by: 1 << 40 }).into()));
    out.push(("v2_ticker_count", protocol::v2::Msg::Ticker(ticker::v2::Msg::Count { value: -42 }).into()));
    out
}

fn network_messages() -> Vec<((&'static str, &'static str), network::v1::Msg)> {
    vec![
        (
            ("v1_network_hello", "v2_network_hello"),
            network::v1::Msg::Hello(Hello {
                node: "node-a".into(),
                legacy_addr: "10.0.0.1:7000".into(),
                services: vec!["kv".into(), "admin".into()],
            }),
        ),
        (
            ("v1_network_ping", "v2_network_ping"),
            network::v1::Msg::Ping(Ping { seq: 1_000_001, payload: b"echo me".to_vec() }),
        ),
        (("v1_network_pong", "v2_network_pong"), network::v1::Msg::Pong { seq: 1_000_001 }),
        (("v1_network_gossip", "v2_network_gossip"), network::v1::Msg::Gossip(gossip(3))),
    ]
}

/// A gossip message with `members` members: the representative message of
/// the codec benchmark.
pub fn gossip(members: usize) -> Gossip {
    Gossip {
        from: "node-0042.eu-west.example".into(),
        epoch: 1_734_000_123,
        members: (0..members)
            .map(|i| Member {
                id: format!("node-{i:04}"),
                addr: format!("10.1.{}.{}:7000", i / 250, i % 250),
                release: if i % 3 == 0 { "1.2.0".into() } else { "1.1.4".into() },
                last_seen_ms: 250 + 17 * i as u64,
                load: (i as i32 % 7) - 2,
                voter: i < 5,
            })
            .collect(),
        labels: BTreeMap::from([
            ("zone".to_string(), "eu-west-1a".to_string()),
            ("rack".to_string(), "r17".to_string()),
        ]),
        checksum: 0xdead_beef,
    }
}

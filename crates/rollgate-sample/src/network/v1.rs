//! Network engine, v1.

use std::collections::BTreeMap;

use rollgate::wire::{Decode, Encode};

/// Network engine messages, v1.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Msg {
    /// Introduces a node.
    #[wire(tag = 1)]
    Hello(Hello),
    /// Liveness probe.
    #[wire(tag = 2)]
    Ping(Ping),
    /// Answer to a ping.
    #[wire(tag = 3)]
    Pong {
        /// The ping's sequence number.
        seq: u64,
    },
    /// Membership gossip.
    #[wire(tag = 4)]
    Gossip(Gossip),
}

/// Introduces a node.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct Hello {
    /// Node id.
    pub node: String,
    /// The old `host:port` field, dropped in transport version `drop_legacy_addr`.
    #[wire(until = "drop_legacy_addr", default = "String::from(\"unknown\")")]
    pub legacy_addr: String,
    /// Services offered.
    pub services: Vec<String>,
}

/// Liveness probe.
#[derive(Clone, Debug, PartialEq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct Ping {
    /// Sequence number.
    pub seq: u64,
    /// Opaque payload echoed back, added in transport version `ping_payload`.
    #[wire(since = "ping_payload")]
    pub payload: Vec<u8>,
}

/// Membership gossip: the representative message of the benchmarks.
#[derive(Clone, Debug, PartialEq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct Gossip {
    /// Sender.
    pub from: String,
    /// Cluster epoch.
    pub epoch: u64,
    /// Known members.
    pub members: Vec<Member>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Checksum of the member list.
    pub checksum: u32,
}

/// One member in a gossip message.
#[derive(Clone, Debug, PartialEq, Encode, Decode, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Node id.
    pub id: String,
    /// Address.
    pub addr: String,
    /// Release.
    pub release: String,
    /// Milliseconds since last heard from.
    pub last_seen_ms: u64,
    /// Load (may be negative when draining).
    pub load: i32,
    /// Whether it votes.
    pub voter: bool,
}

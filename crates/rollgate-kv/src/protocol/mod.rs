//! rollgate-kv's peer protocol: one module per protocol version and the
//! top-level enum over the versions this build speaks. A release runs a
//! sub-range of it (see [`crate::releases`]).
//!
//! | protocol | engines | first release |
//! |---|---|---|
//! | [`v1`] | replication v1 | 1.0 |
//! | [`v2`] | replication v2 (adds `ReplicateBatch`) | 1.1 |
//! | [`v3`] | replication v2 + digest v1 (`DigestRequest`/`DigestReply`) | 1.2 |
//! | [`v4`] | replication v2 + digest v1 + quorum read v1 (`ReadRequest`/`ReadReply`) | 2.0 |
//!
//! Retiring a version: delete its module, raise the floor of `supported`,
//! and fix every place the compiler names (the conversions in
//! [`crate::peer::codec`] and the golden samples).

pub mod v1;
pub mod v2;
pub mod v3;
pub mod v4;

rollgate::protocol_versions! {
    supported = 1..=4;
    /// Every message of rollgate-kv's peer protocol, by protocol version.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Msg {
        1 => V1(v1::Msg),
        2 => V2(v2::Msg),
        3 => V3(v3::Msg),
        4 => V4(v4::Msg),
    }
}

//! A tiny node that answers every supported protocol version: the place a
//! service's handlers live, and where the compiler points when a protocol
//! version is retired.

use crate::protocol::{self, Msg};
use crate::{network, ticker};

/// A node's state: one counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    /// The ticker's counter.
    pub counter: i64,
}

impl Node {
    /// Handles one message; returns the answer, if any, in the same protocol version.
    pub fn handle(&mut self, msg: Msg) -> Option<Msg> {
        match msg {
            Msg::V1(protocol::v1::Msg::Network(m)) => self.network(m).map(|r| protocol::v1::Msg::Network(r).into()),
            Msg::V1(protocol::v1::Msg::Ticker(t)) => match t {
                ticker::v1::Msg::Increment => {
                    self.counter += 1;
                    None
                }
                ticker::v1::Msg::Count(_) => {
                    Some(protocol::v1::Msg::Ticker(ticker::v1::Msg::Count(self.counter.max(0) as u64)).into())
                }
            },
            Msg::V2(protocol::v2::Msg::Network(m)) => self.network(m).map(|r| protocol::v2::Msg::Network(r).into()),
            Msg::V2(protocol::v2::Msg::Ticker(t)) => match t {
                ticker::v2::Msg::Increment { by } => {
                    self.counter = self.counter.saturating_add_unsigned(by);
                    None
                }
                ticker::v2::Msg::Decrement { by } => {
                    self.counter = self.counter.saturating_sub_unsigned(by);
                    None
                }
                ticker::v2::Msg::Count { .. } => {
                    Some(protocol::v2::Msg::Ticker(ticker::v2::Msg::Count { value: self.counter }).into())
                }
            },
        }
    }

    fn network(&mut self, m: network::v1::Msg) -> Option<network::v1::Msg> {
        match m {
            network::v1::Msg::Ping(p) => Some(network::v1::Msg::Pong { seq: p.seq }),
            network::v1::Msg::Hello(_) | network::v1::Msg::Pong { .. } | network::v1::Msg::Gossip(_) => None,
        }
    }
}

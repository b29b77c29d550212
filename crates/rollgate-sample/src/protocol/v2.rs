//! Protocol v2 = network v1 + ticker v2.

use rollgate::wire::{Decode, Encode};

use crate::{network, ticker};

/// Protocol v2 messages.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Msg {
    /// Network engine v1.
    #[wire(tag = 1)]
    Network(network::v1::Msg),
    /// Ticker engine v2.
    #[wire(tag = 2)]
    Ticker(ticker::v2::Msg),
}

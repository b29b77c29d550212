//! Ticker engine, v1.

use rollgate::wire::{Decode, Encode};

/// Ticker engine messages, v1.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Msg {
    /// Add one to the counter.
    #[wire(tag = 1)]
    Increment,
    /// The counter's value.
    #[wire(tag = 2)]
    Count(u64),
}

//! Ticker engine, v2: increments and decrements by any amount.

use rollgate::wire::{Decode, Encode};

/// Ticker engine messages, v2.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Msg {
    /// Add `by` to the counter.
    #[wire(tag = 1)]
    Increment {
        /// Amount.
        by: u64,
    },
    /// Subtract `by` from the counter.
    #[wire(tag = 2)]
    Decrement {
        /// Amount.
        by: u64,
    },
    /// The counter's value.
    #[wire(tag = 3)]
    Count {
        /// The value (may be negative).
        value: i64,
    },
}

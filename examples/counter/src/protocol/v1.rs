//! Protocol v1 (release 1.0 on): add to a peer's counter, which answers its total.

use rollgate::wire::{Decode, Encode};

/// Protocol v1 messages.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Msg {
    /// Add to the receiver's counter; answered by [`Msg::Total`].
    #[wire(tag = 1)]
    Add(Add),
    /// The receiver's total.
    #[wire(tag = 2)]
    Total(Total),
}

/// Add `by` to the receiver's counter.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Add {
    /// The amount.
    pub by: u64,
}

/// A node's total.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Total {
    /// The sum of every entry the node stored.
    pub value: u64,
    /// How many entries make up the value: on the wire only when the link's
    /// transport version supports `total_entries` (release 1.1's), so a
    /// 1.0 peer neither sends nor expects it and it reads as `None`.
    #[wire(since = "total_entries")]
    pub entries: Option<u64>,
}

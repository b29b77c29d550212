//! Protocol v2 (release 1.1 on): v1 plus [`Msg::Get`], which reads a peer's
//! total without adding to it.

use rollgate::wire::{Decode, Encode};

pub use super::v1::{Add, Total};

/// Protocol v2 messages.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum Msg {
    /// Add to the receiver's counter; answered by [`Msg::Total`].
    #[wire(tag = 1)]
    Add(Add),
    /// The receiver's total.
    #[wire(tag = 2)]
    Total(Total),
    /// Ask for the receiver's total; answered by [`Msg::Total`].
    #[wire(tag = 3)]
    Get,
}

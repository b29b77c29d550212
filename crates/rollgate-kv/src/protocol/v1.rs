//! Protocol v1 (release 1.0) = replication v1.

use rollgate::wire::{Decode, Encode};

use crate::replication;

/// Protocol v1 messages.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Msg {
    /// Replication engine v1.
    #[wire(tag = 1)]
    Replication(replication::v1::Msg),
}

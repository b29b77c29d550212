//! Protocol v2 (release 1.1) = replication v2.

use rollgate::wire::{Decode, Encode};

use crate::replication;

/// Protocol v2 messages.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Msg {
    /// Replication engine v2.
    #[wire(tag = 1)]
    Replication(replication::v2::Msg),
}

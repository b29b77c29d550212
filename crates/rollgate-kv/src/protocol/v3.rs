//! Protocol v3 (release 1.2) = replication v2 + digest v1.

use rollgate::wire::{Decode, Encode};

use crate::{digest, replication};

/// Protocol v3 messages.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Msg {
    /// Replication engine v2.
    #[wire(tag = 1)]
    Replication(replication::v2::Msg),
    /// Digest engine v1.
    #[wire(tag = 2)]
    Digest(digest::v1::Msg),
}

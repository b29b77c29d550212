//! Protocol v4 (release 2.0) = replication v2 + digest v1 + quorum read v1.

use rollgate::wire::{Decode, Encode};

use crate::{digest, quorum, replication};

/// Protocol v4 messages.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Msg {
    /// Replication engine v2.
    #[wire(tag = 1)]
    Replication(replication::v2::Msg),
    /// Digest engine v1.
    #[wire(tag = 2)]
    Digest(digest::v1::Msg),
    /// Quorum read engine v1.
    #[wire(tag = 3)]
    Quorum(quorum::v1::Msg),
}

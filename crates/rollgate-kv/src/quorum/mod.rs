//! The quorum read engine's messages (protocol v4, release 2.0): a node
//! asks its peers for what they hold of a key, or of the keys under a
//! prefix, so that a linearizable read can confirm with a majority that it
//! answers every acknowledged write (see `node::read`).

pub mod v1;

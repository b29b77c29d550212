//! Talking to peers: the conversions between wire messages and requests
//! ([`codec`]) and the outbound links with their per-peer write batching
//! ([`link`]). Inbound connections are served by [`crate::node`].

pub mod codec;
pub mod link;

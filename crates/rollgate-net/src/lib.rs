//! rollgate's peer links: how two nodes agree on versions and then talk.
//!
//! | module | question it answers |
//! |---|---|
//! | [`handshake`] | how two peers agree on a protocol and a transport version, authenticated (sans-IO) |
//! | [`net`] | typed tokio connections locked to the agreed versions, over TCP or mutual TLS |
//! | [`tls`] | certificates, keys and the rustls configurations of peer links and HTTPS; the identity a certificate proves |
//! | [`admission`] | pending connections bounded per source address and in total, the oldest evicted |

#![warn(missing_docs)]

pub mod admission;
pub mod handshake;
pub mod net;
pub mod tls;

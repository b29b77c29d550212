//! rollgate's peer links: how two nodes agree on versions and then talk.
//!
//! | module | question it answers |
//! |---|---|
//! | [`handshake`] | how two peers agree on a protocol and a transport version, authenticated (sans-IO) |
//! | [`net`] | typed tokio connections locked to the agreed versions |

#![warn(missing_docs)]

pub mod handshake;
pub mod net;

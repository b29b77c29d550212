//! `rollgate-kv`: the reference replicated key-value service of rollgate,
//! built only on rollgate's public API. Releases 1.0, 1.1, 1.2 and 2.0 are
//! defined in code ([`releases`]), and one binary runs as any of them.

rollgate::include_transport_versions!();

pub mod client;
pub mod digest;
pub mod hlc;
pub mod http;
pub mod node;
pub mod peer;
pub mod policy;
pub mod protocol;
pub mod record;
pub mod releases;
pub mod replication;
pub mod samples;
pub mod storage;

pub use client::{ClientError, ClientOptions, KvClient};
pub use node::{Node, NodeConfig, NodeError, NodeHandle, Tuning};
pub use protocol::Msg;
pub use releases::Release;

/// `s` cut to at most `max` bytes (on a character boundary), with `...` when cut.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

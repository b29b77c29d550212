//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the property
//! tests: each feeds arbitrary bytes to the real decoders and must never
//! panic.

use rollgate::handshake::{self, ClusterSecret, HandshakeConfig, Negotiated};
use rollgate::net;
use rollgate::protocol::Protocol;
use rollgate::version::{ProtocolRange, ProtocolVersion, TransportVersion};
use rollgate::wire::Limits;

use crate::Msg;
use crate::transport_versions;

/// Small limits, so the fuzzer reaches them.
pub const LIMITS: Limits = Limits { max_frame_bytes: 64 * 1024, max_collection_len: 1024, max_depth: 16 };

/// A handshake configuration of the sample protocol.
pub fn config(node: &str, secret: bool) -> HandshakeConfig {
    let mut c = HandshakeConfig::new(node, "1.2", "sample-cluster", Msg::SUPPORTED, transport_versions::SET);
    c.limits = LIMITS;
    if secret {
        c.secret = Some(ClusterSecret::new("sample cluster secret, 32 bytes.").expect("long enough"));
    }
    c
}

/// What a connection at `protocol` and `transport` agreed on.
pub fn negotiated(protocol: u16, transport: TransportVersion) -> Negotiated {
    Negotiated {
        protocol: ProtocolVersion(protocol),
        transport,
        peer_node_id: "peer".into(),
        peer_release: "1.2".into(),
        peer_cluster_id: "sample-cluster".into(),
        peer_protocols: ProtocolRange::new(1, 2).expect("non-empty"),
        peer_transport: transport_versions::CURRENT,
        authenticated: false,
        peer_release_manifest: None,
        tls: false,
    }
}

/// Decodes `data` as a data frame, and as a bare message body, at every
/// protocol version and every known transport version.
pub fn decode(data: &[u8]) {
    for &transport in transport_versions::KNOWN {
        for protocol in 1..=2 {
            let n = negotiated(protocol, transport);
            let _ = net::decode_data_frame::<Msg>(data, &n, &LIMITS);
            let _ = rollgate::protocol::decode_message::<Msg>(data, ProtocolVersion(protocol), transport, LIMITS);
        }
    }
}

/// Feeds `data` to both sides of the handshake, with and without a secret.
pub fn handshake(data: &[u8]) {
    handshake::fuzz_entry(&config("fuzz", false), data);
    handshake::fuzz_entry(&config("fuzz", true), data);
}

//! Data frames, sans-IO: the header every frame carries (kind, the agreed
//! protocol and transport version, the body length), checked against the
//! connection's versions and limits before a body is read.

use rollgate_wire::protocol::Protocol;
use rollgate_wire::version::{ProtocolVersion, TransportVersion};
use rollgate_wire::wire::{Limits, Reader, Writer};

use super::NetError;
use crate::handshake::Negotiated;

/// Bytes in a data frame header.
pub const FRAME_HEADER_LEN: usize = 11;

/// Data frame kinds.
pub mod frame_kind {
    /// A message.
    pub const DATA: u8 = 0xD0;
    /// Graceful (or error) close, with a reason.
    pub const CLOSE: u8 = 0xC0;
    /// Keepalive.
    pub const PING: u8 = 0xB0;
    /// First byte of a late handshake frame (`RGHS`).
    pub const HANDSHAKE: u8 = b'R';
}

/// A decoded data-phase frame.
#[derive(Debug)]
pub enum DataFrame<P> {
    /// A message.
    Message(P),
    /// Keepalive.
    Ping,
    /// The peer closes; `error` when it closes because of a failure.
    Close {
        /// Whether the close is an error.
        error: bool,
        /// The peer's reason.
        reason: String,
    },
}

/// Encodes a data frame header.
pub fn encode_header(
    kind: u8,
    protocol: ProtocolVersion,
    transport: TransportVersion,
    len: u32,
) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0] = kind;
    h[1..3].copy_from_slice(&protocol.0.to_be_bytes());
    h[3..7].copy_from_slice(&transport.id().to_be_bytes());
    h[7..11].copy_from_slice(&len.to_be_bytes());
    h
}

/// Checks a data frame header against the agreed versions and the limits;
/// returns the kind and the body length.
pub fn parse_header(
    header: &[u8; FRAME_HEADER_LEN],
    negotiated: &Negotiated,
    limits: &Limits,
) -> Result<(u8, usize), NetError> {
    let kind = header[0];
    if !matches!(kind, frame_kind::DATA | frame_kind::CLOSE | frame_kind::PING) {
        return Err(NetError::BadFrame { peer: negotiated.peer_node_id.clone(), kind });
    }
    let got_protocol = u16::from_be_bytes([header[1], header[2]]);
    let got_transport = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    if got_protocol != negotiated.protocol.0 || got_transport != negotiated.transport.id() {
        return Err(NetError::VersionMismatch {
            peer: negotiated.peer_node_id.clone(),
            protocol: negotiated.protocol,
            transport: negotiated.transport,
            got_protocol,
            got_transport,
        });
    }
    let len = u32::from_be_bytes([header[7], header[8], header[9], header[10]]) as u64;
    if len > limits.max_frame_bytes as u64 {
        return Err(NetError::FrameTooLarge {
            peer: negotiated.peer_node_id.clone(),
            len,
            max: limits.max_frame_bytes,
        });
    }
    Ok((kind, len as usize))
}

/// Decodes a frame body of `kind` (after [`parse_header`]).
pub fn decode_body<P: Protocol>(
    kind: u8,
    body: &[u8],
    negotiated: &Negotiated,
    limits: &Limits,
) -> Result<DataFrame<P>, NetError> {
    let wire = |error| NetError::Wire { peer: negotiated.peer_node_id.clone(), error };
    let mut r = Reader::new(body, negotiated.transport, *limits);
    let f = match kind {
        frame_kind::DATA => DataFrame::Message(P::decode_body(negotiated.protocol, &mut r).map_err(wire)?),
        frame_kind::PING => DataFrame::Ping,
        _ => {
            let error = r.read::<bool>().map_err(wire)?;
            let reason: String = r.read().map_err(wire)?;
            DataFrame::Close { error, reason: reason.chars().take(1024).collect() }
        }
    };
    r.finish().map_err(wire)?;
    Ok(f)
}

/// Decodes one complete data frame (header and body): what [`Receiver::recv`]
/// does per frame, for fuzzing and property tests.
pub fn decode_data_frame<P: Protocol>(
    bytes: &[u8],
    negotiated: &Negotiated,
    limits: &Limits,
) -> Result<DataFrame<P>, NetError> {
    let Some(header) = bytes.first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(NetError::Closed {
            peer: negotiated.peer_node_id.clone(),
            reason: Some("truncated header".into()),
        });
    };
    let (kind, len) = parse_header(header, negotiated, limits)?;
    let body = &bytes[FRAME_HEADER_LEN..];
    if body.len() != len {
        return Err(NetError::Closed { peer: negotiated.peer_node_id.clone(), reason: Some("truncated body".into()) });
    }
    decode_body(kind, body, negotiated, limits)
}

/// Encodes `msg` as a complete data frame for `negotiated`, refusing a
/// message of another protocol version.
pub fn encode_data_frame<P: Protocol>(msg: &P, negotiated: &Negotiated, limits: &Limits) -> Result<Vec<u8>, NetError> {
    if msg.version() != negotiated.protocol {
        return Err(NetError::WrongProtocol {
            peer: negotiated.peer_node_id.clone(),
            message: msg.version(),
            negotiated: negotiated.protocol,
        });
    }
    // The header counts towards the writer's total; the limit applies to the body.
    let frame_limits = Limits { max_frame_bytes: limits.max_frame_bytes.saturating_add(FRAME_HEADER_LEN), ..*limits };
    let mut w = Writer::with_capacity(negotiated.transport, frame_limits, 64);
    w.put_raw(&[0u8; FRAME_HEADER_LEN]);
    msg.encode_body(&mut w);
    let body_len = w.len() - FRAME_HEADER_LEN;
    let mut bytes = w.into_bytes().map_err(|error| NetError::Wire { peer: negotiated.peer_node_id.clone(), error })?;
    let header = encode_header(frame_kind::DATA, negotiated.protocol, negotiated.transport, body_len as u32);
    bytes[..FRAME_HEADER_LEN].copy_from_slice(&header);
    Ok(bytes)
}

pub(super) fn control_frame(kind: u8, negotiated: &Negotiated, error: bool, reason: &str) -> Vec<u8> {
    let mut w = Writer::new(negotiated.transport, Limits::DEFAULT);
    if kind == frame_kind::CLOSE {
        w.write(&error).write(reason);
    }
    let mut out = encode_header(kind, negotiated.protocol, negotiated.transport, w.len() as u32).to_vec();
    out.extend_from_slice(w.as_bytes());
    out
}

//! The handshake frames' bytes: `RGHS`, the format version, the kind, the
//! body length, then the body in the wire codec's primitives only (stable
//! forever; `tests/it/handshake_negotiation.rs` pins the bytes). Every
//! length and string is bounded before it is read.

use rollgate_wire::version::{ProtocolRange, ProtocolVersion, TransportVersion};
use rollgate_wire::wire::{Reader, WireError, Writer};

use rollgate_release::{Digest, ReleaseProof};

use super::{
    Abort, Advertisement, AuthMode, Confirm, FORMAT_VERSION, Frame, HEADER_LEN, HandshakeError, Hello, LIMITS, MAC_LEN,
    MAGIC, MAX_BODY_BYTES, MAX_ID_BYTES, MAX_MESSAGE_BYTES, NONCE_LEN, Outcome, RejectCode, Reply, kind, marked,
};

pub(super) fn truncate(s: &str) -> String {
    rollgate_util::cut(s, MAX_MESSAGE_BYTES).to_string()
}

fn put_advert(w: &mut Writer, a: &Advertisement) {
    w.write(&a.protocols.min()).write(&a.protocols.max());
    w.write(&a.transport_current).write(&a.transport_minimum);
    w.write(a.cluster_id.as_str()).write(a.node_id.as_str()).write(a.release.as_str());
}

fn get_text(r: &mut Reader<'_>, what: &str, max: usize) -> Result<String, HandshakeError> {
    let s: String = r.read().map_err(|e| HandshakeError::malformed(format_args!("{what}: {e}")))?;
    if s.len() > max {
        return Err(HandshakeError::malformed(format_args!("{what} is {} bytes, over {max}", s.len())));
    }
    if s.chars().any(char::is_control) {
        return Err(HandshakeError::malformed(format_args!("{what} contains control characters")));
    }
    Ok(s)
}

fn wire(what: &'static str) -> impl Fn(WireError) -> HandshakeError {
    move |e| HandshakeError::malformed(format_args!("{what}: {e}"))
}

fn get_advert(r: &mut Reader<'_>) -> Result<Advertisement, HandshakeError> {
    let min: ProtocolVersion = r.read().map_err(wire("protocol range"))?;
    let max: ProtocolVersion = r.read().map_err(wire("protocol range"))?;
    let protocols = ProtocolRange::new(min.0, max.0).map_err(HandshakeError::malformed)?;
    let transport_current = r.read().map_err(wire("transport version"))?;
    let transport_minimum = r.read().map_err(wire("minimum compatible transport version"))?;
    let cluster_id = get_text(r, "cluster id", MAX_ID_BYTES)?;
    let node_id = get_text(r, "node id", MAX_ID_BYTES)?;
    let release = get_text(r, "release", MAX_ID_BYTES)?;
    Ok(Advertisement { protocols, transport_current, transport_minimum, cluster_id, node_id, release })
}

fn get_nonce(r: &mut Reader<'_>) -> Result<[u8; NONCE_LEN], HandshakeError> {
    r.read().map_err(wire("nonce"))
}

fn get_mac(r: &mut Reader<'_>) -> Result<Vec<u8>, HandshakeError> {
    let mac = r.get_bytes().map_err(wire("mac"))?;
    if !mac.is_empty() && mac.len() != MAC_LEN {
        return Err(HandshakeError::malformed(format_args!("mac of {} bytes (expected 0 or {MAC_LEN})", mac.len())));
    }
    Ok(mac.to_vec())
}

fn put_proof(w: &mut Writer, proof: Option<&ReleaseProof>) {
    match proof {
        None => {
            w.put_u8(0);
        }
        Some(p) => {
            w.put_u8(1);
            w.write(&p.digest.0).write(&p.signature);
        }
    }
}

fn get_proof(r: &mut Reader<'_>) -> Result<Option<ReleaseProof>, HandshakeError> {
    match r.get_u8().map_err(wire("release proof"))? {
        0 => Ok(None),
        1 => {
            let digest: [u8; 32] = r.read().map_err(wire("release digest"))?;
            let signature: [u8; 64] = r.read().map_err(wire("release signature"))?;
            Ok(Some(ReleaseProof { digest: Digest(digest), signature }))
        }
        t => Err(HandshakeError::malformed(format_args!("unknown release proof tag {t}"))),
    }
}

/// The bytes of a proof as the Confirm carries them (the third MAC part).
pub(super) fn proof_bytes(proof: &ReleaseProof) -> Vec<u8> {
    let mut w = body_writer();
    put_proof(&mut w, Some(proof));
    w.as_bytes().to_vec()
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn body_writer() -> Writer {
    Writer::with_capacity(TransportVersion::ZERO, LIMITS, 256)
}

/// The reply body without its trailing MAC field.
pub(super) fn reply_unsigned_body(reply: &Reply) -> Writer {
    let mut w = body_writer();
    put_advert(&mut w, &reply.advert);
    w.write(&reply.nonce);
    match &reply.outcome {
        Outcome::Accept { protocol, transport } => {
            w.put_u8(0);
            w.write(protocol).write(transport);
        }
        Outcome::Reject { code, message } => {
            w.put_u8(1);
            w.put_u8(code.code());
            w.write(truncate(message).as_str());
        }
    }
    if marked(&reply.nonce) {
        put_proof(&mut w, reply.release.as_ref());
    }
    w
}

/// Encodes a frame (header and body).
pub fn encode_frame(f: &Frame) -> Vec<u8> {
    let mut w = body_writer();
    let k = match f {
        Frame::Hello(h) => {
            put_advert(&mut w, &h.advert);
            w.write(&h.nonce);
            w.put_u8(match h.auth {
                AuthMode::None => 0,
                AuthMode::HmacSha256 => 1,
            });
            kind::HELLO
        }
        Frame::Reply(r) => {
            w = reply_unsigned_body(r);
            w.write(r.mac.as_slice());
            kind::REPLY
        }
        Frame::Confirm(c) => {
            w.write(c.mac.as_slice());
            if let Some(p) = &c.release {
                put_proof(&mut w, Some(p));
            }
            kind::CONFIRM
        }
        Frame::Abort(a) => {
            w.put_u8(a.code.code());
            w.write(truncate(&a.message).as_str());
            kind::ABORT
        }
    };
    frame(k, w.as_bytes())
}

/// Validates a frame header and returns the frame's kind and body length.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(u8, usize), HandshakeError> {
    if header[0] == 0x16 {
        return Err(HandshakeError::malformed(
            "the peer speaks TLS and this node does not: configure TLS on this node too (a node certificate, its \
             key and the cluster CA), or on neither",
        ));
    }
    if header[..4] != MAGIC {
        return Err(HandshakeError::malformed(format_args!(
            "bad magic {:02x?} (expected \"RGHS\"): the peer is not a rollgate node, or speaks another protocol",
            &header[..4]
        )));
    }
    if header[4] != FORMAT_VERSION {
        return Err(HandshakeError::malformed(format_args!(
            "handshake format version {} (this build speaks {FORMAT_VERSION})",
            header[4]
        )));
    }
    let k = header[5];
    if !(kind::HELLO..=kind::ABORT).contains(&k) {
        return Err(HandshakeError::malformed(format_args!("unknown frame kind {k}")));
    }
    let len = u16::from_be_bytes([header[6], header[7]]) as usize;
    if len > MAX_BODY_BYTES {
        return Err(HandshakeError::malformed(format_args!("body of {len} bytes, over {MAX_BODY_BYTES}")));
    }
    Ok((k, len))
}

/// Decodes one complete frame. Also returns, for a Reply, the length of its
/// body before the MAC field (the signed part).
pub(super) fn decode_frame_parts(bytes: &[u8]) -> Result<(Frame, usize), HandshakeError> {
    let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(HandshakeError::malformed(format_args!("{} bytes, shorter than a header", bytes.len())));
    };
    let (k, len) = parse_header(header)?;
    let body = &bytes[HEADER_LEN..];
    if body.len() != len {
        return Err(HandshakeError::malformed(format_args!("header says {len} body bytes, found {}", body.len())));
    }
    let mut r = Reader::new(body, TransportVersion::ZERO, LIMITS);
    let mut signed = 0;
    let f = match k {
        kind::HELLO => {
            let advert = get_advert(&mut r)?;
            let nonce = get_nonce(&mut r)?;
            let auth = match r.get_u8().map_err(wire("auth mode"))? {
                0 => AuthMode::None,
                1 => AuthMode::HmacSha256,
                m => return Err(HandshakeError::malformed(format_args!("unknown auth mode {m}"))),
            };
            Frame::Hello(Hello { advert, nonce, auth })
        }
        kind::REPLY => {
            let advert = get_advert(&mut r)?;
            let nonce = get_nonce(&mut r)?;
            let outcome = match r.get_u8().map_err(wire("outcome"))? {
                0 => Outcome::Accept {
                    protocol: r.read().map_err(wire("protocol version"))?,
                    transport: r.read().map_err(wire("transport version"))?,
                },
                1 => Outcome::Reject {
                    code: RejectCode::from_code(r.get_u8().map_err(wire("reject code"))?),
                    message: get_text_lossy(&mut r)?,
                },
                o => return Err(HandshakeError::malformed(format_args!("unknown outcome {o}"))),
            };
            let release = if marked(&nonce) { get_proof(&mut r)? } else { None };
            signed = r.position();
            let mac = get_mac(&mut r)?;
            Frame::Reply(Reply { advert, nonce, outcome, release, mac })
        }
        kind::CONFIRM => {
            let mac = get_mac(&mut r)?;
            let release = if r.remaining() > 0 { get_proof(&mut r)? } else { None };
            Frame::Confirm(Confirm { mac, release })
        }
        _ => Frame::Abort(Abort {
            code: RejectCode::from_code(r.get_u8().map_err(wire("abort code"))?),
            message: get_text_lossy(&mut r)?,
        }),
    };
    r.finish().map_err(wire("frame body"))?;
    Ok((f, signed))
}

/// A peer-supplied message: bounded, control characters replaced.
fn get_text_lossy(r: &mut Reader<'_>) -> Result<String, HandshakeError> {
    let s: String = r.read().map_err(wire("message"))?;
    if s.len() > MAX_MESSAGE_BYTES {
        return Err(HandshakeError::malformed(format_args!("message of {} bytes, over {MAX_MESSAGE_BYTES}", s.len())));
    }
    Ok(s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect())
}

/// Decodes one complete frame (header and body).
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, HandshakeError> {
    decode_frame_parts(bytes).map(|(f, _)| f)
}

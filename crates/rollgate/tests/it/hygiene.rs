//! Hygiene at the trust boundary of a node: a peer that claims to be this
//! node is refused, a refusal sent to a peer that has not authenticated
//! discloses nothing about this node, and secret and token files that
//! others can read are refused (as ssh refuses a private key), and never
//! printed by `Debug`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rollgate::handshake::{self, ClusterSecret, Frame, HandshakeConfig, Initiator, Outcome, Responder};
use rollgate::version::{ProtocolRange, TransportVersion, TransportVersionSet};

const fn tv(id: u32) -> TransportVersion {
    TransportVersion::from_id(id)
}

static KNOWN: [TransportVersion; 2] = [tv(1_000_0_00), tv(1_001_0_00)];

fn set() -> TransportVersionSet {
    TransportVersionSet { current: tv(1_001_0_00), minimum_compatible: tv(1_000_0_00), known: &KNOWN, releases: &[] }
}

fn cfg(node: &str, cluster: &str, release: &str, protocols: (u16, u16), secret: Option<&str>) -> HandshakeConfig {
    let mut c =
        HandshakeConfig::new(node, release, cluster, ProtocolRange::new(protocols.0, protocols.1).unwrap(), set());
    c.secret = secret.map(|s| ClusterSecret::new(s).unwrap());
    c
}

const SECRET: &str = "a cluster secret long enough";

#[test]
fn a_peer_advertising_this_nodes_own_id_is_refused() {
    let me = cfg("node-a", "c1", "1.0", (1, 2), Some(SECRET));
    let (_, hello) = Initiator::start(&me, [1; 32]);
    let refused =
        Responder::on_hello(&me, [2; 32], &hello).expect_err("a hello carrying this node's own id is refused");
    let message = refused.error.to_string();
    assert!(message.contains("node-a") && message.contains("own"), "names the id and why: {message}");
    assert!(matches!(handshake::decide(&me, &me.advertisement()), Outcome::Reject { .. }));

    // The initiator refuses a reply that claims its own id too.
    let other = cfg("node-b", "c1", "1.0", (1, 2), Some(SECRET));
    let (init, hello) = Initiator::start(&other, [3; 32]);
    let (_, reply) = Responder::on_hello(&cfg("node-c", "c1", "1.0", (1, 2), Some(SECRET)), [4; 32], &hello).unwrap();
    let Ok(Frame::Reply(mut r)) = handshake::decode_frame(&reply) else { panic!("a reply") };
    r.advert.node_id = "node-b".into();
    let forged = handshake::encode_frame(&Frame::Reply(r));
    assert!(init.on_reply(&forged).is_err(), "a reply claiming the initiator's own id is refused");
}

/// The reply a responder sends back to `hello`, decoded.
fn reply_to(responder: &HandshakeConfig, initiator: &HandshakeConfig) -> handshake::Reply {
    let (_, hello) = Initiator::start(initiator, [5; 32]);
    let bytes = match Responder::on_hello(responder, [6; 32], &hello) {
        Ok((_, reply)) => reply,
        Err(f) => f.send.expect("a reject reply"),
    };
    match handshake::decode_frame(&bytes) {
        Ok(Frame::Reply(r)) => r,
        other => panic!("expected a reply: {other:?}"),
    }
}

#[test]
fn an_unauthenticated_reject_discloses_no_cluster_id_node_id_or_release() {
    let responder = cfg("private-node-7", "private-cluster", "9.9-private", (2, 3), Some(SECRET));
    let cases = [
        ("another cluster", cfg("stranger", "other-cluster", "1.0", (2, 3), Some(SECRET))),
        ("no common protocol", cfg("stranger", "private-cluster", "1.0", (1, 1), Some(SECRET))),
        ("no secret", cfg("stranger", "private-cluster", "1.0", (2, 3), None)),
    ];
    for (what, initiator) in cases {
        let reply = reply_to(&responder, &initiator);
        let Outcome::Reject { message, .. } = &reply.outcome else { panic!("{what}: not refused") };
        let shown = format!("{:?} {message}", reply.advert);
        for private in ["private-node-7", "private-cluster", "9.9-private"] {
            assert!(!shown.contains(private), "{what}: the reject discloses {private:?}: {shown}");
        }
    }
}

fn write_with_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn secret_and_token_files_that_others_can_read_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    let token = dir.path().join("token");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        write_with_mode(&secret, SECRET, mode);
        let e = ClusterSecret::from_file(&secret).expect_err("a secret file others can read is refused");
        assert!(e.to_string().contains("chmod 600"), "{mode:o}: names the fix: {e}");
        write_with_mode(&token, "an-admin-token", mode);
        let e = rollgate::admin::read_token_file(&token).expect_err("a token file others can read is refused");
        assert!(e.to_string().contains("chmod 600"), "{mode:o}: names the fix: {e}");
    }
    for mode in [0o600, 0o400] {
        write_with_mode(&secret, SECRET, mode);
        assert!(ClusterSecret::from_file(&secret).is_ok(), "{mode:o}");
        write_with_mode(&token, "an-admin-token", mode);
        assert!(rollgate::admin::read_token_file(&token).is_ok(), "{mode:o}");
    }
}

#[test]
fn secrets_and_tokens_never_show_in_debug() {
    let secret = ClusterSecret::new(SECRET).unwrap();
    let shown = format!("{secret:?}");
    assert!(!shown.contains(SECRET), "the cluster secret in Debug: {shown}");
    let token = "the-admin-token-itself";
    let admin = rollgate::admin::AdminConfig::with_token(token);
    let shown = format!("{admin:?}");
    assert!(!shown.contains(token), "the admin token in Debug: {shown}");
    assert!(shown.contains("token: Some(\"<redacted>\")"), "Debug says a token is set: {shown}");
}

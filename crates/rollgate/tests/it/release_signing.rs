//! Signed release manifests: a node given the trusted release key runs only
//! a release whose manifest that key signed and that describes the binary;
//! once a node with a key joined, the cluster refuses unsigned releases and
//! other keys; and the handshake carries the digest between signing peers
//! while staying the old byte format for everyone else.

use rollgate::handshake::{self, HandshakeConfig, Initiator, RejectCode, Responder};
use rollgate::release::{SignedManifest, SigningKey};
use rollgate::version::{ProtocolRange, TransportVersion, TransportVersionSet};

use crate::flags_support::*;

fn signed_config(node: &str, release: &str, root: &std::path::Path, key: &SigningKey) -> rollgate::node::NodeConfig {
    let mut c = config(node, release, root, &Counters::default());
    let manifest = rollgate::node::release_manifest(&c);
    c.release_manifest = Some(SignedManifest::sign(manifest, key).unwrap());
    c.release_key = Some(key.public());
    c
}

async fn refusal(store: &std::sync::Arc<dyn rollgate::store::MetaStore>, c: rollgate::node::NodeConfig) -> String {
    match rollgate::node::Node::start(c, store.clone()).await {
        Ok(n) => panic!("node {} started", n.id()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_manifests_unknown_keys_and_unsigned_releases_are_refused() {
    let dir = tmp();
    let store = redb(dir.path()).await;
    let key = SigningKey::generate();

    // A manifest changed after signing.
    let mut tampered = signed_config("n1", "1.2", dir.path(), &key);
    tampered.release_manifest.as_mut().unwrap().manifest.protocol.max += 1;
    let e = refusal(&store, tampered).await;
    assert!(e.contains("refuses to run release 1.2") && e.contains("changed after it was signed"), "{e}");

    // Signed by a key the node does not trust.
    let stranger = SigningKey::generate();
    let mut unknown = signed_config("n1", "1.2", dir.path(), &stranger);
    unknown.release_key = Some(key.public());
    let e = refusal(&store, unknown).await;
    assert!(e.contains(&stranger.public().id()) && e.contains("not the trusted release key"), "{e}");

    // A signed manifest of another release.
    let mut other = signed_config("n1", "1.2", dir.path(), &key);
    other.release_manifest = signed_config("n1", "1.1", dir.path(), &key).release_manifest;
    let e = refusal(&store, other).await;
    assert!(e.contains("does not describe this binary") && e.contains("release"), "{e}");
    assert!(snapshot(&store).await.iter().all(|(k, _)| !k.contains("members/")), "nothing joined");

    // A signed node joins; the cluster is signed from now on.
    let n1 = start(&store, signed_config("n1", "1.2", dir.path(), &key)).await;
    let digest = n1.release_manifest().digest().to_text();
    assert_eq!(n1.record().release_manifest.as_deref(), Some(digest.as_str()));

    let e = refusal(&store, config("n2", "1.2", dir.path(), &Counters::default())).await;
    assert!(
        e.contains("has no signed release manifest")
            && e.contains("runs only releases signed by release key")
            && e.contains(&key.public().id())
            && e.contains("node n1"),
        "{e}"
    );
    let e = refusal(&store, signed_config("n3", "1.2", dir.path(), &stranger)).await;
    assert!(e.contains("runs releases signed by key") && e.contains(&key.public().id()), "{e}");

    // Another node signed by the cluster's key joins.
    let n2 = start(&store, signed_config("n2", "1.2", dir.path(), &key)).await;
    let view = until(&n1, "n2 joined", |v| v.member("n2").is_some()).await;
    assert!(view.member("n2").unwrap().record.release_manifest.as_ref().is_some_and(|d| d.starts_with("sha256:")));
    n2.stop().await.unwrap();
    n1.stop().await.unwrap();
}

static KNOWN: [TransportVersion; 1] = [TransportVersion::from_id(1_000_0_00)];

fn hs(node: &str) -> HandshakeConfig {
    let set = TransportVersionSet { current: KNOWN[0], minimum_compatible: KNOWN[0], known: &KNOWN, releases: &[] };
    HandshakeConfig::new(node, "1.2", "c1", ProtocolRange::new(1, 2).unwrap(), set)
}

fn signed_hs(node: &str, key: &SigningKey, trusted: &SigningKey) -> HandshakeConfig {
    let c = config(node, "1.2", std::path::Path::new("/nonexistent"), &Counters::default());
    let signed = SignedManifest::sign(rollgate::node::release_manifest(&c), key).unwrap();
    hs(node).with_release(signed.proof().unwrap(), trusted.public())
}

/// Runs a handshake in memory: each side's result.
fn run(
    i: &HandshakeConfig,
    r: &HandshakeConfig,
    tamper_confirm: bool,
) -> (Result<handshake::Negotiated, handshake::HandshakeError>, Result<handshake::Negotiated, handshake::HandshakeError>)
{
    let (init, hello) = Initiator::start(i, [1; 32]);
    let (resp, reply) = match Responder::on_hello(r, [2; 32], &hello) {
        Ok(x) => x,
        Err(f) => {
            let ir = init.on_reply(&f.send.unwrap()).map(|(n, _)| n).map_err(|f| f.error);
            return (ir, Err(f.error));
        }
    };
    match init.on_reply(&reply) {
        Ok((n, mut confirm)) => {
            if tamper_confirm {
                let last = confirm.len() - 1;
                confirm[last] ^= 1;
            }
            (Ok(n), resp.on_confirm(&confirm).map_err(|f| f.error))
        }
        Err(f) => (Err(f.error), resp.on_confirm(&f.send.unwrap()).map_err(|f| f.error)),
    }
}

#[test]
fn signing_peers_exchange_their_manifest_digests() {
    let key = SigningKey::generate();
    let (a, b) = (signed_hs("a", &key, &key), signed_hs("b", &key, &key));
    let (ia, rb) = run(&a, &b, false);
    let (ia, rb) = (ia.unwrap(), rb.unwrap());
    assert_eq!(ia.peer_release_manifest, b.release_proof.map(|p| p.digest));
    assert_eq!(rb.peer_release_manifest, a.release_proof.map(|p| p.digest));
    // With a cluster secret, the proof in the Confirm is covered by the MAC.
    let secret = handshake::ClusterSecret::new("correct horse battery staple 42").unwrap();
    let (a, b) = (a.with_secret(secret.clone()), b.with_secret(secret));
    assert!(run(&a, &b, false).1.is_ok());
    let (_, tampered) = run(&a, &b, true);
    assert_eq!(tampered.unwrap_err().code, RejectCode::AuthFailed);
}

#[test]
fn a_signing_node_refuses_unsigned_peers_and_other_keys_both_ways() {
    let key = SigningKey::generate();
    let signed = signed_hs("s", &key, &key);
    let unsigned = hs("u");

    // Unsigned initiator (as an old node): the signed responder rejects it in its reply.
    let (i, r) = run(&unsigned, &signed, false);
    let (i, r) = (i.unwrap_err(), r.unwrap_err());
    assert_eq!((i.code, r.code), (RejectCode::UnsignedRelease, RejectCode::UnsignedRelease));
    assert!(
        i.by_peer
            && i.message.contains("presented no signed release manifest")
            && i.message.contains(&key.public().id()),
        "{i}"
    );

    // Signed initiator, unsigned responder: the initiator aborts.
    let (i, r) = run(&signed, &unsigned, false);
    assert!(i.unwrap_err().message.contains("node u (release 1.2) presented no signed release manifest"));
    assert_eq!(r.unwrap_err().code, RejectCode::UnsignedRelease);

    // A peer signed by another key.
    let other = signed_hs("o", &SigningKey::generate(), &key);
    let (_, r) = run(&other, &signed, false);
    let r = r.unwrap_err();
    assert!(r.code == RejectCode::UnsignedRelease && r.message.contains("is not signed by release key"), "{r}");

    // Without keys on either side the frames stay the old format: unsigned peers talk as before.
    let (hello_a, hello_b) = (Initiator::start(&unsigned, [1; 32]).1, Initiator::start(&hs("u"), [1; 32]).1);
    assert_eq!(hello_a, hello_b);
    assert!(!handshake::marked(&[1; 32]));
    let proof_only = HandshakeConfig { trusted_release_key: None, ..signed.clone() };
    let (i, r) = run(&proof_only, &unsigned, false);
    assert!(i.is_ok() && r.is_ok(), "a node that sends a proof but trusts no key still talks to an old peer");
}

#[test]
fn garbage_in_the_release_extension_is_a_typed_error() {
    let key = SigningKey::generate();
    let (a, b) = (signed_hs("a", &key, &key), signed_hs("b", &key, &key));
    let (_, hello) = Initiator::start(&a, [1; 32]);
    let (_, reply) = Responder::on_hello(&b, [2; 32], &hello).unwrap();
    let (init, _) = Initiator::start(&a, [1; 32]);
    let (_, confirm) = init.on_reply(&reply).unwrap();
    // Every truncation of a reply or a confirm carrying a proof is refused, never a panic.
    for frame in [&reply, &confirm] {
        for len in 0..frame.len() {
            let cut = &frame[..len];
            let (i, _) = Initiator::start(&a, [1; 32]);
            assert!(i.on_reply(cut).is_err(), "a reply cut at {len}");
            let (r, _) = Responder::on_hello(&b, [2; 32], &hello).unwrap();
            assert!(r.on_confirm(cut).is_err(), "a confirm cut at {len}");
        }
    }
    // Every flipped byte: an error or a verified proof, never a panic or an unverified one.
    for (n, frame) in [&reply, &confirm].into_iter().enumerate() {
        for pos in 0..frame.len() {
            let mut bad = frame.clone();
            bad[pos] ^= 0x55;
            let (i, _) = Initiator::start(&a, [1; 32]);
            let (r, _) = Responder::on_hello(&b, [2; 32], &hello).unwrap();
            let accepted = if n == 0 { i.on_reply(&bad).ok().map(|(x, _)| x) } else { r.on_confirm(&bad).ok() };
            if let Some(neg) = accepted {
                let digest = neg.peer_release_manifest.expect("a signing peer's proof");
                let sender = if n == 0 { &b } else { &a };
                assert_eq!(
                    digest,
                    sender.release_proof.unwrap().digest,
                    "byte {pos}: only a verified proof is accepted"
                );
            }
        }
    }
}

//! The sans-IO handshake core: negotiation outcomes (table-driven), the full
//! message flow with and without a secret, tampering and replay (I7), the
//! stable frame format (golden bytes), and garbage input (I8).

use std::path::PathBuf;

use rollgate::handshake::{
    self, Advertisement, ClusterSecret, Frame, HandshakeConfig, Initiator, Outcome, RejectCode, Responder, SecretError,
};
use rollgate::version::{ProtocolRange, ProtocolVersion, TransportVersion, TransportVersionSet};

const fn tv(id: u32) -> TransportVersion {
    TransportVersion::from_id(id)
}

static KNOWN: [TransportVersion; 5] = [tv(1_000_0_00), tv(1_001_0_00), tv(1_002_0_00), tv(1_002_0_03), tv(1_003_0_00)];

fn set(current: u32, minimum: u32) -> TransportVersionSet {
    TransportVersionSet { current: tv(current), minimum_compatible: tv(minimum), known: &KNOWN, releases: &[] }
}

fn range(a: u16, b: u16) -> ProtocolRange {
    ProtocolRange::new(a, b).unwrap()
}

fn local(protocols: ProtocolRange) -> HandshakeConfig {
    HandshakeConfig::new("a", "1.0", "c1", protocols, set(1_003_0_00, 1_001_0_00))
}

fn peer(protocols: ProtocolRange, current: u32, minimum: u32) -> Advertisement {
    Advertisement {
        protocols,
        transport_current: tv(current),
        transport_minimum: tv(minimum),
        cluster_id: "c1".into(),
        node_id: "b".into(),
        release: "2.0".into(),
    }
}

enum Want {
    Accept(u16, u32),
    Reject(RejectCode, &'static str),
}

#[test]
fn negotiation_outcomes() {
    let cases: Vec<(&str, HandshakeConfig, Advertisement, Want)> = vec![
        ("overlapping", local(range(1, 3)), peer(range(2, 5), 1_003_0_00, 1_000_0_00), Want::Accept(3, 1_003_0_00)),
        ("identical", local(range(1, 2)), peer(range(1, 2), 1_003_0_00, 1_001_0_00), Want::Accept(2, 1_003_0_00)),
        ("nested", local(range(1, 5)), peer(range(2, 3), 1_003_0_00, 1_001_0_00), Want::Accept(3, 1_003_0_00)),
        (
            "nested other way",
            local(range(2, 3)),
            peer(range(1, 5), 1_003_0_00, 1_001_0_00),
            Want::Accept(3, 1_003_0_00),
        ),
        ("touching", local(range(1, 2)), peer(range(2, 4), 1_003_0_00, 1_001_0_00), Want::Accept(2, 1_003_0_00)),
        (
            "disjoint, this node older",
            local(range(1, 1)),
            peer(range(2, 3), 1_003_0_00, 1_001_0_00),
            Want::Reject(
                RejectCode::NoCommonProtocol,
                "node b (release 2.0) speaks protocol v2..=v3, this node a (release 1.0) speaks v1: upgrade this node to a release that speaks v2 or later",
            ),
        ),
        (
            "disjoint, peer older",
            local(range(3, 4)),
            peer(range(1, 2), 1_003_0_00, 1_001_0_00),
            Want::Reject(RejectCode::NoCommonProtocol, "upgrade node b to a release that speaks v3 or later"),
        ),
        (
            "lower of the two highest: peer lower",
            local(range(1, 1)),
            peer(range(1, 1), 1_002_0_00, 1_000_0_00),
            Want::Accept(1, 1_002_0_00),
        ),
        (
            "lower of the two highest: unknown newer peer id",
            local(range(1, 1)),
            peer(range(1, 1), 1_009_0_00, 1_001_0_00),
            Want::Accept(1, 1_003_0_00),
        ),
        (
            "best known: unknown patch of a known base",
            local(range(1, 1)),
            peer(range(1, 1), 1_002_0_05, 1_001_0_00),
            Want::Accept(1, 1_002_0_03),
        ),
        (
            "best known: unknown id between known ones",
            local(range(1, 1)),
            peer(range(1, 1), 1_002_5_00, 1_001_0_00),
            Want::Accept(1, 1_002_0_03),
        ),
        (
            "best known: earlier patch than the known backport",
            local(range(1, 1)),
            peer(range(1, 1), 1_002_0_01, 1_001_0_00),
            Want::Accept(1, 1_002_0_00),
        ),
        (
            "peer below our minimum compatible",
            local(range(1, 1)),
            peer(range(1, 1), 1_000_0_00, 1_000_0_00),
            Want::Reject(
                RejectCode::TransportTooOld,
                "upgrade node b to a release with transport version 1001000 or later",
            ),
        ),
        (
            "we are below the peer's minimum compatible",
            local(range(1, 1)),
            peer(range(1, 1), 1_009_0_00, 1_004_0_00),
            Want::Reject(
                RejectCode::TransportTooOld,
                "upgrade this node to a release with transport version 1004000 or later",
            ),
        ),
        (
            "cluster id mismatch",
            local(range(1, 1)),
            Advertisement { cluster_id: "other".into(), ..peer(range(1, 1), 1_003_0_00, 1_001_0_00) },
            Want::Reject(
                RejectCode::ClusterMismatch,
                "belongs to cluster `other`, this node a (release 1.0) to cluster `c1`",
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (name, cfg, adv, want) in cases {
        let got = handshake::decide(&cfg, &adv);
        let ok = match (&want, &got) {
            (Want::Accept(p, t), Outcome::Accept { protocol, transport }) => {
                *protocol == ProtocolVersion(*p) && *transport == tv(*t)
            }
            (Want::Reject(code, text), Outcome::Reject { code: c, message }) => c == code && message.contains(text),
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn secret(s: &str) -> ClusterSecret {
    ClusterSecret::new(s).unwrap()
}

const SECRET: &str = "correct horse battery staple 42";

fn cfg(node: &str, protocols: ProtocolRange, secret_text: Option<&str>) -> HandshakeConfig {
    let mut c = HandshakeConfig::new(node, "1.2", "c1", protocols, set(1_003_0_00, 1_001_0_00));
    c.secret = secret_text.map(secret);
    c
}

/// Runs the whole exchange in memory; `tamper` may rewrite each frame in flight.
fn run(
    i: &HandshakeConfig,
    r: &HandshakeConfig,
    tamper: &mut dyn FnMut(u8, &mut Vec<u8>),
) -> (Result<handshake::Negotiated, handshake::HandshakeError>, Result<handshake::Negotiated, handshake::HandshakeError>)
{
    let (init, mut hello) = Initiator::start(i, [1; 32]);
    tamper(handshake::kind::HELLO, &mut hello);
    let (resp, mut reply) = match Responder::on_hello(r, [2; 32], &hello) {
        Ok(x) => x,
        Err(f) => {
            let reply = f.send.expect("a reject reply");
            let ir = init.on_reply(&reply).map(|(n, _)| n).map_err(|f| f.error);
            return (ir, Err(f.error));
        }
    };
    tamper(handshake::kind::REPLY, &mut reply);
    match init.on_reply(&reply) {
        Ok((n, mut confirm)) => {
            tamper(handshake::kind::CONFIRM, &mut confirm);
            (Ok(n), resp.on_confirm(&confirm).map_err(|f| f.error))
        }
        Err(f) => {
            let abort = f.send.expect("an abort frame");
            (Err(f.error), resp.on_confirm(&abort).map_err(|f| f.error))
        }
    }
}

#[test]
fn flow_with_and_without_secret() {
    for s in [None, Some(SECRET)] {
        let (a, b) = run(&cfg("a", range(1, 2), s), &cfg("b", range(1, 3), s), &mut |_, _| {});
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!((a.protocol, a.transport), (ProtocolVersion(2), tv(1_003_0_00)));
        assert_eq!((a.protocol, a.transport), (b.protocol, b.transport));
        assert_eq!((a.peer_node_id.as_str(), b.peer_node_id.as_str()), ("b", "a"));
        assert_eq!(a.authenticated, s.is_some());
        assert_eq!(b.authenticated, s.is_some());
    }
}

#[test]
fn wrong_or_missing_secret_fails_on_both_ends() {
    let cases = [(Some(SECRET), Some("a different secret of some length")), (Some(SECRET), None), (None, Some(SECRET))];
    for (si, sr) in cases {
        let (a, b) = run(&cfg("a", range(1, 2), si), &cfg("b", range(1, 2), sr), &mut |_, _| {});
        let (a, b) = (a.unwrap_err(), b.unwrap_err());
        assert_eq!((a.code, b.code), (RejectCode::AuthFailed, RejectCode::AuthFailed), "{si:?} {sr:?}: {a} / {b}");
        assert!(a.to_string().contains("secret"), "{a}");
    }
}

#[test]
fn any_tampered_byte_fails_on_both_ends_with_a_secret() {
    let i = cfg("a", range(1, 2), Some(SECRET));
    let r = cfg("b", range(1, 2), Some(SECRET));
    let (_, hello) = Initiator::start(&i, [1; 32]);
    let (_, reply) = Responder::on_hello(&r, [2; 32], &hello).unwrap();
    let mut checked = 0;
    for (kind, len) in [
        (handshake::kind::HELLO, hello.len()),
        (handshake::kind::REPLY, reply.len()),
        (handshake::kind::CONFIRM, 8 + 33),
    ] {
        for pos in 0..len {
            let (a, b) = run(&i, &r, &mut |k, f| {
                if k == kind && pos < f.len() {
                    f[pos] ^= 0x01;
                }
            });
            assert!(a.is_err() || b.is_err(), "flipping byte {pos} of frame kind {kind} went unnoticed");
            assert!(b.is_err(), "responder accepted a tampered transcript (kind {kind}, byte {pos})");
            checked += 1;
        }
    }
    assert_eq!(checked, hello.len() + reply.len() + 8 + 33, "every byte of the three frames");
}

#[test]
fn a_recorded_reply_cannot_be_replayed() {
    let i = cfg("a", range(1, 2), Some(SECRET));
    let r = cfg("b", range(1, 2), Some(SECRET));
    let (_, hello) = Initiator::start(&i, [1; 32]);
    let (_, old_reply) = Responder::on_hello(&r, [2; 32], &hello).unwrap();
    // A new connection: the initiator picks a new nonce.
    let (init, _) = Initiator::start(&i, [3; 32]);
    let e = init.on_reply(&old_reply).unwrap_err().error;
    assert_eq!(e.code, RejectCode::AuthFailed);
}

#[test]
fn unauthenticated_downgrade_of_one_side_is_detected_by_consistency() {
    // Without a secret, rewriting only the hello's range makes the responder
    // choose v1 while the reply still shows ranges whose highest common is v2.
    let i = cfg("a", range(1, 2), None);
    let r = cfg("b", range(1, 2), None);
    let (a, _) = run(&i, &r, &mut |k, f| {
        if k == handshake::kind::HELLO {
            let Ok(Frame::Hello(mut h)) = handshake::decode_frame(f) else { panic!("hello") };
            h.advert.protocols = range(1, 1);
            *f = handshake::encode_frame(&Frame::Hello(h));
        }
    });
    let e = a.unwrap_err();
    assert_eq!(e.code, RejectCode::Malformed);
    assert!(e.message.contains("refusing a downgrade"), "{e}");
}

#[test]
fn rejections_reach_the_initiator_with_its_own_view() {
    let (a, b) = run(&cfg("a", range(1, 1), None), &cfg("b", range(2, 3), None), &mut |_, _| {});
    let (a, b) = (a.unwrap_err(), b.unwrap_err());
    assert_eq!((a.code, b.code), (RejectCode::NoCommonProtocol, RejectCode::NoCommonProtocol));
    assert!(a.by_peer);
    assert!(a.message.contains("upgrade this node to a release that speaks v2 or later"), "{a}");
    assert!(b.message.contains("upgrade node a to a release that speaks v2 or later"), "{b}");
    println!("initiator: {a}\nresponder: {b}");
}

#[test]
fn configured_range_must_be_within_the_compiled_one() {
    let c = cfg("a", range(1, 3), None);
    assert!(c.validate(range(1, 3)).is_ok());
    let e = c.validate(range(2, 3)).unwrap_err();
    assert!(e.to_string().contains("not within v2..=v3"), "{e}");
    let mut bad = cfg("a", range(1, 1), None);
    bad.node_id = "with\nnewline".into();
    assert!(bad.validate(range(1, 1)).is_err());
}

#[test]
fn secret_files_are_bounded_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let owner_only = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    for f in ["good", "short", "big"] {
        let path = dir.path().join(f);
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, owner_only.clone()).unwrap();
    }
    std::fs::write(&good, format!("{SECRET}\n")).unwrap();
    let s = ClusterSecret::from_file(&good).unwrap();
    assert!(!format!("{s:?}").contains("horse"), "Debug must not print the secret");
    let short = dir.path().join("short");
    std::fs::write(&short, "tooshort\n").unwrap();
    let e = ClusterSecret::from_file(&short).unwrap_err();
    assert!(matches!(e, SecretError::TooShort { len: 8, .. }), "{e}");
    assert!(e.to_string().contains(&short.display().to_string()));
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 5000]).unwrap();
    assert!(matches!(ClusterSecret::from_file(&big), Err(SecretError::TooLarge { .. })));
    let missing = dir.path().join("missing");
    let e = ClusterSecret::from_file(&missing).unwrap_err();
    assert!(matches!(e, SecretError::Io { .. }) && e.to_string().contains("missing"), "{e}");
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/handshake")
}

/// Compares `bytes` with `tests/testdata/handshake/<name>.bin`. A missing
/// file is written when `ROLLGATE_BLESS=1` (existing files are never
/// overwritten) and is an error otherwise.
fn check_golden(name: &str, bytes: &[u8]) {
    let path = golden_dir().join(format!("{name}.bin"));
    match std::fs::read(&path) {
        Ok(expected) => assert_eq!(
            bytes,
            &expected[..],
            "{}: the handshake frame format changed; it must stay stable forever",
            path.display()
        ),
        Err(_) if std::env::var("ROLLGATE_BLESS").as_deref() == Ok("1") => {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, bytes).unwrap();
        }
        Err(e) => panic!("{}: {e}; run with ROLLGATE_BLESS=1 to create it", path.display()),
    }
    // And the frame decodes and re-encodes byte for byte.
    let f = handshake::decode_frame(bytes).unwrap();
    assert_eq!(handshake::encode_frame(&f), bytes);
}

#[test]
fn handshake_frames_are_stable() {
    let i = cfg("node-a", range(1, 2), Some(SECRET));
    let r = cfg("node-b", range(1, 3), Some(SECRET));
    let (init, hello) = Initiator::start(&i, [0x11; 32]);
    let (_, reply) = Responder::on_hello(&r, [0x22; 32], &hello).unwrap();
    let (_, confirm) = init.on_reply(&reply).unwrap();
    check_golden("hello", &hello);
    check_golden("reply_accept", &reply);
    check_golden("confirm", &confirm);
    let old = cfg("node-c", range(3, 3), None);
    let (_, hello_c) = Initiator::start(&old, [0x33; 32]);
    let reject =
        Responder::on_hello(&cfg("node-b", range(1, 2), None), [0x44; 32], &hello_c).unwrap_err().send.unwrap();
    check_golden("reply_reject", &reject);
    let abort =
        handshake::encode_frame(&Frame::Abort(handshake::Abort { code: RejectCode::AuthFailed, message: "no".into() }));
    check_golden("abort", &abort);
    assert_eq!(&hello[..6], b"RGHS\x01\x01");
}

#[test]
fn garbage_frames_are_typed_errors() {
    let c = cfg("a", range(1, 2), Some(SECRET));
    let (_, hello) = Initiator::start(&c, [1; 32]);
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        b"RGHS\x02\x01\x00\x00".to_vec(),
        b"RGHS\x01\x09\x00\x00".to_vec(),
        b"RGHS\x01\x01\xff\xff".to_vec(),
        hello[..hello.len() - 1].to_vec(),
        [&hello[..], &[0]].concat(),
    ];
    for bytes in cases {
        let e = match Responder::on_hello(&c, [2; 32], &bytes) {
            Ok(_) => panic!("{bytes:?} accepted"),
            Err(f) => f.error,
        };
        assert_eq!(e.code, RejectCode::Malformed, "{bytes:?}: {e}");
        assert!(e.message.contains("malformed"), "{e}");
    }
}

mod props {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed, TestRunner};

    /// Seeded from `ROLLGATE_SEED` (printed), so a failure can be replayed.
    fn runner(cases: u32) -> TestRunner {
        let seed = std::env::var("ROLLGATE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
        println!("proptest seed: ROLLGATE_SEED={seed}");
        TestRunner::new(Config {
            cases,
            rng_seed: RngSeed::Fixed(seed),
            failure_persistence: None,
            ..Config::default()
        })
    }

    #[test]
    fn handshake_never_panics_on_random_or_mutated_frames() {
        let c = rollgate_sample::fuzz::config("a", true);
        let (_, hello) = rollgate::handshake::Initiator::start(&c, [5; 32]);
        let b = rollgate_sample::fuzz::config("b", true);
        let (_, reply) = rollgate::handshake::Responder::on_hello(&b, [6; 32], &hello).unwrap();
        let valid = [hello, reply];
        let strategy = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            (0..2usize, proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)).prop_map(
                move |(i, muts)| {
                    let mut f = valid[i].clone();
                    for (at, b) in muts {
                        let at = at.index(f.len());
                        f[at] = b;
                    }
                    f
                }
            ),
        ];
        runner(512)
            .run(&strategy, |bytes| {
                rollgate_sample::fuzz::handshake(&bytes);
                Ok(())
            })
            .unwrap();
    }
}

#[test]
fn advertisement_strings_are_bounded() {
    let mut c = cfg("a", range(1, 2), None);
    c.node_id = "x".repeat(handshake::MAX_ID_BYTES + 1);
    let (_, hello) = Initiator::start(&c, [1; 32]);
    let e = Responder::on_hello(&cfg("b", range(1, 2), None), [2; 32], &hello).unwrap_err().error;
    assert_eq!(e.code, RejectCode::Malformed);
    assert!(e.message.contains("node id"), "{e}");
}

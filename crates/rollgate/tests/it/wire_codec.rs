//! The versioned codec (I8): round trips of every sample message at every
//! transport version, derived `since`/`until` fields, and random and mutated
//! frames fed to the decoder (the same entry point as the `decode` fuzz
//! target), which must return a value or a typed error and never panic.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use rollgate::handshake::Negotiated;
use rollgate::net::{self, DataFrame};
use rollgate::protocol::{Protocol, decode_message, encode_message};
use rollgate::version::{ProtocolVersion, TransportVersion};
use rollgate::wire::{self, Limits, WireError};
use rollgate_sample::network::v1::{Gossip, Member, Ping};
use rollgate_sample::{Msg, fuzz, samples, transport_versions};

/// Seeded from `ROLLGATE_SEED` (printed), so a failure can be replayed.
fn runner(cases: u32) -> TestRunner {
    let seed = std::env::var("ROLLGATE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    println!("proptest seed: ROLLGATE_SEED={seed}");
    TestRunner::new(Config { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..Config::default() })
}

fn versions() -> Vec<TransportVersion> {
    transport_versions::KNOWN.to_vec()
}

fn member() -> impl Strategy<Value = Member> {
    (".{0,12}", ".{0,20}", "[0-9.]{0,8}", any::<u64>(), any::<i32>(), any::<bool>()).prop_map(
        |(id, addr, release, last_seen_ms, load, voter)| Member { id, addr, release, last_seen_ms, load, voter },
    )
}

fn gossip() -> impl Strategy<Value = Gossip> {
    (
        ".{0,16}",
        any::<u64>(),
        proptest::collection::vec(member(), 0..6),
        proptest::collection::btree_map(".{0,6}", ".{0,6}", 0..4),
        any::<u32>(),
    )
        .prop_map(|(from, epoch, members, labels, checksum)| Gossip { from, epoch, members, labels, checksum })
}

#[test]
fn random_values_round_trip_at_every_transport_version() {
    runner(256)
        .run(&(gossip(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64)), |(g, seq, payload)| {
            for tv in versions() {
                let bytes = wire::encode_to_vec(&g, tv, Limits::DEFAULT).unwrap();
                prop_assert_eq!(&wire::decode_frame::<Gossip>(&bytes, tv, Limits::DEFAULT).unwrap(), &g);
                let p = Ping { seq, payload: payload.clone() };
                let bytes = wire::encode_to_vec(&p, tv, Limits::DEFAULT).unwrap();
                let back = wire::decode_frame::<Ping>(&bytes, tv, Limits::DEFAULT).unwrap();
                prop_assert_eq!(back.seq, seq);
                let carried = tv.supports(&transport_versions::PING_PAYLOAD);
                prop_assert_eq!(back.payload, if carried { payload.clone() } else { Vec::new() });
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn std_types_round_trip() {
    let tv = transport_versions::CURRENT;
    let l = Limits::DEFAULT;
    runner(256)
        .run(
            &(
                any::<i64>(),
                any::<Option<u16>>(),
                proptest::collection::hash_map(any::<u32>(), any::<bool>(), 0..8),
                any::<(u8, i8, char, f64)>(),
            ),
            |(i, o, h, t)| {
                let v = (i, o, h.clone(), t, [t.0; 3], vec![Some(Box::new(i)); 2]);
                let bytes = wire::encode_to_vec(&v, tv, l).unwrap();
                type T = (i64, Option<u16>, HashMap<u32, bool>, (u8, i8, char, f64), [u8; 3], Vec<Option<Box<i64>>>);
                let back: T = wire::decode_frame(&bytes, tv, l).unwrap();
                prop_assert_eq!(back.0, i);
                prop_assert_eq!(back.2, h);
                prop_assert!(back.3.3.to_bits() == t.3.to_bits());
                Ok(())
            },
        )
        .unwrap();
    let m = BTreeMap::from([(String::from("k"), vec![1u64, 2])]);
    assert_eq!(
        wire::decode_frame::<BTreeMap<String, Vec<u64>>>(&wire::encode_to_vec(&m, tv, l).unwrap(), tv, l).unwrap(),
        m
    );
}

fn valid_frames() -> Vec<(u16, TransportVersion, Vec<u8>)> {
    let mut out = Vec::new();
    for (_, msg) in samples::messages() {
        for tv in versions() {
            let n = fuzz::negotiated(msg.version().0, tv);
            out.push((msg.version().0, tv, net::encode_data_frame(&msg, &n, &fuzz::LIMITS).unwrap()));
        }
    }
    out
}

#[test]
fn valid_frames_decode_through_the_fuzz_entry_point() {
    for (protocol, tv, frame) in valid_frames() {
        let n = fuzz::negotiated(protocol, tv);
        assert!(matches!(net::decode_data_frame::<Msg>(&frame, &n, &fuzz::LIMITS), Ok(DataFrame::Message(_))));
        fuzz::decode(&frame);
    }
}

#[test]
fn random_and_mutated_frames_never_panic() {
    let frames = valid_frames();
    let n = frames.len();
    let mutated = (
        0..n,
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(move |(i, muts, cut, truncate)| {
            let mut f = frames[i].2.clone();
            for (at, b) in muts {
                let at = at.index(f.len());
                f[at] = b;
            }
            if truncate {
                f.truncate(cut.index(f.len() + 1));
            }
            f
        });
    let strategy = prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), mutated];
    runner(1024)
        .run(&strategy, |bytes| {
            fuzz::decode(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn hostile_lengths_are_refused_before_allocating() {
    let tv = transport_versions::CURRENT;
    let small = Limits { max_frame_bytes: 1024, max_collection_len: 100, max_depth: 8 };
    // A length prefix near u64::MAX, and one within the limit but beyond the input.
    let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert!(matches!(wire::decode_frame::<Vec<u64>>(&huge, tv, small), Err(WireError::LengthOverLimit { .. })));
    assert!(matches!(wire::decode_frame::<String>(&[50, b'a'], tv, small), Err(WireError::UnexpectedEnd { .. })));
    assert!(matches!(wire::decode_frame::<Vec<()>>(&[101], tv, small), Err(WireError::LengthOverLimit { .. })));
    let n = fuzz::negotiated(2, tv);
    let header = net::encode_header(net::frame_kind::DATA, ProtocolVersion(2), tv, u32::MAX);
    assert!(matches!(net::decode_data_frame::<Msg>(&header, &n, &small), Err(net::NetError::FrameTooLarge { .. })));
    // Nesting is bounded.
    let deep: Vec<u8> = std::iter::repeat_n(1u8, 20).chain([0]).collect();
    type Nest = Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<Vec<u8>>>>>>>>>>;
    assert!(matches!(
        wire::decode_frame::<Nest>(&deep, tv, small),
        Err(WireError::TooDeep { .. } | WireError::UnexpectedEnd { .. })
    ));
}

#[test]
fn sample_messages_round_trip_through_the_protocol_enum() {
    for (name, msg) in samples::messages() {
        for tv in versions() {
            let bytes = encode_message(&msg, tv, Limits::DEFAULT).unwrap();
            let back = decode_message::<Msg>(&bytes, msg.version(), tv, Limits::DEFAULT).unwrap();
            assert_eq!(encode_message(&back, tv, Limits::DEFAULT).unwrap(), bytes, "{name} at {tv}");
            // Decoding as the other protocol version either fails or yields another message: never a panic.
            let other = ProtocolVersion(3 - msg.version().0);
            let _ = decode_message::<Msg>(&bytes, other, tv, Limits::DEFAULT);
        }
    }
}

#[test]
fn negotiated_is_what_frames_are_checked_against() {
    let n: Negotiated = fuzz::negotiated(2, transport_versions::CURRENT);
    let frame = net::encode_data_frame(
        &Msg::from(rollgate_sample::protocol::v2::Msg::Ticker(rollgate_sample::ticker::v2::Msg::Count { value: 1 })),
        &n,
        &Limits::DEFAULT,
    )
    .unwrap();
    let other = fuzz::negotiated(2, transport_versions::MINIMUM_COMPATIBLE);
    assert!(matches!(
        net::decode_data_frame::<Msg>(&frame, &other, &Limits::DEFAULT),
        Err(net::NetError::VersionMismatch { .. })
    ));
}

//! Golden wire samples: for every message of the sample protocol and every
//! transport version this build supports, the bytes checked in at
//! `testdata/wire/<message>/<transport_version>.bin` must decode to the
//! expected value and re-encode byte for byte, and today's encoder must
//! produce exactly them. Changing the encoding of an existing version fails
//! here.
//!
//! Adding samples (a new message, or a new transport version): run
//! `ROLLGATE_BLESS=1 cargo test -p rollgate-sample --test wire_golden`. It
//! writes only missing files and never overwrites one; commit them.

use std::path::PathBuf;

use rollgate::protocol::{decode_message, encode_message};
use rollgate::version::TransportVersion;
use rollgate::wire::Limits;
use rollgate_sample::network::v1 as network;
use rollgate_sample::protocol::{v1, v2};
use rollgate_sample::{Msg, samples, transport_versions};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/wire")
}

/// Transport versions whose encodings are pinned: every known id from the
/// minimum compatible one up to the current one.
fn versions() -> Vec<TransportVersion> {
    rollgate::golden::versions_from(transport_versions::SET)
}

/// What `msg` looks like after a trip through `tv`: fields the version does
/// not carry take their defaults.
fn at_version(msg: &Msg, tv: TransportVersion) -> Msg {
    let ping = |p: &network::Ping| {
        let payload = if tv.supports(&transport_versions::PING_PAYLOAD) { p.payload.clone() } else { Vec::new() };
        network::Msg::Ping(network::Ping { seq: p.seq, payload })
    };
    let hello = |h: &network::Hello| {
        let legacy_addr = if tv.supports(&transport_versions::DROP_LEGACY_ADDR) {
            "unknown".to_string()
        } else {
            h.legacy_addr.clone()
        };
        network::Msg::Hello(network::Hello { legacy_addr, ..h.clone() })
    };
    let net = |m: &network::Msg| match m {
        network::Msg::Ping(p) => ping(p),
        network::Msg::Hello(h) => hello(h),
        other => other.clone(),
    };
    match msg {
        Msg::V1(v1::Msg::Network(m)) => v1::Msg::Network(net(m)).into(),
        Msg::V2(v2::Msg::Network(m)) => v2::Msg::Network(net(m)).into(),
        other => other.clone(),
    }
}

#[test]
fn golden_wire_samples() {
    let msgs = samples::messages();
    let report = rollgate::golden::check(
        &dir(),
        &msgs,
        &versions(),
        at_version,
        "cargo test -p rollgate-sample --test wire_golden",
    );
    assert!(report.problems.is_empty(), "{}", report.problems.join("\n"));
    assert_eq!(report.checked, msgs.len() * 3, "three transport versions");
}

#[test]
fn gated_fields_follow_the_transport_version() {
    let ping: Msg = v2::Msg::Network(network::Msg::Ping(network::Ping { seq: 5, payload: vec![9, 9] })).into();
    let size = |tv| encode_message(&ping, tv, Limits::DEFAULT).unwrap().len();
    let [old, with_payload, ..] = versions()[..] else { panic!() };
    assert_eq!(size(old) + 3, size(with_payload), "payload (length + 2 bytes) only from ping_payload on");
    let hello: Msg = v1::Msg::Network(network::Msg::Hello(network::Hello {
        node: "n".into(),
        legacy_addr: "addr".into(),
        services: vec![],
    }))
    .into();
    let at = |tv| encode_message(&hello, tv, Limits::DEFAULT).unwrap().len();
    assert_eq!(at(with_payload), at(transport_versions::CURRENT) + 5, "legacy_addr only before drop_legacy_addr");
}

#[test]
fn unknown_tags_and_versions_are_typed_errors() {
    let e = decode_message::<Msg>(
        &[9, 0],
        rollgate::version::ProtocolVersion(2),
        transport_versions::CURRENT,
        Limits::DEFAULT,
    )
    .unwrap_err();
    assert!(matches!(e, rollgate::wire::WireError::UnknownTag { ty: "Msg", tag: 9, .. }), "{e}");
    let e = decode_message::<Msg>(
        &[1, 3, 0],
        rollgate::version::ProtocolVersion(3),
        transport_versions::CURRENT,
        Limits::DEFAULT,
    )
    .unwrap_err();
    assert!(matches!(e, rollgate::wire::WireError::UnsupportedProtocol { .. }), "{e}");
}

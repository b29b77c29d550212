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

use rollgate::protocol::{Protocol, decode_message, encode_message};
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
    transport_versions::KNOWN.iter().copied().filter(|v| *v >= transport_versions::MINIMUM_COMPATIBLE).collect()
}

fn bless() -> bool {
    std::env::var("ROLLGATE_BLESS").as_deref() == Ok("1")
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

fn check(name: &str, msg: &Msg, tv: TransportVersion, problems: &mut Vec<String>) {
    let path = dir().join(name).join(format!("{tv}.bin"));
    let encoded = encode_message(msg, tv, Limits::DEFAULT).unwrap();
    let golden = match std::fs::read(&path) {
        Ok(b) => b,
        Err(_) if bless() => {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &encoded).unwrap();
            println!("blessed {}", path.display());
            encoded.clone()
        }
        Err(e) => {
            problems.push(format!(
                "{}: {e}: run `ROLLGATE_BLESS=1 cargo test -p rollgate-sample --test wire_golden` and commit the new file",
                path.display()
            ));
            return;
        }
    };
    let expected = at_version(msg, tv);
    match decode_message::<Msg>(&golden, msg.version(), tv, Limits::DEFAULT) {
        Ok(decoded) => {
            if decoded != expected {
                problems.push(format!("{}: decodes to {decoded:?}, expected {expected:?}", path.display()));
            }
            let again = encode_message(&decoded, tv, Limits::DEFAULT).unwrap();
            if again != golden {
                problems.push(format!("{}: does not re-encode byte for byte", path.display()));
            }
        }
        Err(e) => problems.push(format!("{}: no longer decodes: {e}", path.display())),
    }
    if encoded != golden {
        problems.push(format!(
            "{}: the encoding of an existing transport version changed ({} bytes now, {} checked in); gate the change behind a new transport version",
            path.display(),
            encoded.len(),
            golden.len()
        ));
    }
}

#[test]
fn golden_wire_samples() {
    let mut problems = Vec::new();
    let msgs = samples::messages();
    let mut count = 0;
    for (name, msg) in &msgs {
        for tv in versions() {
            check(name, msg, tv, &mut problems);
            count += 1;
        }
    }
    // A folder whose message no longer exists (a retired protocol version) must go too.
    for entry in std::fs::read_dir(dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if !msgs.iter().any(|(n, _)| *n == name) {
            problems
                .push(format!("{}: no sample message is named `{name}`; delete the folder", entry.path().display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(count, msgs.len() * 3, "three transport versions");
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

//! Codec speed: encode + decode of a representative message at the current
//! transport version, against the same struct through postcard (the
//! baseline), in the same run. `cargo bench -p rollgate --bench wire`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rollgate::wire::{Decode, Encode, Limits, Reader, Writer};
use rollgate_sample::network::v1::{Gossip, Ping};
use rollgate_sample::{samples, transport_versions};

fn roundtrip<T: Encode + Decode + serde::Serialize + serde::de::DeserializeOwned>(
    c: &mut Criterion,
    name: &str,
    msg: T,
) {
    let mut g = c.benchmark_group(name);
    let mut w = Writer::with_capacity(transport_versions::CURRENT, Limits::DEFAULT, 4096);
    g.bench_function("rollgate", |b| {
        b.iter(|| {
            w.clear();
            black_box(&msg).encode(&mut w);
            let bytes = w.finish().unwrap();
            let mut r = Reader::new(black_box(bytes), transport_versions::CURRENT, Limits::DEFAULT);
            let back = T::decode(&mut r).unwrap();
            r.finish().unwrap();
            back
        })
    });
    let mut buf = vec![0u8; 64 * 1024];
    g.bench_function("postcard", |b| {
        b.iter(|| {
            let used = postcard::to_slice(black_box(&msg), &mut buf).unwrap();
            let back: T = postcard::from_bytes(black_box(used)).unwrap();
            back
        })
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    roundtrip::<Gossip>(c, "codec/gossip_8_members", samples::gossip(8));
    roundtrip::<Ping>(c, "codec/ping", Ping { seq: 123_456, payload: b"0123456789abcdef".to_vec() });
}

criterion_group!(benches, codec);
criterion_main!(benches);

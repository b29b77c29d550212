//! Arbitrary bytes as handshake frames, to both sides, with and without a
//! secret: `cargo +nightly fuzz run handshake`. Same entry point as the
//! property test in `crates/rollgate/tests/it/handshake_negotiation.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rollgate_sample::fuzz::handshake(data);
});

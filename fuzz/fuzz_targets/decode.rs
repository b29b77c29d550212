//! Arbitrary bytes as data frames and message bodies of the sample protocol,
//! at every protocol and transport version: `cargo +nightly fuzz run decode`.
//! Same entry point as the property test in `crates/rollgate/tests/it/wire_codec.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rollgate_sample::fuzz::decode(data);
});

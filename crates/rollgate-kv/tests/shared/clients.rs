//! Clients with short timeouts, shared by the test binaries (`it`, `procs`).

use std::time::Duration;

use rollgate_kv::{ClientOptions, KvClient};

/// A client of one HTTP address that does not retry.
pub fn single(addr: &str) -> KvClient {
    KvClient::new(&[addr], ClientOptions { rounds: 1, ..quick() }).unwrap()
}

/// Short client timeouts.
pub fn quick() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        rounds: 3,
        round_backoff: Duration::from_millis(50),
        tls: None,
        ..ClientOptions::default()
    }
}

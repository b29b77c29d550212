//! rollgate-kv's tests through its binary: several `rollgate-kv serve`
//! processes on a real etcd (`multi_process`, `upgrade_flags`) and the
//! command line (`cli`). One binary, so that the process helpers are shared
//! and every one of them is used.

// Scenario tests read top to bottom, so a long one stays in one piece.
#![allow(clippy::too_many_lines)]

// The etcd-backed tests (and the admin client only they use) need `--features etcd`.
#[cfg(feature = "etcd")]
mod admin;
mod process;

mod cli;
mod multi_process;
mod upgrade_flags;

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
    }
}

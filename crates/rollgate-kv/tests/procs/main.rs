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
mod clock_skew;
#[cfg(feature = "etcd")]
mod faults;
mod multi_process;
mod upgrade_flags;

#[path = "../shared/clients.rs"]
mod clients;

pub use clients::{quick, single};

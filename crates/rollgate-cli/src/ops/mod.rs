//! The operator commands: `flags`, `features`, `nodes`, `capabilities` and
//! `upgrade`, each a call to one node's admin HTTP API (`--node URL`, or
//! `ROLLGATE_NODE`). Changes need the admin token (`--token-file FILE`, or
//! `ROLLGATE_TOKEN_FILE`). Human output is an aligned table printed from the
//! answer decoded into its `rollgate-api` type (an answer of another API
//! version exits 1 naming the endpoint); `--json` prints the node's JSON as
//! it sent it, for scripts.
//!
//! One file per command group (`flags.rs`, `nodes.rs` for nodes and
//! features, `capabilities.rs`, `upgrade.rs` with `migrations.rs` for the
//! migrations tables and `--watch`, `wait.rs` for `upgrade wait` and
//! `flags enable --wait`, `audit.rs`, and `release.rs`, which signs and
//! verifies release manifests locally without a node); `args.rs` holds the shared options and
//! the name checks, `show.rs` the table printing, `client.rs` the HTTP client
//! of one node's admin API (`--node` checked up front; `ROLLGATE_NODE`,
//! `ROLLGATE_TOKEN_FILE`; bounded answers and timeouts). Every decision is
//! the node's: 4xx answers exit 2 with the node's message (which names the
//! fix), transport failures and 5xx exit 1.

mod args;
mod audit;
mod capabilities;
mod client;
mod flags;
mod migrations;
mod nodes;
mod release;
mod show;
mod tls;
mod upgrade;
mod wait;

pub use args::Connection;
pub use audit::{AuditArgs, run_audit};
pub use capabilities::{CapabilitiesArgs, run_capabilities};
pub use flags::{FlagsCommand, run_flags};
pub use nodes::{FeaturesCommand, NodesCommand, run_features, run_nodes};
pub use release::{ReleaseCommand, run_release};
pub use upgrade::{UpgradeCommand, run_upgrade};

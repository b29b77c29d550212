//! The smallest service built on rollgate: a counter whose nodes add to
//! each other's totals. `docs/adopting.md` at the repository root walks
//! through it step by step.
//!
//! | module | what it shows |
//! |---|---|
//! | [`releases`] | releases 1.0 and 1.1 in code: protocol range, transport version, feature flags |
//! | [`protocol`] | protocol v1 (1.0) and v2 (1.1), one module each; a field gated by a transport version |
//! | [`entries`] | stored data as an extensible record; a new key written only once its flag is enabled |
//! | [`node`] | a node: rollgate's runtime, the admin API, peer connections at the negotiated versions |
//! | [`demo`] | a rolling upgrade from 1.0 to 1.1 in one process (`counter demo`) |

#![warn(missing_docs)]

use std::path::PathBuf;

// The constants and `transport_version!` generated from `transport/` by build.rs.
rollgate::include_transport_versions!();

pub mod demo;
pub mod entries;
pub mod node;
pub mod protocol;
pub mod releases;

/// Why a node, a request or the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rollgate's runtime refused to start (its message names the fix) or failed.
    #[error(transparent)]
    Node(#[from] rollgate::node::NodeError),
    /// The cluster state in the metadata store.
    #[error(transparent)]
    Cluster(#[from] rollgate::cluster::ClusterError),
    /// The metadata store cannot be opened.
    #[error(transparent)]
    Store(#[from] rollgate::store::StoreError),
    /// The release's flag declarations are invalid.
    #[error(transparent)]
    Flags(#[from] rollgate::flags::RegistryError),
    /// A peer connection (a handshake refusal names what to upgrade).
    #[error(transparent)]
    Net(#[from] rollgate::net::NetError),
    /// The admin listener.
    #[error(transparent)]
    Admin(#[from] rollgate::admin::AdminError),
    /// Calling the admin API (the demo).
    #[error("the admin API: {0}")]
    Http(#[from] reqwest::Error),
    /// A record key refused (a gated key without its flag) or undecodable.
    #[error(transparent)]
    Record(#[from] rollgate::record::RecordError),
    /// The entries file.
    #[error("entries file {path}: {source}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: redb::Error,
    },
    /// A file or dir.
    #[error("{what}: {source}")]
    Io {
        /// Which one, doing what.
        what: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Anything else, said in full.
    #[error("{0}")]
    Failed(String),
}

//! [`NodeError`]: why a node could not start or stop.

use std::path::PathBuf;

use rollgate::cluster::ClusterError;
use rollgate::migrate::MigrateError;
use rollgate::net::NetError;

use crate::storage::StorageError;

/// Why a node could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data dir.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The node id file.
    #[error("node id file {}: {reason}", path.display())]
    NodeId {
        /// The file.
        path: PathBuf,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// The membership or the metadata store.
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// rollgate's node runtime refused the start (an enabled flag this
    /// release lacks, a cluster feature it lacks, a required flag that cannot
    /// be enabled: the message names the flag or feature, the nodes and the
    /// fix) or failed.
    #[error(transparent)]
    Runtime(#[from] rollgate::node::NodeError),
    /// The table migrations could not be set up.
    #[error("storage migrations: {0}")]
    Migrate(#[from] MigrateError),
    /// Binding a listener.
    #[error("cannot listen on {addr} ({what}): {reason}")]
    Bind {
        /// The address.
        addr: String,
        /// Which listener.
        what: &'static str,
        /// The OS error.
        reason: String,
    },
    /// The `--join` peer refused us or could not be reached.
    #[error("cannot join through {addr}: {reason}")]
    Join {
        /// The address.
        addr: String,
        /// The handshake's message (naming what to upgrade) or the connection error.
        reason: String,
    },
    /// Setting up the peer listener failed.
    #[error(transparent)]
    Net(#[from] NetError),
}

impl NodeError {
    /// Whether the operator can fix it (bad flags, an incompatible peer, a
    /// data dir in use): exit code 2 rather than 1.
    pub fn is_operator_error(&self) -> bool {
        match self {
            NodeError::Config(_) | NodeError::NodeId { .. } | NodeError::Bind { .. } | NodeError::Join { .. } => true,
            NodeError::Storage(e) => matches!(
                e,
                StorageError::AlreadyOpen { .. } | StorageError::Corrupt { .. } | StorageError::Format { .. }
            ),
            NodeError::Cluster(e) => matches!(e, ClusterError::InvalidNodeId { .. }),
            NodeError::Runtime(e) => match e {
                rollgate::node::NodeError::Flag(f) => f.is_refusal(),
                rollgate::node::NodeError::Config { .. } | rollgate::node::NodeError::Release(_) => true,
                rollgate::node::NodeError::Cluster(c) => matches!(c, ClusterError::InvalidNodeId { .. }),
                _ => false,
            },
            NodeError::Migrate(_) => false,
            NodeError::Net(e) => matches!(e, NetError::Config(_)),
        }
    }
}

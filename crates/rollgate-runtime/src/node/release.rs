//! The release manifest at boot: what this binary speaks, checked against
//! the signed manifest it was started with and the trusted release key;
//! and the cluster's release key (`<root>release_key`), written by the first
//! node started with a key, after which every node must run a release
//! signed by it.

use rollgate_release::{Digest, Manifest, ManifestFlag, ProtocolSpan, ReleaseError, TransportIds};
use rollgate_store::{Compare, MetaStoreJson, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::{NodeConfig, NodeError};
use crate::cluster::{Cluster, now_ms};

/// The manifest of the release `config` describes.
pub fn release_manifest(config: &NodeConfig) -> Manifest {
    let flags = config
        .flags
        .names()
        .into_iter()
        .map(|name| {
            let stability = config.flags.get(&name).map(|d| d.info().stability).unwrap_or_default();
            ManifestFlag { name, stability }
        })
        .collect();
    Manifest {
        format: rollgate_release::MANIFEST_FORMAT,
        release: config.release.clone(),
        protocol: ProtocolSpan { min: config.protocol.min().0, max: config.protocol.max().0 },
        transport: TransportIds {
            minimum_compatible: config.transport.min_compatible.id(),
            current: config.transport.current.id(),
        },
        flags,
        formats: config.formats.clone(),
        features: config.features.published(config.test_mode).into_iter().collect(),
    }
    .canonical()
}

/// Why a node refuses to run its release.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseRefusal {
    /// A manifest without a key to check it with.
    #[error(
        "node {node} was given a signed release manifest but no trusted release key: give it the release public key too"
    )]
    ManifestWithoutKey {
        /// The node.
        node: String,
    },
    /// A key without a manifest.
    #[error(
        "node {node} trusts release key {key_id} but has no signed manifest for release {release}: print the release's manifest, sign it with `rollgate release sign --key FILE`, and start the node with the signed file"
    )]
    KeyWithoutManifest {
        /// The node.
        node: String,
        /// Its release.
        release: String,
        /// The trusted key.
        key_id: String,
    },
    /// The manifest does not verify or does not describe this binary.
    #[error("node {node} refuses to run release {release}: {source}")]
    Manifest {
        /// The node.
        node: String,
        /// Its release.
        release: String,
        /// What is wrong (boxed: it keeps the node's errors small).
        source: Box<ReleaseError>,
    },
    /// An unsigned release in a cluster that runs signed ones.
    #[error(
        "node {node} (release {release}) has no signed release manifest, but this cluster runs only releases signed by release key {key_id} (since node {set_by} started with it): sign release {release}'s manifest with that key (`rollgate release sign`) and start the node with the signed manifest and the release public key"
    )]
    Unsigned {
        /// The node.
        node: String,
        /// Its release.
        release: String,
        /// The cluster's key.
        key_id: String,
        /// The node that set it.
        set_by: String,
    },
    /// Another key than the cluster's.
    #[error(
        "node {node} trusts release key {node_key}, but this cluster runs releases signed by key {cluster_key} (since node {set_by} started with it): start the node with the cluster's release public key and a manifest signed by it"
    )]
    OtherKey {
        /// The node.
        node: String,
        /// Its key.
        node_key: String,
        /// The cluster's.
        cluster_key: String,
        /// The node that set it.
        set_by: String,
    },
}

/// The value of `<root>release_key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterReleaseKey {
    /// The key id.
    pub key_id: String,
    /// The public key file's line.
    pub public_key: String,
    /// The node that wrote it.
    pub set_by: String,
    /// When.
    pub at_ms: u64,
}

/// Checks the node's manifest and the cluster's release key; the digest of
/// the verified manifest, when there is one.
pub(super) async fn check(config: &NodeConfig, cluster: &Cluster) -> Result<Option<Digest>, NodeError> {
    let node = config.node_id.clone();
    let release = config.release.clone();
    let digest = match (&config.release_manifest, &config.release_key) {
        (None, None) => None,
        (Some(_), None) => return Err(ReleaseRefusal::ManifestWithoutKey { node }.into()),
        (None, Some(key)) => return Err(ReleaseRefusal::KeyWithoutManifest { node, release, key_id: key.id() }.into()),
        (Some(signed), Some(key)) => {
            let refuse = |source| ReleaseRefusal::Manifest {
                node: node.clone(),
                release: release.clone(),
                source: Box::new(source),
            };
            let digest = signed.verify(key).map_err(refuse)?;
            signed.manifest.check_describes(&release_manifest(config)).map_err(refuse)?;
            Some(digest)
        }
    };
    let key = format!("{}release_key", cluster.keys().root());
    let store = cluster.store();
    let stored = match store.get_json::<ClusterReleaseKey>(&key).await? {
        Some((k, _)) => Some(k),
        None => match &config.release_key {
            None => None,
            Some(trusted) => {
                let record = ClusterReleaseKey {
                    key_id: trusted.id(),
                    public_key: trusted.to_line(),
                    set_by: node.clone(),
                    at_ms: now_ms(),
                };
                let txn = Txn::new().when([Compare::absent(key.clone())]).and_then([TxnOp::put_json(&key, &record)?]);
                if store.txn(txn).await?.succeeded {
                    tracing::info!(node = %node, key_id = %record.key_id, "the cluster now runs only releases signed by this release key");
                    None
                } else {
                    store.get_json::<ClusterReleaseKey>(&key).await?.map(|(k, _)| k)
                }
            }
        },
    };
    if let Some(stored) = stored {
        match &config.release_key {
            None => {
                return Err(
                    ReleaseRefusal::Unsigned { node, release, key_id: stored.key_id, set_by: stored.set_by }.into()
                );
            }
            Some(k) if k.id() != stored.key_id => {
                return Err(ReleaseRefusal::OtherKey {
                    node,
                    node_key: k.id(),
                    cluster_key: stored.key_id,
                    set_by: stored.set_by,
                }
                .into());
            }
            Some(_) => {}
        }
    }
    Ok(digest)
}

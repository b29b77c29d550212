//! Cluster features as the admin API shows them.

use serde::{Deserialize, Serialize};

/// One cluster feature and who publishes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureStatus {
    /// The feature.
    pub name: String,
    /// Whether every member (running or stopped) publishes it.
    pub cluster_has: bool,
    /// The members that publish it.
    pub members_with: Vec<String>,
    /// The members that do not.
    pub members_without: Vec<String>,
}

/// `GET /admin/features`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureList {
    /// The features the cluster has (every member publishes them).
    pub cluster_features: Vec<String>,
    /// The features the answering node publishes.
    pub this_node: Vec<String>,
    /// Every feature some member publishes.
    pub features: Vec<FeatureStatus>,
}

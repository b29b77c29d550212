//! Cluster features (Elasticsearch style): identifiers a node publishes in
//! its node record to say "my release supports this operation".
//!
//! [`cluster_has_feature`] is true only when **every** current member,
//! running or stopped (a stopped member may come back with its binary),
//! publishes the feature. Once it is true it is a ratchet: a node that does
//! not publish it is refused at join ([`missing_features`], message
//! `node X is missing required features [...]`), fenced by the cluster epoch
//! like every join, so the answer never goes back to false while the
//! members stay.
//!
//! Features are never removed, but a major release may declare the previous
//! major's features **assumed** (Elasticsearch): it no longer lists them
//! among its published features, only in its record's compact
//! `assumed_features`, and every check here counts an assumed feature as
//! published. A node of that release therefore joins a cluster whose
//! members publish them, and the cluster keeps having them.
//!
//! A [`FeatureSet`] is what a release declares: production features, test
//! features (published only when the node runs in test mode), and synthetic
//! `gte_v<release>` features for tests, derived from a service's ordered
//! release list (a node of release R publishes `gte_v<r>` for every release
//! r up to and including R, in test mode only).

use std::collections::BTreeSet;

use crate::cluster::{ClusterView, NodeRecord};

/// Longest feature name.
pub const MAX_FEATURE_NAME_BYTES: usize = 128;
/// Most features a set may declare.
pub const MAX_FEATURES: usize = 1024;

/// A bad feature declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeatureError {
    /// The name is empty, too long or has characters outside `[a-z0-9_.-]`.
    #[error(transparent)]
    BadName(rollgate_api::names::NameError),
    /// Declared twice.
    #[error("cluster feature {name:?} is declared twice")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// The release is not in the release list.
    #[error("release {release:?} is not in the release list [{}]", known.join(", "))]
    UnknownRelease {
        /// The release.
        release: String,
        /// The known releases.
        known: Vec<String>,
    },
    /// Too many features.
    #[error("too many cluster features: the limit is {max}")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// Checks a feature name: 1 to 128 of `[a-z0-9_.-]`.
pub fn validate_feature_name(name: &str) -> Result<(), FeatureError> {
    rollgate_api::names::check_feature_name(name).map_err(FeatureError::BadName)
}

/// The cluster features a release declares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureSet {
    features: BTreeSet<String>,
    test_features: BTreeSet<String>,
    synthetic: BTreeSet<String>,
    assumed: BTreeSet<String>,
}

impl FeatureSet {
    /// No features.
    pub fn new() -> FeatureSet {
        FeatureSet::default()
    }

    fn insert(set: &mut BTreeSet<String>, others: [&BTreeSet<String>; 2], name: &str) -> Result<(), FeatureError> {
        validate_feature_name(name)?;
        if set.contains(name) || others.iter().any(|o| o.contains(name)) {
            return Err(FeatureError::Duplicate { name: name.to_string() });
        }
        if set.len() + others.iter().map(|o| o.len()).sum::<usize>() >= MAX_FEATURES {
            return Err(FeatureError::TooMany { max: MAX_FEATURES });
        }
        set.insert(name.to_string());
        Ok(())
    }

    /// Declares a production feature.
    pub fn feature(mut self, name: &str) -> Result<FeatureSet, FeatureError> {
        Self::insert(&mut self.features, [&self.test_features, &self.synthetic], name)?;
        Ok(self)
    }

    /// Declares a feature of the previous major assumed: not published as a
    /// feature of this release, but present wherever it runs.
    pub fn assumed(mut self, name: &str) -> Result<FeatureSet, FeatureError> {
        validate_feature_name(name)?;
        if self.features.contains(name) || self.test_features.contains(name) || !self.assumed.insert(name.to_string()) {
            return Err(FeatureError::Duplicate { name: name.to_string() });
        }
        Ok(self)
    }

    /// The assumed features.
    pub fn assumed_features(&self) -> &BTreeSet<String> {
        &self.assumed
    }

    /// Declares a test feature (published in test mode only).
    pub fn test_feature(mut self, name: &str) -> Result<FeatureSet, FeatureError> {
        Self::insert(&mut self.test_features, [&self.features, &self.synthetic], name)?;
        Ok(self)
    }

    /// Adds the synthetic test features `gte_v<r>` for every release `r` of
    /// the ordered list `releases` up to and including `current`.
    pub fn release_features(mut self, releases: &[&str], current: &str) -> Result<FeatureSet, FeatureError> {
        let Some(pos) = releases.iter().position(|r| *r == current) else {
            return Err(FeatureError::UnknownRelease {
                release: current.to_string(),
                known: releases.iter().map(|r| r.to_string()).collect(),
            });
        };
        for r in &releases[..=pos] {
            Self::insert(&mut self.synthetic, [&self.features, &self.test_features], &gte_feature(r))?;
        }
        Ok(self)
    }

    /// The production features.
    pub fn features(&self) -> &BTreeSet<String> {
        &self.features
    }

    /// What a node publishes: the production features, plus the test and
    /// synthetic ones in test mode.
    pub fn published(&self, test_mode: bool) -> BTreeSet<String> {
        let mut out = self.features.clone();
        if test_mode {
            out.extend(self.test_features.iter().cloned());
            out.extend(self.synthetic.iter().cloned());
        }
        out
    }
}

/// The synthetic feature of a release: `gte_v<release>`.
pub fn gte_feature(release: &str) -> String {
    format!("gte_v{release}")
}

/// Whether every current member (running or stopped) publishes `feature`.
/// False for a cluster without members.
pub fn cluster_has_feature(view: &ClusterView, feature: &str) -> bool {
    !view.members.is_empty() && view.members.values().all(|m| has(&m.record, feature))
}

/// Whether a member publishes `feature` or assumes it.
pub fn member_has(record: &NodeRecord, feature: &str) -> bool {
    has(record, feature)
}

fn has(record: &NodeRecord, feature: &str) -> bool {
    record.cluster_features.contains(feature) || record.assumed_features.contains(feature)
}

/// The features every current member publishes.
pub fn cluster_features(view: &ClusterView) -> BTreeSet<String> {
    let mut members = view.members.values();
    let Some(first) = members.next() else { return BTreeSet::new() };
    let mut common: BTreeSet<String> =
        first.record.cluster_features.union(&first.record.assumed_features).cloned().collect();
    for m in members {
        common.retain(|f| has(&m.record, f));
    }
    common
}

/// The cluster's features that `record` does not publish (empty: it may
/// join as far as features go). Computed over the current members, its own
/// previous record included: a node that comes back with an older binary is
/// held to what the cluster already relies on.
pub fn missing_features(view: &ClusterView, record: &NodeRecord) -> Vec<String> {
    cluster_features(view).into_iter().filter(|f| !has(record, f)).collect()
}

/// The join refusal message for missing features.
pub fn missing_features_message(node: &str, missing: &[String]) -> String {
    format!(
        "node {node} is missing required features [{}]: every member of the cluster publishes them, so a node \
         without them cannot join; run a release that supports them on {node}",
        missing.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_publish_test_features_only_in_test_mode() {
        let set = FeatureSet::new()
            .feature("kv_ttl")
            .unwrap()
            .test_feature("kv_test_hook")
            .unwrap()
            .release_features(&["1.0", "1.1", "1.2"], "1.1")
            .unwrap();
        assert_eq!(set.published(false), ["kv_ttl".to_string()].into());
        assert_eq!(
            set.published(true).into_iter().collect::<Vec<_>>(),
            ["gte_v1.0", "gte_v1.1", "kv_test_hook", "kv_ttl"]
        );
        assert!(matches!(FeatureSet::new().feature("Bad"), Err(FeatureError::BadName { .. })));
        assert!(matches!(
            FeatureSet::new().feature("a").unwrap().test_feature("a"),
            Err(FeatureError::Duplicate { .. })
        ));
        let err = FeatureSet::new().release_features(&["1.0"], "2.0").unwrap_err();
        assert!(err.to_string().contains("\"2.0\" is not in the release list [1.0]"), "{err}");
    }
}

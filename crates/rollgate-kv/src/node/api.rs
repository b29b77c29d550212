//! The client API of a node ([`Api`]): what the HTTP routes call to write,
//! read and scan, and what `/health` reports.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::read::{self, ReadAnswer};
use super::shared::{ServingState, Shared};
use super::write::{self, WriteError, WriteOutcome};
use crate::hlc::Version;
use crate::peer::link::PeerStatus;
use crate::plugins::{Audit, PluginState};
use crate::record::Record;
use crate::releases::{self, Release};
use crate::storage::StorageError;

/// Health, as `/health` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct Health {
    /// The node id.
    pub node: String,
    /// Its release.
    pub release: &'static str,
    /// Its state.
    pub state: &'static str,
    /// Whether it serves requests.
    pub ready: bool,
    /// The cluster id.
    pub cluster_id: String,
    /// Its protocol range.
    pub protocols: String,
    /// Its transport version.
    pub transport: u32,
    /// Registered members (running or stopped), itself included.
    pub members: usize,
    /// Its links to peers.
    pub peers: Vec<PeerStatus>,
    /// Recent inbound handshakes it refused or that failed.
    pub refused_inbound: Vec<String>,
    /// The feature flags enabled in the cluster (from its view).
    pub flags_enabled: Vec<String>,
    /// Its plugins and whether each runs.
    pub plugins: BTreeMap<String, PluginState>,
    /// Its clock against the cluster's (see `node::clock`).
    pub clock: super::clock::ClockStatus,
    /// Its `records` unit (filled in by `/health`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStatus>,
}

/// A node's `records` unit, as `/health` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct StorageStatus {
    /// The unit.
    pub unit: &'static str,
    /// Its format now.
    pub format: u32,
    /// The format it was created with.
    pub created_format: u32,
    /// The formats this release reads.
    pub readable: String,
    /// Entries in the expiry index (format 3).
    pub expiry_index: u64,
}

/// How much a read promises (see [`crate::consistency`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadLevel {
    /// Read-your-writes: at least the version the client has seen.
    #[default]
    Session,
    /// Confirmed by a majority: every write acknowledged before the read.
    Linearizable,
}

impl ReadLevel {
    /// The level as the HTTP API names it (`consistency=...`, `x-kv-read`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReadLevel::Session => "session",
            ReadLevel::Linearizable => "linearizable",
        }
    }
}

impl std::str::FromStr for ReadLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "session" => Ok(ReadLevel::Session),
            "linearizable" => Ok(ReadLevel::Linearizable),
            other => Err(format!(
                "consistency must be session or linearizable, got {:?}",
                rollgate::util::shorten_to(other, 32)
            )),
        }
    }
}

/// The client API of a node (what the HTTP routes call): cheap to clone.
#[derive(Clone)]
pub struct Api {
    pub(crate) shared: Arc<Shared>,
}

impl Api {
    /// Stores `value` under `key` (with an optional TTL) and returns once a
    /// majority of members stored it.
    pub async fn put(&self, key: String, value: Vec<u8>, ttl_s: Option<u64>) -> Result<WriteOutcome, WriteError> {
        write::write(&self.shared, key, Some(value), ttl_s, None).await
    }

    /// Stores `value` (`None`: deletes) under `key`, after the writer's
    /// highest seen version: the write's version is above `seen`, so a
    /// client that wrote a key through one node and writes it again
    /// through another is not overtaken by its own earlier write, even
    /// when the second node has not received the first one yet.
    pub async fn write(
        &self,
        key: String,
        value: Option<Vec<u8>>,
        ttl_s: Option<u64>,
        seen: Option<&crate::hlc::Version>,
    ) -> Result<WriteOutcome, WriteError> {
        write::write(&self.shared, key, value, ttl_s, seen).await
    }

    /// Deletes `key` (a tombstone), acknowledged like a put.
    pub async fn delete(&self, key: String) -> Result<WriteOutcome, WriteError> {
        write::write(&self.shared, key, None, None, None).await
    }

    /// The live value of `key` on this node and its record.
    pub async fn get(&self, key: &str) -> Result<Option<Record>, WriteError> {
        Ok(read::read(&self.shared, key).await?.record)
    }

    /// Reads `key` at `level` (see `node::read`): what this node holds;
    /// for a session read, once it holds `after` or newer; for a
    /// linearizable read, confirmed by a majority.
    pub async fn read(&self, key: &str, level: ReadLevel, after: Option<&Version>) -> Result<ReadAnswer, WriteError> {
        match (level, after) {
            (ReadLevel::Linearizable, _) => read::linearizable_read(&self.shared, key).await,
            (ReadLevel::Session, Some(after)) => read::session_read(&self.shared, key, after).await,
            (ReadLevel::Session, None) => read::read(&self.shared, key).await,
        }
    }

    /// The node's health.
    pub fn health(&self) -> Health {
        let s = &self.shared;
        let state = s.state();
        let view = s.view();
        Health {
            node: s.node_id.clone(),
            release: s.release.name,
            state: state.as_str(),
            ready: state == ServingState::Ready,
            cluster_id: s.cluster_id.clone(),
            protocols: s.release.protocols.to_string(),
            transport: s.release.transport.id(),
            members: view.members.len().max(1),
            peers: s.links.status(),
            refused_inbound: s.refusals(),
            flags_enabled: view.flags.iter().filter(|(_, r)| r.is_enabled()).map(|(n, _)| n.clone()).collect(),
            plugins: s.audit.iter().map(|a| (a.name().to_string(), a.state())).collect(),
            clock: s.clock.status(),
            storage: None,
        }
    }

    /// The node's `records` unit: its format stamp and expiry index.
    pub async fn storage_status(&self) -> Result<StorageStatus, StorageError> {
        let s = &self.shared;
        let stamp = s.storage.unit_stamp().await?;
        Ok(StorageStatus {
            unit: releases::RECORDS_UNIT,
            format: stamp.format,
            created_format: stamp.created_format,
            readable: format!("{}..={}", s.release.formats.min_readable, s.release.formats.max),
            expiry_index: s.storage.expiry_index_len().await?,
        })
    }

    /// The live records whose key starts with `prefix` (the HTTP API's `GET /kv?prefix=`).
    pub async fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<crate::storage::StoredEntry>, bool), WriteError> {
        read::scan_prefix(&self.shared, prefix, limit).await
    }

    /// [`scan_prefix`](Self::scan_prefix) confirmed by a majority (a linearizable scan).
    pub async fn scan_prefix_linearizable(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<crate::storage::StoredEntry>, bool), WriteError> {
        read::linearizable_scan(&self.shared, prefix, limit).await
    }

    /// The release it runs as.
    pub fn release(&self) -> &'static Release {
        self.shared.release
    }

    /// Whether every member publishes the cluster feature.
    pub fn cluster_has_feature(&self, feature: &str) -> bool {
        self.shared.cluster_has_feature(feature)
    }

    /// The members that do not publish the cluster feature, as `node (release R)`.
    pub fn members_without(&self, feature: &str) -> Vec<String> {
        self.shared
            .view()
            .members
            .values()
            .filter(|m| !rollgate::features::member_has(&m.record, feature))
            .map(|m| format!("{} (release {})", m.record.node_id, m.record.release))
            .collect()
    }

    /// The audit plugin, when configured.
    pub fn audit(&self) -> Option<&Arc<Audit>> {
        self.shared.audit.as_ref()
    }

    /// The names of the configured plugins.
    pub fn plugin_names(&self) -> Vec<String> {
        self.shared.audit.iter().map(|a| a.name().to_string()).collect()
    }
}

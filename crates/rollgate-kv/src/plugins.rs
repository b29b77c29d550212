//! Plugin-like components a release ships, started with `--plugins NAME`.
//! A plugin declares the feature flags it requires
//! ([`crate::releases::PluginDef::requires`]); the node starts it only once
//! they are all enabled (checked with rollgate's
//! [`check_plugin`](rollgate::node::Node::check_plugin)), logs that it waits
//! and why until then, and stops it again if one is disabled. Nothing else
//! is refused meanwhile.
//!
//! The one plugin, `audit` (release 1.2 on, requires `record_meta_v2`),
//! remembers the most recent writes stored on this node, with their writer
//! as `meta@2` says (falling back to `meta@1`), and serves them at
//! `GET /audit?limit=N`.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use crate::gates::KvFlags;
use crate::record::{Record, WriterInfo};
use crate::releases::PluginDef;

/// Most writes the audit plugin remembers.
pub const MAX_AUDIT_ENTRIES: usize = 1024;
/// Most entries one `GET /audit` returns.
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// One remembered write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// The key.
    pub key: String,
    /// The write's version.
    pub version: String,
    /// Whether it was a delete.
    pub delete: bool,
    /// `client` (this node coordinated it) or `replica` (a peer sent it).
    pub origin: &'static str,
    /// Who wrote it (`meta@2`, else `meta@1`).
    pub writer: Option<WriterInfo>,
    /// When this node stored it (ms since the Unix epoch).
    pub stored_ms: u64,
}

/// Whether a plugin runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PluginState {
    /// Waiting for its flags; `reason` is rollgate's refusal (which names them and the command).
    Waiting {
        /// Why.
        reason: String,
    },
    /// Running.
    Running,
}

/// The audit plugin of one node.
#[derive(Debug)]
pub struct Audit {
    def: &'static PluginDef,
    state: Mutex<PluginState>,
    recent: Mutex<VecDeque<AuditEntry>>,
}

impl Audit {
    /// A plugin that waits for its flags.
    pub fn new(def: &'static PluginDef) -> Audit {
        Audit {
            def,
            state: Mutex::new(PluginState::Waiting { reason: "the node is starting".into() }),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.def.name
    }

    /// Whether it runs, or why not.
    pub fn state(&self) -> PluginState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_state(&self, to: PluginState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }

    /// Remembers a stored write (while running).
    pub fn note(&self, key: &str, record: &Record, origin: &'static str) {
        if self.state() != PluginState::Running {
            return;
        }
        let entry = AuditEntry {
            key: key.to_string(),
            version: record.version.to_string(),
            delete: record.value.is_none(),
            origin,
            writer: record.writer().ok().flatten(),
            stored_ms: rollgate::cluster::now_ms(),
        };
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == MAX_AUDIT_ENTRIES {
            recent.pop_front();
        }
        recent.push_back(entry);
    }

    /// The `limit` most recent writes, newest first.
    pub fn recent(&self, limit: usize) -> Vec<AuditEntry> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().take(limit.min(MAX_AUDIT_LIMIT)).cloned().collect()
    }
}

/// Starts the plugin once its flags are enabled, and stops it when one is
/// disabled; runs until the node stops (abort the task).
pub async fn run(plugin: std::sync::Arc<Audit>, node: rollgate::node::Node, flags: KvFlags) {
    let spec = plugin.def.spec();
    let ids: Vec<_> = plugin.def.requires.iter().filter_map(|f| flags.id(f)).collect();
    // Paces re-checks: the bits and the view the check reads may differ for a moment.
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        pace.tick().await;
        match node.check_plugin(&spec) {
            Ok(()) => {
                plugin.set_state(PluginState::Running);
                tracing::info!(plugin = plugin.name(), requires = ?plugin.def.requires, "plugin started: the flags it requires are enabled");
                // Running until one of its flags is disabled.
                if ids.is_empty() {
                    std::future::pending::<()>().await;
                }
                let disabled = ids.iter().map(|id| Box::pin(flags.bits().wait_disabled(*id)));
                futures::future::select_all(disabled).await;
                let reason = format!("a flag it requires ({}) was disabled", plugin.def.requires.join(", "));
                tracing::warn!(plugin = plugin.name(), %reason, "plugin stopped");
                plugin.set_state(PluginState::Waiting { reason });
            }
            Err(refusal) => {
                let reason = refusal.to_string();
                tracing::info!(plugin = plugin.name(), "plugin waits: {reason}");
                plugin.set_state(PluginState::Waiting { reason });
                // A release that does not support a required flag never
                // gets here (the node refuses the plugin at start).
                for id in &ids {
                    flags.bits().wait_enabled(*id).await;
                }
            }
        }
    }
}

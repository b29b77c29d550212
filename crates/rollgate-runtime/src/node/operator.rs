//! What an operator does through a node, with the audit log: enable,
//! disable and forget recorded with their caller and outcome; reading the
//! log; and the peer links the service reports (the runtime opens no peer
//! connection, so the service tells it what its handshakes agreed on).

use std::sync::Arc;

use rollgate_api::audit::{AuditAction, AuditEntry, AuditOutcome, Caller};
use rollgate_api::links::LinkReport;

use super::{DisableReport, EnableReport, Node};
use crate::audit;
use crate::cluster::{ClusterError, Committed};
use crate::flags::FlagError;
use crate::flags::plan::EnableRequest;

/// Reports the service's peer links and handshake counts (called on each
/// `GET /admin/links`, dashboard refresh and metrics scrape: keep it cheap).
pub type LinkSource = Arc<dyn Fn() -> LinkReport + Send + Sync>;

/// How a flag error ends in the audit log.
fn flag_outcome(e: &FlagError) -> AuditOutcome {
    match e {
        FlagError::EnableRefused { .. } | FlagError::DisableRefused(_) | FlagError::PluginRefused(_) => {
            AuditOutcome::Refused
        }
        _ => AuditOutcome::Failed,
    }
}

impl Node {
    /// Appends an entry to the audit log; a failure to write it is logged,
    /// never the caller's failure (the operation already happened).
    pub async fn audit(
        &self,
        action: AuditAction,
        caller: &Caller,
        request: serde_json::Value,
        outcome: AuditOutcome,
        message: &str,
    ) {
        let shared = self.shared();
        let entry = audit::entry(&shared.config.node_id, action, caller, request, outcome, message);
        audit::record(
            shared.cluster.store().as_ref(),
            shared.cluster.keys().root(),
            shared.config.audit_capacity,
            entry,
        )
        .await;
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, audit::AuditError> {
        let cluster = self.cluster();
        audit::read(cluster.store().as_ref(), cluster.keys().root(), self.config().audit_capacity, limit).await
    }

    /// [`Node::enable`] on behalf of `caller`, recorded in the audit log
    /// (dry runs change nothing and are not recorded).
    pub async fn enable_as(&self, request: EnableRequest, caller: &Caller) -> Result<EnableReport, FlagError> {
        let dry_run = request.dry_run;
        let json = serde_json::to_value(&request).unwrap_or_default();
        let result = self.enable_unaudited(request).await;
        if !dry_run {
            let (outcome, message) = match &result {
                Ok(r) if r.enabled.is_empty() => {
                    (AuditOutcome::Ok, format!("nothing to enable; already enabled: {}", r.already_enabled.join(", ")))
                }
                Ok(r) => (AuditOutcome::Ok, format!("enabled {}", r.enabled.join(", "))),
                Err(e) => (flag_outcome(e), e.to_string()),
            };
            self.audit(AuditAction::Enable, caller, json, outcome, &message).await;
        }
        result
    }

    /// [`Node::disable`] on behalf of `caller`, recorded in the audit log.
    pub async fn disable_as(&self, flag: &str, caller: &Caller) -> Result<DisableReport, FlagError> {
        let result = self.disable_unaudited(flag).await;
        let (outcome, message) = match &result {
            Ok(r) if r.changed => (AuditOutcome::Ok, format!("disabled {flag}")),
            Ok(_) => (AuditOutcome::Ok, format!("{flag} was not enabled; nothing changed")),
            Err(e) => (flag_outcome(e), e.to_string()),
        };
        self.audit(AuditAction::Disable, caller, serde_json::json!({ "flag": flag }), outcome, &message).await;
        result
    }

    /// [`Node::forget`] on behalf of `caller`, recorded in the audit log.
    pub async fn forget_as(&self, node: &str, caller: &Caller) -> Result<Committed, ClusterError> {
        let result = self.forget_unaudited(node).await;
        let (outcome, message) = match &result {
            Ok(c) => (AuditOutcome::Ok, format!("forgot node {node} (epoch {})", c.epoch)),
            Err(
                e @ (ClusterError::UnknownNode { .. }
                | ClusterError::NodeRunning { .. }
                | ClusterError::InvalidNodeId { .. }),
            ) => (AuditOutcome::Refused, e.to_string()),
            Err(e) => (AuditOutcome::Failed, e.to_string()),
        };
        self.audit(AuditAction::Forget, caller, serde_json::json!({ "node": node }), outcome, &message).await;
        result
    }

    /// Lets the service report its peer links ([`Node::links`]).
    pub fn set_link_source(&self, source: LinkSource) {
        *self.core.links.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// The service's peer links and handshake counts (`published: false`
    /// when the service reports none).
    pub fn links(&self) -> LinkReport {
        let source = self.core.links.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let published = source.is_some();
        let mut report = source.map(|s| s()).unwrap_or_default();
        report.published = published;
        report.node_id = self.id().to_string();
        report
    }

    /// This binary's release manifest (what a signed manifest must match).
    pub fn release_manifest(&self) -> rollgate_release::Manifest {
        super::release_manifest(self.config())
    }
}

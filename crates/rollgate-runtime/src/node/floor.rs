//! Raising the release floor through a node: the decision is
//! [`plan::plan_finalize`] on the node's view, committed under the epoch
//! fence (a member that joins in between makes it decide again on the new
//! view), and recorded in the audit log.

use rollgate_api::audit::{AuditAction, AuditOutcome, Caller};
use rollgate_api::floor::{FinalizeBlocker, FinalizeReport, FinalizeRequest, refusal_message};

use super::Node;
use crate::cluster::{ClusterError, ClusterView, UpdateError};
use crate::flags::plan;

/// Why a finalize failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FinalizeError {
    /// The cluster does not allow it yet (or ever): each blocker names its fix.
    #[error("{}", refusal_message(release, blockers))]
    Refused {
        /// The asked release.
        release: String,
        /// What blocks it.
        blockers: Vec<FinalizeBlocker>,
    },
    /// The store could not be read or written.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl Node {
    /// Raises the release floor to `request.release` (by default the oldest
    /// release the members run), or with `dry_run` only checks that it may.
    pub async fn finalize(&self, request: FinalizeRequest) -> Result<FinalizeReport, FinalizeError> {
        self.finalize_as(request, &Caller::library()).await
    }

    /// [`Node::finalize`] on behalf of `caller`, recorded in the audit log
    /// (dry runs change nothing and are not recorded).
    pub async fn finalize_as(
        &self,
        request: FinalizeRequest,
        caller: &Caller,
    ) -> Result<FinalizeReport, FinalizeError> {
        let json = serde_json::to_value(&request).unwrap_or_default();
        let dry_run = request.dry_run;
        let result = self.finalize_unaudited(request).await;
        if !dry_run {
            let (outcome, message) = match &result {
                Ok(r) if r.changed => (AuditOutcome::Ok, format!("release floor raised to {}", r.release)),
                Ok(r) => (AuditOutcome::Ok, format!("release floor already {}; nothing changed", r.release)),
                Err(e @ FinalizeError::Refused { .. }) => (AuditOutcome::Refused, e.to_string()),
                Err(e) => (AuditOutcome::Failed, e.to_string()),
            };
            self.audit(AuditAction::Finalize, caller, json, outcome, &message).await;
        }
        result
    }

    async fn finalize_unaudited(&self, request: FinalizeRequest) -> Result<FinalizeReport, FinalizeError> {
        let view = self.cluster().view().await?;
        let release = match request.release {
            Some(r) => r,
            None => plan::default_release(&view).unwrap_or_else(|| self.release().to_string()),
        };
        let decide = |view: &ClusterView| {
            plan::plan_finalize(
                view,
                self.registry(),
                self.release(),
                &release,
                request.dry_run,
                self.id(),
                rollgate_util::now_ms(),
            )
        };
        // Decided on a fresh view: a dry run or a floor that already is
        // `release` writes nothing (not even an epoch bump).
        let first = decide(&view).map_err(|blockers| FinalizeError::Refused { release: release.clone(), blockers })?;
        if first.op.is_none() {
            return Ok(first.report);
        }
        let mut report = first.report;
        let committed = self
            .shared()
            .handle
            .update(|view| {
                let decided = decide(view)?;
                report = decided.report;
                Ok(decided.op.into_iter().collect())
            })
            .await
            .map_err(|e| match e {
                UpdateError::Rejected(blockers) => FinalizeError::Refused { release: release.clone(), blockers },
                UpdateError::Cluster(e) => e.into(),
            })?;
        self.shared().settle(committed.revision).await;
        Ok(report)
    }
}

//! The audit log as the admin API shows it (`GET /admin/audit`): who changed
//! the cluster, when, from which node, with which request and what came of
//! it. Tokens appear only as fingerprints.

use serde::{Deserialize, Serialize};

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// Flags enabled (`POST /admin/flags/enable`).
    Enable,
    /// A flag disabled.
    Disable,
    /// A stopped member forgotten.
    Forget,
    /// The release floor raised.
    Finalize,
    /// A node took over an enabling or disabling whose driver was gone.
    Takeover,
    /// An action of a newer API version this one does not know.
    #[serde(other)]
    Unknown,
}

impl AuditAction {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Enable => "enable",
            AuditAction::Disable => "disable",
            AuditAction::Forget => "forget",
            AuditAction::Finalize => "finalize",
            AuditAction::Takeover => "takeover",
            AuditAction::Unknown => "unknown",
        }
    }
}

/// How it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// Done.
    Ok,
    /// Refused before anything changed (the message says why and the fix).
    Refused,
    /// Started and failed (rolled back, taken over, or the store failed).
    Failed,
    /// An outcome of a newer API version this one does not know.
    #[serde(other)]
    Unknown,
}

impl AuditOutcome {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Failed => "failed",
            AuditOutcome::Unknown => "unknown",
        }
    }
}

/// Who asked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// `admin_api` (a request with the admin token), `library` (the
    /// service called the runtime) or `node` (the runtime on its own, e.g. a
    /// takeover).
    pub via: String,
    /// The token's fingerprint (`sha256:` and 16 hex digits of its SHA-256),
    /// never the token.
    #[serde(default)]
    pub token: Option<String>,
}

impl Caller {
    /// A request through the admin API with a token of this fingerprint.
    pub fn admin_api(token_fingerprint: String) -> Caller {
        Caller { via: "admin_api".into(), token: Some(token_fingerprint) }
    }
    /// The service calling the runtime directly.
    pub fn library() -> Caller {
        Caller { via: "library".into(), token: None }
    }
    /// The runtime acting on its own.
    pub fn node() -> Caller {
        Caller { via: "node".into(), token: None }
    }
}

/// One entry of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its sequence number (increasing, cluster-wide).
    pub seq: u64,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The node that did it.
    pub node: String,
    /// What was done.
    pub action: AuditAction,
    /// Who asked.
    pub caller: Caller,
    /// The request (e.g. `{"flags": ["ttl"], "all": false, ...}`).
    pub request: serde_json::Value,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// What happened, in words (bounded).
    pub message: String,
}

/// `GET /admin/audit`: the newest entries first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditLog {
    /// How many entries the store keeps (older ones are dropped).
    pub capacity: usize,
    /// The entries, newest first.
    pub entries: Vec<AuditEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_outcomes_of_a_newer_api_decode_as_unknown() {
        assert_eq!(serde_json::from_str::<AuditAction>("\"rename\"").unwrap(), AuditAction::Unknown);
        assert_eq!(serde_json::from_str::<AuditOutcome>("\"partial\"").unwrap(), AuditOutcome::Unknown);
        assert_eq!(serde_json::from_str::<AuditAction>("\"takeover\"").unwrap(), AuditAction::Takeover);
    }
}

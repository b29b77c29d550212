//! Feature flags as the admin API shows them: the status of each flag,
//! enable and disable requests and reports, and the blockers that refuse an
//! enable (each names the operator's fix).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How settled a flag is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stability {
    /// The release cannot run without it: enabled on its own at boot when
    /// every member supports it (the node refuses to start otherwise, saying
    /// which nodes to upgrade).
    Required,
    /// Ready for production: enabled on a fresh cluster and by `--all`.
    Stable,
    /// May change or go away: enabled only on explicit request with
    /// `--experimental`.
    Experimental,
}

impl Stability {
    /// `required`, `stable` or `experimental`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stability::Required => "required",
            Stability::Stable => "stable",
            Stability::Experimental => "experimental",
        }
    }
}

impl Stability {
    /// The level a stored record names; a level this release does not know
    /// (from a newer release) counts as experimental: never enabled by
    /// `--all`, never "ready to enable".
    pub fn parse_lenient(s: &str) -> Stability {
        match s {
            "required" => Stability::Required,
            "stable" => Stability::Stable,
            _ => Stability::Experimental,
        }
    }
}

impl PartialEq<&str> for Stability {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Stability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A member as messages name it: `n2 (release 1.0, stopped)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeRef {
    /// The node id.
    pub node_id: String,
    /// Its release.
    pub release: String,
    /// Whether it is running.
    pub running: bool,
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.running { "running" } else { "stopped" };
        write!(f, "{} (release {}, {state})", self.node_id, self.release)
    }
}

/// The fix for nodes that lack a flag.
fn upgrade_fix(nodes: &[NodeRef], introduced_in: &str) -> String {
    let release = if introduced_in.is_empty() {
        "a release that supports it".to_string()
    } else {
        format!("a release that supports it ({introduced_in} or later)")
    };
    let stopped: Vec<&str> = nodes.iter().filter(|n| !n.running).map(|n| n.node_id.as_str()).collect();
    let forget = match stopped.as_slice() {
        [] => {
            "a node that is gone for good can be removed with `rollgate nodes forget ID` once it is stopped".to_string()
        }
        [one] => format!("if {one} is gone for good, run `rollgate nodes forget {one}`"),
        many => {
            format!("for a stopped node that is gone for good ({}), run `rollgate nodes forget ID`", many.join(", "))
        }
    };
    format!("upgrade {} to {release}; {forget}", ids(nodes))
}

use rollgate_util::comma_list as list;

fn ids(nodes: &[NodeRef]) -> String {
    nodes.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>().join(", ")
}

/// Why (part of) an enable request cannot go ahead. Each says what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Blocker {
    /// Neither flags nor `--all`.
    NothingRequested,
    /// A flag this node's release does not know.
    UnknownFlag {
        /// The flag.
        flag: String,
        /// This node's release.
        release: String,
    },
    /// An experimental flag without `--experimental`.
    Experimental {
        /// The flag.
        flag: String,
        /// The requested flag that pulled it in, when it is a dependency.
        needed_by: Option<String>,
    },
    /// Members (running or stopped) that do not support the flag.
    NotSupported {
        /// The flag.
        flag: String,
        /// The release that introduced it.
        introduced_in: String,
        /// The members lacking it.
        nodes: Vec<NodeRef>,
    },
    /// Members that must run the flag's per-node step are not running.
    StepNodesDown {
        /// The flag.
        flag: String,
        /// Those members.
        nodes: Vec<NodeRef>,
    },
    /// A dependency that is not enabled (and not part of the plan).
    DependencyNotEnabled {
        /// The flag.
        flag: String,
        /// The dependency.
        dependency: String,
    },
    /// Another node is enabling or disabling the flag.
    InProgress {
        /// The flag.
        flag: String,
        /// The node driving it.
        owner: String,
        /// `enabling` or `disabling`.
        state: String,
    },
    /// A blocker of a newer API version this one does not know (the
    /// report's `messages` still say what it is).
    #[serde(other)]
    Other,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocker::Other => f.write_str("a blocker this release does not know; see the node's message"),
            Blocker::NothingRequested => f.write_str("nothing to enable: name one or more flags, or use --all"),
            Blocker::UnknownFlag { flag, release } => write!(
                f,
                "unknown feature flag `{flag}`: this node's release {release} does not know it; `rollgate flags list` shows the flags it knows"
            ),
            Blocker::Experimental { flag, needed_by: None } => write!(
                f,
                "flag `{flag}` is experimental: pass --experimental to enable it (experimental flags may change or go away in a later release)"
            ),
            Blocker::Experimental { flag, needed_by: Some(by) } => {
                write!(f, "flag `{by}` needs the experimental flag `{flag}`: pass --experimental to enable both")
            }
            Blocker::NotSupported { flag, introduced_in, nodes } => write!(
                f,
                "flag `{flag}` cannot be enabled: node {} does not support it; {}",
                list(nodes),
                upgrade_fix(nodes, introduced_in)
            ),
            Blocker::StepNodesDown { flag, nodes } => {
                let stopped = ids(nodes);
                write!(
                    f,
                    "flag `{flag}` runs a per-node enable step on every member and node {} cannot run it because it is not running: start {stopped}, or, if it is gone for good, run `rollgate nodes forget ID`",
                    list(nodes)
                )
            }
            Blocker::DependencyNotEnabled { flag, dependency } => write!(
                f,
                "flag `{flag}` depends on `{dependency}`, which is not enabled: enable `{dependency}` first (`rollgate flags enable {flag}` enables its dependencies first)"
            ),
            Blocker::InProgress { flag, owner, state } => {
                let verb = if state == "disabling" { "disabled" } else { "enabled" };
                write!(
                    f,
                    "flag `{flag}` is already being {verb} by node {owner}: wait for it to finish (if {owner} crashed, the next node that looks resumes or rolls it back)"
                )
            }
        }
    }
}

/// An enable request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnableRequest {
    /// The flags to enable (dependencies are added).
    #[serde(default)]
    pub flags: Vec<String>,
    /// Every stable (and required) flag.
    #[serde(default)]
    pub all: bool,
    /// Also experimental flags (with `all`), and allow naming them.
    #[serde(default)]
    pub experimental: bool,
    /// Plan only.
    #[serde(default)]
    pub dry_run: bool,
}

impl EnableRequest {
    /// Enables the named flags.
    pub fn flags<I: IntoIterator<Item = S>, S: Into<String>>(flags: I) -> EnableRequest {
        EnableRequest { flags: flags.into_iter().map(Into::into).collect(), ..EnableRequest::default() }
    }
    /// Every stable flag.
    pub fn all() -> EnableRequest {
        EnableRequest { all: true, ..EnableRequest::default() }
    }
    /// With experimental flags.
    pub fn experimental(mut self) -> EnableRequest {
        self.experimental = true;
        self
    }
    /// As a dry run.
    pub fn dry_run(mut self) -> EnableRequest {
        self.dry_run = true;
        self
    }
}

/// `POST /admin/flags/disable`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    /// The flag (a reversible one).
    pub flag: String,
}

/// What an enable request did (or, as a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnableReport {
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// The flags in the order they are (or would be) enabled.
    pub order: Vec<String>,
    /// The flags this request enabled.
    pub enabled: Vec<String>,
    /// Requested flags that were enabled already.
    pub already_enabled: Vec<String>,
    /// What blocks it (dry run only; a real request is refused instead).
    pub blockers: Vec<Blocker>,
    /// The blockers as operator messages.
    pub messages: Vec<String>,
}

/// What a disable request did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisableReport {
    /// The flag.
    pub flag: String,
    /// False when it was disabled already.
    pub changed: bool,
}

/// Where a flag is, as the admin API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagPhase {
    /// Enabled: every member may produce data that needs it.
    Enabled,
    /// Being enabled by its owner.
    Enabling,
    /// Being disabled by its owner.
    Disabling,
    /// Disabled (or never enabled).
    Disabled,
    /// A state of a newer API version this one does not know.
    #[serde(other)]
    Unknown,
}

impl FlagPhase {
    /// `enabled`, `enabling`, `disabling` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagPhase::Enabled => "enabled",
            FlagPhase::Enabling => "enabling",
            FlagPhase::Disabling => "disabling",
            FlagPhase::Disabled => "disabled",
            FlagPhase::Unknown => "unknown",
        }
    }
}

impl fmt::Display for FlagPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for FlagPhase {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One flag as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagStatus {
    /// The name.
    pub name: String,
    /// Enabled, enabling, disabling or disabled.
    pub state: FlagPhase,
    /// Whether this node's release knows it.
    pub known: bool,
    /// What it changes.
    pub description: String,
    /// Required, stable or experimental.
    pub stability: Stability,
    /// The first release that knows it.
    pub introduced_in: String,
    /// Its dependencies.
    pub depends_on: Vec<String>,
    /// Where it is documented.
    pub doc_url: Option<String>,
    /// Who declared it.
    pub provider: String,
    /// Whether it can be disabled.
    pub reversible: bool,
    /// Whether members run a per-node step to enable it.
    pub node_step: bool,
    /// The node driving an enabling or disabling.
    pub owner: Option<String>,
    /// The members that do not support it.
    pub lacking: Vec<String>,
    /// Why the last enabling was rolled back, if it was.
    pub note: Option<String>,
    /// When it was enabled (ms since the Unix epoch).
    pub since_ms: Option<u64>,
}

/// `GET /admin/flags`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagList {
    /// The cluster epoch of the view the list was taken from.
    pub epoch: u64,
    /// Every flag the answering node knows or the store has.
    pub flags: Vec<FlagStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_a_newer_api_decode_as_unknown_instead_of_failing() {
        let phase: FlagPhase = serde_json::from_str("\"paused\"").unwrap();
        assert_eq!((phase, phase.as_str()), (FlagPhase::Unknown, "unknown"));
        let blocker: Blocker = serde_json::from_str(r#"{"kind": "quota_exceeded", "flag": "ttl"}"#).unwrap();
        assert_eq!(blocker, Blocker::Other);
        assert!(blocker.to_string().contains("see the node's message"));
        // Known values still decode as themselves.
        let known: Blocker = serde_json::from_str(r#"{"kind": "nothing_requested"}"#).unwrap();
        assert_eq!(known, Blocker::NothingRequested);
        assert_eq!(serde_json::from_str::<FlagPhase>("\"enabling\"").unwrap(), FlagPhase::Enabling);
    }
}

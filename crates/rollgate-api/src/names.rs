//! The names the API accepts: node ids, flag names and cluster feature
//! names. The server checks them on every request and the `rollgate` CLI
//! before it sends one, with the same rules and messages.

use rollgate_util::shorten;

/// Longest node id.
pub const MAX_NODE_ID_BYTES: usize = 64;
/// Longest flag name.
pub const MAX_FLAG_NAME_BYTES: usize = 64;
/// Longest cluster feature name.
pub const MAX_FEATURE_NAME_BYTES: usize = 128;

/// A name that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// A node id that cannot be used.
    #[error("invalid node id {id:?}: {reason}")]
    NodeId {
        /// The id (shortened).
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// A flag name that cannot be used.
    #[error("invalid flag name {name:?}: use 1 to 64 of a-z, 0-9 and _")]
    FlagName {
        /// The name (shortened).
        name: String,
    },
    /// The name is empty, too long or has characters outside `[a-z0-9_.-]`.
    #[error("invalid cluster feature name {name:?}: use 1 to 128 of a-z, 0-9, '_', '.' and '-'")]
    FeatureName {
        /// The name (shortened).
        name: String,
    },
}

/// Checks a node id: 1 to 64 of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn check_node_id(id: &str) -> Result<(), NameError> {
    let reason = if id.is_empty() {
        Some("it is empty")
    } else if id.len() > MAX_NODE_ID_BYTES {
        Some("it is longer than 64 bytes")
    } else if id.starts_with('.') {
        Some("it starts with '.'")
    } else if !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        Some("only letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NameError::NodeId { id: shorten(id), reason }),
        None => Ok(()),
    }
}

/// Checks a flag name: 1 to 64 of `[a-z0-9_]`.
pub fn check_flag_name(name: &str) -> Result<(), NameError> {
    if name.is_empty()
        || name.len() > MAX_FLAG_NAME_BYTES
        || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(NameError::FlagName { name: shorten(name) });
    }
    Ok(())
}

/// Checks a cluster feature name: 1 to 128 of `[a-z0-9_.-]`.
pub fn check_feature_name(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_FEATURE_NAME_BYTES
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if ok { Ok(()) } else { Err(NameError::FeatureName { name: shorten(name) }) }
}

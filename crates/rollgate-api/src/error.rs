//! The error answer of every admin API endpoint (and of a service's own
//! API that wants the same shape): `{"error": {"code": "...", "message": "..."}}`
//! with a fitting HTTP status. `code` is stable and meant for programs;
//! `message` is for people and names the fix.

use serde::{Deserialize, Serialize};

/// The body of an error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable, snake_case code (`unknown_flag`, `unauthorized`, ...).
    pub code: String,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: &str, message: impl Into<String>) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: code.to_string(), message: message.into() } }
    }
}

//! How a command fails, and the exit code each failure maps to.

use std::process::ExitCode;

/// A failed command.
#[derive(Debug)]
pub enum Failure {
    /// Bad input or a refused operation (exit 2). The message says what is
    /// wrong and how to fix it.
    Refused(String),
    /// Something that should not happen (exit 1).
    Internal(anyhow::Error),
}

impl Failure {
    /// A refusal.
    pub fn refused(msg: impl std::fmt::Display) -> Failure {
        Failure::Refused(msg.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Internal(e)
    }
}

/// What a command returns.
pub type Outcome = Result<(), Failure>;

/// Prints the failure on stderr and picks the exit code.
pub fn exit(result: Outcome) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Internal(e)) => {
            eprintln!("internal error: {e:#}");
            ExitCode::from(1)
        }
    }
}

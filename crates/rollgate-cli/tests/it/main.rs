//! The `rollgate` CLI's integration tests, built as one test binary (each
//! module was a `tests/*.rs` file): the binary is linked once, and the
//! helpers in `common` are shared without hiding unused ones.

// Scenario tests read top to bottom, so a long one stays in one piece.
#![allow(clippy::too_many_lines)]

mod common;

mod cli_ops;
mod https;
mod node_answers;
mod release_cut;
mod repo_folders;
mod validate;
mod workflow;

//! The network engine's messages, one module per engine version.

pub mod v1;

//! The ticker engine's messages, one module per engine version. A new engine
//! version is a copy of the latest file with the changes applied.

pub mod v1;
pub mod v2;

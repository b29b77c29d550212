//! The digest engine's messages (protocol v3, release 1.2): compare key
//! ranges by count and hash, so catch-up copies only the ranges that differ.

pub mod v1;

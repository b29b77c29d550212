//! Stepwise, resumable, idempotent migrations of stored data, gated on flags or cluster features.

//! Cluster features: automatic, hold when every member publishes them, then refuse older nodes at join.

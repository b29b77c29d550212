//! Feature flags: supported per release, enabled per cluster, checked on the hot path with one atomic load.

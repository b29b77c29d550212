//! The admin HTTP API (axum router) that a service mounts on its admin listener.

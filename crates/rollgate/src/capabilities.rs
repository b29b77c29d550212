//! The `_capabilities` API: does every member support a REST endpoint, its parameters and capabilities.

//! Derive macros for rollgate's versioned wire codec (`Encode`, `Decode`).

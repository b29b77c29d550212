//! A small sample protocol used by rollgate's tests, benchmarks and fuzz
//! targets, and the smallest complete example of a crate using rollgate:
//! its own `transport/` folder, a build script, and versioned messages.

rollgate::include_transport_versions!();

//! Test support shared by rollgate's test suites. Not part of the public API.

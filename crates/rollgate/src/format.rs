//! Format versions stamped on stored data at creation.

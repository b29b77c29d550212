//! The metadata store: one interface over an in-memory map, redb and etcd.

//! Cluster membership on the metadata store: node records, liveness, the cluster epoch.

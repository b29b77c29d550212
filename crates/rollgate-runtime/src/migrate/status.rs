//! Migration status: per node (published by each node's [`LocalRunner`]),
//! per service (the format records), and the cluster-wide picture any node
//! can serve (`GET /admin/upgrade/status`).
//!
//! [`LocalRunner`]: super::LocalRunner

use std::collections::BTreeMap;

use super::service::ServiceFormat;
use super::{
    ClusterMigrationStatus, MigrateError, MigrateKeys, MigrationState, NodeStatus, OwnerRecord, ServiceStatus,
    Unreadable, store_err,
};
use rollgate_store::{MetaStore, decode_json};

/// Reads the cluster-wide migration status from the store under `root`:
/// service formats and owners, and every node's published status. An entry
/// that does not decode is listed in `unreadable` with its key; the store is
/// only read.
pub async fn cluster_status(store: &dyn MetaStore, root: &str) -> Result<ClusterMigrationStatus, MigrateError> {
    let keys = MigrateKeys::new(root);
    let mut out = ClusterMigrationStatus::default();

    let owners_prefix = keys.owners_prefix();
    let owners = store.list(&owners_prefix).await.map_err(store_err("listing the migration owners"))?;
    let mut owner_of = BTreeMap::new();
    for kv in owners.kvs {
        match decode_json::<OwnerRecord>(&kv.key, &kv.value) {
            Ok(owner) => {
                owner_of.insert(kv.key[owners_prefix.len()..].to_string(), owner);
            }
            Err(e) => out.unreadable.push(Unreadable { key: kv.key.clone(), error: e.to_string() }),
        }
    }

    let formats_prefix = keys.formats_prefix();
    let formats = store.list(&formats_prefix).await.map_err(store_err("listing the service formats"))?;
    for kv in formats.kvs {
        let service = kv.key[formats_prefix.len()..].to_string();
        match decode_json::<ServiceFormat>(&kv.key, &kv.value) {
            Ok(format) => {
                let owner = owner_of.remove(&service);
                let state = if owner.is_some() {
                    MigrationState::Running
                } else if format.failure.is_some() {
                    MigrationState::Failed
                } else {
                    MigrationState::Done
                };
                out.services.push(ServiceStatus {
                    service,
                    version: format.version,
                    state,
                    owner,
                    history: format.history,
                    failure: format.failure,
                    target: None,
                    blocked_by: None,
                });
            }
            Err(e) => out.unreadable.push(Unreadable { key: kv.key.clone(), error: e.to_string() }),
        }
    }
    // An owner of a service without format record yet (its first step runs).
    for (service, owner) in owner_of {
        out.services.push(ServiceStatus {
            service,
            version: 0,
            state: MigrationState::Running,
            owner: Some(owner),
            history: Vec::new(),
            failure: None,
            target: None,
            blocked_by: None,
        });
    }

    let statuses_prefix = keys.statuses_prefix();
    let statuses = store.list(&statuses_prefix).await.map_err(store_err("listing the node migration statuses"))?;
    for kv in statuses.kvs {
        let node = &kv.key[statuses_prefix.len()..];
        match decode_json::<NodeStatus>(&kv.key, &kv.value) {
            Ok(status) if status.node == node => out.nodes.push(status),
            Ok(status) => out.unreadable.push(Unreadable {
                key: kv.key.clone(),
                error: format!("the status names node {:?}, not {node:?}", rollgate_util::shorten(&status.node)),
            }),
            Err(e) => out.unreadable.push(Unreadable { key: kv.key.clone(), error: e.to_string() }),
        }
    }
    Ok(out)
}

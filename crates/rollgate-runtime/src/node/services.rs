//! Service formats in the node runtime (Ceph's `format_version`): a node
//! whose config lists service steps runs a [`ServiceRunner`] for them. On
//! the join that creates the cluster, each service's format record is
//! written at the latest version the gates allow, with no step run; on any
//! other cluster the runner takes the steps the gates allow as they open,
//! one lease-elected owner at a time, each step's writes fenced on the
//! owner key (a deposed owner cannot write).

use std::sync::Arc;

use tokio::sync::watch;

use super::{Node, NodeError};
use crate::cluster::{ClusterError, ClusterView};
use crate::migrate::{Gates, MigrateError, ServiceOptions, ServiceRunner};

/// The node's current view as migration gates.
struct ViewGates(watch::Receiver<Arc<ClusterView>>);

/// The rules are `ClusterView`'s own `Gates`, on the newest view.
impl Gates for ViewGates {
    fn flag_enabled(&self, name: &str) -> bool {
        Gates::flag_enabled(&**self.0.borrow(), name)
    }
    fn cluster_has_feature(&self, name: &str) -> bool {
        Gates::cluster_has_feature(&**self.0.borrow(), name)
    }
}

fn config_error(e: MigrateError) -> NodeError {
    NodeError::Config { reason: format!("service formats: {e}") }
}

impl Node {
    /// The service runner of this node, when its config lists service steps.
    pub(super) fn service_runner(&self) -> Result<Option<ServiceRunner>, NodeError> {
        let shared = self.shared();
        let Some(migrations) = shared.config.services.clone() else { return Ok(None) };
        let options = ServiceOptions {
            root: shared.cluster.keys().root().to_string(),
            owner_ttl_s: shared.config.liveness_ttl_s.max(1),
            ..ServiceOptions::default()
        };
        let gates = Arc::new(ViewGates(shared.handle.watch_view()));
        let runner =
            ServiceRunner::new(migrations, shared.cluster.store().clone(), gates, &shared.config.node_id, options)
                .map_err(config_error)?;
        Ok(Some(runner))
    }

    /// Creates the formats of a fresh cluster, then runs the steps as the
    /// gates open, in a task of the node.
    pub(super) async fn start_services(&self, fresh: bool) -> Result<(), NodeError> {
        let Some(runner) = self.service_runner()? else { return Ok(()) };
        if fresh {
            let services: Vec<String> =
                self.shared().config.services.iter().flat_map(|m| m.services().map(str::to_string)).collect();
            for service in &services {
                runner.create_fresh(service).await.map_err(|e| match e {
                    MigrateError::Store { .. } => NodeError::Cluster(ClusterError::Metadata {
                        root: self.shared().cluster.keys().root().to_string(),
                        reason: e.to_string(),
                    }),
                    other => config_error(other),
                })?;
            }
        }
        let changes = self.shared().handle.watch_view();
        let node = self.id().to_string();
        self.spawn_task(async move {
            if let Err(e) = runner.run_on_changes(changes).await {
                tracing::error!(%node, error = %e, "the service format runner stopped");
            }
        });
        Ok(())
    }
}

impl Node {
    /// Completes a cluster-wide migration status with what this node's
    /// release knows of each service: its target (the newest version it
    /// knows), the gate holding the next step back, and the services it
    /// knows that have no format record yet (version 0, pending).
    pub fn complete_service_status(&self, status: &mut crate::migrate::ClusterMigrationStatus) {
        let Some(migrations) = self.shared().config.services.clone() else { return };
        let gates = ViewGates(self.shared().handle.watch_view());
        for service in migrations.services() {
            if !status.services.iter().any(|s| s.service == service) {
                status.services.push(crate::migrate::ServiceStatus {
                    service: service.to_string(),
                    version: 0,
                    state: crate::migrate::MigrationState::Pending,
                    owner: None,
                    history: Vec::new(),
                    failure: None,
                    target: None,
                    blocked_by: None,
                });
            }
        }
        for s in status.services.iter_mut().filter(|s| migrations.services().any(|m| m == s.service)) {
            let plan = migrations.plan(&s.service, s.version, &gates);
            s.target = Some(plan.latest);
            s.blocked_by = plan.blocked.map(|(_, gate)| gate);
        }
    }
}

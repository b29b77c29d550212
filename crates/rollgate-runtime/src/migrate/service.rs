//! Service format versions in the metadata store, upgraded step by step by
//! one elected owner at a time (Ceph's `format_version` + `upgrade_format()`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::local::{LocalReport, LocalRunner};
use super::{
    Direction, Gate, Gates, MigrateError, MigrateKeys, Migrations, OwnerRecord, Plan, StepFailure, StepRecord, StepRef,
    store_err, validate_gate, validate_name, validate_node,
};
use rollgate_store::{
    Compare, EventKind, FencedStore, LeaseId, MetaStore, OpResponse, Revision, StoreError, Txn, TxnOp, decode_json,
    encode_json,
};
use rollgate_util::now_ms;

/// The future a step returns.
pub type StepFuture = Pin<Box<dyn Future<Output = Result<(), StepError>> + Send>>;
type StepFn = Arc<dyn Fn(StepContext) -> StepFuture + Send + Sync>;

/// Why a step failed (its message ends up in the status and the error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StepError(pub String);

impl StepError {
    /// A step error with a message.
    pub fn new(message: impl fmt::Display) -> Self {
        StepError(message.to_string())
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        StepError(e.to_string())
    }
}

impl From<String> for StepError {
    fn from(s: String) -> Self {
        StepError(s)
    }
}

impl From<&str> for StepError {
    fn from(s: &str) -> Self {
        StepError(s.to_string())
    }
}

/// What a running step gets.
#[derive(Clone)]
pub struct StepContext {
    /// The metadata store. Its writes are fenced on this node's ownership:
    /// once another node took the migrations over, they fail with
    /// `StoreError::Fenced` and change nothing.
    pub store: Arc<dyn MetaStore>,
    /// The service.
    pub service: String,
    /// The version the step starts from.
    pub from: u32,
    /// The version the step leads to.
    pub to: u32,
    /// Forward or reverse.
    pub direction: Direction,
    /// The node running it (the owner).
    pub node: String,
    lost: Arc<AtomicBool>,
}

impl StepContext {
    /// Whether this node still holds the owner key's lease. A long step may
    /// check it between units of work and stop early; the final commit is
    /// fenced on the owner key either way.
    pub fn still_owner(&self) -> bool {
        !self.lost.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for StepContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepContext")
            .field("service", &self.service)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("direction", &self.direction)
            .field("node", &self.node)
            .finish()
    }
}

/// One step `from -> from + 1` of a service's format, behind a gate, with an
/// optional reverse. Steps must be idempotent: a crash after the step but
/// before its commit runs it again.
pub struct ServiceStep {
    service: String,
    from: u32,
    name: String,
    gate: Gate,
    forward: StepFn,
    reverse: Option<StepFn>,
}

impl fmt::Debug for ServiceStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceStep")
            .field("service", &self.service)
            .field("from", &self.from)
            .field("name", &self.name)
            .field("gate", &self.gate)
            .field("reversible", &self.reverse.is_some())
            .finish()
    }
}

fn boxed<F, Fut>(f: F) -> StepFn
where
    F: Fn(StepContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), StepError>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)) as StepFuture)
}

impl ServiceStep {
    /// A step of `service` from `from` to `from + 1`, named `name` (for
    /// status and messages), run when `gate` is open.
    pub fn new<F, Fut>(service: &str, from: u32, name: &str, gate: Gate, forward: F) -> Result<Self, MigrateError>
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        validate_name("service name", service)?;
        validate_name("step name", name)?;
        validate_gate(&gate)?;
        if from == u32::MAX {
            return Err(MigrateError::InvalidName {
                what: "step",
                name: name.to_string(),
                reason: "its version is the largest there is",
            });
        }
        Ok(ServiceStep {
            service: service.to_string(),
            from,
            name: name.to_string(),
            gate,
            forward: boxed(forward),
            reverse: None,
        })
    }

    /// Declares the reverse (`from + 1 -> from`); it must be idempotent too.
    pub fn with_reverse<F, Fut>(mut self, reverse: F) -> Self
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        self.reverse = Some(boxed(reverse));
        self
    }

    /// The service.
    pub fn service(&self) -> &str {
        &self.service
    }
    /// The version it starts from.
    pub fn from(&self) -> u32 {
        self.from
    }
    /// The version it leads to.
    pub fn to(&self) -> u32 {
        self.from + 1
    }
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its gate.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }
    /// Whether it has a reverse.
    pub fn has_reverse(&self) -> bool {
        self.reverse.is_some()
    }
    /// The step, for messages.
    pub fn describe(&self) -> StepRef {
        StepRef::Service { service: self.service.clone(), from: self.from, to: self.to(), name: self.name.clone() }
    }
}

/// The value of `formats/<service>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFormat {
    /// The service's format version.
    pub version: u32,
    /// When it was last written (ms since the Unix epoch).
    #[serde(default)]
    pub updated_ms: u64,
    /// The last steps committed, oldest first (bounded).
    #[serde(default)]
    pub history: Vec<StepRecord>,
    /// The last failure, until a step succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<StepFailure>,
}

/// Options of a [`ServiceRunner`].
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// The key root (ends with `/`), as the cluster's.
    pub root: String,
    /// TTL of the owner lease: how long after an owner crashes another node
    /// may take over. Kept alive every third of it while the owner runs.
    pub owner_ttl_s: i64,
    /// How many committed steps `formats/<service>` remembers.
    pub max_history: usize,
    /// While waiting for changes ([`ServiceRunner::run_on_changes`]), how
    /// long to wait before retrying after an error.
    pub retry_ms: u64,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions { root: "rollgate/".into(), owner_ttl_s: 10, max_history: 32, retry_ms: 5_000 }
    }
}

/// What one run did to a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ServiceOutcome {
    /// Nothing to do: at the highest version the gates allow.
    UpToDate,
    /// Steps ran.
    Migrated {
        /// The version before.
        from: u32,
    },
    /// Another node owns the migrations; nothing was done.
    Busy {
        /// The owner.
        owner: String,
    },
    /// The store is at a version newer than this release knows; nothing was done.
    Ahead,
}

/// The report of one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceReport {
    /// The service.
    pub service: String,
    /// What happened.
    pub outcome: ServiceOutcome,
    /// The version after the run.
    pub version: u32,
    /// What holds the next step back, if anything.
    pub blocked: Option<(u32, Gate)>,
    /// The steps this run committed.
    pub steps: Vec<StepRecord>,
}

/// The report of [`ServiceRunner::disable_flag`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DisableReport {
    /// The flag.
    pub flag: String,
    /// Per service touched: the reverse steps committed and the version after.
    pub services: Vec<ServiceReport>,
    /// The node-local reverse migrations, when a local runner was given.
    pub tables: Option<LocalReport>,
}

/// The owner key held by this runner.
struct Ownership {
    store: Arc<dyn MetaStore>,
    key: String,
    lease: LeaseId,
    create_revision: Revision,
    lost: Arc<AtomicBool>,
    keepalive: JoinHandle<()>,
}

impl Ownership {
    async fn release(self) {
        self.keepalive.abort();
        let txn = Txn::new()
            .when([Compare::create_revision(&self.key, self.create_revision)])
            .and_then([TxnOp::delete(&self.key)]);
        if let Err(e) = self.store.txn(txn).await {
            tracing::warn!(key = %self.key, error = %e, "could not delete the migration owner key; it expires with its lease");
        }
        match self.store.lease_revoke(self.lease).await {
            Ok(()) | Err(StoreError::LeaseNotFound { .. }) => {}
            Err(e) => tracing::warn!(lease = self.lease, error = %e, "could not revoke the migration owner lease"),
        }
    }
}

impl Drop for Ownership {
    fn drop(&mut self) {
        // Dropped without release (the run was cancelled): the lease expires.
        self.keepalive.abort();
    }
}

/// Runs service steps on one node; any number of nodes may run one, the
/// owner key makes sure only one runs steps at a time.
pub struct ServiceRunner {
    migrations: Arc<Migrations>,
    store: Arc<dyn MetaStore>,
    gates: Arc<dyn Gates>,
    node: String,
    options: ServiceOptions,
    keys: MigrateKeys,
}

impl fmt::Debug for ServiceRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceRunner").field("node", &self.node).field("store", &self.store.describe()).finish()
    }
}

enum Acquired {
    Owner(Ownership),
    Busy(String),
}

impl ServiceRunner {
    /// A runner for node `node`.
    pub fn new(
        migrations: Arc<Migrations>,
        store: Arc<dyn MetaStore>,
        gates: Arc<dyn Gates>,
        node: &str,
        options: ServiceOptions,
    ) -> Result<ServiceRunner, MigrateError> {
        validate_node(node)?;
        let keys = MigrateKeys::new(options.root.clone());
        Ok(ServiceRunner { migrations, store, gates, node: node.to_string(), options, keys })
    }

    /// The node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The key layout.
    pub fn keys(&self) -> &MigrateKeys {
        &self.keys
    }

    /// Reads a service's format record (absent: version 0) and its mod
    /// revision (0 when absent). A record that does not decode is an error
    /// naming the key.
    pub async fn read_format(&self, service: &str) -> Result<(ServiceFormat, Revision), MigrateError> {
        validate_name("service name", service)?;
        let key = self.keys.format(service);
        let what = || format!("reading the format version of service `{service}`");
        match self.store.get(&key).await.map_err(store_err(what()))? {
            None => Ok((ServiceFormat::default(), 0)),
            Some(kv) => {
                let format: ServiceFormat = decode_json(&key, &kv.value).map_err(store_err(what()))?;
                Ok((format, kv.mod_revision))
            }
        }
    }

    /// Creates a fresh cluster's format record at the highest version the
    /// gates allow, with no step run. When the record exists, returns its
    /// version and changes nothing.
    pub async fn create_fresh(&self, service: &str) -> Result<u32, MigrateError> {
        validate_name("service name", service)?;
        let key = self.keys.format(service);
        let allowed = self.migrations.allowed(service, &*self.gates);
        let value = ServiceFormat { version: allowed, updated_ms: now_ms(), history: Vec::new(), failure: None };
        let what = || format!("creating the format version of service `{service}`");
        let bytes = encode_json(&key, &value).map_err(store_err(what()))?;
        let txn = Txn::new().when([Compare::absent(&key)]).and_then([TxnOp::put(&key, bytes)]);
        let resp = self.store.txn(txn).await.map_err(store_err(what()))?;
        if resp.succeeded {
            tracing::info!(service, version = allowed, node = %self.node, "fresh service format created");
            return Ok(allowed);
        }
        Ok(self.read_format(service).await?.0.version)
    }

    /// Runs every registered service once: plans, and when there is work,
    /// takes the owner key and runs the steps the gates allow. Call again
    /// when gates change, or use [`run_on_changes`](Self::run_on_changes).
    pub async fn run_once(&self) -> Result<Vec<ServiceReport>, MigrateError> {
        let mut reports = Vec::new();
        for service in self.migrations.services() {
            reports.push(self.run_service_once(service).await?);
        }
        Ok(reports)
    }

    /// Runs one service once (see [`run_once`](Self::run_once)).
    pub async fn run_service_once(&self, service: &str) -> Result<ServiceReport, MigrateError> {
        let (format, _) = self.read_format(service).await?;
        let plan = self.migrations.plan(service, format.version, &*self.gates);
        if let Some(report) = self.nothing_to_do(service, &plan) {
            return Ok(report);
        }
        let own = match self.acquire(service).await? {
            Acquired::Owner(own) => own,
            Acquired::Busy(owner) => {
                return Ok(ServiceReport {
                    service: service.to_string(),
                    outcome: ServiceOutcome::Busy { owner },
                    version: format.version,
                    blocked: plan.blocked,
                    steps: Vec::new(),
                });
            }
        };
        let result = self.run_forward(service, &own).await;
        own.release().await;
        let (version, blocked, steps) = result?;
        let outcome =
            if steps.is_empty() { ServiceOutcome::UpToDate } else { ServiceOutcome::Migrated { from: format.version } };
        Ok(ServiceReport { service: service.to_string(), outcome, version, blocked, steps })
    }

    fn nothing_to_do(&self, service: &str, plan: &Plan) -> Option<ServiceReport> {
        let outcome = if plan.ahead() {
            ServiceOutcome::Ahead
        } else if !plan.has_work() {
            ServiceOutcome::UpToDate
        } else {
            return None;
        };
        Some(ServiceReport {
            service: service.to_string(),
            outcome,
            version: plan.current,
            blocked: plan.blocked.clone(),
            steps: Vec::new(),
        })
    }

    /// Runs [`run_once`](Self::run_once), then again after every change of
    /// `changes` (e.g. a gate change notification), until its sender is
    /// dropped. While another node owns a service's migrations, also retries
    /// when an owner key goes away; after an error, retries after
    /// [`ServiceOptions::retry_ms`].
    pub async fn run_on_changes<T: Send + Sync>(&self, mut changes: watch::Receiver<T>) -> Result<(), MigrateError> {
        loop {
            changes.borrow_and_update();
            let retry = match self.run_once().await {
                Ok(reports) => {
                    if reports.iter().any(|r| matches!(r.outcome, ServiceOutcome::Busy { .. })) {
                        Some(None)
                    } else {
                        None
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %self.node, error = %e, "service migrations failed; will retry");
                    Some(Some(Duration::from_millis(self.options.retry_ms)))
                }
            };
            let owners_gone = async {
                match retry {
                    None => futures::future::pending::<()>().await,
                    Some(None) => self.wait_for_an_owner_to_go().await,
                    Some(Some(delay)) => tokio::time::sleep(delay).await,
                }
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return Ok(()) },
                () = owners_gone => {}
            }
        }
    }

    /// Returns when some owner key is deleted (or at once when there is none).
    async fn wait_for_an_owner_to_go(&self) {
        let prefix = self.keys.owners_prefix();
        let Ok(listing) = self.store.list(&prefix).await else { return };
        if listing.kvs.is_empty() {
            return;
        }
        let Ok(mut watch) = self.store.watch(&prefix, Some(listing.revision + 1)).await else { return };
        while let Some(batch) = watch.next().await {
            match batch {
                Ok(b) if b.events.iter().any(|e| e.kind == EventKind::Delete) => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    async fn acquire(&self, service: &str) -> Result<Acquired, MigrateError> {
        let key = self.keys.owner(service);
        let what = || format!("taking the migration owner key of service `{service}`");
        let (lease, granted) = self.store.lease_grant(self.options.owner_ttl_s).await.map_err(store_err(what()))?;
        let record = OwnerRecord { node: self.node.clone(), since_ms: now_ms(), lease };
        let value = encode_json(&key, &record).map_err(store_err(what()))?;
        let txn = Txn::new()
            .when([Compare::absent(&key)])
            .and_then([TxnOp::put_with_lease(&key, value, lease)])
            .or_else([TxnOp::get(&key)]);
        let resp = match self.store.txn(txn).await {
            Ok(resp) => resp,
            Err(e) => {
                let _ = self.store.lease_revoke(lease).await;
                return Err(store_err(what())(e));
            }
        };
        if !resp.succeeded {
            let _ = self.store.lease_revoke(lease).await;
            let owner = match resp.responses.first() {
                Some(OpResponse::Get(Some(kv))) => {
                    decode_json::<OwnerRecord>(&key, &kv.value).map_err(store_err(what()))?.node
                }
                // Gone in between: report busy anyway; the next run takes it.
                _ => "(another node)".to_string(),
            };
            return Ok(Acquired::Busy(owner));
        }
        tracing::info!(service, node = %self.node, lease, "took the migration owner key");
        let lost = Arc::new(AtomicBool::new(false));
        let keepalive = tokio::spawn(keep_alive(self.store.clone(), lease, granted, lost.clone(), key.clone()));
        Ok(Acquired::Owner(Ownership {
            store: self.store.clone(),
            key,
            lease,
            create_revision: resp.revision,
            lost,
            keepalive,
        }))
    }

    async fn run_forward(
        &self,
        service: &str,
        own: &Ownership,
    ) -> Result<(u32, Option<(u32, Gate)>, Vec<StepRecord>), MigrateError> {
        let steps = self.migrations.steps(service);
        let mut ran = Vec::new();
        // Each pass commits one step or returns: bounded by the step count.
        for _ in 0..=steps.len() {
            let (format, revision) = self.read_format(service).await?;
            let plan = self.migrations.plan(service, format.version, &*self.gates);
            if !plan.has_work() {
                return Ok((format.version, plan.blocked, ran));
            }
            let step = &steps[format.version as usize];
            ran.push(self.run_step(step, Direction::Forward, format, revision, own).await?);
        }
        let (format, _) = self.read_format(service).await?;
        let plan = self.migrations.plan(service, format.version, &*self.gates);
        Ok((format.version, plan.blocked, ran))
    }

    async fn run_step(
        &self,
        step: &ServiceStep,
        direction: Direction,
        mut format: ServiceFormat,
        revision: Revision,
        own: &Ownership,
    ) -> Result<StepRecord, MigrateError> {
        let service = step.service();
        if own.lost.load(Ordering::SeqCst) {
            return Err(MigrateError::LostOwnership { service: service.to_string(), node: self.node.clone() });
        }
        let (from, to, action) = match direction {
            Direction::Forward => (step.from(), step.to(), &step.forward),
            Direction::Reverse => match &step.reverse {
                Some(reverse) => (step.to(), step.from(), reverse),
                None => {
                    return Err(MigrateError::Irreversible {
                        flag: step.gate().flag_name().unwrap_or_default().to_string(),
                        step: step.describe().to_string(),
                    });
                }
            },
        };
        // Every write the step makes is fenced on the owner key (h): once
        // another node took the ownership over, a late write is refused.
        let fence = Compare::create_revision(&own.key, own.create_revision);
        let ctx = StepContext {
            store: Arc::new(FencedStore::new(self.store.clone(), fence)),
            service: service.to_string(),
            from,
            to,
            direction,
            node: self.node.clone(),
            lost: own.lost.clone(),
        };
        let started_ms = now_ms();
        tracing::info!(service, from, to, step = step.name(), %direction, node = %self.node, "running service step");
        if let Err(e) = action(ctx).await {
            if !self.still_owns(own).await? {
                tracing::warn!(service, from, to, step = step.name(), error = %e, "service step ended after the ownership moved");
                return Err(MigrateError::LostOwnership { service: service.to_string(), node: self.node.clone() });
            }
            let failure = StepFailure {
                from,
                to,
                step: step.name().to_string(),
                direction,
                node: self.node.clone(),
                error: e.0.clone(),
                at_ms: now_ms(),
            };
            tracing::warn!(service, from, to, step = step.name(), error = %e, "service step failed");
            format.failure = Some(failure);
            format.updated_ms = now_ms();
            // Best effort: the failure is for the status; the version stays.
            if let Err(store_error) = self.commit(service, &format, revision, own).await {
                tracing::warn!(service, error = %store_error, "could not record the step failure");
            }
            return Err(MigrateError::StepFailed {
                service: service.to_string(),
                from,
                to,
                step: step.name().to_string(),
                direction,
                node: self.node.clone(),
                reason: e.0,
            });
        }
        let record = StepRecord {
            from,
            to,
            step: step.name().to_string(),
            direction,
            node: self.node.clone(),
            started_ms,
            finished_ms: now_ms(),
        };
        format.version = to;
        format.failure = None;
        format.updated_ms = record.finished_ms;
        format.history.push(record.clone());
        let excess = format.history.len().saturating_sub(self.options.max_history);
        format.history.drain(..excess);
        if !self.commit(service, &format, revision, own).await? {
            if !self.still_owns(own).await? {
                return Err(MigrateError::LostOwnership { service: service.to_string(), node: self.node.clone() });
            }
            return Err(MigrateError::FormatConflict {
                service: service.to_string(),
                node: self.node.clone(),
                expected: from,
            });
        }
        tracing::info!(service, from, to, step = step.name(), node = %self.node, "service step committed");
        Ok(record)
    }

    /// Whether the owner key is still the one this runner took.
    async fn still_owns(&self, own: &Ownership) -> Result<bool, MigrateError> {
        let owner = self.store.get(&own.key).await.map_err(store_err("reading the migration owner key"))?;
        Ok(owner.is_some_and(|kv| kv.create_revision == own.create_revision))
    }

    /// Writes the format record guarded on its mod revision and on the owner
    /// key still being ours. Returns whether the guards held.
    async fn commit(
        &self,
        service: &str,
        format: &ServiceFormat,
        revision: Revision,
        own: &Ownership,
    ) -> Result<bool, MigrateError> {
        let key = self.keys.format(service);
        let what = || format!("committing the format version of service `{service}`");
        let bytes = encode_json(&key, format).map_err(store_err(what()))?;
        let txn = Txn::new()
            .when([Compare::mod_revision(&key, revision), Compare::create_revision(&own.key, own.create_revision)])
            .and_then([TxnOp::put(&key, bytes)]);
        Ok(self.store.txn(txn).await.map_err(store_err(what()))?.succeeded)
    }

    /// Runs the reverse steps for `flag` (which must no longer be enabled, so
    /// writers produce the old format): every service whose format passed a
    /// step gated by `flag` is brought back below it, one reverse step at a
    /// time with a compare-and-swap; then, when `local` is given, this node's
    /// table migrations gated by `flag` are converted back. Call it on every
    /// node (each has its own local data); the service part runs once.
    pub async fn disable_flag(&self, flag: &str, local: Option<&LocalRunner>) -> Result<DisableReport, MigrateError> {
        validate_name("flag name", flag)?;
        if self.gates.flag_enabled(flag) {
            return Err(MigrateError::FlagStillEnabled { flag: flag.to_string() });
        }
        let gate = Gate::Flag(flag.to_string());
        let mut report = DisableReport { flag: flag.to_string(), services: Vec::new(), tables: None };
        for service in self.migrations.services() {
            let steps = self.migrations.steps(service);
            let Some(first) = steps.iter().position(|s| *s.gate() == gate) else { continue };
            let (format, _) = self.read_format(service).await?;
            if format.version as usize <= first {
                continue;
            }
            if format.version as usize > steps.len() {
                return Err(MigrateError::Irreversible {
                    flag: flag.to_string(),
                    step: format!(
                        "service `{service}` is at format {}, past the steps this release knows (up to {})",
                        format.version,
                        steps.len()
                    ),
                });
            }
            if let Some(step) = steps[first..format.version as usize].iter().find(|s| !s.has_reverse()) {
                return Err(MigrateError::Irreversible { flag: flag.to_string(), step: step.describe().to_string() });
            }
            let own = match self.acquire(service).await? {
                Acquired::Owner(own) => own,
                Acquired::Busy(owner) => return Err(MigrateError::Busy { service: service.to_string(), owner }),
            };
            let result = self.run_reverse(service, flag, first as u32, &own).await;
            own.release().await;
            let (version, ran) = result?;
            report.services.push(ServiceReport {
                service: service.to_string(),
                outcome: if ran.is_empty() {
                    ServiceOutcome::UpToDate
                } else {
                    ServiceOutcome::Migrated { from: format.version }
                },
                version,
                blocked: Some((first as u32, gate.clone())),
                steps: ran,
            });
        }
        if let Some(local) = local {
            report.tables = Some(local.reverse_flag(flag, &*self.gates).await?);
        }
        Ok(report)
    }

    async fn run_reverse(
        &self,
        service: &str,
        flag: &str,
        down_to: u32,
        own: &Ownership,
    ) -> Result<(u32, Vec<StepRecord>), MigrateError> {
        let steps = self.migrations.steps(service);
        let mut ran = Vec::new();
        for _ in 0..=steps.len() {
            let (format, revision) = self.read_format(service).await?;
            if format.version <= down_to {
                return Ok((format.version, ran));
            }
            let Some(step) = steps.get(format.version as usize - 1) else {
                return Err(MigrateError::Irreversible {
                    flag: flag.to_string(),
                    step: format!("service `{service}` format {}", format.version),
                });
            };
            ran.push(self.run_step(step, Direction::Reverse, format, revision, own).await?);
        }
        Ok((self.read_format(service).await?.0.version, ran))
    }
}

async fn keep_alive(store: Arc<dyn MetaStore>, lease: LeaseId, ttl_s: i64, lost: Arc<AtomicBool>, key: String) {
    let period = Duration::from_millis((ttl_s.max(1) as u64 * 1000) / 3);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store.lease_keep_alive(lease).await {
            Ok(_) => {}
            Err(StoreError::LeaseNotFound { .. }) => {
                tracing::warn!(%key, lease, "the migration owner lease expired; ownership lost");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => tracing::warn!(%key, lease, error = %e, "could not refresh the migration owner lease; retrying"),
        }
    }
}

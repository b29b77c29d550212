//! Flag declarations: what a release says about each flag it supports.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use rollgate_api::flags::Stability;

use crate::cluster::{Cluster, FlagInfo};

/// Who declared a flag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// The service itself.
    Service,
    /// A plugin (by name).
    Plugin(String),
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provider::Service => f.write_str("service"),
            Provider::Plugin(p) => write!(f, "plugin:{p}"),
        }
    }
}

/// What an enable step or a disable hook gets.
#[derive(Clone, Debug)]
pub struct StepContext {
    /// The flag.
    pub flag: String,
    /// The node running the step.
    pub node_id: String,
    /// The cluster (and through it, the metadata store).
    pub cluster: Cluster,
}

/// The future an enable step returns: `Err(reason)` fails (and rolls back)
/// the enabling.
pub type StepFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// An enable step or disable hook. Must be idempotent: it may run more than
/// once (a crash, a resume by another node, every boot for per-node steps).
pub type Step = Arc<dyn Fn(StepContext) -> StepFuture + Send + Sync>;

fn step<F, Fut>(f: F) -> Step
where
    F: Fn(StepContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

/// One feature flag, as a release declares it.
///
/// ```
/// use rollgate::flags::FlagDecl;
/// let ttl = FlagDecl::new("ttl", "values may expire (PUT ?ttl_s=N)")
///     .introduced_in("1.1")
///     .doc_url("https://example.invalid/docs/ttl")
///     .on_enable_cluster(|ctx| async move {
///         // e.g. create what TTL data needs, once for the whole cluster; idempotent
///         let _ = ctx.cluster.cluster_id();
///         Ok(())
///     });
/// # let _ = ttl;
/// ```
#[derive(Clone)]
pub struct FlagDecl {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) stability: Stability,
    pub(crate) introduced_in: String,
    pub(crate) depends_on: Vec<String>,
    pub(crate) doc_url: Option<String>,
    pub(crate) provider: Provider,
    pub(crate) reversible: bool,
    pub(crate) on_enable_cluster: Option<Step>,
    pub(crate) on_enable_node: Option<Step>,
    pub(crate) before_disable: Option<Step>,
}

impl fmt::Debug for FlagDecl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagDecl")
            .field("name", &self.name)
            .field("stability", &self.stability)
            .field("introduced_in", &self.introduced_in)
            .field("depends_on", &self.depends_on)
            .field("provider", &self.provider)
            .field("reversible", &self.reversible)
            .field("on_enable_cluster", &self.on_enable_cluster.is_some())
            .field("on_enable_node", &self.on_enable_node.is_some())
            .field("before_disable", &self.before_disable.is_some())
            .finish()
    }
}

impl FlagDecl {
    /// A stable, irreversible flag of the service. Set the release that
    /// introduced it with [`FlagDecl::introduced_in`] (required).
    pub fn new(name: &str, description: &str) -> FlagDecl {
        FlagDecl {
            name: name.to_string(),
            description: description.to_string(),
            stability: Stability::Stable,
            introduced_in: String::new(),
            depends_on: Vec::new(),
            doc_url: None,
            provider: Provider::Service,
            reversible: false,
            on_enable_cluster: None,
            on_enable_node: None,
            before_disable: None,
        }
    }
    /// Sets the stability.
    pub fn stability(mut self, stability: Stability) -> FlagDecl {
        self.stability = stability;
        self
    }
    /// Marks it required.
    pub fn required(self) -> FlagDecl {
        self.stability(Stability::Required)
    }
    /// Marks it experimental.
    pub fn experimental(self) -> FlagDecl {
        self.stability(Stability::Experimental)
    }
    /// The first release that knows the flag.
    pub fn introduced_in(mut self, release: &str) -> FlagDecl {
        self.introduced_in = release.to_string();
        self
    }
    /// Flags that must be enabled first.
    pub fn depends_on<I: IntoIterator<Item = S>, S: Into<String>>(mut self, flags: I) -> FlagDecl {
        self.depends_on.extend(flags.into_iter().map(Into::into));
        self
    }
    /// Where the flag is documented.
    pub fn doc_url(mut self, url: &str) -> FlagDecl {
        self.doc_url = Some(url.to_string());
        self
    }
    /// Declared by a plugin.
    pub fn plugin(mut self, plugin: &str) -> FlagDecl {
        self.provider = Provider::Plugin(plugin.to_string());
        self
    }
    /// May be disabled again (`rollgate flags disable`); add a
    /// [`FlagDecl::before_disable`] hook when data must be converted back.
    pub fn reversible(mut self) -> FlagDecl {
        self.reversible = true;
        self
    }
    /// A step run once for the whole cluster (on the enabling node) before
    /// the flag becomes enabled. Idempotent.
    pub fn on_enable_cluster<F, Fut>(mut self, f: F) -> FlagDecl
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.on_enable_cluster = Some(step(f));
        self
    }
    /// A step every member runs on itself before the flag becomes enabled
    /// (every member must then be running to enable it), and every node runs
    /// again at boot while the flag is enabled. Idempotent.
    pub fn on_enable_node<F, Fut>(mut self, f: F) -> FlagDecl
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.on_enable_node = Some(step(f));
        self
    }
    /// A hook run (on the disabling node) after nodes stopped producing data
    /// that needs the flag and before it is disabled, e.g. reverse
    /// migrations. Idempotent. Only for reversible flags.
    pub fn before_disable<F, Fut>(mut self, f: F) -> FlagDecl
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.before_disable = Some(step(f));
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The description.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// The stability.
    pub fn get_stability(&self) -> Stability {
        self.stability
    }
    /// The release that introduced it.
    pub fn get_introduced_in(&self) -> &str {
        &self.introduced_in
    }
    /// Its dependencies.
    pub fn get_depends_on(&self) -> &[String] {
        &self.depends_on
    }
    /// Its documentation.
    pub fn get_doc_url(&self) -> Option<&str> {
        self.doc_url.as_deref()
    }
    /// Who declared it.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }
    /// Whether it may be disabled.
    pub fn is_reversible(&self) -> bool {
        self.reversible
    }
    /// Whether every node runs a step of its own to enable it.
    pub fn has_node_step(&self) -> bool {
        self.on_enable_node.is_some()
    }

    /// What the flag's stored record carries about it.
    pub fn info(&self) -> FlagInfo {
        FlagInfo {
            description: self.description.clone(),
            introduced_in: self.introduced_in.clone(),
            stability: self.stability.as_str().to_string(),
            depends_on: self.depends_on.clone(),
            doc_url: self.doc_url.clone(),
            provider: self.provider.to_string(),
            reversible: self.reversible,
        }
    }
}

/// A plugin-like component and the flags it needs enabled to run (see
/// [`crate::node::Node::check_plugin`]). A plugin declares its own flags
/// with [`FlagDecl::plugin`] in the node's registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginSpec {
    /// The plugin's name.
    pub name: String,
    /// The flags it requires enabled.
    pub requires: Vec<String>,
}

impl PluginSpec {
    /// A plugin that requires `flags`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(name: &str, flags: I) -> PluginSpec {
        PluginSpec { name: name.to_string(), requires: flags.into_iter().map(Into::into).collect() }
    }
}

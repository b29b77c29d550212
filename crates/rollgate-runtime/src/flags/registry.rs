//! The registry of the flags a release supports: validated once at startup,
//! each flag with a dense [`FlagId`] for the hot path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::decl::{FlagDecl, Stability};
use crate::cluster::{MAX_FLAG_NAME_BYTES, validate_flag_name};

/// Most flags one registry may hold (a fresh cluster enables its stable
/// flags in the join transaction, whose size the store bounds).
pub const MAX_FLAGS: usize = 100;
/// Longest description, release, URL or plugin name in a declaration.
pub const MAX_TEXT_BYTES: usize = 1024;

/// How many 64-bit words hold the bits of [`MAX_FLAGS`] flags: a power of
/// two, so that masking a word index with `MAX_WORDS - 1` proves it in
/// range and the hot path needs no bounds check.
pub const MAX_WORDS: usize = MAX_FLAGS.div_ceil(64).next_power_of_two();

/// A flag's dense index in its registry, given in declaration order.
///
/// Four bytes: the hot path loads the index once and derives the word and
/// the bit with a shift and a mask (no second load for a precomputed mask,
/// which measured almost twice a plain `AtomicBool` load).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlagId {
    index: u32,
}

impl FlagId {
    pub(crate) const fn new(index: usize) -> FlagId {
        FlagId { index: index as u32 }
    }
    /// The index.
    pub fn index(self) -> usize {
        self.index as usize
    }
    /// The word of the flag's bit (below [`MAX_WORDS`] for a registry id).
    #[inline(always)]
    pub(crate) fn word(self) -> usize {
        (self.index >> 6) as usize
    }
    /// The position of the flag's bit in its word.
    #[inline(always)]
    pub(crate) fn bit(self) -> u32 {
        self.index & 63
    }
    /// The flag's bit in its word, as a mask.
    #[inline(always)]
    pub(crate) fn mask(self) -> u64 {
        1u64 << self.bit()
    }
}

/// One thing wrong with a set of declarations.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryProblem {
    /// A name outside `[a-z0-9_]{1,64}`.
    #[error("flag name {name:?} is invalid: use 1 to {MAX_FLAG_NAME_BYTES} of a-z, 0-9 and _")]
    BadName {
        /// The name.
        name: String,
    },
    /// Declared twice.
    #[error("flag `{name}` is declared twice")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// Depends on a flag the registry lacks.
    #[error("flag `{flag}` depends on `{dependency}`, which is not declared")]
    UnknownDependency {
        /// The flag.
        flag: String,
        /// The missing dependency.
        dependency: String,
    },
    /// A dependency cycle.
    #[error("flags depend on each other in a cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The cycle, first flag repeated at the end.
        cycle: Vec<String>,
    },
    /// A stable or required flag depending on a less stable one.
    #[error(
        "{stability} flag `{flag}` depends on {dependency_stability} flag `{dependency}`: a flag may only depend on flags at least as stable"
    )]
    LessStableDependency {
        /// The flag.
        flag: String,
        /// Its stability.
        stability: Stability,
        /// The dependency.
        dependency: String,
        /// The dependency's stability.
        dependency_stability: Stability,
    },
    /// No introducing release.
    #[error("flag `{flag}` does not say which release introduced it: call .introduced_in(\"R\")")]
    MissingRelease {
        /// The flag.
        flag: String,
    },
    /// A disable hook on an irreversible flag.
    #[error("flag `{flag}` has a disable hook but is not reversible: mark it .reversible() or drop the hook")]
    HookWithoutReversible {
        /// The flag.
        flag: String,
    },
    /// A text field over the limit.
    #[error("flag `{flag}`: the {what} is longer than {MAX_TEXT_BYTES} bytes")]
    TooLong {
        /// The flag.
        flag: String,
        /// Which field.
        what: &'static str,
    },
    /// A flag both declared and removed.
    #[error("flag `{flag}` is both declared and removed: a release either keeps a flag's code or removes it")]
    DeclaredAndRemoved {
        /// The flag.
        flag: String,
    },
    /// Too many flags.
    #[error("{count} flags declared; a registry holds at most {MAX_FLAGS}")]
    TooMany {
        /// How many.
        count: usize,
    },
}

/// Declarations that do not form a valid registry; lists every problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid feature flag declarations for release {release}: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct RegistryError {
    /// The release being declared.
    pub release: String,
    /// What is wrong.
    pub problems: Vec<RegistryProblem>,
}

/// Collects declarations; [`RegistryBuilder::build`] validates them.
#[derive(Debug)]
pub struct RegistryBuilder {
    release: String,
    decls: Vec<FlagDecl>,
    removed: BTreeSet<String>,
    upgrades_from: Option<String>,
}

impl RegistryBuilder {
    /// Declares that this release removed flag `name`: it no longer carries
    /// the flag's code and assumes it enabled, as every release that may
    /// upgrade to this one requires it ([`check_release_table`] checks
    /// that). Later releases keep it removed: nodes still meet its enabled
    /// record, and a release must know every enabled flag.
    ///
    /// [`check_release_table`]: super::check_release_table
    pub fn removed(mut self, name: &str) -> RegistryBuilder {
        self.removed.insert(name.to_string());
        self
    }

    /// The oldest release that may upgrade straight to this one (default:
    /// the release before it in the release table).
    pub fn upgrades_from(mut self, release: &str) -> RegistryBuilder {
        self.upgrades_from = Some(release.to_string());
        self
    }

    /// Declares a flag; its [`FlagId`] is its position in declaration order.
    pub fn declare(&mut self, decl: FlagDecl) -> FlagId {
        self.decls.push(decl);
        FlagId::new(self.decls.len() - 1)
    }

    /// Declares a flag (builder style).
    pub fn with(mut self, decl: FlagDecl) -> RegistryBuilder {
        self.declare(decl);
        self
    }

    /// Validates every declaration: names, duplicates, unknown dependencies,
    /// cycles, stability of dependencies, introducing releases, hooks.
    pub fn build(self) -> Result<FlagRegistry, RegistryError> {
        let mut problems = Vec::new();
        if self.decls.len() > MAX_FLAGS {
            problems.push(RegistryProblem::TooMany { count: self.decls.len() });
        }
        let mut by_name = HashMap::new();
        for (i, d) in self.decls.iter().enumerate() {
            if validate_flag_name(&d.name).is_err() {
                problems.push(RegistryProblem::BadName { name: rollgate_util::shorten(&d.name) });
                continue;
            }
            if by_name.insert(d.name.clone(), FlagId::new(i)).is_some() {
                problems.push(RegistryProblem::Duplicate { name: d.name.clone() });
            }
            if d.introduced_in.is_empty() {
                problems.push(RegistryProblem::MissingRelease { flag: d.name.clone() });
            }
            if d.before_disable.is_some() && !d.reversible {
                problems.push(RegistryProblem::HookWithoutReversible { flag: d.name.clone() });
            }
            let provider = d.provider.to_string();
            for (what, text) in [
                ("description", d.description.as_str()),
                ("release", d.introduced_in.as_str()),
                ("doc URL", d.doc_url.as_deref().unwrap_or("")),
                ("provider", provider.as_str()),
            ] {
                if text.len() > MAX_TEXT_BYTES {
                    problems.push(RegistryProblem::TooLong { flag: d.name.clone(), what });
                }
            }
        }
        for name in &self.removed {
            if validate_flag_name(name).is_err() {
                problems.push(RegistryProblem::BadName { name: rollgate_util::shorten(name) });
            } else if by_name.contains_key(name) {
                problems.push(RegistryProblem::DeclaredAndRemoved { flag: name.clone() });
            }
        }
        for d in &self.decls {
            for dep in &d.depends_on {
                match by_name.get(dep) {
                    // A removed flag is enabled on every cluster this release runs in.
                    None if self.removed.contains(dep) => {}
                    None => problems
                        .push(RegistryProblem::UnknownDependency { flag: d.name.clone(), dependency: dep.clone() }),
                    Some(id) => {
                        let dep_stability = self.decls[id.index()].stability;
                        if dep_stability > d.stability {
                            problems.push(RegistryProblem::LessStableDependency {
                                flag: d.name.clone(),
                                stability: d.stability,
                                dependency: dep.clone(),
                                dependency_stability: dep_stability,
                            });
                        }
                    }
                }
            }
        }
        let topo = match topological_order(&self.decls, &by_name) {
            Ok(order) => order,
            Err(cycle) => {
                problems.push(RegistryProblem::Cycle { cycle });
                Vec::new()
            }
        };
        if !problems.is_empty() {
            return Err(RegistryError { release: self.release, problems });
        }
        Ok(FlagRegistry {
            release: self.release,
            decls: self.decls,
            by_name,
            topo,
            removed: self.removed,
            upgrades_from: self.upgrades_from,
        })
    }
}

/// Orders flags so that dependencies come first (ties: declaration order);
/// a cycle is returned as `a -> b -> a`. Unknown dependencies are ignored
/// here (reported separately).
fn topological_order(decls: &[FlagDecl], by_name: &HashMap<String, FlagId>) -> Result<Vec<FlagId>, Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; decls.len()];
    let mut order = Vec::with_capacity(decls.len());
    // Iterative depth-first search (no recursion on declared data).
    for start in 0..decls.len() {
        if marks[start] != Mark::New || by_name.get(&decls[start].name) != Some(&FlagId::new(start)) {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Active;
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            let deps = &decls[node].depends_on;
            if next < deps.len() {
                top.1 += 1;
                let dep = &deps[next];
                let Some(d) = by_name.get(dep).map(|id| id.index()) else { continue };
                match marks[d] {
                    Mark::New => {
                        marks[d] = Mark::Active;
                        stack.push((d, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|(n, _)| *n == d).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack[from..].iter().map(|(n, _)| decls[*n].name.clone()).collect();
                        cycle.push(decls[d].name.clone());
                        return Err(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                order.push(FlagId::new(node));
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// The flags a release supports, validated.
#[derive(Clone)]
pub struct FlagRegistry {
    release: String,
    decls: Vec<FlagDecl>,
    by_name: HashMap<String, FlagId>,
    topo: Vec<FlagId>,
    removed: BTreeSet<String>,
    upgrades_from: Option<String>,
}

impl fmt::Debug for FlagRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagRegistry").field("release", &self.release).field("flags", &self.decls).finish()
    }
}

impl FlagRegistry {
    /// Starts the declarations of `release`.
    pub fn builder(release: &str) -> RegistryBuilder {
        RegistryBuilder {
            release: release.to_string(),
            decls: Vec::new(),
            removed: BTreeSet::new(),
            upgrades_from: None,
        }
    }

    /// A registry without flags.
    pub fn empty(release: &str) -> FlagRegistry {
        FlagRegistry {
            release: release.to_string(),
            decls: Vec::new(),
            by_name: HashMap::new(),
            topo: Vec::new(),
            removed: BTreeSet::new(),
            upgrades_from: None,
        }
    }

    /// The release these declarations belong to.
    pub fn release(&self) -> &str {
        &self.release
    }
    /// How many flags.
    pub fn len(&self) -> usize {
        self.decls.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.decls.is_empty()
    }
    /// The id of a flag.
    pub fn id(&self, name: &str) -> Option<FlagId> {
        self.by_name.get(name).copied()
    }
    /// A flag's declaration by name.
    pub fn get(&self, name: &str) -> Option<&FlagDecl> {
        self.id(name).map(|id| &self.decls[id.index()])
    }
    /// A flag's declaration by id.
    pub fn decl(&self, id: FlagId) -> Option<&FlagDecl> {
        self.decls.get(id.index())
    }
    /// Whether the release supports the flag.
    pub fn supports(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
    /// The declarations, in declaration (id) order.
    pub fn iter(&self) -> impl Iterator<Item = (FlagId, &FlagDecl)> {
        self.decls.iter().enumerate().map(|(i, d)| (FlagId::new(i), d))
    }
    /// The declarations, dependencies first.
    pub fn topological(&self) -> impl Iterator<Item = &FlagDecl> {
        self.topo.iter().map(|id| &self.decls[id.index()])
    }
    /// The position of a flag in dependency order.
    pub(crate) fn topo_rank(&self) -> HashMap<&str, usize> {
        self.topo.iter().enumerate().map(|(rank, id)| (self.decls[id.index()].name.as_str(), rank)).collect()
    }
    /// The names of the supported (declared) flags.
    pub fn names(&self) -> BTreeSet<String> {
        self.decls.iter().map(|d| d.name.clone()).collect()
    }
    /// The flags this release removed (assumed enabled, no code left).
    pub fn removed(&self) -> &BTreeSet<String> {
        &self.removed
    }
    /// The flags this release knows: declared or removed. An enabled flag
    /// outside this set refuses the boot (I2).
    pub fn known(&self) -> BTreeSet<String> {
        self.names().into_iter().chain(self.removed.iter().cloned()).collect()
    }
    /// The flags for which this release runs a per-node enable step.
    pub fn node_step_flags(&self) -> BTreeSet<String> {
        self.decls.iter().filter(|d| d.has_node_step()).map(|d| d.name.clone()).collect()
    }
    /// A flag and its dependencies, transitively, dependencies first.
    pub fn with_dependencies(&self, name: &str) -> Vec<String> {
        let mut wanted = BTreeSet::new();
        let mut stack = vec![name.to_string()];
        while let Some(n) = stack.pop() {
            if let Some(d) = self.get(&n)
                && wanted.insert(n.clone())
            {
                stack.extend(d.depends_on.iter().cloned());
            }
        }
        self.topological().filter(|d| wanted.contains(&d.name)).map(|d| d.name.clone()).collect()
    }

    /// This release's row of a release table.
    pub fn release_flags(&self) -> ReleaseFlags {
        ReleaseFlags {
            release: self.release.clone(),
            supported: self.names(),
            required: self
                .decls
                .iter()
                .filter(|d| d.stability == Stability::Required)
                .map(|d| d.name.clone())
                .collect(),
            introduced_in: self
                .decls
                .iter()
                .map(|d| (d.name.clone(), d.introduced_in.clone()))
                .collect::<BTreeMap<_, _>>(),
            removed: self.removed.clone(),
            upgrades_from: self.upgrades_from.clone(),
        }
    }
}

/// One release's flags.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseFlags {
    /// The release.
    pub release: String,
    /// The flags it supports.
    pub supported: BTreeSet<String>,
    /// The flags it requires enabled.
    pub required: BTreeSet<String>,
    /// The release each flag says introduced it.
    #[serde(default)]
    pub introduced_in: BTreeMap<String, String>,
    /// The flags it removed (assumed enabled; no code left).
    #[serde(default)]
    pub removed: BTreeSet<String>,
    /// The oldest release that may upgrade straight to it (none: the one before it).
    #[serde(default)]
    pub upgrades_from: Option<String>,
}

impl ReleaseFlags {
    /// The flags it knows: supported or removed.
    pub fn known(&self) -> BTreeSet<String> {
        self.supported.union(&self.removed).cloned().collect()
    }
}

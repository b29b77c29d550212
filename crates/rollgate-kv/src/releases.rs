//! rollgate-kv's releases, defined in code: what each one speaks, supports
//! and stores. A binary can run as any of them (`--release`), the way a newer
//! Kubernetes binary emulates an older version: it then advertises only that
//! release's protocol range, transport versions, feature flags, cluster
//! features, storage formats and plugins.
//!
//! | release | protocol | transport (min compatible) | flags | cluster features | `records` formats read | plugins |
//! |---|---|---|---|---|---|---|
//! | 1.0 | v1 | 1.0's id (1.0's) | - | - | 1..=1 | - |
//! | 1.1 | v1..=v2 | 1.1's id (1.0's) | `record_meta_v2`, `ttl` | - | 1..=3 | - |
//! | 1.2 | v1..=v3 (v1 deprecated) | 1.2's id (1.0's) | + `value_checksums` (experimental) | `kv.prefix_scan` | 1..=3 | `audit` |
//! | 2.0 | v2..=v4 | 2.0's id (1.2's) | `record_meta_v2` required | `kv.prefix_scan` assumed | 2..=3 | `audit` |
//!
//! - `record_meta_v2` (stable, reversible while `ttl` is disabled): records
//!   carry `meta@2` (writer node, release, clock) besides `meta@1`; enabling
//!   it migrates the `records` unit from format 1 to 2, disabling it
//!   converts the data back (see [`crate::migrations`]).
//! - `ttl` (stable, depends on `record_meta_v2`, irreversible): writes may
//!   carry `?ttl_s=N`; enabling it builds the expiry index (format 2 to 3,
//!   no way back).
//! - `value_checksums` (experimental, reversible): new records carry
//!   `checksum@1`, which reads verify.
//! - `kv.prefix_scan` (cluster feature): `GET /kv?prefix=P&limit=N` answers
//!   once every member publishes it; from then on the feature ratchet refuses
//!   a 1.0 or 1.1 node at join.
//! - the `audit` plugin (`--plugins audit`) starts once `record_meta_v2` is
//!   enabled.
//!
//! Release 1.2 marks protocol v1 deprecated (a link that speaks it logs a
//! warning and shows in `rollgate upgrade status`); 2.0 retires it, and
//! assumes 1.x's `kv.prefix_scan` instead of publishing it (every node a 2.0
//! node can talk to has it). Release 2.0 retires protocol v1 and raises its minimum compatible
//! transport version to 1.2's, so a 2.0 node and a 1.0 node refuse each
//! other at the handshake (naming what to upgrade) while 2.0 and 1.2
//! interoperate; it requires `record_meta_v2` (enabled by the first 2.0 node
//! when every member supports it) and reads only formats 2 and 3, so every
//! node goes through 1.1 or 1.2 with the flag enabled before 2.0.
//!
//! Release 2.0 adds **read levels** ([`Release::has_read_levels`]): a read
//! may carry the client's session token (`x-kv-after`, read-your-writes)
//! and ask for `consistency=linearizable`, which confirms with a majority
//! over protocol v4's quorum read engine. Older releases ignore both; the
//! client checks their answers itself (see [`crate::consistency`]).
//!
//! The transport ids come from `transport/releases.csv` (checked at compile
//! time: a release missing there fails the build). [`check_release_table`]
//! (a test) checks the flag rules over the whole table.
//!
//! A release name is for humans and logs; compatibility is decided by the
//! protocol range, the transport versions, the flags, the cluster features
//! and the format versions, never by comparing names.

use std::collections::BTreeMap;

use rollgate::features::{FeatureError, FeatureSet};
use rollgate::flags::{FlagDecl, FlagRegistry, PluginSpec, RegistryError, ReleaseTable, Stability, Step};
use rollgate::format::{FormatPolicy, FormatVersion};
use rollgate::version::{ProtocolRange, TransportVersion, TransportVersionSet};

use crate::transport_versions;

/// One feature flag of rollgate-kv, as the releases that support it declare it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagSpec {
    /// The name.
    pub name: &'static str,
    /// What enabling it changes.
    pub description: &'static str,
    /// The first release that supports it.
    pub introduced_in: &'static str,
    /// Flags that must be enabled first.
    pub depends_on: &'static [&'static str],
    /// Whether it may be disabled again.
    pub reversible: bool,
    /// Whether enabling it needs `--experimental`.
    pub experimental: bool,
}

/// Records carry `meta@2` (writer node, release, clock); migrates `records` to format 2.
pub const RECORD_META_V2: FlagSpec = FlagSpec {
    name: "record_meta_v2",
    description: "records carry meta@2 (writer node, release and clock) besides meta@1; migrates the records unit \
                  to format 2 (reversible while ttl is disabled: disabling converts the data back to format 1)",
    introduced_in: "1.1",
    depends_on: &[],
    reversible: true,
    experimental: false,
};

/// Writes may carry a TTL; builds the expiry index (`records` format 3).
pub const TTL: FlagSpec = FlagSpec {
    name: "ttl",
    description: "values may expire (PUT /kv/{key}?ttl_s=N); builds the expiry index (records format 3, irreversible)",
    introduced_in: "1.1",
    depends_on: &["record_meta_v2"],
    reversible: false,
    experimental: false,
};

/// New records carry `checksum@1`, which reads verify.
pub const VALUE_CHECKSUMS: FlagSpec = FlagSpec {
    name: "value_checksums",
    description: "new records carry checksum@1 (a SHA-256 prefix of the value) and reads verify it",
    introduced_in: "1.2",
    depends_on: &[],
    reversible: true,
    experimental: true,
};

/// A flag as one release declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleaseFlag {
    /// The flag.
    pub spec: &'static FlagSpec,
    /// Whether this release requires it enabled (it can then not be disabled).
    pub required: bool,
}

impl ReleaseFlag {
    /// `required`, `stable` or `experimental`.
    pub fn stability(&self) -> Stability {
        match (self.required, self.spec.experimental) {
            (true, _) => Stability::Required,
            (false, true) => Stability::Experimental,
            (false, false) => Stability::Stable,
        }
    }

    /// Whether this release lets it be disabled.
    pub fn reversible(&self) -> bool {
        self.spec.reversible && !self.required
    }
}

const fn supports(spec: &'static FlagSpec) -> ReleaseFlag {
    ReleaseFlag { spec, required: false }
}

const fn requires(spec: &'static FlagSpec) -> ReleaseFlag {
    ReleaseFlag { spec, required: true }
}

/// The cluster feature that unlocks `GET /kv?prefix=P&limit=N`.
pub const PREFIX_SCAN: &str = "kv.prefix_scan";

/// A plugin-like component a release ships, and the flags it needs enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginDef {
    /// Its name (`--plugins NAME`).
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// The flags it requires enabled before it starts.
    pub requires: &'static [&'static str],
}

/// The audit plugin: `GET /audit?limit=N`, recent writes with their `meta@2` writer.
pub const AUDIT: PluginDef = PluginDef {
    name: "audit",
    description: "GET /audit?limit=N: the recent writes stored on this node with their writer (meta@2)",
    requires: &["record_meta_v2"],
};

impl PluginDef {
    /// The plugin as rollgate checks it.
    pub fn spec(&self) -> PluginSpec {
        PluginSpec::new(self.name, self.requires.iter().copied())
    }
}

/// The storage unit whose format versions the releases read (see [`crate::migrations`]).
pub const RECORDS_UNIT: &str = "records";

/// The `records` formats a release reads: `min_readable..=max`. New units
/// are created at format 1 and brought to the highest format the enabled
/// flags allow by the release's migrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Formats {
    /// The oldest format it reads.
    pub min_readable: FormatVersion,
    /// The newest format it reads and migrates to.
    pub max: FormatVersion,
}

/// One release of rollgate-kv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// The release name, e.g. `1.2`.
    pub name: &'static str,
    /// The protocol versions it speaks.
    pub protocols: ProtocolRange,
    /// Its transport version (its id in `releases.csv`).
    pub transport: TransportVersion,
    /// The oldest transport version it accepts from a peer.
    pub minimum_compatible: TransportVersion,
    /// The feature flags it supports (and which it requires).
    pub flags: &'static [ReleaseFlag],
    /// The cluster features it publishes.
    pub cluster_features: &'static [&'static str],
    /// Features of the previous major it assumes present without publishing them.
    pub assumed_features: &'static [&'static str],
    /// Protocol versions it still speaks but marks deprecated.
    pub deprecated_protocols: &'static [u16],
    /// The `records` formats it reads.
    pub formats: Formats,
    /// The plugins it ships (started with `--plugins`).
    pub plugins: &'static [PluginDef],
}

/// The transport id `releases.csv` gives `name`; fails the build when missing.
const fn id_of(name: &str) -> TransportVersion {
    let releases = transport_versions::RELEASES;
    let mut i = 0;
    while i < releases.len() {
        let (r, id) = releases[i];
        if const_str_eq(r, name) {
            return id;
        }
        i += 1;
    }
    panic!("a release of rollgate-kv is missing from transport/releases.csv");
}

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn range(min: u16, max: u16) -> ProtocolRange {
    match ProtocolRange::new(min, max) {
        Ok(r) => r,
        Err(_) => panic!("empty protocol range"),
    }
}

/// Every release, oldest first.
pub const RELEASES: &[Release] = &[
    Release {
        name: "1.0",
        protocols: range(1, 1),
        transport: id_of("1.0"),
        minimum_compatible: transport_versions::MINIMUM_COMPATIBLE,
        flags: &[],
        cluster_features: &[],
        assumed_features: &[],
        deprecated_protocols: &[],
        formats: Formats { min_readable: 1, max: 1 },
        plugins: &[],
    },
    Release {
        name: "1.1",
        protocols: range(1, 2),
        transport: id_of("1.1"),
        minimum_compatible: transport_versions::MINIMUM_COMPATIBLE,
        flags: &[supports(&RECORD_META_V2), supports(&TTL)],
        cluster_features: &[],
        assumed_features: &[],
        deprecated_protocols: &[],
        formats: Formats { min_readable: 1, max: 3 },
        plugins: &[],
    },
    Release {
        name: "1.2",
        protocols: range(1, 3),
        transport: id_of("1.2"),
        minimum_compatible: transport_versions::MINIMUM_COMPATIBLE,
        flags: &[supports(&RECORD_META_V2), supports(&TTL), supports(&VALUE_CHECKSUMS)],
        cluster_features: &[PREFIX_SCAN],
        assumed_features: &[],
        deprecated_protocols: &[1],
        formats: Formats { min_readable: 1, max: 3 },
        plugins: &[AUDIT],
    },
    Release {
        name: "2.0",
        protocols: range(2, 4),
        transport: id_of("2.0"),
        minimum_compatible: id_of("1.2"),
        flags: &[requires(&RECORD_META_V2), supports(&TTL), supports(&VALUE_CHECKSUMS)],
        cluster_features: &[],
        assumed_features: &[PREFIX_SCAN],
        deprecated_protocols: &[],
        formats: Formats { min_readable: 2, max: 3 },
        plugins: &[AUDIT],
    },
];

/// The newest release: what `serve` runs when `--release` is not given.
pub const LATEST: &Release = &RELEASES[RELEASES.len() - 1];

/// A release name that is not in [`RELEASES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown release `{name}`: known releases are {}", known_names())]
pub struct UnknownRelease {
    /// The name asked for.
    pub name: String,
}

/// The known release names, comma-separated.
pub fn known_names() -> String {
    RELEASES.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
}

/// The release called `name`.
pub fn find(name: &str) -> Result<&'static Release, UnknownRelease> {
    RELEASES
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| UnknownRelease { name: rollgate::util::shorten_to(name, 64) })
}

/// Steps a node attaches to its flags (e.g. the disable hook that converts
/// the data back), by flag name. Only reversible flags take a disable hook.
#[derive(Clone, Default)]
pub struct FlagHooks {
    /// The `before_disable` hook of each flag that has one.
    pub before_disable: BTreeMap<&'static str, Step>,
}

impl std::fmt::Debug for FlagHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlagHooks").field("before_disable", &self.before_disable.keys().collect::<Vec<_>>()).finish()
    }
}

impl Release {
    /// Whether the release serves read levels: session reads that honour
    /// `x-kv-after`, and linearizable reads (protocol v4's quorum reads).
    pub fn has_read_levels(&self) -> bool {
        self.protocols.contains(rollgate::version::ProtocolVersion(4))
    }

    /// The transport versions this release speaks: the build's set capped at
    /// the release's id, with the release's minimum compatible version.
    pub fn transport_set(&self) -> TransportVersionSet {
        let mut set = transport_versions::SET.capped_at(self.transport);
        set.minimum_compatible = self.minimum_compatible;
        set
    }

    /// Whether the release supports flag `name`.
    pub fn supports_flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f.spec.name == name)
    }

    /// Whether the release publishes cluster feature `name`.
    pub fn has_feature(&self, name: &str) -> bool {
        self.cluster_features.contains(&name) || self.assumed_features.contains(&name)
    }

    /// The plugin called `name`, when the release ships it.
    pub fn plugin(&self, name: &str) -> Option<&'static PluginDef> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// The release's flag declarations (validated), with the node's hooks.
    pub fn registry(&self, hooks: &FlagHooks) -> Result<FlagRegistry, RegistryError> {
        let mut b = FlagRegistry::builder(self.name);
        for f in self.flags {
            let s = f.spec;
            let mut decl = FlagDecl::new(s.name, s.description)
                .introduced_in(s.introduced_in)
                .depends_on(s.depends_on.iter().copied())
                .doc_url(&format!("https://example.invalid/rollgate-kv/flags#{}", s.name))
                .stability(f.stability());
            // A release that requires a flag cannot disable it.
            if f.reversible() {
                decl = decl.reversible();
                if let Some(hook) = hooks.before_disable.get(s.name) {
                    let hook = hook.clone();
                    decl = decl.before_disable(move |ctx| hook(ctx));
                }
            }
            b.declare(decl);
        }
        b.build()
    }

    /// The cluster features it publishes.
    pub fn feature_set(&self) -> Result<FeatureSet, FeatureError> {
        let set = self.cluster_features.iter().try_fold(FeatureSet::new(), |set, f| set.feature(f))?;
        self.assumed_features.iter().try_fold(set, |set, f| set.assumed(f))
    }

    /// The `records` formats it reads, as a rollgate format policy.
    pub fn format_policy(&self) -> FormatPolicy {
        match FormatPolicy::new(self.formats.min_readable, self.formats.max, self.name) {
            Ok(p) => p,
            Err(e) => unreachable!("the release table's format ranges are checked by its tests: {e}"),
        }
    }

    /// The formats a unit may be left at by this release (new units start
    /// at 1 and are migrated up as the enabled flags allow).
    pub fn written_formats(&self) -> Vec<FormatVersion> {
        (self.formats.min_readable.max(1)..=self.formats.max).collect()
    }

    /// The release as JSON (`rollgate-kv releases --json`).
    pub fn to_json(&self) -> serde_json::Value {
        let flags: Vec<serde_json::Value> = self
            .flags
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.spec.name,
                    "stability": f.stability().as_str(),
                    "introduced_in": f.spec.introduced_in,
                    "depends_on": f.spec.depends_on,
                    "reversible": f.reversible(),
                    "description": f.spec.description,
                })
            })
            .collect();
        let plugins: Vec<serde_json::Value> = self
            .plugins
            .iter()
            .map(|p| serde_json::json!({"name": p.name, "requires": p.requires, "description": p.description}))
            .collect();
        serde_json::json!({
            "release": self.name,
            "protocol": { "min": self.protocols.min().0, "max": self.protocols.max().0 },
            "transport": self.transport.id(),
            "minimum_compatible": self.minimum_compatible.id(),
            "transport_ids": {
                "current": self.transport.to_string(),
                "minimum_compatible": self.minimum_compatible.to_string(),
            },
            "flags": flags,
            "cluster_features": self.cluster_features,
            "assumed_features": self.assumed_features,
            "deprecated_protocols": self.deprecated_protocols,
            "required_flags": self.flags.iter().filter(|f| f.stability() == Stability::Required).map(|f| f.spec.name).collect::<Vec<_>>(),
            "storage_formats": {
                "unit": RECORDS_UNIT,
                "readable": { "min": self.formats.min_readable, "max": self.formats.max },
                "written": self.written_formats(),
            },
            "plugins": plugins,
        })
    }
}

/// The flags of every release, oldest first: what `rollgate upgrade plan`
/// plans with and what [`check_release_table`] checks.
pub fn release_table() -> ReleaseTable {
    let registries: Vec<FlagRegistry> = RELEASES
        .iter()
        .map(|r| match r.registry(&FlagHooks::default()) {
            Ok(reg) => reg,
            Err(e) => unreachable!("the release table's flags are checked by its tests: {e}"),
        })
        .collect();
    ReleaseTable::from_registries(registries.iter())
}

/// Sets what `release` speaks on a node runtime config: protocols,
/// transport ids, cluster features and storage formats (the parts its
/// release manifest lists). One place, so that the manifest printed by
/// `rollgate-kv releases --manifest` is the one a node checks.
pub fn apply_to(release: &Release, c: &mut rollgate::node::NodeConfig) -> Result<(), FeatureError> {
    c.protocol = release.protocols;
    c.transport =
        rollgate::cluster::TransportRange { min_compatible: release.minimum_compatible, current: release.transport };
    c.features = release.feature_set()?;
    c.deprecated_protocols = release.deprecated_protocols.iter().copied().collect();
    c.formats = vec![rollgate::release::ManifestFormat {
        unit: RECORDS_UNIT.into(),
        min_readable: release.formats.min_readable,
        max: release.formats.max,
    }];
    Ok(())
}

/// The release manifest of `release`: what `rollgate release sign` signs
/// and `rollgate-kv serve --release-manifest` checks.
pub fn manifest(release: &Release) -> Result<rollgate::release::Manifest, String> {
    let registry = release.registry(&FlagHooks::default()).map_err(|e| e.to_string())?;
    let mut c = rollgate::node::NodeConfig::new("manifest", release.name, "", registry);
    apply_to(release, &mut c).map_err(|e| e.to_string())?;
    Ok(rollgate::node::release_manifest(&c))
}

/// Checks rollgate's flag rules ([`rollgate::flags::check_release_table`])
/// over kv's release table.
pub fn check_release_table() -> Result<(), rollgate::flags::ReleaseTableError> {
    rollgate::flags::check_release_table(&release_table())
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl std::str::FromStr for &'static Release {
    type Err = UnknownRelease;
    fn from_str(s: &str) -> Result<Self, UnknownRelease> {
        find(s)
    }
}

/// The table `rollgate-kv releases` prints.
pub fn table() -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header([
        "RELEASE",
        "PROTOCOL",
        "TRANSPORT",
        "MIN COMPATIBLE",
        "FLAGS",
        "CLUSTER FEATURES",
        "ASSUMED",
        "DEPRECATED",
        "FORMATS",
        "PLUGINS",
    ]);
    let list = |items: Vec<String>| if items.is_empty() { "-".to_string() } else { items.join(",") };
    for r in RELEASES {
        let flags = r
            .flags
            .iter()
            .map(|f| match f.stability() {
                Stability::Stable => f.spec.name.to_string(),
                other => format!("{}({other})", f.spec.name),
            })
            .collect();
        t.add_row([
            r.name.to_string(),
            r.protocols.to_string(),
            r.transport.to_string(),
            r.minimum_compatible.to_string(),
            list(flags),
            list(r.cluster_features.iter().map(|f| f.to_string()).collect()),
            list(r.assumed_features.iter().map(|f| f.to_string()).collect()),
            list(r.deprecated_protocols.iter().map(|v| format!("v{v}")).collect()),
            format!("{}..={}", r.formats.min_readable, r.formats.max),
            list(r.plugins.iter().map(|p| p.name.to_string()).collect()),
        ]);
    }
    t.to_string().lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication;

    #[test]
    fn the_table_matches_releases_csv_and_the_protocol_ranges() {
        let names: Vec<_> = RELEASES.iter().map(|r| r.name).collect();
        assert_eq!(names, ["1.0", "1.1", "1.2", "2.0"]);
        for r in RELEASES {
            assert_eq!(r.transport_set().release_of(r.transport).as_deref(), Some(r.name), "{r}");
            assert!(r.minimum_compatible <= r.transport);
            assert!(
                <crate::Msg as rollgate::protocol::Protocol>::SUPPORTED.contains(r.protocols.min())
                    && <crate::Msg as rollgate::protocol::Protocol>::SUPPORTED.contains(r.protocols.max())
            );
        }
        assert_eq!(LATEST.name, "2.0");
        assert_eq!(find("2.0").unwrap().minimum_compatible, find("1.2").unwrap().transport);
    }

    #[test]
    fn each_release_carries_the_fields_of_its_transport_version() {
        let carries = |name| {
            let t = find(name).unwrap().transport;
            (replication::carries_expiry(t), replication::carries_sync_end(t), replication::carries_sync_max_bytes(t))
        };
        assert_eq!(carries("1.0"), (false, false, false));
        assert_eq!(carries("1.1"), (true, false, false));
        assert_eq!(carries("1.2"), (true, true, false));
        assert_eq!(carries("2.0"), (true, true, true));
    }

    #[test]
    fn a_release_runs_capped_at_its_transport_version() {
        let set = find("1.1").unwrap().transport_set();
        assert_eq!(set.current, find("1.1").unwrap().transport);
        assert!(!set.is_known(find("1.2").unwrap().transport));
        assert_eq!(find("2.0").unwrap().transport_set().minimum_compatible, find("1.2").unwrap().transport);
    }

    #[test]
    fn unknown_releases_name_the_known_ones() {
        let e = find("3.0").unwrap_err();
        assert_eq!(e.to_string(), "unknown release `3.0`: known releases are 1.0, 1.1, 1.2, 2.0");
        let long = "9".repeat(10_000);
        assert!(find(&long).unwrap_err().to_string().len() < 200, "a huge name is shortened");
    }

    #[test]
    fn the_table_and_json_list_every_release() {
        let t = table();
        assert!(t.lines().count() >= 5, "{t}");
        assert!(t.contains("v2..=v4") && t.contains("1003000"), "{t}");
        let json: Vec<_> = RELEASES.iter().map(Release::to_json).collect();
        assert_eq!(json[3]["protocol"]["min"], 2);
        assert_eq!(json[0]["flags"], serde_json::json!([]));
        assert_eq!(json[1]["flags"][1]["depends_on"], serde_json::json!(["record_meta_v2"]));
        assert_eq!(json[1]["flags"][1]["reversible"], false);
        assert_eq!(json[1]["flags"][0]["reversible"], true);
        assert_eq!(json[2]["flags"][2]["stability"], "experimental");
        assert_eq!(json[3]["flags"][0]["stability"], "required");
        assert_eq!(json[3]["flags"][0]["reversible"], false);
        assert_eq!(json[2]["cluster_features"], serde_json::json!([PREFIX_SCAN]));
        assert_eq!(json[3]["storage_formats"]["readable"], serde_json::json!({"min": 2, "max": 3}));
        assert_eq!(json[0]["storage_formats"]["written"], serde_json::json!([1]));
        assert_eq!(json[2]["plugins"][0]["requires"], serde_json::json!(["record_meta_v2"]));
        assert!(t.contains("value_checksums(experimental)") && t.contains("record_meta_v2(required)"), "{t}");
    }

    #[test]
    fn the_release_table_keeps_the_flag_rules() {
        check_release_table().unwrap();
        for r in RELEASES {
            let reg = r.registry(&FlagHooks::default()).unwrap();
            assert_eq!(reg.len(), r.flags.len(), "{r}");
            r.feature_set().unwrap();
            assert!(r.format_policy().readable().contains(&r.formats.max));
            for p in r.plugins {
                assert!(p.requires.iter().all(|f| r.supports_flag(f)), "{r}: plugin {} needs a flag it lacks", p.name);
            }
        }
        for pair in RELEASES.windows(2) {
            assert!(pair[1].formats.max >= pair[0].formats.max, "{} -> {}", pair[0], pair[1]);
        }
        // 2.0 straight after 1.0 would require a flag 1.0 nodes cannot have.
        let r10 = RELEASES[0].registry(&FlagHooks::default()).unwrap();
        let r20 = RELEASES[3].registry(&FlagHooks::default()).unwrap();
        let e = rollgate::flags::check_release_table(&ReleaseTable::from_registries([&r10, &r20])).unwrap_err();
        assert!(e.to_string().contains("record_meta_v2"), "{e}");
    }
}

//! rollgate-kv's releases, defined in code: what each one speaks and
//! supports. A binary can run as any of them (`--release`), the way a newer
//! Kubernetes binary emulates an older version: it then advertises only that
//! release's protocol range and transport versions.
//!
//! | release | protocol | transport (current) | minimum compatible transport |
//! |---|---|---|---|
//! | 1.0 | v1 | 1.0's id | 1.0's id |
//! | 1.1 | v1..=v2 | 1.1's id | 1.0's id |
//! | 1.2 | v1..=v3 | 1.2's id | 1.0's id |
//! | 2.0 | v2..=v3 | 2.0's id | 1.2's id |
//!
//! Release 2.0 retires protocol v1 and raises its minimum compatible
//! transport version to 1.2's, so a 2.0 node and a 1.0 node refuse each
//! other at the handshake (naming what to upgrade) while 2.0 and 1.2
//! interoperate: upgrade every node to 1.2 before the first goes to 2.0.
//!
//! The transport ids come from `transport/releases.csv` (checked at compile
//! time: a release missing there fails the build).
//!
//! A release name is for humans and logs; compatibility is decided by the
//! protocol range and the transport versions, never by comparing names.

use rollgate::version::{ProtocolRange, TransportVersion, TransportVersionSet};

use crate::transport_versions;

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
    /// The feature flags it supports. Empty until rollgate's feature flags
    /// are wired in; TTL writes (release 1.1 on) will need the flag `ttl`.
    pub flags: &'static [&'static str],
    /// The cluster features it publishes. Empty until rollgate's cluster
    /// features are wired in.
    pub cluster_features: &'static [&'static str],
    /// The storage format versions it reads and writes. Empty until
    /// rollgate's format versions and migrations are wired in; until then
    /// every release reads and writes record format 1 (see [`crate::record`]).
    pub storage_formats: &'static [&'static str],
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
        storage_formats: &[],
    },
    Release {
        name: "1.1",
        protocols: range(1, 2),
        transport: id_of("1.1"),
        minimum_compatible: transport_versions::MINIMUM_COMPATIBLE,
        flags: &[],
        cluster_features: &[],
        storage_formats: &[],
    },
    Release {
        name: "1.2",
        protocols: range(1, 3),
        transport: id_of("1.2"),
        minimum_compatible: transport_versions::MINIMUM_COMPATIBLE,
        flags: &[],
        cluster_features: &[],
        storage_formats: &[],
    },
    Release {
        name: "2.0",
        protocols: range(2, 3),
        transport: id_of("2.0"),
        minimum_compatible: id_of("1.2"),
        flags: &[],
        cluster_features: &[],
        storage_formats: &[],
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
    RELEASES.iter().find(|r| r.name == name).ok_or_else(|| UnknownRelease { name: crate::shorten(name, 64) })
}

impl Release {
    /// The transport versions this release speaks: the build's set capped at
    /// the release's id, with the release's minimum compatible version.
    pub fn transport_set(&self) -> TransportVersionSet {
        let mut set = transport_versions::SET.capped_at(self.transport);
        set.minimum_compatible = self.minimum_compatible;
        set
    }

    /// The release as JSON (`rollgate-kv releases --json`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "release": self.name,
            "protocol": { "min": self.protocols.min().0, "max": self.protocols.max().0 },
            "transport": self.transport.id(),
            "minimum_compatible": self.minimum_compatible.id(),
            "flags": self.flags,
            "cluster_features": self.cluster_features,
            "storage_formats": self.storage_formats,
        })
    }
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
        "STORAGE FORMATS",
    ]);
    let list = |items: &[&str]| if items.is_empty() { "-".to_string() } else { items.join(",") };
    for r in RELEASES {
        t.add_row([
            r.name.to_string(),
            r.protocols.to_string(),
            r.transport.to_string(),
            r.minimum_compatible.to_string(),
            list(r.flags),
            list(r.cluster_features),
            list(r.storage_formats),
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
        assert!(t.contains("v2..=v3") && t.contains("1003000"), "{t}");
        let json: Vec<_> = RELEASES.iter().map(Release::to_json).collect();
        assert_eq!(json[3]["protocol"]["min"], 2);
        assert_eq!(json[0]["flags"], serde_json::json!([]));
    }
}

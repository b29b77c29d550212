//! The releases, defined in code. One binary runs as either release
//! (`--release`): it then advertises only that release's protocol range,
//! transport version and feature flags, like the real 1.0 binary would.
//!
//! | release | protocol | transport | flags |
//! |---|---|---|---|
//! | 1.0 | v1 | 1_000_0_00 | - |
//! | 1.1 | v1..=v2 | 1_001_0_00 (`total_entries`) | `entry_from_v2` |

use rollgate::flags::{FlagDecl, FlagRegistry, RegistryError, ReleaseTable};
use rollgate::protocol::Protocol;
use rollgate::version::{ProtocolRange, TransportVersion, TransportVersionSet};

use crate::protocol::Msg;
use crate::transport_versions;

/// The flag that lets nodes write `from@2` (the sender's release) into
/// their entries; see [`crate::entries`].
pub const ENTRY_FROM_V2: &str = "entry_from_v2";

/// A release of the counter service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Release {
    /// The first release.
    #[value(name = "1.0")]
    V1_0,
    /// Protocol v2, transport version `total_entries`, flag `entry_from_v2`.
    #[value(name = "1.1")]
    V1_1,
}

impl Release {
    /// Every release, oldest first.
    pub const ALL: [Release; 2] = [Release::V1_0, Release::V1_1];

    /// Its name (for humans and logs; never compared for compatibility).
    pub fn name(self) -> &'static str {
        match self {
            Release::V1_0 => "1.0",
            Release::V1_1 => "1.1",
        }
    }

    /// The protocol versions it speaks: 1.1 still speaks v1, so it talks to 1.0 nodes.
    pub fn protocols(self) -> ProtocolRange {
        match self {
            Release::V1_0 => ProtocolRange::single(1),
            Release::V1_1 => Msg::SUPPORTED,
        }
    }

    /// Its transport version: its line in `transport/releases.csv`.
    pub fn transport(self) -> TransportVersion {
        match self {
            Release::V1_0 => TransportVersion::from_id(1_000_0_00),
            Release::V1_1 => TransportVersion::from_id(1_001_0_00),
        }
    }

    /// The transport versions it offers in a handshake: the build's, capped
    /// at its own.
    pub fn transport_set(self) -> TransportVersionSet {
        transport_versions::SET.capped_at(self.transport())
    }

    /// The feature flags it supports. A flag never leaves a later release.
    pub fn flags(self) -> Result<FlagRegistry, RegistryError> {
        let mut flags = FlagRegistry::builder(self.name());
        if self >= Release::V1_1 {
            flags.declare(
                FlagDecl::new(ENTRY_FROM_V2, "entries record the sender's release (from@2) besides its node (from@1)")
                    .introduced_in("1.1"),
            );
        }
        flags.build()
    }
}

/// Every release's flags, for `rollgate upgrade plan` and the rules test.
pub fn release_table() -> Result<ReleaseTable, RegistryError> {
    let registries = Release::ALL.into_iter().map(Release::flags).collect::<Result<Vec<_>, _>>()?;
    Ok(ReleaseTable::from_registries(&registries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_release_is_its_line_of_releases_csv_and_the_table_keeps_the_flag_rules() {
        for r in Release::ALL {
            assert_eq!(transport_versions::SET.release_of(r.transport()).as_deref(), Some(r.name()));
            assert!(Msg::SUPPORTED.contains(r.protocols().min()) && Msg::SUPPORTED.contains(r.protocols().max()));
        }
        assert_eq!(Release::V1_1.transport(), transport_versions::CURRENT, "the newest release is the build's");
        rollgate::flags::check_release_table(&release_table().unwrap()).unwrap();
    }
}

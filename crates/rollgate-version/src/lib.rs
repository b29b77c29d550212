//! Version ids shared by every rollgate component.
//!
//! - [`TransportVersion`]: Elasticsearch-style `M_NNN_S_PP` ids that gate the
//!   *fields* a message carries; [`NamedTransportVersion`] is what
//!   `transport_version!("name")` resolves to at compile time.
//! - [`ProtocolVersion`] / [`ProtocolRange`]: Anoma-style versions that select
//!   the *message set* two connected nodes speak.
//! - [`state`]: the `transport/` state folder (definitions, upper bounds,
//!   minimum compatible version, release mapping) with a strict parser.
//! - [`scan`], [`validate`], [`generate`]: the logic behind `rollgate tv`:
//!   finding `transport_version!("name")` references in sources, checking a
//!   folder against every rule, and allocating ids (idempotently, from the
//!   base revision's upper bounds) for new versions, backports and merge
//!   conflicts. Pure functions over parsed files; the CLI does the I/O.
//! - [`cut`]: cutting a release branch (`rollgate tv cut-release`): its
//!   upper bound, main's next one, the `releases.csv` line and optionally a
//!   raised minimum compatible id, computed and validated as one change.
//!
//! ## Elasticsearch compatibility
//!
//! The `rollgate tv` commands read a copy of Elasticsearch's own
//! `server/src/main/resources/transport/` folder as it is, and follow its
//! rules (its `ValidateTransportVersionResourcesTask` and the tasks that
//! generate definitions and initial release ids) where ours differed:
//!
//! - **Layout**: `definitions/referable/`, `definitions/unreferable/`,
//!   `upper_bounds/<M.m>.csv`, `constants/minimum_compatible.csv`; other
//!   `constants/<name>.csv` files (their `minimum_ccs_version`) are accepted
//!   as one id each and kept, not interpreted. The transitional `latest/` and
//!   `definitions/named/` folders of older Elasticsearch revisions are not.
//! - **Unreferable names**: Elasticsearch only asks for a file name
//!   (`initial_9.2.0`, `initial_elasticsearch_8_16_5`), so unreferable
//!   definitions and the upper bounds naming them accept `. + -` as well as
//!   `[a-z0-9_]`. Referable names stay `[a-z0-9_]+`, as theirs.
//! - **Releases**: Elasticsearch appends `release,id` to its
//!   `TransportVersions.csv` as each release ships, so a patch of an older
//!   minor follows a newer minor with a lower id. `releases.csv` accepts that
//!   file's content in any order (we used to require ascending ids).
//! - **Release cut**: as their initial-version task, a new release `M.m`
//!   gets an unreferable `initial_M.m.0` at main's upper bound + 1000, named
//!   by the release's upper bound and by main's next one.
//! - **Release branches**: as theirs, a release branch's checkout (one
//!   below the highest upper bound, `rollgate tv validate --branch M.m`)
//!   checks only its own upper bound and skips the highest-id and increment
//!   rules, since its other upper bounds and its backported definitions'
//!   primary ids are main's. They tell the branch from the build's version;
//!   we take it from `--branch`, keep checking ids unique everywhere, and
//!   check a release branch against its base outside CI too.
//! - **Rules applied as theirs**: referable ids strictly descending, primary
//!   id with patch `00`, backport ids with a non-zero patch; unreferable
//!   definitions hold one id (a patch id is fine); ids unique; definitions and
//!   backport ids at the base never change; an upper bound names a definition
//!   holding its id, the highest of its base, and a release branch keeps its
//!   base; the highest primary id is in an upper bound; a new primary id is at
//!   most 1000 above the previous one; the ids of one base are consecutive
//!   (their density rule).
//!
//! Rules we add on top of theirs: state files may carry `#` comments and
//! `\r\n` endings; unreferable names are limited to the portable characters
//! above and 128 bytes (theirs: any file name); every file, folder and line
//! is bounded ([`state::MAX_FILE_BYTES`], [`state::MAX_FILES`]); a release is
//! listed once in `releases.csv`; the minimum compatible id is a defined id,
//! at or below the current one; only one new transport version per change;
//! references must be string literals; and a cut refuses a folder that does
//! not validate, a release already cut or listed, and a minimum that does
//! not rise.
//!
//! This crate has no runtime dependencies beyond `serde` and `thiserror`, so
//! build scripts (`rollgate-build`) and the CLI can use it cheaply.

#![warn(missing_docs)]

pub mod cut;
pub mod generate;
mod lines;
mod protocol;
pub mod scan;
pub mod state;
mod transport;
pub mod validate;

pub use protocol::{EmptyRange, ProtocolRange, ProtocolVersion};
pub use transport::{NamedTransportVersion, TransportVersion, TransportVersionSet, compare_releases, release_of};

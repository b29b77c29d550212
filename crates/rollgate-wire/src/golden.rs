//! Golden wire samples, for a service's own tests: for every sample message
//! and every transport version the service still speaks, bytes checked in at
//! `DIR/<message>/<transport_version>.bin` must decode to the expected value,
//! re-encode byte for byte, and be exactly what today's encoder produces. An
//! accidental change to the encoding of an existing version then fails a
//! test instead of a rolling upgrade.
//!
//! ```text
//! #[test]
//! fn golden_wire_samples() {
//!     let versions = rollgate::golden::versions_from(transport_versions::SET);
//!     let samples = my_service::samples::messages();      // [(name, Msg)]
//!     let report = rollgate::golden::check(
//!         Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/wire")),
//!         &samples,
//!         &versions,
//!         at_version,                                      // fields a version lacks -> defaults
//!         "cargo test -p my-service --test wire_golden",
//!     );
//!     assert!(report.problems.is_empty(), "{}", report.problems.join("\n"));
//! }
//! ```
//!
//! New samples (a new message or a new transport version) are written by
//! running the test with `ROLLGATE_BLESS=1`: only missing files are
//! written, an existing file is never overwritten.

use std::fmt::Debug;
use std::path::Path;

use crate::protocol::{Protocol, decode_message, encode_message};
use crate::version::{TransportVersion, TransportVersionSet};
use crate::wire::Limits;

/// The environment variable that lets [`check`] write missing samples.
pub const BLESS_ENV: &str = "ROLLGATE_BLESS";

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct GoldenReport {
    /// Samples compared (message × transport version).
    pub checked: usize,
    /// Files written because `ROLLGATE_BLESS=1` and they were missing.
    pub blessed: Vec<String>,
    /// Everything wrong, one line each, naming the file and the fix.
    pub problems: Vec<String>,
}

/// The transport versions whose encodings a build pins: every id it knows
/// from its minimum compatible one up to its current one.
pub fn versions_from(set: TransportVersionSet) -> Vec<TransportVersion> {
    set.known.iter().copied().filter(|v| *v >= set.minimum_compatible && *v <= set.current).collect()
}

/// Checks every `(name, message)` of `samples` at every version of
/// `versions` against `dir/<name>/<version>.bin`. `at_version(msg, tv)` is
/// the message as it looks after a trip through `tv` (fields the version
/// does not carry take their defaults). `rerun` is the command that reruns
/// the test, quoted in the hint to bless new samples. A folder in `dir`
/// that names no sample (a retired message) is a problem too.
pub fn check<P>(
    dir: &Path,
    samples: &[(&str, P)],
    versions: &[TransportVersion],
    at_version: impl Fn(&P, TransportVersion) -> P,
    rerun: &str,
) -> GoldenReport
where
    P: Protocol + PartialEq + Debug,
{
    let bless = std::env::var(BLESS_ENV).as_deref() == Ok("1");
    let mut report = GoldenReport::default();
    for (name, msg) in samples {
        for tv in versions {
            check_one(dir, name, msg, *tv, &at_version, bless, rerun, &mut report);
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !samples.iter().any(|(n, _)| *n == name) {
                report.problems.push(format!(
                    "{}: no sample message is named `{name}`; delete the folder",
                    entry.path().display()
                ));
            }
        }
    }
    report
}

#[allow(clippy::too_many_arguments)]
fn check_one<P>(
    dir: &Path,
    name: &str,
    msg: &P,
    tv: TransportVersion,
    at_version: &impl Fn(&P, TransportVersion) -> P,
    bless: bool,
    rerun: &str,
    report: &mut GoldenReport,
) where
    P: Protocol + PartialEq + Debug,
{
    report.checked += 1;
    let path = dir.join(name).join(format!("{tv}.bin"));
    let shown = path.display();
    let encoded = match encode_message(msg, tv, Limits::DEFAULT) {
        Ok(b) => b,
        Err(e) => {
            report.problems.push(format!("{shown}: the sample does not encode at {tv}: {e}"));
            return;
        }
    };
    let golden = match std::fs::read(&path) {
        Ok(b) => b,
        Err(_) if bless => {
            let written =
                path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|_| std::fs::write(&path, &encoded));
            match written {
                Ok(()) => report.blessed.push(shown.to_string()),
                Err(e) => report.problems.push(format!("{shown}: cannot write: {e}")),
            }
            encoded.clone()
        }
        Err(e) => {
            report.problems.push(format!("{shown}: {e}: run `{BLESS_ENV}=1 {rerun}` and commit the new file"));
            return;
        }
    };
    let expected = at_version(msg, tv);
    match decode_message::<P>(&golden, msg.version(), tv, Limits::DEFAULT) {
        Ok(decoded) => {
            if decoded != expected {
                report.problems.push(format!("{shown}: decodes to {decoded:?}, expected {expected:?}"));
            }
            match encode_message(&decoded, tv, Limits::DEFAULT) {
                Ok(again) if again == golden => {}
                Ok(_) => report.problems.push(format!("{shown}: does not re-encode byte for byte")),
                Err(e) => report.problems.push(format!("{shown}: the decoded value does not encode: {e}")),
            }
        }
        Err(e) => report.problems.push(format!("{shown}: no longer decodes: {e}")),
    }
    if encoded != golden {
        report.problems.push(format!(
            "{shown}: the encoding of an existing transport version changed ({} bytes now, {} checked in); gate the change behind a new transport version",
            encoded.len(),
            golden.len()
        ));
    }
}

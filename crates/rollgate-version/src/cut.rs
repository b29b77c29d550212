//! Cutting a release branch: `rollgate tv cut-release`.
//!
//! When release `M.m` branches off main, the `transport/` folder on main gets,
//! in one change (Elasticsearch's release process, see the crate docs):
//!
//! 1. a new unreferable definition `initial_M.m.0` whose id is main's upper
//!    bound + 1000: a fresh primary id, so the release branch's backports
//!    (`initial + 1`, `+ 2`, ...) live on a base no other branch shares;
//! 2. `upper_bounds/M.m.csv` naming it: the release branch's upper bound,
//!    from which `rollgate tv generate --backport-branches M.m` allocates;
//! 3. `upper_bounds/<next>.csv` naming it too (`next` defaults to
//!    `M.(m+1)`): main's new current branch, from which new primary ids
//!    follow;
//! 4. a `M.m,<id>` line appended to `releases.csv` (kept byte for byte above
//!    it, comments included);
//! 5. optionally a raised `constants/minimum_compatible.csv`.
//!
//! [`cut_release`] is a pure function: it checks the arguments, validates the
//! folder as it is (a broken folder is not cut), computes the new files and
//! validates the result against the old state (nothing that existed
//! changes) before returning them. The caller writes them all or none.

use crate::TransportVersion;
use crate::generate::Changes;
use crate::scan::References;
use crate::state::{
    Branch, Definition, MAX_FILE_BYTES, RELEASES_FILE, StateFiles, TransportState, UNREFERABLE_DIR, UPPER_BOUNDS_DIR,
    UpperBound, check_release,
};
use crate::validate::{MAX_INCREMENT, Violation, validate};

/// What to cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutOptions {
    /// The release branch being cut (`<M.m>`).
    pub release: Branch,
    /// Main's new current branch (`--next`); default `M.(m+1)`.
    pub next: Option<Branch>,
    /// The name written to `releases.csv` (`--release-name`); default `M.m`.
    pub release_name: Option<String>,
    /// The new minimum compatible id (`--minimum-compatible`), if raised.
    pub minimum_compatible: Option<TransportVersion>,
}

impl CutOptions {
    /// Cut `release` with every default.
    pub fn new(release: Branch) -> CutOptions {
        CutOptions { release, next: None, release_name: None, minimum_compatible: None }
    }
}

/// A computed cut: what the folder becomes and the files that make it so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The release branch.
    pub release: Branch,
    /// Main's new current branch.
    pub next: Branch,
    /// The name written to `releases.csv`.
    pub release_name: String,
    /// The new unreferable definition both upper bounds name.
    pub initial: Definition,
    /// The minimum compatible id before the cut.
    pub previous_minimum: TransportVersion,
    /// The new state of the folder.
    pub state: TransportState,
    /// The files to write (relative path -> bytes); nothing is deleted.
    pub changes: Changes,
}

/// Why a cut was refused. Paths are relative to the state folder.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CutError {
    /// `--release-name` is not a release name.
    #[error("--release-name `{0}`: not a release name; use letters, digits and . _ + - (at most 64 characters)")]
    BadReleaseName(String),
    /// The folder breaks a rule before the cut.
    #[error("the folder breaks {} rule(s) before the cut; fix them (see `rollgate tv validate`) and cut again", .0.len())]
    Invalid(Vec<Violation>),
    /// No upper bound at all.
    #[error("there is no {UPPER_BOUNDS_DIR}/<M.m>.csv file, so main has no current branch to cut from")]
    NoUpperBounds,
    /// The release was already cut.
    #[error(
        "release {release} was already cut: {path} exists, and main is now at {current}; backport to it with `rollgate tv generate --name NAME --backport-branches {release}`"
    )]
    AlreadyCut {
        /// The release.
        release: Branch,
        /// The file showing it.
        path: String,
        /// Main's current branch.
        current: Branch,
    },
    /// The release is older than main's current branch.
    #[error(
        "release {release} is older than main's current branch {current}: a release branch is cut from main, at {current} or later"
    )]
    OlderThanCurrent {
        /// The release.
        release: Branch,
        /// Main's current branch.
        current: Branch,
    },
    /// `releases.csv` already lists the release.
    #[error(
        "release {release} is already in {RELEASES_FILE} as `{listed}`; a release is cut once (pick the next minor, e.g. {suggest})"
    )]
    AlreadyReleased {
        /// The release.
        release: Branch,
        /// The entry that lists it.
        listed: String,
        /// A release that is not listed yet.
        suggest: String,
    },
    /// The initial definition's name is taken.
    #[error(
        "{UNREFERABLE_DIR}/{0}.csv already exists, so release {1} looks cut already; remove that file if it is a leftover"
    )]
    InitialExists(String, Branch),
    /// `--next` is not above the release.
    #[error("--next {next}: main's new branch must be above the release {release}")]
    NextNotAbove {
        /// `--next`.
        next: Branch,
        /// The release.
        release: Branch,
    },
    /// No default next branch (the minor would overflow).
    #[error("release {0}: there is no next minor; pass --next M.m")]
    NoNext(Branch),
    /// Main's upper bound is a backport id.
    #[error(
        "the upper bound of main's current branch {branch} is the backport id {id}; main's upper bound is a primary id (ends in 00): fix {UPPER_BOUNDS_DIR}/{branch}.csv"
    )]
    CurrentIsBackport {
        /// Main's current branch.
        branch: Branch,
        /// Its upper bound.
        id: TransportVersion,
    },
    /// The new id does not fit.
    #[error(
        "the next id after {0} (+{MAX_INCREMENT}) overflows the id layout; the id space of this folder is exhausted"
    )]
    IdOverflow(TransportVersion),
    /// An id at or above the new one exists.
    #[error(
        "`{owner}` has the id {id}, at or above the new release id {new}; main's upper bound must name the highest id: run `rollgate tv validate`"
    )]
    IdTaken {
        /// The id in the way.
        id: TransportVersion,
        /// Its definition.
        owner: String,
        /// The id the cut would create.
        new: TransportVersion,
    },
    /// `--minimum-compatible` does not raise the minimum.
    #[error(
        "--minimum-compatible {given}: the minimum compatible id is already {current}; the cut only raises it (leave the flag out to keep it)"
    )]
    MinimumNotRaised {
        /// The id given.
        given: TransportVersion,
        /// The minimum before the cut.
        current: TransportVersion,
    },
    /// `--minimum-compatible` is not a defined id.
    #[error(
        "--minimum-compatible {0}: no definition has this id; use the id of a release (see `rollgate tv list` or {RELEASES_FILE}), e.g. the first id of the oldest release peers may still run"
    )]
    MinimumUnknown(TransportVersion),
    /// Appending would take releases.csv over the file size limit.
    #[error(
        "{RELEASES_FILE} would grow past {MAX_FILE_BYTES} bytes with this release; move old releases out of it (keep the ones peers may still run) and cut again"
    )]
    ReleasesTooLarge,
    /// The computed folder breaks a rule (a bug: nothing was written).
    #[error("internal error, nothing was written: the folder after the cut breaks {} rule(s): {}", .0.len(), .0.first().map(ToString::to_string).unwrap_or_default())]
    Internal(Vec<Violation>),
}

/// Computes the cut of `opts.release` from the folder `files` (as read from
/// disk), with `refs` the `transport_version!` references of the sources.
/// Returns the files to write; nothing is written here.
pub fn cut_release(files: &StateFiles, refs: &References, opts: &CutOptions) -> Result<Cut, CutError> {
    let release = opts.release;
    let release_name = opts.release_name.clone().unwrap_or_else(|| release.to_string());
    check_release(&release_name).map_err(|_| CutError::BadReleaseName(release_name.clone()))?;
    let violations = validate(files, refs, &[], None);
    if !violations.is_empty() {
        return Err(CutError::Invalid(violations));
    }
    let old =
        TransportState::parse(files).map_err(|e| CutError::Invalid(vec![crate::validate::state_violation(&e)]))?;
    let (current, upper) = old.upper_bounds.iter().next_back().ok_or(CutError::NoUpperBounds)?;
    let (current, upper) = (*current, upper.clone());
    check_release_is_new(&old, release, current, &release_name)?;
    let next = match opts.next {
        Some(n) => n,
        None => Branch { major: release.major, minor: release.minor.checked_add(1).ok_or(CutError::NoNext(release))? },
    };
    // The release is at or above every branch with an upper bound, so `next` has none yet.
    if next <= release {
        return Err(CutError::NextNotAbove { next, release });
    }
    let initial = new_initial(&old, release, current, &upper)?;
    let minimum = match opts.minimum_compatible {
        None => old.minimum_compatible,
        Some(m) if m <= old.minimum_compatible => {
            return Err(CutError::MinimumNotRaised { given: m, current: old.minimum_compatible });
        }
        Some(m) if m != initial.primary() && !old.all_ids().contains(&m) => return Err(CutError::MinimumUnknown(m)),
        Some(m) => m,
    };

    let mut state = old.clone();
    let bound = UpperBound { name: initial.name.clone(), id: initial.primary() };
    state.unreferable.insert(initial.name.clone(), initial.clone());
    state.upper_bounds.insert(release, bound.clone());
    state.upper_bounds.insert(next, bound);
    state.minimum_compatible = minimum;
    state.releases.push((release_name.clone(), initial.primary()));
    state.releases.sort_by_key(|(_, id)| *id);

    let mut changes = crate::generate::changes(&old, &state, &[]);
    // releases.csv is appended to, not rewritten: its order and comments stay.
    let releases = appended(files, &release_name, initial.primary());
    if releases.len() > MAX_FILE_BYTES {
        return Err(CutError::ReleasesTooLarge);
    }
    changes.writes.insert(RELEASES_FILE.to_string(), releases);
    debug_assert!(changes.deletes.is_empty());
    let mut after = files.clone();
    after.files.extend(changes.writes.iter().map(|(p, b)| (p.clone(), b.clone())));
    let broken = validate(&after, refs, &[], Some(&old));
    if !broken.is_empty() {
        return Err(CutError::Internal(broken));
    }
    Ok(Cut { release, next, release_name, initial, previous_minimum: old.minimum_compatible, state, changes })
}

/// Refuses a release that was already cut or released, or is older than main.
fn check_release_is_new(
    old: &TransportState,
    release: Branch,
    current: Branch,
    release_name: &str,
) -> Result<(), CutError> {
    if release < current {
        if old.upper_bounds.contains_key(&release) {
            let path = format!("{UPPER_BOUNDS_DIR}/{release}.csv");
            return Err(CutError::AlreadyCut { release, path, current });
        }
        return Err(CutError::OlderThanCurrent { release, current });
    }
    let same_branch = |name: &str| {
        let mut parts = name.split('.');
        let major = parts.next().and_then(|p| p.parse::<u32>().ok());
        let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
        major == Some(release.major) && minor == Some(release.minor)
    };
    if let Some((listed, _)) = old.releases.iter().find(|(r, _)| r == release_name || same_branch(r)) {
        let after = old.releases.iter().filter_map(|(r, _)| release_branch(r)).max().unwrap_or(release).max(release);
        let suggest = Branch { major: after.major, minor: after.minor.saturating_add(1) }.to_string();
        return Err(CutError::AlreadyReleased { release, listed: listed.clone(), suggest });
    }
    Ok(())
}

/// The `M.m` of a release name such as `9.2` or `9.2.0`, if it has one.
fn release_branch(name: &str) -> Option<Branch> {
    let mut parts = name.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some(Branch { major, minor })
}

/// The unreferable definition that starts the release branch: main's upper
/// bound + 1000, a fresh base no other branch shares.
fn new_initial(
    old: &TransportState,
    release: Branch,
    current: Branch,
    upper: &UpperBound,
) -> Result<Definition, CutError> {
    if upper.id.is_patch() {
        return Err(CutError::CurrentIsBackport { branch: current, id: upper.id });
    }
    let id = upper
        .id
        .id()
        .checked_add(MAX_INCREMENT)
        .map(TransportVersion::from_id)
        .ok_or(CutError::IdOverflow(upper.id))?;
    if let Some(d) = old.referable.values().chain(old.unreferable.values()).find(|d| d.ids.iter().any(|i| *i >= id)) {
        let taken = d.ids.iter().copied().filter(|i| *i >= id).max().unwrap_or(id);
        return Err(CutError::IdTaken { id: taken, owner: d.name.clone(), new: id });
    }
    let name = format!("initial_{}.{}.0", release.major, release.minor);
    if old.unreferable.contains_key(&name) {
        return Err(CutError::InitialExists(name, release));
    }
    Ok(Definition { name, ids: vec![id] })
}

/// `releases.csv` with `release,id` appended (a newline is added first when
/// the file does not end with one).
fn appended(files: &StateFiles, release: &str, id: TransportVersion) -> Vec<u8> {
    let mut bytes = files.files.get(RELEASES_FILE).cloned().unwrap_or_default();
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(format!("{release},{id}\n").as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MINIMUM_COMPATIBLE_FILE, REFERABLE_DIR};

    /// Main at 2.0 (its upper bound `compression`), release branches 1.0 and 1.1.
    fn folder() -> StateFiles {
        StateFiles::from_pairs(&[
            ("definitions/unreferable/initial_1_0.csv", "1000000\n"),
            ("definitions/unreferable/initial_1_1.csv", "1100000\n"),
            ("definitions/unreferable/initial_2_0.csv", "2000000\n"),
            ("definitions/referable/compression.csv", "2001000,1100001\n"),
            ("upper_bounds/1.0.csv", "initial_1_0,1000000\n"),
            ("upper_bounds/1.1.csv", "compression,1100001\n"),
            ("upper_bounds/2.0.csv", "compression,2001000\n"),
            ("constants/minimum_compatible.csv", "1000000\n"),
            ("releases.csv", "# kv releases\n1.0,1000000\n1.1,1100000"),
        ])
    }

    fn refs() -> References {
        References::from_names(["compression"])
    }

    fn opts(release: &str) -> CutOptions {
        CutOptions::new(release.parse().unwrap())
    }

    fn written_paths(cut: &Cut) -> Vec<&str> {
        cut.changes.writes.keys().map(String::as_str).collect()
    }

    fn text(cut: &Cut, path: &str) -> String {
        String::from_utf8(cut.changes.writes[path].clone()).unwrap()
    }

    #[test]
    fn cutting_main_s_branch_starts_the_next_one() {
        let cut = cut_release(&folder(), &refs(), &opts("2.0")).unwrap();
        assert_eq!((cut.release.to_string(), cut.next.to_string()), ("2.0".into(), "2.1".into()));
        assert_eq!(cut.initial, Definition { name: "initial_2.0.0".into(), ids: vec![2002000.into()] });
        assert_eq!(
            written_paths(&cut),
            [
                "definitions/unreferable/initial_2.0.0.csv",
                "releases.csv",
                "upper_bounds/2.0.csv",
                "upper_bounds/2.1.csv"
            ]
        );
        assert_eq!(text(&cut, "definitions/unreferable/initial_2.0.0.csv"), "2002000\n");
        assert_eq!(text(&cut, "upper_bounds/2.0.csv"), "initial_2.0.0,2002000\n");
        assert_eq!(text(&cut, "upper_bounds/2.1.csv"), "initial_2.0.0,2002000\n");
        assert_eq!(text(&cut, "releases.csv"), "# kv releases\n1.0,1000000\n1.1,1100000\n2.0,2002000\n");
        assert_eq!(cut.state.latest_branch(), Some("2.1".parse().unwrap()));
        // The state the writes produce is the state returned.
        let mut after = folder();
        after.files.extend(cut.changes.writes.clone());
        assert_eq!(TransportState::parse(&after).unwrap(), cut.state);
    }

    #[test]
    fn cutting_a_new_branch_and_raising_the_minimum() {
        let mut o = opts("3.0");
        o.next = Some("4.0".parse().unwrap());
        o.release_name = Some("3.0.0".into());
        o.minimum_compatible = Some(1100000.into());
        let cut = cut_release(&folder(), &refs(), &o).unwrap();
        assert_eq!(cut.next.to_string(), "4.0");
        assert_eq!(text(&cut, MINIMUM_COMPATIBLE_FILE), "1100000\n");
        assert_eq!(cut.previous_minimum, 1000000.into());
        assert!(text(&cut, "releases.csv").ends_with("1.1,1100000\n3.0.0,2002000\n"));
        assert!(!cut.changes.writes.contains_key("upper_bounds/2.0.csv"), "main's old branch stays as it was");
        // The new id itself may become the minimum.
        o.minimum_compatible = Some(2002000.into());
        assert_eq!(cut_release(&folder(), &refs(), &o).unwrap().state.minimum_compatible, 2002000.into());
    }

    #[test]
    fn refuses_releases_cut_or_listed_already() {
        let e = cut_release(&folder(), &refs(), &opts("1.1")).unwrap_err();
        assert!(matches!(e, CutError::AlreadyCut { .. }), "{e}");
        assert!(e.to_string().starts_with("release 1.1 was already cut: upper_bounds/1.1.csv exists"), "{e}");
        assert!(matches!(
            cut_release(&folder(), &refs(), &opts("1.5")).unwrap_err(),
            CutError::OlderThanCurrent { .. }
        ));
        let mut f = folder();
        f.files.insert("releases.csv".into(), b"1.0,1000000\n2.0.0,2001000\n".to_vec());
        let e = cut_release(&f, &refs(), &opts("2.0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "release 2.0 is already in releases.csv as `2.0.0`; a release is cut once (pick the next minor, e.g. 2.1)"
        );
        let mut o = opts("2.1");
        o.release_name = Some("2.0.0".into());
        assert!(matches!(cut_release(&f, &refs(), &o).unwrap_err(), CutError::AlreadyReleased { .. }));
        f.files.insert(format!("{UNREFERABLE_DIR}/initial_2.5.0.csv"), b"1100002\n".to_vec());
        f.files.insert("upper_bounds/1.1.csv".into(), b"initial_2.5.0,1100002\n".to_vec());
        f.files.insert(format!("{REFERABLE_DIR}/compression.csv"), b"2001000,1100001\n".to_vec());
        let e = cut_release(&f, &refs(), &opts("2.5")).unwrap_err();
        assert_eq!(e, CutError::InitialExists("initial_2.5.0".into(), "2.5".parse().unwrap()));
    }

    #[test]
    fn refuses_bad_arguments() {
        let mut o = opts("2.0");
        o.next = Some("2.0".parse().unwrap());
        assert!(matches!(cut_release(&folder(), &refs(), &o).unwrap_err(), CutError::NextNotAbove { .. }));
        o.next = Some("1.1".parse().unwrap());
        assert!(matches!(cut_release(&folder(), &refs(), &o).unwrap_err(), CutError::NextNotAbove { .. }));
        let mut o = opts("2.0");
        o.release_name = Some("two point oh".into());
        assert_eq!(cut_release(&folder(), &refs(), &o).unwrap_err(), CutError::BadReleaseName("two point oh".into()));
        for (min, want) in [
            (1000000, CutError::MinimumNotRaised { given: 1000000.into(), current: 1000000.into() }),
            (999, CutError::MinimumNotRaised { given: 999.into(), current: 1000000.into() }),
            (1500000, CutError::MinimumUnknown(1500000.into())),
            (u32::MAX, CutError::MinimumUnknown(u32::MAX.into())),
        ] {
            let mut o = opts("2.0");
            o.minimum_compatible = Some(min.into());
            assert_eq!(cut_release(&folder(), &refs(), &o).unwrap_err(), want, "{min}");
        }
        let o = CutOptions::new(Branch { major: 2, minor: u32::MAX });
        assert_eq!(cut_release(&folder(), &refs(), &o).unwrap_err(), CutError::NoNext(o.release));
    }

    #[test]
    fn refuses_a_broken_folder_and_an_exhausted_id_space() {
        let mut f = folder();
        f.files.insert("upper_bounds/2.0.csv".into(), b"compression,1100001\n".to_vec());
        let e = cut_release(&f, &refs(), &opts("2.0")).unwrap_err();
        assert!(matches!(&e, CutError::Invalid(v) if !v.is_empty()), "{e}");
        let e = cut_release(&folder(), &References::from_names(["compression", "unknown"]), &opts("2.0")).unwrap_err();
        assert!(matches!(e, CutError::Invalid(_)), "{e}");
        let top = StateFiles::from_pairs(&[
            ("definitions/unreferable/last.csv", "4294967000\n"),
            ("upper_bounds/9.0.csv", "last,4294967000\n"),
            ("constants/minimum_compatible.csv", "4294967000\n"),
        ]);
        assert_eq!(
            cut_release(&top, &References::default(), &opts("9.0")).unwrap_err(),
            CutError::IdOverflow(4294967000.into())
        );
        let mut full = folder();
        let mut releases = b"1.0,1000000\n".to_vec();
        releases.resize(MAX_FILE_BYTES - 4, b'#');
        full.files.insert(RELEASES_FILE.into(), releases);
        assert_eq!(cut_release(&full, &refs(), &opts("2.0")).unwrap_err(), CutError::ReleasesTooLarge);
        let empty = StateFiles::from_pairs(&[("constants/minimum_compatible.csv", "1\n")]);
        assert!(matches!(cut_release(&empty, &References::default(), &opts("1.0")).unwrap_err(), CutError::Invalid(_)));
    }

    #[test]
    fn generate_after_a_cut_allocates_on_main_and_backports_on_the_branch() {
        use crate::generate::{Options, generate};
        let cut = cut_release(&folder(), &refs(), &opts("2.0")).unwrap();
        let base = cut.state.clone();
        let r = References::from_names(["compression", "zstd"]);
        let opts = Options { backport_branches: Some(vec!["2.0".parse().unwrap()]), ..Options::default() };
        let out = generate(&base, &base, &r, &opts).unwrap();
        assert_eq!(out.state.referable["zstd"].ids, vec![2003000.into(), 2002001.into()]);
        assert_eq!(out.state.upper_bounds[&"2.1".parse().unwrap()].id, 2003000.into());
        assert_eq!(out.state.upper_bounds[&"2.0".parse().unwrap()].id, 2002001.into());
        assert!(validate(&out.state.to_files(), &r, &[], Some(&base)).is_empty());
    }
}

//! The rules a `transport/` folder must follow, checked all at once.
//!
//! [`validate`] takes the raw state files, the references found in the
//! sources, the scan problems, and (when known) the state at the base
//! revision, and returns every [`Violation`], each naming the file, the line
//! where it helps, what is wrong and how to fix it. The rules are
//! Elasticsearch's (the crate docs list where we follow theirs and what we
//! add on top):
//!
//! 1. every file parses (referable names `[a-z0-9_]+`, unreferable names a
//!    portable file name, primary ids end in `00`, backport ids do not, ids
//!    strictly descending, one line per file, each release listed once);
//! 2. every referable definition is referenced by `transport_version!` and
//!    every referenced name has a referable definition; references are
//!    string literals;
//! 3. ids are unique across definitions;
//! 4. definitions that exist at the base keep their ids (none edited or
//!    removed; backports may be added);
//! 5. every upper bound names a definition holding its id, that id is the
//!    highest of its base (`M_NNN_S_00`), and a release branch's upper bound
//!    keeps its base;
//! 6. the highest primary id is in some upper bound;
//! 7. a new primary id is at most 1000 above the previous highest id;
//! 8. the minimum compatible id is a defined id, at or below the current one;
//! 9. the ids of one base are consecutive (Elasticsearch's density rule).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::TransportVersion;
use crate::scan::{References, ScanError};
use crate::state::{
    Branch, Definition, MINIMUM_COMPATIBLE_FILE, REFERABLE_DIR, StateError, StateErrorKind, StateFiles, TransportState,
    UNREFERABLE_DIR, UPPER_BOUNDS_DIR, first_data_line,
};

/// The largest step between a new primary id and the previous highest id.
pub const MAX_INCREMENT: u32 = 1000;

/// Where a violation is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// A file of the state folder, relative to it (`upper_bounds/9.1.csv`).
    State(String),
    /// A source file, as scanned.
    Source(PathBuf),
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The file.
    pub place: Place,
    /// The 1-based line, where it helps.
    pub line: Option<usize>,
    /// What is wrong.
    pub problem: String,
    /// How to fix it, when the problem does not say.
    pub fix: Option<String>,
}

impl Violation {
    /// Renders as `file[:line]: problem` plus an indented `fix:` line, with
    /// state files shown under `dir` (the folder as the user named it).
    pub fn display_in(&self, dir: &Path) -> String {
        let file = match &self.place {
            Place::State(p) => dir.join(p).display().to_string(),
            Place::Source(p) => p.display().to_string(),
        };
        let line = self.line.map(|l| format!(":{l}")).unwrap_or_default();
        match &self.fix {
            Some(fix) => format!("{file}{line}: {}\n  fix: {fix}", self.problem),
            None => format!("{file}{line}: {}", self.problem),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_in(Path::new("")))
    }
}

/// A violation for a state-file parse error.
pub fn state_violation(e: &StateError) -> Violation {
    let fix = match &e.kind {
        StateErrorKind::BadName(_) => Some("rename the file (and its references) using only a-z, 0-9 and _".into()),
        StateErrorKind::PrimaryHasPatch(_) | StateErrorKind::NotDescending(..) => Some(
            "a referable definition lists its primary id (ending in 00) first, then its backport ids, highest first"
                .into(),
        ),
        StateErrorKind::BackportWithoutPatch(_) => Some(
            "backport ids are a release branch's upper bound + 1; recreate them with `rollgate tv generate --name NAME --backport-branches M.m,...`"
                .into(),
        ),
        StateErrorKind::BadUnreferableName(_) => {
            Some("rename the file (and any upper bound naming it) using letters, digits and _ . + -".into())
        }
        StateErrorKind::DuplicateRelease { .. } => {
            Some("keep one line per release: the id it shipped with (its branch's upper bound then)".into())
        }
        StateErrorKind::UnexpectedFile => Some("move the file out of the transport folder".into()),
        StateErrorKind::MissingFile => Some("create it with one id, the oldest id this build still accepts".into()),
        _ => None,
    };
    Violation {
        place: Place::State(e.file.to_string_lossy().replace('\\', "/")),
        line: e.line,
        problem: e.kind.to_string(),
        fix,
    }
}

/// A violation for a source scan problem.
pub fn scan_violation(e: &ScanError) -> Violation {
    Violation { place: Place::Source(e.file.clone()), line: e.line, problem: e.kind.to_string(), fix: None }
}

fn referable_path(name: &str) -> String {
    format!("{REFERABLE_DIR}/{name}.csv")
}

fn unreferable_path(name: &str) -> String {
    format!("{UNREFERABLE_DIR}/{name}.csv")
}

/// Checks every rule and returns every violation, sorted by file and line.
/// `base` is the state at the base revision (`None`: unknown, so rule 4 and
/// the base part of rule 5 are skipped; an empty state: the folder is new).
pub fn validate(
    files: &StateFiles,
    refs: &References,
    scan_errors: &[ScanError],
    base: Option<&TransportState>,
) -> Vec<Violation> {
    validate_branch(files, refs, scan_errors, base, None)
}

/// [`validate`] for a checkout of `branch` (`None`: main, whose branch is
/// the highest upper bound file). On a release branch (a branch below the
/// highest upper bound file, as Elasticsearch tells them apart) only that
/// branch's upper bound is checked, and rules 6 and 7 are skipped: the other
/// upper bounds and the primary ids of backported definitions are main's,
/// and may be ahead of what this branch's folder shows.
pub fn validate_branch(
    files: &StateFiles,
    refs: &References,
    scan_errors: &[ScanError],
    base: Option<&TransportState>,
    branch: Option<Branch>,
) -> Vec<Violation> {
    let mut out: Vec<Violation> = scan_errors.iter().map(scan_violation).collect();
    let state = match TransportState::parse_all(files) {
        Ok(s) => s,
        Err(errors) => {
            out.extend(errors.iter().map(state_violation));
            return sorted(out);
        }
    };
    let release = branch.filter(|b| state.latest_branch().is_some_and(|l| *b < l));
    let mut v = Checker { files, state: &state, out, release };
    if let Some(b) = branch
        && !state.upper_bounds.contains_key(&b)
    {
        v.out.push(Violation {
            place: Place::State(format!("{UPPER_BOUNDS_DIR}/{b}.csv")),
            line: None,
            problem: format!("--branch {b}: there is no upper bound file for this branch"),
            fix: Some("pass the branch this checkout builds, one with an upper_bounds/<M.m>.csv file".into()),
        });
        return sorted(v.out);
    }
    v.references(refs);
    v.unique_ids(base);
    if let Some(base) = base {
        v.unchanged_at_base(base);
    }
    v.upper_bounds(base);
    v.density();
    if release.is_none() {
        v.highest_in_upper_bound();
        v.increments(base);
    }
    v.minimum_compatible();
    sorted(v.out)
}

fn sorted(mut v: Vec<Violation>) -> Vec<Violation> {
    v.sort_by(|a, b| (&a.place, a.line, &a.problem).cmp(&(&b.place, b.line, &b.problem)));
    v.dedup();
    v
}

struct Checker<'a> {
    files: &'a StateFiles,
    state: &'a TransportState,
    out: Vec<Violation>,
    /// The release branch being checked, when it is not main.
    release: Option<Branch>,
}

impl Checker<'_> {
    fn state_file(&mut self, path: String, problem: String, fix: Option<String>) {
        let line = first_data_line(self.files, &path);
        self.out.push(Violation { place: Place::State(path), line, problem, fix });
    }

    /// Every definition with its file: referable first.
    fn definitions(&self) -> impl Iterator<Item = (&Definition, String)> {
        let r = self.state.referable.values().map(|d| (d, referable_path(&d.name)));
        let u = self.state.unreferable.values().map(|d| (d, unreferable_path(&d.name)));
        r.chain(u)
    }

    fn references(&mut self, refs: &References) {
        let unreferenced: Vec<String> = self.state.referable.keys().filter(|n| !refs.contains(n)).cloned().collect();
        for name in unreferenced {
            self.state_file(
                referable_path(&name),
                format!("`{name}` is defined but no transport_version!(\"{name}\") references it under --src"),
                Some(
                    "reference it where the change it gates is serialized (or point --src at that code); a definition created in this change that is no longer needed is deleted by `rollgate tv generate`"
                        .to_string(),
                ),
            );
        }
        for (name, locations) in &refs.by_name {
            if self.state.referable.contains_key(name) {
                continue;
            }
            let Some(first) = locations.first() else { continue };
            let more = match locations.len() {
                1 => String::new(),
                n => format!(" (and {} more place{})", n - 1, if n == 2 { "" } else { "s" }),
            };
            let (problem, fix) = if self.state.unreferable.contains_key(name) {
                (
                    format!(
                        "transport_version!(\"{name}\"){more} names an unreferable definition ({}), which code cannot reference",
                        unreferable_path(name)
                    ),
                    "reference a referable definition, or declare a new transport version under another name".into(),
                )
            } else {
                (
                    format!("transport_version!(\"{name}\"){more} has no definition {}", referable_path(name)),
                    "run `rollgate tv generate` to create it with a new id (or fix the spelling)".into(),
                )
            };
            self.out.push(Violation {
                place: Place::Source(first.file.clone()),
                line: Some(first.line),
                problem,
                fix: Some(fix),
            });
        }
    }

    fn unique_ids(&mut self, base: Option<&TransportState>) {
        let mut owners: BTreeMap<TransportVersion, Vec<(String, String)>> = BTreeMap::new();
        for (d, path) in self.definitions() {
            for id in &d.ids {
                owners.entry(*id).or_default().push((d.name.clone(), path.clone()));
            }
        }
        for (id, mut defs) in owners {
            if defs.len() < 2 {
                continue;
            }
            // Keep the owner that has the id at the base (if any), else the first by path.
            defs.sort_by(|a, b| a.1.cmp(&b.1));
            let keeper = defs
                .iter()
                .position(|(n, _)| base.and_then(|b| b.definition(n)).is_some_and(|d| d.ids.contains(&id)))
                .unwrap_or(0);
            let (kept_name, kept_path) = defs[keeper].clone();
            for (i, (_, path)) in defs.into_iter().enumerate() {
                if i == keeper {
                    continue;
                }
                self.state_file(
                    path,
                    format!("id {id} is already defined by `{kept_name}` ({kept_path})"),
                    Some(
                        "each id belongs to one definition; for a definition created in this change run `rollgate tv generate` to allocate a fresh id"
                            .into(),
                    ),
                );
            }
        }
    }

    fn unchanged_at_base(&mut self, base: &TransportState) {
        const KEEP: &str = "ids that exist at the base never change (nodes already speak them): restore the file from the base; to undo a merged change, add a new transport version instead";
        for (name, old) in &base.referable {
            let path = referable_path(name);
            let Some(new) = self.state.referable.get(name) else {
                self.state_file(
                    path,
                    format!("`{name}` exists at the base (ids {}) but was removed", join(&old.ids)),
                    Some(KEEP.into()),
                );
                continue;
            };
            if new.primary() != old.primary() {
                self.state_file(
                    path.clone(),
                    format!("primary id changed from {} (at the base) to {}", old.primary(), new.primary()),
                    Some(KEEP.into()),
                );
            }
            for b in old.backports() {
                match new.backports().iter().find(|n| n.base() == b.base()) {
                    None => self.state_file(
                        path.clone(),
                        format!("backport id {b} (at the base) was removed"),
                        Some(KEEP.into()),
                    ),
                    Some(n) if n != b => self.state_file(
                        path.clone(),
                        format!("backport id changed from {b} (at the base) to {n}"),
                        Some(KEEP.into()),
                    ),
                    Some(_) => {}
                }
            }
        }
        for (name, old) in &base.unreferable {
            let path = unreferable_path(name);
            match self.state.unreferable.get(name) {
                None => self.state_file(
                    path,
                    format!("`{name}` exists at the base (id {}) but was removed", join(&old.ids)),
                    Some(KEEP.into()),
                ),
                Some(new) if new.ids != old.ids => self.state_file(
                    path,
                    format!("id changed from {} (at the base) to {}", join(&old.ids), join(&new.ids)),
                    Some(KEEP.into()),
                ),
                Some(_) => {}
            }
        }
    }

    fn upper_bounds(&mut self, base: Option<&TransportState>) {
        const REGENERATE: &str = "run `rollgate tv generate`, which recomputes the upper bounds";
        if self.state.upper_bounds.is_empty() {
            self.out.push(Violation {
                place: Place::State(format!("{UPPER_BOUNDS_DIR}/")),
                line: None,
                problem: "no upper bound file, so the current transport version is undefined".into(),
                fix: Some(
                    "create upper_bounds/<M.m>.csv naming the highest definition and its id, e.g. `initial_1_0,1000000`"
                        .into(),
                ),
            });
        }
        // The highest id of each base, and who holds it.
        let mut highest: BTreeMap<TransportVersion, (TransportVersion, String)> = BTreeMap::new();
        for (d, _) in self.definitions() {
            for id in &d.ids {
                let e = highest.entry(id.base()).or_insert((*id, d.name.clone()));
                if *id > e.0 {
                    *e = (*id, d.name.clone());
                }
            }
        }
        let bounds: Vec<_> = self
            .state
            .upper_bounds
            .iter()
            .filter(|(b, _)| self.release.is_none_or(|r| r == **b))
            .map(|(b, u)| (*b, u.clone()))
            .collect();
        for (branch, ub) in bounds {
            let path = format!("{UPPER_BOUNDS_DIR}/{branch}.csv");
            let Some(def) = self.state.definition(&ub.name) else {
                self.state_file(path, format!("names `{}`, which has no definition", ub.name), Some(REGENERATE.into()));
                continue;
            };
            if !def.ids.contains(&ub.id) {
                self.state_file(
                    path,
                    format!("id {} is not one of `{}`'s ids ({})", ub.id, ub.name, join(&def.ids)),
                    Some(REGENERATE.into()),
                );
                continue;
            }
            if let Some((top, holder)) = highest.get(&ub.id.base())
                && *top > ub.id
            {
                self.state_file(
                    path.clone(),
                    format!(
                        "id {} of `{}` is not the highest id with base {}: {top} of `{holder}` is later",
                        ub.id,
                        ub.name,
                        ub.id.base()
                    ),
                    Some(REGENERATE.into()),
                );
            }
            if let Some(old) = base.and_then(|b| b.upper_bounds.get(&branch))
                && ub.id.is_patch()
                && ub.id.base() != old.id.base()
            {
                self.state_file(
                    path,
                    format!(
                        "changes release branch {branch}'s base id from {} (at the base) to {}",
                        old.id.base(),
                        ub.id.base()
                    ),
                    Some(format!("a release branch keeps its base; restore the file from the base and {REGENERATE}")),
                );
            }
        }
    }

    /// Elasticsearch's density rule: the ids of one base are consecutive
    /// (a base's patch ids are its branch's upper bound + 1, + 2, ...). On a
    /// release branch only bases up to its own upper bound are checked.
    fn density(&mut self) {
        let limit = self.release.and_then(|r| self.state.upper_bounds.get(&r)).map(|u| u.id.base());
        let mut by_base: BTreeMap<TransportVersion, Vec<(TransportVersion, String, String)>> = BTreeMap::new();
        for (d, path) in self.definitions() {
            for id in &d.ids {
                by_base.entry(id.base()).or_default().push((*id, d.name.clone(), path.clone()));
            }
        }
        let mut found = Vec::new();
        for (base, mut ids) in by_base.into_iter().filter(|(b, _)| limit.is_none_or(|l| *b <= l)) {
            ids.sort();
            for w in ids.windows(2) {
                let ((lower, lower_name, _), (id, _, path)) = (&w[0], &w[1]);
                if id.id() > lower.id() + 1 {
                    found.push((
                        path.clone(),
                        format!(
                            "id {id} leaves a gap in base {base}: the next lower id is {lower} (`{lower_name}`); the ids of one base are consecutive"
                        ),
                    ));
                }
            }
        }
        for (path, problem) in found {
            self.state_file(
                path,
                problem,
                Some(
                    "a backport id is its branch's upper bound + 1; run `rollgate tv generate` to reallocate it".into(),
                ),
            );
        }
    }

    fn highest_in_upper_bound(&mut self) {
        let Some((def, path)) = self.definitions().max_by_key(|(d, _)| d.primary()) else { return };
        let top = def.primary();
        if self.state.upper_bounds.values().any(|u| u.id == top) {
            return;
        }
        let name = def.name.clone();
        self.state_file(
            path,
            format!("`{name}` has the highest id {top} but no upper_bounds file names it"),
            Some("run `rollgate tv generate`, which points the current branch's upper bound at it".into()),
        );
    }

    fn increments(&mut self, base: Option<&TransportState>) {
        let firsts: Vec<(TransportVersion, String)> =
            self.definitions().map(|(d, _)| (d.primary(), d.name.clone())).collect();
        let new: Vec<&Definition> = match base {
            Some(b) => self.state.referable.values().filter(|d| !b.referable.contains_key(&d.name)).collect(),
            // Without a base only the newest definition can be new.
            None => self.state.referable.values().max_by_key(|d| d.primary()).into_iter().collect(),
        };
        let mut found = Vec::new();
        for d in new {
            let p = d.primary();
            let prev = firsts.iter().filter(|(id, n)| *id < p && *n != d.name).max_by_key(|(id, _)| *id);
            if let Some((prev, prev_name)) = prev
                && p.id() - prev.id() > MAX_INCREMENT
            {
                found.push((
                    referable_path(&d.name),
                    format!(
                        "primary id {p} is {} above the previous highest id {prev} (`{prev_name}`), more than {MAX_INCREMENT}",
                        p.id() - prev.id()
                    ),
                ));
            }
        }
        for (path, problem) in found {
            self.state_file(
                path,
                problem,
                Some(format!(
                    "new ids are the current upper bound + at most {MAX_INCREMENT}; run `rollgate tv generate` to reallocate it"
                )),
            );
        }
    }

    fn minimum_compatible(&mut self) {
        let min = self.state.minimum_compatible;
        let path = MINIMUM_COMPATIBLE_FILE.to_string();
        if !self.state.all_ids().contains(&min) {
            self.state_file(
                path,
                format!("{min} is not the id of any definition"),
                Some(
                    "use the id of an existing definition, usually the first id of the oldest release this build still talks to (e.g. an unreferable initial_M_m definition)"
                        .into(),
                ),
            );
            return;
        }
        let current = match self.release {
            Some(r) => self.state.upper_bounds.get_key_value(&r),
            None => self.state.upper_bounds.iter().next_back(),
        };
        if let Some((branch, current)) = current
            && min > current.id
        {
            self.state_file(
                path,
                format!("{min} is above the current transport version {} (upper_bounds/{branch}.csv)", current.id),
                Some("the minimum compatible id is at or below the current id".into()),
            );
        }
    }
}

fn join(ids: &[TransportVersion]) -> String {
    ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("definitions/unreferable/initial_9_0.csv", "9000000\n"),
            ("definitions/referable/old_field.csv", "9100000\n"),
            ("definitions/referable/new_field.csv", "9101000,9000001\n"),
            ("upper_bounds/9.0.csv", "new_field,9000001\n"),
            ("upper_bounds/9.1.csv", "new_field,9101000\n"),
            ("constants/minimum_compatible.csv", "9000000\n"),
        ]
    }

    fn with(changes: &[(&'static str, Option<&'static str>)]) -> StateFiles {
        let mut e = good();
        for (p, c) in changes {
            e.retain(|(q, _)| q != p);
            if let Some(c) = c {
                e.push((p, c));
            }
        }
        StateFiles::from_pairs(&e)
    }

    fn problems(f: &StateFiles, refs: &[&str], base: Option<&TransportState>) -> Vec<String> {
        validate(f, &References::from_names(refs.iter().copied()), &[], base).iter().map(|v| v.to_string()).collect()
    }

    const REFS: &[&str] = &["old_field", "new_field"];

    #[test]
    fn a_good_folder_passes_with_and_without_base() {
        assert_eq!(problems(&StateFiles::from_pairs(&good()), REFS, None), Vec::<String>::new());
        let base = TransportState::parse(&with(&[
            ("definitions/referable/new_field.csv", None),
            ("upper_bounds/9.0.csv", Some("initial_9_0,9000000\n")),
            ("upper_bounds/9.1.csv", Some("old_field,9100000\n")),
        ]))
        .unwrap();
        assert_eq!(problems(&StateFiles::from_pairs(&good()), REFS, Some(&base)), Vec::<String>::new());
    }

    #[test]
    fn reports_every_violation() {
        let f = with(&[
            ("definitions/referable/old_field.csv", Some("9100000,9000001\n")),
            ("constants/minimum_compatible.csv", Some("42\n")),
            ("upper_bounds/9.1.csv", Some("ghost,9101000\n")),
        ]);
        let p = problems(&f, &["old_field", "new_field", "missing"], None);
        assert!(
            p.iter().any(|l| l.starts_with("definitions/referable/old_field.csv:1: id 9000001 is already defined"))
        );
        assert!(p.iter().any(|l| l.starts_with("constants/minimum_compatible.csv:1: 42 is not the id")));
        assert!(p.iter().any(|l| l.starts_with("upper_bounds/9.1.csv:1: names `ghost`")));
        assert!(p.iter().any(|l| l.starts_with("<test>:1: transport_version!(\"missing\") has no definition")));
        assert_eq!(p.len(), 4, "{p:#?}");
    }

    #[test]
    fn base_definitions_must_not_change() {
        let base = TransportState::parse(&StateFiles::from_pairs(&good())).unwrap();
        let f = with(&[
            ("definitions/referable/new_field.csv", Some("9102000,9000002\n")),
            ("upper_bounds/9.0.csv", Some("new_field,9000002\n")),
            ("upper_bounds/9.1.csv", Some("new_field,9102000\n")),
            ("definitions/unreferable/initial_9_0.csv", None),
            ("definitions/unreferable/initial_9_0_b.csv", Some("9000000\n")),
        ]);
        let p = problems(&f, REFS, Some(&base));
        assert!(p.iter().any(|l| l.contains("primary id changed from 9101000 (at the base) to 9102000")), "{p:#?}");
        assert!(p.iter().any(|l| l.contains("backport id changed from 9000001 (at the base) to 9000002")), "{p:#?}");
        assert!(p.iter().any(|l| l.contains("`initial_9_0` exists at the base (id 9000000) but was removed")));
    }

    #[test]
    fn a_release_branch_checks_only_its_own_upper_bound() {
        // 9.0 after a backport of main's `newer` (9102000 on main, 9000002 here); 9.1 is main's, behind.
        let f = with(&[
            ("definitions/referable/newer.csv", Some("9102000,9000002\n")),
            ("upper_bounds/9.0.csv", Some("newer,9000002\n")),
        ]);
        let refs = &["old_field", "new_field", "newer"];
        let main = problems(&f, refs, None);
        assert!(main.iter().any(|l| l.contains("has the highest id 9102000 but no upper_bounds file")), "{main:#?}");
        let on = |b: &str| -> Vec<String> {
            let r = References::from_names(refs.iter().copied());
            validate_branch(&f, &r, &[], None, Some(b.parse().unwrap())).iter().map(|v| v.to_string()).collect()
        };
        assert_eq!(on("9.0"), Vec::<String>::new());
        assert_eq!(on("9.1"), main, "the highest branch is main");
        assert_eq!(
            on("9.5"),
            [
                "upper_bounds/9.5.csv: --branch 9.5: there is no upper bound file for this branch\n  fix: pass the branch this checkout builds, one with an upper_bounds/<M.m>.csv file"
            ]
        );
        // Its own upper bound is still checked.
        let f = with(&[("definitions/referable/newer.csv", Some("9102000,9000002\n"))]);
        let r = References::from_names(refs.iter().copied());
        let v = validate_branch(&f, &r, &[], None, Some("9.0".parse().unwrap()));
        assert!(v.iter().any(|v| v.problem.contains("is not the highest id with base 9000000")), "{v:#?}");
    }

    #[test]
    fn ids_of_one_base_are_consecutive() {
        let f = with(&[
            ("definitions/referable/old_field.csv", Some("9100000,9000003\n")),
            ("upper_bounds/9.0.csv", Some("old_field,9000003\n")),
        ]);
        let p = problems(&f, REFS, None);
        assert_eq!(
            p,
            [
                "definitions/referable/old_field.csv:1: id 9000003 leaves a gap in base 9000000: the next lower id is 9000001 (`new_field`); the ids of one base are consecutive\n  fix: a backport id is its branch's upper bound + 1; run `rollgate tv generate` to reallocate it"
            ]
        );
        // On release branch 9.0 its own base is checked; above it, main's bases are not.
        let r = References::from_names(REFS.iter().copied());
        assert_eq!(validate_branch(&f, &r, &[], None, Some("9.0".parse().unwrap())).len(), 1);
    }

    #[test]
    fn parse_errors_are_all_reported() {
        let f = with(&[
            ("definitions/referable/old_field.csv", Some("9100001\n")),
            ("definitions/referable/new_field.csv", Some("9101000,9000000\n")),
        ]);
        let p = problems(&f, REFS, None);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].starts_with("definitions/referable/new_field.csv:1: the backport id 9000000"));
        assert!(p[1].starts_with("definitions/referable/old_field.csv:1: the primary id 9100001"));
    }
}

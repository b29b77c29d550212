//! `rollgate tv cut-release`: the transport/ side of cutting a release
//! branch from main. The computation and every check live in
//! `rollgate_version::cut`; this module parses the arguments, reads the
//! folder and the sources, prints the plan and writes it all-or-nothing.

use std::path::{Path, PathBuf};

use clap::Args;
use rollgate_version::TransportVersion;
use rollgate_version::cut::{Cut, CutError, CutOptions, cut_release};
use rollgate_version::state::{Branch, RELEASES_FILE};

use super::{DirArg, SrcArg, parse_id_arg, read_files, require_clean_scan, scan};
use crate::failure::{Failure, Outcome};

/// `rollgate tv cut-release`.
#[derive(Args, Debug)]
pub struct CutArgs {
    /// The release branch being cut, e.g. 2.0 (main's current branch, or a newer one).
    #[arg(value_name = "M.m", value_parser = parse_release_branch)]
    release: Branch,
    /// Main's new current branch, where new transport versions go after the cut (default: the next minor).
    #[arg(long, value_name = "M.m", value_parser = parse_release_branch)]
    next: Option<Branch>,
    /// The release name written to releases.csv (default: M.m; Elasticsearch writes M.m.0).
    #[arg(long, value_name = "NAME", value_parser = parse_release_name)]
    release_name: Option<String>,
    /// Raise constants/minimum_compatible.csv to this id (a defined id, or the id the cut creates).
    #[arg(long, value_name = "ID", value_parser = parse_id_arg)]
    minimum_compatible: Option<TransportVersion>,
    /// Print what would change and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: DirArg,
    #[command(flatten)]
    src: SrcArg,
}

/// The longest `M.m` accepted on the command line.
const MAX_BRANCH_ARG: usize = 32;

fn parse_release_branch(s: &str) -> Result<Branch, String> {
    if s.len() > MAX_BRANCH_ARG {
        let shown: String = s.chars().take(MAX_BRANCH_ARG).collect();
        return Err(format!("`{shown}…` is not a branch name: expected MAJOR.MINOR such as 9.1"));
    }
    super::parse_branch(s)
}

fn parse_release_name(s: &str) -> Result<String, String> {
    rollgate_version::state::check_release(s).map(|()| s.to_string()).map_err(|_| {
        let shown: String = s.chars().take(64).collect();
        let more = if s.chars().count() > 64 { "…" } else { "" };
        format!("`{shown}{more}` is not a release name: use letters, digits and . _ + - (at most 64 characters)")
    })
}

/// Runs `rollgate tv cut-release`.
pub fn cmd_cut_release(a: CutArgs) -> Outcome {
    let dir = &a.dir.dir;
    let files = read_files(dir)?;
    let scanned = scan(dir, &a.src)?;
    require_clean_scan(&scanned)?;
    let opts = CutOptions {
        release: a.release,
        next: a.next,
        release_name: a.release_name.clone(),
        minimum_compatible: a.minimum_compatible,
    };
    let cut = cut_release(&files, &scanned.refs, &opts).map_err(|e| refusal(dir, e))?;
    let planned = plan(dir, &cut);
    if !a.dry_run {
        super::write(dir, &cut.changes)?;
    }
    if a.json {
        let text = serde_json::to_string_pretty(&json(dir, &cut, &planned, a.dry_run))
            .map_err(|e| Failure::Internal(e.into()))?;
        println!("{text}");
    } else {
        report(dir, &cut, &planned, a.dry_run);
    }
    Ok(())
}

/// A refused cut, with every violation of an invalid folder on stderr.
fn refusal(dir: &Path, e: CutError) -> Failure {
    match &e {
        CutError::Invalid(violations) => {
            for v in violations {
                eprintln!("{}", v.display_in(dir));
            }
        }
        CutError::Internal(_) => {
            return Failure::Internal(anyhow::anyhow!("{}: {e}", dir.display()));
        }
        _ => {}
    }
    Failure::refused(format!("{}: {e}", dir.display()))
}

/// One file the cut writes.
struct Planned {
    path: PathBuf,
    /// `created`, `updated` or (releases.csv) `appended`.
    action: &'static str,
    /// What it holds, or (releases.csv) the appended line.
    shown: String,
}

fn plan(dir: &Path, cut: &Cut) -> Vec<Planned> {
    cut.changes
        .writes
        .iter()
        .map(|(rel, bytes)| {
            let path = dir.join(rel);
            let exists = path.exists();
            let text = String::from_utf8_lossy(bytes);
            if rel == RELEASES_FILE && exists {
                let line = text.lines().next_back().unwrap_or_default().to_string();
                return Planned { path, action: "appended", shown: line };
            }
            Planned { path, action: if exists { "updated" } else { "created" }, shown: text.trim_end().to_string() }
        })
        .collect()
}

fn report(dir: &Path, cut: &Cut, planned: &[Planned], dry_run: bool) {
    let would = if dry_run { "would be " } else { "" };
    println!(
        "release {} cut from {}: {} `{}` is its first id{}",
        cut.release,
        dir.display(),
        cut.initial.name,
        cut.initial.primary(),
        if dry_run { " (dry run: nothing written)" } else { "" }
    );
    for p in planned {
        let to = if p.action == "appended" { "to " } else { "" };
        println!("  {would}{} {to}{}: {}", p.action, p.path.display(), p.shown);
    }
    if cut.state.minimum_compatible != cut.previous_minimum {
        println!("  minimum compatible id raised from {} to {}", cut.previous_minimum, cut.state.minimum_compatible);
    }
    println!("main is now at branch {}: new transport versions follow {}", cut.next, cut.initial.primary());
    println!(
        "backport to the release branch with: rollgate tv generate --name NAME --backport-branches {}",
        cut.release
    );
    if !dry_run {
        println!("next: commit {} on main, then create the release branch from that commit", dir.display());
    }
}

fn json(dir: &Path, cut: &Cut, planned: &[Planned], dry_run: bool) -> serde_json::Value {
    let files: Vec<serde_json::Value> = planned
        .iter()
        .map(|p| serde_json::json!({ "path": p.path.display().to_string(), "action": p.action, "content": p.shown }))
        .collect();
    serde_json::json!({
        "dir": dir.display().to_string(),
        "release": cut.release.to_string(),
        "release_name": cut.release_name,
        "next": cut.next.to_string(),
        "initial": { "name": cut.initial.name, "id": cut.initial.primary().id() },
        "minimum_compatible": { "before": cut.previous_minimum.id(), "after": cut.state.minimum_compatible.id() },
        "dry_run": dry_run,
        "files": files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_arguments_are_bounded() {
        assert_eq!(parse_release_branch("9.10").unwrap(), "9.10".parse().unwrap());
        let long = parse_release_branch(&"9".repeat(100_000)).unwrap_err();
        assert!(long.len() < 120, "{long}");
        for bad in ["", "9", "9.x", "9.1.0", "-1.2", " 9.1", "99999999999.1"] {
            assert!(parse_release_branch(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_release_name("9.2.0").unwrap(), "9.2.0");
        let long = parse_release_name(&"x".repeat(10_000)).unwrap_err();
        assert!(long.len() < 200, "{long}");
        assert!(parse_release_name("9 2").is_err());
        assert!(parse_release_name("").is_err());
    }
}

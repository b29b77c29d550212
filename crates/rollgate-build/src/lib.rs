//! Build-script helper: turns a `transport/` state folder into typed
//! transport version constants and a `transport_version!` macro.
//!
//! ```no_run
//! // build.rs, in `fn main()`:
//! rollgate_build::compile("transport");
//! ```
//!
//! ```text
//! // src/lib.rs or src/main.rs, at the crate root, before any `mod` item:
//! rollgate::include_transport_versions!();
//!
//! const MY_FIELD: &rollgate::version::NamedTransportVersion = transport_version!("my_field");
//! ```
//!
//! A name without a definition fails the build with a message that names it
//! and says how to create it (`rollgate tv generate`). The current version is
//! the id of the current branch's upper bound: the highest `upper_bounds/`
//! file, or the branch named by the `ROLLGATE_TRANSPORT_BRANCH` environment
//! variable or [`Builder::branch`].

#![warn(missing_docs)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rollgate_version::TransportVersion;
use rollgate_version::state::{Branch, StateError, TransportState};

/// The file written into `OUT_DIR`.
pub const OUT_FILE: &str = "rollgate_transport_versions.rs";

/// Environment variable that selects the branch whose upper bound is current.
pub const BRANCH_ENV: &str = "ROLLGATE_TRANSPORT_BRANCH";

/// Why code generation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// The folder did not parse.
    State(StateError),
    /// The folder has no `upper_bounds/*.csv` file.
    NoUpperBound(PathBuf),
    /// The requested branch has no upper bound file.
    UnknownBranch(PathBuf, String),
    /// Two names map to the same Rust constant.
    ConstantClash(String, String),
    /// Writing the output failed.
    Io(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::State(e) => write!(f, "{e}"),
            BuildError::NoUpperBound(dir) => write!(
                f,
                "{}: no upper_bounds/<M.m>.csv file, so there is no current transport version; \
                 create one (e.g. upper_bounds/1.0.csv with `initial,1000000`)",
                dir.display()
            ),
            BuildError::UnknownBranch(dir, b) => write!(
                f,
                "{}: branch `{b}` (from {BRANCH_ENV} or Builder::branch) has no upper_bounds/{b}.csv",
                dir.display()
            ),
            BuildError::ConstantClash(a, b) => {
                write!(f, "transport version names `{a}` and `{b}` map to the same Rust constant; rename one")
            }
            BuildError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// Configures code generation for one state folder.
#[derive(Clone, Debug)]
pub struct Builder {
    dir: PathBuf,
    src: Option<PathBuf>,
    branch: Option<String>,
    crate_path: String,
}

impl Builder {
    /// Generates from the folder `dir` (relative to the crate's manifest dir
    /// when called from a build script).
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Builder { dir: dir.as_ref().to_path_buf(), src: None, branch: None, crate_path: "::rollgate::version".into() }
    }

    /// The crate's source folder, named in the command that an unknown
    /// `transport_version!` name suggests (default: `$CARGO_MANIFEST_DIR/src`).
    pub fn src(mut self, src: impl AsRef<Path>) -> Self {
        self.src = Some(src.as_ref().to_path_buf());
        self
    }

    /// Uses `branch`'s upper bound as the current version instead of the
    /// highest one (the `ROLLGATE_TRANSPORT_BRANCH` variable overrides this).
    pub fn branch(mut self, branch: impl Into<String>) -> Self {
        self.branch = Some(branch.into());
        self
    }

    /// The path of the module exporting `TransportVersion`,
    /// `NamedTransportVersion` and `TransportVersionSet` (default
    /// `::rollgate::version`).
    pub fn crate_path(mut self, path: impl Into<String>) -> Self {
        self.crate_path = path.into();
        self
    }

    /// Parses the folder and renders the Rust source.
    ///
    /// Paths in errors and in the generated messages are absolute (a build
    /// script runs in the crate's folder, which is rarely where the reader
    /// runs `rollgate`), so the suggested command works from anywhere.
    pub fn render(&self) -> Result<String, BuildError> {
        let dir = absolute(&self.dir);
        let state = TransportState::load(&dir).map_err(BuildError::State)?;
        let branch = std::env::var(BRANCH_ENV).ok().filter(|b| !b.is_empty()).or_else(|| self.branch.clone());
        let src = self
            .src
            .as_deref()
            .map(absolute)
            .or_else(|| std::env::var_os("CARGO_MANIFEST_DIR").map(|m| absolute(&PathBuf::from(m).join("src"))));
        render_with(&state, &dir, src.as_deref(), branch.as_deref(), &self.crate_path)
    }

    /// Renders into `$OUT_DIR/rollgate_transport_versions.rs` and tells cargo
    /// to rerun when the folder or the branch variable changes.
    pub fn emit(&self) -> Result<(), BuildError> {
        println!("cargo:rerun-if-changed={}", self.dir.display());
        println!("cargo:rerun-if-env-changed={BRANCH_ENV}");
        let source = self.render()?;
        let out = std::env::var_os("OUT_DIR")
            .ok_or_else(|| BuildError::Io("OUT_DIR is not set: call emit() from a build script".into()))?;
        let path = Path::new(&out).join(OUT_FILE);
        // Only rewrite when changed, so dependent crates do not rebuild needlessly.
        if std::fs::read_to_string(&path).ok().as_deref() != Some(source.as_str()) {
            std::fs::write(&path, source).map_err(|e| BuildError::Io(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }
}

/// For build scripts: generates from `dir`, and on error prints the message
/// and fails the build.
pub fn compile(dir: impl AsRef<Path>) {
    if let Err(e) = Builder::new(dir).emit() {
        eprintln!("error: transport versions: {e}");
        println!("cargo:warning=transport versions: {e}");
        std::process::exit(1);
    }
}

/// The Rust constant name for a transport version name.
pub fn const_name(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with(|c: char| c.is_ascii_digit()) { format!("V_{upper}") } else { upper }
}

/// `path` made absolute and free of `..` when it exists (as given otherwise).
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf())
}

/// A path as a shell word: quoted when it holds anything but plain characters.
fn shell_word(path: &Path) -> String {
    let s = path.display().to_string().replace('\\', "/");
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b)) {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Renders the generated source for `state` (exposed for tests and tools).
pub fn render(
    state: &TransportState,
    dir: &Path,
    branch: Option<&str>,
    crate_path: &str,
) -> Result<String, BuildError> {
    render_with(state, dir, None, branch, crate_path)
}

/// Like [`render`], naming `src` (the crate's source folder) in the command
/// that an unknown `transport_version!` name suggests.
pub fn render_with(
    state: &TransportState,
    dir: &Path,
    src: Option<&Path>,
    branch: Option<&str>,
    crate_path: &str,
) -> Result<String, BuildError> {
    let (branch, upper) = match branch {
        Some(b) => {
            let parsed: Branch = b.parse().map_err(|_| BuildError::UnknownBranch(dir.to_path_buf(), b.to_string()))?;
            let ub = state
                .upper_bounds
                .get(&parsed)
                .ok_or_else(|| BuildError::UnknownBranch(dir.to_path_buf(), b.to_string()))?;
            (parsed, ub)
        }
        None => {
            let (b, ub) =
                state.upper_bounds.iter().next_back().ok_or_else(|| BuildError::NoUpperBound(dir.to_path_buf()))?;
            (*b, ub)
        }
    };
    let current = upper.id;
    let mut consts = std::collections::BTreeMap::new();
    for name in state.referable.keys() {
        if let Some(prev) = consts.insert(const_name(name), name.clone()) {
            return Err(BuildError::ConstantClash(prev, name.clone()));
        }
    }
    let known: Vec<TransportVersion> = state.all_ids().into_iter().filter(|id| *id <= current).collect();
    let dir_shown = dir.display().to_string().replace('\\', "/");
    let ids = |ids: &[TransportVersion]| ids.iter().map(|i| format!("V::from_id({i})")).collect::<Vec<_>>().join(", ");

    let mut s = String::new();
    let _ = writeln!(s, "// @generated by rollgate-build from {dir_shown:?} (branch {branch}). Do not edit.");
    let _ = writeln!(s, "/// Transport versions generated from {dir_shown:?}: one constant per referable");
    let _ = writeln!(s, "/// definition, plus this build's current and minimum compatible versions.");
    let _ = writeln!(s, "#[allow(dead_code)]\npub mod transport_versions {{");
    let _ = writeln!(
        s,
        "    use {crate_path}::{{NamedTransportVersion as N, TransportVersion as V, TransportVersionSet}};"
    );
    let _ =
        writeln!(s, "    /// The branch whose upper bound is [`CURRENT`].\n    pub const BRANCH: &str = \"{branch}\";");
    let _ = writeln!(
        s,
        "    /// The highest transport version this build speaks (upper bound `{}` of branch {branch}).",
        upper.name
    );
    let _ = writeln!(s, "    pub const CURRENT: V = V::from_id({current});");
    let _ = writeln!(s, "    /// The lowest transport version this build accepts from a peer.");
    let _ = writeln!(s, "    pub const MINIMUM_COMPATIBLE: V = V::from_id({});", state.minimum_compatible);
    let _ =
        writeln!(s, "    /// Every id this build knows, ascending.\n    pub const KNOWN: &[V] = &[{}];", ids(&known));
    let releases =
        state.releases.iter().map(|(r, id)| format!("({r:?}, V::from_id({id}))")).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        s,
        "    /// `releases.csv`: (release, id), ascending by id.\n    pub const RELEASES: &[(&str, V)] = &[{releases}];"
    );
    let _ = writeln!(
        s,
        "    /// Everything the handshake needs to know about this build's versions.\n    pub const SET: TransportVersionSet = TransportVersionSet {{ current: CURRENT, minimum_compatible: MINIMUM_COMPATIBLE, known: KNOWN, releases: RELEASES }};"
    );
    for (cname, name) in &consts {
        let def = &state.referable[name];
        let _ = writeln!(s, "    /// `transport_version!(\"{name}\")`");
        let _ = writeln!(s, "    pub const {cname}: N = N::new({name:?}, &[{}]);", ids(&def.ids));
    }
    let all = consts.keys().cloned().collect::<Vec<_>>().join(", ");
    let _ = writeln!(s, "    /// Every referable definition, by name.\n    pub const ALL: &[N] = &[{all}];");
    let _ = writeln!(
        s,
        "    /// Looks a definition up by name at run time.\n    pub fn by_name(name: &str) -> Option<&'static N> {{ ALL.iter().find(|n| n.name() == name) }}"
    );
    let _ = writeln!(s, "}}\n");
    let _ = writeln!(s, "/// Resolves a transport version name at compile time: `transport_version!(\"name\")`.");
    let _ = writeln!(s, "#[allow(unused_macros)]\nmacro_rules! transport_version {{");
    for (cname, name) in &consts {
        let _ = writeln!(s, "    ({name:?}) => {{ &$crate::transport_versions::{cname} }};");
    }
    let src_shown = src.map(shell_word).unwrap_or_else(|| "<the crate's src folder>".into());
    let unknown = [
        "unknown transport version `".to_string(),
        format!("`: there is no {dir_shown}/definitions/referable/"),
        format!(
            ".csv. Create it with `rollgate tv generate --dir {} --src {src_shown}` (it finds transport_version!(\"",
            shell_word(dir)
        ),
        "\") in the code and allocates an id), or fix the spelling.".to_string(),
    ]
    .map(|piece| format!("{piece:?}"));
    let _ = writeln!(
        s,
        "    ($name:literal) => {{ ::core::compile_error!(::core::concat!({}, $name, {}, $name, {}, $name, {})) }};",
        unknown[0], unknown[1], unknown[2], unknown[3]
    );
    let _ = writeln!(
        s,
        "    ($($other:tt)*) => {{ ::core::compile_error!(\"transport_version! takes one string literal, e.g. transport_version!(\\\"my_change\\\")\") }};"
    );
    let _ = writeln!(s, "}}\n#[allow(unused_imports)]\npub(crate) use transport_version;");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (p, c) in entries {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        dir
    }

    #[test]
    fn renders_constants_and_macro_arms() {
        let dir = folder(&[
            ("definitions/referable/new_field.csv", "2002000,1001001\n"),
            ("definitions/referable/9lives.csv", "2001000\n"),
            ("definitions/unreferable/initial.csv", "1000000\n"),
            ("upper_bounds/2.0.csv", "new_field,2002000\n"),
            ("upper_bounds/1.0.csv", "new_field,1001001\n"),
            ("constants/minimum_compatible.csv", "1000000\n"),
        ]);
        let src = Builder::new(dir.path()).render().unwrap();
        assert!(src.contains("pub const CURRENT: V = V::from_id(2002000);"), "{src}");
        assert!(
            src.contains(
                "pub const NEW_FIELD: N = N::new(\"new_field\", &[V::from_id(2002000), V::from_id(1001001)]);"
            )
        );
        assert!(src.contains("pub const V_9LIVES: N"));
        assert!(src.contains("(\"new_field\") => { &$crate::transport_versions::NEW_FIELD };"));
        assert!(src.contains(
            "KNOWN: &[V] = &[V::from_id(1000000), V::from_id(1001001), V::from_id(2001000), V::from_id(2002000)]"
        ));
        let on_1_0 = Builder::new(dir.path()).branch("1.0").render().unwrap();
        assert!(on_1_0.contains("pub const CURRENT: V = V::from_id(1001001);"));
        assert!(on_1_0.contains("KNOWN: &[V] = &[V::from_id(1000000), V::from_id(1001001)]"));
        let e = Builder::new(dir.path()).branch("3.0").render().unwrap_err();
        assert!(e.to_string().contains("branch `3.0`"), "{e}");
    }

    #[test]
    fn unknown_names_suggest_a_command_that_works_from_anywhere() {
        let dir = folder(&[
            ("definitions/unreferable/initial.csv", "1000000\n"),
            ("upper_bounds/1.0.csv", "initial,1000000\n"),
            ("constants/minimum_compatible.csv", "1000000\n"),
        ]);
        // A build script passes a path relative to its crate, e.g. `../../transport`.
        let crate_dir = dir.path().join("crates/svc");
        std::fs::create_dir_all(&crate_dir).unwrap();
        let src = Builder::new(crate_dir.join("../..")).src(crate_dir.join("src")).render().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let expected = format!("--dir {} --src {}/crates/svc/src", root.display(), root.display());
        assert!(src.contains(&expected), "{expected}\n{src}");
        assert!(src.contains(&format!("there is no {}/definitions/referable/", root.display())), "{src}");
        assert!(!src.contains("<your src dir>"));

        // Paths that need quoting are quoted for the shell and escaped for Rust.
        let state = TransportState::load(dir.path()).unwrap();
        let odd = render_with(&state, Path::new("/w s/it's \"x\"/transport"), Some(Path::new("/w s/src")), None, "::v")
            .unwrap();
        assert!(odd.contains(r#"--dir '/w s/it'\\''s \"x\"/transport' --src '/w s/src'"#), "{odd}");
        assert!(odd.contains(r#"// @generated by rollgate-build from "/w s/it's \"x\"/transport""#), "{odd}");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = folder(&[
            ("definitions/referable/new_field.csv", "2002000,oops\n"),
            ("upper_bounds/2.0.csv", "new_field,2002000\n"),
            ("constants/minimum_compatible.csv", "1000000\n"),
        ]);
        let e = Builder::new(dir.path()).render().unwrap_err().to_string();
        assert!(e.contains("definitions/referable/new_field.csv:1: `oops`"), "{e}");
        let empty = folder(&[("constants/minimum_compatible.csv", "1000000\n")]);
        let e = Builder::new(empty.path()).render().unwrap_err().to_string();
        assert!(e.contains("no upper_bounds"), "{e}");
    }
}

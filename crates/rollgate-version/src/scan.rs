//! Finds `transport_version!("name")` references in Rust source text.
//!
//! The wire codec's derive attributes count too: `#[wire(since = "name")]`
//! and `#[wire(until = "name")]` expand to `transport_version!("name")`, so a
//! name used only in a field attribute is a reference like any other.
//!
//! Only the literal call counts: `transport_version!("name")` (with `(`,
//! `[` or `{`, optionally path-qualified such as `crate::transport_version!`).
//! Anything else as the argument (`transport_version!(NAME)`,
//! `transport_version!(concat!(..))`, a raw string, two tokens) is an error
//! naming the file and line, because neither the generator nor the build can
//! tell which definition it needs. A literal whose text is not
//! `[a-z0-9_]+` is an error too.
//!
//! The scanner is a small Rust lexer: it skips `//` line comments (so doc
//! comments too), nested `/* */` block comments, string, byte-string, raw
//! string and character literals, so an example in a comment or a message in
//! a string is never taken for a reference.
//!
//! This module only looks at text; walking directories is the caller's job
//! (the CLI), within [`MAX_SOURCE_FILES`], [`MAX_SOURCE_ENTRIES`] and
//! [`MAX_SOURCE_FILE_BYTES`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::state::is_valid_name;

/// Largest source file scanned, in bytes; a larger `.rs` file is an error.
pub const MAX_SOURCE_FILE_BYTES: usize = 4 << 20;
/// Most `.rs` files scanned in one run.
pub const MAX_SOURCE_FILES: usize = 20_000;
/// Most directory entries visited in one run (files of any kind and folders).
pub const MAX_SOURCE_ENTRIES: usize = 200_000;
/// Longest argument text quoted back in an error.
const MAX_QUOTED: usize = 60;

/// The macro whose literal calls are references.
pub const MACRO_NAME: &str = "transport_version";

/// Where a reference (or a problem) is: a source file and a 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// The file, as the caller named it.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Every referenced name and where it is referenced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    /// Name -> locations, in scan order.
    pub by_name: BTreeMap<String, Vec<Location>>,
}

impl References {
    /// Records a reference.
    pub fn add(&mut self, name: &str, at: Location) {
        self.by_name.entry(name.to_string()).or_default().push(at);
    }

    /// Whether `name` is referenced.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The referenced names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The first place `name` is referenced.
    pub fn first(&self, name: &str) -> Option<&Location> {
        self.by_name.get(name).and_then(|l| l.first())
    }

    /// Builds references from `(name, file, line)` triples (for tests and tools).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> References {
        let mut r = References::default();
        for n in names {
            r.add(n, Location { file: PathBuf::from("<test>"), line: 1 });
        }
        r
    }
}

/// A problem found while scanning sources.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {kind}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ScanError {
    /// The file (or the `--src` directory for folder-wide limits).
    pub file: PathBuf,
    /// The 1-based line, when the problem is on a line.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: ScanErrorKind,
}

/// What is wrong with a source reference or the source tree.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScanErrorKind {
    /// The macro argument is not one plain string literal.
    #[error(
        "transport_version! must be called with one string literal, e.g. transport_version!(\"my_change\"), found `{0}`; the generator and the build only understand literal names"
    )]
    NotALiteral(String),
    /// The literal is not a valid name.
    #[error(
        "`{0}` is not a valid transport version name: use only a-z, 0-9 and _ (at most {max} characters)",
        max = crate::state::MAX_NAME_LEN
    )]
    BadName(String),
    /// A source file over [`MAX_SOURCE_FILE_BYTES`].
    #[error(
        "source file is over the limit of {MAX_SOURCE_FILE_BYTES} bytes; move generated or vendored code out of --src"
    )]
    TooLarge,
    /// A source file that is not UTF-8.
    #[error("source file is not valid UTF-8")]
    NotUtf8,
    /// Too many files under the `--src` directories.
    #[error(
        "more than {MAX_SOURCE_FILES} .rs files or {MAX_SOURCE_ENTRIES} entries under --src; point --src at the crates that use transport versions"
    )]
    TooManyFiles,
    /// A `--src` path that does not exist.
    #[error("no such source directory (pass --src DIR, the folder holding the code that calls transport_version!)")]
    MissingSource,
    /// Reading failed.
    #[error("cannot read: {0}")]
    Io(String),
}

/// Scans one file's text, adding its references to `refs` and its problems
/// to `errors`. Never panics, whatever the text.
pub fn scan_source(file: &Path, text: &str, refs: &mut References, errors: &mut Vec<ScanError>) {
    let mut lx = Lexer { b: text.as_bytes(), i: 0, line: 1 };
    while let Some(c) = lx.peek(0) {
        match c {
            b'\n' => lx.bump(),
            b'/' if lx.peek(1) == Some(b'/') => lx.skip_line_comment(),
            b'/' if lx.peek(1) == Some(b'*') => lx.skip_block_comment(),
            b'"' => lx.skip_string(),
            b'\'' => lx.skip_char_or_lifetime(),
            b'#' => lx.attribute(file, refs, errors),
            c if is_ident_start(c) => {
                if let Some(raw_hashes) = lx.raw_string_prefix() {
                    lx.skip_raw_string(raw_hashes);
                    continue;
                }
                if (c == b'b' || c == b'c') && lx.peek(1) == Some(b'"') {
                    lx.bump();
                    lx.skip_string();
                    continue;
                }
                if c == b'b' && lx.peek(1) == Some(b'\'') {
                    lx.bump();
                    lx.skip_char_or_lifetime();
                    continue;
                }
                let start = lx.i;
                while lx.peek(0).is_some_and(is_ident_continue) {
                    lx.bump();
                }
                if &lx.b[start..lx.i] == MACRO_NAME.as_bytes() {
                    lx.macro_call(file, refs, errors);
                }
            }
            c if c.is_ascii_digit() => {
                // Skip numbers whole so suffixes (`1u8`) are not read as identifiers.
                while lx.peek(0).is_some_and(is_ident_continue) {
                    lx.bump();
                }
            }
            _ => lx.bump(),
        }
    }
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_continue(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.b.get(self.i + ahead).copied()
    }

    fn bump(&mut self) {
        match self.b.get(self.i) {
            Some(b'\n') => self.line += 1,
            Some(_) => {}
            None => return,
        }
        self.i += 1;
    }

    fn skip_line_comment(&mut self) {
        while self.peek(0).is_some_and(|c| c != b'\n') {
            self.bump();
        }
    }

    fn skip_block_comment(&mut self) {
        let mut depth = 0usize;
        while let Some(c) = self.peek(0) {
            if c == b'/' && self.peek(1) == Some(b'*') {
                depth += 1;
                self.bump();
                self.bump();
            } else if c == b'*' && self.peek(1) == Some(b'/') {
                self.bump();
                self.bump();
                depth -= 1;
                if depth == 0 {
                    return;
                }
            } else {
                self.bump();
            }
        }
    }

    /// Skips a `"..."` literal starting at the quote.
    fn skip_string(&mut self) {
        self.bump();
        while let Some(c) = self.peek(0) {
            match c {
                b'\\' => {
                    self.bump();
                    if self.peek(0).is_some() {
                        self.bump();
                    }
                }
                b'"' => {
                    self.bump();
                    return;
                }
                _ => self.bump(),
            }
        }
    }

    /// `r"`, `r#"`, `br"`, `cr##"`...: the number of `#` when a raw string
    /// starts here.
    fn raw_string_prefix(&self) -> Option<usize> {
        let mut j = self.i;
        if matches!(self.b.get(j), Some(b'b' | b'c')) {
            j += 1;
        }
        if self.b.get(j) != Some(&b'r') {
            return None;
        }
        j += 1;
        let hashes = self.b[j..].iter().take_while(|c| **c == b'#').count();
        (self.b.get(j + hashes) == Some(&b'"')).then_some(hashes)
    }

    fn skip_raw_string(&mut self, hashes: usize) {
        while self.peek(0) != Some(b'"') {
            self.bump();
        }
        self.bump();
        while let Some(c) = self.peek(0) {
            self.bump();
            if c == b'"' && self.b[self.i..].iter().take(hashes).filter(|h| **h == b'#').count() == hashes {
                for _ in 0..hashes {
                    self.bump();
                }
                return;
            }
        }
    }

    /// A `'` starts a character literal (`'a'`, `'\n'`, `'\u{1F600}'`) or a
    /// lifetime / label (`'a`); skip accordingly.
    fn skip_char_or_lifetime(&mut self) {
        self.bump();
        match self.peek(0) {
            Some(b'\\') => {
                // Escaped char literal: up to the closing quote on this line.
                self.bump();
                self.bump();
                while let Some(c) = self.peek(0) {
                    if c == b'\n' {
                        return;
                    }
                    self.bump();
                    if c == b'\'' {
                        return;
                    }
                }
            }
            Some(_) => {
                // One (possibly multi-byte) character then a quote: a literal.
                let len = utf8_len(self.b[self.i]);
                if self.b.get(self.i + len) == Some(&b'\'') {
                    for _ in 0..=len {
                        self.bump();
                    }
                }
                // Otherwise a lifetime: the identifier is lexed normally.
            }
            None => {}
        }
    }

    fn skip_whitespace(&mut self) {
        while let Some(c) = self.peek(0) {
            if c.is_ascii_whitespace() {
                self.bump();
            } else if c == b'/' && self.peek(1) == Some(b'/') {
                self.skip_line_comment();
            } else if c == b'/' && self.peek(1) == Some(b'*') {
                self.skip_block_comment();
            } else {
                return;
            }
        }
    }

    /// After the identifier `transport_version`: a macro call when `!` and an
    /// opening delimiter follow (not `macro_rules! transport_version {`).
    fn macro_call(&mut self, file: &Path, refs: &mut References, errors: &mut Vec<ScanError>) {
        let save = (self.i, self.line);
        self.skip_whitespace();
        if self.peek(0) != Some(b'!') {
            (self.i, self.line) = save;
            return;
        }
        self.bump();
        self.skip_whitespace();
        let close = match self.peek(0) {
            Some(b'(') => b')',
            Some(b'[') => b']',
            Some(b'{') => b'}',
            _ => {
                (self.i, self.line) = save;
                return;
            }
        };
        let line = save.1;
        self.bump();
        self.skip_whitespace();
        let arg_start = self.i;
        let literal = if self.peek(0) == Some(b'"') {
            let content_start = self.i + 1;
            self.skip_string();
            let content_end = self.i.saturating_sub(1).max(content_start);
            Some(String::from_utf8_lossy(&self.b[content_start..content_end]).into_owned())
        } else {
            None
        };
        self.skip_whitespace();
        match literal {
            Some(name) if self.peek(0) == Some(close) => {
                self.bump();
                if is_valid_name(&name) {
                    refs.add(&name, Location { file: file.to_path_buf(), line });
                } else {
                    errors.push(ScanError {
                        file: file.to_path_buf(),
                        line: Some(line),
                        kind: ScanErrorKind::BadName(quote(&name)),
                    });
                }
            }
            _ => {
                let found = self.argument_text(arg_start, close);
                errors.push(ScanError {
                    file: file.to_path_buf(),
                    line: Some(line),
                    kind: ScanErrorKind::NotALiteral(found),
                });
            }
        }
    }

    /// At `#`: when a `#[wire(...)]` attribute starts here, records the names
    /// of its `since = "..."` / `until = "..."` entries. Anything else: steps
    /// over the `#` and lets the main loop lex the rest.
    fn attribute(&mut self, file: &Path, refs: &mut References, errors: &mut Vec<ScanError>) {
        self.bump();
        let save = (self.i, self.line);
        self.skip_whitespace();
        if self.peek(0) != Some(b'[') {
            (self.i, self.line) = save;
            return;
        }
        self.bump();
        self.skip_whitespace();
        let start = self.i;
        while self.peek(0).is_some_and(is_ident_continue) {
            self.bump();
        }
        let is_wire = &self.b[start..self.i] == b"wire";
        self.skip_whitespace();
        if !is_wire || self.peek(0) != Some(b'(') {
            (self.i, self.line) = save;
            return;
        }
        self.bump();
        // Inside `wire( ... )`: entries separated by commas, up to the closing paren.
        let mut depth = 0usize;
        while let Some(c) = self.peek(0) {
            match c {
                b')' if depth == 0 => {
                    self.bump();
                    return;
                }
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    self.bump();
                }
                b')' | b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    self.bump();
                }
                b'"' => self.skip_string(),
                b'/' if matches!(self.peek(1), Some(b'/') | Some(b'*')) => self.skip_whitespace(),
                c if is_ident_start(c) => {
                    let key_start = self.i;
                    let line = self.line;
                    while self.peek(0).is_some_and(is_ident_continue) {
                        self.bump();
                    }
                    let key = &self.b[key_start..self.i];
                    if depth != 0 || (key != b"since" && key != b"until") {
                        continue;
                    }
                    self.skip_whitespace();
                    if self.peek(0) != Some(b'=') {
                        continue;
                    }
                    self.bump();
                    self.skip_whitespace();
                    let value_start = self.i;
                    if self.peek(0) == Some(b'"') {
                        let content_start = self.i + 1;
                        self.skip_string();
                        let content_end = self.i.saturating_sub(1).max(content_start);
                        let name = String::from_utf8_lossy(&self.b[content_start..content_end]).into_owned();
                        if is_valid_name(&name) {
                            refs.add(&name, Location { file: file.to_path_buf(), line });
                        } else {
                            errors.push(ScanError {
                                file: file.to_path_buf(),
                                line: Some(line),
                                kind: ScanErrorKind::BadName(quote(&name)),
                            });
                        }
                    } else {
                        let found = self.argument_text(value_start, b')');
                        errors.push(ScanError {
                            file: file.to_path_buf(),
                            line: Some(line),
                            kind: ScanErrorKind::NotALiteral(found),
                        });
                    }
                }
                _ => self.bump(),
            }
        }
    }

    /// The argument text from `start` up to the matching `close` on the same
    /// line (bounded), for the error message. Leaves the position where the
    /// lexer was, so the argument's own tokens are still lexed.
    fn argument_text(&self, start: usize, close: u8) -> String {
        let open = match close {
            b')' => b'(',
            b']' => b'[',
            _ => b'{',
        };
        let mut depth = 0usize;
        let mut end = start;
        while let Some(&c) = self.b.get(end) {
            if c == b'\n' {
                break;
            }
            if c == open {
                depth += 1;
            } else if c == close {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            end += 1;
        }
        quote(String::from_utf8_lossy(&self.b[start..end]).trim())
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// Shortens text quoted back in an error to [`MAX_QUOTED`] characters.
fn quote(s: &str) -> String {
    if s.chars().count() <= MAX_QUOTED {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX_QUOTED).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Found = Vec<(String, usize)>;
    type Problems = Vec<(usize, ScanErrorKind)>;

    fn scan(text: &str) -> (Found, Problems) {
        let mut refs = References::default();
        let mut errors = Vec::new();
        scan_source(Path::new("src/lib.rs"), text, &mut refs, &mut errors);
        let mut found: Vec<(String, usize)> =
            refs.by_name.iter().flat_map(|(n, ls)| ls.iter().map(move |l| (n.clone(), l.line))).collect();
        found.sort_by_key(|(_, l)| *l);
        (found, errors.into_iter().map(|e| (e.line.unwrap_or(0), e.kind)).collect())
    }

    #[test]
    fn finds_literal_calls_with_lines() {
        let src = "use x;\nconst A: &N = transport_version!(\"alpha\");\nfn f() {\n    if v.supports(crate::transport_version![ \"beta_2\" ]) {}\n    let _ = transport_version! { \"alpha\" };\n}\n";
        let (found, errors) = scan(src);
        assert_eq!(found, vec![("alpha".into(), 2), ("beta_2".into(), 4), ("alpha".into(), 5)]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn skips_comments_and_strings() {
        let src = r####"
// transport_version!("in_line_comment")
/// transport_version!("in_doc_comment")
//! transport_version!("in_inner_doc")
/* transport_version!("in_block") /* nested transport_version!("deeper") */ still transport_version!(X) */
/** transport_version!("in_block_doc") */
const S: &str = "transport_version!(\"in_string\")";
const R: &str = r#"transport_version!("in_raw_string")"#;
const B: &[u8] = b"transport_version!(\"in_bytes\")";
const C: char = '"'; const D: char = '\''; fn g<'a>(x: &'a str) {}
macro_rules! transport_version { ($n:literal) => {}; }
pub(crate) use transport_version;
let my_transport_version = 1; not_transport_version!("nope");
transport_version!("real")
"####;
        let (found, errors) = scan(src);
        assert_eq!(found, vec![("real".into(), 14)]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn wire_attributes_are_references() {
        let src = "#[derive(Encode, Decode)]\npub struct Ping {\n    pub seq: u64,\n    #[wire(since = \"ping_payload\")]\n    pub payload: Vec<u8>,\n    #[wire( default = \"7\", until = \"drop_addr\" )]\n    pub addr: u32,\n    #[serde(since = \"not_ours\")]\n    #[wire(tag = 3)] #[doc = \"x\"]\n    pub z: u8,\n}\n";
        let (found, problems) = scan(src);
        assert_eq!(found, vec![("ping_payload".into(), 4), ("drop_addr".into(), 6)]);
        assert!(problems.is_empty(), "{problems:?}");
        let (found, problems) = scan("#[wire(since = NAME)]\n#[wire(until = \"Bad\")]\n");
        assert!(found.is_empty());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].0, 1);
        assert!(problems[0].1.to_string().contains("NAME"), "{problems:?}");
        assert_eq!(problems[1].0, 2);
    }

    #[test]
    fn non_literal_arguments_are_errors_with_lines() {
        let src = "transport_version!(NAME);\n\ntransport_version!(concat!(\"a\", \"b\"));\ntransport_version!(\"a\" \"b\");\ntransport_version!(r\"raw\");\ntransport_version!();\n";
        let (found, errors) = scan(src);
        assert!(found.is_empty(), "{found:?}");
        let lines: Vec<usize> = errors.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 3, 4, 5, 6]);
        assert_eq!(errors[0].1, ScanErrorKind::NotALiteral("NAME".into()));
        assert_eq!(errors[1].1, ScanErrorKind::NotALiteral("concat!(\"a\", \"b\")".into()));
        assert_eq!(errors[4].1, ScanErrorKind::NotALiteral(String::new()));
    }

    #[test]
    fn bad_names_are_errors() {
        let (found, errors) =
            scan("transport_version!(\"Bad-Name\");\ntransport_version!(\"\");\ntransport_version!(\"a\\u{0}\");");
        assert!(found.is_empty());
        assert_eq!(errors.len(), 3);
        assert_eq!(errors[0], (1, ScanErrorKind::BadName("Bad-Name".into())));
        let long = format!("transport_version!(\"{}\")", "a".repeat(500));
        let (_, errors) = scan(&long);
        assert!(matches!(&errors[0].1, ScanErrorKind::BadName(s) if s.chars().count() == MAX_QUOTED + 1));
    }

    #[test]
    fn error_messages_name_file_and_line() {
        let mut refs = References::default();
        let mut errors = Vec::new();
        scan_source(Path::new("src/net.rs"), "\n\ntransport_version!(FOO)", &mut refs, &mut errors);
        assert_eq!(
            errors[0].to_string(),
            "src/net.rs:3: transport_version! must be called with one string literal, e.g. transport_version!(\"my_change\"), found `FOO`; the generator and the build only understand literal names"
        );
    }

    #[test]
    fn garbage_never_panics() {
        // Unterminated constructs, stray quotes, invalid UTF-8 boundaries, and
        // deterministic pseudo-random byte soup built from the tricky tokens.
        let pieces = [
            "transport_version",
            "!",
            "(",
            ")",
            "\"",
            "'",
            "r#",
            "#",
            "/*",
            "*/",
            "//",
            "\n",
            "b",
            "x",
            "é",
            "\\",
            "{",
            "]",
            " ",
        ];
        let mut seed: u64 = std::env::var("ROLLGATE_SCAN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
        println!("seed {seed} (rerun with ROLLGATE_SCAN_SEED={seed})");
        for _ in 0..2_000 {
            let mut text = String::new();
            for _ in 0..24 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let mut refs = References::default();
            let mut errors = Vec::new();
            scan_source(Path::new("fuzz.rs"), &text, &mut refs, &mut errors);
            for n in refs.names() {
                assert!(is_valid_name(n), "{n:?} from {text:?}");
            }
        }
        for text in ["transport_version!(\"", "r#\"", "/*", "'", "transport_version ! ( \"a\"", "b'"] {
            scan_source(Path::new("x.rs"), text, &mut References::default(), &mut Vec::new());
        }
    }
}

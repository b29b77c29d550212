//! Line-level text helpers of the state-file parser: data lines, decimal
//! numbers and git conflict markers. A leaf: it knows nothing of the state
//! types.

/// A data line: its 1-based number and its trimmed comma-separated fields.
pub(crate) type DataLine<'a> = (usize, Vec<&'a str>);

/// Data lines of a file: `(1-based line number, trimmed comma-separated fields)`.
pub(crate) fn data_lines(text: &str) -> impl Iterator<Item = DataLine<'_>> {
    text.split('\n').enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        Some((i + 1, line.split(',').map(str::trim).collect()))
    })
}

/// Whether `line` is a git conflict marker line (`<<<<<<<`, `|||||||`,
/// `=======`, `>>>>>>>`, followed by a space or the end of the line).
pub(crate) fn is_conflict_marker(line: &str) -> bool {
    let line = line.trim_end_matches('\r');
    ["<<<<<<<", "|||||||", "=======", ">>>>>>>"]
        .iter()
        .any(|m| line.strip_prefix(m).is_some_and(|rest| rest.is_empty() || rest.starts_with(' ')))
}

/// The 1-based line of the first conflict marker, if any.
pub(crate) fn conflict_marker_line(text: &str) -> Option<usize> {
    text.split('\n').position(is_conflict_marker).map(|i| i + 1)
}

/// The text of a conflicted file as it was on the current branch: lines
/// outside conflict blocks plus each block's first side. Conflict marker lines
/// are replaced by empty lines so line numbers stay true. Errors with the line
/// of an unbalanced marker.
pub(crate) fn own_side_of_conflict(text: &str) -> Result<String, usize> {
    #[derive(PartialEq)]
    enum At {
        Outside,
        Own,
        Ancestor,
        Other,
    }
    let mut at = At::Outside;
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let marker = |m: &str| is_conflict_marker(line) && line.starts_with(m);
        let next = if marker("<<<<<<<") {
            (at == At::Outside).then_some(At::Own)
        } else if marker("|||||||") {
            (at == At::Own).then_some(At::Ancestor)
        } else if marker("=======") {
            (at == At::Own || at == At::Ancestor).then_some(At::Other)
        } else if marker(">>>>>>>") {
            (at == At::Other).then_some(At::Outside)
        } else {
            out.push(if at == At::Outside || at == At::Own { line } else { "" });
            continue;
        };
        at = next.ok_or(i + 1)?;
        out.push("");
    }
    if at != At::Outside {
        return Err(text.split('\n').count());
    }
    Ok(out.join("\n"))
}

pub(crate) fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_markers_need_seven_characters_and_a_space_or_the_end() {
        // A line that merely starts with '=' is not a marker.
        assert!(!is_conflict_marker("========"));
        assert!(is_conflict_marker("======="));
        assert!(is_conflict_marker(">>>>>>> main\r"));
        assert_eq!(conflict_marker_line("a\n<<<<<<< HEAD\n"), Some(2));
        assert_eq!(
            own_side_of_conflict("x\n<<<<<<< a\nours\n=======\ntheirs\n>>>>>>> b\n").unwrap(),
            "x\n\nours\n\n\n\n"
        );
        assert_eq!(own_side_of_conflict("=======\n"), Err(1));
    }

    #[test]
    fn decimals_are_bounded() {
        assert_eq!(parse_decimal("0042"), Some(42));
        for bad in ["", "-1", "+1", "1.0", "99999999999", "4294967296"] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }
}

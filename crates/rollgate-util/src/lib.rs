//! Small helpers every rollgate crate shares. A leaf: it depends on nothing.
//!
//! - [`cut`], [`shorten`], [`shorten_to`]: text that came from outside (keys,
//!   names, addresses, peer messages) cut to a bound before it goes into an
//!   error message or onto the wire, always on a character boundary.
//! - [`comma_list`]: items joined for a message.
//! - [`now_ms`]: the wall clock in milliseconds since the Unix epoch.
//! - [`check_private_file`]: a secret file (key, token, password) must be
//!   readable by its owner only, as ssh requires of a private key.

#![warn(missing_docs)]

use std::time::{SystemTime, UNIX_EPOCH};

/// How long [`shorten`] lets a quoted string be, in bytes.
pub const DEFAULT_MAX_QUOTED_BYTES: usize = 96;

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` cut to at most `max` bytes (on a character boundary), with `...` when
/// cut.
pub fn shorten_to(s: &str, max: usize) -> String {
    let c = cut(s, max);
    if c.len() == s.len() { s.to_string() } else { format!("{c}...") }
}

/// `s` cut to [`DEFAULT_MAX_QUOTED_BYTES`], with `...` when cut: for a key,
/// name or value quoted in an error message.
pub fn shorten(s: &str) -> String {
    shorten_to(s, DEFAULT_MAX_QUOTED_BYTES)
}

/// The items joined with `, `, for a message (`n1, n2 (release 1.0, stopped)`).
pub fn comma_list<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Refuses a file that its group or others may read or write (as ssh refuses
/// a private key): the error says which permissions were found and the fix
/// (`chmod 600 FILE`). A file that cannot be inspected is refused too.
pub fn check_private_file(path: &std::path::Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "its permissions {:04o} let others than its owner read it; a secret must be readable by its owner \
                 only: chmod 600 {}",
                mode & 0o7777,
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_a_character_boundary() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abc", 2), "ab");
        // 'é' is two bytes: a cut inside it steps back.
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(shorten_to("aéb", 2), "a...");
        assert_eq!(shorten_to("ab", 2), "ab");
        assert_eq!(shorten(&"x".repeat(200)).len(), DEFAULT_MAX_QUOTED_BYTES + 3);
    }

    #[test]
    fn the_clock_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}

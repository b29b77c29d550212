//! The admin token file, read the same way by a node and by the `rollgate`
//! CLI.

use std::path::Path;

/// Largest token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// A token file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("admin token file {path}: {reason}")]
pub struct TokenFileError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// Reads a token file: one line, 8 to 1024 printable ASCII characters
/// without spaces (surrounding whitespace is trimmed), readable by its owner
/// only (`chmod 600`).
pub fn read_token_file(path: &Path) -> Result<String, TokenFileError> {
    let fail = |reason: String| TokenFileError { path: path.display().to_string(), reason };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    rollgate_util::check_private_file(path).map_err(fail)?;
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(fail(format!(
            "it is {} bytes; a token file holds one line of at most 1024 characters",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| fail("it is not UTF-8 text".into()))?;
    let token = text.trim();
    if token.len() < 8 || token.len() > 1024 {
        return Err(fail(format!("the token is {} characters; use 8 to 1024", token.len())));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(fail("the token must be one line of printable ASCII without spaces".into()));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret-token-value\n").unwrap();
        let owner_only = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
        std::fs::set_permissions(&path, owner_only).unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "s3cret-token-value");
        for (bad, fragment) in [("short", "8 to 1024"), ("two words here", "printable"), ("", "8 to 1024")] {
            std::fs::write(&path, bad).unwrap();
            let err = read_token_file(&path).unwrap_err().to_string();
            assert!(err.contains(fragment) && err.contains(&path.display().to_string()), "{err}");
        }
        std::fs::write(&path, vec![b'a'; 5000]).unwrap();
        assert!(read_token_file(&path).unwrap_err().to_string().contains("5000 bytes"));
        assert!(read_token_file(&dir.path().join("missing")).is_err());
    }
}

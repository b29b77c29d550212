//! Release keys as files: `ed25519-private:<64 hex>` (the seed; refused when
//! group or others may read the file) and `ed25519-public:<64 hex>`.

use std::path::Path;

use ed25519_dalek::{Signer, Verifier};
use sha2::{Digest as _, Sha256};

use crate::{Digest, ReleaseError, hex, read_bounded, signed_message, unhex};

/// Largest key file read.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;
const PRIVATE_PREFIX: &str = "ed25519-private:";
const PUBLIC_PREFIX: &str = "ed25519-public:";

/// A release private key. `Debug` never prints it.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey(key id {}, redacted)", self.public().id())
    }
}

/// A release public key: what a node trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct ReleaseKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for ReleaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReleaseKey({})", self.id())
    }
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    /// Its public key.
    pub fn public(&self) -> ReleaseKey {
        ReleaseKey(self.0.verifying_key())
    }

    /// Signs [`signed_message`] of `digest`.
    pub fn sign_digest(&self, digest: &Digest) -> [u8; 64] {
        self.0.sign(&signed_message(digest)).to_bytes()
    }

    /// Reads a private key file, refusing one that group or others may read.
    pub fn read(path: &Path) -> Result<SigningKey, ReleaseError> {
        let what = "release private key";
        let fail = |reason: String| ReleaseError::File { what, path: path.display().to_string(), reason };
        check_private_mode(path).map_err(fail)?;
        let text = read_text(path, what)?;
        let seed = text
            .strip_prefix(PRIVATE_PREFIX)
            .and_then(unhex)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                fail(format!(
                    "not a release private key (one line `{PRIVATE_PREFIX}` and 64 hex digits); create one with `rollgate release keygen`"
                ))
            })?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }
}

impl ReleaseKey {
    /// The key id: the first 16 hex digits of the SHA-256 of the public key.
    pub fn id(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes())[..8])
    }

    /// Whether `signature` is this key's signature of `digest`.
    pub fn verify_digest(&self, digest: &Digest, signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify(&signed_message(digest), &sig).is_ok()
    }

    /// The public key file's line.
    pub fn to_line(&self) -> String {
        format!("{PUBLIC_PREFIX}{}", hex(self.0.as_bytes()))
    }

    /// Reads a public key file.
    pub fn read(path: &Path) -> Result<ReleaseKey, ReleaseError> {
        let what = "release public key";
        let text = read_text(path, what)?;
        let fail = |reason: String| ReleaseError::File { what, path: path.display().to_string(), reason };
        if text.starts_with(PRIVATE_PREFIX) {
            return Err(fail(
                "this is a private key: give nodes the public key file (`rollgate release keygen` writes it next to the private one, ending in .pub)".into(),
            ));
        }
        let bytes =
            text.strip_prefix(PUBLIC_PREFIX).and_then(unhex).and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(
                || fail(format!("not a release public key (one line `{PUBLIC_PREFIX}` and 64 hex digits)")),
            )?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(ReleaseKey)
            .map_err(|_| fail("the bytes are not an ed25519 public key".into()))
    }
}

fn read_text(path: &Path, what: &'static str) -> Result<String, ReleaseError> {
    let bytes = read_bounded(path, what, MAX_KEY_FILE_BYTES)?;
    String::from_utf8(bytes).map(|t| t.trim().to_string()).map_err(|_| ReleaseError::File {
        what,
        path: path.display().to_string(),
        reason: "not UTF-8 text".into(),
    })
}

#[cfg(unix)]
fn check_private_mode(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "group or others may read it (mode {mode:03o}): a private key must be readable by its owner only; run `chmod 600 {}`",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path) -> Result<(), String> {
    Ok(())
}

/// Writes a new key pair: `private` (mode 600, refused when it exists) and
/// `public`. Returns the public key.
pub fn generate_key_files(private: &Path, public: &Path) -> Result<ReleaseKey, ReleaseError> {
    use std::io::Write;
    let key = SigningKey::generate();
    let fail = |what: &'static str, path: &Path, e: std::io::Error| ReleaseError::File {
        what,
        path: path.display().to_string(),
        reason: if e.kind() == std::io::ErrorKind::AlreadyExists {
            "it exists already; remove it first or choose another path".into()
        } else {
            format!("cannot write it: {e}")
        },
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(private).map_err(|e| fail("release private key", private, e))?;
    f.write_all(format!("{PRIVATE_PREFIX}{}\n", hex(key.0.as_bytes())).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| fail("release private key", private, e))?;
    let mut p = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(public)
        .map_err(|e| fail("release public key", public, e))?;
    p.write_all(format!("{}\n", key.public().to_line()).as_bytes())
        .map_err(|e| fail("release public key", public, e))?;
    Ok(key.public())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_open_private_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("release.key"), dir.path().join("release.key.pub"));
        let generated = generate_key_files(&private, &public).unwrap();
        assert_eq!(SigningKey::read(&private).unwrap().public(), generated);
        assert_eq!(ReleaseKey::read(&public).unwrap(), generated);
        assert!(generate_key_files(&private, &public).unwrap_err().to_string().contains("exists already"));
        assert!(ReleaseKey::read(&private).unwrap_err().to_string().contains("private key"));

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = SigningKey::read(&private).unwrap_err().to_string();
            assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        }
        for bad in ["", "ed25519-public:zz", "hello", &"a".repeat(5000)] {
            std::fs::write(&public, bad).unwrap();
            assert!(ReleaseKey::read(&public).is_err(), "{bad}");
        }
    }
}

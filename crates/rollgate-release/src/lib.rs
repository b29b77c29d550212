//! Signed release manifests: a release says what it speaks, an ed25519
//! release key signs that, and a node given the trusted public key refuses
//! to run a release whose manifest that key did not sign.
//!
//! - [`Manifest`]: the release's name, protocol range, transport ids, flags
//!   with their stability, storage formats and cluster features. Its
//!   canonical bytes are compact JSON with every list sorted
//!   ([`Manifest::canonical_bytes`]); its [`Digest`] is their SHA-256.
//! - [`SignedManifest`]: the manifest file a node is started with: the
//!   manifest and an ed25519 signature over
//!   `"rollgate-release-manifest-v1\0" | digest` by a release key, named by
//!   its key id (the first 16 hex digits of the SHA-256 of the public key).
//!   Signing the digest rather than the bytes lets a peer check another
//!   node's signature from the 32-byte digest and 64-byte signature the
//!   handshake carries ([`ReleaseProof`]).
//! - Keys are files ([`keys`]): one line `ed25519-private:<64 hex>` (the
//!   seed; refused when group or others may read it) or
//!   `ed25519-public:<64 hex>`.
//!
//! Everything read from outside is bounded ([`MAX_MANIFEST_FILE_BYTES`],
//! [`MAX_ENTRIES`], [`MAX_NAME_BYTES`]) and every refusal names the fix.

#![warn(missing_docs)]

pub mod keys;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use keys::{ReleaseKey, SigningKey, generate_key_files};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
/// Largest manifest file read.
pub const MAX_MANIFEST_FILE_BYTES: u64 = 1024 * 1024;
/// Most flags, formats or features in one manifest.
pub const MAX_ENTRIES: usize = 4096;
/// Longest release, flag, unit or feature name.
pub const MAX_NAME_BYTES: usize = 128;
/// What a signature covers before the digest (domain separation).
pub const SIGNATURE_CONTEXT: &[u8] = b"rollgate-release-manifest-v1\0";

/// A manifest that cannot be used, or a signature that does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// A file could not be read or written.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file (`release manifest`, `release private key`, ...).
        what: &'static str,
        /// The path.
        path: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The manifest is not a valid manifest.
    #[error("invalid release manifest: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// Signed by another key than the trusted one.
    #[error(
        "release {release}'s manifest is signed by key {signed_by}, which is not the trusted release key {trusted}: sign it with the trusted key (`rollgate release sign --key FILE`), or start the node with the public key that signed it"
    )]
    UnknownKey {
        /// The release.
        release: String,
        /// The key id in the manifest file.
        signed_by: String,
        /// The trusted key's id.
        trusted: String,
    },
    /// The signature does not verify: the manifest or the signature was changed after signing.
    #[error(
        "release {release}'s manifest does not match its signature (key {key_id}): it was changed after it was signed; sign the release's own manifest again (`rollgate release sign`)"
    )]
    BadSignature {
        /// The release.
        release: String,
        /// The key id.
        key_id: String,
    },
    /// The signed manifest describes another build than the running one.
    #[error(
        "the signed manifest does not describe this binary: its {field} is {signed} but this binary's is {actual}; sign this release's own manifest (`rollgate release sign`) and start the node with it"
    )]
    Mismatch {
        /// The field that differs.
        field: &'static str,
        /// In the signed manifest.
        signed: String,
        /// In the running binary.
        actual: String,
    },
}

/// The SHA-256 of a manifest's canonical bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// `sha256:` and 64 hex digits.
    pub fn to_text(&self) -> String {
        format!("sha256:{}", hex(&self.0))
    }

    /// The first 12 hex digits (for tables).
    pub fn short(&self) -> String {
        hex(&self.0[..6])
    }

    /// Parses [`Digest::to_text`]'s form.
    pub fn parse(s: &str) -> Option<Digest> {
        let bytes = unhex(s.strip_prefix("sha256:")?)?;
        Some(Digest(bytes.try_into().ok()?))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_text())
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of lower- or upper-case hex; `None` when it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// The protocol versions a release speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolSpan {
    /// The lowest.
    pub min: u16,
    /// The highest.
    pub max: u16,
}

/// The transport versions a release reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportIds {
    /// The oldest it still talks to.
    pub minimum_compatible: u32,
    /// Its own.
    pub current: u32,
}

/// A flag the release supports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFlag {
    /// The flag.
    pub name: String,
    /// `required`, `stable` or `experimental`.
    pub stability: String,
}

/// A storage unit's formats the release reads and writes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFormat {
    /// The storage unit (table, file kind).
    pub unit: String,
    /// The oldest format it reads.
    pub min_readable: u32,
    /// The newest it writes.
    pub max: u32,
}

/// What a release speaks: the part of a build that compatibility decisions use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The release name.
    pub release: String,
    /// The protocol range.
    pub protocol: ProtocolSpan,
    /// The transport ids.
    pub transport: TransportIds,
    /// The flags, by name.
    pub flags: Vec<ManifestFlag>,
    /// The storage formats, by unit.
    pub formats: Vec<ManifestFormat>,
    /// The cluster features it publishes, sorted.
    pub features: Vec<String>,
}

impl Manifest {
    /// A manifest with its lists sorted (the canonical form).
    pub fn canonical(mut self) -> Manifest {
        self.flags.sort();
        self.formats.sort();
        self.features.sort();
        self
    }

    /// The canonical bytes: compact JSON of the canonical form.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.clone().canonical()).expect("a manifest always serializes")
    }

    /// The SHA-256 of the canonical bytes.
    pub fn digest(&self) -> Digest {
        Digest(Sha256::digest(self.canonical_bytes()).into())
    }

    /// Checks the bounds and the format.
    pub fn validate(&self) -> Result<(), ReleaseError> {
        let bad = |reason: String| Err(ReleaseError::Invalid { reason });
        if self.format != MANIFEST_FORMAT {
            return bad(format!(
                "manifest format {} (this build reads format {MANIFEST_FORMAT}); produce it with this release's tools",
                self.format
            ));
        }
        let name_ok = |n: &str| !n.is_empty() && n.len() <= MAX_NAME_BYTES && !n.chars().any(char::is_control);
        if !name_ok(&self.release) {
            return bad(format!("the release name must be 1 to {MAX_NAME_BYTES} bytes without control characters"));
        }
        if self.protocol.min > self.protocol.max {
            return bad(format!("protocol range {}..={} is empty", self.protocol.min, self.protocol.max));
        }
        if self.transport.minimum_compatible > self.transport.current {
            return bad("the minimum compatible transport id is above the current one".into());
        }
        for (what, len) in
            [("flags", self.flags.len()), ("formats", self.formats.len()), ("features", self.features.len())]
        {
            if len > MAX_ENTRIES {
                return bad(format!("{len} {what}; at most {MAX_ENTRIES}"));
            }
        }
        let names = self
            .flags
            .iter()
            .map(|f| &f.name)
            .chain(self.flags.iter().map(|f| &f.stability))
            .chain(self.formats.iter().map(|f| &f.unit))
            .chain(self.features.iter());
        for n in names {
            if !name_ok(n) {
                return bad(format!(
                    "name {:?} must be 1 to {MAX_NAME_BYTES} bytes without control characters",
                    rollgate_util::shorten(n)
                ));
            }
        }
        Ok(())
    }

    /// Checks that `self` (signed) describes `actual` (the running binary),
    /// naming the first field that differs.
    pub fn check_describes(&self, actual: &Manifest) -> Result<(), ReleaseError> {
        let (a, b) = (self.clone().canonical(), actual.clone().canonical());
        let differ =
            |field: &'static str, s: String, t: String| Err(ReleaseError::Mismatch { field, signed: s, actual: t });
        if a.release != b.release {
            return differ("release", a.release, b.release);
        }
        if a.protocol != b.protocol {
            return differ("protocol range", json(&a.protocol), json(&b.protocol));
        }
        if a.transport != b.transport {
            return differ("transport ids", json(&a.transport), json(&b.transport));
        }
        if a.flags != b.flags {
            return differ("flags", json(&a.flags), json(&b.flags));
        }
        if a.formats != b.formats {
            return differ("formats", json(&a.formats), json(&b.formats));
        }
        if a.features != b.features {
            return differ("features", json(&a.features), json(&b.features));
        }
        if a.format != b.format {
            return differ("format", a.format.to_string(), b.format.to_string());
        }
        Ok(())
    }

    /// Reads a bare manifest (`rollgate-kv releases --manifest` prints one).
    pub fn read(path: &Path) -> Result<Manifest, ReleaseError> {
        let bytes = read_bounded(path, "release manifest", MAX_MANIFEST_FILE_BYTES)?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| ReleaseError::File {
            what: "release manifest",
            path: path.display().to_string(),
            reason: format!("not a release manifest: {e}"),
        })?;
        m.validate()?;
        Ok(m)
    }
}

/// A value as short JSON, for messages.
fn json<T: Serialize>(v: &T) -> String {
    rollgate_util::shorten_to(&serde_json::to_string(v).unwrap_or_default(), 400)
}

/// A signature of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// `ed25519`.
    pub algorithm: String,
    /// The signing key's id ([`ReleaseKey::id`]).
    pub key_id: String,
    /// 128 hex digits.
    pub value: String,
}

/// A manifest and its signature: the file a node is started with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    /// The manifest.
    pub manifest: Manifest,
    /// The signature over its digest.
    pub signature: Signature,
}

/// What the handshake carries: a manifest's digest and its signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReleaseProof {
    /// The manifest's digest.
    pub digest: Digest,
    /// The ed25519 signature over [`SIGNATURE_CONTEXT`] and the digest.
    pub signature: [u8; 64],
}

impl fmt::Debug for ReleaseProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReleaseProof({})", self.digest)
    }
}

/// The message a release key signs for `digest`.
pub fn signed_message(digest: &Digest) -> Vec<u8> {
    let mut m = SIGNATURE_CONTEXT.to_vec();
    m.extend_from_slice(&digest.0);
    m
}

impl SignedManifest {
    /// Signs `manifest` (in its canonical form) with `key`.
    pub fn sign(manifest: Manifest, key: &SigningKey) -> Result<SignedManifest, ReleaseError> {
        let manifest = manifest.canonical();
        manifest.validate()?;
        let signature = key.sign_digest(&manifest.digest());
        Ok(SignedManifest {
            manifest,
            signature: Signature { algorithm: "ed25519".into(), key_id: key.public().id(), value: hex(&signature) },
        })
    }

    /// The signature bytes, when well formed.
    fn signature_bytes(&self) -> Result<[u8; 64], ReleaseError> {
        if self.signature.algorithm != "ed25519" {
            return Err(ReleaseError::Invalid {
                reason: format!(
                    "signature algorithm {:?}; this build verifies ed25519",
                    rollgate_util::shorten(&self.signature.algorithm)
                ),
            });
        }
        unhex(&self.signature.value)
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or_else(|| ReleaseError::Invalid { reason: "the signature is not 128 hex digits".into() })
    }

    /// Verifies the signature with the trusted `key`: the manifest's digest
    /// on success; an unknown key or a changed manifest otherwise.
    pub fn verify(&self, key: &ReleaseKey) -> Result<Digest, ReleaseError> {
        self.manifest.validate()?;
        let release = self.manifest.release.clone();
        if self.signature.key_id != key.id() {
            return Err(ReleaseError::UnknownKey {
                release,
                signed_by: rollgate_util::shorten(&self.signature.key_id),
                trusted: key.id(),
            });
        }
        let digest = self.manifest.digest();
        if !key.verify_digest(&digest, &self.signature_bytes()?) {
            return Err(ReleaseError::BadSignature { release, key_id: key.id() });
        }
        Ok(digest)
    }

    /// The proof the handshake carries.
    pub fn proof(&self) -> Result<ReleaseProof, ReleaseError> {
        Ok(ReleaseProof { digest: self.manifest.digest(), signature: self.signature_bytes()? })
    }

    /// Reads a signed manifest file (bounded; not verified: see [`SignedManifest::verify`]).
    pub fn read(path: &Path) -> Result<SignedManifest, ReleaseError> {
        let bytes = read_bounded(path, "signed release manifest", MAX_MANIFEST_FILE_BYTES)?;
        serde_json::from_slice(&bytes).map_err(|e| ReleaseError::File {
            what: "signed release manifest",
            path: path.display().to_string(),
            reason: format!("not a signed release manifest ({e}); produce one with `rollgate release sign`"),
        })
    }

    /// Pretty JSON, for the file.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a signed manifest always serializes")
    }
}

/// Reads at most `max` bytes of `path`, refusing larger files.
pub(crate) fn read_bounded(path: &Path, what: &'static str, max: u64) -> Result<Vec<u8>, ReleaseError> {
    use std::io::Read;
    let fail = |reason: String| ReleaseError::File { what, path: path.display().to_string(), reason };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let mut buf = Vec::new();
    file.take(max + 1).read_to_end(&mut buf).map_err(|e| fail(format!("cannot read it: {e}")))?;
    if buf.len() as u64 > max {
        return Err(fail(format!("larger than {max} bytes; this is not a {what}")));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            release: "1.2".into(),
            protocol: ProtocolSpan { min: 1, max: 3 },
            transport: TransportIds { minimum_compatible: 1_000_0_00, current: 1_002_0_00 },
            flags: vec![
                ManifestFlag { name: "ttl".into(), stability: "stable".into() },
                ManifestFlag { name: "batch".into(), stability: "experimental".into() },
            ],
            formats: vec![ManifestFormat { unit: "records".into(), min_readable: 1, max: 2 }],
            features: vec!["b".into(), "a".into()],
        }
    }

    #[test]
    fn the_digest_does_not_depend_on_list_order() {
        let mut shuffled = sample();
        shuffled.flags.reverse();
        shuffled.features.reverse();
        assert_eq!(sample().digest(), shuffled.digest());
        let d = sample().digest();
        assert_eq!(Digest::parse(&d.to_text()), Some(d));
        assert_eq!(d.short().len(), 12);
    }

    #[test]
    fn a_signed_manifest_verifies_and_every_change_is_refused() {
        let key = SigningKey::generate();
        let signed = SignedManifest::sign(sample(), &key).unwrap();
        assert_eq!(signed.verify(&key.public()).unwrap(), sample().digest());
        let reread: SignedManifest = serde_json::from_str(&signed.to_json()).unwrap();
        assert_eq!(reread.verify(&key.public()).unwrap(), sample().digest());

        let mut tampered = signed.clone();
        tampered.manifest.protocol.max = 4;
        let e = tampered.verify(&key.public()).unwrap_err();
        assert!(matches!(e, ReleaseError::BadSignature { .. }), "{e}");
        assert!(e.to_string().contains("changed after it was signed"), "{e}");

        let other = SigningKey::generate();
        let e = signed.verify(&other.public()).unwrap_err();
        assert!(matches!(e, ReleaseError::UnknownKey { .. }), "{e}");
        assert!(e.to_string().contains(&key.public().id()) && e.to_string().contains(&other.public().id()), "{e}");

        let mut garbage = signed.clone();
        garbage.signature.value = "zz".into();
        assert!(matches!(garbage.verify(&key.public()).unwrap_err(), ReleaseError::Invalid { .. }));
        let proof = signed.proof().unwrap();
        assert!(key.public().verify_digest(&proof.digest, &proof.signature));
    }

    #[test]
    fn a_manifest_of_another_build_is_named_by_its_field() {
        let mut other = sample();
        other.features.push("c".into());
        let e = sample().check_describes(&other).unwrap_err();
        assert!(matches!(e, ReleaseError::Mismatch { field: "features", .. }), "{e}");
        sample().check_describes(&sample()).unwrap();
    }

    #[test]
    fn garbage_manifests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        for bad in [&b"not json"[..], b"{}", &[0xff, 0xfe][..]] {
            std::fs::write(&path, bad).unwrap();
            assert!(SignedManifest::read(&path).is_err());
            assert!(Manifest::read(&path).is_err());
        }
        std::fs::write(&path, vec![b' '; (MAX_MANIFEST_FILE_BYTES + 1) as usize]).unwrap();
        assert!(SignedManifest::read(&path).unwrap_err().to_string().contains("larger than"));
        let mut m = sample();
        m.release = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(m.validate().is_err());
        let mut m = sample();
        m.protocol = ProtocolSpan { min: 3, max: 1 };
        assert!(m.validate().is_err());
    }
}

//! Certificates for a test or small cluster, made with rcgen: a cluster CA,
//! node certificates and client certificates. `rollgate certs` writes them
//! to files; the demo and the tests make them in memory.
//!
//! A node certificate names its node with the DNS subject alternative name
//! `<node-id>.node.rollgate` ([`node_identity`]), which peers check against
//! the node id the node advertises, and the host names and IP addresses
//! clients reach it by (HTTPS verifies those). It may serve and connect
//! (extended key usages serverAuth and clientAuth). A client certificate
//! names `<name>.client.rollgate` and may only connect.
//!
//! Keys are ECDSA P-256. Files holding keys are written readable by their
//! owner only ([`write_private`]), and nothing is ever overwritten.

#![warn(missing_docs)]

use std::io::Write;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The suffix of the DNS name that carries a node's id.
pub const NODE_SUFFIX: &str = "node.rollgate";
/// The suffix of the DNS name that carries a client's name.
pub const CLIENT_SUFFIX: &str = "client.rollgate";

/// The DNS name that carries `node_id` in a node certificate.
pub fn node_identity(node_id: &str) -> String {
    format!("{node_id}.{NODE_SUFFIX}")
}

/// The DNS name that carries a client's `name` in a client certificate.
pub fn client_identity(name: &str) -> String {
    format!("{name}.{CLIENT_SUFFIX}")
}

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A name or host that cannot go into a certificate.
    #[error("{what} {value:?} cannot go into a certificate: {reason}")]
    Name {
        /// What it is (node id, host, ...).
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The CA's certificate or key could not be read.
    #[error("the CA {what} cannot be used: {reason}")]
    Ca {
        /// Certificate or key.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// rcgen failed.
    #[error("making the certificate failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("{}: {reason}", path.display())]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why (an existing file is never overwritten).
        reason: String,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("cert_pem", &self.cert_pem.len()).field("key_pem", &"redacted").finish()
    }
}

/// When a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// From.
    pub not_before: OffsetDateTime,
    /// Until.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks differ a little) for `days` days.
    pub fn days(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - Duration::hours(1), not_after: now + Duration::days(i64::from(days)) }
    }

    /// A validity that ended yesterday (for tests of expired certificates).
    pub fn expired() -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity { not_before: now - Duration::days(30), not_after: now - Duration::days(1) }
    }
}

/// A cluster CA: issues node and client certificates.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("cert_pem", &self.cert_pem.len()).field("key_pem", &"redacted").finish()
    }
}

fn check_label(what: &'static str, value: &str) -> Result<(), CertError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !value.starts_with(['-', '.'])
        && !value.ends_with(['-', '.'])
        && !value.contains("..");
    if ok {
        Ok(())
    } else {
        Err(CertError::Name {
            what,
            value: value.chars().take(64).collect(),
            reason: "use 1 to 63 letters, digits, '-', '_' or '.', not at either end, no '..'".into(),
        })
    }
}

fn san(what: &'static str, host: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let name = host.to_string().try_into().map_err(|e: rcgen::Error| CertError::Name {
        what,
        value: host.chars().take(64).collect(),
        reason: e.to_string(),
    })?;
    Ok(SanType::DnsName(name))
}

fn leaf(
    common_name: &str,
    sans: Vec<SanType>,
    usages: Vec<ExtendedKeyUsagePurpose>,
    validity: Validity,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.extended_key_usages = usages;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params
}

impl Ca {
    /// A new self-signed CA named `name`, valid as `validity` says.
    pub fn new(name: &str, validity: Validity) -> Result<Ca, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("rollgate cluster CA {name}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Ca { cert_pem: cert.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    /// An existing CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::Ca { what: "key", reason: e.to_string() })?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| CertError::Ca { what: "certificate", reason: e.to_string() })?;
        Ok(Ca { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), issuer })
    }

    /// The CA's certificate (PEM): give it to every node and client (`--tls-ca`, `--ca-file`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PEM): keep it off the nodes.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn issue(&self, params: CertificateParams) -> Result<Issued, CertError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A node certificate for `node_id`, reachable at `hosts` (DNS names or
    /// IP addresses; HTTPS clients verify them).
    pub fn node(&self, node_id: &str, hosts: &[String], validity: Validity) -> Result<Issued, CertError> {
        check_label("node id", node_id)?;
        let mut sans = vec![san("node id", &node_identity(node_id))?];
        for h in hosts {
            sans.push(san("host", h)?);
        }
        let usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(leaf(&format!("rollgate node {node_id}"), sans, usages, validity))
    }

    /// A client certificate for `name` (the CLI, a load generator).
    pub fn client(&self, name: &str, validity: Validity) -> Result<Issued, CertError> {
        check_label("client name", name)?;
        let sans = vec![san("client name", &client_identity(name))?];
        self.issue(leaf(&format!("rollgate client {name}"), sans, vec![ExtendedKeyUsagePurpose::ClientAuth], validity))
    }

    /// A plain server certificate for `hosts` (e.g. an etcd server).
    pub fn server(&self, hosts: &[String], validity: Validity) -> Result<Issued, CertError> {
        let sans = hosts.iter().map(|h| san("host", h)).collect::<Result<Vec<_>, _>>()?;
        let usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(leaf("rollgate server", sans, usages, validity))
    }

    /// A certificate with common name `name` and no other name (etcd takes a
    /// client certificate's common name as its user name).
    pub fn named_client(&self, name: &str, validity: Validity) -> Result<Issued, CertError> {
        self.issue(leaf(name, Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth], validity))
    }
}

fn create_new(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    let fail = |e: std::io::Error| {
        let reason = if e.kind() == std::io::ErrorKind::AlreadyExists {
            "already exists; it is never overwritten: remove it first, or write to another directory".to_string()
        } else {
            e.to_string()
        };
        CertError::Write { path: path.to_path_buf(), reason }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(fail)?;
    file.write_all(contents.as_bytes()).and_then(|_| file.sync_all()).map_err(fail)
}

/// Writes a private key (or any secret): a new file, readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), CertError> {
    create_new(path, contents, 0o600)
}

/// Writes a certificate: a new file, readable by all.
pub fn write_public(path: &Path, contents: &str) -> Result<(), CertError> {
    create_new(path, contents, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_owner_only_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test", Validity::days(1)).unwrap();
        let key = dir.path().join("ca.key");
        write_private(&key, ca.key_pem()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let e = write_private(&key, "other").unwrap_err();
        assert!(e.to_string().contains("never overwritten"), "{e}");
        assert_eq!(std::fs::read_to_string(&key).unwrap(), ca.key_pem());
    }

    #[test]
    fn an_existing_ca_issues_again_and_bad_names_are_refused() {
        let ca = Ca::new("test", Validity::days(1)).unwrap();
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let node = again.node("n1", &["127.0.0.1".into(), "node1.example".into()], Validity::days(1)).unwrap();
        assert!(node.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        for bad in ["", "-x", "a..b", "with space"] {
            assert!(ca.node(bad, &[], Validity::days(1)).is_err(), "{bad:?}");
        }
        assert!(Ca::from_pem("not a cert", ca.key_pem()).is_err());
    }
}

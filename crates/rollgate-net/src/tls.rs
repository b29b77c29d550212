//! TLS for peer links and HTTP listeners: certificates and keys from PEM
//! files, the rustls configurations built from them, and the identity a
//! certificate proves.
//!
//! # Identity
//!
//! Every node has a certificate issued by the cluster CA (`--tls-ca`). It
//! names its node with a DNS subject alternative name
//! `<node-id>.node.rollgate` ([`node_identity`]), next to the host names and
//! IP addresses HTTPS clients use to reach it. A peer link is mutual TLS 1.3:
//! each side checks that the other's certificate chains to the cluster CA,
//! and the version handshake then checks that the certificate names the node
//! id the peer advertises, so a node cannot pose as another even with a valid
//! certificate of its own. A client certificate (for the CLI) names
//! `<name>.client.rollgate`, which never passes as a node.
//!
//! Host names are not what identifies a peer (a member's address comes from
//! the metadata store and may change); HTTPS clients, which reach a node by
//! its address, verify the host name as usual.
//!
//! # Binding the version handshake to the session
//!
//! Both ends export 32 bytes of keying material from the TLS session
//! ([`exporter`], RFC 8446 section 7.5, label [`EXPORTER_LABEL`]) and, with
//! a cluster secret, MAC them with the handshake transcript. An attacker who
//! relays the version handshake between two TLS sessions of its own (it would
//! need a certificate of the cluster CA) has different exporter values on
//! each side, so the MACs fail on both ends.
//!
//! The provider is rustls's `ring`: it builds with a C compiler alone.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// The suffix of the DNS name that carries a node's id in its certificate.
pub const NODE_SUFFIX: &str = "node.rollgate";
/// The suffix of the DNS name that carries a client's name in its certificate.
pub const CLIENT_SUFFIX: &str = "client.rollgate";
/// The label of the exporter value the version handshake is bound to.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-rollgate-handshake-1";
/// Bytes of the exporter value.
pub const EXPORTER_LEN: usize = 32;
/// Largest PEM file read (a certificate chain, a key, a CA bundle).
pub const MAX_PEM_FILE_BYTES: u64 = 1 << 20;
/// How to make certificates, for messages.
pub const HOW_TO_MAKE: &str = "make them with `rollgate certs` (or issue them from your own CA, see the README)";

/// The DNS name that carries `node_id` in a node certificate.
pub fn node_identity(node_id: &str) -> String {
    format!("{node_id}.{NODE_SUFFIX}")
}

/// The DNS name that carries a client's `name` in a client certificate.
pub fn client_identity(name: &str) -> String {
    format!("{name}.{CLIENT_SUFFIX}")
}

/// Why TLS could not be set up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("{what} {}: {reason}", path.display())]
    File {
        /// Which option or role (`--tls-cert`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The certificate does not name this node.
    #[error(
        "{} is not a certificate of node {node}: it must name {} (a DNS subject alternative name); {HOW_TO_MAKE}",
        path.display(), node_identity(node)
    )]
    NotThisNode {
        /// The certificate file.
        path: PathBuf,
        /// This node's id.
        node: String,
    },
    /// The certificate is not usable now or not signed by the CA.
    #[error("{} cannot be used: {reason}", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The three files of a node's TLS setup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The private key (PEM; readable by its owner only).
    pub key: PathBuf,
    /// The cluster CA's certificate(s) (PEM).
    pub ca: PathBuf,
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let fail = |reason: String| TlsError::File { what, path: path.to_path_buf(), reason };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let mut buf = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1).read_to_end(&mut buf).map_err(|e| fail(format!("cannot read it: {e}")))?;
    if buf.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(fail(format!("over {MAX_PEM_FILE_BYTES} bytes, not a PEM file")));
    }
    Ok(buf)
}

/// Certificates from PEM bytes (at least one).
pub fn certs_from_pem(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let fail = |reason: String| TlsError::File { what, path: path.to_path_buf(), reason };
    let certs = certs.map_err(|e| fail(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(fail(format!("holds no certificate (`-----BEGIN CERTIFICATE-----`); {HOW_TO_MAKE}")));
    }
    Ok(certs)
}

/// A private key from PEM bytes.
pub fn key_from_pem(what: &'static str, path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: format!("holds no usable private key ({e}); {HOW_TO_MAKE}"),
    })
}

/// Reads a private key file, refusing one that its group or others can read.
pub fn read_key_file(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    private_file_check(path).map_err(|reason| TlsError::File { what, path: path.to_path_buf(), reason })?;
    key_from_pem(what, path, &read_pem(what, path)?)
}

/// Refuses a file that its group or others may read (as ssh does for keys):
/// the reason names the fix.
pub fn private_file_check(path: &Path) -> Result<(), String> {
    rollgate_util::check_private_file(path)
}

/// A root store of the CA certificates in `pem`.
pub fn roots_from_pem(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem("--tls-ca", path, pem)? {
        roots.add(cert).map_err(|e| TlsError::File {
            what: "--tls-ca",
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The crypto provider of every TLS configuration here: ring.
///
/// rustls marks ring's provider deprecated because it has no post-quantum
/// key exchange (that needs aws-lc-rs, which this project avoids: it needs
/// cmake to build on some machines); X25519 and ECDHE remain what TLS 1.3
/// deployments use today. See ARCHITECTURE.md.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[allow(deprecated)]
fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// An operator-facing reason for a certificate error, naming the fix.
pub fn explain_certificate_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the certificate has expired; issue a new one from the cluster CA ({HOW_TO_MAKE})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the certificate is not valid yet; check the clocks, or issue one valid from now".to_string()
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the certificate is not signed by the cluster CA (--tls-ca); give every node and client a \
                 certificate from the same CA ({HOW_TO_MAKE})"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the certificate does not name the host or node it is used for; issue one that does".to_string()
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => format!(
                "the certificate is not allowed for this use (extended key usage); a node certificate needs \
                 both serverAuth and clientAuth ({HOW_TO_MAKE})"
            ),
            other => format!("the certificate was refused: {other:?}"),
        },
        other => other.to_string(),
    }
}

/// Checks `certs[0]` against `roots` now, as a peer will.
fn check_chain(path: &Path, certs: &[CertificateDer<'static>], roots: &RootCertStore) -> Result<(), TlsError> {
    let bad = |reason: String| TlsError::Certificate { path: path.to_path_buf(), reason };
    let parsed = ParsedCertificate::try_from(&certs[0]).map_err(|e| bad(explain_certificate_error(&e)))?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        &certs[1..],
        UnixTime::now(),
        algorithms().all,
    )
    .map_err(|e| bad(explain_certificate_error(&e)))
}

/// Whether `cert` names `name` (a DNS name or an IP address).
pub fn certificate_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name.to_string()) else { return false };
    match ParsedCertificate::try_from(cert) {
        Ok(parsed) => rustls::client::verify_server_name(&parsed, &server_name).is_ok(),
        Err(_) => false,
    }
}

/// A node's TLS: its certificate and key and the cluster CA, and the rustls
/// configurations of its peer links and its HTTPS listener. Cheap to clone.
#[derive(Clone)]
pub struct NodeTls {
    node_id: String,
    certs: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    peer_server: Arc<ServerConfig>,
    peer_client: Arc<ClientConfig>,
    http_server: Arc<ServerConfig>,
    http_client: Arc<ClientConfig>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls").field("node_id", &self.node_id).field("certs", &self.certs.len()).finish()
    }
}

impl NodeTls {
    /// Reads the files of node `node_id`: the certificate must chain to the
    /// CA, be valid now, and name the node ([`node_identity`]); the key must
    /// be readable by its owner only.
    pub fn from_files(files: &TlsFiles, node_id: &str) -> Result<Self, TlsError> {
        let certs = certs_from_pem("--tls-cert", &files.cert, &read_pem("--tls-cert", &files.cert)?)?;
        let key = read_key_file("--tls-key", &files.key)?;
        let roots = roots_from_pem(&files.ca, &read_pem("--tls-ca", &files.ca)?)?;
        Self::build(node_id, certs, key, roots, &files.cert)
    }

    /// From PEM bytes (tests and the demo); `origin` names them in errors.
    pub fn from_pem(node_id: &str, cert: &[u8], key: &[u8], ca: &[u8], origin: &Path) -> Result<Self, TlsError> {
        let certs = certs_from_pem("--tls-cert", origin, cert)?;
        let key = key_from_pem("--tls-key", origin, key)?;
        let roots = roots_from_pem(origin, ca)?;
        Self::build(node_id, certs, key, roots, origin)
    }

    fn build(
        node_id: &str,
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: RootCertStore,
        cert_path: &Path,
    ) -> Result<Self, TlsError> {
        check_chain(cert_path, &certs, &roots)?;
        if !certificate_names(&certs[0], &node_identity(node_id)) {
            return Err(TlsError::NotThisNode { path: cert_path.to_path_buf(), node: node_id.to_string() });
        }
        let roots = Arc::new(roots);
        let config = |e: rustls::Error| TlsError::Config(e.to_string());
        let versions = &[&rustls::version::TLS13];

        let peer_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let peer_server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(config)?
            .with_client_cert_verifier(peer_verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(config)?;

        let mut peer_client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ClusterCaVerifier { roots: roots.clone() }))
            .with_client_auth_cert(certs.clone(), key.clone_key())
            .map_err(config)?;
        peer_client.enable_sni = false;

        let http_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut http_server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(config)?
            .with_client_cert_verifier(http_verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(config)?;
        http_server.alpn_protocols = vec![b"http/1.1".to_vec()];

        let http_client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(config)?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(certs.clone(), key)
            .map_err(config)?;

        Ok(NodeTls {
            node_id: node_id.to_string(),
            certs,
            roots,
            peer_server: Arc::new(peer_server),
            peer_client: Arc::new(peer_client),
            http_server: Arc::new(http_server),
            http_client: Arc::new(http_client),
        })
    }

    /// The node this TLS setup is for.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The server side of peer links: TLS 1.3, a client certificate of the
    /// cluster CA required.
    pub fn peer_server(&self) -> Arc<ServerConfig> {
        self.peer_server.clone()
    }

    /// The client side of peer links: the peer's certificate must chain to
    /// the cluster CA (its node identity is checked by the version handshake).
    pub fn peer_client(&self) -> Arc<ClientConfig> {
        self.peer_client.clone()
    }

    /// The HTTPS listener: TLS 1.3, client certificates optional.
    pub fn http_server(&self) -> Arc<ServerConfig> {
        self.http_server.clone()
    }

    /// For calling other members' HTTPS APIs: the cluster CA, host names
    /// verified, this node's certificate as the client certificate.
    pub fn http_client(&self) -> Arc<ClientConfig> {
        self.http_client.clone()
    }

    /// The cluster CA.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }
}

/// Verifies a peer's certificate chain against the cluster CA, not a host
/// name: which node it is, is checked against what the peer advertises.
#[derive(Debug)]
struct ClusterCaVerifier {
    roots: Arc<RootCertStore>,
}

impl ServerCertVerifier for ClusterCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            algorithms().all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Peer links speak TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// A client configuration for HTTPS: the CA in `ca_pem` (host names
/// verified) and, optionally, a client certificate and key.
pub fn https_client(
    ca_path: &Path,
    ca_pem: &[u8],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, TlsError> {
    let roots = roots_from_pem(ca_path, ca_pem)?;
    let config = |e: rustls::Error| TlsError::Config(e.to_string());
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config)?
        .with_root_certificates(roots);
    match identity {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(config),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A client configuration that trusts no one: for HTTP clients that speak
/// plain HTTP only (an HTTP client library still wants a TLS setup).
pub fn plain_client() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

//! HTTPS towards a node: the cluster CA of `--ca-file` (host names
//! verified) and, optionally, a client certificate; and what to do when TLS
//! fails, from the error.
//!
//! (rustls with the ring provider, as the nodes use; the CLI builds its
//! configuration itself so that it links no part of the node's stack.)

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::args::Connection;
use crate::failure::Failure;

#[allow(deprecated)] // ring: no post-quantum key exchange; see ARCHITECTURE.md.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
}

/// A configuration for plain HTTP (the HTTP client wants one; it trusts no one).
pub fn plain() -> ClientConfig {
    builder().with_root_certificates(RootCertStore::empty()).with_no_client_auth()
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, Failure> {
    let meta = std::fs::metadata(path).map_err(|e| Failure::refused(format!("{what} {}: {e}", path.display())))?;
    if meta.len() > 1 << 20 {
        return Err(Failure::refused(format!("{what} {}: over 1 MiB, not a PEM file", path.display())));
    }
    std::fs::read(path).map_err(|e| Failure::refused(format!("{what} {}: {e}", path.display())))
}

/// The configuration of `--ca-file`, `--client-cert` and `--client-key`; `None` without `--ca-file`.
pub fn client_config(conn: &Connection) -> Result<Option<ClientConfig>, Failure> {
    let Some(ca) = &conn.ca_file else { return Ok(None) };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read("--ca-file", ca)?) {
        let cert = cert.map_err(|e| Failure::refused(format!("--ca-file {}: not PEM: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| Failure::refused(format!("--ca-file {}: not a CA certificate: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(Failure::refused(format!("--ca-file {}: holds no certificate", ca.display())));
    }
    let builder = builder().with_root_certificates(roots);
    let config = match (&conn.client_cert, &conn.client_key) {
        (Some(cert), Some(key)) => {
            let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&read("--client-cert", cert)?).collect();
            let certs =
                certs.map_err(|e| Failure::refused(format!("--client-cert {}: not PEM: {e}", cert.display())))?;
            rollgate_util::check_private_file(key)
                .map_err(|e| Failure::refused(format!("--client-key {}: {e}", key.display())))?;
            let key_der = PrivateKeyDer::from_pem_slice(&read("--client-key", key)?)
                .map_err(|e| Failure::refused(format!("--client-key {}: no usable key: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| Failure::refused(format!("--client-cert and --client-key do not fit: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(config))
}

/// What to do about a TLS failure, from the error's text.
pub fn hint(e: &reqwest::Error) -> Option<String> {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    let fix = if text.contains("InvalidContentType") || text.contains("corrupt message") {
        "the node does not speak HTTPS there: use http://, or start the node with TLS"
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        "the node's certificate is not signed by the CA of --ca-file: give the cluster's CA"
    } else if text.contains("Expired") || text.contains("certificate expired") {
        "the node's certificate has expired: issue it a new one (rollgate certs node ID)"
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        "the node's certificate does not name the host in --node: use an address it names, or issue it with --host"
    } else if text.contains("CertificateRequired") {
        "the node requires a client certificate: give --client-cert and --client-key"
    } else {
        return None;
    };
    Some(format!("{fix} ({text})"))
}

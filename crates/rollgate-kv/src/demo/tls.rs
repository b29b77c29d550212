//! The demo runs with TLS on: a cluster CA and one certificate per node,
//! made in the demo's data dir (keys readable by their owner only), mutual
//! TLS between peers and HTTPS for the client and the operator.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rollgate::tls::TlsFiles;
use rollgate_certs::{Ca, Validity};

use super::DemoError;

/// The demo cluster's certificates.
pub(super) struct DemoTls {
    dir: PathBuf,
    /// HTTPS towards the nodes: the demo's CA.
    pub(super) client: Arc<rustls::ClientConfig>,
}

impl DemoTls {
    /// A CA and a certificate for each of `nodes` (reachable on 127.0.0.1), in `root/tls`.
    pub(super) fn make(root: &Path, nodes: &[String]) -> Result<DemoTls, DemoError> {
        let setup = |e: &dyn std::fmt::Display| DemoError::Setup(format!("certificates: {e}"));
        let dir = root.join("tls");
        std::fs::create_dir_all(&dir).map_err(|e| setup(&e))?;
        let ca = Ca::new("demo", Validity::days(1)).map_err(|e| setup(&e))?;
        let ca_path = dir.join("ca.pem");
        for id in nodes {
            let node = ca.node(id, &["127.0.0.1".to_string()], Validity::days(1)).map_err(|e| setup(&e))?;
            let (cert, key) = (dir.join(format!("{id}.pem")), dir.join(format!("{id}.key")));
            // A kept data dir (--keep) is reused: its files are replaced, never written through.
            let _ = std::fs::remove_file(&cert);
            let _ = std::fs::remove_file(&key);
            rollgate_certs::write_public(&cert, &node.cert_pem).map_err(|e| setup(&e))?;
            rollgate_certs::write_private(&key, &node.key_pem).map_err(|e| setup(&e))?;
        }
        let _ = std::fs::remove_file(&ca_path);
        rollgate_certs::write_public(&ca_path, ca.cert_pem()).map_err(|e| setup(&e))?;
        let client = rollgate::tls::https_client(&ca_path, ca.cert_pem().as_bytes(), None).map_err(|e| setup(&e))?;
        Ok(DemoTls { dir, client: Arc::new(client) })
    }

    /// The files of node `id`.
    pub(super) fn files(&self, id: &str) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join(format!("{id}.pem")),
            key: self.dir.join(format!("{id}.key")),
            ca: self.dir.join("ca.pem"),
        }
    }
}

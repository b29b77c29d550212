//! How a node reaches etcd securely: TLS with the CA that signed etcd's
//! server certificate, and authentication by user name and password or by
//! a client certificate (etcd's `--client-cert-auth`). Secrets are read
//! from files readable by their owner only and never printed by `Debug`.

use std::path::Path;

/// The TLS and authentication of the etcd connection (empty: plain HTTP,
/// no authentication, for loopback and tests).
#[derive(Clone, Default)]
pub struct EtcdSecurity {
    /// The CA of etcd's server certificate (PEM): connect with TLS (`https://`).
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and its key (PEM).
    pub client_cert_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// A user name and its password.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSecurity")
            .field("tls", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u.as_str()))
            .finish()
    }
}

/// An etcd security file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {path}: {reason}")]
pub struct SecurityFileError {
    /// The option (`--etcd-ca`, ...).
    pub what: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong and how to fix it.
    pub reason: String,
}

/// Largest file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

fn read(what: &'static str, path: &Path, private: bool) -> Result<Vec<u8>, SecurityFileError> {
    let fail = |reason: String| SecurityFileError { what, path: path.display().to_string(), reason };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(fail(format!("{} bytes, over {MAX_FILE_BYTES}", meta.len())));
    }
    if private {
        rollgate_util::check_private_file(path).map_err(fail)?;
    }
    std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))
}

impl EtcdSecurity {
    /// From files: the CA, a client certificate and key, a user and the
    /// file of its password (one line). Keys and passwords must be readable
    /// by their owner only.
    pub fn from_files(
        ca: Option<&Path>,
        client: Option<(&Path, &Path)>,
        user: Option<(&str, &Path)>,
    ) -> Result<EtcdSecurity, SecurityFileError> {
        let ca_pem = ca.map(|p| read("--etcd-ca", p, false)).transpose()?;
        let client_cert_pem = match client {
            Some((cert, key)) => Some((read("--etcd-cert", cert, false)?, read("--etcd-key", key, true)?)),
            None => None,
        };
        let user = match user {
            Some((name, file)) => {
                let bytes = read("--etcd-password-file", file, true)?;
                let fail = |reason: &str| SecurityFileError {
                    what: "--etcd-password-file",
                    path: file.display().to_string(),
                    reason: reason.into(),
                };
                let text = String::from_utf8(bytes).map_err(|_| fail("it is not UTF-8 text"))?;
                let password = text.trim_end_matches(['\n', '\r']).to_string();
                if password.is_empty() || password.contains('\n') {
                    return Err(fail("it must hold the password on one line"));
                }
                Some((name.to_string(), password))
            }
            None => None,
        };
        if (client_cert_pem.is_some() || user.is_some()) && ca_pem.is_none() {
            return Err(SecurityFileError {
                what: "--etcd-ca",
                path: String::new(),
                reason: "is required with --etcd-cert or --etcd-user: credentials never travel in the clear".into(),
            });
        }
        Ok(EtcdSecurity { ca_pem, client_cert_pem, user })
    }

    /// Whether the connection uses TLS.
    pub fn tls(&self) -> bool {
        self.ca_pem.is_some()
    }
}

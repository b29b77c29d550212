//! `rollgate certs`: a cluster CA, node certificates and client
//! certificates for a test or small cluster, written to files (keys
//! readable by their owner only, nothing overwritten).
//!
//! It lives in the operator's tool because the operator sets a cluster up:
//! the same binary that then talks to the nodes over HTTPS with the CA it
//! made (`--ca-file`). A cluster with its own CA issues the same kind of
//! certificates instead (see the README: a node certificate names
//! `<node-id>.node.rollgate`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rollgate_certs::{Ca, Issued, Validity};

use crate::failure::{Failure, Outcome};

/// Where the files go and how long certificates last.
#[derive(Args, Debug)]
pub struct Common {
    /// The directory to write to (created when missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Days the certificate is valid.
    #[arg(long, value_name = "N", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
}

/// The CA that signs (default: ca.pem and ca.key in --dir).
#[derive(Args, Debug)]
pub struct Signer {
    /// The CA's certificate (PEM); default DIR/ca.pem.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The CA's private key (PEM, readable by its owner only); default DIR/ca.key.
    #[arg(long, value_name = "FILE")]
    ca_key: Option<PathBuf>,
}

/// `rollgate certs ...`.
#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// A new cluster CA: DIR/ca.pem (give it to every node and client) and DIR/ca.key (keep it off the nodes).
    #[command(after_help = "Example:\n  rollgate certs ca --dir tls")]
    Ca {
        /// A name for the CA.
        #[arg(long, default_value = "cluster")]
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// A node certificate: DIR/ID.pem and DIR/ID.key, naming ID.node.rollgate and every --host.
    #[command(after_help = "Example:\n  rollgate certs node n1 --host 10.0.0.1 --host node1.example --dir tls\n\n\
Then: rollgate-kv serve --node-id n1 --tls-cert tls/n1.pem --tls-key tls/n1.key --tls-ca tls/ca.pem ...")]
    Node {
        /// The node's id (what `rollgate-kv serve --node-id` says).
        id: String,
        /// An address or host name clients and members use to reach the node (repeat it).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        #[command(flatten)]
        signer: Signer,
        #[command(flatten)]
        common: Common,
    },
    /// A client certificate: DIR/client-NAME.pem and DIR/client-NAME.key (for --client-cert).
    Client {
        /// The client's name.
        name: String,
        #[command(flatten)]
        signer: Signer,
        #[command(flatten)]
        common: Common,
    },
}

fn refused(e: impl std::fmt::Display) -> Failure {
    Failure::refused(e)
}

fn prepare(dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir).map_err(|e| refused(format!("--dir {}: {e}", dir.display())))
}

fn load_ca(signer: &Signer, dir: &Path) -> Result<Ca, Failure> {
    let cert = signer.ca_cert.clone().unwrap_or_else(|| dir.join("ca.pem"));
    let key = signer.ca_key.clone().unwrap_or_else(|| dir.join("ca.key"));
    let read = |what: &str, path: &Path| {
        std::fs::read_to_string(path).map_err(|e| {
            refused(format!(
                "{what} {}: {e}; make a CA first (rollgate certs ca --dir {}) or give --ca-cert and --ca-key",
                path.display(),
                dir.display()
            ))
        })
    };
    let cert_pem = read("the CA certificate", &cert)?;
    rollgate_util::check_private_file(&key).map_err(|e| refused(format!("the CA key {}: {e}", key.display())))?;
    let key_pem = read("the CA key", &key)?;
    Ca::from_pem(&cert_pem, &key_pem).map_err(refused)
}

fn write_pair(dir: &Path, stem: &str, issued: &Issued) -> Result<(PathBuf, PathBuf), Failure> {
    let (cert, key) = (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}.key")));
    for p in [&cert, &key] {
        if p.exists() {
            return Err(refused(format!("{} already exists; it is never overwritten: remove it first", p.display())));
        }
    }
    rollgate_certs::write_private(&key, &issued.key_pem).map_err(refused)?;
    rollgate_certs::write_public(&cert, &issued.cert_pem).map_err(refused)?;
    Ok((cert, key))
}

/// Runs `rollgate certs ...`.
pub fn run(cmd: CertsCommand) -> Outcome {
    match cmd {
        CertsCommand::Ca { name, common } => {
            prepare(&common.dir)?;
            let ca = Ca::new(&name, Validity::days(common.days)).map_err(refused)?;
            let (cert, key) = write_pair(
                &common.dir,
                "ca",
                &Issued { cert_pem: ca.cert_pem().into(), key_pem: ca.key_pem().into() },
            )?;
            println!(
                "wrote {} (give it to every node and client) and {} (keep it off the nodes)",
                cert.display(),
                key.display()
            );
        }
        CertsCommand::Node { id, hosts, signer, common } => {
            prepare(&common.dir)?;
            let ca = load_ca(&signer, &common.dir)?;
            let issued = ca.node(&id, &hosts, Validity::days(common.days)).map_err(refused)?;
            let (cert, key) = write_pair(&common.dir, &id, &issued)?;
            println!(
                "wrote {} and {} for node {id} ({}{})",
                cert.display(),
                key.display(),
                rollgate_certs::node_identity(&id),
                hosts.iter().map(|h| format!(", {h}")).collect::<String>()
            );
        }
        CertsCommand::Client { name, signer, common } => {
            prepare(&common.dir)?;
            let ca = load_ca(&signer, &common.dir)?;
            let issued = ca.client(&name, Validity::days(common.days)).map_err(refused)?;
            let (cert, key) = write_pair(&common.dir, &format!("client-{name}"), &issued)?;
            println!("wrote {} and {} for client {name}", cert.display(), key.display());
        }
    }
    Ok(())
}

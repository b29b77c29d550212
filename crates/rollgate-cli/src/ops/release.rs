//! `rollgate release`: release keys and signed release manifests. Local
//! files only (no node): `keygen` writes a key pair, `sign` signs a
//! release's manifest (`rollgate-kv releases --manifest R` prints one),
//! `verify` checks a signed manifest against a public key.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use rollgate_release::{Manifest, ReleaseKey, SignedManifest, SigningKey};

use crate::failure::{Failure, Outcome};

/// Release keys and signed release manifests.
#[derive(Subcommand, Debug)]
#[command(
    long_about = "A node started with a trusted release public key runs only a release whose manifest (name, \
protocol range, transport ids, flags with stability, formats, features) that key signed, and accepts only peers \
whose release it signed.",
    after_help = "A signed release:
  rollgate release keygen --out release.key                  # release.key (mode 600) and release.key.pub
  rollgate-kv releases --manifest 1.2 > kv-1.2.manifest.json
  rollgate release sign --key release.key kv-1.2.manifest.json --out kv-1.2.signed.json
  rollgate release verify --key release.key.pub kv-1.2.signed.json
  rollgate-kv serve --release 1.2 --release-manifest kv-1.2.signed.json --release-key release.key.pub ..."
)]
pub enum ReleaseCommand {
    /// Write a new release key pair: FILE (private, mode 600) and FILE.pub.
    Keygen {
        /// The private key file to create (refused when it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a release manifest with a release private key.
    Sign(SignArgs),
    /// Check a signed manifest against a release public key (exit 2 when it does not verify).
    Verify {
        /// The release public key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The signed manifest file.
        #[arg(value_name = "SIGNED")]
        signed: PathBuf,
        /// Print {release, digest, key_id} as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `rollgate release sign`.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// The release private key file (readable by its owner only).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The manifest to sign.
    #[arg(value_name = "MANIFEST")]
    manifest: PathBuf,
    /// Where to write the signed manifest (default: standard output).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn refused(e: rollgate_release::ReleaseError) -> Failure {
    Failure::refused(e)
}

fn write_new(path: &Path, text: &str) -> Outcome {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
        Failure::refused(format!("cannot create {}: {e} (remove it first or choose another --out)", path.display()))
    })?;
    f.write_all(text.as_bytes()).map_err(|e| Failure::Internal(e.into()))
}

/// `rollgate release ...`.
pub fn run_release(cmd: ReleaseCommand) -> Outcome {
    match cmd {
        ReleaseCommand::Keygen { out } => {
            let mut public = out.clone().into_os_string();
            public.push(".pub");
            let public = PathBuf::from(public);
            let key = rollgate_release::generate_key_files(&out, &public).map_err(refused)?;
            println!(
                "wrote {} (private, mode 600) and {} (public), key id {}",
                out.display(),
                public.display(),
                key.id()
            );
            Ok(())
        }
        ReleaseCommand::Sign(a) => {
            let key = SigningKey::read(&a.key).map_err(refused)?;
            let manifest = Manifest::read(&a.manifest).map_err(refused)?;
            let signed = SignedManifest::sign(manifest, &key).map_err(refused)?;
            let text = format!("{}\n", signed.to_json());
            match &a.out {
                Some(path) => {
                    write_new(path, &text)?;
                    eprintln!(
                        "signed release {} ({}) with key {}: {}",
                        signed.manifest.release,
                        signed.manifest.digest(),
                        key.public().id(),
                        path.display()
                    );
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        ReleaseCommand::Verify { key, signed, json } => {
            let key = ReleaseKey::read(&key).map_err(refused)?;
            let signed = SignedManifest::read(&signed).map_err(refused)?;
            let digest = signed.verify(&key).map_err(refused)?;
            if json {
                let out = serde_json::json!({
                    "release": signed.manifest.release,
                    "digest": digest.to_text(),
                    "key_id": key.id(),
                });
                println!("{}", serde_json::to_string_pretty(&out).map_err(|e| Failure::Internal(e.into()))?);
            } else {
                println!("release {} ({digest}) is signed by release key {}", signed.manifest.release, key.id());
            }
            Ok(())
        }
    }
}

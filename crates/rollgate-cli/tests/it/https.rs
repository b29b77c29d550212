//! `rollgate certs` and the operator commands over HTTPS: the files it
//! writes (keys owner-only, nothing overwritten), then the real binary
//! against an admin API served over HTTPS with those certificates: with
//! `--ca-file` (and a client certificate) it works; without the CA, over
//! plain http, or trusting another CA it is refused with the fix.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rollgate::admin::{AdminConfig, ServeOptions};
use rollgate::flags::{FlagDecl, FlagRegistry};
use rollgate::node::{Node, NodeConfig};
use rollgate::tls::{NodeTls, TlsFiles};

use crate::common::{Run, rollgate};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn run(cwd: &Path, args: &[&str]) -> Run {
    let (cwd, args): (std::path::PathBuf, Vec<String>) = (cwd.into(), args.iter().map(|s| s.to_string()).collect());
    tokio::task::spawn_blocking(move || rollgate(&cwd, &args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_are_made_once_and_the_cli_talks_https_with_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let d = dir.to_str().unwrap();
    run(tmp.path(), &["certs", "ca", "--dir", d]).await.expect(0);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    let again = run(tmp.path(), &["certs", "ca", "--dir", d]).await.expect(2);
    assert!(again.stderr.contains("never overwritten"), "{}", again.stderr);
    run(tmp.path(), &["certs", "node", "n1", "--host", "127.0.0.1", "--dir", d]).await.expect(0);
    run(tmp.path(), &["certs", "client", "ops", "--dir", d]).await.expect(0);
    assert_eq!((mode(&dir.join("n1.key")), mode(&dir.join("client-ops.key"))), (0o600, 0o600));

    // A node serving its admin API over HTTPS with those files.
    let store = rollgate::store::open("mem:", Default::default()).await.unwrap();
    let registry = FlagRegistry::builder("1.0")
        .with(FlagDecl::new("base", "the 1.0 format").introduced_in("1.0"))
        .build()
        .unwrap();
    let node = Node::start(NodeConfig::new("n1", "1.0", tmp.path().join("n1"), registry), store).await.unwrap();
    let files = TlsFiles { cert: dir.join("n1.pem"), key: dir.join("n1.key"), ca: dir.join("ca.pem") };
    let tls = NodeTls::from_files(&files, "n1").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServeOptions { tls: Some(tls.http_server()), ..ServeOptions::default() };
    let router = rollgate::admin::router(node.clone(), AdminConfig::default());
    tokio::spawn(rollgate::admin::serve_with(listener, router, options, std::future::pending()));

    let https = format!("https://{addr}");
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let ok = run(tmp.path(), &["--node", &https, "--ca-file", ca, "nodes", "list"]).await.expect(0);
    assert!(ok.stdout.contains("n1"), "{}", ok.stdout);
    let (cert, key) = (dir.join("client-ops.pem"), dir.join("client-ops.key"));
    let with_cert = ["--client-cert", cert.to_str().unwrap(), "--client-key", key.to_str().unwrap()];
    let addr_text = addr.to_string(); // HOST:PORT means https:// with --ca-file
    let mut args = vec!["--node", addr_text.as_str(), "--ca-file", ca];
    args.extend_from_slice(&with_cert);
    args.extend_from_slice(&["nodes", "list"]);
    run(tmp.path(), &args).await.expect(0);
    // The audit log and waiting for the cluster, over the same HTTPS.
    let audit = run(tmp.path(), &["--node", &https, "--ca-file", ca, "audit", "--json"]).await.expect(0);
    assert!(
        audit.stdout.trim_start().starts_with('{') || audit.stdout.trim_start().starts_with('['),
        "{}",
        audit.stdout
    );
    let wait = ["--node", &https, "--ca-file", ca, "upgrade", "wait", "--timeout-s", "20", "--json"];
    run(tmp.path(), &wait).await.expect(0);

    let no_ca = run(tmp.path(), &["--node", &https, "nodes", "list"]).await.expect(2);
    assert!(no_ca.stderr.contains("--ca-file"), "{}", no_ca.stderr);
    let plain = run(tmp.path(), &["--node", &format!("http://{addr}"), "nodes", "list"]).await.expect(2);
    assert!(plain.stderr.contains("https://") && plain.stderr.contains("--ca-file"), "{}", plain.stderr);
    let other = tmp.path().join("other");
    run(tmp.path(), &["certs", "ca", "--dir", other.to_str().unwrap()]).await.expect(0);
    let wrong = other.join("ca.pem");
    let wrong_ca = run(tmp.path(), &["--node", &https, "--ca-file", wrong.to_str().unwrap(), "nodes", "list"]).await;
    let wrong_ca = wrong_ca.expect(2);
    assert!(wrong_ca.stderr.contains("not signed by the CA of --ca-file"), "{}", wrong_ca.stderr);
    node.stop().await.unwrap();
}

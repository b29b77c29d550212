//! The etcd store against a real etcd 3.4 with TLS and authentication on
//! (invariant I9): a user with a password, or a client certificate whose
//! common name is the user, reads and writes; no credentials, a wrong
//! password, the wrong CA or plaintext against TLS are refused with a
//! message that names the option to fix.

use std::path::Path;

use etcd_client as ec;
use rollgate_certs::{Ca, Validity};
use rollgate_store::{EtcdSecurity, MetaStore, StoreOptions};
use rollgate_testkit::{EtcdServer, EtcdTls};

const ROOT_PASSWORD: &str = "root-password-of-the-test";
const PASSWORD: &str = "kv-password-of-the-test";

/// A CA, and etcd over TLS with a server certificate of it.
fn secure_etcd(ca: &Ca, client_cert_auth: bool) -> EtcdServer {
    let server = ca.server(&["127.0.0.1".into(), "localhost".into()], Validity::days(1)).unwrap();
    EtcdServer::start_tls(EtcdTls {
        cert_pem: server.cert_pem,
        key_pem: server.key_pem,
        client_ca_pem: ca.cert_pem().to_string(),
        client_cert_auth,
    })
    .expect("start etcd with TLS")
}

/// Turns authentication on: `root`, and user `kv` with read-write on every key.
async fn enable_auth(etcd: &EtcdServer, ca: &Ca, client: Option<&rollgate_certs::Issued>) {
    let mut tls = ec::TlsOptions::new().ca_certificate(ec::Certificate::from_pem(ca.cert_pem()));
    if let Some(c) = client {
        tls = tls.identity(ec::Identity::from_pem(&c.cert_pem, &c.key_pem));
    }
    let mut admin = ec::Client::connect([etcd.endpoint()], Some(ec::ConnectOptions::new().with_tls(tls)))
        .await
        .expect("connect as the administrator");
    admin.user_add("root", ROOT_PASSWORD, None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("rw").await.unwrap();
    admin.role_grant_permission("rw", ec::Permission::read_write("").with_all_keys()).await.unwrap();
    admin.user_add("kv", PASSWORD, None).await.unwrap();
    admin.user_grant_role("kv", "rw").await.unwrap();
    admin.auth_enable().await.unwrap();
}

fn options(ca_pem: Option<&str>, client: Option<&rollgate_certs::Issued>, user: Option<(&str, &str)>) -> StoreOptions {
    let etcd = EtcdSecurity {
        ca_pem: ca_pem.map(|c| c.as_bytes().to_vec()),
        client_cert_pem: client.map(|c| (c.cert_pem.clone().into_bytes(), c.key_pem.clone().into_bytes())),
        user: user.map(|(u, p)| (u.to_string(), p.to_string())),
    };
    StoreOptions { connect_timeout_ms: 2_000, request_timeout_ms: 3_000, etcd, ..StoreOptions::default() }
}

async fn round_trip(store: &dyn MetaStore) -> Result<(), String> {
    store.put("secure/k", b"v".to_vec()).await.map_err(|e| e.to_string())?;
    let got = store.get("secure/k").await.map_err(|e| e.to_string())?;
    assert_eq!(got.map(|kv| kv.value), Some(b"v".to_vec()));
    Ok(())
}

async fn refused(url: &str, options: StoreOptions) -> String {
    match rollgate_store::open(url, options).await {
        Ok(store) => round_trip(&*store).await.expect_err("refused"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_user_with_its_password_gets_in_and_nobody_else() {
    let ca = Ca::new("etcd", Validity::days(1)).unwrap();
    let etcd = secure_etcd(&ca, false);
    enable_auth(&etcd, &ca, None).await;
    let url = etcd.url();

    let store = rollgate_store::open(&url, options(Some(ca.cert_pem()), None, Some(("kv", PASSWORD)))).await.unwrap();
    round_trip(&*store).await.unwrap();

    let e = refused(&url, options(Some(ca.cert_pem()), None, None)).await;
    println!("no credentials: {e}");
    assert!(e.contains("--etcd-user"), "{e}");
    let e = refused(&url, options(Some(ca.cert_pem()), None, Some(("kv", "a wrong password")))).await;
    println!("a wrong password: {e}");
    assert!(e.contains("--etcd-password-file"), "{e}");
    let other = Ca::new("other", Validity::days(1)).unwrap();
    let e = refused(&url, options(Some(other.cert_pem()), None, Some(("kv", PASSWORD)))).await;
    println!("another CA: {e}");
    assert!(e.contains("--etcd-ca"), "{e}");
    let e = refused(&url, options(None, None, None)).await;
    println!("plaintext: {e}");
    assert!(e.contains("unavailable") || e.contains("etcd"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_certificates_the_common_name_is_the_user() {
    let ca = Ca::new("etcd", Validity::days(1)).unwrap();
    let etcd = secure_etcd(&ca, true);
    let root = ca.named_client("root", Validity::days(1)).unwrap();
    enable_auth(&etcd, &ca, Some(&root)).await;
    let url = etcd.url();

    let kv = ca.named_client("kv", Validity::days(1)).unwrap();
    let store = rollgate_store::open(&url, options(Some(ca.cert_pem()), Some(&kv), None)).await.unwrap();
    round_trip(&*store).await.unwrap();

    let e = refused(&url, options(Some(ca.cert_pem()), None, Some(("kv", PASSWORD)))).await;
    println!("no client certificate: {e}");
    // TLS 1.3: etcd's alert may come before or after the client's first
    // request; the alert names the fix, a closed connection cannot.
    assert!(e.contains("--etcd-cert") || e.contains("connection closed"), "{e}");
}

#[test]
fn etcd_secret_files_must_be_owner_only_and_credentials_need_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "pw\n").unwrap();
    let e = EtcdSecurity::from_files(Some(Path::new("/nonexistent")), None, Some(("kv", &password))).unwrap_err();
    assert!(e.to_string().contains("--etcd-ca"), "{e}");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "x").unwrap();
    let e = EtcdSecurity::from_files(Some(&ca), None, Some(("kv", &password))).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&password, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600))
        .unwrap();
    let s = EtcdSecurity::from_files(Some(&ca), None, Some(("kv", &password))).unwrap();
    assert_eq!(s.user.as_ref().map(|(u, p)| (u.as_str(), p.as_str())), Some(("kv", "pw")));
    assert!(!format!("{s:?}").contains("pw\""), "Debug never prints the password: {s:?}");
    let e = EtcdSecurity::from_files(None, None, Some(("kv", &password))).unwrap_err();
    assert!(e.to_string().contains("--etcd-ca") && e.to_string().contains("never travel in the clear"), "{e}");
}

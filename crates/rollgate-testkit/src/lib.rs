//! Test support shared by rollgate's test suites, and the fault harness for
//! services built on rollgate. Not part of the public API.
//!
//! - [`EtcdServer`]: a real `etcd` process on a free loopback port with a
//!   temporary data dir, ready when it says so, killed on drop; over TLS
//!   (and requiring client certificates) with [`EtcdServer::start_tls`].
//! - [`etcd_cluster::EtcdCluster`]: a real multi-member etcd cluster whose
//!   members can be killed, paused and restarted.
//! - [`proxy::Proxy`]: a userspace TCP proxy that partitions, cuts one
//!   direction, delays and drops connections at runtime.
//! - [`process::ChildProcess`]: a node process that can be paused
//!   (SIGSTOP/SIGCONT), killed (SIGKILL), stopped and restarted, ready from
//!   its log lines; optionally with its wall clock shifted
//!   ([`clock::ClockOffset`]: the service's env hook or `faketime`).
//! - [`http`]: a blocking HTTP/1.0 client for health checks.
//! - [`seed`]: the seed of a randomised test, printed, overridable by an
//!   environment variable.

pub mod clock;
pub mod etcd_cluster;
pub mod history;
pub mod http;
pub mod process;
pub mod proxy;

pub use clock::ClockOffset;
pub use etcd_cluster::EtcdCluster;
pub use process::{ChildProcess, ClockHook, ProcessSpec, Signaller};
pub use proxy::{Direction, Mode, Proxy};

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What etcd prints on stderr once it serves clients on a plain-text
/// listener (capnslog, etcd 3.4's default logger; and zap). It follows
/// "ready to serve client requests", and the listener is bound by then.
pub(crate) const READY_LINES: [&str; 2] = ["serving insecure client requests on", "serving client traffic insecurely"];
/// The same over TLS.
const READY_LINES_TLS: [&str; 2] = ["serving client requests on", "serving client traffic securely"];
/// How long etcd may take to become ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How many of etcd's last log lines an error message shows.
const LOG_TAIL_LINES: usize = 40;

/// Why an [`EtcdServer`] could not start.
#[derive(Debug)]
pub struct EtcdError(pub String);

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EtcdError {}

/// Why a child process could not be started, signalled or waited for
/// (see [`process::ChildProcess`]).
#[derive(Debug)]
pub struct ProcessError(pub String);

impl std::fmt::Display for ProcessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProcessError {}

/// A real single-member etcd server on 127.0.0.1, for tests.
///
/// `start()` picks free loopback ports for clients and peers, creates a
/// temporary data dir and waits for etcd's "ready to serve client requests"
/// line on its stderr (no fixed sleeps). `stop()` kills it; `restart()`
/// starts it again on the same ports with the same data dir (its data
/// survives). Dropping the value kills the process and removes the data dir,
/// also when the test panics.
pub struct EtcdServer {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    data_dir: tempfile::TempDir,
    log: Arc<Mutex<VecDeque<String>>>,
    /// How many times a process of this server said it serves clients.
    ready: Arc<std::sync::atomic::AtomicUsize>,
    /// TLS on the client listener.
    tls: Option<EtcdTls>,
}

/// TLS for an [`EtcdServer`]'s clients: the server's certificate and key
/// and the CA of its clients (PEM).
#[derive(Clone)]
pub struct EtcdTls {
    /// The server's certificate; it must name 127.0.0.1.
    pub cert_pem: String,
    /// The server's key.
    pub key_pem: String,
    /// The CA whose certificates clients present (with `client_cert_auth`).
    pub client_ca_pem: String,
    /// Require a client certificate (etcd's `--client-cert-auth`: with
    /// authentication on, its common name is the user).
    pub client_cert_auth: bool,
}

impl std::fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdServer")
            .field("endpoint", &self.endpoint())
            .field("running", &self.child.is_some())
            .finish()
    }
}

pub(crate) fn free_port() -> Result<u16, EtcdError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| EtcdError(format!("binding a free port: {e}")))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| EtcdError(format!("reading a free port: {e}")))
}

/// Finds the `etcd` binary in the directories of a PATH value.
pub(crate) fn find_etcd(path: Option<std::ffi::OsString>) -> Result<PathBuf, EtcdError> {
    path.and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("etcd")).find(|p| p.is_file())).ok_or_else(
        || {
            EtcdError(
                "`etcd` is not on PATH: run `scripts/test`, which installs it (Debian package etcd-server), \
                 or install etcd 3.4+ yourself"
                    .into(),
            )
        },
    )
}

impl EtcdServer {
    /// Starts etcd on free loopback ports with a fresh temporary data dir.
    pub fn start() -> Result<EtcdServer, EtcdError> {
        Self::start_with(None)
    }

    /// Starts etcd serving its clients over TLS (`https://`).
    pub fn start_tls(tls: EtcdTls) -> Result<EtcdServer, EtcdError> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<EtcdTls>) -> Result<EtcdServer, EtcdError> {
        let data_dir = tempfile::Builder::new()
            .prefix("rollgate-etcd-")
            .tempdir()
            .map_err(|e| EtcdError(format!("creating the etcd data dir: {e}")))?;
        let client_port = free_port()?;
        let mut peer_port = free_port()?;
        while peer_port == client_port {
            peer_port = free_port()?;
        }
        let mut server = EtcdServer {
            child: None,
            client_port,
            peer_port,
            data_dir,
            log: Arc::new(Mutex::new(VecDeque::new())),
            ready: Arc::default(),
            tls,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), EtcdError> {
        let etcd = find_etcd(std::env::var_os("PATH"))?;
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(etcd);
        if let Some(tls) = &self.tls {
            let dir = self.data_dir.path();
            let write = |name: &str, text: &str| {
                let path = dir.join(name);
                std::fs::write(&path, text).map_err(|e| EtcdError(format!("writing {}: {e}", path.display())))?;
                Ok::<_, EtcdError>(path)
            };
            command.arg("--cert-file").arg(write("server.pem", &tls.cert_pem)?);
            command.arg("--key-file").arg(write("server.key", &tls.key_pem)?);
            // etcd requires a client certificate whenever it is given a client CA.
            if tls.client_cert_auth {
                command.arg("--trusted-ca-file").arg(write("client-ca.pem", &tls.client_ca_pem)?);
                command.arg("--client-cert-auth");
            }
        }
        let ready_lines = if self.tls.is_some() { READY_LINES_TLS } else { READY_LINES };
        let mut child = command
            .arg("--name")
            .arg("rollgate-test")
            .arg("--data-dir")
            .arg(self.data_dir.path().join("member-data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("rollgate-test={peer}"))
            .arg("--initial-cluster-state")
            .arg("new")
            // A single member elects itself quickly with short ticks; the
            // smallest lease TTL follows the election timeout (about 1 s here).
            .arg("--heartbeat-interval")
            .arg("25")
            .arg("--election-timeout")
            .arg("250")
            .env_remove("ETCD_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| EtcdError(format!("starting etcd: {e}")))?;
        let stderr = child.stderr.take().ok_or_else(|| EtcdError("etcd's stderr was not captured".into()))?;
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let log = self.log.clone();
        let times_ready = self.ready.clone();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if ready_lines.iter().any(|r| line.contains(r))
                    && let Some(tx) = ready.take()
                {
                    times_ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = tx.send(());
                }
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                if log.len() == LOG_TAIL_LINES {
                    log.pop_front();
                }
                log.push_back(line);
            }
            // stderr closed: etcd exited; dropping `ready` wakes the waiter.
        });
        self.child = Some(child);
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stop();
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => format!("was not ready within {} s", READY_TIMEOUT.as_secs()),
                    mpsc::RecvTimeoutError::Disconnected => "exited before it was ready".to_string(),
                };
                Err(EtcdError(format!("etcd on {client} {why}; its last log lines:\n{}", self.log_tail())))
            }
        }
    }

    /// The client endpoint, `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The metadata store URL, `etcd:127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("etcd:127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port
    }

    /// The data dir (kept across `restart()`).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// How many times a process of this server became ready (started or
    /// restarted and serving clients).
    pub fn times_ready(&self) -> usize {
        self.ready.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The last lines etcd logged.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Kills the process (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports with the same data dir.
    pub fn restart(&mut self) -> Result<(), EtcdError> {
        self.stop();
        self.spawn()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The seed of a randomised test: the value of the environment variable
/// `var` when set (to re-run a failure), else a fresh random one. Printed
/// either way, with the command line that reproduces the run.
pub fn seed(var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{var}={v:?} is not a u64 seed")),
        Err(_) => rand::random(),
    };
    eprintln!("seed: {seed} (re-run with {var}={seed})");
    seed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    fn connects(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    #[test]
    fn etcd_starts_restarts_on_the_same_port_and_stops() {
        let mut etcd = EtcdServer::start().expect("start etcd");
        let port = etcd.port();
        assert_eq!(etcd.url(), format!("etcd:127.0.0.1:{port}"));
        assert_eq!(etcd.endpoint(), format!("http://127.0.0.1:{port}"));
        assert!(connects(port), "ready means accepting clients");
        assert_eq!(etcd.times_ready(), 1);
        assert!(etcd.data_dir().join("member-data").is_dir());
        etcd.stop();
        assert!(!etcd.is_running());
        assert!(!connects(port), "stopped means gone");
        etcd.restart().expect("restart etcd");
        assert_eq!(etcd.port(), port, "same port");
        assert!(connects(port));
        // Its own ready line, not the first process's (the log tail is too
        // short to hold it once etcd logs on after it).
        assert_eq!(etcd.times_ready(), 2, "{}", etcd.log_tail());
        drop(etcd);
        assert!(!connects(port), "drop kills the process");
    }

    #[test]
    fn a_missing_etcd_binary_says_how_to_install_it() {
        let empty = tempfile::tempdir().unwrap();
        let err = find_etcd(Some(empty.path().as_os_str().to_owned())).unwrap_err();
        assert!(err.to_string().contains("scripts/test"), "{err}");
        assert!(find_etcd(None).is_err());
    }

    #[test]
    fn without_the_variable_each_seed_is_fresh() {
        // Without the variable a fresh seed is drawn; two draws differ.
        let var = "ROLLGATE_TESTKIT_SEED_NEVER_SET";
        assert_ne!(seed(var), seed(var));
    }
}

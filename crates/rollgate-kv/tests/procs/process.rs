//! `rollgate-kv serve` as a child process: readiness from the line it
//! prints, graceful stop with SIGTERM, crash with SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a process may take to print a line we wait for.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rollgate-kv")
}

/// A running `rollgate-kv` process.
pub struct Proc {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
    /// Parsed from the `ready` line.
    pub node: String,
    /// The data address (from the `ready` line).
    pub data: String,
    /// The HTTP address (from the `ready` line).
    pub admin: String,
}

/// What the last stderr lines of a process were.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Proc {
    /// Starts `rollgate-kv ARGS`, its stderr going to `log`.
    pub fn spawn(args: &[String], log: &Path) -> Proc {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut child = Command::new(binary())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child: Some(child),
            lines,
            log: log.to_path_buf(),
            node: String::new(),
            data: String::new(),
            admin: String::new(),
        }
    }

    /// Waits for the first line starting with `prefix`; panics (with the log) on timeout or exit.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        loop {
            match self.lines.recv_timeout(LINE_TIMEOUT) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line {prefix:?} ({e:?}); stderr:\n{}", log_tail(&self.log)),
            }
        }
    }

    /// Waits for the `ready` line and records the addresses it names.
    pub fn wait_ready(&mut self) -> &mut Self {
        let line = self.wait_line("rollgate-kv: ready ");
        for part in line.split_whitespace() {
            if let Some((k, v)) = part.split_once('=') {
                match k {
                    "node" => self.node = v.to_string(),
                    "data" => self.data = v.to_string(),
                    "admin" => self.admin = v.to_string(),
                    _ => {}
                }
            }
        }
        assert!(!self.admin.is_empty() && !self.data.is_empty(), "{line}");
        self
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Waits until the process exits: its stdout closes (no polling), then reaps it.
    pub fn wait_exit(&mut self) -> ExitStatus {
        loop {
            match self.lines.recv_timeout(LINE_TIMEOUT) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the process did not exit; stderr:\n{}", log_tail(&self.log))
                }
            }
        }
        self.child.take().unwrap().wait().unwrap()
    }

    /// Graceful stop (SIGTERM); returns the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
        self.wait_exit()
    }

    /// Crash (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The stderr log (its last lines).
    pub fn log(&self) -> String {
        log_tail(&self.log)
    }

    /// Whether the whole stderr log so far holds `text` (the tail of
    /// [`Proc::log`] may have moved past it).
    pub fn logged(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).unwrap_or_default().contains(text)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `rollgate-kv ARGS` to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary()).args(args).stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The admin token every test node is started with.
pub const TOKEN: &str = "kv-test-admin-token";

/// Writes the admin token file into `dir` (idempotent) and returns its path.
pub fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600))
        .unwrap();
    path
}

/// The arguments of `rollgate-kv serve` for node `node` of `release` with its
/// data dir under `dir`, loopback ports picked by the OS, the admin token
/// file, and `extra` arguments.
pub fn serve_args(release: &str, node: &str, dir: &Path, meta: &str, extra: &[&str]) -> Vec<String> {
    serve_args_at(release, node, dir, meta, "127.0.0.1:0", extra)
}

/// [`serve_args`] with the HTTP address `admin` (to restart a node where its
/// clients expect it).
pub fn serve_args_at(release: &str, node: &str, dir: &Path, meta: &str, admin: &str, extra: &[&str]) -> Vec<String> {
    let data = dir.join(node).display().to_string();
    let token = token_file(dir).display().to_string();
    let base = [
        "serve",
        "--release",
        release,
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        admin,
        "--meta",
        meta,
        "--node-id",
        node,
        "--admin-token-file",
        &token,
    ];
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

#[cfg(feature = "etcd")]
/// A free loopback address (the OS picks the port; another process could
/// take it before it is used, which the OS makes unlikely).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Starts node `node` as `release` and waits for its `ready` line.
pub fn start_node(release: &str, node: &str, dir: &Path, meta: &str, extra: &[&str]) -> Proc {
    let mut p = Proc::spawn(&serve_args(release, node, dir, meta, extra), &dir.join(format!("{node}.log")));
    p.wait_ready();
    p
}

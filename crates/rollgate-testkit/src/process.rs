//! A child process a fault test can pause (SIGSTOP/SIGCONT), kill (SIGKILL),
//! stop (SIGTERM) and restart with the same command line, with readiness
//! taken from the lines it prints (no sleeps).
//!
//! The child runs in its own process group and signals go to the whole
//! group, so a wrapper (`faketime`, `sh -c`) and what it started are paused
//! and killed together. Signals are sent with the `kill` command through
//! [`std::process::Command`]: the workspace forbids unsafe code, and the
//! `kill` command needs no new dependency (`nix` or `rustix` would, for the
//! same effect). Every line of stdout and stderr is appended to a log file
//! (kept across restarts, so a test can show what happened before a crash)
//! and offered to [`ChildProcess::wait_line`].

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::ProcessError;
use crate::clock::ClockOffset;

/// How a child's wall clock is shifted (see [`ClockOffset`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClockHook {
    /// The service reads the offset in milliseconds from this environment
    /// variable (rollgate-kv: `ROLLGATE_KV_TEST_CLOCK_OFFSET_MS`, which
    /// shifts only its HLC).
    Env(String),
    /// The whole process runs under Debian's `faketime` (every wall-clock
    /// read shifted; monotonic clocks left alone).
    Faketime,
}

/// How to start a child; kept to restart it the same way.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    dir: Option<PathBuf>,
    log: PathBuf,
    clock: Option<(ClockOffset, ClockHook)>,
}

impl ProcessSpec {
    /// `program`, logging every output line to `log` (appended).
    pub fn new(program: impl AsRef<OsStr>, log: impl Into<PathBuf>) -> ProcessSpec {
        ProcessSpec {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            dir: None,
            log: log.into(),
            clock: None,
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> ProcessSpec
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> ProcessSpec {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> ProcessSpec {
        self.env_remove.push(key.as_ref().to_owned());
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> ProcessSpec {
        self.env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> ProcessSpec {
        self.dir = Some(dir.into());
        self
    }

    /// Runs the child with its wall clock shifted by `offset`, through `hook`.
    pub fn clock(mut self, offset: ClockOffset, hook: ClockHook) -> ProcessSpec {
        self.clock = Some((offset, hook));
        self
    }

    /// The arguments, to change before a restart (e.g. `--release 1.2` for
    /// a rolling upgrade).
    pub fn args_mut(&mut self) -> &mut Vec<OsString> {
        &mut self.args
    }

    /// Replaces the clock offset (e.g. restart a node with its clock fixed: `None`).
    pub fn set_clock(&mut self, clock: Option<(ClockOffset, ClockHook)>) {
        self.clock = clock;
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    fn command(&self) -> Result<Command, ProcessError> {
        let mut cmd = match &self.clock {
            Some((offset, ClockHook::Faketime)) => offset.faketime_command(&self.program, &self.args)?,
            _ => {
                let mut c = Command::new(&self.program);
                c.args(&self.args);
                c
            }
        };
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some((offset, ClockHook::Env(var))) = &self.clock {
            cmd.env(var, offset.millis().to_string());
        }
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Its own process group: signals reach what it started too.
        cmd.process_group(0);
        Ok(cmd)
    }
}

/// The state of a child as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Running or sleeping (it answers when asked).
    Running,
    /// Stopped by a signal (paused).
    Stopped,
    /// Exited, not yet reaped, or not started.
    Gone,
}

/// Pauses and resumes a child's process group from anywhere (another
/// thread, while the [`ChildProcess`] is busy restarting another node): a
/// fault thread holds one for as long as the fault lasts. It acts on the
/// process the child ran when it was taken ([`ChildProcess::signaller`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signaller {
    pgid: u32,
}

impl Signaller {
    /// SIGSTOP to the group; returns once the kernel reports it stopped.
    pub fn pause(&self) -> Result<(), ProcessError> {
        signal_group(self.pgid, "STOP")?;
        await_state(self.pgid, RunState::Stopped)
    }

    /// SIGCONT to the group; returns once the kernel reports it running.
    pub fn resume(&self) -> Result<(), ProcessError> {
        signal_group(self.pgid, "CONT")?;
        await_state(self.pgid, RunState::Running)
    }

    /// The process id (and group id).
    pub fn pid(&self) -> u32 {
        self.pgid
    }
}

/// What the kernel says about process `pid`.
fn run_state_of(pid: u32) -> RunState {
    match proc_state(pid) {
        Some('T' | 't') => RunState::Stopped,
        Some('Z' | 'X') | None => RunState::Gone,
        Some(_) => RunState::Running,
    }
}

/// Whether every process of group `pgid` is stopped, or waits on one that
/// is (a shell parent waiting in `vfork` for a child that a SIGSTOP caught
/// before it ran its program is in `D`, and cannot run until the child
/// does). `/proc/PID/stat`: `pid (comm) STATE ppid pgrp ...`.
fn group_stopped(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else { return false };
    let mut stopped = false;
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) != Some(pgid) {
            continue;
        }
        match fields.first().and_then(|s| s.chars().next()) {
            Some('T' | 't') => stopped = true,
            Some('D' | 'Z' | 'X') => {}
            _ => return false,
        }
    }
    stopped
}

/// Waits (bounded: there is no event to wait on but `/proc`) until `pid` is
/// in state `want` (stopped: its whole group, see [`group_stopped`]).
fn await_state(pid: u32, want: RunState) -> Result<(), ProcessError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = run_state_of(pid);
        if now == want || (want == RunState::Stopped && group_stopped(pid)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ProcessError(format!("process {pid} is {now:?}, not {want:?}, 5 s after the signal")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A child process under test; dropping it kills its process group.
pub struct ChildProcess {
    spec: ProcessSpec,
    child: Option<Child>,
    lines: Option<mpsc::Receiver<String>>,
    log: Arc<Mutex<std::fs::File>>,
    paused: bool,
    starts: usize,
}

impl std::fmt::Debug for ChildProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildProcess")
            .field("program", &self.spec.program)
            .field("pid", &self.pid())
            .field("paused", &self.paused)
            .field("starts", &self.starts)
            .finish()
    }
}

/// Sends `signal` (a name such as `STOP`) to the process group `pgid`.
fn signal_group(pgid: u32, signal: &str) -> Result<(), ProcessError> {
    let out = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ProcessError(format!("running `kill -{signal}`: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ProcessError(format!(
            "`kill -{signal} -- -{pgid}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The state letter of `/proc/PID/stat` (Linux).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ...`: comm may hold spaces and parentheses; the state follows the last ')'.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next())
}

impl ChildProcess {
    /// Starts the child.
    pub fn spawn(spec: ProcessSpec) -> Result<ChildProcess, ProcessError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| ProcessError(format!("opening the log {}: {e}", spec.log.display())))?;
        let mut p =
            ChildProcess { spec, child: None, lines: None, log: Arc::new(Mutex::new(log)), paused: false, starts: 0 };
        p.start()?;
        Ok(p)
    }

    fn start(&mut self) -> Result<(), ProcessError> {
        let mut child =
            self.spec.command()?.spawn().map_err(|e| ProcessError(format!("starting {:?}: {e}", self.spec.program)))?;
        self.starts += 1;
        let (tx, rx) = mpsc::channel();
        let start = self.starts;
        let out = child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let err = child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        for stream in [out, err].into_iter().flatten() {
            let (tx, log) = (tx.clone(), self.log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    {
                        let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = writeln!(f, "[start {start}] {line}");
                    }
                    // The receiver goes away on restart; keep logging.
                    let _ = tx.send(line);
                }
            });
        }
        self.child = Some(child);
        self.lines = Some(rx);
        self.paused = false;
        Ok(())
    }

    /// The process id (also its process group id); 0 when not running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// How many times it was started.
    pub fn starts(&self) -> usize {
        self.starts
    }

    /// The spec it was started with (and will be restarted with).
    pub fn spec_mut(&mut self) -> &mut ProcessSpec {
        &mut self.spec
    }

    /// Whether it is running (paused counts as running).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Whether it was paused by [`pause`](Self::pause) and not resumed.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// What the kernel says about it.
    pub fn run_state(&self) -> RunState {
        self.child.as_ref().map_or(RunState::Gone, |c| run_state_of(c.id()))
    }

    /// A handle that pauses and resumes this process from another thread
    /// (see [`Signaller`]); an error when it does not run.
    pub fn signaller(&self) -> Result<Signaller, ProcessError> {
        Ok(Signaller { pgid: self.running_pid()? })
    }

    /// Waits (at most `timeout`) for the next line (stdout or stderr, since
    /// the last one returned) that satisfies `pred`; the error names the
    /// line awaited and shows the log's tail.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, ProcessError> {
        let deadline = Instant::now() + timeout;
        let rx = self.lines.as_ref().ok_or_else(|| ProcessError("the process is not running".into()))?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(_) => {}
                Err(e) => {
                    let why = match e {
                        mpsc::RecvTimeoutError::Timeout => format!("not within {} ms", timeout.as_millis()),
                        mpsc::RecvTimeoutError::Disconnected => "the process closed its output (exited?)".into(),
                    };
                    return Err(ProcessError(format!(
                        "no line {what:?} from {:?}: {why}; its log {}:\n{}",
                        self.spec.program,
                        self.spec.log.display(),
                        self.log_tail(40)
                    )));
                }
            }
        }
    }

    /// The last `n` lines of its log (every start).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.spec.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the log (every start) holds `text`.
    pub fn logged(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.spec.log).unwrap_or_default().contains(text)
    }

    /// SIGSTOP to its group; returns once the kernel reports it stopped
    /// (bounded: there is no event to wait on but `/proc`).
    pub fn pause(&mut self) -> Result<(), ProcessError> {
        let pid = self.running_pid()?;
        signal_group(pid, "STOP")?;
        self.paused = true;
        self.await_state(RunState::Stopped)
    }

    /// SIGCONT to its group; returns once the kernel reports it running.
    pub fn resume(&mut self) -> Result<(), ProcessError> {
        let pid = self.running_pid()?;
        signal_group(pid, "CONT")?;
        self.paused = false;
        self.await_state(RunState::Running)
    }

    fn await_state(&self, want: RunState) -> Result<(), ProcessError> {
        await_state(self.running_pid()?, want)
    }

    fn running_pid(&self) -> Result<u32, ProcessError> {
        match &self.child {
            Some(c) => Ok(c.id()),
            None => Err(ProcessError("the process is not running".into())),
        }
    }

    /// SIGKILL to its group (a crash), then reaps it. Also works while paused.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = signal_group(c.id(), "KILL");
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGTERM to its group (a graceful stop, resumed first if paused), then
    /// waits at most `timeout` for it to exit; on timeout it is killed and
    /// the error says so.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, ProcessError> {
        let pid = self.running_pid()?;
        signal_group(pid, "TERM")?;
        if self.paused {
            signal_group(pid, "CONT")?;
            self.paused = false;
        }
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().ok_or_else(|| ProcessError("the process is not running".into()))?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Ok(status);
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    self.kill();
                    return Err(ProcessError(format!(
                        "process {pid} did not exit within {} ms of SIGTERM; killed",
                        timeout.as_millis()
                    )));
                }
                Err(e) => return Err(ProcessError(format!("waiting for process {pid}: {e}"))),
            }
        }
    }

    /// Kills it if it runs (SIGKILL), then starts it again with the same
    /// spec (as changed through [`spec_mut`](Self::spec_mut)).
    pub fn restart(&mut self) -> Result<(), ProcessError> {
        self.kill();
        self.start()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

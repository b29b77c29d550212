//! Child processes under test: readiness from lines, pause and resume (a
//! paused server really stops answering), kill as a crash, graceful stop,
//! restart with the same command, signals reaching the whole group.

use std::time::Duration;

use rollgate_testkit::http;
use rollgate_testkit::process::{ChildProcess, ProcessSpec, RunState};

const LINE: Duration = Duration::from_secs(30);

fn sh(script: &str, log: &std::path::Path) -> ProcessSpec {
    ProcessSpec::new("sh", log).args(["-c", script])
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real server (a one-member etcd): answers `/health`; paused, the same
/// request times out; resumed, it answers again.
#[test]
fn a_paused_process_stops_answering_and_answers_again_once_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let (c, p) = (format!("http://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}"));
    let spec = ProcessSpec::new("etcd", dir.path().join("etcd.log"))
        .args(["--name", "one", "--listen-client-urls", &c, "--advertise-client-urls", &c])
        .args(["--listen-peer-urls", &p, "--initial-advertise-peer-urls", &p])
        .args(["--initial-cluster", &format!("one={p}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("ETCD_DATA_DIR");
    let mut etcd = ChildProcess::spawn(spec).unwrap();
    etcd.wait_line("etcd ready", LINE, |l| l.contains("serving insecure client requests on")).unwrap();
    let addr = format!("127.0.0.1:{client}");
    let ask = || http::get(&addr, "/health", Duration::from_millis(500));
    assert_eq!(ask().unwrap().status, 200);

    etcd.pause().unwrap();
    assert!(etcd.is_paused());
    assert_eq!(etcd.run_state(), RunState::Stopped);
    let e = ask().expect_err("a paused process must not answer");
    assert!(
        matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        "the request timed out rather than failing: {e}"
    );
    assert!(etcd.is_running(), "paused is not dead");

    etcd.resume().unwrap();
    assert_eq!(etcd.run_state(), RunState::Running);
    assert_eq!(ask().unwrap().status, 200);

    // The same from another thread, through a signaller.
    let signaller = etcd.signaller().unwrap();
    std::thread::spawn(move || signaller.pause().unwrap()).join().unwrap();
    assert_eq!(etcd.run_state(), RunState::Stopped);
    assert!(ask().is_err(), "paused through the signaller");
    signaller.resume().unwrap();
    assert_eq!(ask().unwrap().status, 200);
}

#[test]
fn kill_is_a_crash_and_restart_runs_the_same_command_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("child.log");
    let mut p = ChildProcess::spawn(sh("echo ready $$; exec sleep 600", &log).env("GREETING", "hi")).unwrap();
    let first = p.wait_line("ready", LINE, |l| l.starts_with("ready")).unwrap();
    let pid = p.pid();
    assert_eq!(first, format!("ready {pid}"));
    p.kill();
    assert!(!p.is_running());
    assert_eq!(p.run_state(), RunState::Gone);
    assert!(p.wait_line("anything", Duration::from_millis(10), |_| true).is_err());

    p.restart().unwrap();
    let second = p.wait_line("ready", LINE, |l| l.starts_with("ready")).unwrap();
    assert_ne!(second, first, "a new process");
    assert_eq!(p.starts(), 2);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("[start 1] {first}")) && text.contains(&format!("[start 2] {second}")), "{text}");

    // Restarted with other arguments (a new release, say).
    let args = p.spec_mut().args_mut();
    *args = vec!["-c".into(), "echo upgraded; exec sleep 600".into()];
    p.restart().unwrap();
    p.wait_line("upgraded", LINE, |l| l == "upgraded").unwrap();
    assert_eq!(p.starts(), 3);

    // A paused process can be killed too.
    p.pause().unwrap();
    p.kill();
    assert!(!p.is_running());
}

#[test]
fn terminate_stops_gracefully_and_resumes_a_paused_process_first() {
    let dir = tempfile::tempdir().unwrap();
    let script = "trap 'echo bye; exit 3' TERM; echo ready; while :; do sleep 1; done";
    let mut p = ChildProcess::spawn(sh(script, &dir.path().join("child.log"))).unwrap();
    p.wait_line("ready", LINE, |l| l == "ready").unwrap();
    p.pause().unwrap();
    let status = p.terminate(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(3), "the TERM trap ran");
    // Its last line may still be on its way to the log: wait for it.
    p.wait_line("bye", LINE, |l| l == "bye").unwrap();
    assert!(p.logged("bye"));
}

#[test]
fn signals_reach_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let script = "sleep 600 & echo child $!; wait";
    let mut p = ChildProcess::spawn(sh(script, &dir.path().join("child.log"))).unwrap();
    let line = p.wait_line("child pid", LINE, |l| l.starts_with("child ")).unwrap();
    let child: u32 = line["child ".len()..].parse().unwrap();
    let state = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()))
    };
    p.pause().unwrap();
    // The group got the signal; its delivery to the grandchild is asynchronous.
    // Nothing notifies a stop or exit of a process that is not our child:
    // its /proc state is polled, bounded by a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while state(child) != Some('T') {
        assert!(std::time::Instant::now() < deadline, "the child of the child is {:?}, not stopped", state(child));
        std::thread::sleep(Duration::from_millis(2));
    }
    p.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !matches!(state(child), None | Some('Z')) {
        assert!(std::time::Instant::now() < deadline, "the child of the child survived the kill: {:?}", state(child));
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_line_that_never_comes_is_an_error_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = ChildProcess::spawn(sh("echo something else; echo to stderr >&2", &dir.path().join("c.log"))).unwrap();
    let e = p.wait_line("ready", Duration::from_secs(10), |l| l == "ready").unwrap_err().to_string();
    assert!(e.contains("\"ready\"") && e.contains("something else") && e.contains("to stderr"), "{e}");
}

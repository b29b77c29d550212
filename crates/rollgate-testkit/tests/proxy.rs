//! The fault proxy against real sockets on loopback: what a client and a
//! target see in each mode, for connections opened before and after each
//! switch. Silence is checked over a bounded window (there is no event for
//! "nothing arrived"); everything else waits on the bytes or the close.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollgate_testkit::proxy::{Direction, Mode, Proxy, ProxyOptions};

/// How long "nothing arrives" is watched.
const QUIET: Duration = Duration::from_millis(300);
/// Longest wait for something that must arrive.
const ARRIVE: Duration = Duration::from_secs(10);

/// A target: echoes what it receives (when `echo`), reports it on a
/// channel, counts connections, and can push bytes to every client.
struct Target {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    received: mpsc::Receiver<Vec<u8>>,
    clients: Arc<Mutex<Vec<TcpStream>>>,
    sunk: Arc<AtomicU64>,
}

fn target(echo: bool) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let clients = Arc::new(Mutex::new(Vec::new()));
    let sunk = Arc::new(AtomicU64::new(0));
    let (tx, received) = mpsc::channel();
    {
        let (accepted, clients, sunk) = (accepted.clone(), clients.clone(), sunk.clone());
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                clients.lock().unwrap().push(s.try_clone().unwrap());
                let (tx, sunk) = (tx.clone(), sunk.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 * 1024];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                // Closes it for the clones in `clients` too.
                                let _ = s.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            Ok(n) => {
                                sunk.fetch_add(n as u64, Ordering::SeqCst);
                                if echo {
                                    let _ = tx.send(buf[..n].to_vec());
                                    if s.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                });
            }
        });
    }
    Target { addr, accepted, received, clients, sunk }
}

impl Target {
    /// Everything the target received next, up to `n` bytes, within `ARRIVE`.
    fn expect_received(&self, want: &[u8]) {
        let mut got = Vec::new();
        let deadline = Instant::now() + ARRIVE;
        while got.len() < want.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            got.extend(self.received.recv_timeout(left).unwrap_or_else(|_| panic!("target got {got:?}, not {want:?}")));
        }
        assert_eq!(got, want);
    }

    fn expect_nothing_received(&self) {
        if let Ok(b) = self.received.recv_timeout(QUIET) {
            panic!("the target received {:?} through a blocked direction", String::from_utf8_lossy(&b));
        }
    }

    fn push(&self, bytes: &[u8]) {
        for c in self.clients.lock().unwrap().iter_mut() {
            c.write_all(bytes).unwrap();
        }
    }
}

fn connect(p: &Proxy) -> TcpStream {
    let s = TcpStream::connect(p.addr()).unwrap();
    s.set_read_timeout(Some(ARRIVE)).unwrap();
    s
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(ARRIVE)).unwrap();
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

fn expect_silence(s: &mut TcpStream) {
    s.set_read_timeout(Some(QUIET)).unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Ok(0) => panic!("the connection was closed, not stalled"),
        Ok(n) => panic!("the client received {:?} through a blocked direction", String::from_utf8_lossy(&buf[..n])),
        Err(e) => panic!("the connection failed, not stalled: {e}"),
    }
}

/// The connection is closed: a read ends (EOF or reset) without data.
fn expect_closed(s: &mut TcpStream) {
    s.set_read_timeout(Some(ARRIVE)).unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {}
        other => panic!("expected a closed connection, got {other:?}"),
    }
}

fn round_trip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    assert_eq!(read_exact(s, msg.len()), msg);
}

#[test]
fn pass_forwards_both_ways_and_counts_the_bytes() {
    let t = target(true);
    let p = Proxy::start(t.addr).unwrap();
    assert_eq!(p.mode(), Mode::Pass);
    assert_eq!(p.target(), t.addr);
    let mut c = connect(&p);
    round_trip(&mut c, b"hello through the proxy");
    t.expect_received(b"hello through the proxy");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = c.try_clone().unwrap();
    let sent = big.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
    assert_eq!(read_exact(&mut c, big.len()), big, "a large transfer arrives whole and in order");
    writer.join().unwrap();
    // The counters trail the bytes by a moment: wait for the writes that count them.
    let want = 23 + 300_000;
    let st = p
        .wait_stats(ARRIVE, |s| s.bytes_from_target >= want && s.bytes_to_target >= want)
        .unwrap_or_else(|st| panic!("the counters did not reach {want}: {st:?}"));
    assert_eq!((st.accepted, st.open), (1, 1), "{st:?}");
    assert_eq!((st.bytes_to_target, st.bytes_from_target), (want, want), "{st:?}");
}

#[test]
fn a_partition_stalls_open_and_new_connections_and_healing_delivers_the_held_bytes() {
    let t = target(true);
    let p = Proxy::start(t.addr).unwrap();
    let mut open = connect(&p);
    round_trip(&mut open, b"before");
    t.expect_received(b"before");

    p.partition();
    assert_eq!(p.mode(), Mode::Stall);
    open.write_all(b"during").unwrap();
    let mut new = connect(&p);
    new.write_all(b"new one").unwrap();
    t.expect_nothing_received();
    expect_silence(&mut open);
    expect_silence(&mut new);
    assert_eq!(
        t.accepted.load(Ordering::SeqCst),
        1,
        "a connection made during the partition does not reach the target"
    );

    p.heal();
    assert_eq!(read_exact(&mut open, 6), b"during", "held bytes flow after the heal");
    assert_eq!(read_exact(&mut new, 7), b"new one");
    assert_eq!(t.accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn refuse_closes_open_connections_and_every_new_one() {
    let t = target(true);
    let p = Proxy::start(t.addr).unwrap();
    let mut open = connect(&p);
    round_trip(&mut open, b"x");
    p.refuse();
    expect_closed(&mut open);
    let mut new = connect(&p);
    expect_closed(&mut new);
    let st = p.stats();
    assert!(st.refused >= 1 && st.open == 0, "{st:?}");
    p.heal();
    let mut again = connect(&p);
    round_trip(&mut again, b"after the heal");
}

#[test]
fn cutting_one_direction_holds_it_and_lets_the_other_flow() {
    let t = target(true);
    let p = Proxy::start(t.addr).unwrap();
    let mut c = connect(&p);
    round_trip(&mut c, b"0");
    t.expect_received(b"0");

    // Target -> client cut: the target gets the request, the client no answer.
    p.cut(Direction::FromTarget);
    c.write_all(b"request").unwrap();
    t.expect_received(b"request");
    expect_silence(&mut c);
    p.heal();
    assert_eq!(read_exact(&mut c, 7), b"request", "the held answer arrives after the heal");

    // Client -> target cut: what the target pushes arrives, what the client sends does not.
    p.cut(Direction::ToTarget);
    c.write_all(b"held").unwrap();
    t.push(b"pushed");
    assert_eq!(read_exact(&mut c, 6), b"pushed", "the other direction flows");
    t.expect_nothing_received();
    p.heal();
    t.expect_received(b"held");
    assert_eq!(read_exact(&mut c, 4), b"held");
}

#[test]
fn a_delay_applies_to_open_connections_in_each_direction() {
    let t = target(true);
    let p = Proxy::start(t.addr).unwrap();
    let mut c = connect(&p);
    round_trip(&mut c, b"warm");
    t.expect_received(b"warm");

    let d = Duration::from_millis(200);
    p.set_delay(d);
    let start = Instant::now();
    round_trip(&mut c, b"slow");
    t.expect_received(b"slow");
    assert!(start.elapsed() >= 2 * d, "both directions delayed: {:?}", start.elapsed());

    p.set_delay(Duration::ZERO);
    p.set_delay_one(Direction::ToTarget, Duration::from_millis(300));
    let start = Instant::now();
    c.write_all(b"one way").unwrap();
    t.expect_received(b"one way");
    assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
    assert_eq!(read_exact(&mut c, 7), b"one way");

    p.heal();
    let mut fresh = connect(&p);
    round_trip(&mut fresh, b"no delay after the heal");
}

#[test]
fn dropping_connections_closes_the_open_ones_and_new_ones_still_pass() {
    let t = target(true);
    let p = Proxy::start(t.addr).unwrap();
    let mut a = connect(&p);
    let mut b = connect(&p);
    round_trip(&mut a, b"a");
    round_trip(&mut b, b"b");
    assert_eq!(p.drop_connections(), 2);
    expect_closed(&mut a);
    expect_closed(&mut b);
    let mut c = connect(&p);
    round_trip(&mut c, b"still passes");

    // A restarted target on another port: new connections follow.
    let t2 = target(true);
    p.set_target(t2.addr);
    let mut d = connect(&p);
    round_trip(&mut d, b"to the new target");
    t2.expect_received(b"to the new target");
}

#[test]
fn connections_over_the_limit_are_closed_and_counted() {
    let t = target(true);
    let p = Proxy::start_with(t.addr, ProxyOptions { max_connections: 2, ..ProxyOptions::default() }).unwrap();
    let mut a = connect(&p);
    let mut b = connect(&p);
    round_trip(&mut a, b"1");
    round_trip(&mut b, b"2");
    let mut over = connect(&p);
    expect_closed(&mut over);
    assert_eq!(p.stats().over_limit, 1);
    drop(a);
    // Once a slot is free (the proxy saw the close), a new one is served.
    if let Err(stats) = p.wait_stats(ARRIVE, |s| s.open <= 1) {
        panic!("the closed connection was never released: {stats:?}");
    }
    let mut c = connect(&p);
    round_trip(&mut c, b"3");
}

#[test]
fn a_partition_under_load_stops_the_bytes_as_it_returns() {
    let t = target(false);
    let p = Proxy::start(t.addr).unwrap();
    let c = connect(&p);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (mut c, stop) = (c.try_clone().unwrap(), stop.clone());
        std::thread::spawn(move || {
            c.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
            let chunk = vec![7u8; 64 * 1024];
            // Bounded: at most 4 GiB, or until told to stop.
            for _ in 0..65_536 {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                match c.write(&chunk) {
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
            }
        })
    };
    let deadline = Instant::now() + ARRIVE;
    while t.sunk.load(Ordering::SeqCst) < 1 << 20 {
        assert!(Instant::now() < deadline, "no load through the proxy");
        std::thread::sleep(Duration::from_millis(5));
    }
    p.partition();
    let at_switch = p.stats().bytes_to_target;
    std::thread::sleep(QUIET);
    assert_eq!(p.stats().bytes_to_target, at_switch, "bytes passed after partition() returned");
    p.heal();
    let deadline = Instant::now() + ARRIVE;
    while p.stats().bytes_to_target <= at_switch {
        assert!(Instant::now() < deadline, "the load did not resume after the heal");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    drop(c);
    drop(p);
}

#[test]
fn dropping_the_proxy_closes_its_connections_and_frees_its_port() {
    let t = target(true);
    let p = Proxy::start(t.addr).unwrap();
    let addr = p.addr();
    let mut c = connect(&p);
    round_trip(&mut c, b"x");
    p.partition();
    let mut stalled = connect(&p);
    drop(p);
    expect_closed(&mut c);
    expect_closed(&mut stalled);
    assert!(TcpStream::connect(addr).is_err(), "nothing listens on {addr} any more");
}

/// A client that goes away while its target keeps sending: the proxy's
/// connection ends and dropping the proxy returns. (Its reader of the
/// target used to block for ever on a full queue nobody drained, and
/// dropping the proxy waited for it: a fault scenario hung at its end.)
#[test]
fn a_client_gone_while_the_target_keeps_sending_does_not_hang_the_proxy() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || while s.write_all(&[7u8; 16 * 1024]).is_ok() {});
        }
    });
    let options = ProxyOptions { queue_chunks: 2, ..ProxyOptions::default() };
    let p = Proxy::start_with(addr, options).unwrap();
    let mut c = connect(&p);
    read_exact(&mut c, 1024);
    drop(c);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(p);
        let _ = tx.send(());
    });
    assert!(rx.recv_timeout(ARRIVE).is_ok(), "dropping the proxy did not return within {ARRIVE:?}");
}

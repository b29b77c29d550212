//! A userspace TCP proxy for fault tests: listens on a free loopback port,
//! forwards every connection to a target, and can at runtime stall
//! (partition), refuse, cut one direction, delay, and drop connections.
//!
//! Put one between two processes (a node and a peer, a node and an etcd
//! member) by giving the client the proxy's [`addr`](Proxy::addr) instead
//! of the target's. A proxy does not know who its clients are: to partition
//! one source from a target while others still reach it, give that source
//! its own proxy.
//!
//! Every switch ([`set_mode`](Proxy::set_mode), [`set_delay`](Proxy::set_delay),
//! [`drop_connections`](Proxy::drop_connections)) applies to the connections
//! already open as well as to new ones, and when a switch that blocks a
//! direction returns, no byte is being written in that direction and none
//! will be until it is opened again.
//!
//! What each mode looks like to the two ends:
//!
//! | mode | new connections | bytes on open connections |
//! |---|---|---|
//! | [`Mode::Pass`] | connected to the target | forwarded (after the delay) |
//! | [`Mode::Stall`] | accepted, connected to the target only once healed | held both ways, delivered on heal (as TCP retransmits after a short partition) |
//! | [`Mode::Refuse`] | closed as soon as accepted | the connections are closed |
//! | [`Mode::Cut`] | connected to the target | held in the cut direction, forwarded in the other |
//!
//! Bounds: at most [`ProxyOptions::max_connections`] connections (more are
//! closed on accept and counted), four threads per connection plus one
//! acceptor, and per direction a queue of at most
//! [`ProxyOptions::queue_chunks`] chunks of [`ProxyOptions::chunk_bytes`]
//! (when it is full the proxy stops reading, so TCP's own flow control
//! pushes back on the sender). Threads only block in socket calls (with
//! timeouts on writes) and on a condition variable, so dropping the proxy
//! stops and joins all of them.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One direction of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client (who connected to the proxy) to the target.
    ToTarget,
    /// From the target back to the client.
    FromTarget,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToTarget => 0,
            Direction::FromTarget => 1,
        }
    }
}

/// What the proxy does with connections (see the module docs' table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// A partition as a black hole: nothing passes either way; bytes are
    /// held (bounded) and delivered when the mode changes back.
    Stall,
    /// A partition as a dead host: every connection is closed, new ones as
    /// soon as they are accepted.
    Refuse,
    /// One direction stalls, the other is forwarded.
    Cut(Direction),
}

impl Mode {
    fn passes(self, d: Direction) -> bool {
        match self {
            Mode::Pass => true,
            Mode::Stall | Mode::Refuse => false,
            Mode::Cut(cut) => cut != d,
        }
    }
}

/// Limits of a [`Proxy`].
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Connections open at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Largest read (and so largest chunk held in a queue).
    pub chunk_bytes: usize,
    /// Chunks queued per direction of a connection before the proxy stops reading.
    pub queue_chunks: usize,
    /// Longest connect to the target.
    pub connect_timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            max_connections: 64,
            chunk_bytes: 16 * 1024,
            queue_chunks: 8,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// What a proxy has done so far. The byte counters are updated just after
/// each write returns, so they may trail what an end already received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted (including those closed at once).
    pub accepted: u64,
    /// Connections open now (closed ones whose threads are still ending are not counted).
    pub open: usize,
    /// Connections closed on accept because [`Mode::Refuse`] was set.
    pub refused: u64,
    /// Connections closed on accept because `max_connections` were open.
    pub over_limit: u64,
    /// Connections whose target could not be reached.
    pub connect_failures: u64,
    /// Bytes delivered to targets.
    pub bytes_to_target: u64,
    /// Bytes delivered back to clients.
    pub bytes_from_target: u64,
}

/// One write to a socket waits at most this long, so a switch that blocks a
/// direction never waits longer than this for a write in progress.
const WRITE_SLICE: Duration = Duration::from_millis(100);

struct Conn {
    client: TcpStream,
    target: Option<TcpStream>,
    closed: Arc<AtomicBool>,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(t) = &self.target {
            let _ = t.shutdown(Shutdown::Both);
        }
    }
}

struct State {
    mode: Mode,
    delay: [Duration; 2],
    target: SocketAddr,
    /// Writes in progress, per direction.
    writing: [usize; 2],
    conns: HashMap<u64, Conn>,
    next_id: u64,
    stopping: bool,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    over_limit: AtomicU64,
    connect_failures: AtomicU64,
    bytes: [AtomicU64; 2],
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    options: ProxyOptions,
    counters: Counters,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(g).unwrap_or_else(|p| p.into_inner())
    }

    fn wait_timeout<'a>(&self, g: MutexGuard<'a, State>, d: Duration) -> MutexGuard<'a, State> {
        self.changed.wait_timeout(g, d).unwrap_or_else(|p| p.into_inner()).0
    }

    fn close(&self, id: u64) {
        let st = self.lock();
        if let Some(c) = st.conns.get(&id) {
            c.close();
        }
        self.changed.notify_all();
    }

    fn spawn(&self, name: String, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        let handle = std::thread::Builder::new().name(name).spawn(f)?;
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
        Ok(())
    }
}

/// A running proxy; dropping it closes every connection and joins its threads.
pub struct Proxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("target", &st.target)
            .field("mode", &st.mode)
            .field("delay", &st.delay)
            .finish()
    }
}

impl Proxy {
    /// A proxy on a free port of 127.0.0.1 forwarding to `target`, in [`Mode::Pass`].
    pub fn start(target: SocketAddr) -> io::Result<Proxy> {
        Proxy::start_with(target, ProxyOptions::default())
    }

    /// [`Proxy::start`] with explicit limits.
    pub fn start_with(target: SocketAddr, options: ProxyOptions) -> io::Result<Proxy> {
        Proxy::bind("127.0.0.1:0".parse().expect("a socket address"), target, options)
    }

    /// A proxy listening on `listen` (e.g. a port a restarted process
    /// expects, or port 0 for a free one).
    pub fn bind(listen: SocketAddr, target: SocketAddr, options: ProxyOptions) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                mode: Mode::Pass,
                delay: [Duration::ZERO; 2],
                target,
                writing: [0; 2],
                conns: HashMap::new(),
                next_id: 0,
                stopping: false,
            }),
            changed: Condvar::new(),
            options,
            counters: Counters::default(),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{}-accept", addr.port()))
                .spawn(move || accept_loop(&inner, &listener))?
        };
        Ok(Proxy { inner, addr, acceptor: Some(acceptor) })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections go.
    pub fn target(&self) -> SocketAddr {
        self.inner.lock().target
    }

    /// Sends new connections to `target` (e.g. a process restarted on
    /// another port); open ones stay where they are.
    pub fn set_target(&self, target: SocketAddr) {
        self.inner.lock().target = target;
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.inner.lock().mode
    }

    /// Switches the mode for open and new connections. Returns once no
    /// write is in progress in a direction the new mode blocks (at most
    /// about 100 ms).
    pub fn set_mode(&self, mode: Mode) {
        let mut st = self.inner.lock();
        st.mode = mode;
        if mode == Mode::Refuse {
            for c in st.conns.values() {
                c.close();
            }
        }
        self.inner.changed.notify_all();
        let blocked = |st: &State, d: Direction| !mode.passes(d) && st.writing[d.index()] > 0;
        while blocked(&st, Direction::ToTarget) || blocked(&st, Direction::FromTarget) {
            st = self.inner.wait(st);
        }
    }

    /// [`Mode::Stall`]: a partition where both ends see silence.
    pub fn partition(&self) {
        self.set_mode(Mode::Stall);
    }

    /// [`Mode::Refuse`]: a partition where both ends see closed connections.
    pub fn refuse(&self) {
        self.set_mode(Mode::Refuse);
    }

    /// [`Mode::Cut`]: `direction` stalls, the other flows.
    pub fn cut(&self, direction: Direction) {
        self.set_mode(Mode::Cut(direction));
    }

    /// Back to [`Mode::Pass`] with no delay; held bytes flow.
    pub fn heal(&self) {
        self.set_delay(Duration::ZERO);
        self.set_mode(Mode::Pass);
    }

    /// Delays every chunk by `delay` in both directions, from when the
    /// proxy read it (open connections included).
    pub fn set_delay(&self, delay: Duration) {
        let mut st = self.inner.lock();
        st.delay = [delay; 2];
        self.inner.changed.notify_all();
    }

    /// Delays chunks in one direction only.
    pub fn set_delay_one(&self, direction: Direction, delay: Duration) {
        let mut st = self.inner.lock();
        st.delay[direction.index()] = delay;
        self.inner.changed.notify_all();
    }

    /// Closes every open connection now (both ends see it closed); the mode
    /// stays, so new connections are handled as before. Returns how many
    /// were closed.
    pub fn drop_connections(&self) -> usize {
        let st = self.inner.lock();
        for c in st.conns.values() {
            c.close();
        }
        self.inner.changed.notify_all();
        st.conns.len()
    }

    /// Counters and the number of open connections.
    pub fn stats(&self) -> ProxyStats {
        self.stats_in(&self.inner.lock())
    }

    fn stats_in(&self, st: &State) -> ProxyStats {
        let c = &self.inner.counters;
        ProxyStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            open: st.conns.values().filter(|c| !c.closed.load(Ordering::Acquire)).count(),
            refused: c.refused.load(Ordering::Relaxed),
            over_limit: c.over_limit.load(Ordering::Relaxed),
            connect_failures: c.connect_failures.load(Ordering::Relaxed),
            bytes_to_target: c.bytes[0].load(Ordering::Relaxed),
            bytes_from_target: c.bytes[1].load(Ordering::Relaxed),
        }
    }

    /// Waits until `pred` holds for the stats, woken by every counted write
    /// and every connection change, at most `timeout`: the stats that
    /// satisfied it, or the last ones seen.
    pub fn wait_stats(&self, timeout: Duration, pred: impl Fn(&ProxyStats) -> bool) -> Result<ProxyStats, ProxyStats> {
        let deadline = Instant::now() + timeout;
        let mut st = self.inner.lock();
        loop {
            let stats = self.stats_in(&st);
            let now = Instant::now();
            if pred(&stats) {
                return Ok(stats);
            }
            if now >= deadline {
                return Err(stats);
            }
            st = match self.inner.changed.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        {
            let mut st = self.inner.lock();
            st.stopping = true;
            for c in st.conns.values() {
                c.close();
            }
            self.inner.changed.notify_all();
        }
        // Wake the acceptor, blocked in accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let threads = std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(inner: &Arc<Inner>, listener: &TcpListener) {
    for client in listener.incoming() {
        if inner.lock().stopping {
            return;
        }
        let Ok(client) = client else { continue };
        inner.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let mut st = inner.lock();
        if st.mode == Mode::Refuse {
            inner.counters.refused.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        if st.conns.len() >= inner.options.max_connections {
            inner.counters.over_limit.fetch_add(1, Ordering::Relaxed);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(handle) = client.try_clone() else { continue };
        let id = st.next_id;
        st.next_id += 1;
        let closed = Arc::new(AtomicBool::new(false));
        st.conns.insert(id, Conn { client: handle, target: None, closed: closed.clone() });
        drop(st);
        let conn_inner = inner.clone();
        let spawned = inner.spawn(format!("proxy-conn-{id}"), move || {
            run_connection(&conn_inner, id, client, &closed);
            conn_inner.lock().conns.remove(&id);
            conn_inner.changed.notify_all();
        });
        if spawned.is_err() {
            inner.close(id);
            inner.lock().conns.remove(&id);
        }
    }
}

/// Connects to the target once the mode lets bytes through, then forwards
/// until both directions ended or the connection is closed.
fn run_connection(inner: &Arc<Inner>, id: u64, client: TcpStream, closed: &Arc<AtomicBool>) {
    let target_addr = {
        let mut st = inner.lock();
        loop {
            if st.stopping || closed.load(Ordering::Acquire) {
                return;
            }
            match st.mode {
                Mode::Pass | Mode::Cut(_) => break st.target,
                Mode::Refuse => return,
                // A partition: the connection waits (as a SYN would be retransmitted).
                Mode::Stall => st = inner.wait(st),
            }
        }
    };
    let target = match TcpStream::connect_timeout(&target_addr, inner.options.connect_timeout) {
        Ok(t) => t,
        Err(_) => {
            inner.counters.connect_failures.fetch_add(1, Ordering::Relaxed);
            inner.close(id);
            return;
        }
    };
    let _ = target.set_nodelay(true);
    let _ = client.set_nodelay(true);
    {
        let mut st = inner.lock();
        match (st.conns.get_mut(&id), target.try_clone()) {
            (Some(c), Ok(t)) if !c.closed.load(Ordering::Acquire) => c.target = Some(t),
            _ => {
                let _ = target.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    let (Ok(client_r), Ok(target_r)) = (client.try_clone(), target.try_clone()) else {
        inner.close(id);
        return;
    };
    let n = inner.options.queue_chunks.max(1);
    let (to_tx, to_rx) = sync_channel(n);
    let (from_tx, from_rx) = sync_channel(n);
    let chunk = inner.options.chunk_bytes.max(1);
    let mut helpers = Vec::new();
    for (name, f) in [
        (
            "r1",
            Box::new({
                let inner = inner.clone();
                move || read_side(&inner, id, client_r, &to_tx, chunk)
            }) as Box<dyn FnOnce() + Send>,
        ),
        (
            "w1",
            Box::new({
                let (inner, closed, target) = (inner.clone(), closed.clone(), target);
                move || write_side(&inner, id, &closed, Direction::ToTarget, target, &to_rx)
            }),
        ),
        (
            "r2",
            Box::new({
                let inner = inner.clone();
                move || read_side(&inner, id, target_r, &from_tx, chunk)
            }),
        ),
    ] {
        match std::thread::Builder::new().name(format!("proxy-conn-{id}-{name}")).spawn(f) {
            Ok(h) => helpers.push(h),
            Err(_) => inner.close(id),
        }
    }
    write_side(inner, id, closed, Direction::FromTarget, client, &from_rx);
    // Nothing drains the queue from the target any more (a half close, or
    // the client gone, which closed the connection): drop it, so the
    // target's reader, blocked on a full queue, ends and can be joined.
    drop(from_rx);
    for h in helpers {
        let _ = h.join();
    }
}

enum Chunk {
    Data(Instant, Vec<u8>),
    Eof,
}

fn read_side(inner: &Inner, id: u64, mut from: TcpStream, to: &SyncSender<Chunk>, chunk: usize) {
    let mut buf = vec![0u8; chunk];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.send(Chunk::Eof);
                return;
            }
            Ok(n) => {
                if to.send(Chunk::Data(Instant::now(), buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                inner.close(id);
                return;
            }
        }
    }
}

/// Waits until `direction` may carry a chunk read at `at`; `false` when the
/// connection is closed meanwhile. On `true` the write is counted as in
/// progress (the caller must call `end_write`).
fn begin_write(inner: &Inner, closed: &AtomicBool, direction: Direction, at: Option<Instant>) -> bool {
    let mut st = inner.lock();
    loop {
        if st.stopping || closed.load(Ordering::Acquire) {
            return false;
        }
        if !st.mode.passes(direction) {
            st = inner.wait(st);
            continue;
        }
        if let Some(at) = at {
            let due = at + st.delay[direction.index()];
            let now = Instant::now();
            if now < due {
                st = inner.wait_timeout(st, due - now);
                continue;
            }
        }
        st.writing[direction.index()] += 1;
        return true;
    }
}

fn end_write(inner: &Inner, direction: Direction) {
    let mut st = inner.lock();
    st.writing[direction.index()] -= 1;
    inner.changed.notify_all();
}

fn write_side(
    inner: &Inner,
    id: u64,
    closed: &AtomicBool,
    direction: Direction,
    mut to: TcpStream,
    from: &Receiver<Chunk>,
) {
    let _ = to.set_write_timeout(Some(WRITE_SLICE));
    for chunk in from {
        match chunk {
            Chunk::Eof => {
                // A half close passes only where bytes would.
                if begin_write(inner, closed, direction, None) {
                    let _ = to.shutdown(Shutdown::Write);
                    end_write(inner, direction);
                }
                return;
            }
            Chunk::Data(at, bytes) => {
                let mut off = 0;
                while off < bytes.len() {
                    if !begin_write(inner, closed, direction, Some(at)) {
                        return;
                    }
                    let r = to.write(&bytes[off..]);
                    if let Ok(n) = r {
                        // Counted before the write ends: a switch that returns sees it.
                        inner.counters.bytes[direction.index()].fetch_add(n as u64, Ordering::Relaxed);
                    }
                    end_write(inner, direction);
                    match r {
                        Ok(0) => {
                            inner.close(id);
                            return;
                        }
                        Ok(n) => off += n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                            ) => {}
                        Err(_) => {
                            inner.close(id);
                            return;
                        }
                    }
                }
            }
        }
    }
}

//! Bad peers against a real listener (I8): random bytes, truncated frames, a
//! 4 GiB length prefix (in the handshake and after it), a silent peer and a
//! peer that sends one byte per second. Each gets an error within the
//! (short) handshake timeout, a good peer completes its handshake while the
//! bad ones are connected, and memory stays bounded: this binary runs on a
//! tracking allocator that refuses to go above 512 MiB in total, and the
//! test asserts the peak stayed far below one 4 GiB allocation.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rollgate::handshake::{self, HandshakeConfig, RejectCode};
use rollgate::net::{self, Listener, NetConfig, NetError, frame_kind};
use rollgate::protocol::Protocol;
use rollgate_sample::{Msg, transport_versions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, 512 * 1024 * 1024);

const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1500);

fn config(node: &str) -> NetConfig {
    let h = HandshakeConfig::new(node, "1.2", "sample-cluster", Msg::SUPPORTED, transport_versions::SET);
    let mut c = NetConfig::new(h);
    c.handshake_timeout = HANDSHAKE_TIMEOUT;
    c.handshake.limits.max_frame_bytes = 1 << 20;
    c
}

/// Waits (bounded) until the listener closes `s`; returns what it sent.
async fn closed_by_listener(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let r = tokio::time::timeout(HANDSHAKE_TIMEOUT * 3, s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "{what}: the listener did not close the connection in time");
    out
}

fn seed() -> u64 {
    let seed = std::env::var("ROLLGATE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    println!("random bytes seed: ROLLGATE_SEED={seed}");
    seed
}

#[tokio::test]
async fn bad_peers_get_errors_and_good_peers_still_connect() {
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server")).await.unwrap();
    let addr = listener.local_addr();

    // Connected first, and kept open while the good peer handshakes.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let slow_task = tokio::spawn(async move {
        // One byte per second of a valid header (at most 10 bytes), until the
        // listener closes the connection.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for b in b"RGHS\x01\x01\x00\x10\x00\x00" {
            tick.tick().await;
            let mut probe = [0u8; 256];
            match slow.try_read(&mut probe) {
                Ok(0) => return,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return,
                _ => {}
            }
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
        }
        closed_by_listener(&mut slow, "slow peer").await;
    });

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let mut random = vec![0u8; 3000];
    rng.fill_bytes(&mut random);
    let (_, hello) = handshake::Initiator::start(&config("x").handshake, [1; 32]);
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a 4 GiB length prefix", [&b"RGHS\x01\x01"[..], &[0xff, 0xff], &u32::MAX.to_be_bytes()].concat()),
        (
            "a data frame before the handshake",
            net::encode_header(
                frame_kind::DATA,
                rollgate::version::ProtocolVersion(2),
                transport_versions::CURRENT,
                u32::MAX,
            )
            .to_vec(),
        ),
    ];
    for (what, bytes) in &garbage {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let answer = closed_by_listener(&mut s, what).await;
        if !answer.is_empty() {
            let Ok(handshake::Frame::Abort(a)) = handshake::decode_frame(&answer) else {
                panic!("{what}: expected an Abort frame, got {answer:?}")
            };
            assert_eq!(a.code, RejectCode::Malformed, "{what}");
        }
    }
    // Truncated frames: a valid hello cut short, then the peer goes quiet
    // (the timeout), or closes its side (EOF).
    for cut in [1, handshake::HEADER_LEN, hello.len() - 1] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&hello[..cut]).await.unwrap();
        closed_by_listener(&mut s, "truncated hello").await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&hello[..cut]).await.unwrap();
        s.shutdown().await.unwrap();
        closed_by_listener(&mut s, "truncated hello then EOF").await;
    }

    // A good peer completes its handshake while the silent and slow ones are still connected.
    let good = net::connect::<Msg>(addr, config("good")).await.unwrap();
    assert_eq!(good.negotiated().peer_node_id, "server");
    let mut failures = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), listener.next()).await.unwrap().unwrap() {
            Ok(conn) => {
                assert_eq!(conn.negotiated().peer_node_id, "good");
                break;
            }
            Err(f) => failures.push(f),
        }
    }

    closed_by_listener(&mut silent, "silent peer").await;
    slow_task.await.unwrap();

    // Every bad peer was counted as a failed handshake with a typed error.
    let failed = listener.stats().failed.load(std::sync::atomic::Ordering::Relaxed) as usize;
    while failures.len() < failed {
        failures
            .push(tokio::time::timeout(Duration::from_secs(5), listener.next()).await.unwrap().unwrap().unwrap_err());
    }
    let (mut timeouts, mut malformed) = (0, 0);
    for f in failures {
        match f.error {
            NetError::HandshakeTimeout { .. } => timeouts += 1,
            NetError::Handshake(e) if e.code == RejectCode::Malformed => malformed += 1,
            NetError::Io { .. } => {}
            other => panic!("unexpected failure {other}"),
        }
    }
    assert!(timeouts >= 5, "silent, slow and three truncated peers time out: {timeouts}");
    assert!(malformed >= 4, "{malformed}");
    assert!(ALLOCATOR.max_allocated() < 256 * 1024 * 1024, "peak {} bytes", ALLOCATOR.max_allocated());
}

#[tokio::test]
async fn a_4_gib_data_frame_after_the_handshake_is_refused_before_allocating() {
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server")).await.unwrap();
    let addr = listener.local_addr();
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let n = net::initiate(&mut raw, &config("raw").handshake).await.unwrap();
    let mut server = listener.accept().await.unwrap();
    let header = net::encode_header(frame_kind::DATA, n.protocol, n.transport, u32::MAX);
    raw.write_all(&header).await.unwrap();
    match server.recv().await {
        Err(NetError::FrameTooLarge { len, max, .. }) => assert_eq!((len, max), (u32::MAX as u64, 1 << 20)),
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(rest.first(), Some(&frame_kind::CLOSE));
    assert!(ALLOCATOR.max_allocated() < 256 * 1024 * 1024, "peak {} bytes", ALLOCATOR.max_allocated());
}

#[tokio::test]
async fn garbage_after_the_handshake_closes_with_an_error() {
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server")).await.unwrap();
    let addr = listener.local_addr();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    for round in 0..20 {
        let mut raw = TcpStream::connect(addr).await.unwrap();
        let n = net::initiate(&mut raw, &config("raw").handshake).await.unwrap();
        let mut server = listener.accept().await.unwrap();
        let mut bytes = vec![0u8; 1 + (rng.next_u32() % 200) as usize];
        rng.fill_bytes(&mut bytes);
        if round % 2 == 0 {
            // A valid header for a body of random bytes.
            let h = net::encode_header(frame_kind::DATA, n.protocol, n.transport, bytes.len() as u32);
            bytes = [&h[..], &bytes].concat();
        }
        raw.write_all(&bytes).await.unwrap();
        raw.shutdown().await.unwrap();
        // Random bytes may by chance form valid frames; the stream then ends
        // without a close frame, which is an error too.
        let mut errored = false;
        for _ in 0..100 {
            match server.recv().await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => {
                    errored = true;
                    break;
                }
            }
        }
        assert!(errored, "round {round}: garbage was not reported as an error");
    }
}

#[tokio::test]
async fn pending_handshakes_are_bounded_and_the_oldest_makes_room() {
    let mut cfg = config("server");
    cfg.max_pending_handshakes = 2;
    let listener = Listener::<Msg>::bind("127.0.0.1:0", cfg).await.unwrap();
    let addr = listener.local_addr();
    let mut oldest = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    // A third evicts the oldest pending one, long before the handshake timeout.
    let _c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(HANDSHAKE_TIMEOUT / 2, oldest.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the oldest pending handshake was not evicted");
    assert!(listener.stats().evicted.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}

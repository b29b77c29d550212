//! Typed connections over real loopback TCP: connect/accept, send/recv,
//! split and pipelining, graceful close, backpressure, idle timeout, the
//! version lock (I6) and the man-in-the-middle downgrade (I7).

use std::time::Duration;

use rollgate::handshake::{self, ClusterSecret, Frame, HandshakeConfig, RejectCode};
use rollgate::net::{self, Connection, Listener, NetConfig, NetError, frame_kind};
use rollgate::protocol::Protocol;
use rollgate::version::{ProtocolRange, ProtocolVersion};
use rollgate_sample::network::v1::{self as network, Ping};
use rollgate_sample::protocol::{v1, v2};
use rollgate_sample::service::Node;
use rollgate_sample::{Msg, ticker, transport_versions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "a shared cluster secret, long enough";

fn config(node: &str, protocols: ProtocolRange, secret: bool) -> NetConfig {
    let mut h = HandshakeConfig::new(node, "1.2", "sample-cluster", protocols, transport_versions::SET);
    if secret {
        h.secret = Some(ClusterSecret::new(SECRET).unwrap());
    }
    let mut c = NetConfig::new(h);
    c.handshake_timeout = Duration::from_secs(5);
    c.idle_timeout = Some(Duration::from_secs(10));
    c
}

fn full() -> ProtocolRange {
    Msg::SUPPORTED
}

fn ping(seq: u64) -> Msg {
    v2::Msg::Network(network::Msg::Ping(Ping { seq, payload: vec![1, 2, 3] })).into()
}

/// Serves `conn` with the sample node until the peer closes.
async fn serve(mut conn: Connection<Msg>) -> Result<Node, NetError> {
    let mut node = Node::default();
    while let Some(m) = conn.recv().await? {
        if let Some(answer) = node.handle(m) {
            conn.send(answer).await?;
        }
    }
    Ok(node)
}

#[tokio::test]
async fn connect_accept_send_recv_split_and_close() {
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server", full(), true)).await.unwrap();
    let addr = listener.local_addr();
    let server = tokio::spawn(async move { serve(listener.accept().await.unwrap()).await });

    let conn = net::connect::<Msg>(addr, config("client", full(), true)).await.unwrap();
    let n = conn.negotiated().clone();
    assert_eq!(n.protocol, ProtocolVersion(2));
    assert_eq!(n.transport, transport_versions::CURRENT);
    assert_eq!(
        (n.peer_node_id.as_str(), n.peer_release.as_str(), n.peer_cluster_id.as_str()),
        ("server", "1.2", "sample-cluster")
    );
    assert!(n.authenticated);

    // Pipelining: two cloned senders in their own tasks, one receiver.
    let (tx, mut rx) = conn.split();
    let mut senders = Vec::new();
    for part in 0..2u64 {
        let tx = tx.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..100u64 {
                tx.send(ping(part * 1000 + i)).await.unwrap();
            }
        }));
    }
    let mut seqs = Vec::new();
    for _ in 0..200 {
        match rx.recv().await.unwrap() {
            Some(Msg::V2(v2::Msg::Network(network::Msg::Pong { seq }))) => seqs.push(seq),
            other => panic!("unexpected {other:?}"),
        }
    }
    for s in senders {
        s.await.unwrap();
    }
    seqs.sort();
    let want: Vec<u64> = (0..100).chain(1000..1100).collect();
    assert_eq!(seqs, want);

    tx.send(v2::Msg::Ticker(ticker::v2::Msg::Increment { by: 7 }).into()).await.unwrap();
    tx.send(v2::Msg::Ticker(ticker::v2::Msg::Count { value: 0 }).into()).await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), Some(v2::Msg::Ticker(ticker::v2::Msg::Count { value: 7 }).into()));

    // Graceful close: the server sees the end of the stream, not an error.
    tx.close().await.unwrap();
    let node = server.await.unwrap().unwrap();
    assert_eq!(node.counter, 7);
    assert!(matches!(tx.send(ping(1)).await, Err(NetError::Closed { .. })));
}

#[tokio::test]
async fn send_refuses_a_message_of_another_protocol_version() {
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server", full(), false)).await.unwrap();
    let addr = listener.local_addr();
    let server = tokio::spawn(async move { listener.accept().await.unwrap() });
    let conn = net::connect::<Msg>(addr, config("client", full(), false)).await.unwrap();
    let _server_conn = server.await.unwrap();
    let v1_msg: Msg = v1::Msg::Ticker(ticker::v1::Msg::Increment).into();
    match conn.send(v1_msg.clone()).await {
        Err(NetError::WrongProtocol { message, negotiated, .. }) => {
            assert_eq!((message, negotiated), (ProtocolVersion(1), ProtocolVersion(2)))
        }
        other => panic!("expected WrongProtocol, got {other:?}"),
    }
    assert!(matches!(conn.try_send(v1_msg), Err(NetError::WrongProtocol { .. })));
}

#[tokio::test]
async fn a_narrower_configured_range_runs_as_an_older_release() {
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server", full(), false)).await.unwrap();
    let addr = listener.local_addr();
    let server = tokio::spawn(async move { serve(listener.accept().await.unwrap()).await });
    let mut old = config("old", ProtocolRange::single(1), false);
    old.handshake.transport = transport_versions::SET.capped_at(transport_versions::MINIMUM_COMPATIBLE);
    let mut conn = net::connect::<Msg>(addr, old).await.unwrap();
    assert_eq!(conn.negotiated().protocol, ProtocolVersion(1));
    assert_eq!(conn.negotiated().transport, transport_versions::MINIMUM_COMPATIBLE);
    conn.send(v1::Msg::Ticker(ticker::v1::Msg::Increment).into()).await.unwrap();
    conn.send(v1::Msg::Ticker(ticker::v1::Msg::Count(0)).into()).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Some(v1::Msg::Ticker(ticker::v1::Msg::Count(1)).into()));
    conn.close().await.unwrap();
    server.await.unwrap().unwrap();

    // A range outside what the build supports is a configuration error.
    let e = net::connect::<Msg>(addr, config("bad", ProtocolRange::new(1, 3).unwrap(), false)).await.unwrap_err();
    assert!(matches!(e, NetError::Config(_)), "{e}");
    assert!(e.to_string().contains("not within v1..=v2"), "{e}");
}

#[tokio::test]
async fn refusals_tell_the_operator_what_to_upgrade() {
    let mut listener =
        Listener::<Msg>::bind("127.0.0.1:0", config("new", ProtocolRange::single(2), false)).await.unwrap();
    let addr = listener.local_addr();
    let e = net::connect::<Msg>(addr, config("old", ProtocolRange::single(1), false)).await.unwrap_err();
    assert_eq!(e.reject_code(), Some(RejectCode::NoCommonProtocol), "{e}");
    assert!(e.to_string().contains("upgrade this node to a release that speaks v2 or later"), "{e}");
    let failure = listener.next().await.unwrap().unwrap_err();
    assert_eq!(failure.error.reject_code(), Some(RejectCode::NoCommonProtocol));
    assert!(
        failure.error.to_string().contains("upgrade node old to a release that speaks v2 or later"),
        "{}",
        failure.error
    );
    println!("initiator: {e}\nresponder: {}", failure.error);

    let mut other = config("stranger", full(), false);
    other.handshake.cluster_id = "other-cluster".into();
    let e = net::connect::<Msg>(addr, other).await.unwrap_err();
    assert_eq!(e.reject_code(), Some(RejectCode::ClusterMismatch), "{e}");
}

/// Handshakes on a raw socket with the public runtime helper, so the test
/// can then write frames the typed API would never produce.
async fn raw_client(addr: std::net::SocketAddr) -> (TcpStream, handshake::Negotiated) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let n = net::initiate(&mut s, &config("raw", full(), false).handshake).await.unwrap();
    (s, n)
}

async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection was not closed");
    out
}

#[tokio::test]
async fn i6_a_frame_of_another_version_closes_the_connection() {
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server", full(), false)).await.unwrap();
    let addr = listener.local_addr();
    let body = rollgate::protocol::encode_message(&ping(1), transport_versions::CURRENT, Default::default()).unwrap();
    let other_transport = rollgate::version::TransportVersion::from_id(transport_versions::CURRENT.id() - 1000);
    for (protocol, transport) in
        [(ProtocolVersion(1), transport_versions::CURRENT), (ProtocolVersion(2), other_transport)]
    {
        let (mut raw, n) = raw_client(addr).await;
        let mut server = listener.accept().await.unwrap();
        assert_eq!((n.protocol, n.transport), (ProtocolVersion(2), transport_versions::CURRENT));
        // One good frame first: it is delivered.
        let good = net::encode_header(frame_kind::DATA, n.protocol, n.transport, body.len() as u32);
        raw.write_all(&[&good[..], &body].concat()).await.unwrap();
        assert_eq!(server.recv().await.unwrap(), Some(ping(1)));
        // Then one claiming other versions: an error, and the connection closes.
        let bad = net::encode_header(frame_kind::DATA, protocol, transport, body.len() as u32);
        raw.write_all(&[&bad[..], &body].concat()).await.unwrap();
        match server.recv().await {
            Err(NetError::VersionMismatch { got_protocol, got_transport, .. }) => {
                assert_eq!((got_protocol, got_transport), (protocol.0, transport.id()))
            }
            other => panic!("expected VersionMismatch, got {other:?}"),
        }
        let rest = read_to_end(&mut raw).await;
        assert_eq!(rest.first(), Some(&frame_kind::CLOSE), "a close frame, then EOF: {rest:?}");
        assert!(String::from_utf8_lossy(&rest).contains("agreed on v2"), "{rest:?}");
        assert!(server.recv().await.unwrap().is_none(), "nothing after the close");
        assert!(matches!(server.send(ping(2)).await, Err(NetError::Closed { .. })));
    }
}

#[tokio::test]
async fn try_send_reports_a_full_queue_and_send_waits() {
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server", full(), false)).await.unwrap();
    let addr = listener.local_addr();
    let mut cfg = config("client", full(), false);
    cfg.send_queue_len = 4;
    let conn = net::connect::<Msg>(addr, cfg).await.unwrap();
    let mut server = listener.accept().await.unwrap(); // accepted, but not reading yet
    let big: Msg = v2::Msg::Network(network::Msg::Ping(Ping { seq: 0, payload: vec![7; 256 * 1024] })).into();
    let mut sent = 0usize;
    let mut full = None;
    for _ in 0..10_000 {
        match conn.try_send(big.clone()) {
            Ok(()) => sent += 1,
            Err(e) => {
                full = Some(e);
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    assert!(matches!(full, Some(NetError::QueueFull { capacity: 4, .. })), "{full:?} after {sent} frames");
    // `send` waits instead: it completes once the server reads.
    let pending = tokio::spawn({
        let (tx, _rx) = conn.split();
        let big = big.clone();
        async move {
            tx.send(big).await.unwrap();
            tx
        }
    });
    for _ in 0..=sent {
        assert!(server.recv().await.unwrap().is_some());
    }
    let tx = pending.await.unwrap();
    tx.close().await.unwrap();
}

#[tokio::test]
async fn idle_connections_time_out_and_pings_keep_live_ones_open() {
    let mut cfg = config("server", full(), false);
    cfg.idle_timeout = Some(Duration::from_millis(300));
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", cfg.clone()).await.unwrap();
    let addr = listener.local_addr();

    // A raw peer that handshakes and then says nothing: the idle timeout fires.
    let (_raw, _) = raw_client(addr).await;
    let mut server = listener.accept().await.unwrap();
    assert!(matches!(server.recv().await, Err(NetError::IdleTimeout { after_ms: 300, .. })));

    // Two rollgate peers with nothing to say: pings keep the connection up.
    let mut client_cfg = config("client", full(), false);
    client_cfg.idle_timeout = Some(Duration::from_millis(300));
    let mut client = net::connect::<Msg>(addr, client_cfg).await.unwrap();
    let mut server = listener.accept().await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(1200), server.recv()).await;
    assert!(waited.is_err(), "recv returned {waited:?} although the peer pings");
    client.send(ping(9)).await.unwrap();
    assert_eq!(server.recv().await.unwrap(), Some(ping(9)));
    let waited = tokio::time::timeout(Duration::from_millis(50), client.recv()).await;
    assert!(waited.is_err());
}

/// Reads one handshake frame from `s`.
async fn read_hs(s: &mut TcpStream) -> Vec<u8> {
    let mut header = [0u8; handshake::HEADER_LEN];
    s.read_exact(&mut header).await.unwrap();
    let (_, len) = handshake::parse_header(&header).unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    [&header[..], &body].concat()
}

/// A proxy that rewrites both advertised protocol ranges to v1 (the
/// initiator's in the Hello, and the responder's in the Reply so the
/// initiator's consistency check sees a coherent exchange), then relays.
async fn downgrading_proxy(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut client, _) = l.accept().await.unwrap();
        let mut server = TcpStream::connect(upstream).await.unwrap();
        let Ok(Frame::Hello(mut hello)) = handshake::decode_frame(&read_hs(&mut client).await) else { panic!() };
        hello.advert.protocols = ProtocolRange::single(1);
        server.write_all(&handshake::encode_frame(&Frame::Hello(hello))).await.unwrap();
        let Ok(Frame::Reply(mut reply)) = handshake::decode_frame(&read_hs(&mut server).await) else { panic!() };
        reply.advert.protocols = ProtocolRange::single(1);
        client.write_all(&handshake::encode_frame(&Frame::Reply(reply))).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    addr
}

#[tokio::test]
async fn i7_man_in_the_middle_downgrade_needs_no_secret_and_fails_with_one() {
    // Without a secret: the proxy forces v1 on two v2-capable peers.
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server", full(), false)).await.unwrap();
    let proxy = downgrading_proxy(listener.local_addr()).await;
    let client = net::connect::<Msg>(proxy, config("client", full(), false)).await.unwrap();
    let server = listener.accept().await.unwrap();
    assert_eq!(client.negotiated().protocol, ProtocolVersion(1));
    assert_eq!(server.negotiated().protocol, ProtocolVersion(1));
    println!(
        "without a cluster secret a man in the middle downgraded two v2-capable peers to protocol {}: \
         this is the downgrade the cluster secret prevents",
        client.negotiated().protocol
    );

    // With a secret: both ends report an authentication failure.
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server", full(), true)).await.unwrap();
    let proxy = downgrading_proxy(listener.local_addr()).await;
    let e = net::connect::<Msg>(proxy, config("client", full(), true)).await.unwrap_err();
    assert_eq!(e.reject_code(), Some(RejectCode::AuthFailed), "{e}");
    let failure = listener.next().await.unwrap().unwrap_err();
    assert_eq!(failure.error.reject_code(), Some(RejectCode::AuthFailed), "{}", failure.error);
    println!("with a cluster secret: initiator: {e}\nresponder: {}", failure.error);
}

#[tokio::test]
async fn a_forged_confirmation_is_refused_after_the_reply() {
    let mut listener = Listener::<Msg>::bind("127.0.0.1:0", config("server", full(), true)).await.unwrap();
    let mut s = TcpStream::connect(listener.local_addr()).await.unwrap();
    let (init, hello) = handshake::Initiator::start(&config("raw", full(), true).handshake, [1; 32]);
    s.write_all(&hello).await.unwrap();
    let reply = read_hs(&mut s).await;
    let (_, mut confirm) = init.on_reply(&reply).unwrap();
    let last = confirm.len() - 1;
    confirm[last] ^= 0x80;
    s.write_all(&confirm).await.unwrap();
    let answer = read_to_end(&mut s).await;
    let Ok(Frame::Abort(abort)) = handshake::decode_frame(&answer) else { panic!("expected an Abort, got {answer:?}") };
    assert_eq!(abort.code, RejectCode::AuthFailed);
    let failure = listener.next().await.unwrap().unwrap_err();
    assert_eq!(failure.error.reject_code(), Some(RejectCode::AuthFailed));
}

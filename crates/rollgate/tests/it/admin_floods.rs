//! The admin API's HTTP listener under floods (invariant I12): a connection
//! that never finishes its request head is closed, and hundreds of idle
//! connections never keep a real client out for more than a moment.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a real client may take to get through a flood.
const GET_THROUGH: Duration = Duration::from_secs(3);

async fn serve() -> SocketAddr {
    let listener = rollgate::admin::bind(Some("127.0.0.1:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/ping", get(|| async { "pong" }));
    tokio::spawn(rollgate::admin::serve(listener, router));
    addr
}

async fn real_client_gets_through(addr: SocketAddr, what: &str) {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(rollgate::tls::plain_client())
        .timeout(GET_THROUGH)
        .build()
        .unwrap();
    let answer = client
        .get(format!("http://{addr}/ping"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: the real client did not get through within {GET_THROUGH:?}: {e}"));
    assert!(answer.status().is_success(), "{what}: {}", answer.status());
    println!("{what}: the real client got through in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_request_head_is_closed() {
    let addr = serve().await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server still holds a connection whose head never ended, after 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_out_a_real_client() {
    let addr = serve().await;
    let mut idle = Vec::new();
    for _ in 0..600 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    real_client_gets_through(addr, "600 idle connections").await;
}

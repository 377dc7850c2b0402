//! The HTTP server's own bounds, without a daemon (a stand-in runner behind the routes): a
//! client that sends its headers a byte at a time, or nothing, is cut off, connections past the
//! per-address cap are closed at once (WebSockets count until they close), and a well-behaved
//! client is served throughout.
use onpyrunner::jobs::Jobs;
use onpyrunner::listener::{self, ListenLimits};
use onpyrunner::router::routes;
use onpyrunner::state::AppState;
use onpyrunner_e2e::stand_in::StandIn;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(limits: ListenLimits) -> SocketAddr {
    let state = AppState::new(StandIn::new(), Jobs::new(10, Duration::from_secs(60)));
    let tcp = onpyrunner::server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(listener::serve(
        tcp,
        routes(state),
        limits,
        std::future::pending(),
    ));
    addr
}

/// A well-behaved request's status line.
async fn healthz(addr: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("answered within 5 s")
        .unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Whether the server closed the connection within `within` (reads end or fail).
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_slowloris_is_cut_off_and_others_are_still_served() {
    let addr = start(ListenLimits {
        header_read_timeout: Duration::from_millis(700),
        ..ListenLimits::default()
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        slow.push(tcp);
    }
    let started = Instant::now();
    // A byte now and then keeps no connection alive past the header timeout.
    for _ in 0..3 {
        for tcp in &mut slow {
            let _ = tcp.write_all(b"s").await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(healthz(addr).await, "HTTP/1.1 200 OK", "served meanwhile");
    for tcp in &mut slow {
        assert!(
            closed_within(tcp, Duration::from_secs(3)).await,
            "a slow client was cut off"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    // An idle kept-alive connection is closed too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(3)).await,
        "idle keep-alive closed"
    );
}

#[tokio::test]
async fn connections_past_the_cap_of_one_address_are_closed_at_once() {
    let addr = start(ListenLimits {
        max_per_address: 20,
        ..ListenLimits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(2)).await,
        "past the cap: closed"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(healthz(addr).await, "HTTP/1.1 200 OK", "places came back");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_or_part_of_an_http2_preface_is_closed_at_the_header_timeout(
) {
    let addr = start(ListenLimits {
        header_read_timeout: Duration::from_millis(700),
        ..ListenLimits::default()
    })
    .await;
    // Not a byte; and the first bytes of HTTP/2's preface, which a server that sniffs the
    // version waits to see the end of.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut preface = TcpStream::connect(addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "a silent connection was closed"
    );
    assert!(
        closed_within(&mut preface, Duration::from_secs(3)).await,
        "a half preface was closed"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(healthz(addr).await, "HTTP/1.1 200 OK", "served meanwhile");
}

#[tokio::test]
async fn websockets_keep_their_place_under_the_per_address_cap_until_they_close() {
    use futures_util::{SinkExt, StreamExt};
    let addr = start(ListenLimits {
        max_per_address: 5,
        ..ListenLimits::default()
    })
    .await;
    let url = format!("ws://{addr}/api/v1/ws");
    let mut sockets = Vec::new();
    for _ in 0..5 {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        sockets.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(2)).await,
        "5 WebSockets are open: the 6th connection is closed at once"
    );
    let mut first = sockets.remove(0);
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut again, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("a closed WebSocket gave its place back");
    again
        .send(tokio_tungstenite::tungstenite::Message::text(
            r#"{"type":"ping"}"#,
        ))
        .await
        .unwrap();
    // The server's own heartbeat pings may come first.
    loop {
        match again.next().await.unwrap().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(text) => {
                assert!(text.contains("pong"), "{text}");
                break;
            }
            _ => continue,
        }
    }
}

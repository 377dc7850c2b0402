//! Request bodies are received within bounds, without a daemon (a stand-in runner behind the
//! routes): a body that does not arrive in time gets 408, and bodies being received at once
//! cannot hold more than the budget (503, and served again once room is back).
use onpyrunner::body::Bodies;
use onpyrunner::jobs::Jobs;
use onpyrunner::listener::{self, ListenLimits};
use onpyrunner::router::routes;
use onpyrunner::state::AppState;
use onpyrunner_e2e::stand_in::StandIn;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(bodies: Bodies) -> SocketAddr {
    let mut state = AppState::new(StandIn::new(), Jobs::new(10, Duration::from_secs(60)));
    state.bodies = bodies;
    let tcp = onpyrunner::server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(listener::serve(
        tcp,
        routes(state),
        ListenLimits::default(),
        std::future::pending(),
    ));
    addr
}

/// A job posting of `len` bytes, split into the head (with the first `sent` body bytes) and
/// the rest.
fn posting(len: usize, sent: usize) -> (Vec<u8>, Vec<u8>) {
    let prefix = br#"{"language":"python","code":""#;
    let suffix = br#""}"#;
    let mut body = prefix.to_vec();
    body.resize(len - suffix.len(), b'x');
    body.extend_from_slice(suffix);
    let mut head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let rest = body.split_off(sent);
    head.extend_from_slice(&body);
    (head, rest)
}

async fn answer(tcp: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("answered within 10 s")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

async fn post(addr: SocketAddr, len: usize) -> String {
    let (head, rest) = posting(len, 0);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&head).await.unwrap();
    tcp.write_all(&rest).await.unwrap();
    answer(&mut tcp).await
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let addr = start(Bodies::new(1 << 20, Duration::from_millis(500))).await;
    let (head, _rest) = posting(1000, 10);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&head).await.unwrap();
    let answer = answer(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 0.5 s"), "{answer}");
}

#[tokio::test]
async fn bodies_arriving_at_once_are_held_to_the_budget() {
    let addr = start(Bodies::new(64 * 1024, Duration::from_secs(20))).await;
    // One client has sent 50 KiB of a 60 KiB body and waits.
    let (head, rest) = posting(60 * 1024, 50 * 1024);
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(&head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let refused = post(addr, 30 * 1024).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.to_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert!(refused.contains("request bodies"), "{refused}");
    // A small body still fits beside it.
    let small = post(addr, 4 * 1024).await;
    assert!(small.starts_with("HTTP/1.1 202"), "{small}");

    // Once the slow body is in, the room is back.
    slow.write_all(&rest).await.unwrap();
    let slow_answer = answer(&mut slow).await;
    assert!(slow_answer.starts_with("HTTP/1.1 202"), "{slow_answer}");
    let served = post(addr, 30 * 1024).await;
    assert!(served.starts_with("HTTP/1.1 202"), "{served}");
}

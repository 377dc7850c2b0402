//! A WebSocket connection as every protocol we serve over one gets it (`/api/v1/ws`, in
//! `ws.rs`; Piston's `/api/v2/connect`, in `piston_ws.rs`): the handshake, with the origin and
//! the caller's count of open WebSockets checked first and our size limits on the connection,
//! then a [`Socket`]:
//! - a writer task sends what is queued, as fast as the client reads. The queue is bounded, so
//!   whoever queues waits for a slow client (and a run's forwarder, waiting, slows its
//!   program) instead of growing memory;
//! - pings every `ping_interval`, which skip the queue (a slow client is not a gone one), and a
//!   connection that shows no sign of life for [`DEAD_AFTER_INTERVALS`] intervals is over.
use crate::error::ApiError;
use crate::identity::Caller;
use crate::listener::Place;
use crate::state::AppState;
use crate::tokens;
use bytes::Bytes;
use futures_util::stream::SplitStream;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Interval;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use warp::http::HeaderMap;
use warp::http::StatusCode;
use warp::reply::Response;

/// Largest message a client may send (the library's default is 64 MiB).
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// Largest frame a client may send (the library's default is 16 MiB).
pub const MAX_FRAME_BYTES: usize = 256 * 1024;
/// Bytes the library may hold for a client that does not read, beyond what the writer waits on.
pub const MAX_WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// Bytes read from a connection at a time. The library's default, 128 KiB, is allocated and
/// zeroed for every connection: 1000 idle ones held 100 MB.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Messages queued for the writer before the queuing side waits.
const OUT_BUFFER: usize = 16;
/// Intervals without a sign of life (a frame received, or a send that waited for the client and
/// then went through) after which a connection counts as gone.
pub const DEAD_AFTER_INTERVALS: u32 = 3;

/// The upgrade (its caller already admitted by the route): checks the origin and the caller's
/// count of open WebSockets, then the request, answers 101, then hands the connection, with our
/// own limits, to `serve`. (warp's `ws()` filter cannot set the read buffer's size.) The count
/// comes before the request's own checks so that a plain GET tells a browser, which cannot see
/// why a handshake failed, whether it would have been refused (the IDE asks this way). `about`
/// names the document of the protocol, for a request that is not an upgrade.
pub fn upgrade<Fut>(
    headers: &HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    state: AppState,
    caller: Caller,
    place: Option<Place>,
    about: &str,
    serve: fn(Socket, AppState, Caller) -> Fut,
) -> Response
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let origin = header("origin");
    if !state.ws.origin_allowed(origin, header("host")) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "origin {:?} is not allowed to open a WebSocket here (see --allowed-origins)",
                origin.unwrap_or_default()
            ),
        )
        .into_response();
    }
    let slot = match state.quotas.open_websocket(&caller) {
        Ok(slot) => slot,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let key = header("sec-websocket-key");
    let Some(key) = key.filter(|_| {
        has_token("connection", "upgrade")
            && has_token("upgrade", "websocket")
            && header("sec-websocket-version") == Some("13")
    }) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "this is a WebSocket endpoint (version 13): send an upgrade request; see {about}"
            ),
        )
        .into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    // A browser that sends its token as a subprotocol must get one of its offers back.
    let speaks_ours = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == tokens::WS_PROTOCOL);
    if let Some(on_upgrade) = on_upgrade {
        let ping_interval = state.ws.ping_interval;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(socket_config()),
                    )
                    .await;
                    serve(Socket::new(socket, ping_interval), state, caller).await;
                    // The connection counts against the client's and the server's caps until
                    // here.
                    drop(slot);
                    drop(place);
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
    }
    let mut response = warp::http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept);
    if speaks_ours {
        response = response.header("sec-websocket-protocol", tokens::WS_PROTOCOL);
    }
    response
        .body(warp::hyper::body::Bytes::new().into())
        .expect("a valid response")
}

fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        // Every message is flushed as it is sent; nothing is gathered first.
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// Signs of life, as milliseconds since the connection opened.
struct Liveness {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Liveness {
    fn touch(&self) {
        self.last_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let now = self.opened.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// An open connection: the client's messages come from [`next`](Self::next), which also keeps
/// the heartbeat; what is sent goes through a bounded queue to the writer task. Dropping it
/// ends the writer.
pub struct Socket {
    stream: SplitStream<WebSocketStream<Upgraded>>,
    out: mpsc::Sender<Message>,
    /// One message that skips the queue (a protocol's pong); a second one while it waits is
    /// dropped, as answering one ping of two is enough.
    urgent: mpsc::Sender<Message>,
    writer: JoinHandle<()>,
    live: Arc<Liveness>,
    /// Cancelled when the writer stops: the client stopped reading, or the connection broke.
    gone: CancellationToken,
    ping_now: Arc<Notify>,
    ping: Interval,
    dead_after: Duration,
    said_goodbye: bool,
}

impl Socket {
    fn new(socket: WebSocketStream<Upgraded>, ping_interval: Duration) -> Self {
        let (mut sink, stream) = socket.split();
        let (out, mut out_rx) = mpsc::channel::<Message>(OUT_BUFFER);
        let (urgent, mut urgent_rx) = mpsc::channel::<Message>(1);
        let live = Arc::new(Liveness {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        let gone = CancellationToken::new();
        // Pings skip the output queue: when it is full the client is slow, not gone, and a
        // ping stuck behind its output would get no answer in time.
        let ping_now = Arc::new(Notify::new());
        let writer = {
            let live = live.clone();
            let gone = gone.clone();
            let ping_now = ping_now.clone();
            tokio::spawn(async move {
                loop {
                    let message = tokio::select! {
                        biased;
                        _ = ping_now.notified() => Message::Ping(Bytes::new()),
                        Some(message) = urgent_rx.recv() => message,
                        message = out_rx.recv() => match message {
                            Some(message) => message,
                            None => break,
                        },
                    };
                    // A send that had to wait finished because the client read: a sign of
                    // life. One that did not wait proves nothing (the kernel took it).
                    let mut sending = sink.send(message);
                    let sent = match (&mut sending).now_or_never() {
                        Some(sent) => sent,
                        None => {
                            let sent = sending.await;
                            live.touch();
                            sent
                        }
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                gone.cancel();
                let _ = sink.close().await;
            })
        };
        let mut ping = tokio::time::interval(ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Socket {
            stream,
            out,
            urgent,
            writer,
            live,
            gone,
            ping_now,
            ping,
            dead_after: ping_interval * DEAD_AFTER_INTERVALS,
            said_goodbye: false,
        }
    }

    /// The client's next text or binary message; `None` once the connection is over: the client
    /// closed it ([`said_goodbye`](Self::said_goodbye)), it broke or went silent, or the
    /// writer stopped (after a close frame of ours, the next send fails). Pings and pongs are
    /// signs of life only (the library answers pings itself).
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            let message = tokio::select! {
                message = self.stream.next() => message,
                _ = self.gone.cancelled() => return None,
                _ = self.ping.tick() => {
                    if self.live.quiet_for() > self.dead_after {
                        tracing::info!("WebSocket client silent: dropping the connection");
                        return None;
                    }
                    self.ping_now.notify_one();
                    continue;
                }
            };
            let Some(Ok(message)) = message else {
                return None;
            };
            self.live.touch();
            match message {
                Message::Close(_) => {
                    self.said_goodbye = true;
                    return None;
                }
                Message::Text(_) | Message::Binary(_) => return Some(message),
                _ => {}
            }
        }
    }

    /// The queue to the writer, for a task that sends on its own (a run's forwarder).
    pub fn sender(&self) -> mpsc::Sender<Message> {
        self.out.clone()
    }

    /// Queue `message`, waiting while the client is slow; false once the writer has stopped.
    pub async fn send(&self, message: Message) -> bool {
        self.out.send(message).await.is_ok()
    }

    /// Send `message` ahead of the queue; dropped when one already waits there.
    pub fn send_urgent(&self, message: Message) {
        let _ = self.urgent.try_send(message);
    }

    /// Whether the client closed the connection with a close frame (it said goodbye), rather
    /// than losing it.
    pub fn said_goodbye(&self) -> bool {
        self.said_goodbye
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

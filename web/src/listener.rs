//! The HTTP server's own accept loop, so that a hostile client cannot exhaust it: warp's
//! `serve` starts hyper without a timer (no header-read or idle timeout) and accepts without
//! bound, so a slowloris holds connections until the process runs out of descriptors.
//! - every connection must send a request's headers within `header_read_timeout`, from the
//!   moment it is accepted, and between requests on a kept-alive connection (hyper's timer
//!   restarts at each request). This is hyper's HTTP/1 server itself: hyper-util's `auto`
//!   builder first waits, without any timeout, for the bytes that tell HTTP/1 from HTTP/2, so a
//!   connection that sent nothing (or the first bytes of the HTTP/2 preface) was held for good;
//! - at most `max_connections` at once, and `max_per_address` from one address (an IPv6 peer
//!   counts by its /64); a connection past a cap is closed at once, before anything is read;
//! - hyper buffers at most [`MAX_BUF_BYTES`] for a connection (headers up to that size);
//! - an accept that fails (out of descriptors) is retried after a pause instead of spinning;
//! - shutdown stops accepting and lets open connections finish within the server's bound.
//!
//! A WebSocket leaves hyper once upgraded; its own heartbeat bounds it from then on, and it
//! keeps its connection's [`Place`] under the caps until it closes.
use crate::proxies;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::reply::Response;
use warp::Filter;

/// What hyper buffers for a connection at most: a request's headers, and an answer's bytes
/// written ahead of the client (hyper stops asking a streamed answer for more beyond it). Its
/// default, about 400 KiB, let each client that never reads hold that much (plus a piece of
/// the answer): 200 unread job views held 156 MB.
const MAX_BUF_BYTES: usize = 64 * 1024;

/// The TCP peer a request came from, put in its extensions by [`serve`] (a request from the
/// test client has none). Who the client is follows from it (`identity`): its address, or
/// from a trusted proxy the address `X-Forwarded-For` names, or the token it presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub std::net::SocketAddr);

/// What bounds the HTTP server.
#[derive(Debug, Clone)]
pub struct ListenLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_per_address: usize,
}

impl Default for ListenLimits {
    fn default() -> Self {
        ListenLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_per_address: 512,
        }
    }
}

/// Connections open now, in all and by address.
#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One admitted connection's place under the caps, in every request's extensions (a request
/// from the test client has none). It is given back when the connection ends and every copy is
/// dropped: what takes the connection's socket beyond its HTTP part (an upgraded WebSocket)
/// holds a copy, so the caps count it until it closes. Without it a client opened as many
/// WebSockets as it liked, past the per-address cap, each one freeing its place at the upgrade.
#[derive(Clone)]
pub struct Place(#[allow(dead_code)] Arc<Slot>);

/// What [`Place`] shares.
struct Slot {
    open: Arc<Mutex<Open>>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("open lock");
        open.total -= 1;
        if let Some(n) = open.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

fn admit(open: &Arc<Mutex<Open>>, address: IpAddr, limits: &ListenLimits) -> Option<Slot> {
    let mut o = open.lock().expect("open lock");
    let here = o.by_address.get(&address).copied().unwrap_or(0);
    if o.total >= limits.max_connections || here >= limits.max_per_address {
        return None;
    }
    o.total += 1;
    *o.by_address.entry(address).or_default() += 1;
    Some(Slot {
        open: open.clone(),
        address,
    })
}

/// Serve `filter` on `listener` within `limits` until `shutdown` resolves; then stop accepting
/// and wait for open requests (upgraded WebSockets are not waited for).
pub async fn serve<F>(
    listener: TcpListener,
    filter: F,
    limits: ListenLimits,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let open = Arc::new(Mutex::new(Open::default()));
    let stop = CancellationToken::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and the like: the process is out of something; wait for it to
                    // come back rather than spin.
                    tracing::warn!(error = %e, "accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            // Ended connections are reaped as they go, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = &mut shutdown => break,
        };
        let Some(place) =
            admit(&open, proxies::network(peer.ip()), &limits).map(|slot| Place(Arc::new(slot)))
        else {
            tracing::debug!(%peer, "connection refused: over the connection cap");
            drop(stream);
            continue;
        };
        let warp = warp::service(filter.clone());
        let here = place.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            // Who asked, for the per-client caps (see `Peer`), and the connection's place.
            request.extensions_mut().insert(Peer(peer));
            request.extensions_mut().insert(here.clone());
            tower_service::Service::call(&mut warp.clone(), request)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(MAX_BUF_BYTES);
        let stop = stop.clone();
        connections.spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let connection = builder.serve_connection(io, service).with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stop.cancelled() => {
                    // Finish the request in progress, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    stop.cancel();
    while connections.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_all_and_per_address_and_places_come_back() {
        let limits = ListenLimits {
            max_connections: 3,
            max_per_address: 2,
            ..ListenLimits::default()
        };
        let open = Arc::new(Mutex::new(Open::default()));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = admit(&open, a, &limits).unwrap();
        let _a2 = admit(&open, a, &limits).unwrap();
        assert!(admit(&open, a, &limits).is_none(), "per address");
        let _b1 = admit(&open, b, &limits).unwrap();
        assert!(admit(&open, b, &limits).is_none(), "in all");
        drop(a1);
        assert!(admit(&open, b, &limits).is_some(), "a place came back");
    }
}

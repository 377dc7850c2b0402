//! Receiving request bodies within bounds: a deadline for the whole body, and a budget for the
//! bodies being received at once, so that many connections each sending a big body cannot take
//! the server's memory (4096 connections of 40 MiB would be 160 GiB). What counts against the
//! budget is what has arrived, so a client that declares a big body and sends it slowly holds
//! only what it sent, and for at most the deadline. The room a body took is kept by its handler
//! ([`Room`]) until the run made from it has ended, since the run holds its source and stdin
//! that long: released as soon as the body was in, it let twenty 30 MiB bodies at once take the
//! server from 19 to 381 MB (their parse and copies were outside the budget), and runs waiting in
//! the queue with 16 MiB of stdin each were not counted at all.
use crate::error::ApiError;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warp::http::StatusCode;

/// The server's bounds on request bodies.
#[derive(Debug, Clone)]
pub struct Bodies {
    /// Room left, in KiB.
    room: Arc<Semaphore>,
    /// A body must have arrived this long after its headers (they have their own timeout).
    timeout: Duration,
}

impl Default for Bodies {
    /// 256 MiB of bodies at once, each within 30 s.
    fn default() -> Self {
        Bodies::new(256 * 1024 * 1024, Duration::from_secs(30))
    }
}

impl Bodies {
    pub fn new(budget_bytes: u64, timeout: Duration) -> Self {
        let kib = usize::try_from(budget_bytes / 1024).unwrap_or(usize::MAX);
        Bodies {
            room: Arc::new(Semaphore::new(kib.min(Semaphore::MAX_PERMITS))),
            timeout,
        }
    }

    /// Gathers a body, taking room for each KiB as it arrives, and keeps the room in what it
    /// returns. 503 when the budget is spent, 408 past the deadline.
    pub async fn receive(
        &self,
        body: impl Stream<Item = Result<impl Buf, warp::Error>> + Send,
    ) -> Result<Received, ApiError> {
        match tokio::time::timeout(self.timeout, self.gather(body)).await {
            Ok(gathered) => gathered,
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    self.timeout.as_secs_f64()
                ),
            )),
        }
    }

    async fn gather(
        &self,
        body: impl Stream<Item = Result<impl Buf, warp::Error>> + Send,
    ) -> Result<Received, ApiError> {
        let mut body = std::pin::pin!(body);
        let mut gathered = BytesMut::new();
        let mut room: Option<OwnedSemaphorePermit> = None;
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
            })?;
            let held = room.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
            let needed = (gathered.len() + chunk.remaining()).div_ceil(1024);
            if needed > held {
                let more = u32::try_from(needed - held).unwrap_or(u32::MAX);
                let Ok(permit) = Arc::clone(&self.room).try_acquire_many_owned(more) else {
                    let mut err = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server busy: too many request bodies arriving at once; retry",
                    );
                    err.retry_after = Some(1);
                    return Err(err);
                };
                match room.as_mut() {
                    Some(room) => room.merge(permit),
                    None => room = Some(permit),
                }
            }
            while chunk.has_remaining() {
                let piece = chunk.chunk();
                let n = piece.len();
                gathered.extend_from_slice(piece);
                chunk.advance(n);
            }
        }
        Ok(Received {
            bytes: gathered.freeze(),
            room: Room(room),
        })
    }
}

/// A body received whole, and the room it takes in the budget.
#[derive(Debug)]
pub struct Received {
    pub bytes: Bytes,
    pub room: Room,
}

/// A body's room in the budget; given back when dropped.
#[derive(Debug, Default)]
pub struct Room(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

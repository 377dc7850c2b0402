//! Runs across machines through one Redis server: API nodes queue runs ([`RedisRunner`], a
//! [`Runner`](crate::runner::Runner)), worker nodes execute them on their own engine
//! ([`Worker`]), and a run's events and its stdin, EOF and Stop travel through Redis Streams
//! ([`wire`] has the keys and the entries). Jobs go through a consumer group, so each is taken
//! by one worker; Redis is the only shared state, and nothing here is a queue or consensus of
//! its own.
//!
//! Faults: a worker's heartbeat key lives [`HEARTBEAT_TTL`] and is refreshed every
//! [`HEARTBEAT_EVERY`]. Every node sweeps every [`SWEEP_EVERY`]: a job pending with a consumer
//! whose heartbeat is gone is claimed (XCLAIM with a minimum idle time, so one node wins) and
//! either ended with reason `internal_error` ("worker ... was lost", when the worker had
//! started it: its owner record is there) or queued again for a live worker (when it had not).
//! A run of a worker killed outright so reaches its final state within [`LOST_BOUND`]
//! (`HEARTBEAT_TTL + SWEEP_EVERY`, plus a few Redis round trips). Every Redis call has a
//! timeout ([`CALL_TIMEOUT`]).
//!
//! Redis restarting: the queue, the pending entries and the streams are Redis's (run it with
//! an append-only file, docs/deploy.md); every node makes its connections again by itself.
//! Writes that matter (a run's events, its end, its stdin and Stop) are retried for
//! [`WRITE_RETRY`]. A node that has just seen Redis fail does not judge heartbeats until
//! [`STEADY`] has passed without a failure (live workers refresh theirs meanwhile), and a
//! worker whose connection was broken looks at its own pending entries again (a job whose
//! delivery reached Redis's log but not the worker is settled as a lost worker's would be).
pub mod api;
mod sweep;
pub mod wire;
pub mod worker;

pub use api::{Admission, RedisRunner};
pub use worker::Worker;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wire::Keys;

/// How long a worker's heartbeat key lives without being refreshed.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(3);
/// How often a worker refreshes it.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How often every node looks for jobs of lost workers.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A run of a worker that died reaches its final state within this (and a few round trips).
pub const LOST_BOUND: Duration = Duration::from_secs(4);
/// The longest any one Redis call may take (connecting included) before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long writes that matter are retried while Redis fails (a restart takes well under it).
pub const WRITE_RETRY: Duration = Duration::from_secs(10);
/// How long a node must have seen no Redis failure before it ends anyone's runs for a missing
/// heartbeat: a heartbeat's TTL and a refresh.
pub const STEADY: Duration = Duration::from_secs(4);
/// How long a blocking read (XREAD, XREADGROUP) waits for an entry before it asks again.
pub const BLOCK: Duration = Duration::from_millis(1000);
/// How long a run's events and control streams are kept after it ended, by default (a client
/// may resume from any node until then).
pub const DEFAULT_RUN_TTL: Duration = Duration::from_secs(600);
/// Entries a run's events stream may hold; past that the worker ends the run as
/// `output_limit` (the log's own bound, [`MAX_ENTRIES`](crate::run_log::MAX_ENTRIES)).
pub const MAX_EVENTS: usize = crate::run_log::MAX_ENTRIES;

const _: () = assert!(
    HEARTBEAT_TTL.as_millis() + SWEEP_EVERY.as_millis() <= LOST_BOUND.as_millis(),
    "the stated bound covers the heartbeat's TTL and a sweep"
);
const _: () = assert!(
    HEARTBEAT_TTL.as_millis() + HEARTBEAT_EVERY.as_millis() <= STEADY.as_millis(),
    "after a failure, live workers have refreshed their heartbeats before anyone judges them"
);

/// What both kinds of node are configured with.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://[:password@]host:port/[db]`. Never logged: it carries the password.
    pub url: String,
    /// The prefix of every key (see [`wire`]).
    pub prefix: String,
    /// How long a run's streams are kept once it ended.
    pub run_ttl: Duration,
}

impl ClusterConfig {
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        ClusterConfig {
            url: url.into(),
            prefix: prefix.into(),
            run_ttl: DEFAULT_RUN_TTL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("--redis: {0}")]
    Url(String),
    #[error("--redis-prefix {0:?}: 1 to 64 characters of [A-Za-z0-9._-]")]
    Prefix(String),
    /// Redis refused or did not answer; the message names the server, never the password.
    #[error("Redis at {server}: {message}")]
    Redis { server: String, message: String },
    #[error("the worker's engine: {0}")]
    Engine(String),
}

/// One node's way to Redis: a shared connection for short calls, made again after a failure,
/// and dedicated ones for blocking reads (a blocking command holds its connection).
pub(crate) struct Redis {
    client: redis::Client,
    pub(crate) keys: Keys,
    pub(crate) run_ttl: Duration,
    /// Where the server is, for messages: host and port, without the password.
    pub(crate) server: String,
    shared: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// For the few calls a synchronous caller makes (submit, resume on another node).
    sync: Mutex<Option<redis::Connection>>,
    /// When a call last failed.
    failed_at: Mutex<Option<Instant>>,
}

/// A Redis call that failed or timed out, with the server named.
pub(crate) type Failed = ClusterError;

impl Redis {
    pub(crate) fn open(config: &ClusterConfig) -> Result<Self, ClusterError> {
        if !wire::valid_prefix(&config.prefix) {
            return Err(ClusterError::Prefix(config.prefix.clone()));
        }
        // The crate's messages for a bad URL do not repeat the URL.
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| ClusterError::Url(e.to_string()))?;
        let server = client.get_connection_info().addr().to_string();
        Ok(Redis {
            client,
            keys: Keys::new(config.prefix.clone()),
            run_ttl: config.run_ttl,
            server,
            shared: tokio::sync::Mutex::new(None),
            sync: Mutex::new(None),
            failed_at: Mutex::new(None),
        })
    }

    pub(crate) fn failed(&self, e: impl std::fmt::Display) -> ClusterError {
        ClusterError::Redis {
            server: self.server.clone(),
            message: e.to_string(),
        }
    }

    fn config(response: Duration) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(response))
    }

    /// A connection could not be made or broke: remember when, for [`steady`](Self::steady),
    /// and name the server.
    pub(crate) fn broken(&self, e: impl std::fmt::Display) -> ClusterError {
        *self.failed_at.lock().expect("redis lock") = Some(Instant::now());
        self.failed(e)
    }

    /// Whether no connection has failed for [`STEADY`].
    pub(crate) fn steady(&self) -> bool {
        self.failed_at
            .lock()
            .expect("redis lock")
            .is_none_or(|at| at.elapsed() >= STEADY)
    }

    /// Call `f` until it succeeds, waiting a little between tries, for up to [`WRITE_RETRY`].
    pub(crate) async fn retrying<T, F: std::future::Future<Output = Result<T, Failed>>>(
        &self,
        mut f: impl FnMut() -> F,
    ) -> Result<T, Failed> {
        let started = Instant::now();
        loop {
            match f().await {
                Ok(value) => return Ok(value),
                Err(e) if started.elapsed() > WRITE_RETRY => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A connection of its own, for blocking reads of up to [`BLOCK`].
    pub(crate) async fn blocking(&self) -> Result<MultiplexedConnection, Failed> {
        let config = Self::config(BLOCK + CALL_TIMEOUT);
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(CALL_TIMEOUT * 2, connect).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.broken(e)),
            Err(_) => Err(self.broken("no answer to connecting")),
        }
    }

    /// The shared connection, made if there is none.
    async fn shared(&self) -> Result<MultiplexedConnection, Failed> {
        let mut shared = self.shared.lock().await;
        if let Some(conn) = shared.as_ref() {
            return Ok(conn.clone());
        }
        let config = Self::config(CALL_TIMEOUT);
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        let conn = match tokio::time::timeout(CALL_TIMEOUT * 2, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(self.broken(e)),
            Err(_) => return Err(self.broken("no answer to connecting")),
        };
        *shared = Some(conn.clone());
        Ok(conn)
    }

    /// Send `cmd` on the shared connection; a failure drops it, so the next call reconnects.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, Failed> {
        let mut conn = self.shared().await?;
        self.settle(cmd.query_async(&mut conn)).await
    }

    /// [`query`](Self::query) for a pipeline.
    pub(crate) async fn pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, Failed> {
        let mut conn = self.shared().await?;
        self.settle(pipe.query_async(&mut conn)).await
    }

    /// A call on the shared connection, within [`CALL_TIMEOUT`]; a broken connection is dropped.
    async fn settle<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Failed> {
        match tokio::time::timeout(CALL_TIMEOUT * 2, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    self.shared.lock().await.take();
                    return Err(self.broken(e));
                }
                Err(self.failed(e))
            }
            Err(_) => {
                self.shared.lock().await.take();
                Err(self.broken("no answer"))
            }
        }
    }

    /// Run `f` on a synchronous connection with [`CALL_TIMEOUT`] on every read and write, for
    /// the callers that cannot await (`Runner::submit_with`, `Runner::resume`). On a
    /// multi-threaded runtime the thread is handed over to tokio meanwhile.
    pub(crate) fn blocking_call<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, Failed> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let call = || {
            let mut sync = self.sync.lock().expect("redis lock");
            if sync.is_none() {
                let conn = self
                    .client
                    .get_connection_with_timeout(CALL_TIMEOUT)
                    .map_err(|e| self.broken(e))?;
                conn.set_read_timeout(Some(CALL_TIMEOUT))
                    .and_then(|_| conn.set_write_timeout(Some(CALL_TIMEOUT)))
                    .map_err(|e| self.broken(e))?;
                *sync = Some(conn);
            }
            let result = f(sync.as_mut().expect("made above"));
            match result {
                Ok(value) => Ok(value),
                Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                    sync.take();
                    Err(self.broken(e))
                }
                Err(e) => Err(self.failed(e)),
            }
        };
        if multi_thread {
            tokio::task::block_in_place(call)
        } else {
            call()
        }
    }

    /// Whether Redis answers PING, and with the right password.
    pub(crate) async fn ping(&self) -> Result<(), Failed> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(self.failed(format!("PING answered {pong:?}")))
        }
    }

    /// Create the workers' group on the jobs stream, if it is not there.
    pub(crate) async fn ensure_group(&self) -> Result<(), Failed> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(self.keys.jobs())
            .arg(wire::GROUP)
            .arg("0")
            .arg("MKSTREAM");
        match self.query::<()>(&cmd).await {
            Ok(()) => Ok(()),
            Err(ClusterError::Redis { message, .. }) if message.contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A run has ended: its streams expire after the TTL, its owner record goes, and its job
    /// is acknowledged and deleted (so the jobs stream holds only runs queued or running).
    pub(crate) async fn finish(&self, run: &str, entry: &str) -> Result<(), Failed> {
        let ttl = self.run_ttl.as_secs().max(1);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("EXPIRE")
            .arg(self.keys.events(run))
            .arg(ttl)
            .ignore()
            .cmd("EXPIRE")
            .arg(self.keys.control(run))
            .arg(ttl)
            .ignore()
            .cmd("EXPIRE")
            .arg(self.keys.language(run))
            .arg(ttl)
            .ignore()
            .cmd("DEL")
            .arg(self.keys.owner(run))
            .ignore()
            .cmd("XACK")
            .arg(self.keys.jobs())
            .arg(wire::GROUP)
            .arg(entry)
            .ignore()
            .cmd("XDEL")
            .arg(self.keys.jobs())
            .arg(entry)
            .ignore();
        self.pipe(&pipe).await
    }
}

/// Call `f` every `period` until `shutdown`.
pub(crate) async fn every<F: std::future::Future<Output = ()>>(
    period: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
    mut f: impl FnMut() -> F,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        f().await;
    }
}

/// Entries of `key` after `from`, waiting up to [`BLOCK`] for one; `group` reads as that
/// (group, consumer).
pub(crate) async fn read_stream(
    conn: &mut MultiplexedConnection,
    key: &str,
    from: &str,
    count: usize,
    group: Option<(&str, &str)>,
) -> redis::RedisResult<Vec<redis::streams::StreamId>> {
    let mut opts = redis::streams::StreamReadOptions::default()
        .count(count)
        .block(BLOCK.as_millis() as usize);
    if let Some((group, consumer)) = group {
        opts = opts.group(group, consumer);
    }
    let reply: Option<redis::streams::StreamReadReply> =
        redis::AsyncCommands::xread_options(conn, &[key], &[from], &opts).await?;
    Ok(reply
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|k| k.ids)
        .collect())
}

/// The value of field `name` of a stream entry.
pub(crate) fn field(entry: &redis::streams::StreamId, name: &str) -> Option<Vec<u8>> {
    redis::from_redis_value_ref(entry.map.get(name)?).ok()
}

/// The first field of a stream entry and its value (our entries have one field each).
pub(crate) fn entry_field(entry: &redis::streams::StreamId) -> Option<(&str, Vec<u8>)> {
    let (field, value) = entry.map.iter().next()?;
    let bytes: Vec<u8> = redis::from_redis_value_ref(value).ok()?;
    Some((field.as_str(), bytes))
}

//! What one client may take of the web layer, beyond the engine's per-client caps: how fast it
//! may start runs (a token bucket: `--runs-per-minute` sustained, `--runs-burst` at once) and
//! how many WebSockets it may hold open (`--max-websockets-per-client`). A token's own quotas
//! replace the defaults for its client.
//!
//! Memory is bounded whoever asks: a WebSocket count exists only while its connections are
//! open (and those are capped by the accept loop), and the table of buckets holds at most
//! [`MAX_BUCKETS`]. A full bucket is the same as none, so full ones go first when the table is
//! full; if that is not enough (more distinct clients drained their buckets within the refill
//! time than the table holds), the least recently used quarter goes, and those clients start
//! again with a full burst. IPv6 clients are keyed by their /64 (`identity::ClientKey`), so one
//! attacker's 2^64 addresses are one client.
use crate::error::ApiError;
use crate::identity::{Caller, ClientKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warp::http::StatusCode;

/// Most clients whose buckets are remembered at once.
pub const MAX_BUCKETS: usize = 16 * 1024;

/// A rate: `per_minute` sustained, up to `burst` at once. `per_minute` 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    fn per_second(self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    fn capacity(self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

/// The defaults for every client; a token's quotas replace them for its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConfig {
    pub runs: Rate,
    pub max_websockets: usize,
}

impl Default for QuotaConfig {
    /// Far above what one person at the IDE does (a run every 2 s for a minute, 30 at once),
    /// and far below what a script in a loop would take.
    fn default() -> Self {
        QuotaConfig {
            runs: Rate {
                per_minute: 120,
                burst: 30,
            },
            max_websockets: 8,
        }
    }
}

/// A client started runs faster than its rate allows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "too many runs started: at most {} a minute ({} at once) per client; retry in {} s",
    rate.per_minute,
    rate.burst,
    retry_after.as_secs()
)]
pub struct RateLimited {
    pub rate: Rate,
    /// When a run may be started again (whole seconds, at least 1).
    pub retry_after: Duration,
}

/// A client holds as many WebSockets open as it may.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("you have {max} WebSockets open, as many as one client may; close one first")]
pub struct TooManyWebSockets {
    pub max: usize,
}

/// WebSockets open now, by client; a client with none has no entry.
type OpenWebSockets = Arc<Mutex<HashMap<ClientKey, usize>>>;

/// The web layer's quotas and the tables that enforce them.
pub struct Quotas {
    config: QuotaConfig,
    buckets: Mutex<Buckets>,
    websockets: OpenWebSockets,
}

impl Quotas {
    pub fn new(config: QuotaConfig) -> Self {
        Quotas {
            config,
            buckets: Mutex::new(Buckets::new(MAX_BUCKETS)),
            websockets: Arc::default(),
        }
    }

    pub fn config(&self) -> &QuotaConfig {
        &self.config
    }

    /// The rate of starting runs that applies to `caller`.
    pub fn runs_rate(&self, caller: &Caller) -> Rate {
        let mut rate = self.config.runs;
        if let Some(q) = caller.quotas() {
            rate.per_minute = q.runs_per_minute.unwrap_or(rate.per_minute);
            rate.burst = q.runs_burst.unwrap_or(rate.burst);
        }
        rate
    }

    /// Count a run-starting request of `caller`, or refuse it.
    pub fn start_run(&self, caller: &Caller) -> Result<(), RateLimited> {
        let Some(key) = &caller.key else {
            return Ok(());
        };
        let rate = self.runs_rate(caller);
        if rate.per_minute == 0 {
            return Ok(());
        }
        self.buckets
            .lock()
            .expect("buckets lock")
            .take(key, rate, Instant::now())
            .map_err(|retry_after| RateLimited { rate, retry_after })
    }

    /// A place for one more WebSocket of `caller`, given back when the slot is dropped.
    pub fn open_websocket(&self, caller: &Caller) -> Result<WebSocketSlot, TooManyWebSockets> {
        let Some(key) = &caller.key else {
            return Ok(WebSocketSlot(None));
        };
        let max = caller
            .quotas()
            .and_then(|q| q.max_websockets)
            .unwrap_or(self.config.max_websockets);
        let mut open = self.websockets.lock().expect("websockets lock");
        let n = open.entry(key.clone()).or_default();
        if *n >= max {
            if *n == 0 {
                open.remove(key);
            }
            return Err(TooManyWebSockets { max });
        }
        *n += 1;
        Ok(WebSocketSlot(Some((self.websockets.clone(), key.clone()))))
    }

    /// WebSockets open now by `key` (for tests and metrics).
    pub fn websockets_open(&self, key: &ClientKey) -> usize {
        let open = self.websockets.lock().expect("websockets lock");
        open.get(key).copied().unwrap_or(0)
    }
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas::new(QuotaConfig::default())
    }
}

/// One open WebSocket's place in its client's count.
pub struct WebSocketSlot(Option<(OpenWebSockets, ClientKey)>);

impl Drop for WebSocketSlot {
    fn drop(&mut self) {
        let Some((table, key)) = self.0.take() else {
            return;
        };
        let mut open = table.lock().expect("websockets lock");
        if let Some(n) = open.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&key);
            }
        }
    }
}

/// One client's bucket: `tokens` at `at`, refilling at `rate`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    rate: Rate,
}

impl Bucket {
    fn level(&self, now: Instant) -> f64 {
        let refilled =
            now.saturating_duration_since(self.at).as_secs_f64() * self.rate.per_second();
        (self.tokens + refilled).min(self.rate.capacity())
    }
}

/// The buckets, at most `max` of them.
struct Buckets {
    map: HashMap<ClientKey, Bucket>,
    max: usize,
}

impl Buckets {
    fn new(max: usize) -> Self {
        Buckets {
            map: HashMap::new(),
            max,
        }
    }

    /// Take one token from `key`'s bucket, or say how long until there is one.
    fn take(&mut self, key: &ClientKey, rate: Rate, now: Instant) -> Result<(), Duration> {
        if !self.map.contains_key(key) && self.map.len() >= self.max {
            self.make_room(now);
        }
        let bucket = self.map.entry(key.clone()).or_insert(Bucket {
            tokens: rate.capacity(),
            at: now,
            rate,
        });
        // The rate in force now (a reloaded token may have changed it).
        bucket.rate = rate;
        let level = bucket.level(now);
        if level >= 1.0 {
            *bucket = Bucket {
                tokens: level - 1.0,
                at: now,
                rate,
            };
            return Ok(());
        }
        let wait = (1.0 - level) / rate.per_second();
        Err(Duration::from_secs(wait.ceil().max(1.0) as u64))
    }

    /// Forget the full buckets; if that leaves the table more than 7/8 full, the least recently
    /// used quarter too.
    fn make_room(&mut self, now: Instant) {
        self.map.retain(|_, b| b.level(now) < b.rate.capacity());
        if self.map.len() * 8 <= self.max * 7 {
            return;
        }
        let mut ages: Vec<Instant> = self.map.values().map(|b| b.at).collect();
        let cut = ages.len() / 4;
        let (_, oldest_kept, _) = ages.select_nth_unstable(cut);
        let oldest_kept = *oldest_kept;
        self.map.retain(|_, b| b.at >= oldest_kept);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

impl From<RateLimited> for ApiError {
    fn from(e: RateLimited) -> Self {
        let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            .field("runs_per_minute")
            .limit(e.rate.per_minute);
        err.retry_after = Some(e.retry_after.as_secs().max(1));
        err
    }
}

impl From<TooManyWebSockets> for ApiError {
    fn from(e: TooManyWebSockets) -> Self {
        let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            .field("websockets")
            .limit(e.max);
        err.retry_after = Some(5);
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const RATE: Rate = Rate {
        per_minute: 60,
        burst: 3,
    };

    fn key(n: u32) -> ClientKey {
        ClientKey::Address(IpAddr::V4(n.into()))
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate_and_says_when_to_come_back() {
        let mut b = Buckets::new(100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.take(&key(1), RATE, t0), Ok(()));
        }
        assert_eq!(b.take(&key(1), RATE, t0), Err(Duration::from_secs(1)));
        assert_eq!(b.take(&key(2), RATE, t0), Ok(()), "another client is apart");
        let later = t0 + Duration::from_millis(1000);
        assert_eq!(b.take(&key(1), RATE, later), Ok(()), "one a second");
        assert!(b.take(&key(1), RATE, later).is_err());
        let slow = Rate {
            per_minute: 6,
            burst: 1,
        };
        assert_eq!(b.take(&key(3), slow, t0), Ok(()));
        assert_eq!(b.take(&key(3), slow, t0), Err(Duration::from_secs(10)));
        // Refilled, never past the burst.
        let much_later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(b.take(&key(1), RATE, much_later), Ok(()));
        }
        assert!(b.take(&key(1), RATE, much_later).is_err());
    }

    #[test]
    fn the_table_stays_bounded_however_many_clients_come() {
        let mut b = Buckets::new(64);
        let t0 = Instant::now();
        // Full buckets are forgotten first, losing nothing.
        for n in 0..64 {
            b.take(&key(n), RATE, t0).unwrap();
        }
        let refilled = t0 + Duration::from_secs(5);
        assert_eq!(b.take(&key(1000), RATE, refilled), Ok(()));
        assert_eq!(b.len(), 1);
        // Drained buckets from many clients at once: the oldest go, the table stays bounded.
        let mut now = refilled;
        for n in 0..10_000 {
            now += Duration::from_micros(10);
            let k = key(2000 + n);
            for _ in 0..3 {
                b.take(&k, RATE, now).unwrap();
            }
            assert!(b.len() <= 64);
        }
        // The most recent clients are still remembered.
        assert!(b.take(&key(2000 + 9_999), RATE, now).is_err());
    }

    #[test]
    fn websockets_are_counted_per_client_and_come_back_when_closed() {
        let quotas = Quotas::new(QuotaConfig {
            max_websockets: 2,
            ..QuotaConfig::default()
        });
        let caller = Caller {
            key: Some(key(1)),
            token: None,
        };
        let a = quotas.open_websocket(&caller).unwrap();
        let _b = quotas.open_websocket(&caller).unwrap();
        assert_eq!(
            quotas.open_websocket(&caller).err(),
            Some(TooManyWebSockets { max: 2 })
        );
        let other = Caller {
            key: Some(key(2)),
            token: None,
        };
        assert!(quotas.open_websocket(&other).is_ok());
        drop(a);
        assert_eq!(quotas.websockets_open(&key(1)), 1);
        assert!(quotas.open_websocket(&caller).is_ok());
        assert!(
            quotas.open_websocket(&Caller::default()).is_ok(),
            "nobody is not counted"
        );
    }
}

//! The run scheduler: at most N runs execute at once, within the host's budget of CPUs and
//! memory; further runs wait, one line per client with the lines served in turn, their position
//! reported; beyond the queue cap a [`Busy`] error says when to retry.
//!
//! Callers hold an `Arc<dyn RunQueue>`. [`LocalQueue`] is the in-process implementation; a
//! Redis Streams-backed queue can implement the same trait later (ARCHITECTURE.md, "Beyond one
//! machine").
//!
//! Waiting for a slot while reporting the position, and giving up on shutdown:
//!
//! ```
//! use onpyrunner_supervisor::scheduler::{Busy, Permit, Request, RunQueue};
//! use tokio_util::sync::CancellationToken;
//!
//! async fn admit(
//!     queue: &dyn RunQueue,
//!     cancel: &CancellationToken,
//!     report: impl Fn(usize),
//! ) -> Result<Option<Permit>, Busy> {
//!     let mut ticket = queue.enqueue(&Request::default())?; // Busy: answer 503 with Retry-After
//!     if ticket.position() > 0 {
//!         report(ticket.position());
//!     }
//!     let mut positions = ticket.positions();
//!     loop {
//!         tokio::select! {
//!             permit = &mut ticket => return Ok(Some(permit)),
//!             Ok(()) = positions.changed() => report(*positions.borrow_and_update()),
//!             // Dropping the ticket leaves the queue; the ones behind move up.
//!             () = cancel.cancelled() => return Ok(None),
//!         }
//!     }
//! }
//! ```
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Shortest `retry_after` a [`Busy`] error suggests, and the one used before any run completed.
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest `retry_after` a [`Busy`] error suggests.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Admission of runs: a bounded number run at once, the rest wait in line by client, the clients
/// taking turns.
///
/// Object safe, so that callers hold `Arc<dyn RunQueue>` whatever the backend. What an
/// implementation promises:
/// - [`enqueue`](RunQueue::enqueue) never blocks: it hands out a [`Ticket`] or refuses with
///   [`Busy`];
/// - one client's tickets are admitted in the order they were enqueued; clients with waiting
///   tickets take turns, so a client's first ticket waits for at most one admission per other
///   waiting client, whatever their backlogs; a newcomer never overtakes a waiting ticket that
///   could be admitted;
/// - dropping a waiting [`Ticket`] leaves the queue (cancel-safe), and dropping a [`Permit`]
///   frees its slot for the next ticket; neither leaks a slot, whatever the timing.
pub trait RunQueue: Send + Sync + fmt::Debug {
    /// Asks for a run slot. Returns at once: a ticket, admitted already (position 0) when a
    /// slot is free and nobody waits, or a place in the queue; or [`Busy`] when the queue is full.
    fn enqueue(&self, request: &Request) -> Result<Ticket, Busy>;
    /// Slots taken now: running permits, and tickets admitted but not yet awaited.
    fn running(&self) -> usize;
    /// Tickets waiting for a slot.
    fn queued(&self) -> usize;
}

/// The queue is full: the request is refused and should be retried after `retry_after`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "server busy: {queued} runs queued (limit {max_queued}); retry after {secs} s",
    secs = whole_seconds_up(.retry_after)
)]
pub struct Busy {
    /// Runs waiting when the request was refused.
    pub queued: usize,
    /// The queue cap.
    pub max_queued: usize,
    /// When a retry has a fair chance, within [`MIN_RETRY_AFTER`] and [`MAX_RETRY_AFTER`].
    pub retry_after: Duration,
}

impl Busy {
    /// `retry_after` in whole seconds, rounded up, as an HTTP `Retry-After` header wants it.
    pub fn retry_after_secs(&self) -> u64 {
        whole_seconds_up(&self.retry_after)
    }
}

fn whole_seconds_up(duration: &Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    }
}

/// A place in a [`RunQueue`]. Await it to get the [`Permit`]; drop it to leave the queue.
///
/// Position 0 means admitted (awaiting returns at once); 1 means next to be admitted.
#[must_use = "a ticket leaves the queue when dropped"]
pub struct Ticket {
    position: watch::Receiver<usize>,
    admission: Pin<Box<dyn Future<Output = Permit> + Send>>,
}

impl Ticket {
    /// A ticket admitted at once, holding `permit`. Its position is 0 and never changes.
    pub fn admitted(permit: Permit) -> Self {
        let (_, position) = watch::channel(0);
        Ticket {
            position,
            admission: Box::pin(std::future::ready(permit)),
        }
    }

    /// A ticket that waits. For implementors of [`RunQueue`]: `position` carries the 1-based
    /// place in the queue and goes to 0 on admission; `admission` resolves to the permit and,
    /// when dropped before that, must take the ticket out of the queue without leaking a slot.
    pub fn waiting(
        position: watch::Receiver<usize>,
        admission: impl Future<Output = Permit> + Send + 'static,
    ) -> Self {
        Ticket {
            position,
            admission: Box::pin(admission),
        }
    }

    /// The place in the queue now: 1 is next, 0 is admitted.
    pub fn position(&self) -> usize {
        *self.position.borrow()
    }

    /// A receiver whose `changed()` fires when the position changes from now on. Successive
    /// moves may be seen as one (a watch channel keeps the latest value); `changed()` fails
    /// once no further change can come.
    pub fn positions(&self) -> watch::Receiver<usize> {
        let mut positions = self.position.clone();
        positions.mark_unchanged();
        positions
    }
}

impl Future for Ticket {
    type Output = Permit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        self.admission.as_mut().poll(cx)
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("position", &self.position())
            .finish_non_exhaustive()
    }
}

/// The right to run. Dropping it frees the slot and admits the next ticket in line.
#[must_use = "dropping a permit frees its slot at once"]
pub struct Permit {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Permit {
    /// For implementors of [`RunQueue`]: a permit that calls `release` once, when dropped.
    /// `release` runs inside `drop`, so it must not block.
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Permit {
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

/// The default number of runs at once: the CPUs this process may use (at least 1).
pub fn default_max_running() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// What a run asks of the queue: whose it is, how many of that client's runs may execute at
/// once, and what it takes from the host's budget while it runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// Runs of one client wait in one line, and the lines take turns: nobody waits behind
    /// another client's backlog. The empty name is the machine's own user.
    pub client: String,
    /// Runs of this client executing at once; `None` is no cap beyond the queue's slots.
    pub max_running: Option<usize>,
    pub cost: Cost,
}

impl Request {
    /// A request from `client` costing `cost`.
    pub fn new(client: impl Into<String>, cost: Cost) -> Self {
        Request {
            client: client.into(),
            max_running: None,
            cost,
        }
    }
}

/// What a run takes from the host while it runs: its CPU quota and memory limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub millicpus: u64,
    pub memory_mib: u64,
}

impl Cost {
    fn fits(self, used: Cost, budget: Cost) -> bool {
        used.millicpus.saturating_add(self.millicpus) <= budget.millicpus
            && used.memory_mib.saturating_add(self.memory_mib) <= budget.memory_mib
    }

    /// At most `budget` on each count: a run bigger than the host still runs, alone.
    fn within(self, budget: Cost) -> Cost {
        Cost {
            millicpus: self.millicpus.min(budget.millicpus),
            memory_mib: self.memory_mib.min(budget.memory_mib),
        }
    }

    fn add(&mut self, other: Cost) {
        self.millicpus = self.millicpus.saturating_add(other.millicpus);
        self.memory_mib = self.memory_mib.saturating_add(other.memory_mib);
    }

    fn sub(&mut self, other: Cost) {
        self.millicpus = self.millicpus.saturating_sub(other.millicpus);
        self.memory_mib = self.memory_mib.saturating_sub(other.memory_mib);
    }

    /// What a run with `limits` takes.
    pub fn of(limits: &crate::limits::Limits) -> Cost {
        Cost {
            millicpus: Self::of_cpus(limits.cpus),
            memory_mib: limits.memory_mib,
        }
    }

    /// `cpus` in thousandths, rounded up.
    pub fn of_cpus(cpus: f64) -> u64 {
        // A float-to-int cast saturates, and negative quotas are refused before they get here.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let millicpus = (cpus * 1000.0).ceil() as u64;
        millicpus
    }

    /// No budget: only the count of slots limits admission.
    pub const UNLIMITED: Cost = Cost {
        millicpus: u64::MAX,
        memory_mib: u64::MAX,
    };

    /// The machine's: the CPUs this process may use, and three quarters of its memory (the
    /// rest is the daemon's, the pools' idle containers' and ours).
    pub fn machine() -> Cost {
        Cost {
            millicpus: default_max_running() as u64 * 1000,
            memory_mib: total_memory_mib().map_or(u64::MAX, |total| total / 4 * 3),
        }
    }
}

/// The pools' memory budget by default: a quarter of the machine's memory (the running runs'
/// budget, [`Cost::machine`], is the other three quarters).
pub fn default_pool_memory_mib() -> u64 {
    total_memory_mib().map_or(4096, |total| total / 4)
}

/// MemTotal from /proc/meminfo, in MiB.
fn total_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The in-process [`RunQueue`]: one line of waiters per client, each waiter woken by a
/// oneshot; admission needs a free slot, room under the client's own cap and room in the host's
/// budget.
///
/// Who goes next: of the clients with waiters, the one least recently served (a client with
/// nothing running goes first; one just served goes last), skipping clients at their own running
/// cap (they wait for their own runs, not for others). When the one whose turn it is does not
/// fit the budget, nobody overtakes it, so a big run is never starved by small ones.
///
/// Cloning gives another handle to the same queue.
#[derive(Clone)]
pub struct LocalQueue {
    shared: Arc<Shared>,
}

struct Shared {
    max_running: usize,
    max_queued: usize,
    budget: Cost,
    /// A std mutex: it is never held across an await, and every critical section is short.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Slots taken, including slots handed to a waiter that has not taken its permit yet.
    running: usize,
    /// The budget taken by those slots.
    used: Cost,
    /// Slots taken per client (absent: none).
    running_by_client: HashMap<String, usize>,
    /// Each client's waiters, oldest first; a client is here only while it has waiters.
    lines: HashMap<String, VecDeque<Waiter>>,
    /// Clients with waiters, in turn order: the front goes next. Sorted by `served`, least
    /// recently served first, so a client that was just served goes to the back and a client
    /// with nothing running goes to the front.
    turns: VecDeque<String>,
    /// When each client with runs waiting or running was last admitted (a count of
    /// admissions); forgotten once it has neither.
    served: HashMap<String, u64>,
    admissions: u64,
    queued: usize,
    /// Requests of waiters admitted whose tickets have not taken their permits yet.
    admitted: HashMap<u64, Request>,
    next_id: u64,
    durations: RunDurations,
}

struct Waiter {
    id: u64,
    request: Request,
    /// The 1-based place in the order of admission, then 0 on admission.
    position: watch::Sender<usize>,
    admit: oneshot::Sender<()>,
}

impl LocalQueue {
    /// A queue running at most `max_running` runs at once, with at most `max_queued` waiting,
    /// and no budget beyond that count.
    ///
    /// # Panics
    /// If `max_running` is 0: nothing could ever run.
    pub fn new(max_running: usize, max_queued: usize) -> Self {
        Self::with_budget(max_running, max_queued, Cost::UNLIMITED)
    }

    /// [`new`](Self::new), admitting runs only while their costs together fit in `budget`.
    pub fn with_budget(max_running: usize, max_queued: usize, budget: Cost) -> Self {
        assert!(max_running > 0, "LocalQueue needs max_running > 0");
        LocalQueue {
            shared: Arc::new(Shared {
                max_running,
                max_queued,
                budget,
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub fn max_running(&self) -> usize {
        self.shared.max_running
    }

    pub fn max_queued(&self) -> usize {
        self.shared.max_queued
    }
}

impl RunQueue for LocalQueue {
    fn enqueue(&self, request: &Request) -> Result<Ticket, Busy> {
        let shared = &self.shared;
        let mut request = request.clone();
        request.cost = request.cost.within(shared.budget);
        let mut state = shared.lock();
        let id = state.next_id;
        state.next_id += 1;
        let (position_tx, position_rx) = watch::channel(usize::MAX);
        let (admit_tx, admit_rx) = oneshot::channel();
        let queued_before = state.queued;
        state.push(Waiter {
            id,
            request,
            position: position_tx,
            admit: admit_tx,
        });
        shared.admit_all(&mut state);
        // Admitted at once, or a place in line if there is room for one more.
        let admitted = position_rx.borrow().eq(&0);
        if !admitted {
            // A new client's first run goes in the next round of turns, ahead of the second
            // runs of others: their places may grow by one.
            state.renumber();
        }
        if !admitted && queued_before >= shared.max_queued {
            state.remove(id);
            state.renumber();
            let retry_after = state
                .durations
                .retry_after(queued_before, shared.max_running);
            drop(state);
            tracing::debug!(
                queued = queued_before,
                max_queued = shared.max_queued,
                ?retry_after,
                "run refused: queue full"
            );
            return Err(Busy {
                queued: queued_before,
                max_queued: shared.max_queued,
                retry_after,
            });
        }
        drop(state);

        let guard = WaitGuard {
            shared: Arc::clone(shared),
            id,
            taken: false,
        };
        let admission = async move {
            // The sender goes away only after its waiter was popped, and popping is what hands
            // the slot over: an error here means admitted too.
            let _ = admit_rx.await;
            guard.into_permit()
        };
        Ok(Ticket::waiting(position_rx, admission))
    }

    fn running(&self) -> usize {
        self.shared.lock().running
    }

    fn queued(&self) -> usize {
        self.shared.lock().queued
    }
}

impl fmt::Debug for LocalQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("LocalQueue")
            .field("max_running", &self.shared.max_running)
            .field("max_queued", &self.shared.max_queued)
            .field("budget", &self.shared.budget)
            .field("running", &state.running)
            .field("queued", &state.queued)
            .field("clients waiting", &state.turns.len())
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under the lock, but if some did, the counters would still
        // be consistent: carry on rather than spread the panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit for a slot already taken by `request` in `running`.
    fn permit(self: &Arc<Self>, request: Request) -> Permit {
        let shared = Arc::clone(self);
        let started = Instant::now();
        Permit::new(move || {
            let mut state = shared.lock();
            state.release(&request, Some(started.elapsed()));
            shared.admit_all(&mut state);
        })
    }

    /// Admits waiters, in turn, while the next one fits; then renumbers those left.
    fn admit_all(&self, state: &mut State) {
        let mut admitted = false;
        while state.running < self.max_running {
            let Some(turn) = state.next_turn() else { break };
            let client = state.turns[turn].clone();
            let line = state.lines.get_mut(&client).expect("a turn has a line");
            let head = line.front().expect("a line is never empty");
            if !head.request.cost.fits(state.used, self.budget) {
                break;
            }
            let waiter = line.pop_front().expect("checked");
            let emptied = line.is_empty();
            state.turns.remove(turn);
            state.admissions += 1;
            let admissions = state.admissions;
            state.served.insert(client.clone(), admissions);
            if emptied {
                state.lines.remove(&client);
            } else {
                // The most recently served: last in turn.
                state.turns.push_back(client);
            }
            state.queued -= 1;
            state.take(&waiter.request);
            state.admitted.insert(waiter.id, waiter.request);
            waiter.position.send_replace(0);
            // A waiter whose ticket is being dropped right now finds itself out of line in its
            // `WaitGuard` and gives the slot back.
            let _ = waiter.admit.send(());
            admitted = true;
        }
        if admitted {
            state.renumber();
        }
    }
}

impl State {
    fn push(&mut self, waiter: Waiter) {
        let client = waiter.request.client.clone();
        if !self.lines.contains_key(&client) {
            let key = |c: &String| self.served.get(c).copied().unwrap_or(0);
            let mine = key(&client);
            let at = self.turns.iter().position(|c| key(c) > mine);
            self.turns
                .insert(at.unwrap_or(self.turns.len()), client.clone());
        }
        self.lines.entry(client).or_default().push_back(waiter);
        self.queued += 1;
    }

    /// Takes waiter `id` out of its line, if it is still waiting.
    fn remove(&mut self, id: u64) -> bool {
        let Some((client, index)) = self.lines.iter().find_map(|(client, line)| {
            line.iter()
                .position(|w| w.id == id)
                .map(|index| (client.clone(), index))
        }) else {
            return false;
        };
        let line = self.lines.get_mut(&client).expect("found");
        line.remove(index);
        if line.is_empty() {
            self.lines.remove(&client);
            self.turns.retain(|c| *c != client);
            self.forget_if_idle(&client);
        }
        self.queued -= 1;
        true
    }

    /// A client with nothing waiting or running is no longer remembered as served.
    fn forget_if_idle(&mut self, client: &str) {
        if !self.lines.contains_key(client) && !self.running_by_client.contains_key(client) {
            self.served.remove(client);
        }
    }

    /// The index in `turns` of the first client not at its own running cap.
    fn next_turn(&self) -> Option<usize> {
        self.turns.iter().position(|client| {
            let line = &self.lines[client];
            let cap = line.front().and_then(|w| w.request.max_running);
            let running = self.running_by_client.get(client).copied().unwrap_or(0);
            cap.is_none_or(|cap| running < cap)
        })
    }

    fn take(&mut self, request: &Request) {
        self.running += 1;
        self.used.add(request.cost);
        *self
            .running_by_client
            .entry(request.client.clone())
            .or_default() += 1;
    }

    /// Gives back the slot `request` took. `ran_for` is the run's duration, when a run happened.
    fn release(&mut self, request: &Request, ran_for: Option<Duration>) {
        if let Some(duration) = ran_for {
            self.durations.record(duration);
        }
        debug_assert!(self.running > 0, "released a slot that was not taken");
        self.running = self.running.saturating_sub(1);
        self.used.sub(request.cost);
        if let Some(n) = self.running_by_client.get_mut(&request.client) {
            *n -= 1;
            if *n == 0 {
                self.running_by_client.remove(&request.client);
                self.forget_if_idle(&request.client);
            }
        }
    }

    /// Tells every waiter its place in the order of admission if every line moves in turn:
    /// round by round, each client in turn order admits its next waiter.
    fn renumber(&self) {
        let mut next = 1;
        let mut round = 0;
        loop {
            let mut any = false;
            for client in &self.turns {
                if let Some(waiter) = self.lines[client].get(round) {
                    waiter.position.send_if_modified(|p| {
                        let changed = *p != next;
                        *p = next;
                        changed
                    });
                    next += 1;
                    any = true;
                }
            }
            if !any {
                break;
            }
            round += 1;
        }
    }
}

/// Owned by a waiting ticket's admission future. Its drop decides, under the queue lock, whether
/// the ticket is still waiting (leave the queue) or was admitted without taking its permit
/// (give the slot back). Deciding under the same lock that admission takes closes the race
/// between cancelling and being admitted.
struct WaitGuard {
    shared: Arc<Shared>,
    id: u64,
    /// Set when the permit was taken: the permit gives the slot back from then on.
    taken: bool,
}

impl WaitGuard {
    fn into_permit(mut self) -> Permit {
        self.taken = true;
        let request = self.shared.lock().admitted.remove(&self.id);
        self.shared
            .permit(request.expect("an admitted waiter's request is kept"))
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut state = self.shared.lock();
        if state.remove(self.id) {
            // It may have been what held the others back (first in turn, not fitting).
            state.renumber();
        } else if let Some(request) = state.admitted.remove(&self.id) {
            state.release(&request, None);
        }
        self.shared.admit_all(&mut state);
    }
}

/// A moving average of recent run durations, to tell refused requests when to come back.
#[derive(Debug, Default, Clone, Copy)]
struct RunDurations {
    /// Exponentially weighted, in seconds; `None` until a run completed.
    average_secs: Option<f64>,
}

impl RunDurations {
    /// Weight of the newest run: the average mostly reflects the last 10 or so.
    const WEIGHT: f64 = 1.0 / 8.0;

    fn record(&mut self, duration: Duration) {
        let secs = duration.as_secs_f64();
        self.average_secs = Some(match self.average_secs {
            None => secs,
            Some(average) => average + (secs - average) * Self::WEIGHT,
        });
    }

    /// About when the last of `queued` waiters plus one more would start, with `max_running`
    /// runs at once, clamped to [`MIN_RETRY_AFTER`], [`MAX_RETRY_AFTER`].
    fn retry_after(&self, queued: usize, max_running: usize) -> Duration {
        let Some(average) = self.average_secs else {
            return MIN_RETRY_AFTER;
        };
        let secs = average * (queued as f64 + 1.0) / max_running.max(1) as f64;
        Duration::try_from_secs_f64(secs).map_or(MAX_RETRY_AFTER, |wait| {
            wait.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const TEST_TIMEOUT: Duration = Duration::from_secs(20);

    /// Fails the test instead of hanging it.
    async fn within<T>(body: impl Future<Output = T>) -> T {
        tokio::time::timeout(TEST_TIMEOUT, body)
            .await
            .expect("test timed out: a ticket was never admitted or a slot leaked")
    }

    fn admitted_at_once(queue: &dyn RunQueue) -> Permit {
        let ticket = queue.enqueue(&Request::default()).expect("a free slot");
        assert_eq!(ticket.position(), 0);
        ticket.now_or_never().expect("admitted at once")
    }

    fn assert_waiting(ticket: &mut Ticket, position: usize) {
        assert_eq!(ticket.position(), position);
        assert!(
            ticket.now_or_never().is_none(),
            "ticket at {position} was admitted"
        );
    }

    /// A small deterministic generator: the tests need varied timings, not good randomness.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    fn spin(iterations: u64) {
        for _ in 0..iterations {
            std::hint::spin_loop();
        }
    }

    #[tokio::test]
    async fn admits_up_to_max_running_at_once_then_queues_with_positions() {
        within(async {
            let queue = LocalQueue::new(2, 8);
            let _p1 = admitted_at_once(&queue);
            let _p2 = admitted_at_once(&queue);
            let mut t3 = queue.enqueue(&Request::default()).unwrap();
            let mut t4 = queue.enqueue(&Request::default()).unwrap();
            assert_waiting(&mut t3, 1);
            assert_waiting(&mut t4, 2);
            assert_eq!((queue.running(), queue.queued()), (2, 2));
        })
        .await;
    }

    #[tokio::test]
    async fn admits_in_fifo_order_and_positions_move_up_as_permits_drop() {
        within(async {
            let queue = LocalQueue::new(1, 8);
            let p0 = admitted_at_once(&queue);
            let mut t1 = queue.enqueue(&Request::default()).unwrap();
            let mut t2 = queue.enqueue(&Request::default()).unwrap();
            let mut t3 = queue.enqueue(&Request::default()).unwrap();
            let mut watcher = t3.positions();
            assert_eq!(*watcher.borrow(), 3);

            drop(p0);
            let p1 = (&mut t1).await;
            assert_waiting(&mut t2, 1);
            assert_waiting(&mut t3, 2);
            watcher.changed().await.unwrap();
            assert_eq!(*watcher.borrow_and_update(), 2);

            drop(p1);
            let p2 = (&mut t2).await;
            assert_waiting(&mut t3, 1);
            watcher.changed().await.unwrap();
            assert_eq!(*watcher.borrow_and_update(), 1);

            drop(p2);
            let _p3 = (&mut t3).await;
            watcher.changed().await.unwrap();
            assert_eq!(*watcher.borrow_and_update(), 0);
            assert_eq!((queue.running(), queue.queued()), (1, 0));
        })
        .await;
    }

    #[test]
    fn tickets_and_permits_can_move_between_tasks() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<Ticket>();
        send_sync::<Permit>();
        send_sync::<Arc<dyn RunQueue>>();
    }

    #[tokio::test]
    async fn admitted_ticket_reports_no_position_changes() {
        within(async {
            let queue = LocalQueue::new(1, 8);
            let ticket = queue.enqueue(&Request::default()).unwrap();
            let mut positions = ticket.positions();
            assert_eq!(ticket.position(), 0);
            assert!(positions.changed().await.is_err());
        })
        .await;
    }

    #[tokio::test]
    async fn newcomer_does_not_overtake_a_waiter_when_a_slot_frees() {
        within(async {
            let queue = LocalQueue::new(1, 8);
            let p0 = admitted_at_once(&queue);
            let t1 = queue.enqueue(&Request::default()).unwrap();
            drop(p0);
            // The freed slot went to t1 even though t1 has not been polled yet.
            assert_eq!(t1.position(), 0);
            let mut t2 = queue.enqueue(&Request::default()).unwrap();
            assert_waiting(&mut t2, 1);
            let p1 = t1.await;
            drop(p1);
            let _p2 = t2.await;
        })
        .await;
    }

    #[tokio::test]
    async fn dropped_ticket_leaves_the_queue_and_those_behind_move_up() {
        within(async {
            let queue = LocalQueue::new(2, 8);
            let p1 = admitted_at_once(&queue);
            let p2 = admitted_at_once(&queue);
            let mut t3 = queue.enqueue(&Request::default()).unwrap();
            let t4 = queue.enqueue(&Request::default()).unwrap();
            let mut t5 = queue.enqueue(&Request::default()).unwrap();
            let mut watcher = t5.positions();

            drop(t4);
            assert_eq!(queue.queued(), 2);
            assert_waiting(&mut t3, 1);
            assert_waiting(&mut t5, 2);
            watcher.changed().await.unwrap();
            assert_eq!(*watcher.borrow_and_update(), 2);

            drop(t3);
            assert_waiting(&mut t5, 1);
            drop(p1);
            let p5 = t5.await;
            assert_eq!((queue.running(), queue.queued()), (2, 0));

            drop((p2, p5));
            assert_eq!((queue.running(), queue.queued()), (0, 0));
            let _fresh: Vec<Permit> = (0..2).map(|_| admitted_at_once(&queue)).collect();
        })
        .await;
    }

    #[tokio::test]
    async fn admitted_ticket_dropped_before_taking_its_permit_frees_the_slot() {
        within(async {
            let queue = LocalQueue::new(1, 8);
            let p0 = admitted_at_once(&queue);
            let t1 = queue.enqueue(&Request::default()).unwrap();
            let mut t2 = queue.enqueue(&Request::default()).unwrap();
            drop(p0);
            assert_eq!(t1.position(), 0);
            drop(t1);
            // t1's slot went on to t2.
            let p2 = (&mut t2).await;
            drop(p2);
            assert_eq!((queue.running(), queue.queued()), (0, 0));
            let _fresh = admitted_at_once(&queue);
        })
        .await;
    }

    #[tokio::test]
    async fn refuses_with_busy_naming_the_limit_when_the_queue_is_full() {
        within(async {
            let queue = LocalQueue::new(1, 2);
            let p0 = admitted_at_once(&queue);
            let _t1 = queue.enqueue(&Request::default()).unwrap();
            let _t2 = queue.enqueue(&Request::default()).unwrap();

            let busy = queue.enqueue(&Request::default()).unwrap_err();
            assert_eq!((busy.queued, busy.max_queued), (2, 2));
            assert!((MIN_RETRY_AFTER..=MAX_RETRY_AFTER).contains(&busy.retry_after));
            assert_eq!(busy.retry_after_secs(), 1);
            assert_eq!(
                busy.to_string(),
                "server busy: 2 runs queued (limit 2); retry after 1 s"
            );
            assert_eq!(queue.queued(), 2, "a refused request takes no place");

            drop(p0);
            let _t3 = queue
                .enqueue(&Request::default())
                .expect("room again once the queue moved");
        })
        .await;
    }

    #[tokio::test]
    async fn zero_queue_cap_refuses_as_soon_as_every_slot_is_taken() {
        within(async {
            let queue = LocalQueue::new(1, 0);
            let p0 = admitted_at_once(&queue);
            let busy = queue.enqueue(&Request::default()).unwrap_err();
            assert_eq!((busy.queued, busy.max_queued), (0, 0));
            drop(p0);
            let _p1 = admitted_at_once(&queue);
        })
        .await;
    }

    #[test]
    fn retry_after_scales_the_average_run_by_queue_length_over_slots() {
        let mut durations = RunDurations::default();
        assert_eq!(durations.retry_after(10, 2), MIN_RETRY_AFTER, "no run yet");

        durations.record(Duration::from_secs(10));
        assert_eq!(durations.retry_after(3, 2), Duration::from_secs(20));
        assert_eq!(durations.retry_after(100, 1), MAX_RETRY_AFTER);

        // A moving average: one short run pulls it down by an eighth of the difference.
        durations.record(Duration::from_secs(2));
        assert_eq!(durations.retry_after(0, 1), Duration::from_secs(9));

        let mut quick = RunDurations::default();
        quick.record(Duration::from_millis(20));
        assert_eq!(quick.retry_after(5, 2), MIN_RETRY_AFTER);
    }

    #[test]
    fn busy_rounds_retry_after_up_to_whole_seconds() {
        let busy = Busy {
            queued: 32,
            max_queued: 32,
            retry_after: Duration::from_millis(2_100),
        };
        assert_eq!(busy.retry_after_secs(), 3);
        assert_eq!(
            busy.to_string(),
            "server busy: 32 runs queued (limit 32); retry after 3 s"
        );
    }

    fn client(name: &str) -> Request {
        Request::new(name, Cost::default())
    }

    fn cpus(name: &str, millicpus: u64) -> Request {
        Request::new(
            name,
            Cost {
                millicpus,
                memory_mib: 0,
            },
        )
    }

    #[tokio::test]
    async fn clients_take_turns_so_a_backlog_holds_back_nobody_else() {
        within(async {
            let queue = LocalQueue::new(1, 1000);
            let running = queue.enqueue(&client("flood")).unwrap().now_or_never();
            let running = running.expect("the first run takes the slot");
            let mut flood: Vec<Ticket> = (0..500)
                .map(|_| queue.enqueue(&client("flood")).unwrap())
                .collect();
            let mut other = queue.enqueue(&client("other")).unwrap();
            // The flood was served last: the other client is next, not behind 500 runs.
            assert_waiting(&mut other, 1);
            assert_waiting(&mut flood[0], 2);
            assert_waiting(&mut flood[499], 501);

            drop(running);
            let p1 = (&mut other).await;
            assert_waiting(&mut flood[0], 1);
            let mut again = queue.enqueue(&client("other")).unwrap();
            // Now the other client was served last: the flood's next run goes first.
            assert_waiting(&mut again, 2);
            drop(p1);
            let _p2 = (&mut flood[0]).await;
            assert_waiting(&mut again, 1);
        })
        .await;
    }

    #[tokio::test]
    async fn positions_interleave_the_lines_in_turn_order() {
        within(async {
            let queue = LocalQueue::new(1, 8);
            let _p0 = admitted_at_once(&queue);
            let mut a: Vec<Ticket> = (0..3)
                .map(|_| queue.enqueue(&client("a")).unwrap())
                .collect();
            let mut b: Vec<Ticket> = (0..2)
                .map(|_| queue.enqueue(&client("b")).unwrap())
                .collect();
            for (ticket, position) in a.iter_mut().zip([1, 3, 5]) {
                assert_waiting(ticket, position);
            }
            for (ticket, position) in b.iter_mut().zip([2, 4]) {
                assert_waiting(ticket, position);
            }
            // b leaving moves a's last run up.
            b.clear();
            assert_waiting(&mut a[2], 3);
        })
        .await;
    }

    #[tokio::test]
    async fn a_client_at_its_own_running_cap_waits_while_others_go_ahead() {
        within(async {
            let queue = LocalQueue::new(3, 8);
            let capped = Request {
                max_running: Some(1),
                ..client("capped")
            };
            let _c1 = queue
                .enqueue(&capped)
                .unwrap()
                .now_or_never()
                .expect("first runs");
            let mut c2 = queue.enqueue(&capped).unwrap();
            assert_waiting(&mut c2, 1);
            let _o1 = queue
                .enqueue(&client("other"))
                .unwrap()
                .now_or_never()
                .expect("a free slot is not held for the capped client");
            assert_eq!((queue.running(), queue.queued()), (2, 1));
            drop(_c1);
            let _c2 = c2.await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_run_that_does_not_fit_the_budget_waits_and_is_not_overtaken() {
        within(async {
            let budget = Cost {
                millicpus: 2000,
                memory_mib: u64::MAX,
            };
            let queue = LocalQueue::with_budget(4, 8, budget);
            let small = queue
                .enqueue(&cpus("a", 1000))
                .unwrap()
                .now_or_never()
                .expect("fits");
            let mut big = queue.enqueue(&cpus("b", 2000)).unwrap();
            assert_waiting(&mut big, 1);
            // Room for a 1-CPU run, but the big one is first in turn.
            let mut late = queue.enqueue(&cpus("c", 1000)).unwrap();
            assert_waiting(&mut late, 2);

            drop(small);
            let big = big.await;
            assert_waiting(&mut late, 1);
            drop(big);
            let _late = late.await;
        })
        .await;
    }

    #[tokio::test]
    async fn cancelling_the_run_that_did_not_fit_lets_the_next_in() {
        within(async {
            let budget = Cost {
                millicpus: 2000,
                memory_mib: u64::MAX,
            };
            let queue = LocalQueue::with_budget(4, 8, budget);
            let _small = queue
                .enqueue(&cpus("a", 1000))
                .unwrap()
                .now_or_never()
                .expect("fits");
            let big = queue.enqueue(&cpus("b", 2000)).unwrap();
            let late = queue.enqueue(&cpus("c", 1000)).unwrap();
            drop(big);
            assert_eq!(late.position(), 0, "admitted once the big run left");
            let _late = late.await;
        })
        .await;
    }

    #[tokio::test]
    async fn memory_counts_against_the_budget_too() {
        within(async {
            let budget = Cost {
                millicpus: u64::MAX,
                memory_mib: 1024,
            };
            let queue = LocalQueue::with_budget(4, 8, budget);
            let half = Request::new(
                "a",
                Cost {
                    millicpus: 0,
                    memory_mib: 512,
                },
            );
            let _p1 = queue.enqueue(&half).unwrap().now_or_never().expect("fits");
            let _p2 = queue.enqueue(&half).unwrap().now_or_never().expect("fits");
            let mut third = queue.enqueue(&half).unwrap();
            assert_waiting(&mut third, 1);
        })
        .await;
    }

    #[tokio::test]
    async fn a_run_bigger_than_the_whole_budget_runs_alone() {
        within(async {
            let budget = Cost {
                millicpus: 1000,
                memory_mib: u64::MAX,
            };
            let queue = LocalQueue::with_budget(4, 8, budget);
            let huge = queue.enqueue(&cpus("a", 4000)).unwrap().now_or_never();
            let huge = huge.expect("admitted, as if it took the whole budget");
            let mut next = queue.enqueue(&cpus("b", 100)).unwrap();
            assert_waiting(&mut next, 1);
            drop(huge);
            let _next = next.await;
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn cancelling_tickets_while_permits_are_released_leaks_no_slot() {
        within(async {
            const SLOTS: usize = 2;
            let queue: Arc<dyn RunQueue> = Arc::new(LocalQueue::new(SLOTS, 8));
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
            for round in 0..1000 {
                let permits: Vec<Permit> = (0..SLOTS).map(|_| admitted_at_once(&*queue)).collect();
                let waiting = 1 + rng.below(6);
                // Waiters of three clients, so that the lines and turns are exercised too.
                let tickets: Vec<Ticket> = (0..waiting)
                    .map(|_| {
                        queue
                            .enqueue(&client(&format!("c{}", rng.below(3))))
                            .unwrap()
                    })
                    .collect();
                let barrier = Arc::new(tokio::sync::Barrier::new(2));

                let release_spins: Vec<u64> = permits.iter().map(|_| rng.below(300)).collect();
                let releaser = tokio::spawn({
                    let barrier = Arc::clone(&barrier);
                    async move {
                        barrier.wait().await;
                        for (permit, spins) in permits.into_iter().zip(release_spins) {
                            spin(spins);
                            drop(permit);
                        }
                    }
                });

                // 0: drop at once, 1: poll once then drop, 2: wait for admission.
                let fates: Vec<(u64, u64)> = tickets
                    .iter()
                    .map(|_| (rng.below(3), rng.below(300)))
                    .collect();
                let canceller = tokio::spawn({
                    let barrier = Arc::clone(&barrier);
                    async move {
                        barrier.wait().await;
                        let mut admitted = Vec::new();
                        for (mut ticket, (fate, spins)) in tickets.into_iter().zip(fates) {
                            spin(spins);
                            match fate {
                                0 => drop(ticket),
                                1 => drop(futures_util::poll!(&mut ticket)),
                                // Each drops its permit when admitted: in turns, a later
                                // ticket may be admitted before an earlier one.
                                _ => admitted.push(tokio::spawn(async move { drop(ticket.await) })),
                            }
                        }
                        for waiter in admitted {
                            waiter.await.unwrap();
                        }
                    }
                });
                releaser.await.unwrap();
                canceller.await.unwrap();
                assert_eq!(
                    (queue.running(), queue.queued()),
                    (0, 0),
                    "slot leaked in round {round}"
                );
            }
            let _fresh: Vec<Permit> = (0..SLOTS).map(|_| admitted_at_once(&*queue)).collect();
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_slot_runs_one_at_a_time_under_load() {
        within(async {
            let queue: Arc<dyn RunQueue> = Arc::new(LocalQueue::new(1, 64));
            let running = Arc::new(AtomicUsize::new(0));
            let completed = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..50)
                .map(|_| {
                    let queue = Arc::clone(&queue);
                    let running = Arc::clone(&running);
                    let completed = Arc::clone(&completed);
                    tokio::spawn(async move {
                        let permit = queue.enqueue(&Request::default()).unwrap().await;
                        assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "two at once");
                        tokio::task::yield_now().await;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        completed.fetch_add(1, Ordering::SeqCst);
                        drop(permit);
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(completed.load(Ordering::SeqCst), 50);
            assert_eq!((queue.running(), queue.queued()), (0, 0));
        })
        .await;
    }
}

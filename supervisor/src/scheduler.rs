//! The run scheduler: at most N runs execute at once, further runs wait in a FIFO queue with
//! their position reported, and beyond the queue cap a [`Busy`] error says when to retry.
//!
//! Callers hold an `Arc<dyn RunQueue>`. [`LocalQueue`] is the in-process implementation; a
//! Redis Streams-backed queue can implement the same trait later (ARCHITECTURE.md, "Beyond one
//! machine").
//!
//! Waiting for a slot while reporting the position, and giving up on shutdown:
//!
//! ```
//! use onpyrunner_supervisor::scheduler::{Busy, Permit, RunQueue};
//! use tokio_util::sync::CancellationToken;
//!
//! async fn admit(
//!     queue: &dyn RunQueue,
//!     cancel: &CancellationToken,
//!     report: impl Fn(usize),
//! ) -> Result<Option<Permit>, Busy> {
//!     let mut ticket = queue.enqueue()?; // Busy: answer 503 with Retry-After
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
use std::collections::VecDeque;
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

/// Admission of runs: a bounded number run at once, the rest wait in FIFO order.
///
/// Object safe, so that callers hold `Arc<dyn RunQueue>` whatever the backend. What an
/// implementation promises:
/// - [`enqueue`](RunQueue::enqueue) never blocks: it hands out a [`Ticket`] or refuses with
///   [`Busy`];
/// - tickets are admitted in the order they were enqueued, and a new ticket never overtakes a
///   waiting one;
/// - dropping a waiting [`Ticket`] leaves the queue (cancel-safe), and dropping a [`Permit`]
///   frees its slot for the next ticket; neither leaks a slot, whatever the timing.
pub trait RunQueue: Send + Sync + fmt::Debug {
    /// Asks for a run slot. Returns at once: a ticket, admitted already (position 0) when a
    /// slot is free and nobody waits, or a place in the queue; or [`Busy`] when the queue is full.
    fn enqueue(&self) -> Result<Ticket, Busy>;
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

/// The in-process [`RunQueue`]: a mutex-protected FIFO of waiters, each woken by a oneshot.
///
/// Cloning gives another handle to the same queue.
#[derive(Clone)]
pub struct LocalQueue {
    shared: Arc<Shared>,
}

struct Shared {
    max_running: usize,
    max_queued: usize,
    /// A std mutex: it is never held across an await, and every critical section is short.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Slots taken, including slots handed to a waiter that has not taken its permit yet.
    /// Invariant: `waiters` is non-empty only while `running == max_running`, because a freed
    /// slot goes straight to the first waiter; so a newcomer can never overtake a waiter.
    running: usize,
    waiters: VecDeque<Waiter>,
    next_id: u64,
    durations: RunDurations,
}

struct Waiter {
    id: u64,
    /// The 1-based place in `waiters`, then 0 on admission.
    position: watch::Sender<usize>,
    admit: oneshot::Sender<()>,
}

impl LocalQueue {
    /// A queue running at most `max_running` runs at once, with at most `max_queued` waiting.
    ///
    /// # Panics
    /// If `max_running` is 0: nothing could ever run.
    pub fn new(max_running: usize, max_queued: usize) -> Self {
        assert!(max_running > 0, "LocalQueue needs max_running > 0");
        LocalQueue {
            shared: Arc::new(Shared {
                max_running,
                max_queued,
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
    fn enqueue(&self) -> Result<Ticket, Busy> {
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.waiters.is_empty() && state.running < shared.max_running {
            state.running += 1;
            drop(state);
            return Ok(Ticket::admitted(shared.permit()));
        }
        let queued = state.waiters.len();
        if queued >= shared.max_queued {
            let retry_after = state.durations.retry_after(queued, shared.max_running);
            drop(state);
            tracing::debug!(
                queued,
                max_queued = shared.max_queued,
                ?retry_after,
                "run refused: queue full"
            );
            return Err(Busy {
                queued,
                max_queued: shared.max_queued,
                retry_after,
            });
        }
        let id = state.next_id;
        state.next_id += 1;
        let (position_tx, position_rx) = watch::channel(queued + 1);
        let (admit_tx, admit_rx) = oneshot::channel();
        state.waiters.push_back(Waiter {
            id,
            position: position_tx,
            admit: admit_tx,
        });
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
        self.shared.lock().waiters.len()
    }
}

impl fmt::Debug for LocalQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("LocalQueue")
            .field("max_running", &self.shared.max_running)
            .field("max_queued", &self.shared.max_queued)
            .field("running", &state.running)
            .field("queued", &state.waiters.len())
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under the lock, but if some did, the counters would still
        // be consistent: carry on rather than spread the panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit for a slot already counted in `running`.
    fn permit(self: &Arc<Self>) -> Permit {
        let shared = Arc::clone(self);
        let started = Instant::now();
        Permit::new(move || shared.lock().release_slot(Some(started.elapsed())))
    }
}

impl State {
    /// Gives a slot to the first waiter, or frees it when nobody waits. `ran_for` is the run's
    /// duration, when a run happened.
    fn release_slot(&mut self, ran_for: Option<Duration>) {
        if let Some(duration) = ran_for {
            self.durations.record(duration);
        }
        match self.waiters.pop_front() {
            Some(next) => {
                // The slot passes to `next` even if its ticket is being dropped right now: its
                // `WaitGuard` then finds itself out of the queue and passes the slot on.
                next.position.send_replace(0);
                let _ = next.admit.send(());
                self.renumber_from(0);
            }
            None => {
                debug_assert!(self.running > 0, "released a slot that was not taken");
                self.running = self.running.saturating_sub(1);
            }
        }
    }

    fn renumber_from(&self, index: usize) {
        for (i, waiter) in self.waiters.iter().enumerate().skip(index) {
            waiter.position.send_replace(i + 1);
        }
    }
}

/// Owned by a waiting ticket's admission future. Its drop decides, under the queue lock, whether
/// the ticket is still waiting (leave the queue) or was admitted without taking its permit
/// (pass the slot on). Deciding under the same lock that admission takes closes the race
/// between cancelling and being admitted.
struct WaitGuard {
    shared: Arc<Shared>,
    id: u64,
    taken: bool,
}

impl WaitGuard {
    fn into_permit(mut self) -> Permit {
        self.taken = true;
        self.shared.permit()
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut state = self.shared.lock();
        match state.waiters.iter().position(|waiter| waiter.id == self.id) {
            Some(index) => {
                state.waiters.remove(index);
                state.renumber_from(index);
            }
            None => state.release_slot(None),
        }
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
        let ticket = queue.enqueue().expect("a free slot");
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
            let mut t3 = queue.enqueue().unwrap();
            let mut t4 = queue.enqueue().unwrap();
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
            let mut t1 = queue.enqueue().unwrap();
            let mut t2 = queue.enqueue().unwrap();
            let mut t3 = queue.enqueue().unwrap();
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
            let ticket = queue.enqueue().unwrap();
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
            let t1 = queue.enqueue().unwrap();
            drop(p0);
            // The freed slot went to t1 even though t1 has not been polled yet.
            assert_eq!(t1.position(), 0);
            let mut t2 = queue.enqueue().unwrap();
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
            let mut t3 = queue.enqueue().unwrap();
            let t4 = queue.enqueue().unwrap();
            let mut t5 = queue.enqueue().unwrap();
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
            let t1 = queue.enqueue().unwrap();
            let mut t2 = queue.enqueue().unwrap();
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
            let _t1 = queue.enqueue().unwrap();
            let _t2 = queue.enqueue().unwrap();

            let busy = queue.enqueue().unwrap_err();
            assert_eq!((busy.queued, busy.max_queued), (2, 2));
            assert!((MIN_RETRY_AFTER..=MAX_RETRY_AFTER).contains(&busy.retry_after));
            assert_eq!(busy.retry_after_secs(), 1);
            assert_eq!(
                busy.to_string(),
                "server busy: 2 runs queued (limit 2); retry after 1 s"
            );
            assert_eq!(queue.queued(), 2, "a refused request takes no place");

            drop(p0);
            let _t3 = queue.enqueue().expect("room again once the queue moved");
        })
        .await;
    }

    #[tokio::test]
    async fn zero_queue_cap_refuses_as_soon_as_every_slot_is_taken() {
        within(async {
            let queue = LocalQueue::new(1, 0);
            let p0 = admitted_at_once(&queue);
            let busy = queue.enqueue().unwrap_err();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn cancelling_tickets_while_permits_are_released_leaks_no_slot() {
        within(async {
            const SLOTS: usize = 2;
            let queue: Arc<dyn RunQueue> = Arc::new(LocalQueue::new(SLOTS, 8));
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
            for round in 0..1000 {
                let permits: Vec<Permit> = (0..SLOTS).map(|_| admitted_at_once(&*queue)).collect();
                let waiting = 1 + rng.below(6);
                let tickets: Vec<Ticket> = (0..waiting).map(|_| queue.enqueue().unwrap()).collect();
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
                                _ => admitted.push(tokio::spawn(ticket)),
                            }
                        }
                        for waiter in admitted {
                            drop(waiter.await.unwrap());
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
                        let permit = queue.enqueue().unwrap().await;
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

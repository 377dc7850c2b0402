//! A run as its callers hold it: its id, its log, its stdin, its Stop and its signals. The
//! run's states, events and summary are the wire model in `onpyrunner_protocol::run`.
//!
//! A run outlives any one caller: each [`Session`] is an attachment to it, and the run is
//! killed (reason `client_gone`) only when nobody has been attached for its detach grace
//! period ([`Detach`]). A caller that comes back takes the run again with
//! [`Engine::resume`](crate::engine::Engine::resume) and a position in its log.
use crate::run_log::{Follower, RunLog};
use bytes::Bytes;
use onpyrunner_protocol::{Event, Reason};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

/// Stdin chunks buffered per run before the writer waits.
pub const STDIN_BUFFER: usize = 16;

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Ends a run early, and says why: the first reason given wins. Stopping twice or after the end
/// does nothing. Always SIGKILL, never a signal the program could ignore.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    token: CancellationToken,
    reason: Arc<OnceLock<Reason>>,
}

impl StopSignal {
    pub fn stop(&self, reason: Reason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    pub async fn stopped(&self) -> Reason {
        self.token.cancelled().await;
        self.reason()
    }

    /// Why it was stopped (`Stopped` if it was not).
    pub fn reason(&self) -> Reason {
        self.reason.get().copied().unwrap_or(Reason::Stopped)
    }
}

/// Signals for the running program (a Piston client's `signal`), in the order they were sent.
/// At most [`SIGNALS_HELD`] wait to be delivered; one sent past that is dropped (a client
/// sending signals faster than they can be delivered gains nothing by more of them).
#[derive(Debug, Clone, Default)]
pub struct Signals {
    inner: Arc<(Mutex<VecDeque<i32>>, Notify)>,
}

/// Signals waiting to be delivered, at most.
pub const SIGNALS_HELD: usize = 8;

impl Signals {
    /// Queue `signal`; false when [`SIGNALS_HELD`] are already waiting.
    pub fn send(&self, signal: i32) -> bool {
        let (queue, notify) = &*self.inner;
        let mut queue = queue.lock().expect("signals lock");
        if queue.len() >= SIGNALS_HELD {
            return false;
        }
        queue.push_back(signal);
        notify.notify_one();
        true
    }

    /// The next signal sent, waiting for one.
    pub async fn next(&self) -> i32 {
        let (queue, notify) = &*self.inner;
        loop {
            if let Some(signal) = queue.lock().expect("signals lock").pop_front() {
                return signal;
            }
            notify.notified().await;
        }
    }
}

/// When a run nobody is attached to is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// At once: the caller's leaving ends it (a sync request, the CLI, tests).
    Kill,
    /// After this long without anybody attached (a WebSocket client may come back).
    After(Duration),
}

/// What every attachment of one run shares.
pub(crate) struct RunShared {
    pub(crate) id: String,
    pub(crate) log: RunLog,
    /// The program's stdin; `None` once EOF was sent.
    stdin: Mutex<Option<mpsc::Sender<Bytes>>>,
    pub(crate) stop: StopSignal,
    pub(crate) signals: Signals,
    /// How many sessions are attached.
    attached: watch::Sender<usize>,
    pub(crate) detach: Detach,
}

impl RunShared {
    pub(crate) fn new(id: String, stdin: mpsc::Sender<Bytes>, detach: Detach) -> Self {
        RunShared {
            id,
            log: RunLog::default(),
            stdin: Mutex::new(Some(stdin)),
            stop: StopSignal::default(),
            signals: Signals::default(),
            attached: watch::channel(0).0,
            detach,
        }
    }

    /// The run has ended: what only a running run needs goes (its stdin channel), and the log
    /// is trimmed to its size, since the run may be kept a while for a client to come back.
    pub(crate) fn ended(&self) {
        self.stdin.lock().expect("run lock").take();
        self.log.shrink();
    }

    /// Resolves once nobody has been attached for the detach grace period.
    pub(crate) async fn abandoned(&self) {
        let mut attached = self.attached.subscribe();
        let grace = match self.detach {
            Detach::Kill => Duration::ZERO,
            Detach::After(grace) => grace,
        };
        loop {
            if attached.wait_for(|n| *n == 0).await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(grace) => return,
                _ = attached.wait_for(|n| *n > 0) => {}
            }
        }
    }
}

/// Open a run that nobody produces yet: the producer's side, and the first caller's session
/// (attached at position 0). The engine opens every run so; a stand-in runner does the same.
pub fn open(id: String, detach: Detach) -> (RunWriter, Session) {
    let (stdin_tx, stdin) = mpsc::channel(STDIN_BUFFER);
    let run = Arc::new(RunShared::new(id, stdin_tx, detach));
    let session = Session::attach(run.clone(), 0).expect("position 0 is in every log");
    (RunWriter { run, stdin }, session)
}

/// The producing side of a run: it writes the run's log and reads its stdin and Stop.
pub struct RunWriter {
    pub(crate) run: Arc<RunShared>,
    /// The program's stdin, as its callers write it; closed at EOF.
    pub stdin: mpsc::Receiver<Bytes>,
}

impl RunWriter {
    pub fn id(&self) -> &str {
        &self.run.id
    }

    /// Append an event to the run's log.
    pub fn push(&self, event: Event) -> Result<(), crate::run_log::LogFull> {
        self.run.log.push(event)
    }

    pub fn log(&self) -> &RunLog {
        &self.run.log
    }

    /// The run's Stop, with its reason.
    pub fn stop_signal(&self) -> &StopSignal {
        &self.run.stop
    }

    /// The signals its callers send the program.
    pub fn signals(&self) -> &Signals {
        &self.run.signals
    }

    /// Resolves once nobody has been attached for the detach grace period.
    pub async fn abandoned(&self) {
        self.run.abandoned().await
    }

    /// A new attachment from position `seq`; `None` past the end of the log.
    pub fn attach(&self, seq: u64) -> Option<Session> {
        Session::attach(self.run.clone(), seq)
    }
}

/// Stdin, EOF and Stop of a run, apart from its events: for a caller that reads events in one
/// task and acts in another. Holding it does not count as being attached.
#[derive(Clone)]
pub struct RunControl {
    run: Arc<RunShared>,
}

impl RunControl {
    /// A sender for the program's stdin; `None` after EOF.
    pub fn stdin(&self) -> Option<mpsc::Sender<Bytes>> {
        self.run.stdin.lock().expect("run lock").clone()
    }

    /// Send EOF (once every clone of the stdin sender is dropped too).
    pub fn close_stdin(&self) {
        self.run.stdin.lock().expect("run lock").take();
    }

    /// End the run for `reason`.
    pub fn stop(&self, reason: Reason) {
        self.run.stop.stop(reason);
    }

    /// Send the program a signal (all its processes, not the sandbox's init or launcher);
    /// false when too many are waiting to be delivered. What the program does with it is its
    /// own business: this does not end the run by itself.
    pub fn signal(&self, signal: i32) -> bool {
        self.run.signals.send(signal)
    }

    /// Whether the run has ended (its summary is in the log).
    pub fn ended(&self) -> bool {
        self.run.log.is_closed()
    }

    /// How many sessions are attached to the run.
    pub fn attached(&self) -> usize {
        *self.run.attached.borrow()
    }
}

/// One caller's attachment to a run. Dropping it detaches (see [`Detach`]).
pub struct Session {
    pub id: String,
    /// The run's events from where this session started following, until the summary.
    pub events: Follower,
    run: Arc<RunShared>,
}

impl Session {
    /// Attach to `run`, following its log from `pos`; `None` when `pos` is past its end.
    pub(crate) fn attach(run: Arc<RunShared>, pos: u64) -> Option<Self> {
        let events = run.log.follow(pos)?;
        run.attached.send_modify(|n| *n += 1);
        Some(Session {
            id: run.id.clone(),
            events,
            run,
        })
    }

    /// This session no longer sets the run's pace: the program runs at full speed, its output
    /// kept within its cap, however this session is read (a job's).
    pub fn unpaced(mut self) -> Self {
        let pos = self.events.seq();
        self.events = self.run.log.watch(pos).expect("the session's own position");
        self
    }

    /// Stdin, EOF and Stop, for another task.
    pub fn control(&self) -> RunControl {
        RunControl {
            run: self.run.clone(),
        }
    }

    /// A sender for the program's stdin (clone it to write from another task). `None` after
    /// EOF.
    pub fn stdin(&self) -> Option<mpsc::Sender<Bytes>> {
        self.control().stdin()
    }

    /// Send EOF (once every clone of the stdin sender is dropped too).
    pub fn close_stdin(&mut self) {
        self.control().close_stdin();
    }

    /// Stop the run (reason `stopped`).
    pub fn stop(&self) {
        self.run.stop.stop(Reason::Stopped);
    }

    /// A handle that stops the run from elsewhere.
    pub fn stopper(&self) -> StopSignal {
        self.run.stop.clone()
    }

    /// Whether the run has ended (its summary is in the log).
    pub fn ended(&self) -> bool {
        self.run.log.is_closed()
    }

    /// The run's log, for a second reader.
    pub fn log(&self) -> &RunLog {
        &self.run.log
    }

    /// The next event; `None` after the summary.
    pub async fn recv(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("seq", &self.events.seq())
            .finish()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.run.attached.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stop_reason_wins() {
        let stop = StopSignal::default();
        assert!(!stop.is_stopped());
        stop.stop(Reason::Shutdown);
        stop.stop(Reason::Stopped);
        assert!(stop.is_stopped());
        assert_eq!(stop.reason(), Reason::Shutdown);
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_is_abandoned_only_after_the_whole_grace_period_unattached() {
        let (tx, _rx) = mpsc::channel(1);
        let run = Arc::new(RunShared::new(
            "r".into(),
            tx,
            Detach::After(Duration::from_secs(60)),
        ));
        let first = Session::attach(run.clone(), 0).unwrap();
        let watcher = {
            let run = run.clone();
            tokio::spawn(async move { run.abandoned().await })
        };
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!watcher.is_finished(), "attached: never abandoned");
        drop(first);
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(!watcher.is_finished());
        let back = Session::attach(run.clone(), 0).unwrap();
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!watcher.is_finished(), "came back in time");
        drop(back);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(watcher.is_finished(), "gone for the whole grace period");
    }

    #[tokio::test]
    async fn eof_closes_stdin_for_every_attachment() {
        let (tx, mut rx) = mpsc::channel(1);
        let run = Arc::new(RunShared::new("r".into(), tx, Detach::Kill));
        let mut a = Session::attach(run.clone(), 0).unwrap();
        let b = Session::attach(run, 0).unwrap();
        assert!(b.stdin().is_some());
        a.close_stdin();
        assert!(b.stdin().is_none());
        assert!(rx.recv().await.is_none(), "EOF");
    }
}

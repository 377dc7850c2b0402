//! Hostile programs, each run beside a well-behaved neighbour. A case is only as good as three
//! checks: the verdict its user sees (asserted by the test), its container gone within
//! [`GONE_WITHIN`] of the run's end, and a hello-world started next to it succeeding while it
//! does its worst. [`run_hostile`] makes the last two, so that no case can forget them.
use crate::{Harness, Ran, TEST_TIMEOUT};
use bytes::Bytes;
use onpyrunner_protocol::{OutputChunk, Reason};
use onpyrunner_supervisor::run::{self, RunSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// How soon after a run's end its container must be gone from the daemon.
pub const GONE_WITHIN: Duration = Duration::from_secs(2);

/// Name of the variable that holds [`secret`] in this test process's environment.
pub const SECRET_VAR: &str = "ONPYRUNNER_TEST_SECRET";

/// Cases of one test binary that run at once. A hostile program takes a whole CPU and its
/// neighbour a bit more, and the machine may have only two.
static ROOM: Semaphore = Semaphore::const_new(2);

/// A value that this test process holds in its environment (as [`SECRET_VAR`]) and that no run
/// may ever see. Set on first use, which [`admit`] makes sure comes before any harness or engine.
pub fn secret() -> &'static str {
    static SECRET: OnceLock<String> = OnceLock::new();
    SECRET.get_or_init(|| {
        let value = format!("hush-{}", run::random_hex(12));
        std::env::set_var(SECRET_VAR, &value);
        value
    })
}

/// Wait for room to run a case (see [`ROOM`]); the secret is in the environment by then.
pub async fn admit() -> tokio::sync::SemaphorePermit<'static> {
    secret();
    ROOM.acquire().await.expect("the room is never closed")
}

/// What the client sends on the program's stdin.
pub enum Input {
    /// Nothing: EOF at once.
    Eof,
    /// These bytes, then EOF.
    Bytes(Vec<u8>),
    /// `total` bytes in pieces of `chunk` (of `b'x'`), as fast as the run takes them, then EOF;
    /// the client stops early when the run is over.
    Flood { total: usize, chunk: usize },
}

/// A hostile run, as its user saw it.
#[derive(Debug)]
pub struct Outcome {
    pub ran: Ran,
    /// Bytes the client got to hand over before the run stopped taking them.
    pub stdin_sent: usize,
}

/// Run `spec` with `input` beside a hello-world neighbour, then check that the case's container
/// is gone within [`GONE_WITHIN`] and that the neighbour succeeded.
pub async fn run_hostile(test: &str, spec: &RunSpec, input: Input) -> Ran {
    run_hostile_with(test, spec, input, |_| {}).await.ran
}

/// [`run_hostile`], with the client's side of stdin reported and `on_chunk` seeing output as it
/// arrives.
pub async fn run_hostile_with(
    test: &str,
    spec: &RunSpec,
    input: Input,
    on_chunk: impl FnMut(&OutputChunk) + Send,
) -> Outcome {
    let _room = admit().await;
    let hostile = Harness::new(test).await;
    let neighbour = Harness::new(&format!("{test}-neighbour")).await;
    let (stdin_tx, stdin_rx) = mpsc::channel(4);
    let client = tokio::spawn(feed(stdin_tx, input));
    let over = Arc::new(AtomicBool::new(false));
    let running = async {
        let ran = hostile.run_with(spec, stdin_rx, on_chunk).await;
        over.store(true, Ordering::Relaxed);
        hostile.assert_gone_within(GONE_WITHIN).await;
        ran
    };
    // The neighbour starts once the hostile container exists, and its program lasts long
    // enough to overlap the hostile program's (a fresh JVM warms up first).
    let window = if spec.language.is_warm() { 4.0 } else { 1.5 };
    let beside = async {
        while hostile.containers_left().await.is_empty() && !over.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let ran = neighbour
            .run(&crate::spec("python", &hello(window)), b"")
            .await;
        assert_eq!(
            (ran.outcome.reason, ran.outcome.usage.exit_code),
            (Reason::Exited, Some(0)),
            "the neighbour of {test} failed: {ran:?}"
        );
        assert_eq!(ran.stdout_text(), "Hello, world! True\n", "{ran:?}");
        assert!(ran.outcome.error.is_none(), "{:?}", ran.outcome.error);
    };
    let (ran, ()) = tokio::join!(running, beside);
    let stdin_sent = tokio::time::timeout(TEST_TIMEOUT, client)
        .await
        .expect("the client's writes end with the run")
        .expect("the client did not panic");
    Outcome { ran, stdin_sent }
}

/// A hello-world that stays up for `window_s` seconds, computing a little and sleeping.
fn hello(window_s: f64) -> String {
    format!(
        "import time\nend = time.monotonic() + {window_s}\nn = 0\n\
         while time.monotonic() < end:\n    n += sum(range(10000))\n    time.sleep(0.02)\n\
         print('Hello, world!', n > 0)\n"
    )
}

/// Send `input` on stdin; how many bytes the run took before it stopped taking them.
async fn feed(stdin: mpsc::Sender<Bytes>, input: Input) -> usize {
    match input {
        Input::Eof => 0,
        Input::Bytes(bytes) => {
            let len = bytes.len();
            match stdin.send(Bytes::from(bytes)).await {
                Ok(()) => len,
                Err(_) => 0,
            }
        }
        Input::Flood { total, chunk } => {
            let piece = Bytes::from(vec![b'x'; chunk]);
            let mut sent = 0;
            while sent < total {
                let take = chunk.min(total - sent);
                if stdin.send(piece.slice(..take)).await.is_err() {
                    break;
                }
                sent += take;
            }
            sent
        }
    }
}

//! The Docker daemon restarts in the middle of a run. This restarts the machine's real daemon
//! (through scripts/dockerd.sh), so it lives alone in its own test binary: cargo runs test
//! binaries one after another, so no other end-to-end test runs meanwhile.
use onpyrunner_e2e::{
    assert_instance_clean, engine_config, hear_all, hear_until, spec, until, Harness, Heard,
    TEST_TIMEOUT,
};
use onpyrunner_protocol::{Reason, RunState};
use onpyrunner_supervisor::engine::Engine;
use std::time::Duration;

#[tokio::test]
async fn a_daemon_restart_mid_run_ends_it_with_an_internal_error_and_the_next_run_works() {
    let h = Harness::new("daemon-restart").await;
    let mut config = engine_config("restart", &[("python", 1)]);
    config.health_interval = Duration::from_millis(200);
    let instance = config.instance.clone();
    let engine = Engine::start(h.docker.clone(), config).await.unwrap();
    let pool = engine.pools()["python"].clone();
    until("the pool to fill", || pool.ready() == 1).await;

    let mut session = engine
        .submit(spec(
            "python",
            "print('up', flush=True)\nimport time\ntime.sleep(300)",
        ))
        .unwrap();
    let mut heard = Heard::default();
    hear_until(&mut session.events, &mut heard, "up").await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/dockerd.sh");
    let restart = tokio::process::Command::new("bash")
        .args([script, "restart"])
        .status();
    let (ended, restarted) = tokio::join!(hear_all(&mut session.events), restart);
    assert!(
        restarted.unwrap().success(),
        "scripts/dockerd.sh restart failed"
    );
    let summary = ended.summary();
    assert_eq!(summary.state, RunState::Finished);
    assert_eq!(summary.reason, Reason::InternalError);
    let error = summary.error.as_deref().unwrap_or_default();
    assert!(error.starts_with("internal error"), "{error}");
    assert!(error.contains("Docker daemon"), "a clear message: {error}");

    // The engine reconnects by itself and refills its pool with new containers.
    until("the engine to see the daemon again", || engine.daemon_up()).await;
    until("the pool to refill", || pool.ready() == 1).await;
    let mut next = tokio::time::timeout(TEST_TIMEOUT, async {
        loop {
            match engine.submit(spec("python", "print('after the restart')")) {
                Ok(session) => return session,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .unwrap();
    let after = hear_all(&mut next.events).await;
    assert_eq!(after.stdout_text(), "after the restart\n");
    assert_eq!(after.summary().reason, Reason::Exited);
    engine.shutdown().await;
    assert_instance_clean(&h.docker, &instance).await;
}

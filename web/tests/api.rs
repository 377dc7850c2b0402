//! The REST API in process (warp's test client) over a real engine, daemon and images.
use onpyrunner::jobs::Jobs;
use onpyrunner::router::routes;
use onpyrunner::state::AppState;
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::{Engine, EngineConfig};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn state(test: &str, tweak: impl FnOnce(&mut EngineConfig)) -> AppState {
    let docker = Docker::from_host(None).unwrap();
    let mut config = onpyrunner_e2e::engine_config(&format!("api-{test}"), &[]);
    tweak(&mut config);
    let engine = Engine::start(docker, config)
        .await
        .expect("engine starts (is the daemon running? `bash scripts/setup.sh`)");
    AppState::new(engine, Jobs::new(100, Duration::from_secs(60)))
}

async fn call(s: &AppState, method: &str, path: &str, body: Value) -> (u16, Value, Option<String>) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let response = warp::test::request()
        .method(method)
        .path(path)
        .header("content-type", "application/json")
        .body(body)
        .reply(&routes(s.clone()))
        .await;
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let json = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (response.status().as_u16(), json, retry)
}

#[tokio::test]
async fn languages_lists_cpython_and_pypy_side_by_side_with_versions() {
    let s = state("langs", |_| {}).await;
    let (status, list, _) = call(&s, "GET", "/api/v1/languages", Value::Null).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["python", "pypy", "node", "java", "c", "cpp", "rust", "go"]
    );
    assert!(list[0]["version"].as_str().unwrap().starts_with('3'));
    assert_eq!(list[0]["available"], true);
    s.engine.shutdown().await;
}

#[tokio::test]
async fn a_sync_run_returns_output_state_exit_code_times_and_memory() {
    let s = state("sync", |_| {}).await;
    let body = json!({"language": "python", "code": "import sys\nprint(input()*2)\nsys.exit(3)", "stdin": "ab\n"});
    let (status, run, _) = call(&s, "POST", "/api/v1/runs", body).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["stdout"], "abab\n");
    assert_eq!(run["state"], "FINISHED");
    assert_eq!(run["exit_code"], 3);
    assert!(run["wall_ms"].as_u64().is_some());
    assert!(run["memory_kib"].as_u64().unwrap() > 0);
    assert_eq!(run["output_truncated"], false);
    // Several files and arguments.
    let body = json!({"language": "python", "files": [
        {"name": "main.py", "content": "import sys, util\nprint(util.twice(sys.argv[1]))"},
        {"name": "util.py", "content": "def twice(x): return x + x"}], "args": ["yo"]});
    let (status, run, _) = call(&s, "POST", "/api/v1/runs", body).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["stdout"], "yoyo\n");
    s.engine.shutdown().await;
}

#[tokio::test]
async fn a_job_is_accepted_polled_and_stopped() {
    let s = state("jobs", |_| {}).await;
    let body = json!({"language": "python", "code": "print('tick', flush=True)\nwhile True: pass"});
    let (status, job, _) = call(&s, "POST", "/api/v1/jobs", body).await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["location"], format!("/api/v1/jobs/{id}"));
    let path = format!("/api/v1/jobs/{id}");
    let started = Instant::now();
    loop {
        let (_, view, _) = call(&s, "GET", &path, Value::Null).await;
        if view["stdout"] == "tick\n" {
            assert_eq!(view["state"], "RUNNING");
            assert!(view["summary"].is_null());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) = call(&s, "DELETE", &path, Value::Null).await;
    assert_eq!(status, 202);
    let view = s.jobs.finished(&id).await.unwrap();
    assert_eq!(view.state.as_str(), "STOPPED");
    let (_, view, _) = call(&s, "GET", &path, Value::Null).await;
    assert_eq!(view["summary"]["reason"], "stopped");
    let (status, err, _) = call(&s, "GET", "/api/v1/jobs/nope", Value::Null).await;
    assert_eq!(status, 404);
    assert_eq!(err["field"], "id");
    s.engine.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_a_status_that_fits_and_name_the_field_and_limit() {
    let s = state("errors", |c| {
        c.max_running = 1;
        c.max_queued = 0;
        // The limit past the cap (not past the language's default) is what is checked here.
        c.caps.raise = true;
    })
    .await;
    let cases = [
        (json!({"language": "cobol", "code": "x"}), 422, "language"),
        (json!({"language": "python"}), 422, "code"),
        (
            json!({"language": "python", "code": "x", "limits": {"wall_ms": 1_000_000}}),
            422,
            "limits.wall_ms",
        ),
        (
            json!({"language": "python", "code": "x".repeat(2 << 20)}),
            413,
            "code",
        ),
        (
            json!({"language": "python", "files": [{"name": "../x.py", "content": ""}]}),
            422,
            "files[0].name",
        ),
    ];
    for (body, want, field) in cases {
        let (status, err, _) = call(&s, "POST", "/api/v1/runs", body).await;
        assert_eq!(status, want, "{err}");
        assert_eq!(err["field"], field, "{err}");
        assert!(err["error"].as_str().unwrap().len() > 10);
    }
    let (_, err, _) = call(
        &s,
        "POST",
        "/api/v1/runs",
        json!({"language": "python", "code": "x", "limits": {"wall_ms": 1_000_000}}),
    )
    .await;
    assert_eq!(err["limit"], "60000");
    // Counts past their limit say the limit too.
    let many_args: Vec<String> = (0..65).map(|i| i.to_string()).collect();
    let many_files: Vec<Value> = (0..65)
        .map(|i| json!({"name": format!("f{i}.py"), "content": ""}))
        .collect();
    for (body, field, limit) in [
        (
            json!({"language": "python", "code": "x", "args": many_args}),
            "args",
            "64",
        ),
        (
            json!({"language": "python", "files": many_files}),
            "files",
            "64",
        ),
    ] {
        let (status, err, _) = call(&s, "POST", "/api/v1/runs", body).await;
        assert_eq!(status, 422, "{err}");
        assert_eq!(
            (err["field"].as_str(), err["limit"].as_str()),
            (Some(field), Some(limit)),
            "{err}"
        );
    }
    let response = warp::test::request()
        .method("POST")
        .path("/api/v1/runs")
        .header("content-type", "application/json")
        .body("{not json")
        .reply(&routes(s.clone()))
        .await;
    assert_eq!(response.status(), 400);
    // The one slot is taken and nothing may queue: 429 with Retry-After.
    let (status, _, _) = call(
        &s,
        "POST",
        "/api/v1/jobs",
        json!({"language": "python", "code": "import time\ntime.sleep(30)"}),
    )
    .await;
    assert_eq!(status, 202);
    let (status, err, retry) = call(
        &s,
        "POST",
        "/api/v1/jobs",
        json!({"language": "python", "code": "print(1)"}),
    )
    .await;
    assert_eq!(status, 429, "{err}");
    assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(err["limit"], "0");
    assert_eq!(s.engine.status().refused_busy, 1);
    s.engine.shutdown().await;
}

#[tokio::test]
async fn ended_jobs_give_way_oldest_first_when_their_output_passes_the_byte_budget() {
    let s = state("jobbytes", |_| {}).await;
    let s = AppState::new(
        s.engine.clone(),
        Jobs::new(100, Duration::from_secs(600)).with_max_bytes(1000),
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let body = json!({"language": "python", "code": "print('x' * 799)"});
        let (status, job, _) = call(&s, "POST", "/api/v1/jobs", body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].as_str().unwrap().to_string();
        let view = s.jobs.finished(&id).await.unwrap();
        assert_eq!(view.stdout.len(), 800);
        ids.push(id);
    }
    // Each job's end made room: only the newest ended ones within 1000 bytes are kept. (Until
    // the budget was enforced when a job ends, the second one stayed too, 1600 bytes in all.)
    let status = |id: &str| {
        let s = s.clone();
        let path = format!("/api/v1/jobs/{id}");
        async move { call(&s, "GET", &path, Value::Null).await.0 }
    };
    assert_eq!(status(&ids[0]).await, 404);
    assert_eq!(
        status(&ids[1]).await,
        404,
        "800 + 800 bytes is over the budget"
    );
    assert_eq!(
        status(&ids[2]).await,
        200,
        "the newest job is not evicted before anyone reads it"
    );
    s.engine.shutdown().await;
}

#[tokio::test]
async fn a_known_route_asked_with_another_method_answers_405_with_allow() {
    // Routing needs no daemon.
    let s = AppState::new(
        onpyrunner_e2e::stand_in::StandIn::new(),
        Jobs::new(100, Duration::from_secs(60)),
    );
    for (method, path, allow) in [
        ("GET", "/api/v1/runs", "POST"),
        ("PUT", "/api/v1/jobs/abc", "GET, DELETE"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/", "GET, HEAD"),
        // A literal segment wins over a parameter: `batch` is not a token of
        // `/submissions/{id}`, whatever the method.
        ("DELETE", "/submissions/batch", "POST, GET"),
        ("PUT", "/submissions/abc", "GET, DELETE"),
    ] {
        let response = warp::test::request()
            .method(method)
            .path(path)
            .reply(&routes(s.clone()))
            .await;
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        let err: Value = serde_json::from_slice(response.body()).unwrap();
        assert!(err["error"].as_str().unwrap().contains(allow), "{err}");
    }
    // Unknown routes stay 404; a known route with its method is not affected.
    let (status, _, _) = call(&s, "GET", "/api/v1/nothing", Value::Null).await;
    assert_eq!(status, 404);
    let (status, _, _) = call(&s, "GET", "/api/v1/jobs/abc", Value::Null).await;
    assert_eq!(status, 404, "no such job");
    s.engine.shutdown().await;
}

//! `/metrics` and a job's Server-Sent Events, in process (warp's test client, and a real
//! listener where streaming itself is the point) over a real engine, daemon and images.
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use onpyrunner::jobs::Jobs;
use onpyrunner::router::routes;
use onpyrunner::state::AppState;
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::Engine;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(90);

async fn state(test: &str, pools: &[(&str, usize)]) -> AppState {
    let config = onpyrunner_e2e::engine_config(&format!("obs-{test}"), pools);
    let engine = Engine::start(Docker::from_host(None).unwrap(), config)
        .await
        .expect("engine starts (is the daemon running? `bash scripts/setup.sh`)");
    AppState::new(engine, Jobs::new(100, Duration::from_secs(60)))
}

async fn call(s: &AppState, method: &str, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let response = tokio::time::timeout(
        TIMEOUT,
        warp::test::request()
            .method(method)
            .path(path)
            .header("content-type", "application/json")
            .body(body)
            .reply(&routes(s.clone())),
    )
    .await
    .expect("answer within the timeout");
    let json = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (response.status().as_u16(), json)
}

async fn post_job(s: &AppState, code: &str) -> String {
    let (status, job) = call(
        s,
        "POST",
        "/api/v1/jobs",
        json!({"language": "python", "code": code}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().unwrap().to_string()
}

/// The samples of a `/metrics` page by series, e.g. `onpyrunner_runs_total{state="FINISHED"}`.
async fn metrics(s: &AppState) -> BTreeMap<String, f64> {
    let response = warp::test::request()
        .path("/metrics")
        .reply(&routes(s.clone()))
        .await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = std::str::from_utf8(response.body()).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_runs_pool_hits_and_latencies_as_they_happen() {
    let s = state("metrics", &[("python", 1)]).await;
    let ready = r#"onpyrunner_pool_ready{language="python"}"#;
    let started = Instant::now();
    let before = loop {
        let m = metrics(&s).await;
        if m[ready] == 1.0 {
            break m;
        }
        assert!(started.elapsed() < TIMEOUT, "the pool never filled: {m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(before[r#"onpyrunner_pool_target{language="python"}"#], 1.0);
    assert_eq!(before["onpyrunner_docker_up"], 1.0);

    let (status, run) = call(
        &s,
        "POST",
        "/api/v1/runs",
        json!({"language": "python", "code": "print(42)"}),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    // The run's slot is free once its container is removed, maybe just after the answer.
    while metrics(&s).await["onpyrunner_runs_running"] != 0.0 {
        assert!(
            started.elapsed() < TIMEOUT,
            "the run's slot was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = post_job(&s, "import time\nprint('up', flush=True)\ntime.sleep(30)").await;
    let view = loop {
        let (_, view) = call(&s, "GET", &format!("/api/v1/jobs/{id}"), Value::Null).await;
        if view["stdout"] == "up\n" {
            break view;
        }
        assert!(started.elapsed() < TIMEOUT, "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(view["state"], "RUNNING");
    let during = metrics(&s).await;
    assert_eq!(during["onpyrunner_runs_running"], 1.0);
    assert_eq!(during["onpyrunner_runs_queued"], 0.0);
    call(&s, "DELETE", &format!("/api/v1/jobs/{id}"), Value::Null).await;
    s.jobs.finished(&id).await.unwrap();

    let after = metrics(&s).await;
    let moved = |series: &str| after[series] - before[series];
    assert_eq!(moved(r#"onpyrunner_runs_total{state="FINISHED"}"#), 1.0);
    assert_eq!(moved(r#"onpyrunner_runs_total{state="STOPPED"}"#), 1.0);
    assert_eq!(moved(r#"onpyrunner_runs_total{state="TIMEOUT"}"#), 0.0);
    assert_eq!(moved("onpyrunner_runs_accepted_total"), 2.0);
    assert_eq!(moved("onpyrunner_runs_refused_busy_total"), 0.0);
    assert_eq!(moved("onpyrunner_runs_internal_errors_total"), 0.0);
    assert_eq!(
        moved(r#"onpyrunner_pool_hits_total{language="python"}"#)
            + moved(r#"onpyrunner_pool_misses_total{language="python"}"#),
        2.0
    );
    assert!(moved(r#"onpyrunner_pool_hits_total{language="python"}"#) >= 1.0);
    assert!(moved(r#"onpyrunner_pool_created_total{language="python"}"#) >= 1.0);
    assert_eq!(moved("onpyrunner_run_completion_seconds_count"), 2.0);
    assert_eq!(moved("onpyrunner_run_first_byte_seconds_count"), 2.0);
    assert_eq!(
        after[r#"onpyrunner_run_completion_seconds_bucket{le="+Inf"}"#],
        after["onpyrunner_run_completion_seconds_count"]
    );
    assert!(moved("onpyrunner_run_completion_seconds_sum") > 0.0);
    s.engine.shutdown().await;
}

/// One server-sent event: its name, id and parsed JSON data. Comments come as name ":".
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    event: String,
    id: String,
    data: Value,
}

fn parse_sse(body: &str) -> Vec<Sse> {
    assert!(body.is_empty() || body.ends_with("\n\n"), "{body:?}");
    body.split("\n\n")
        .filter(|block| !block.is_empty())
        .map(|block| {
            let mut sse = Sse {
                event: String::new(),
                id: String::new(),
                data: Value::Null,
            };
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                match field {
                    "" => sse.event = ":".into(),
                    "event" => sse.event = value.into(),
                    "id" => sse.id = value.into(),
                    "data" => {
                        assert!(sse.data.is_null(), "one data line per event: {block}");
                        sse.data = serde_json::from_str(value).unwrap();
                    }
                    _ => panic!("unexpected line {line:?}"),
                }
            }
            sse
        })
        .collect()
}

async fn events(s: &AppState, id: &str, last_event_id: Option<&str>) -> (u16, String, String) {
    let mut request = warp::test::request().path(&format!("/api/v1/jobs/{id}/events"));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    let response = tokio::time::timeout(TIMEOUT, request.reply(&routes(s.clone())))
        .await
        .expect("the stream ends within the timeout");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = String::from_utf8(response.body().to_vec()).unwrap();
    (response.status().as_u16(), content_type, body)
}

/// The events with adjacent output of one stream joined, as (name, data) pairs.
fn joined(events: &[Sse]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for e in events {
        if let Some((name, data)) = out.last_mut() {
            if *name == e.event && (name == "stdout" || name == "stderr") {
                let text = format!(
                    "{}{}",
                    data["data"].as_str().unwrap(),
                    e.data["data"].as_str().unwrap()
                );
                *data = json!({ "data": text });
                continue;
            }
        }
        out.push((e.event.clone(), e.data.clone()));
    }
    out
}

const LINES: &str = "import sys\nfor i in range(3): print(i, flush=True)\n\
                     print('oops', file=sys.stderr, flush=True)\nprint('d\\u00e9j\\u00e0 vu')\nsys.exit(4)";

#[tokio::test]
async fn a_job_streams_its_states_output_and_summary_in_order_then_ends() {
    let s = state("sse", &[]).await;
    let id = post_job(&s, LINES).await;
    let (status, content_type, body) = events(&s, &id, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/event-stream");
    let live = parse_sse(&body);
    let got = joined(&live);
    // Docker copies stdout and stderr independently, so only the order within a stream is
    // the program's; all output comes between RUNNING and the final state.
    let (output, others): (Vec<_>, Vec<_>) = got
        .iter()
        .enumerate()
        .partition(|(_, (n, _))| n == "stdout" || n == "stderr");
    let names: Vec<&str> = others.iter().map(|(_, (n, _))| n.as_str()).collect();
    assert_eq!(names, ["state", "state", "state", "summary"], "{body}");
    assert_eq!(others[0].1 .1["state"], "READY");
    assert_eq!(others[1].1 .1["state"], "RUNNING");
    assert!(
        others[1].1 .1["at_unix_ms"].as_u64().unwrap()
            >= others[0].1 .1["at_unix_ms"].as_u64().unwrap()
    );
    assert!(output
        .iter()
        .all(|(i, _)| *i > others[1].0 && *i < others[2].0));
    let stream = |name: &str| -> String {
        output
            .iter()
            .filter(|(_, (n, _))| n == name)
            .map(|(_, (_, d))| d["data"].as_str().unwrap())
            .collect()
    };
    assert_eq!(stream("stdout"), "0\n1\n2\nd\u{e9}j\u{e0} vu\n");
    assert_eq!(stream("stderr"), "oops\n");
    assert_eq!(others[2].1 .1["state"], "FINISHED");
    let summary = &others[3].1 .1;
    assert_eq!(summary["state"], "FINISHED");
    assert_eq!(summary["reason"], "exited");
    assert_eq!(summary["exit_code"], 4);
    assert_eq!(summary["output_truncated"], false);
    // Every event has its own id.
    let mut ids: Vec<&str> = live.iter().map(|e| e.id.as_str()).collect();
    assert!(ids.iter().all(|i| !i.is_empty()));
    ids.dedup();
    assert_eq!(ids.len(), live.len());

    // A late subscriber replays the same events, then the stream ends likewise.
    let (status, _, late) = events(&s, &id, None).await;
    assert_eq!(status, 200);
    assert_eq!(joined(&parse_sse(&late)), got);

    // Resuming after any event gives exactly the rest; after the summary, 204.
    let (_, _, replay) = events(&s, &id, None).await;
    let replay = parse_sse(&replay);
    for (i, event) in replay.iter().enumerate() {
        let (status, _, rest) = events(&s, &id, Some(&event.id)).await;
        if i + 1 == replay.len() {
            assert_eq!(status, 204, "after the summary: {rest}");
            assert_eq!(rest, "");
        } else {
            assert_eq!(status, 200);
            assert_eq!(parse_sse(&rest), replay[i + 1..], "after event {i}");
        }
    }
    s.engine.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_that_joins_mid_run_gets_the_past_then_the_rest_exactly_once() {
    let s = state("sse-late", &[]).await;
    let code =
        "import time\nprint('before', flush=True)\ntime.sleep(1.5)\nprint('after', flush=True)";
    let id = post_job(&s, code).await;
    let started = Instant::now();
    loop {
        let (_, view) = call(&s, "GET", &format!("/api/v1/jobs/{id}"), Value::Null).await;
        if view["stdout"] == "before\n" {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "{view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The run is in its sleep: half of what this stream gives is replayed, half live.
    let (status, _, body) = events(&s, &id, None).await;
    assert_eq!(status, 200);
    let got = joined(&parse_sse(&body));
    assert_eq!(
        got.iter()
            .filter(|(n, _)| n == "stdout")
            .map(|(_, d)| d["data"].as_str().unwrap())
            .collect::<String>(),
        "before\nafter\n",
        "{body}"
    );
    let states: Vec<&str> = got
        .iter()
        .filter(|(n, _)| n == "state")
        .map(|(_, d)| d["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["READY", "RUNNING", "FINISHED"]);
    assert_eq!(got.last().unwrap().0, "summary");
    assert_eq!(s.jobs.view(&id).unwrap().stdout, "before\nafter\n");
    s.engine.shutdown().await;
}

#[tokio::test]
async fn unknown_jobs_and_foreign_event_ids_get_json_errors() {
    let s = state("sse-errors", &[]).await;
    let (status, content_type, body) = events(&s, "nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(content_type, "application/json");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["field"], "id");
    assert!(err["error"].as_str().unwrap().contains("nope"));

    let id = post_job(&s, "print('x')").await;
    s.jobs.finished(&id).await.unwrap();
    for bad in ["garbage", "999.0.0", "1.5000.0"] {
        let (status, _, body) = events(&s, &id, Some(bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["field"], "Last-Event-ID");
    }
    s.engine.shutdown().await;
}

/// Over a real socket: events arrive while the program still runs (the response is streamed,
/// not gathered), and keep-alive comments fill the silences.
#[tokio::test]
async fn events_arrive_live_over_a_real_connection_with_keep_alive_comments() {
    let s = state("sse-live", &[]).await;
    let filter = onpyrunner::sse::route(s.jobs.clone(), Duration::from_millis(200));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(warp::serve(filter).incoming(listener).run());

    let code =
        "import time\nprint('first', flush=True)\ntime.sleep(2)\nprint('second', flush=True)";
    let id = post_job(&s, code).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}/api/v1/jobs/{id}/events");
    let response = tokio::time::timeout(TIMEOUT, client.get(uri.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut text = String::new();
    let mut first_at = None;
    let started = Instant::now();
    while let Some(frame) = tokio::time::timeout(TIMEOUT, body.frame()).await.unwrap() {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
        }
        if first_at.is_none() && text.contains("first") {
            first_at = Some(started.elapsed());
            assert!(!text.contains("second"), "{text}");
            assert!(!text.contains("event:summary"), "{text}");
        }
    }
    let events = parse_sse(&text);
    let first_at = first_at.expect("first arrived");
    let second_at = started.elapsed();
    assert!(
        second_at >= first_at + Duration::from_millis(1500),
        "first came {first_at:?}, the stream ended {second_at:?}: not live"
    );
    let keep_alives = events.iter().filter(|e| e.event == ":").count();
    assert!(keep_alives >= 3, "2 s of silence, 200 ms interval: {text}");
    let output: Vec<(String, Value)> = joined(
        &events
            .iter()
            .filter(|e| e.event != ":")
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(output.last().unwrap().0, "summary");
    server.abort();
    s.engine.shutdown().await;
}

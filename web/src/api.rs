//! The REST API's handlers (`/api/v1/...` and `/healthz`); `crate::router` routes to them.
use crate::body::Received;
use crate::error::{no_such_job, ApiError};
use crate::identity::Caller;
use crate::request::{parse_body, run_spec};
use crate::state::AppState;
use onpyrunner_protocol::Event;
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

/// `GET /healthz`.
pub fn healthz(s: &AppState) -> Response {
    let status = s.engine.status();
    let ok = status.docker_up && status.redis_up != Some(false) && !status.shutting_down;
    let pools: serde_json::Map<String, serde_json::Value> = status
        .pools
        .iter()
        .map(|p| {
            (
                p.language.clone(),
                json!({"ready": p.ready, "target": p.target, "floor": p.floor, "ceiling": p.ceiling}),
            )
        })
        .collect();
    let mut body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "docker": status.docker_up,
        "shutting_down": status.shutting_down,
        "running": status.running,
        "queued": status.queued,
        "pools": pools,
    });
    // Only a node of a cluster has a Redis to report.
    if let Some(up) = status.redis_up {
        body["redis"] = json!(up);
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// `GET /api/v1/languages`.
pub fn languages(s: &AppState) -> Response {
    let list: Vec<_> = onpyrunner_languages::languages()
        .iter()
        .map(|l| {
            json!({
                "id": l.id,
                "name": l.name,
                "version": l.version,
                "source_file": l.source_file,
                // What the program is compiled and run with, so users see the flags.
                "compile": l.compile,
                "run": l.run,
                "available": s.engine.available(&l.id),
                "limits": l.limits,
            })
        })
        .collect();
    warp::reply::json(&list).into_response()
}

/// `POST /api/v1/runs`: the run, to its end.
pub async fn post_run(s: AppState, body: Received, caller: Caller) -> Result<Response, ApiError> {
    let Received { bytes, room } = body;
    // The body and its parse go once the spec is made (the source and stdin move into it); the
    // body's room in the budget stays until the run ends, for the spec holds them that long.
    let (spec, stdin) = run_spec(parse_body(&bytes)?, s.engine.as_ref(), &caller)?;
    drop(bytes);
    let _room = room;
    let mut session = s.engine.submit(spec)?;
    if let Some(tx) = session.stdin() {
        tokio::spawn(async move {
            if !stdin.is_empty() {
                let _ = tx.send(stdin).await;
            }
        });
    }
    session.close_stdin();
    // Dropping this future (the client left) drops the session: the run ends as client_gone.
    // The output stays in the run's log, from which the answer is rendered a piece at a time.
    let mut summary = None;
    while let Some(event) = session.recv().await {
        if let Event::Summary(s) = event {
            summary = Some(s);
        }
    }
    let summary = summary.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the run ended without a summary",
        )
    })?;
    let fields = serde_json::to_string(&summary).expect("summary serializes");
    let opening = fields[1..fields.len() - 1].to_string();
    let body = crate::output_json::stream(session.log().clone(), opening, |_| String::new());
    Ok(warp::reply::with_header(
        warp::reply::stream(body),
        "content-type",
        "application/json",
    )
    .into_response())
}

/// `POST /api/v1/jobs`: the run as a job, answered at once.
pub fn post_job(s: &AppState, body: Received, caller: &Caller) -> Result<Response, ApiError> {
    let Received { bytes, room } = body;
    let (spec, stdin) = run_spec(parse_body(&bytes)?, s.engine.as_ref(), caller)?;
    drop(bytes);
    if !s.jobs.has_room() {
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many jobs kept (limit {}); retry later", s.jobs.max()),
        )
        .limit(s.jobs.max());
        err.retry_after = Some(5);
        return Err(err);
    }
    let language = spec.language.id.clone();
    let session = s.engine.submit(spec)?;
    let id = s
        .jobs
        .insert(session, &language, stdin, room)
        .map_err(|e| {
            let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).limit(e.max);
            err.retry_after = Some(5);
            err
        })?;
    let location = format!("/api/v1/jobs/{id}");
    let reply = warp::reply::with_status(
        warp::reply::json(&json!({"id": id, "location": location})),
        StatusCode::ACCEPTED,
    );
    Ok(warp::reply::with_header(reply, "location", location).into_response())
}

/// `GET /api/v1/jobs/{id}`.
pub fn job(s: &AppState, id: &str) -> Response {
    match crate::jobs::view_json(&s.jobs, id) {
        Some(body) => warp::reply::with_header(
            warp::reply::stream(body),
            "content-type",
            "application/json",
        )
        .into_response(),
        None => no_such_job(id),
    }
}

/// `DELETE /api/v1/jobs/{id}`.
pub fn stop_job(s: &AppState, id: &str) -> Response {
    if s.jobs.stop(id) {
        warp::reply::with_status(
            warp::reply::json(&json!({"id": id, "stopping": true})),
            StatusCode::ACCEPTED,
        )
        .into_response()
    } else {
        no_such_job(id)
    }
}

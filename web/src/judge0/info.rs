//! Judge0's information routes (`info_controller.rb`, `languages_controller.rb`,
//! `statuses_controller.rb`, `health_controller.rb`), filled from our language table, limits
//! and engine.
use super::callback::{self, Callbacks};
use super::languages;
use super::statuses::Status;
use super::submission::{Bounds, MAX_NUMBER_OF_RUNS, STACK_LIMIT};
use super::MAX_BATCH;
use crate::state::AppState;
use onpyrunner_supervisor::limits::Caps;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

/// The release whose API this is; the `judge0` SDK picks its language ids by it.
pub const VERSION: &str = "1.13.1";

pub fn json_reply(status: StatusCode, value: &Value) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

/// Rails' answer to a record it cannot find.
pub fn not_found() -> Response {
    json_reply(
        StatusCode::NOT_FOUND,
        &json!({"status": 404, "error": "Not Found"}),
    )
}

/// `GET /about`.
pub fn about() -> Response {
    json_reply(
        StatusCode::OK,
        &json!({
            "version": VERSION,
            // The IDE, served at `/`; this server has no public source URL to give (Judge0
            // leaves an unset variable null too).
            "homepage": "/",
            "source_code": null,
            "maintainer": "onpyrunner, serving Judge0 CE 1.13.1's API (docs/compat.md)",
        }),
    )
}

/// `GET /version`: the version as plain text.
pub fn version() -> Response {
    warp::reply::with_header(VERSION, "content-type", "text/plain; charset=utf-8").into_response()
}

/// `GET /config_info`: the 39 keys of 1.13.1, as this server applies them to `caps`'s
/// caller (the least bound of every language where they differ: docs/compat.md).
pub fn config_info(caps: &Caps, callbacks: &Callbacks, max_queue_size: usize) -> Response {
    let b = Bounds::everywhere(caps);
    json_reply(
        StatusCode::OK,
        &json!({
            "maintenance_mode": false,
            "enable_wait_result": true,
            "enable_compiler_options": false,
            "allowed_languages_for_compile_options": [],
            "enable_command_line_arguments": true,
            "enable_submission_delete": true,
            "enable_callbacks": callbacks.enabled(),
            "callbacks_max_tries": callback::TRIES,
            "callbacks_timeout": callback::TIMEOUT.as_secs_f64(),
            "enable_additional_files": false,
            "max_queue_size": max_queue_size,
            "cpu_time_limit": b.wall_time_limit,
            "max_cpu_time_limit": b.max_wall_time_limit,
            "cpu_extra_time": 0.0,
            "max_cpu_extra_time": b.max_wall_time_limit,
            "wall_time_limit": b.wall_time_limit,
            "max_wall_time_limit": b.max_wall_time_limit,
            "memory_limit": b.memory_limit,
            "max_memory_limit": b.max_memory_limit,
            "stack_limit": STACK_LIMIT.min(b.max_memory_limit),
            "max_stack_limit": b.max_memory_limit,
            "max_processes_and_or_threads": b.max_processes_and_or_threads,
            "max_max_processes_and_or_threads": b.max_max_processes_and_or_threads,
            "enable_per_process_and_thread_time_limit": false,
            "allow_enable_per_process_and_thread_time_limit": false,
            "enable_per_process_and_thread_memory_limit": false,
            "allow_enable_per_process_and_thread_memory_limit": false,
            "max_file_size": b.max_file_size,
            "max_max_file_size": b.max_max_file_size,
            "number_of_runs": 1,
            "max_number_of_runs": MAX_NUMBER_OF_RUNS,
            "redirect_stderr_to_stdout": false,
            "max_extract_size": 0,
            "enable_batched_submissions": true,
            "max_submission_batch_size": MAX_BATCH,
            "submission_cache_duration": 0.0,
            "use_docs_as_homepage": false,
            "allow_enable_network": false,
            "enable_network": false,
        }),
    )
}

/// `GET /system_info`: what `lscpu` and `free -h` would say of this machine, in part (the
/// architecture, CPUs, model and memory), read from /proc.
pub fn system_info() -> Response {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.trim_start_matches(':').split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let gib = |k: f64| format!("{:.1}Gi", k / 1024.0 / 1024.0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    json_reply(
        StatusCode::OK,
        &json!({
            "Architecture": std::env::consts::ARCH,
            "CPU(s)": cpus.to_string(),
            "Model name": model,
            "Mem": gib(kib("MemTotal")),
            "Swap": gib(kib("SwapTotal")),
        }),
    )
}

/// `GET /workers`: our engine as Judge0's one queue: `size` the runs waiting, `working` those
/// running, `idle` the sandboxes ready in the pools.
pub fn workers(s: &AppState) -> Response {
    let status = s.engine.status();
    let idle: usize = status.pools.iter().map(|p| p.ready).sum();
    json_reply(
        StatusCode::OK,
        &json!([{
            "queue": VERSION,
            "size": status.queued,
            "available": status.running + idle,
            "idle": idle,
            "working": status.running,
            "paused": 0,
            "failed": 0,
        }]),
    )
}

/// `GET /statuses`.
pub fn statuses() -> Response {
    let all: Vec<_> = Status::ALL.iter().map(|s| s.view()).collect();
    json_reply(StatusCode::OK, &json!(all))
}

/// `GET /languages`: `[{id, name}]` by name.
pub fn languages() -> Response {
    let list: Vec<Value> = languages::all()
        .iter()
        .map(|l| json!({"id": l.id, "name": l.name}))
        .collect();
    json_reply(StatusCode::OK, &json!(list))
}

/// `GET /languages/all`: with `is_archived` (none of ours is).
pub fn languages_all() -> Response {
    let list: Vec<Value> = languages::all()
        .iter()
        .map(|l| json!({"id": l.id, "name": l.name, "is_archived": l.is_archived}))
        .collect();
    json_reply(StatusCode::OK, &json!(list))
}

/// `GET /languages/{id}`.
pub fn language(id: &str) -> Response {
    match id.parse::<u32>().ok().and_then(languages::find) {
        Some(l) => json_reply(StatusCode::OK, &json!(l)),
        None => not_found(),
    }
}

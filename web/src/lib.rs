//! The `onpyrunner` binary's library: the command line, the benchmark and load test, and the
//! web service (REST, jobs with SSE, WebSocket sessions, metrics, OpenAPI).
pub mod api;
pub mod assets;
pub mod bench;
pub mod cli;
pub mod error;
pub mod job_log;
pub mod jobs;
pub mod load;
pub mod metrics;
pub mod openapi;
pub mod request;
pub mod router;
pub mod server;
pub mod sse;
pub mod state;
pub mod ws;
pub mod ws_config;

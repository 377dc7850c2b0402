//! The `onpyrunner` binary's library: the command line, the benchmark, and the web service
//! (REST API now; WebSocket sessions and the IDE next).
pub mod api;
pub mod bench;
pub mod cli;
pub mod job_log;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod server;
pub mod sse;

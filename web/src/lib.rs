//! The `onpyrunner` binary's library: the command line and the web service (REST, jobs with
//! SSE, WebSocket sessions, metrics, OpenAPI). The benchmark and the load test are the
//! `onpyrunner-bench` crate; the command line only parses their flags and calls them.
pub mod api;
pub mod assets;
pub mod body;
pub mod browser;
pub mod cli;
pub mod error;
pub mod identity;
pub mod jobs;
pub mod judge0;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod output_json;
pub mod piston;
pub mod piston_ws;
pub mod proxies;
pub mod quota;
pub mod request;
pub mod router;
pub mod server;
pub mod sse;
pub mod state;
pub mod tokens;
pub mod ws;
pub mod ws_config;
pub mod ws_socket;

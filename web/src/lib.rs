//! The `onpyrunner` binary's library: the command line, the benchmark, and the web service
//! (REST API now; WebSocket sessions and the IDE next).
pub mod api;
pub mod assets;
pub mod bench;
pub mod cli;
pub mod jobs;
pub mod server;

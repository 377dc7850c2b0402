//! The `onpyrunner` binary's library: the command line, the benchmark, and the web service
//! (REST, jobs and WebSocket sessions).
pub mod api;
pub mod assets;
pub mod bench;
pub mod cli;
pub mod jobs;
pub mod load;
pub mod server;
pub mod ws;

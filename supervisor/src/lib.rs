//! The engine: a Docker Engine API client, the image builder, sandboxed runs, the prewarmed
//! pools, the scheduler and run sessions.
pub mod cluster;
pub mod container;
pub mod docker;
pub mod engine;
pub mod error;
pub mod ids;
pub mod images;
pub mod judging;
pub mod limits;
pub mod metrics;
pub mod owner;
pub mod pool;
pub mod pool_sizing;
pub mod run;
pub mod run_log;
pub mod runner;
pub mod sandbox;
pub mod scheduler;
pub mod session;
pub mod uids;

//! The engine: a Docker Engine API client, the image builder and sandboxed runs.
pub mod docker;
pub mod images;
pub mod limits;
pub mod pool;
pub mod run;
pub mod sandbox;
pub mod scheduler;

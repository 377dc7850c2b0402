//! `onpyrunner bench`, `onpyrunner cluster-bench`, `onpyrunner load` and `onpyrunner attack` as a
//! library: the engine
//! measured against the real daemon and images, next to the baselines that give its figures a
//! meaning, the service measured under many WebSocket clients, and a well-behaved client's
//! latency among hostile ones. The `onpyrunner` binary parses the flags ([`bench::BenchArgs`],
//! [`load::LoadArgs`], [`attack::AttackArgs`]) and calls [`bench::run`], [`load::run`] or
//! [`attack::run`].
//!
//! - [`bench`]: the benchmark's order of work, from the pools filling to the report.
//! - [`latency`]: one language's hello world through the pool, a fresh container and
//!   `docker run`, run by run; [`paths`]: one run on each of those paths.
//! - [`breakdown`]: where the pooled path's time goes, on the supervisor's sandbox API.
//! - [`judged`]: judged runs, ten tests against one.
//! - [`output`]: 100,000 printed lines in a judged run against the same program outside the
//!   sandbox, in a chroot of the image ([`rootfs`]).
//! - [`compile`]: C++ compile time with the precompiled headers and without.
//! - [`throughput`]: runs per second through the engine next to the daemon's raw cycle rate.
//! - [`burst`]: five runs a second apart per language, through pools pinned and following demand.
//! - [`report`]: what one bench run measured and the targets; [`render`]: its Markdown.
//! - [`cluster`]: `onpyrunner cluster-bench`, the Redis hop and one worker against two, through a
//!   Redis of its own ([`redis_server`], which the cluster tests start too).
//! - [`load`]: the load test (and the server under test as a child process, which
//!   [`attack`] shares); [`attack`]: floods and slow connections; [`section`]: a report's own section of a Markdown file.
//! - [`stats`], [`machine`], [`engines`], [`plan`], [`hello`]: the pieces those share.
pub mod attack;
pub mod bench;
pub mod breakdown;
pub mod burst;
pub mod cluster;
pub mod compile;
pub mod engines;
pub mod hello;
pub mod judged;
pub mod latency;
pub mod load;
pub mod machine;
pub mod output;
pub mod paths;
pub mod plan;
pub mod redis_server;
pub mod render;
pub mod report;
pub mod rootfs;
pub mod section;
pub mod stats;
pub mod throughput;

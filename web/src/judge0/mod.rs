//! Judge0 CE's API (judge0/judge0, release 1.13.1) as a rendering of our runs, so that its
//! clients (the `judge0` Python SDK among them) work unchanged: the information routes from our
//! language table and limits, and submissions as jobs of our job table under Judge0's tokens.
//! A submission is validated as Judge0's model validates it, in its words, then becomes a
//! [`RunSpec`](onpyrunner_supervisor::run::RunSpec) held to the caller's caps like any run;
//! its status is chosen from the run's summary as Judge0's worker chooses it. docs/compat.md
//! says what differs and why.
pub mod callback;
pub mod info;
pub mod languages;
pub mod render;
pub mod statuses;
pub mod submission;
pub mod submissions;
pub mod text;

/// Judge0's `MAX_SUBMISSION_BATCH_SIZE`: submissions in one batch, created or read.
pub const MAX_BATCH: usize = 20;

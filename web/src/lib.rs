//! The `onpyrunner` binary's library: the command line now, the web service later.
pub mod bench;
pub mod cli;

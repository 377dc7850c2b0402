//! The `onpyrunner` binary's library: the command line now, the web service later.
pub mod cli;

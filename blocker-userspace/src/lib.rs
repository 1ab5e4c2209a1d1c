//! blocker's userspace: list parsing, the compiler from lists to tables, map loading
//! and swapping, the daemon and the statistics the CLI prints.

pub mod classifier;
pub mod compile;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fetch;
pub mod formats;
pub mod input;
pub mod inspect;
pub mod lists;
pub mod loader;
pub mod maps;
pub mod mmdb;
pub mod policy;
pub mod regions;
pub mod stats;
pub mod watch;

//! blocker's userspace, laid out by data flow; each layer uses only the ones above it:
//!
//! - `net`: addresses and prefixes; `clock`: durations, Unix seconds, ages;
//! - `source`: reading lists and region data (files, URLs through a cache);
//! - `policy`: what to enforce, as plain data, and the list specs it yields;
//! - `compile`: the disjoint table, and the classifier image built from it;
//! - `dataplane`: the XDP object, pins and locks, links, and map writes and swaps;
//! - `decisions`: bans that expire, beside the table (store, state file, maps);
//! - `events`: the sampled drop events, read from the ring buffers and streamed;
//! - `control`: the control socket's protocol (typed requests and replies), its
//!   server and client; `metrics`: the Prometheus endpoint;
//! - `fleet`: one signed policy for many hosts (signatures, keys, the etcd
//!   client, the publisher's commands and a host's follower);
//! - `tls`: TLS settings of the servers blocker is a client of;
//! - `config`: a TOML file as run options;
//! - `daemon`: the running daemon.
//!
//! The CLI (arguments and rendering) belongs to the `blocker` binary.
// Unit tests build without the dev-dependencies the benches use.
#![cfg_attr(test, allow(unused_crate_dependencies))]

// The binary's own dependencies (its arguments, log output and `blocker top`'s
// terminal view): cargo has no dependencies per target.
use {clap as _, env_logger as _, ratatui as _};

pub mod clock;
pub mod compile;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod decisions;
pub mod events;
pub mod fleet;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod source;
pub mod tls;

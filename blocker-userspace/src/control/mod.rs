//! The control socket: a Unix stream socket on which the daemon answers requests
//! (`protocol`), the daemon's side of it (`server`) and the CLI's (`client`).

pub mod client;
pub mod protocol;
pub mod report;
pub mod server;

//! blocker's programs: drop packets whose source address lies in a blocked range
//! (XDP), and outgoing packets to blocked destinations (tc egress).
//!
//! parse (parse.rs) -> classify the source (classify.rs) -> policy for the list id
//! -> verdict and counters (filter.rs). All per-packet state lives in per-CPU maps.
//! This object holds only what the daemon runs; the benchmark's programs are in
//! their own object (bench.rs).
// No std and no main where it runs; on the host (`cargo clippy --workspace`,
// `cargo check`) it builds as an ordinary binary that does nothing.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod classify;
mod events;
mod filter;
mod frame;
mod parse;
mod reject;
mod runtime;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// Inbound: every packet the interface receives, judged by its source.
#[xdp]
fn blocker(ctx: XdpContext) -> u32 {
    filter::inbound(&ctx, classify::scope_of, classify::lookup_v4, classify::lookup_v6)
}

/// Outbound (tc egress, TCX): every packet the interface sends, judged by its
/// destination in the outbound table. Attached only when the policy has
/// outbound lists.
#[classifier]
fn blocker_egress(ctx: TcContext) -> i32 {
    filter::outbound(&ctx, classify::outbound_scope(), classify::lookup_v4, classify::lookup_v6)
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

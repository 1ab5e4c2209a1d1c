//! The benchmark's object: programs the harness measures blocker against, which
//! the daemon never loads. It shares the filter and the parser with main.rs (the
//! same source files), and the interface's pinned maps when loaded with their
//! pin directory.
//!
//! - `drop_floor` / `pass_floor`: return XDP_DROP / XDP_PASS and nothing else.
//! - `blocker_lpm`: the filter with the kernel LPM trie as its classifier (filled
//!   by the harness with the same leaves).
//! - `blocker_no_lookup`: the filter with a classifier that reads no memory (every
//!   source hits list 1, dropped), so the harness can tell the classifier's cost
//!   from the rest of the program's.
//! - `trafficgen`: a traffic generator for BPF_PROG_TEST_RUN live-frames mode: it
//!   rewrites the IPv4 source address of an Ethernet+IPv4 frame with a random entry
//!   of GEN_POOL, fixes the header checksum and sends the frame back out (XDP_TX).
//! - `trafficgen6`: the same for Ethernet+IPv6 frames, from GEN_POOL6 (IPv6 has no
//!   header checksum).

// No std and no main where it runs; on the host (`cargo clippy --workspace`,
// `cargo check`) it builds as an ordinary binary that does nothing.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod events;
// The benchmark runs the inbound filter only (no egress program here).
#[allow(dead_code)]
mod filter;
mod frame;
mod parse;
mod reject;
mod runtime;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_prandom_u32,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, LpmTrie},
    programs::XdpContext,
};
use blocker_common::{
    bench::{GEN_POOL_SIZE, LPM_BASELINE_ENTRIES},
    classifier::leaf,
    wire::{ipv4_checksum, ETH_HLEN, IPV4_CHECKSUM_OFFSET, IPV4_MIN_HLEN, IPV4_SRC_OFFSET, IPV6_SRC_OFFSET},
    ACTION_DROP,
};

#[map]
static BLK_LPM_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(LPM_BASELINE_ENTRIES, 0);
#[map]
static BLK_LPM_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(LPM_BASELINE_ENTRIES, 0);

#[xdp]
fn blocker_lpm(ctx: XdpContext) -> u32 {
    filter::inbound(
        &ctx,
        |_, _| 0,
        |_, src| BLK_LPM_V4.get(Key::new(32, src)).map(|l| *l as u16),
        |_, src| BLK_LPM_V6.get(Key::new(128, src)).map(|l| *l as u16),
    )
}

#[xdp]
fn blocker_no_lookup(ctx: XdpContext) -> u32 {
    const HIT: u16 = leaf(ACTION_DROP, 1);
    filter::inbound(&ctx, |_, _| 0, |_, _| Some(HIT), |_, _| Some(HIT))
}

/// Source addresses (raw network-order bytes as u32).
#[map]
static GEN_POOL: Array<u32> = Array::with_max_entries(GEN_POOL_SIZE, 0);
/// IPv6 source addresses for `trafficgen6`.
#[map]
static GEN_POOL6: Array<[u8; 16]> = Array::with_max_entries(GEN_POOL_SIZE, 0);

#[xdp]
fn drop_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[xdp]
fn pass_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
fn trafficgen(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + ETH_HLEN + IPV4_MIN_HLEN > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: the helper takes no arguments and only returns a number.
    let index = unsafe { bpf_get_prandom_u32() } & (GEN_POOL_SIZE - 1);
    let Some(src) = GEN_POOL.get(index) else {
        return xdp_action::XDP_ABORTED;
    };
    let ip = (start + ETH_HLEN) as *mut [u8; IPV4_MIN_HLEN];
    // SAFETY: the 20-byte header lies inside the frame (checked above); frames
    // are not aligned, so it is read and written unaligned.
    let mut h = unsafe { core::ptr::read_unaligned(ip) };
    h[IPV4_SRC_OFFSET..IPV4_SRC_OFFSET + 4].copy_from_slice(&src.to_ne_bytes());
    h[IPV4_CHECKSUM_OFFSET..IPV4_CHECKSUM_OFFSET + 2].copy_from_slice(&[0, 0]);
    let c = ipv4_checksum(&h);
    h[IPV4_CHECKSUM_OFFSET..IPV4_CHECKSUM_OFFSET + 2].copy_from_slice(&c.to_be_bytes());
    // SAFETY: as above.
    unsafe { core::ptr::write_unaligned(ip, h) };
    xdp_action::XDP_TX
}

#[xdp]
fn trafficgen6(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let src_at = ETH_HLEN + IPV6_SRC_OFFSET;
    if start + src_at + 16 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: the helper takes no arguments and only returns a number.
    let index = unsafe { bpf_get_prandom_u32() } & (GEN_POOL_SIZE - 1);
    let Some(src) = GEN_POOL6.get(index) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: the 16-byte source address lies inside the frame (checked above).
    unsafe { core::ptr::write_unaligned((start + src_at) as *mut [u8; 16], *src) };
    xdp_action::XDP_TX
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

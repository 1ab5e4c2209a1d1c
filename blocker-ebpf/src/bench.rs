//! Programs for the benchmark harness only; the daemon never attaches them.
//!
//! - `drop_floor` / `pass_floor`: return XDP_DROP / XDP_PASS and nothing else.
//! - `blocker_lpm`: the filter with the kernel LPM trie as its classifier (main.rs).
//! - `trafficgen`: a traffic generator for BPF_PROG_TEST_RUN live-frames mode: it
//!   rewrites the IPv4 source address of an Ethernet+IPv4 frame with a random entry
//!   of GEN_POOL, fixes the header checksum and sends the frame back out (XDP_TX).
//! - `trafficgen6`: the same for Ethernet+IPv6 frames, from GEN_POOL6 (IPv6 has no
//!   header checksum).

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_prandom_u32,
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use blocker_common::GEN_POOL_SIZE;

/// Source addresses (raw network-order bytes as u32).
#[map]
static GEN_POOL: Array<u32> = Array::with_max_entries(GEN_POOL_SIZE, 0);
/// IPv6 source addresses for `trafficgen6`.
#[map]
static GEN_POOL6: Array<[u8; 16]> = Array::with_max_entries(GEN_POOL_SIZE, 0);

#[xdp]
pub fn drop_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[xdp]
pub fn pass_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

const IP_OFFSET: usize = 14;
const IP_HLEN: usize = 20;

#[xdp]
pub fn trafficgen(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + IP_OFFSET + IP_HLEN > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: random index masked into the pool's bounds.
    let index = unsafe { bpf_get_prandom_u32() } & (GEN_POOL_SIZE - 1);
    let Some(src) = GEN_POOL.get(index) else {
        return xdp_action::XDP_ABORTED;
    };
    let ip = (start + IP_OFFSET) as *mut [u8; IP_HLEN];
    // SAFETY: the 20-byte header lies inside the frame (checked above).
    unsafe {
        let mut h = core::ptr::read_unaligned(ip);
        h[12..16].copy_from_slice(&src.to_ne_bytes());
        h[10] = 0;
        h[11] = 0;
        let mut sum: u32 = 0;
        let mut i = 0;
        while i < IP_HLEN {
            sum += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
            i += 2;
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let c = !(sum as u16);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        core::ptr::write_unaligned(ip, h);
    }
    xdp_action::XDP_TX
}

const IP6_SRC_OFFSET: usize = IP_OFFSET + 8;

#[xdp]
pub fn trafficgen6(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + IP6_SRC_OFFSET + 16 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: random index masked into the pool's bounds.
    let index = unsafe { bpf_get_prandom_u32() } & (GEN_POOL_SIZE - 1);
    let Some(src) = GEN_POOL6.get(index) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: the 16-byte source address lies inside the frame (checked above).
    unsafe { core::ptr::write_unaligned((start + IP6_SRC_OFFSET) as *mut [u8; 16], *src) };
    xdp_action::XDP_TX
}

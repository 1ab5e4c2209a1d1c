//! blocker's XDP program: drop packets whose source address lies in a blocked range.
//!
//! parse (parse.rs) -> classify the source (classify.rs) -> policy for the list id
//! -> verdict and counters. All per-packet state lives in per-CPU maps.
#![no_std]
#![no_main]

mod bench;
mod classify;
mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::trace;
use blocker_common::{
    classifier::{leaf_action, leaf_list, LEAF_NONE},
    config, counter, ListInfo, ListStats, ACTION_DROP, ACTION_MONITOR, ACTION_PASS, EBPF_LOG_TARGET, MAX_LISTS,
    MODE_MONITOR,
};
use parse::Packet;

// Shared by every program instance of an interface (pinned): the mode, the
// counters and the names of list ids. The classifier maps are per table
// (classify.rs).
#[map]
static BLK_CONFIG: Array<u32> = Array::pinned(config::SLOTS, 0);
#[map]
static BLK_LIST_STATS: PerCpuArray<ListStats> = PerCpuArray::pinned(MAX_LISTS, 0);
#[map]
static BLK_GLOBAL_STATS: PerCpuArray<u64> = PerCpuArray::pinned(counter::COUNT, 0);
/// Names of list ids for userspace; declared here so it is pinned with the rest.
#[map]
static BLK_LIST_INFO: Array<ListInfo> = Array::pinned(MAX_LISTS, 0);

#[xdp]
pub fn blocker(ctx: XdpContext) -> u32 {
    filter(&ctx, classify::lookup_v4, classify::lookup_v6)
}

/// Benchmark baseline: the same program with the kernel LPM trie as classifier.
#[xdp]
pub fn blocker_lpm(ctx: XdpContext) -> u32 {
    filter(&ctx, classify::lpm_baseline_v4, classify::lpm_baseline_v6)
}

/// Benchmark profile: the same program with a classifier that reads no memory
/// (every source hits list 1, dropped), so the harness can tell the classifier's
/// cost from the rest of the program's.
#[xdp]
pub fn blocker_no_lookup(ctx: XdpContext) -> u32 {
    const HIT: u16 = blocker_common::classifier::leaf(ACTION_DROP, 1);
    filter(&ctx, |_| Some(HIT), |_| Some(HIT))
}

/// parse -> classify (a leaf: list id and action) -> verdict and counters.
#[inline(always)]
fn filter(
    ctx: &XdpContext,
    lookup_v4: impl Fn([u8; 4]) -> Option<u16>,
    lookup_v6: impl Fn([u8; 16]) -> Option<u16>,
) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    let leaf = match parse::parse(ctx) {
        Packet::V4 { src } => lookup_v4(src),
        Packet::V6 { src } => lookup_v6(src),
        Packet::NonIp => return count(counter::NON_IP, xdp_action::XDP_PASS),
        Packet::Malformed => return count(counter::MALFORMED, xdp_action::XDP_PASS),
    };
    let leaf = leaf.unwrap_or(LEAF_NONE);
    let (list_id, action) = (leaf_list(leaf), leaf_action(leaf));
    if leaf == LEAF_NONE || list_id >= MAX_LISTS {
        return count(counter::PASSED, xdp_action::XDP_PASS);
    }
    trace!(ctx, target: EBPF_LOG_TARGET, "list {} action {}", list_id, action);
    if action != ACTION_DROP && action != ACTION_MONITOR && action != ACTION_PASS {
        return count(counter::PASSED, xdp_action::XDP_PASS);
    }
    if let Some(stats) = BLK_LIST_STATS.get_ptr_mut(list_id) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += frame_len;
        }
    }
    let monitor_mode = matches!(BLK_CONFIG.get(config::MODE), Some(m) if *m == MODE_MONITOR);
    match action {
        ACTION_DROP if !monitor_mode => count(counter::DROPPED, xdp_action::XDP_DROP),
        ACTION_DROP | ACTION_MONITOR => count(counter::MONITORED, xdp_action::XDP_PASS),
        _ => count(counter::PASSED, xdp_action::XDP_PASS),
    }
}

#[inline(always)]
fn count(index: u32, verdict: u32) -> u32 {
    if let Some(c) = BLK_GLOBAL_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, see above.
        unsafe { *c += 1 };
    }
    verdict
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

//! The filter every program variant shares: parse -> classify (a leaf: list id
//! and action) -> verdict, counters and a sampled event, with the maps every program instance of
//! an interface shares (pinned). The classifier is a parameter, so that the
//! benchmark object can run the same filter over other classifiers.

use aya_ebpf::{
    bindings::xdp_action,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::trace;
use blocker_common::{
    classifier::{leaf_action, leaf_list, LEAF_NONE},
    config, counter,
    scope::SCOPE_NONE,
    ListInfo, ListStats, ACTION_DROP, ACTION_MONITOR, ACTION_PASS, ACTION_REJECT, EBPF_LOG_TARGET, MAX_LISTS,
    MODE_MONITOR,
};

use crate::{
    events,
    parse::{self, Packet},
    reject,
};

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

/// parse -> classify (a leaf: list id and action) -> verdict and counters.
#[inline(always)]
pub(crate) fn filter(
    ctx: &XdpContext,
    scope_of: impl Fn(&XdpContext, &Packet) -> u32,
    lookup_v4: impl Fn(u32, [u8; 4]) -> Option<u16>,
    lookup_v6: impl Fn(u32, [u8; 16]) -> Option<u16>,
) -> u32 {
    let frame_len = (ctx.data_end() - ctx.data()) as u64;
    let packet = parse::parse(ctx);
    match packet {
        Packet::NonIp => return count(counter::NON_IP, xdp_action::XDP_PASS),
        Packet::Malformed => return count(counter::MALFORMED, xdp_action::XDP_PASS),
        Packet::V4 { .. } | Packet::V6 { .. } => {}
    }
    // Outside every scope of the policy: passed, and counted so.
    let scope = scope_of(ctx, &packet);
    if scope == u32::from(SCOPE_NONE) {
        return count(counter::PASSED, xdp_action::XDP_PASS);
    }
    let leaf = match packet {
        Packet::V4 { src, .. } => lookup_v4(scope, src),
        Packet::V6 { src, .. } => lookup_v6(scope, src),
        Packet::NonIp | Packet::Malformed => None,
    };
    let leaf = leaf.unwrap_or(LEAF_NONE);
    let (list_id, action) = (leaf_list(leaf), leaf_action(leaf));
    if leaf == LEAF_NONE || list_id >= MAX_LISTS {
        return count(counter::PASSED, xdp_action::XDP_PASS);
    }
    trace!(ctx, target: EBPF_LOG_TARGET, "list {} action {}", list_id, action);
    if action != ACTION_DROP && action != ACTION_MONITOR && action != ACTION_PASS && action != ACTION_REJECT {
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
    let (verdict, xdp) = match action {
        ACTION_DROP if !monitor_mode => (counter::DROPPED, xdp_action::XDP_DROP),
        ACTION_REJECT if !monitor_mode => (counter::REJECTED, xdp_action::XDP_TX),
        ACTION_DROP | ACTION_REJECT | ACTION_MONITOR => (counter::MONITORED, xdp_action::XDP_PASS),
        _ => return count(counter::PASSED, xdp_action::XDP_PASS),
    };
    let config = |slot| BLK_CONFIG.get(slot).map_or(0, |v| u64::from(*v));
    // The event first: an answer rewrites the frame.
    events::sample(ctx, &packet, config(config::EVENT_INTERVAL_NS), list_id, action, verdict);
    if verdict == counter::REJECTED && !reject::answer(ctx, &packet, config(config::REJECT_INTERVAL_NS)) {
        // Past the reject rate, or a packet that is never answered: dropped.
        return count(counter::DROPPED, xdp_action::XDP_DROP);
    }
    count(verdict, xdp)
}

#[inline(always)]
fn count(index: u32, verdict: u32) -> u32 {
    if let Some(c) = BLK_GLOBAL_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, see above.
        unsafe { *c += 1 };
    }
    verdict
}

//! The filter every program variant shares: parse -> classify (a leaf: list id
//! and action) -> verdict, counters and a sampled event, with the maps every
//! program instance of an interface shares (pinned). The classifier is a
//! parameter, so that the benchmark object can run the same filter over other
//! classifiers; the frame is one, so that the same filter judges inbound (XDP,
//! by source) and outbound (tc egress, by destination) packets.

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    helpers::bpf_redirect,
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use aya_log_ebpf::trace;
use blocker_common::{
    bans::{self, BanEntry, BanKeyV4, BanKeyV6},
    classifier::{leaf_action, leaf_list, LEAF_NONE},
    config, counter,
    scope::SCOPE_NONE,
    ListInfo, ListName, ListStats, ACTION_DROP, ACTION_MONITOR, ACTION_PASS, ACTION_REJECT, EBPF_LOG_TARGET,
    LIST_NEVER_BLOCK, LIST_SHIELDS_BANS, MAX_LISTS, MODE_MONITOR,
};

use crate::{
    frame::Frame,
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
/// One set of `counter`s per direction (`counter::index`).
#[map]
static BLK_GLOBAL_STATS: PerCpuArray<u64> = PerCpuArray::pinned(counter::SLOTS, 0);
/// What list ids mean, for userspace; declared here so they are pinned with
/// the rest.
#[map]
static BLK_LIST_INFO: Array<ListInfo> = Array::pinned(MAX_LISTS, 0);
#[map]
static BLK_LIST_NAMES: HashMap<u32, ListName> = HashMap::pinned(MAX_LISTS, BPF_F_NO_PREALLOC);
/// Bans (`blocker_common::bans`): shared by every program instance, so that a
/// reload of the lists never touches them.
#[map]
static BLK_BANS_V4: HashMap<BanKeyV4, BanEntry> = HashMap::pinned(bans::DEFAULT_MAX_BANS, BPF_F_NO_PREALLOC);
#[map]
static BLK_BANS_V6: HashMap<BanKeyV6, BanEntry> = HashMap::pinned(bans::DEFAULT_MAX_BANS, BPF_F_NO_PREALLOC);
#[map]
static BLK_BAN_LENGTHS: Array<u64> = Array::pinned(bans::LENGTH_WORDS, 0);
#[map]
static BLK_BAN_FILTER: Array<u64> = Array::pinned(bans::FILTER_WORDS, BPF_F_MMAPABLE);

/// What the program does with a packet; each program type says it in its own
/// return codes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Pass,
    Drop,
    /// The frame now holds the answer to the packet (reject.rs): send it back.
    Answer,
}

/// The inbound filter (XDP): judged by source, answers sent back out of the
/// interface (XDP_TX), dropped and monitored packets sampled as events.
#[inline(always)]
pub(crate) fn inbound(
    ctx: &XdpContext,
    scope_of: impl Fn(&XdpContext, &Packet) -> u32,
    lookup_v4: impl Fn(u32, [u8; 4]) -> Option<u16>,
    lookup_v6: impl Fn(u32, [u8; 16]) -> Option<u16>,
) -> u32 {
    match filter::<_, false>(ctx, scope_of, lookup_v4, lookup_v6) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Answer => xdp_action::XDP_TX,
    }
}

// tc's return codes and the redirect flag, as the kernel's UAPI defines them
// (the bindings' integer types differ between targets).
/// TC_ACT_UNSPEC: TCX goes on to the next program, else the packet passes.
const TC_NEXT: i32 = -1;
/// TC_ACT_SHOT.
const TC_DROP: i32 = 2;
/// BPF_F_INGRESS: redirect to the device's receive path.
const REDIRECT_INGRESS: u64 = 1;

/// Bytes of an outbound packet the program reads directly: pulled into the
/// socket buffer's linear part first when it holds fewer (headers of locally
/// made packets are there already).
const EGRESS_HEADER_BYTES: usize = 128;

/// The outbound filter (tc egress, TCX): judged by destination in the table
/// `scope`; an answer goes into this host's own stack, as if it came from the
/// destination (redirect to the interface's ingress), so a local `connect`
/// fails at once. A passed packet goes on to the next TCX program (if any).
#[inline(always)]
pub(crate) fn outbound(
    ctx: &TcContext,
    scope: u32,
    lookup_v4: impl Fn(u32, [u8; 4]) -> Option<u16>,
    lookup_v6: impl Fn(u32, [u8; 16]) -> Option<u16>,
) -> i32 {
    let want = (ctx.len() as usize).min(EGRESS_HEADER_BYTES);
    if ctx.data_end() - ctx.data() < want {
        // Best effort: a packet whose headers stay out of reach is judged
        // malformed and passed, as inbound.
        let _ = ctx.pull_data(want as u32);
    }
    match filter::<_, true>(ctx, |_, _| scope, lookup_v4, lookup_v6) {
        Verdict::Pass => TC_NEXT,
        Verdict::Drop => TC_DROP,
        Verdict::Answer => {
            // SAFETY: reads a field of the program's own socket buffer.
            let ifindex = unsafe { (*ctx.skb.skb).ifindex };
            // SAFETY: the helper only takes values.
            unsafe { bpf_redirect(ifindex, REDIRECT_INGRESS) as i32 }
        }
    }
}

/// parse -> classify (a leaf: list id and action) -> verdict and counters.
/// `OUTBOUND`: the packet is judged by its destination and counted as
/// outbound. Dropped and monitored hits go to the frame's event sampler.
#[inline(always)]
pub(crate) fn filter<F: Frame + EbpfContext, const OUTBOUND: bool>(
    ctx: &F,
    scope_of: impl Fn(&F, &Packet) -> u32,
    lookup_v4: impl Fn(u32, [u8; 4]) -> Option<u16>,
    lookup_v6: impl Fn(u32, [u8; 16]) -> Option<u16>,
) -> Verdict {
    let count = |c: u32, verdict: Verdict| count(counter::index(OUTBOUND, c), verdict);
    let frame_len = ctx.len() as u64;
    let packet = parse::parse::<F, OUTBOUND>(ctx);
    match packet {
        Packet::NonIp => return count(counter::NON_IP, Verdict::Pass),
        Packet::Malformed => return count(counter::MALFORMED, Verdict::Pass),
        Packet::V4 { .. } | Packet::V6 { .. } => {}
    }
    // The ban first, right after the parse: the verifier walks the bans
    // from the few states a parse ends in. A raw pointer, null for none: an
    // Option's undefined payload would be spilled as an uninitialised
    // register, which the verifier refuses.
    let ban = if OUTBOUND { core::ptr::null_mut() } else { find_ban(&packet) };
    // Outside every scope of the policy: no table judges it (only a ban may).
    let scope = scope_of(ctx, &packet);
    let in_scope = scope != u32::from(SCOPE_NONE);
    if !in_scope && ban.is_null() {
        return count(counter::PASSED, Verdict::Pass);
    }
    // One table lookup: the packet's scope; outside every scope (a banned
    // source), the first table, where the never-block ranges are as in all.
    let leaf = match packet {
        Packet::V4 { addr, .. } => lookup_v4(if in_scope { scope } else { 0 }, addr),
        Packet::V6 { addr, .. } => lookup_v6(if in_scope { scope } else { 0 }, addr),
        Packet::NonIp | Packet::Malformed => None,
    }
    .unwrap_or(LEAF_NONE);
    let (mut list_id, mut action) = (leaf_list(leaf), leaf_action(leaf));
    if leaf == LEAF_NONE || !in_scope {
        action = 0;
    }
    // A ban of the source, unless the table passes it by a list that wins
    // over bans (never-block ranges everywhere, allow lists in their scope).
    if !ban.is_null() {
        let flags = if leaf != LEAF_NONE && leaf_action(leaf) == ACTION_PASS { list_flags(leaf_list(leaf)) } else { 0 };
        let shield = if in_scope { LIST_SHIELDS_BANS } else { LIST_NEVER_BLOCK };
        if flags & shield == 0 {
            // SAFETY: a map value the kernel keeps while the program runs.
            // A plain add (the BPF target has no atomic add in core):
            // CPUs that count the same ban at the same instant may lose
            // a count; the origin's per-CPU counter below stays exact.
            unsafe {
                (*ban).packets += 1;
                (list_id, action) = ((*ban).list_id, (*ban).action);
            }
        }
    }
    if action == 0 || list_id >= MAX_LISTS {
        return count(counter::PASSED, Verdict::Pass);
    }
    trace!(ctx, target: EBPF_LOG_TARGET, "list {} action {}", list_id, action);
    if action != ACTION_DROP && action != ACTION_MONITOR && action != ACTION_PASS && action != ACTION_REJECT {
        return count(counter::PASSED, Verdict::Pass);
    }
    if let Some(stats) = BLK_LIST_STATS.get_ptr_mut(list_id) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += frame_len;
        }
    }
    let monitor_mode = matches!(BLK_CONFIG.get(config::MODE), Some(m) if *m == MODE_MONITOR);
    let (verdict, then) = match action {
        ACTION_DROP if !monitor_mode => (counter::DROPPED, Verdict::Drop),
        ACTION_REJECT if !monitor_mode => (counter::REJECTED, Verdict::Answer),
        ACTION_DROP | ACTION_REJECT | ACTION_MONITOR => (counter::MONITORED, Verdict::Pass),
        _ => return count(counter::PASSED, Verdict::Pass),
    };
    let config = |slot| BLK_CONFIG.get(slot).map_or(0, |v| u64::from(*v));
    // The event first: an answer rewrites the frame.
    ctx.sample(&packet, config(config::EVENT_INTERVAL_NS), list_id, action, verdict);
    if verdict == counter::REJECTED && !reject::answer(ctx, &packet, config(config::REJECT_INTERVAL_NS)) {
        // Past the reject rate, or a packet that is never answered: dropped.
        return count(counter::DROPPED, Verdict::Drop);
    }
    count(verdict, then)
}

#[inline(always)]
fn count(index: u32, verdict: Verdict) -> Verdict {
    if let Some(c) = BLK_GLOBAL_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, see above.
        unsafe { *c += 1 };
    }
    verdict
}

/// The ban that holds the packet's source now (null: no ban, or none of its
/// family at all, which costs one read).
#[inline(always)]
fn find_ban(packet: &Packet) -> *mut BanEntry {
    let word = |w: u32| BLK_BAN_LENGTHS.get(w).copied().unwrap_or(0);
    match *packet {
        Packet::V4 { addr, .. } => {
            let lengths = word(bans::V4_WORD);
            if lengths == 0 {
                return core::ptr::null_mut();
            }
            find_ban_v4(lengths, u32::from_be_bytes(addr))
        }
        Packet::V6 { addr, .. } => {
            let words = [word(bans::V6_FIRST_WORD), word(bans::V6_FIRST_WORD + 1), word(bans::V6_FIRST_WORD + 2)];
            if words[0] | words[1] | words[2] == 0 {
                return core::ptr::null_mut();
            }
            let hi = u64::from_be_bytes([addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7]]);
            let lo = u64::from_be_bytes([addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15]]);
            find_ban_v6(words[0], words[1], words[2], hi, lo)
        }
        Packet::NonIp | Packet::Malformed => core::ptr::null_mut(),
    }
}

// The walks are functions of their own (BPF-to-BPF calls): the verifier then
// goes on from one state after the call, not from one per loop round, which
// would make it walk the rest of the program once for each prefix length.

#[inline(never)]
fn find_ban_v4(lengths: u64, addr: u32) -> *mut BanEntry {
    // SAFETY: the helper takes no arguments.
    let now = || unsafe { aya_ebpf::helpers::bpf_ktime_get_boot_ns() };
    // SAFETY: a lookup; the value stays valid while the program runs.
    match bans::find_v4(lengths, addr, in_filter, |k| unsafe { BLK_BANS_V4.get(k) }, now) {
        Some((_, e)) => e as *const BanEntry as *mut BanEntry,
        None => core::ptr::null_mut(),
    }
}

#[inline(never)]
fn find_ban_v6(w0: u64, w1: u64, w2: u64, hi: u64, lo: u64) -> *mut BanEntry {
    let words = [w0, w1, w2];
    // SAFETY: as above.
    let now = || unsafe { aya_ebpf::helpers::bpf_ktime_get_boot_ns() };
    // SAFETY: as above.
    match bans::find_v6(words, hi, lo, in_filter, |k| unsafe { BLK_BANS_V6.get(k) }, now) {
        Some((_, e)) => e as *const BanEntry as *mut BanEntry,
        None => core::ptr::null_mut(),
    }
}

/// Whether bit `bit` of the ban filter is set (a ban may hold the key).
#[inline(always)]
fn in_filter(bit: u32) -> bool {
    BLK_BAN_FILTER.get(bit >> 6).is_some_and(|w| (*w >> (bit & 63)) & 1 != 0)
}

/// The `LIST_*` flags of list `id` (0 for an id out of range).
#[inline(always)]
fn list_flags(id: u32) -> u32 {
    BLK_LIST_INFO.get(id).map_or(0, |i| i.flags)
}

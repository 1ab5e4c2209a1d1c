//! Sampled drop events: a per-CPU token bucket decides whether a dropped or
//! monitored packet is written to the interface's ring buffer. Both maps are
//! pinned, so every program instance of an interface shares them (the reader
//! and the counters outlive a reload).

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{PerCpuArray, RingBuf},
    programs::XdpContext,
};
use blocker_common::events::{take_token, DropEvent, EventState, FAMILY_V4, FAMILY_V6, RING_BYTES};

use crate::parse::{self, Packet};

#[map]
static BLK_EVENTS: RingBuf = RingBuf::pinned(RING_BYTES, 0);
#[map]
static BLK_EVENT_STATE: PerCpuArray<EventState> = PerCpuArray::pinned(1, 0);

/// Writes an event for `packet` if this CPU's bucket holds `interval_ns` of
/// credit (0: events are off). Runs only for packets that hit a list and are
/// dropped or monitored; the L4 header is parsed only for a sampled packet.
#[inline(always)]
pub(crate) fn sample(ctx: &XdpContext, packet: &Packet, interval_ns: u64, list_id: u32, action: u32, verdict: u32) {
    if interval_ns == 0 {
        return;
    }
    let Some(state) = BLK_EVENT_STATE.get_ptr_mut(0) else { return };
    // SAFETY: the helper takes no arguments and only returns the time.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
    let state = unsafe { &mut *state };
    if !take_token(&mut state.last_ns, &mut state.credit_ns, now, interval_ns) {
        state.rate_limited += 1;
        return;
    }
    let Some(mut entry) = BLK_EVENTS.reserve::<DropEvent>(0) else {
        state.ring_full += 1;
        return;
    };
    let (family, src) = match *packet {
        Packet::V4 { addr: src, .. } => {
            let mut wide = [0u8; 16];
            wide[..4].copy_from_slice(&src);
            (FAMILY_V4, wide)
        }
        Packet::V6 { addr: src, .. } => (FAMILY_V6, src),
        Packet::NonIp | Packet::Malformed => {
            entry.discard(0);
            return;
        }
    };
    let Some(l4) = parse::l4(ctx, packet) else {
        entry.discard(0);
        return;
    };
    entry.write(DropEvent {
        time_ns: now,
        src,
        ifindex: ctx.ingress_ifindex() as u32,
        frame_len: (ctx.data_end() - ctx.data()) as u32,
        list_id: list_id as u16,
        dst_port: l4.dst_port,
        family,
        protocol: l4.protocol,
        action: action as u8,
        verdict: verdict as u8,
        flags: l4.flags,
        _pad: [0; 7],
    });
    entry.submit(0);
    state.sent += 1;
}

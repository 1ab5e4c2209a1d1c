//! Sampled drop events: what the XDP program writes to the `BLK_EVENTS` ring
//! buffer for a dropped or monitored packet, and the per-CPU token bucket that
//! bounds how many it writes (`BLK_EVENT_STATE`).

/// Bytes of each interface's ring buffer (a power of two, whole pages): about
/// 18,000 events, minutes of the default rate on a small host, and seconds of
/// a busy many-CPU one while the reader is held up.
pub const RING_BYTES: u32 = 1 << 20;

/// The most token-bucket credit a CPU saves up: one second's worth, so a burst
/// after a quiet spell is at most one second of the rate.
pub const BURST_NS: u64 = 1_000_000_000;

/// `DropEvent::family`.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// `DropEvent::flags`: the packet is a fragment other than the first, so it has
/// no L4 header (`dst_port` is 0).
pub const FLAG_LATER_FRAGMENT: u8 = 1;
/// The L4 header could not be reached: the frame ends first, or more IPv6
/// extension headers come before it than the parser walks (`dst_port` is 0).
pub const FLAG_NO_L4: u8 = 2;

/// One sampled packet. 48 bytes, no padding (every field is read by
/// userspace as plain data).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct DropEvent {
    /// CLOCK_MONOTONIC at tick resolution (`bpf_ktime_get_coarse_ns`).
    pub time_ns: u64,
    /// Source address as on the wire; IPv4 in the first 4 bytes.
    pub src: [u8; 16],
    /// The interface the packet came in on.
    pub ifindex: u32,
    /// Whole frame length, Ethernet header included.
    pub frame_len: u32,
    pub list_id: u16,
    /// Destination port (TCP, UDP, SCTP, UDP-Lite, DCCP); 0 otherwise.
    pub dst_port: u16,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
    /// IP protocol number of the L4 header (IPv6: after the extension headers).
    pub protocol: u8,
    /// The list's action (`ACTION_*`).
    pub action: u8,
    /// What happened (`counter::DROPPED`, `counter::MONITORED` or `counter::REJECTED`).
    pub verdict: u8,
    /// `FLAG_*`.
    pub flags: u8,
    pub _pad: [u8; 7],
}

/// Value of the per-CPU `BLK_EVENT_STATE` array (one entry): the CPU's token
/// bucket and what became of the packets it sampled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct EventState {
    /// When the bucket was last looked at (the event clock).
    pub last_ns: u64,
    /// Credit saved up, in nanoseconds, at most `BURST_NS`.
    pub credit_ns: u64,
    /// Events written to the ring buffer.
    pub sent: u64,
    /// Packets not sampled: the bucket was empty.
    pub rate_limited: u64,
    /// Events lost: the ring buffer was full (nobody reading, or too slowly).
    pub ring_full: u64,
}

/// Protocols whose destination port is the second 16-bit word of the L4 header.
#[inline(always)]
pub const fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 33 | 132 | 136)
}

/// A per-CPU token bucket (the reject answers'), with what it let through and
/// what it held back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Bucket {
    pub last_ns: u64,
    pub credit_ns: u64,
    pub taken: u64,
    pub refused: u64,
}

/// One token of a bucket that last looked at the clock at `*last_ns` and holds
/// `*credit_ns` of credit, at `now`, for `interval_ns` each: true if taken.
/// Credit builds up with time, at most `BURST_NS`.
#[inline(always)]
pub fn take_token(last_ns: &mut u64, credit_ns: &mut u64, now: u64, interval_ns: u64) -> bool {
    let credit = (*credit_ns + now.wrapping_sub(*last_ns).min(BURST_NS)).min(BURST_NS);
    *last_ns = now;
    if credit < interval_ns {
        *credit_ns = credit;
        return false;
    }
    *credit_ns = credit - interval_ns;
    true
}

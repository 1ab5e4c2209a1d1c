//! Reject: the answer to a packet of a reject list, built in place from the
//! packet and sent back where it came from: inbound out of the interface it
//! came in on (XDP_TX), outbound into this host's own stack, as if it came in
//! from the destination (tc redirect to ingress: `connect` fails at once):
//! - TCP: a RST (for a segment without ACK, such as a SYN: RST+ACK that
//!   acknowledges it);
//! - other IPv4: ICMP destination unreachable, administratively prohibited
//!   (3/13), quoting the packet's IP header and 8 bytes;
//! - other IPv6: ICMPv6 destination unreachable, administratively prohibited
//!   (1/1), quoting the packet's first 48 bytes.
//!
//! A per-CPU token bucket bounds the answers (the interface's rate divided
//! among the CPUs), so a flood from spoofed sources cannot make blocker a
//! reflector: past it, and for what must never be answered (a RST, an ICMP
//! error, a later fragment, a packet too short to quote, IPv4 options, a
//! packet sent to a group or from an address of no single host), the packet
//! is only dropped.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, macros::map, maps::PerCpuArray};
use blocker_common::{
    events::{take_token, Bucket},
    wire::{
        ipv4_checksum, is_group_mac, is_single_host_v4, is_single_host_v6, ETH_HLEN, IPPROTO_ICMP, IPPROTO_ICMPV6,
        IPPROTO_TCP, IPV4_MIN_HLEN, IPV4_SRC_OFFSET, IPV6_DST_OFFSET, IPV6_HLEN, IPV6_SRC_OFFSET,
    },
};

use crate::{
    frame::Frame,
    parse::{self, read_at, write_at, Packet},
};

#[map]
static BLK_REJECT_STATE: PerCpuArray<Bucket> = PerCpuArray::pinned(1, 0);

const TCP_HLEN: usize = 20;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const ICMP_HLEN: usize = 8;
/// What an ICMPv4 error quotes: the IP header (without options) and 8 bytes.
const QUOTE_V4: usize = IPV4_MIN_HLEN + 8;
/// What an ICMPv6 error quotes: the IPv6 header and 8 bytes.
const QUOTE_V6: usize = IPV6_HLEN + 8;
/// The Ethernet header and up to two VLAN tags, copied to the front whole.
const MAX_L2: usize = ETH_HLEN + 8;
const TTL: u8 = 64;

/// Answers `packet` if the bucket allows it and the packet may be answered;
/// true: the frame now holds the answer (return XDP_TX).
#[inline(always)]
pub(crate) fn answer<F: Frame>(ctx: &F, packet: &Packet, interval_ns: u64) -> bool {
    if interval_ns == 0 {
        return false;
    }
    let Some(l4) = parse::l4(ctx, packet) else { return false };
    // Only the first fragment (or a whole packet) is answered.
    if l4.flags & blocker_common::events::FLAG_LATER_FRAGMENT != 0 || !between_single_hosts(ctx, packet) {
        return false;
    }
    let Some(bucket) = BLK_REJECT_STATE.get_ptr_mut(0) else { return false };
    // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
    let bucket = unsafe { &mut *bucket };
    // SAFETY: the helper takes no arguments and only returns the time.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if !take_token(&mut bucket.last_ns, &mut bucket.credit_ns, now, interval_ns) {
        bucket.refused += 1;
        return false;
    }
    let sent = match *packet {
        Packet::V4 { l3, ihl, .. } if l4.protocol == IPPROTO_TCP && l4.at != 0 => tcp_v4(ctx, l3, ihl),
        Packet::V4 { l3, ihl, protocol, .. } => ihl == IPV4_MIN_HLEN && icmp_v4(ctx, l3, protocol),
        Packet::V6 { l3, .. } if l4.protocol == IPPROTO_TCP && l4.at != 0 => tcp_v6(ctx, l3, l4.at),
        Packet::V6 { l3, .. } => icmp_v6(ctx, l3, l4.protocol, l4.at),
        Packet::NonIp | Packet::Malformed => false,
    };
    if sent {
        bucket.taken += 1;
    }
    sent
}

/// Whether the packet went from one host to one host, at both layers: no
/// answer to a packet sent to a broadcast or multicast address (Ethernet or
/// IP), nor to one whose source names no single host (RFC 1122 3.2.2, RFC
/// 4443 2.4). Otherwise every host of a LAN would answer one spoofed packet,
/// and the answer would come from a group address.
#[inline(always)]
fn between_single_hosts<F: Frame>(ctx: &F, packet: &Packet) -> bool {
    let Some(macs) = read_at::<[u8; 12]>(ctx, 0) else { return false };
    if is_group_mac(macs[0]) || is_group_mac(macs[6]) {
        return false;
    }
    match *packet {
        Packet::V4 { l3, .. } => match read_at::<[u8; 8]>(ctx, l3 + IPV4_SRC_OFFSET) {
            Some(a) => is_single_host_v4(a[0]) && is_single_host_v4(a[4]),
            None => false,
        },
        Packet::V6 { l3, .. } => {
            let (Some(src), Some(dst)) =
                (read_at::<[u8; 16]>(ctx, l3 + IPV6_SRC_OFFSET), read_at::<[u8; 16]>(ctx, l3 + IPV6_DST_OFFSET))
            else {
                return false;
            };
            is_single_host_v6(&src) && is_single_host_v6(&dst)
        }
        Packet::NonIp | Packet::Malformed => false,
    }
}

/// The RST's sequence, acknowledgement and flags for a segment (RFC 9293
/// 3.10.7.1): a segment with ACK gets `seq = its ack`; one without gets RST+ACK
/// acknowledging all it carried (its data, SYN and FIN each count one).
#[inline(always)]
fn rst_numbers(t: &[u8; TCP_HLEN], payload: u32) -> (u32, u32, u8) {
    let flags = t[13];
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
    if flags & TCP_ACK != 0 {
        return (ack, 0, TCP_RST);
    }
    let length = payload + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
    (0, seq.wrapping_add(length), TCP_RST | TCP_ACK)
}

/// A TCP header for the RST answering `t`, its checksum field zero.
#[inline(always)]
fn rst_header(t: &[u8; TCP_HLEN], payload: u32) -> [u8; TCP_HLEN] {
    let (seq, ack, flags) = rst_numbers(t, payload);
    let s = seq.to_be_bytes();
    let a = ack.to_be_bytes();
    [
        t[2],
        t[3],
        t[0],
        t[1],
        s[0],
        s[1],
        s[2],
        s[3],
        a[0],
        a[1],
        a[2],
        a[3],
        (TCP_HLEN as u8 / 4) << 4,
        flags,
        0,
        0,
        0,
        0,
        0,
        0,
    ]
}

/// Swaps the Ethernet addresses (the answer goes back where the packet came from).
#[inline(always)]
fn swap_macs<F: Frame>(ctx: &F) -> bool {
    let Some(m) = read_at::<[u8; 12]>(ctx, 0) else { return false };
    write_at(ctx, 0, [m[6], m[7], m[8], m[9], m[10], m[11], m[0], m[1], m[2], m[3], m[4], m[5]])
}

/// Cuts the frame to `len` bytes.
#[inline(always)]
fn cut_to<F: Frame>(ctx: &F, len: usize) -> bool {
    ctx.cut_to(len)
}

/// Makes room for `extra` more bytes before the IP header: the frame starts
/// `extra` bytes earlier and its link-layer header is copied there. The copy is
/// of `MAX_L2` bytes whatever the header's length: what lies past it lands
/// where the new headers are written next.
#[inline(always)]
fn grow_front<F: Frame>(ctx: &F, extra: usize) -> bool {
    let Some(l2) = read_at::<[u8; MAX_L2]>(ctx, 0) else { return false };
    if !ctx.push_front(extra) {
        return false;
    }
    write_at(ctx, 0, l2)
}

/// The sum of the big-endian 16-bit words of `N` bytes (a multiple of 4) of
/// the frame at `offset`, added to `seed`: one read of the region, then a sum
/// over the copy (a loop over frame offsets would not pass the verifier).
#[inline(always)]
fn sum_frame<const N: usize>(ctx: &impl Frame, offset: usize, seed: u32) -> Option<u32> {
    let mut region = read_at::<[u8; N]>(ctx, offset)?;
    sum_bytes(&mut region, seed)
}

/// The same over `bytes`.
#[inline(always)]
fn sum_bytes<const N: usize>(bytes: &mut [u8; N], seed: u32) -> Option<u32> {
    let mut sum = seed;
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    Some(sum)
}

/// A sum of 16-bit words folded into a checksum field.
#[inline(always)]
fn fold(sum: u32) -> [u8; 2] {
    let mut s = (sum & 0xffff) + (sum >> 16);
    s = (s & 0xffff) + (s >> 16);
    (!(s as u16)).to_be_bytes()
}

/// Writes at `l3` the IPv4 header of an answer to a packet whose addresses
/// (source, then destination) are `addrs`: turned round, `total` bytes long,
/// checksummed.
#[inline(always)]
fn write_ipv4_header<F: Frame>(ctx: &F, l3: usize, addrs: [u8; 8], protocol: u8, total: u16) -> bool {
    let t = total.to_be_bytes();
    let a = addrs;
    let mut ip =
        [0x45, 0, t[0], t[1], 0, 0, 0x40, 0, TTL, protocol, 0, 0, a[4], a[5], a[6], a[7], a[0], a[1], a[2], a[3]];
    let c = ipv4_checksum(&ip).to_be_bytes();
    ip[10] = c[0];
    ip[11] = c[1];
    write_at(ctx, l3, ip)
}

// Each answer is a function of its own (a BPF subprogram): its buffers do not
// add to the filter's stack frame, and only one is built per packet. Each
// writes the answer's headers first, then sums them where they lie.

#[inline(never)]
fn tcp_v4<F: Frame>(ctx: &F, l3: usize, ihl: usize) -> bool {
    let Some(h) = read_at::<[u8; IPV4_MIN_HLEN]>(ctx, l3) else { return false };
    let Some(t) = read_at::<[u8; TCP_HLEN]>(ctx, l3 + ihl) else { return false };
    if t[13] & TCP_RST != 0 {
        return false;
    }
    let total = u16::from_be_bytes([h[2], h[3]]) as usize;
    let data_offset = ((t[12] >> 4) as usize) * 4;
    let payload = total.saturating_sub(ihl + data_offset) as u32;
    let tcp = rst_header(&t, payload);
    let addrs = [h[12], h[13], h[14], h[15], h[16], h[17], h[18], h[19]];
    if !swap_macs(ctx) || !cut_to(ctx, l3 + IPV4_MIN_HLEN + TCP_HLEN) {
        return false;
    }
    let total = (IPV4_MIN_HLEN + TCP_HLEN) as u16;
    if !write_ipv4_header(ctx, l3, addrs, IPPROTO_TCP, total) || !write_at(ctx, l3 + IPV4_MIN_HLEN, tcp) {
        return false;
    }
    // Pseudo-header: the addresses (bytes 12..20 of the new header, right
    // before the TCP header), zero, protocol, TCP length.
    let mut rest = [0, IPPROTO_TCP, 0, TCP_HLEN as u8];
    let Some(sum) = sum_bytes(&mut rest, 0).and_then(|s| sum_frame::<28>(ctx, l3 + 12, s)) else { return false };
    write_at(ctx, l3 + IPV4_MIN_HLEN + 16, fold(sum))
}

#[inline(never)]
fn icmp_v4<F: Frame>(ctx: &F, l3: usize, protocol: u8) -> bool {
    let Some(h) = read_at::<[u8; IPV4_MIN_HLEN]>(ctx, l3) else { return false };
    // ICMP errors and other ICMP than an echo request are never answered.
    if protocol == IPPROTO_ICMP && !matches!(read_at::<[u8; 2]>(ctx, l3 + IPV4_MIN_HLEN), Some([8, _])) {
        return false;
    }
    let addrs = [h[12], h[13], h[14], h[15], h[16], h[17], h[18], h[19]];
    let extra = IPV4_MIN_HLEN + ICMP_HLEN;
    if ctx.len() < l3 + QUOTE_V4 || !swap_macs(ctx) || !grow_front(ctx, extra) {
        return false;
    }
    // The quote is the packet's own header and 8 bytes, where they already are.
    if !cut_to(ctx, l3 + extra + QUOTE_V4)
        || !write_ipv4_header(ctx, l3, addrs, IPPROTO_ICMP, (extra + QUOTE_V4) as u16)
    {
        return false;
    }
    // Destination unreachable, communication administratively prohibited.
    if !write_at(ctx, l3 + IPV4_MIN_HLEN, [3u8, 13, 0, 0, 0, 0, 0, 0]) {
        return false;
    }
    let Some(sum) = sum_frame::<{ ICMP_HLEN + QUOTE_V4 }>(ctx, l3 + IPV4_MIN_HLEN, 0) else { return false };
    write_at(ctx, l3 + IPV4_MIN_HLEN + 2, fold(sum))
}

/// Writes at `l3` the IPv6 header of an answer to a packet whose addresses
/// (source, then destination) are `addrs`: turned round, carrying `payload`
/// bytes of `next`.
#[inline(always)]
fn write_ipv6_header<F: Frame>(ctx: &F, l3: usize, addrs: &[u8; 32], next: u8, payload: u16) -> bool {
    let p = payload.to_be_bytes();
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&addrs[16..]);
    dst.copy_from_slice(&addrs[..16]);
    write_at(ctx, l3, [0x60u8, 0, 0, 0, p[0], p[1], next, TTL])
        && write_at(ctx, l3 + 8, src)
        && write_at(ctx, l3 + 24, dst)
}

/// The sum of the IPv6 pseudo-header's length and next-header words of an
/// upper-layer packet of `len` bytes (its addresses are summed from the frame).
#[inline(always)]
fn pseudo_v6_tail(len: u16, next: u8) -> Option<u32> {
    let l = len.to_be_bytes();
    sum_bytes(&mut [0, 0, l[0], l[1], 0, 0, 0, next], 0)
}

#[inline(never)]
fn tcp_v6<F: Frame>(ctx: &F, l3: usize, tcp_at: usize) -> bool {
    let Some(t) = read_at::<[u8; TCP_HLEN]>(ctx, tcp_at) else { return false };
    let Some(len) = read_at::<[u8; 2]>(ctx, l3 + 4) else { return false };
    let Some(addrs) = read_at::<[u8; 32]>(ctx, l3 + 8) else { return false };
    if t[13] & TCP_RST != 0 {
        return false;
    }
    let payload_len = u16::from_be_bytes(len) as usize;
    let data_offset = ((t[12] >> 4) as usize) * 4;
    let before = tcp_at.saturating_sub(l3 + IPV6_HLEN);
    let payload = payload_len.saturating_sub(before + data_offset) as u32;
    let tcp = rst_header(&t, payload);
    if !swap_macs(ctx) || !cut_to(ctx, l3 + IPV6_HLEN + TCP_HLEN) {
        return false;
    }
    if !write_ipv6_header(ctx, l3, &addrs, IPPROTO_TCP, TCP_HLEN as u16) || !write_at(ctx, l3 + IPV6_HLEN, tcp) {
        return false;
    }
    // The addresses and the TCP header lie one after the other.
    let sum = pseudo_v6_tail(TCP_HLEN as u16, IPPROTO_TCP).and_then(|s| sum_frame::<52>(ctx, l3 + 8, s));
    let Some(sum) = sum else { return false };
    write_at(ctx, l3 + IPV6_HLEN + 16, fold(sum))
}

#[inline(never)]
fn icmp_v6<F: Frame>(ctx: &F, l3: usize, protocol: u8, l4_at: usize) -> bool {
    // ICMPv6 errors (types below 128) are never answered.
    if protocol == IPPROTO_ICMPV6 {
        if l4_at == 0 {
            return false;
        }
        match read_at::<[u8; 2]>(ctx, l4_at) {
            Some(t) if t[0] >= 128 => {}
            _ => return false,
        }
    }
    let Some(addrs) = read_at::<[u8; 32]>(ctx, l3 + 8) else { return false };
    let extra = IPV6_HLEN + ICMP_HLEN;
    if ctx.len() < l3 + QUOTE_V6 || !swap_macs(ctx) || !grow_front(ctx, extra) {
        return false;
    }
    let len = (ICMP_HLEN + QUOTE_V6) as u16;
    if !cut_to(ctx, l3 + extra + QUOTE_V6) || !write_ipv6_header(ctx, l3, &addrs, IPPROTO_ICMPV6, len) {
        return false;
    }
    // Destination unreachable, communication administratively prohibited;
    // the quote is the packet's own first bytes, where they already are.
    if !write_at(ctx, l3 + IPV6_HLEN, [1u8, 1, 0, 0, 0, 0, 0, 0]) {
        return false;
    }
    // The addresses, the ICMPv6 header and the quote lie one after the other.
    let sum =
        pseudo_v6_tail(len, IPPROTO_ICMPV6).and_then(|s| sum_frame::<{ 32 + ICMP_HLEN + QUOTE_V6 }>(ctx, l3 + 8, s));
    let Some(sum) = sum else { return false };
    write_at(ctx, l3 + IPV6_HLEN + 2, fold(sum))
}

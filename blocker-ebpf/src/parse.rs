//! Packet parsing: Ethernet, up to two VLAN tags, IPv4 / IPv6 source address;
//! on demand (`l4`), the L4 protocol and destination port behind the IPv4
//! options or the IPv6 extension headers. Every header access is bounds-checked
//! against `data_end` before it is read.

use core::mem::size_of;

use crate::frame::Frame;

use blocker_common::{
    events::{has_ports, FLAG_LATER_FRAGMENT, FLAG_NO_L4},
    wire::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPV4_DST_OFFSET, IPV4_FRAG_MASK, IPV4_FRAG_OFFSET,
        IPV4_MIN_HLEN, IPV4_PROTOCOL_OFFSET, IPV4_SRC_OFFSET, IPV6_AUTH, IPV6_DEST_OPTS, IPV6_DST_OFFSET,
        IPV6_FRAGMENT, IPV6_HLEN, IPV6_HOP_BY_HOP, IPV6_MAX_EXT_HEADERS, IPV6_NEXT_HEADER_OFFSET, IPV6_ROUTING,
        IPV6_SRC_OFFSET, VLAN_HLEN,
    },
};

const MAX_VLAN_TAGS: usize = 2;

pub(crate) enum Packet {
    /// `addr`: the address the packet is judged by (its source inbound, its
    /// destination outbound). `l3`: where the IP header starts; the header's
    /// fields the L4 parser needs, read with the address (`l4`).
    V4 {
        addr: [u8; 4],
        l3: usize,
        /// Header length in bytes (20 to 60).
        ihl: usize,
        protocol: u8,
        /// Flags and fragment offset.
        frag: u16,
    },
    V6 {
        addr: [u8; 16],
        l3: usize,
        /// The first next-header value.
        next: u8,
    },
    /// Not IP (ARP, LLDP, a third VLAN tag, ...): not ours to judge.
    NonIp,
    /// Too short for the headers it announces, or an impossible IP header.
    Malformed,
}

/// Returns a copy of the `T` at `offset`, or `None` if it does not fit in the frame.
#[inline(always)]
pub(crate) fn read_at<T: Copy>(ctx: &impl Frame, offset: usize) -> Option<T> {
    let start = ctx.start();
    let end = ctx.end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    // SAFETY: the range [start+offset, start+offset+size_of::<T>()) lies inside the
    // frame (checked above); the read is unaligned because frames are not aligned.
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
}

#[inline(always)]
fn read_be16<F: Frame>(ctx: &F, offset: usize) -> Option<u16> {
    read_at::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

#[inline(always)]
/// The packet's headers up to its IP address: the source (inbound) or the
/// destination (`OUTBOUND`).
pub(crate) fn parse<F: Frame, const OUTBOUND: bool>(ctx: &F) -> Packet {
    let Some(mut ether_type) = read_be16(ctx, ETH_HLEN - 2) else {
        return Packet::Malformed;
    };
    let mut l3 = ETH_HLEN;
    // 802.1ad outer tag and/or 802.1Q inner tag: the tag's last two bytes carry the
    // encapsulated EtherType.
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let Some(inner) = read_be16(ctx, l3 + VLAN_HLEN - 2) else {
            return Packet::Malformed;
        };
        ether_type = inner;
        l3 += VLAN_HLEN;
    }
    match ether_type {
        ETH_P_IPV4 => {
            // The whole fixed header must be present, not just the source field;
            // one read takes every field used later.
            let Some(h) = read_at::<[u8; IPV4_MIN_HLEN]>(ctx, l3) else {
                return Packet::Malformed;
            };
            let ihl = ((h[0] & 0x0f) as usize) * 4;
            if h[0] >> 4 != 4 || ihl < IPV4_MIN_HLEN {
                return Packet::Malformed;
            }
            let o = if OUTBOUND { IPV4_DST_OFFSET } else { IPV4_SRC_OFFSET };
            Packet::V4 {
                addr: [h[o], h[o + 1], h[o + 2], h[o + 3]],
                l3,
                ihl,
                protocol: h[IPV4_PROTOCOL_OFFSET],
                frag: u16::from_be_bytes([h[IPV4_FRAG_OFFSET], h[IPV4_FRAG_OFFSET + 1]]),
            }
        }
        ETH_P_IPV6 => {
            let Some(h) = read_at::<[u8; IPV6_HLEN]>(ctx, l3) else {
                return Packet::Malformed;
            };
            if h[0] >> 4 != 6 {
                return Packet::Malformed;
            }
            let o = if OUTBOUND { IPV6_DST_OFFSET } else { IPV6_SRC_OFFSET };
            let mut addr = [0u8; 16];
            addr.copy_from_slice(&h[o..o + 16]);
            Packet::V6 { addr, l3, next: h[IPV6_NEXT_HEADER_OFFSET] }
        }
        _ => Packet::NonIp,
    }
}

/// What lies behind the IP header: the L4 protocol, its destination port, and
/// why there is none (`FLAG_*`).
#[derive(Clone, Copy)]
pub(crate) struct L4 {
    pub(crate) protocol: u8,
    pub(crate) dst_port: u16,
    pub(crate) flags: u8,
    /// Where the L4 header starts (0 when there is none to read: `flags`).
    pub(crate) at: usize,
}

/// What lies behind an IP packet's header (None: not an IP packet).
// Reads here are of whole header pieces, never of one byte at a variable
// offset: LLVM turns `at + 1 > end` into `at >= end`, which the verifier
// cannot prove a one-byte read from.
#[inline(always)]
pub(crate) fn l4<F: Frame>(ctx: &F, packet: &Packet) -> Option<L4> {
    match *packet {
        Packet::V4 { l3, ihl, protocol, frag, .. } => Some(l4_v4(ctx, l3 + ihl, protocol, frag)),
        Packet::V6 { l3, next, .. } => Some(l4_v6(ctx, l3 + IPV6_HLEN, next)),
        Packet::NonIp | Packet::Malformed => None,
    }
}

/// IPv4: the L4 header at `at` (after the options), unless the packet is a
/// later fragment.
#[inline(always)]
fn l4_v4<F: Frame>(ctx: &F, at: usize, protocol: u8, frag: u16) -> L4 {
    if frag & IPV4_FRAG_MASK != 0 {
        return L4 { protocol, dst_port: 0, flags: FLAG_LATER_FRAGMENT, at: 0 };
    }
    ports(ctx, protocol, at)
}

/// IPv6: the L4 header behind at most `IPV6_MAX_EXT_HEADERS` extension headers,
/// the first at `at` of type `next`.
#[inline(always)]
fn l4_v6<F: Frame>(ctx: &F, mut at: usize, mut next: u8) -> L4 {
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        if !is_extension_header(next) {
            return ports(ctx, next, at);
        }
        // Every extension header has at least 8 bytes: next header, length,
        // and (fragment header) the fragment offset.
        let Some(ext) = read_at::<[u8; 8]>(ctx, at) else {
            return L4 { protocol: next, dst_port: 0, flags: FLAG_NO_L4, at: 0 };
        };
        let len = match next {
            IPV6_FRAGMENT => {
                if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                    return L4 { protocol: ext[0], dst_port: 0, flags: FLAG_LATER_FRAGMENT, at: 0 };
                }
                8
            }
            IPV6_AUTH => (ext[1] as usize + 2) * 4,
            _ => (ext[1] as usize + 1) * 8,
        };
        next = ext[0];
        at += len;
    }
    if is_extension_header(next) {
        return L4 { protocol: next, dst_port: 0, flags: FLAG_NO_L4, at: 0 };
    }
    ports(ctx, next, at)
}

#[inline(always)]
fn is_extension_header(next: u8) -> bool {
    matches!(next, IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_FRAGMENT | IPV6_AUTH)
}

/// The destination port of `protocol`'s header at `at`, for protocols with ports.
#[inline(always)]
fn ports<F: Frame>(ctx: &F, protocol: u8, at: usize) -> L4 {
    if !has_ports(protocol) {
        return L4 { protocol, dst_port: 0, flags: 0, at };
    }
    match read_be16(ctx, at + 2) {
        Some(dst_port) => L4 { protocol, dst_port, flags: 0, at },
        None => L4 { protocol, dst_port: 0, flags: FLAG_NO_L4, at: 0 },
    }
}

/// Writes `value` at `offset`; false if it does not fit in the frame.
#[inline(always)]
pub(crate) fn write_at<T: Copy>(ctx: &impl Frame, offset: usize, value: T) -> bool {
    let start = ctx.start();
    let end = ctx.end();
    if start + offset + size_of::<T>() > end {
        return false;
    }
    // SAFETY: as in `read_at`; the frame is writable in XDP and tc.
    unsafe { core::ptr::write_unaligned((start + offset) as *mut T, value) };
    true
}

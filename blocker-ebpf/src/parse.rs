//! Packet parsing: Ethernet, up to two VLAN tags, IPv4 / IPv6 source address.
//! Every header access is bounds-checked against `data_end` before it is read.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

use blocker_common::wire::{
    ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPV4_MIN_HLEN, IPV4_SRC_OFFSET, IPV6_HLEN,
    IPV6_SRC_OFFSET, VLAN_HLEN,
};

const MAX_VLAN_TAGS: usize = 2;

pub(crate) enum Packet {
    V4 {
        src: [u8; 4],
    },
    V6 {
        src: [u8; 16],
    },
    /// Not IP (ARP, LLDP, a third VLAN tag, ...): not ours to judge.
    NonIp,
    /// Too short for the headers it announces, or an impossible IP header.
    Malformed,
}

/// Returns a copy of the `T` at `offset`, or `None` if it does not fit in the frame.
#[inline(always)]
fn read_at<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    // SAFETY: the range [start+offset, start+offset+size_of::<T>()) lies inside the
    // frame (checked above); the read is unaligned because frames are not aligned.
    Some(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    read_at::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

#[inline(always)]
pub(crate) fn parse(ctx: &XdpContext) -> Packet {
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
            let Some(version_ihl) = read_at::<u8>(ctx, l3) else {
                return Packet::Malformed;
            };
            let ihl = ((version_ihl & 0x0f) as usize) * 4;
            if version_ihl >> 4 != 4 || ihl < IPV4_MIN_HLEN {
                return Packet::Malformed;
            }
            // The whole fixed header must be present, not just the source field.
            if read_at::<[u8; IPV4_MIN_HLEN]>(ctx, l3).is_none() {
                return Packet::Malformed;
            }
            match read_at::<[u8; 4]>(ctx, l3 + IPV4_SRC_OFFSET) {
                Some(src) => Packet::V4 { src },
                None => Packet::Malformed,
            }
        }
        ETH_P_IPV6 => {
            let Some(version) = read_at::<u8>(ctx, l3) else {
                return Packet::Malformed;
            };
            if version >> 4 != 6 || read_at::<[u8; IPV6_HLEN]>(ctx, l3).is_none() {
                return Packet::Malformed;
            }
            match read_at::<[u8; 16]>(ctx, l3 + IPV6_SRC_OFFSET) {
                Some(src) => Packet::V6 { src },
                None => Packet::Malformed,
            }
        }
        _ => Packet::NonIp,
    }
}

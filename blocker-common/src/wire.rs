//! What the wire looks like: the EtherTypes and header sizes the XDP parser, the
//! benchmark's traffic generator and the test frames all use, and the IPv4 header
//! checksum.

/// Ethernet header: destination, source, EtherType.
pub const ETH_HLEN: usize = 14;
/// One 802.1Q / 802.1ad tag: TPID (where the EtherType was) and TCI.
pub const VLAN_HLEN: usize = 4;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
/// VLAN tag (C-tag).
pub const ETH_P_8021Q: u16 = 0x8100;
/// Service VLAN tag (S-tag, QinQ).
pub const ETH_P_8021AD: u16 = 0x88A8;

/// An IPv4 header without options, and where its source address is.
pub const IPV4_MIN_HLEN: usize = 20;
pub const IPV4_SRC_OFFSET: usize = 12;
pub const IPV4_DST_OFFSET: usize = 16;
/// Where the header checksum is.
pub const IPV4_CHECKSUM_OFFSET: usize = 10;
/// Flags and fragment offset (16 bits), and the protocol (8 bits).
pub const IPV4_FRAG_OFFSET: usize = 6;
pub const IPV4_PROTOCOL_OFFSET: usize = 9;
/// The fragment offset's bits of that field.
pub const IPV4_FRAG_MASK: u16 = 0x1fff;
/// The IPv6 header, and where its source address is.
pub const IPV6_HLEN: usize = 40;
pub const IPV6_SRC_OFFSET: usize = 8;
pub const IPV6_DST_OFFSET: usize = 24;
/// Where the first next-header byte is.
pub const IPV6_NEXT_HEADER_OFFSET: usize = 6;

/// IPv6 extension headers the parser walks to reach the L4 header.
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_AUTH: u8 = 51;
pub const IPV6_DEST_OPTS: u8 = 60;
/// The most extension headers walked: more is never seen from a real stack
/// (RFC 8200 orders at most six, each once), and the walk must be bounded.
pub const IPV6_MAX_EXT_HEADERS: usize = 6;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// The checksum of an IPv4 header (RFC 1071) whose checksum field is zero: the
/// ones' complement of the ones' complement sum of its 16-bit words. Written
/// with a plain loop, so the XDP traffic generator can use it on a fixed-size
/// header the verifier sees whole.
#[inline(always)]
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i + 1 < header.len() {
        sum += u32::from(u16::from_be_bytes([header[i], header[i + 1]]));
        i += 2;
    }
    if i < header.len() {
        sum += u32::from(header[i]) << 8;
    }
    // At most 60 bytes: 30 words, so two folds bring any sum into 16 bits.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Whether an Ethernet address names a group (broadcast or multicast): the
/// I/G bit, the low bit of its first byte.
#[inline(always)]
pub const fn is_group_mac(first_byte: u8) -> bool {
    first_byte & 1 != 0
}

/// Whether an IPv4 address may be the source or destination of a packet that
/// gets an answer (RFC 1122 3.2.2): one host, so not 0.0.0.0/8, loopback,
/// multicast (224.0.0.0/4) nor class E (240.0.0.0/4, with 255.255.255.255).
/// A subnet's directed broadcast is not known here; it comes as a link-layer
/// broadcast (`is_group_mac`).
#[inline(always)]
pub const fn is_single_host_v4(first_byte: u8) -> bool {
    first_byte != 0 && first_byte != 127 && first_byte < 224
}

/// The same for IPv6 (RFC 4443 2.4): not multicast (ff00::/8), nor the
/// unspecified (::) or loopback (::1) address.
#[inline(always)]
pub fn is_single_host_v6(addr: &[u8; 16]) -> bool {
    if addr[0] == 0xff {
        return false;
    }
    let mut high = 0u8;
    let mut i = 0;
    while i < 15 {
        high |= addr[i];
        i += 1;
    }
    high != 0 || addr[15] > 1
}

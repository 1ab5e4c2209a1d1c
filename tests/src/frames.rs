//! Crafted Ethernet frames for BPF_PROG_TEST_RUN. Checksums are computed so the
//! same frames are valid on a real wire.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use blocker_common::wire::{ipv4_checksum, IPV4_CHECKSUM_OFFSET};
pub use blocker_common::wire::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6};

const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// Ethernet header with the given VLAN tags (outermost first: (TPID, VID)).
pub fn ethernet(tags: &[(u16, u16)], ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// IPv4 header (with `options` 4-byte words of NOP options) + UDP with `payload`.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, options: usize, payload: &[u8]) -> Vec<u8> {
    let ihl = 5 + options;
    let total = ihl * 4 + 8 + payload.len();
    let mut h = vec![0u8; ihl * 4];
    h[0] = 0x40 | ihl as u8;
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[8] = 64;
    h[9] = 17; // UDP
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    for b in &mut h[20..] {
        *b = 1; // NOP
    }
    let c = ipv4_checksum(&h);
    h[IPV4_CHECKSUM_OFFSET..IPV4_CHECKSUM_OFFSET + 2].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(&udp(payload));
    h
}

pub fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h[6] = 17;
    h[7] = 64;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h.extend_from_slice(&udp(payload));
    h
}

fn udp(payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&40000u16.to_be_bytes());
    u[2..4].copy_from_slice(&9u16.to_be_bytes()); // discard
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    u
}

/// A whole frame from `src` (either family) with the given VLAN tags.
pub fn ip_frame(src: IpAddr, tags: &[(u16, u16)]) -> Vec<u8> {
    let payload = [0xabu8; 18];
    match src {
        IpAddr::V4(s) => {
            let mut f = ethernet(tags, ETH_P_IPV4);
            f.extend(ipv4_packet(s, Ipv4Addr::new(192, 0, 2, 1), 0, &payload));
            f
        }
        IpAddr::V6(s) => {
            let mut f = ethernet(tags, ETH_P_IPV6);
            f.extend(ipv6_packet(s, "2001:db8:1::1".parse().unwrap(), &payload));
            f
        }
    }
}

pub fn arp_request() -> Vec<u8> {
    let mut f = ethernet(&[], ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[192, 0, 2, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[192, 0, 2, 1]);
    f
}

/// A frame described by what it is, built by `build`: Ethernet with VLAN tags,
/// then an IPv4 or IPv6 packet (or only an EtherType, or ARP), then the changes a
/// test makes to it: a header field overwritten, the frame cut short.
///
/// `Frame::eth().vlan(ETH_P_8021Q, 100).ipv4("203.0.113.5").ihl(4).truncate(33)`
#[derive(Clone, Debug)]
pub struct Frame {
    tags: Vec<(u16, u16)>,
    l3: L3,
    /// IPv4 options, in 4-byte words of NOPs.
    options: usize,
    ihl: Option<u8>,
    version: Option<u8>,
    truncate: Option<usize>,
    transport: Transport,
    /// A fragment at this offset (8-byte units): IPv4's field, an IPv6
    /// fragment header.
    fragment: Option<u16>,
    /// IPv6 extension headers before the fragment header and the L4 header.
    ext: Vec<u8>,
    /// The destination (None: 192.0.2.1 or 2001:db8:1::1).
    dst: Option<IpAddr>,
    /// The Ethernet destination and source (None: 02:00:00:00:00:01 and :02).
    macs: (Option<[u8; 6]>, Option<[u8; 6]>),
    /// Overwrites the IPv4 protocol field (the checksum follows).
    protocol: Option<u8>,
}

/// What the IP packet of a `Frame` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP to this port.
    Udp(u16),
    /// A TCP SYN to this port.
    Tcp(u16),
    /// ICMP (IPv4) or ICMPv6 (IPv6) echo request.
    Echo,
}

#[derive(Clone, Debug)]
enum L3 {
    /// An EtherType and nothing after the Ethernet header.
    Bare(u16),
    Ip(IpAddr),
    Arp,
}

impl Frame {
    /// An Ethernet header of type IPv4 with nothing after it (until `ipv4`,
    /// `ipv6`, `ether_type` or `arp` says what follows).
    pub fn eth() -> Frame {
        Frame {
            tags: Vec::new(),
            l3: L3::Bare(ETH_P_IPV4),
            options: 0,
            ihl: None,
            version: None,
            truncate: None,
            transport: Transport::Udp(9),
            fragment: None,
            ext: Vec::new(),
            dst: None,
            macs: (None, None),
            protocol: None,
        }
    }

    /// The IPv4 protocol number, whatever the packet carries (e.g. 51, AH, in
    /// front of the TCP header it holds).
    pub fn protocol(mut self, protocol: u8) -> Frame {
        self.protocol = Some(protocol);
        self
    }

    /// The Ethernet destination address.
    pub fn mac_to(mut self, mac: [u8; 6]) -> Frame {
        self.macs.0 = Some(mac);
        self
    }

    /// The Ethernet source address.
    pub fn mac_from(mut self, mac: [u8; 6]) -> Frame {
        self.macs.1 = Some(mac);
        self
    }

    /// A VLAN tag (outermost first).
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Frame {
        self.tags.push((tpid, vid));
        self
    }

    /// The EtherType, with nothing after the Ethernet header.
    pub fn ether_type(mut self, ether_type: u16) -> Frame {
        self.l3 = L3::Bare(ether_type);
        self
    }

    /// An IPv4 packet (UDP) from `src` to 192.0.2.1.
    pub fn ipv4(mut self, src: &str) -> Frame {
        self.l3 = L3::Ip(IpAddr::V4(src.parse().expect("an IPv4 address")));
        self
    }

    /// An IPv6 packet (UDP) from `src` to 2001:db8:1::1.
    pub fn ipv6(mut self, src: &str) -> Frame {
        self.l3 = L3::Ip(IpAddr::V6(src.parse().expect("an IPv6 address")));
        self
    }

    /// The packet's destination (of the family of its source).
    pub fn to(mut self, dst: &str) -> Frame {
        self.dst = Some(dst.parse().expect("an IP address"));
        self
    }

    pub fn arp(mut self) -> Frame {
        self.l3 = L3::Arp;
        self
    }

    /// IPv4 options: `words` 4-byte words of NOPs (the IHL says so).
    pub fn options(mut self, words: usize) -> Frame {
        self.options = words;
        self
    }

    /// Overwrites the IPv4 IHL (in 4-byte words), whatever the header holds.
    pub fn ihl(mut self, ihl: u8) -> Frame {
        self.ihl = Some(ihl);
        self
    }

    /// Overwrites the IP version nibble.
    pub fn version(mut self, version: u8) -> Frame {
        self.version = Some(version);
        self
    }

    /// What the packet carries (default: UDP to port 9).
    pub fn transport(mut self, transport: Transport) -> Frame {
        self.transport = transport;
        self
    }

    /// A fragment at `offset` (8-byte units; 0: the first fragment, with the L4 header).
    pub fn fragment(mut self, offset: u16) -> Frame {
        self.fragment = Some(offset);
        self
    }

    /// IPv6 extension headers (hop-by-hop 0, routing 43, destination options 60,
    /// authentication 51), in order, before the fragment header and L4.
    pub fn ext_headers(mut self, types: &[u8]) -> Frame {
        self.ext = types.to_vec();
        self
    }

    /// Cuts the frame to its first `len` bytes.
    pub fn truncate(mut self, len: usize) -> Frame {
        self.truncate = Some(len);
        self
    }

    /// Where the IP header starts: after Ethernet and the tags.
    pub fn l3_offset(&self) -> usize {
        blocker_common::wire::ETH_HLEN + self.tags.len() * blocker_common::wire::VLAN_HLEN
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = match self.l3 {
            L3::Bare(ether_type) => ethernet(&self.tags, ether_type),
            L3::Arp => {
                let mut f = ethernet(&self.tags, ETH_P_ARP);
                f.extend_from_slice(&arp_request()[blocker_common::wire::ETH_HLEN..]);
                f
            }
            L3::Ip(IpAddr::V4(src)) => {
                let mut f = ethernet(&self.tags, ETH_P_IPV4);
                f.extend(self.ipv4_bytes(src));
                f
            }
            L3::Ip(IpAddr::V6(src)) => {
                let mut f = ethernet(&self.tags, ETH_P_IPV6);
                f.extend(self.ipv6_bytes(src));
                f
            }
        };
        if let Some(mac) = self.macs.0 {
            f[..6].copy_from_slice(&mac);
        }
        if let Some(mac) = self.macs.1 {
            f[6..12].copy_from_slice(&mac);
        }
        let l3 = self.l3_offset();
        if let Some(ihl) = self.ihl {
            f[l3] = (f[l3] & 0xf0) | (ihl & 0x0f);
        }
        if let Some(version) = self.version {
            f[l3] = (version << 4) | (f[l3] & 0x0f);
        }
        if let (Some(protocol), L3::Ip(IpAddr::V4(_))) = (self.protocol, &self.l3) {
            f[l3 + 9] = protocol;
            let hlen = usize::from(f[l3] & 0x0f) * 4;
            f[l3 + IPV4_CHECKSUM_OFFSET..l3 + IPV4_CHECKSUM_OFFSET + 2].copy_from_slice(&[0, 0]);
            let c = ipv4_checksum(&f[l3..l3 + hlen]);
            f[l3 + IPV4_CHECKSUM_OFFSET..l3 + IPV4_CHECKSUM_OFFSET + 2].copy_from_slice(&c.to_be_bytes());
        }
        if let Some(len) = self.truncate {
            f.truncate(len);
        }
        f
    }

    /// The L4 header and payload, and its protocol number for `v6` or not.
    fn l4(&self, v6: bool) -> (u8, Vec<u8>) {
        let payload = [0xabu8; 18];
        match self.transport {
            Transport::Udp(port) => {
                let mut u = udp(&payload);
                u[2..4].copy_from_slice(&port.to_be_bytes());
                (17, u)
            }
            Transport::Tcp(port) => {
                let mut t = vec![0u8; 20];
                t[0..2].copy_from_slice(&40000u16.to_be_bytes());
                t[2..4].copy_from_slice(&port.to_be_bytes());
                t[12] = 5 << 4; // data offset
                t[13] = 0x02; // SYN
                (6, t)
            }
            Transport::Echo => {
                let mut e = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0, 1, 0, 1];
                e.extend_from_slice(&payload);
                (if v6 { 58 } else { 1 }, e)
            }
        }
    }

    fn ipv4_bytes(&self, src: Ipv4Addr) -> Vec<u8> {
        let (protocol, l4) = self.l4(false);
        let ihl = 5 + self.options;
        let mut h = vec![0u8; ihl * 4];
        h[0] = 0x40 | ihl as u8;
        h[2..4].copy_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
        if let Some(offset) = self.fragment {
            h[6..8].copy_from_slice(&(offset & 0x1fff).to_be_bytes());
        }
        h[8] = 64;
        h[9] = protocol;
        h[12..16].copy_from_slice(&src.octets());
        let dst = match self.dst {
            Some(IpAddr::V4(d)) => d.octets(),
            _ => [192, 0, 2, 1],
        };
        h[16..20].copy_from_slice(&dst);
        for b in &mut h[20..] {
            *b = 1; // NOP
        }
        let c = ipv4_checksum(&h);
        h[IPV4_CHECKSUM_OFFSET..IPV4_CHECKSUM_OFFSET + 2].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(&l4);
        h
    }

    fn ipv6_bytes(&self, src: Ipv6Addr) -> Vec<u8> {
        let (protocol, l4) = self.l4(true);
        // The chain: each extension header names the next one.
        let mut chain: Vec<u8> = self.ext.clone();
        if self.fragment.is_some() {
            chain.push(44);
        }
        chain.push(protocol);
        let mut body = Vec::new();
        for (i, &kind) in chain[..chain.len() - 1].iter().enumerate() {
            let next = chain[i + 1];
            match kind {
                44 => {
                    let offset = self.fragment.unwrap_or(0) << 3;
                    body.extend_from_slice(&[next, 0]);
                    body.extend_from_slice(&offset.to_be_bytes());
                    body.extend_from_slice(&[0, 0, 0, 1]);
                }
                // Authentication: 12 bytes (its length counts 4-byte words, minus 2).
                51 => body.extend_from_slice(&[next, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]),
                // Hop-by-hop, routing, destination options: 8 bytes of padding options.
                _ => body.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]),
            }
        }
        body.extend_from_slice(&l4);
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
        h[6] = chain[0];
        h[7] = 64;
        h[8..24].copy_from_slice(&src.octets());
        let dst = match self.dst {
            Some(IpAddr::V6(d)) => d,
            _ => "2001:db8:1::1".parse::<Ipv6Addr>().expect("an address"),
        };
        h[24..40].copy_from_slice(&dst.octets());
        h.extend_from_slice(&body);
        h
    }
}

/// What the XDP program's parser (blocker-ebpf/src/parse.rs) makes of a frame,
/// written again in plain Rust: the packet fuzzer checks that the program in the
/// kernel agrees with it on every input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    V4([u8; 4]),
    V6([u8; 16]),
    /// Not IP (ARP, a third VLAN tag, ...).
    NonIp,
    /// Too short for the headers it announces, or an impossible IP header.
    Malformed,
}

/// The reference parse: Ethernet, up to two VLAN tags (802.1Q / 802.1ad), then
/// an IPv4 header (version 4, IHL at least 5, the 20 fixed bytes present) or an
/// IPv6 header (version 6, 40 bytes present).
pub fn reference_parse(frame: &[u8]) -> Parsed {
    reference_parse_at(frame, false)
}

/// The same, with the destination address: what the egress program judges.
pub fn reference_parse_destination(frame: &[u8]) -> Parsed {
    reference_parse_at(frame, true)
}

fn reference_parse_at(frame: &[u8], destination: bool) -> Parsed {
    let (v4, v6) = if destination { (16, 24) } else { (12, 8) };
    let be16 = |at: usize| frame.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let Some(mut ether_type) = be16(12) else { return Parsed::Malformed };
    let mut l3 = 14;
    for _ in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let Some(inner) = be16(l3 + 2) else { return Parsed::Malformed };
        ether_type = inner;
        l3 += 4;
    }
    match ether_type {
        ETH_P_IPV4 => match frame.get(l3..l3 + 20) {
            Some(h) if h[0] >> 4 == 4 && h[0] & 0x0f >= 5 => Parsed::V4([h[v4], h[v4 + 1], h[v4 + 2], h[v4 + 3]]),
            _ => Parsed::Malformed,
        },
        ETH_P_IPV6 => match frame.get(l3..l3 + 40) {
            Some(h) if h[0] >> 4 == 6 => Parsed::V6(h[v6..v6 + 16].try_into().expect("16 bytes")),
            _ => Parsed::Malformed,
        },
        _ => Parsed::NonIp,
    }
}

/// What lies behind the IP header, as the XDP program's L4 parser
/// (blocker-ebpf/src/parse.rs, `l4_v4` / `l4_v6`) reads it, written again in
/// plain Rust: the protocol, the destination port (protocols with ports; 0
/// otherwise), and the `blocker_common::events::FLAG_*` bits.
pub fn reference_l4(frame: &[u8]) -> Option<(u8, u16, u8)> {
    use blocker_common::events::{has_ports, FLAG_LATER_FRAGMENT, FLAG_NO_L4};
    let (l3, v4) = match reference_parse(frame) {
        Parsed::V4(_) => (l3_of(frame), true),
        Parsed::V6(_) => (l3_of(frame), false),
        _ => return None,
    };
    let ports = |protocol: u8, at: usize| {
        if !has_ports(protocol) {
            return (protocol, 0, 0);
        }
        match frame.get(at..at + 4) {
            Some(p) => (protocol, u16::from_be_bytes([p[2], p[3]]), 0),
            None => (protocol, 0, FLAG_NO_L4),
        }
    };
    if v4 {
        let h = &frame[l3..l3 + 20];
        if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
            return Some((h[9], 0, FLAG_LATER_FRAGMENT));
        }
        return Some(ports(h[9], l3 + usize::from(h[0] & 0x0f) * 4));
    }
    let is_ext = |n: u8| matches!(n, 0 | 43 | 44 | 51 | 60);
    let mut next = frame[l3 + 6];
    let mut at = l3 + 40;
    for _ in 0..blocker_common::wire::IPV6_MAX_EXT_HEADERS {
        if !is_ext(next) {
            return Some(ports(next, at));
        }
        let Some(ext) = frame.get(at..at + 8) else { return Some((next, 0, FLAG_NO_L4)) };
        let len = match next {
            44 => {
                if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                    return Some((ext[0], 0, FLAG_LATER_FRAGMENT));
                }
                8
            }
            51 => (usize::from(ext[1]) + 2) * 4,
            _ => (usize::from(ext[1]) + 1) * 8,
        };
        next = ext[0];
        at += len;
    }
    if is_ext(next) {
        return Some((next, 0, FLAG_NO_L4));
    }
    Some(ports(next, at))
}

/// Where the IP header of a frame starts (after up to two VLAN tags).
fn l3_of(frame: &[u8]) -> usize {
    let mut l3 = 14;
    let mut ether_type = u16::from_be_bytes([frame[12], frame[13]]);
    for _ in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        ether_type = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]);
        l3 += 4;
    }
    l3
}

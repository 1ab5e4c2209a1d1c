//! Addresses and prefixes of both families, and the arithmetic on them that every
//! source and the compiler share.

use std::{fmt, net::IpAddr};

/// A prefix in either family. `addr` holds the address left-aligned in the family's
/// width (IPv4 in the low 32 bits of a u128), host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub family: Family,
    pub addr: u128,
    pub len: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    pub const fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
    /// The last address of the family as a u128.
    pub const fn max_addr(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }
}

impl Prefix {
    /// First and last address covered, inclusive.
    pub fn range(&self) -> (u128, u128) {
        let host_bits = u32::from(self.family.bits() - self.len);
        let span = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
        (self.addr, self.addr | span)
    }

    pub fn contains(&self, family: Family, addr: u128) -> bool {
        let (lo, hi) = self.range();
        family == self.family && lo <= addr && addr <= hi
    }

    pub fn to_ip(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4((self.addr as u32).into()),
            Family::V6 => IpAddr::V6(self.addr.into()),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.to_ip(), self.len)
    }
}

/// Splits an address into its family and numeric value.
pub fn ip_to_u128(ip: IpAddr) -> (Family, u128) {
    match ip {
        IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (Family::V6, u128::from(a)),
    }
}

/// Cuts the inclusive range [lo, hi] into the fewest aligned CIDR blocks.
pub fn range_to_prefixes(family: Family, lo: u128, hi: u128) -> Vec<Prefix> {
    range_prefixes(family, lo, hi).collect()
}

/// The fewest CIDRs that cover `lo..=hi` exactly, in address order, one at a
/// time (counting them allocates nothing).
pub fn range_prefixes(family: Family, lo: u128, hi: u128) -> impl Iterator<Item = Prefix> {
    let bits = u32::from(family.bits());
    let span = |host: u32| if host >= 128 { u128::MAX } else { (1u128 << host) - 1 };
    let mut next = Some(lo);
    std::iter::from_fn(move || {
        let lo = next?;
        let mut host = if lo == 0 { bits } else { lo.trailing_zeros().min(bits) };
        // lo is aligned to 2^host, so lo + span(host) == lo | span(host): no overflow.
        while lo | span(host) > hi {
            host -= 1;
        }
        let end = lo | span(host);
        next = (end < hi).then(|| end + 1);
        Some(Prefix { family, addr: lo, len: (bits - host) as u8 })
    })
}

/// Every prefix of `family` not covered by `prefixes`, as few CIDRs as possible.
pub fn complement(prefixes: &[Prefix], family: Family) -> Vec<Prefix> {
    let mut ranges: Vec<(u128, u128)> = prefixes.iter().filter(|p| p.family == family).map(Prefix::range).collect();
    ranges.sort_unstable();
    let mut out = Vec::new();
    // `next` is the first address not yet known to be covered; None past the end.
    let mut next = Some(0u128);
    for (lo, hi) in ranges {
        let Some(n) = next else { break };
        if lo > n {
            out.extend(range_to_prefixes(family, n, lo - 1));
        }
        if hi >= n {
            next = hi.checked_add(1).filter(|a| *a <= family.max_addr());
        }
    }
    if let Some(n) = next {
        out.extend(range_to_prefixes(family, n, family.max_addr()));
    }
    out
}

/// Why one line of a list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not an IP address")]
    BadAddress,
    #[error("prefix length {len} is larger than {max} for this address family")]
    LengthTooLarge { len: u32, max: u8 },
    #[error("prefix length is not a number")]
    BadLength,
    #[error("host bits set: did you mean {suggestion}?")]
    HostBitsSet { suggestion: String },
}

/// Parses one CIDR (`a.b.c.d/n`, `x::/n`) or bare address (a /32 or /128).
pub fn parse_prefix(text: &str) -> Result<Prefix, LineError> {
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr_text.parse().map_err(|_| LineError::BadAddress)?;
    let (family, addr) = ip_to_u128(ip);
    let max = family.bits();
    let len = match len_text {
        None => max,
        Some(l) => {
            let l: u32 = l.parse().map_err(|_| LineError::BadLength)?;
            if l > u32::from(max) {
                return Err(LineError::LengthTooLarge { len: l, max });
            }
            l as u8
        }
    };
    let host_bits = u32::from(max - len);
    let mask = if host_bits == 128 { 0 } else { !((1u128 << host_bits) - 1) } & family.max_addr();
    if addr & !mask != 0 {
        // A typo such as 10.0.0.1/8 is more likely a mistake than an intent to block
        // the whole /8: refuse it and show the network it would have meant.
        let network = Prefix { family, addr: addr & mask, len };
        return Err(LineError::HostBitsSet { suggestion: network.to_string() });
    }
    Ok(unmap_v4(Prefix { family, addr, len }))
}

/// An IPv4-mapped IPv6 prefix (inside ::ffff:0:0/96) as the IPv4 prefix it names:
/// mapped addresses never appear as a source on the wire, so as IPv6 it would
/// never match anything, while the operator meant the IPv4 addresses.
fn unmap_v4(p: Prefix) -> Prefix {
    if p.family == Family::V6 && p.len >= 96 && p.addr >> 32 == 0xffff {
        Prefix { family: Family::V4, addr: p.addr & 0xffff_ffff, len: p.len - 96 }
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn p(s: &str) -> Prefix {
        parse_prefix(s).unwrap()
    }

    #[test]
    fn parses_cidrs_and_bare_addresses() {
        assert_eq!(p("10.0.0.0/8"), Prefix { family: Family::V4, addr: 0x0a00_0000, len: 8 });
        assert_eq!(p("192.0.2.7"), Prefix { family: Family::V4, addr: 0xc000_0207, len: 32 });
        assert_eq!(p("0.0.0.0/0").range(), (0, u32::MAX as u128));
        assert_eq!(p("2001:db8::/32").range().0, 0x2001_0db8u128 << 96);
        assert_eq!(p("::/0").range(), (0, u128::MAX));
        assert_eq!(p("2001:db8::1").len, 128);
    }

    #[rstest]
    #[case("10.0.0.300/8", LineError::BadAddress)]
    #[case("hello", LineError::BadAddress)]
    #[case("10.0.0.0/33", LineError::LengthTooLarge { len: 33, max: 32 })]
    #[case("::/129", LineError::LengthTooLarge { len: 129, max: 128 })]
    #[case("10.0.0.0/x", LineError::BadLength)]
    #[case("10.0.0.0/-1", LineError::BadLength)]
    #[case("10.1.2.3/8", LineError::HostBitsSet { suggestion: "10.0.0.0/8".into() })]
    #[case("2001:db8::1/32", LineError::HostBitsSet { suggestion: "2001:db8::/32".into() })]
    fn rejects_bad_prefixes_with_reason(#[case] text: &str, #[case] why: LineError) {
        assert_eq!(parse_prefix(text), Err(why));
    }

    #[test]
    fn ipv4_mapped_ipv6_prefixes_become_ipv4() {
        assert_eq!(p("::ffff:1.2.3.4"), p("1.2.3.4"));
        assert_eq!(p("::ffff:198.51.100.0/120"), p("198.51.100.0/24"));
        assert_eq!(p("::ffff:0:0/96"), p("0.0.0.0/0"));
        // Wider than the mapped space: IPv6 as written.
        assert_eq!(p("::/64").family, Family::V6);
        assert_eq!(p("::1").family, Family::V6);
    }

    #[test]
    fn ranges_split_into_exact_cidrs() {
        let strs = |v: Vec<Prefix>| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(strs(range_to_prefixes(Family::V4, 0x0a00_0000, 0x0a00_00ff)), ["10.0.0.0/24"]);
        // 10.0.0.1 .. 10.0.0.6: not aligned at either end.
        assert_eq!(
            strs(range_to_prefixes(Family::V4, 0x0a00_0001, 0x0a00_0006)),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(strs(range_to_prefixes(Family::V4, 0, u32::MAX as u128)), ["0.0.0.0/0"]);
        assert_eq!(strs(range_to_prefixes(Family::V6, 0, u128::MAX)), ["::/0"]);
        assert_eq!(
            strs(range_to_prefixes(Family::V6, u128::MAX, u128::MAX)),
            ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]
        );
    }

    #[test]
    fn complement_covers_exactly_the_rest() {
        let ps: Vec<Prefix> =
            ["10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24", "::/1"].iter().map(|p| parse_prefix(p).unwrap()).collect();
        let c = complement(&ps, Family::V4);
        for probe in [
            "9.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "11.0.0.0",
            "192.0.2.7",
            "192.0.3.0",
            "0.0.0.0",
            "255.255.255.255",
        ] {
            let a = parse_prefix(probe).unwrap();
            let inside = ps.iter().any(|p| p.contains(Family::V4, a.addr));
            let in_c = c.iter().any(|p| p.contains(Family::V4, a.addr));
            assert_ne!(inside, in_c, "{probe}");
        }
        assert_eq!(complement(&ps, Family::V6).iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["8000::/1"]);
        assert_eq!(complement(&[], Family::V4).iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["0.0.0.0/0"]);
        assert!(complement(&[parse_prefix("::/0").unwrap()], Family::V6).is_empty());
    }
}

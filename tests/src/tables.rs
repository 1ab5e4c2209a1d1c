//! Generators of large, realistic tables for tests and benchmarks:
//! - threat-list-like sets of random host addresses and random IPv6 /64s;
//! - geo-like country tables made from real country prefixes (the bundled
//!   snapshot) cut into finer pieces, a share of which go to other countries, so
//!   that ranges are fragmented and interleaved as in MaxMind / DB-IP /
//!   ip-location-db tables (450-520k networks per family).
//!
//! Addresses are plain integers (IPv4 in the low 32 bits): this crate does not
//! depend on blocker.

use std::{collections::HashSet, fmt::Write as _, net::IpAddr};

use crate::Rng;

/// `n` distinct random IPv4 addresses, outside 0/8, 10/8, 127/8, 169.254/16 and
/// 224/3 (where real threat lists have none).
pub fn random_v4_hosts(rng: &mut Rng, n: usize) -> Vec<u32> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let a = rng.next_u64() as u32;
        let first = a >> 24;
        if first == 0 || first == 10 || first == 127 || first >= 224 || a >> 16 == 0xa9fe {
            continue;
        }
        if seen.insert(a) {
            out.push(a);
        }
    }
    out
}

/// `n` distinct random IPv6 addresses in 2000::/3.
pub fn random_v6_hosts(rng: &mut Rng, n: usize) -> Vec<u128> {
    distinct(n, || global_v6(rng))
}

/// `n` distinct random IPv6 /64 prefixes in 2000::/3 (the network address).
pub fn random_v6_nets64(rng: &mut Rng, n: usize) -> Vec<u128> {
    distinct(n, || global_v6(rng) & !u128::from(u64::MAX))
}

fn global_v6(rng: &mut Rng) -> u128 {
    let a = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    (a >> 3) | (1u128 << 125)
}

fn distinct(n: usize, mut next: impl FnMut() -> u128) -> Vec<u128> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let a = next();
        if seen.insert(a) {
            out.push(a);
        }
    }
    out
}

/// A threat-list-like text list: the given hosts and /64s, one per line.
pub fn list_text(v4_hosts: &[u32], v6_hosts: &[u128], v6_nets64: &[u128]) -> String {
    let mut s = String::with_capacity(24 * (v4_hosts.len() + v6_hosts.len() + v6_nets64.len()));
    for a in v4_hosts {
        let _ = writeln!(s, "{}", std::net::Ipv4Addr::from(*a));
    }
    for a in v6_hosts {
        let _ = writeln!(s, "{}", std::net::Ipv6Addr::from(*a));
    }
    for a in v6_nets64 {
        let _ = writeln!(s, "{}/64", std::net::Ipv6Addr::from(*a));
    }
    s
}

/// One network of a country table: (is IPv6, address, prefix length).
pub type Net = (bool, u128, u8);

/// A geo-like table from real country prefixes: every prefix is cut into
/// `2^split_v4` (IPv4) or `2^split_v6` (IPv6) equal pieces (fewer where the prefix
/// is too long), and each piece stays with its country with probability
/// `keep_percent`, else goes to a country drawn from the prefixes around it in
/// address order (neighbouring ranges belong to related networks). Returns
/// (country, first address, last address, is IPv6) rows in address order.
pub fn geo_like(
    countries: &[(String, Vec<Net>)],
    rng: &mut Rng,
    split_v4: u8,
    split_v6: u8,
    keep_percent: u64,
) -> Vec<(String, u128, u128, bool)> {
    let mut nets: Vec<(Net, usize)> =
        countries.iter().enumerate().flat_map(|(c, (_, nets))| nets.iter().map(move |n| (*n, c))).collect();
    nets.sort_unstable();
    nets.dedup_by_key(|(n, _)| *n);
    let mut rows = Vec::new();
    for (i, ((v6, addr, len), owner)) in nets.iter().enumerate() {
        let bits: u8 = if *v6 { 128 } else { 32 };
        let split = if *v6 { split_v6 } else { split_v4 }.min(bits - len);
        let piece_len = len + split;
        let piece_host = u32::from(bits - piece_len);
        for k in 0..1u128 << split {
            let start = addr | (k << piece_host);
            let end = start | if piece_host >= 128 { u128::MAX } else { (1u128 << piece_host) - 1 };
            let country = if rng.next_u64() % 100 < keep_percent {
                *owner
            } else {
                // A country of a prefix up to 64 positions away.
                let j = (i + (rng.next_u64() % 129) as usize).saturating_sub(64).min(nets.len() - 1);
                nets[j].1
            };
            rows.push((countries[country].0.clone(), start, end, *v6));
        }
    }
    rows
}

/// Rows of `geo_like` as an ip-location-db style CSV (`start,end,country`).
pub fn geo_csv(rows: &[(String, u128, u128, bool)]) -> String {
    let mut s = String::with_capacity(48 * rows.len());
    for (cc, start, end, v6) in rows {
        let ip = |a: u128| if *v6 { IpAddr::V6(a.into()) } else { IpAddr::V4((a as u32).into()) };
        let _ = writeln!(s, "{},{},{cc}", ip(*start), ip(*end));
    }
    s
}

//! Capacity: tables several times larger than real ones load into the kernel and
//! answer like the compiler's reference, through BPF_PROG_TEST_RUN.
//!
//! The table: one list of 2,000,000 random IPv4 addresses, 1,000,000 random IPv6
//! addresses and 1,000,000 random IPv6 /64s, and a geo-like country table (the
//! bundled countries cut into finer, interleaved pieces: over 450k networks per
//! family), alone and together, in deny-all and allowlist modes.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use std::{net::IpAddr, path::Path};

use aya::programs::{TestRun, TestRunOptions};
use blocker::{
    compile::table::{compile, CompiledTable},
    dataplane::{
        maps::{DataplaneMaps, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    net::{complement, Family, Prefix},
    policy::{Action, ListSpec, Role},
    source::{cidr_list::parse_list, region::db::RegionDb},
};
use blocker_tests::{daemon::PinRoot, frames::ip_frame, tables, unique_tag, Rng};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

struct Inputs {
    hosts: Vec<Prefix>,
    geo: RegionDb,
}

/// The threat list and the geo table, generated as text and read by blocker's own
/// parsers.
fn inputs() -> Inputs {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let text = tables::list_text(
        &tables::random_v4_hosts(&mut rng, 2_000_000),
        &tables::random_v6_hosts(&mut rng, 1_000_000),
        &tables::random_v6_nets64(&mut rng, 1_000_000),
    );
    let hosts = parse_list(Path::new("big.txt"), &text).unwrap();
    let mut geo = RegionDb::default();
    blocker::source::region::csv::parse_csv("geo.csv", &geo_csv(&mut rng), &mut geo).unwrap();
    let count = |f| geo.regions.values().map(|r| r.count(f)).sum::<usize>();
    assert!(
        count(Family::V4) >= 450_000 && count(Family::V6) >= 450_000,
        "{} {}",
        count(Family::V4),
        count(Family::V6)
    );
    Inputs { hosts, geo }
}

/// The geo-like country table as `start,end,country` CSV: the bundled countries
/// cut into finer, interleaved pieces.
fn geo_csv(rng: &mut Rng) -> String {
    let bundled = RegionDb::bundled().unwrap();
    let countries: Vec<(String, Vec<tables::Net>)> = bundled
        .regions
        .values()
        .map(|r| (r.code.clone(), r.prefixes.iter().map(|p| (p.family == Family::V6, p.addr, p.len)).collect()))
        .collect();
    tables::geo_csv(&tables::geo_like(&countries, rng, 2, 3, 60))
}

fn country_lists(geo: &RegionDb, role: Role, filter: impl Fn(usize) -> bool) -> Vec<ListSpec> {
    geo.regions
        .values()
        .enumerate()
        .filter(|(i, _)| filter(*i))
        .map(|(_, r)| ListSpec { name: format!("country:{}", r.code), role, prefixes: r.prefixes.clone() })
        .collect()
}

/// Allowlist mode with the first `n` countries allowed.
fn allowlist(geo: &RegionDb, n: usize) -> Vec<ListSpec> {
    let mut lists = country_lists(geo, Role::AllowedRegion, |i| i < n);
    let allowed: Vec<Prefix> = lists.iter().flat_map(|l| l.prefixes.iter().copied()).collect();
    let mut outside = complement(&allowed, Family::V4);
    outside.extend(complement(&allowed, Family::V6));
    lists.push(ListSpec { name: "outside".into(), role: Role::OutsideAllowed, prefixes: outside });
    lists
}

/// Loads `table` and checks `probes_per_family` random addresses per family, half
/// of them inside the table's prefixes: the verdict of the XDP program through
/// BPF_PROG_TEST_RUN, and the list id the walk finds in the kernel's maps.
fn check(table: &CompiledTable, probes_per_family: usize, rng: &mut Rng) {
    let root = PinRoot::new(&format!("capacity-{}", unique_tag()));
    pins::ensure_bpffs(&root.0).unwrap();
    let mut maps = DataplaneMaps::load(&pins::iface_dir(&root.0, "test"), 0).unwrap();
    let report = maps.apply(table, DEFAULT_TABLE_MEMORY).unwrap();
    eprintln!(
        "{} IPv4 + {} IPv6 ranges: {:.1} MiB of classifier maps",
        report.v4_ranges,
        report.v6_ranges,
        report.table_bytes as f64 / f64::from(1 << 20)
    );
    let ids: std::collections::HashMap<String, u32> =
        maps.counters().unwrap().lists.into_iter().filter(|l| l.live).map(|l| (l.name, l.id)).collect();
    let (mut dropped, mut passed) = (0, 0);
    for family in [Family::V4, Family::V6] {
        let entries = table.entries(family);
        let live_table = maps.live_table().unwrap();
        for i in 0..probes_per_family {
            let addr = if i % 2 == 0 && !entries.is_empty() {
                let r = entries[rng.below(entries.len() as u128) as usize];
                rng.in_range(r.lo, r.hi)
            } else {
                match family {
                    Family::V4 => u128::from(rng.next_u64() as u32),
                    Family::V6 => (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) >> 3 | 1 << 125,
                }
            };
            let expected = table.lookup(family, addr);
            let live = live_table.lookup(family, addr);
            assert_eq!(
                live.map(|(id, action)| (id, action.unwrap())),
                expected.map(|l| (ids[&table.lists[l].name], table.lists[l].action)),
                "{family:?} {addr:#x}"
            );
            let ip = match family {
                Family::V4 => IpAddr::V4((addr as u32).into()),
                Family::V6 => IpAddr::V6(addr.into()),
            };
            let frame = ip_frame(ip, &[]);
            let prog = object::program_mut(maps.ebpf_mut().unwrap()).unwrap();
            let verdict = prog.test_run(TestRunOptions { data_in: Some(&frame), ..Default::default() }).unwrap();
            let drop = expected.is_some_and(|l| table.lists[l].action == Action::Drop);
            assert_eq!(verdict.return_value, if drop { XDP_DROP } else { XDP_PASS }, "{ip}");
            if drop {
                dropped += 1;
            } else {
                passed += 1;
            }
        }
    }
    assert!(dropped > probes_per_family / 2 && passed > 0, "{dropped} dropped, {passed} passed");
}

#[test]
fn threat_list_and_geo_table_together_load_and_answer_like_the_reference() {
    let inputs = inputs();
    let mut rng = Rng(7);
    // (a) + (b) in deny-all mode, half the countries allowed as exceptions to see
    // both verdicts: 1M probes per family.
    let mut lists = vec![ListSpec { name: "threats".into(), role: Role::Deny, prefixes: inputs.hosts.clone() }];
    lists.extend(country_lists(&inputs.geo, Role::Deny, |i| i % 2 == 0));
    lists.extend(country_lists(&inputs.geo, Role::Exception, |i| i % 2 == 1));
    check(&compile(&lists), 1_000_000, &mut rng);
}

#[test]
fn geo_table_in_deny_all_and_allowlist_modes() {
    let inputs = inputs();
    let mut rng = Rng(11);
    check(&compile(&country_lists(&inputs.geo, Role::Deny, |_| true)), 100_000, &mut rng);
    for allowed in [1, 10, 150] {
        let mut lists = allowlist(&inputs.geo, allowed);
        lists.insert(0, ListSpec { name: "threats".into(), role: Role::Deny, prefixes: inputs.hosts.clone() });
        check(&compile(&lists), 100_000, &mut rng);
    }
}

/// The full ASN table (the bundled snapshot: about 412k IPv4 and 103k IPv6
/// ranges of 91k systems) with the geo-like country table, compiled from a
/// policy as the daemon compiles it: 50 systems denied beside half the
/// countries; 2,000 systems allowlisted with half the countries denied; and
/// every system denied (one list past `ASN_LISTS_PER_ROLE`) with every country.
#[test]
fn full_asn_table_with_the_country_table_in_deny_many_and_allowlist_modes() {
    use blocker::{
        compile::table::build_table,
        policy::Policy,
        source::asn::{db::AsnDb, Asn},
    };
    let tmp = tempfile::tempdir().unwrap();
    let geo_path = tmp.path().join("geo.csv");
    std::fs::write(&geo_path, geo_csv(&mut Rng(0x9e37_79b9_7f4a_7c15))).unwrap();
    let bundled = RegionDb::bundled().unwrap();
    let codes: Vec<String> = bundled.regions.keys().cloned().collect();
    let asns = AsnDb::bundled().unwrap();
    let v4: usize = asns.systems.values().map(|s| s.count(Family::V4)).sum();
    let v6: usize = asns.systems.values().map(|s| s.count(Family::V6)).sum();
    assert!(asns.systems.len() > 80_000 && v4 > 400_000 && v6 > 100_000, "{} {v4} {v6}", asns.systems.len());
    // Systems by size, largest first: real policies name big networks.
    let mut by_size: Vec<(usize, Asn)> = asns.systems.values().map(|s| (s.prefixes.len(), s.asn)).collect();
    by_size.sort_by(|a, b| b.cmp(a));
    let base = Policy {
        country_source: vec![format!("csv:{}", geo_path.display()).parse().unwrap()],
        never_block: vec!["192.0.2.0/24".into()],
        no_default_never_block: true,
        ..Default::default()
    };
    let mut rng = Rng(13);
    let started = std::time::Instant::now();
    let deny_50 = Policy {
        deny_country: codes.iter().step_by(2).cloned().collect(),
        deny_asn: by_size.iter().take(50).map(|(_, a)| *a).collect(),
        ..base.clone()
    };
    let table = build_table(&deny_50).unwrap();
    eprintln!("50 systems and {} countries denied: compiled in {:?}", codes.len() / 2, started.elapsed());
    assert_eq!(table.lists.iter().filter(|l| l.name.starts_with("asn:")).count(), 50);
    check(&table, 100_000, &mut rng);

    let allow_2000 = Policy {
        deny_country: codes.iter().step_by(2).cloned().collect(),
        allow_only_asn: by_size.iter().skip(50).take(2_000).map(|(_, a)| *a).collect(),
        ..base.clone()
    };
    let table = build_table(&allow_2000).unwrap();
    assert!(table.lists.iter().any(|l| l.name == "asns:allow-only"), "2,000 systems count as one list");
    check(&table, 100_000, &mut rng);

    let started = std::time::Instant::now();
    let everything =
        Policy { deny_country: codes.clone(), deny_asn: asns.systems.keys().copied().collect(), ..base.clone() };
    let table = build_table(&everything).unwrap();
    eprintln!("every system and every country denied: compiled in {:?}", started.elapsed());
    check(&table, 100_000, &mut rng);
}

//! Per-packet cost of the XDP program through BPF_PROG_TEST_RUN, against a program
//! that only drops (the floor) and the same program with the kernel LPM trie as
//! classifier (the baseline), all measured in the same run on the same frames.
//! Needs root. `cargo xtask bench` runs it; it prints a table and writes JSON to
//! target/bench/dataplane.json.
//!
//! A fourth program, `blocker_no_lookup`, is the same program with a classifier
//! that reads no memory (every source a hit of list 1): LPM / no-lookup is the most
//! any classifier could gain over the LPM trie inside this program.
//!
//! For the world tables a fifth: blocker with the same table in a policy of two
//! scopes (TCP 443, then everything else): `scoped/blk` is what reading the L4
//! header and the port map costs per packet. And the tc egress program
//! (outbound) with the same table as its outbound lists, on the same frames
//! with source and destination swapped: `egress/blk` compares the outbound
//! direction's cost per packet with the inbound one's (an skb, not an XDP
//! frame: the harnesses differ too).
//!
//! Bans (`decisions`): for the world deny-all table, the same program with
//! `BANS` bans beside the table (IPv4 hosts and /24s, IPv6 hosts and /64s), on
//! the table's frames (no ban holds them: a legitimate client's cost) and on
//! frames from banned sources (the attack's): `bans/blk` against the program
//! with no bans, which reads one zero word.
//!
//! Tables: the world (bundled countries) in deny-all and allowlist modes; a threat
//! list of 2,000,000 random IPv4 hosts, 1,000,000 IPv6 hosts and 1,000,000 IPv6
//! /64s; a geo-like table (the countries cut into finer interleaved pieces, over
//! 450k networks per family) denied whole and in allowlist mode with 10 countries;
//! and the threat list with the geo table; the full ASN table (the bundled
//! snapshot) with 50 systems denied beside half the countries, 2,000 systems
//! in allowlist mode, and every system denied with every country. The LPM baseline is filled only where
//! the table is at most `LPM_LIMIT` CIDRs (its fill is element by element).
//!
//! Frames: 65,536 distinct Ethernet+IPv4/IPv6+UDP frames per family, half with a
//! source inside a random prefix of the table (hits), half with a uniformly random
//! source (IPv6: within 2000::/3). Every frame is run `REPEAT` times and the
//! kernel's mean per run is taken, so each frame's path is cache-warm: the figures
//! compare code paths, not cold-cache table effects (see the end-to-end bench).
//!
//! BPF_PROG_TEST_RUN with repeat > 1 adds the program to the kernel's XDP
//! dispatcher and removes it afterwards, each a synchronize_rcu (milliseconds per
//! call). The harness therefore first attaches each program in native mode to a
//! veth of a network namespace it creates (and deletes at the end), which keeps the
//! programs in the dispatcher. No packet is sent on those veths.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

mod common;

use std::{collections::HashMap, fmt::Write as _, net::IpAddr, time::Instant};

use aya::{
    maps::{lpm_trie::Key, LpmTrie, MapData},
    programs::{SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use blocker::{
    compile::table::{build_table, compile, CompiledPolicy, CompiledScope, CompiledTable, ScopeTable},
    dataplane::{
        maps::{DataplaneMaps, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    net::{complement, Family, Prefix},
    policy::{
        ports::{PortRule, Ports},
        ListSpec, Policy, Role,
    },
    source::{
        asn::{db::AsnDb, Asn},
        cidr_list::parse_list,
        region::db::RegionDb,
    },
};
use blocker_common::{
    bench::{LPM_V4, LPM_V6, PROGRAM_DROP_FLOOR, PROGRAM_LPM_BASELINE, PROGRAM_NO_LOOKUP},
    PROGRAM_NAME,
};
use blocker_tests::{frames::ip_frame, tables, Rng};

/// Bans beside the world table (`BLOCKER_BENCH_BANS`).
const BANS: usize = 1_000_000;

struct BanRow {
    family: &'static str,
    /// The table's frames: the program without bans, then with them.
    no_bans: f64,
    misses: f64,
    /// Frames from banned sources: without bans, then with them.
    no_bans_attack: f64,
    hits: f64,
}

/// Writes `n` bans into `maps`' ban maps as the daemon would (`decisions`):
/// 60 % IPv4 hosts, 10 % IPv4 /24s, 20 % IPv6 hosts, 10 % IPv6 /64s. Returns
/// an address inside each of the first bans of each family (hosts and
/// prefixes mixed), for attack frames.
fn fill_bans(maps: &mut DataplaneMaps, n: usize) -> (Vec<IpAddr>, Vec<IpAddr>) {
    use blocker::dataplane::bans::{length_words, BanKey};
    use blocker_common::bans::{BanEntry, NEVER};
    let mut rng = Rng(0x5eed_0bad_cafe_f00d);
    let id = maps.origin_id("bench").unwrap();
    let mut prefixes = Vec::with_capacity(n);
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for i in 0..n {
        let mut r = rng.next_u64();
        // Not in the default never-block ranges (127/8, 169.254/16), which
        // win over bans.
        if matches!((r as u32) >> 24, 127 | 169) {
            r ^= 0x8000_0000;
        }
        let p = match i % 10 {
            0..=5 => Prefix { family: Family::V4, addr: u128::from(r as u32), len: 32 },
            6 => Prefix { family: Family::V4, addr: u128::from(r as u32 & 0xffff_ff00), len: 24 },
            7 | 8 => Prefix {
                family: Family::V6,
                addr: (0x2000u128 << 112) | (u128::from(r) << 32) | u128::from(rng.next_u64() as u32),
                len: 128,
            },
            _ => Prefix { family: Family::V6, addr: (0x2000u128 << 112) | (u128::from(r >> 16) << 64), len: 64 },
        };
        // A host is its own address; a prefix, an address inside it.
        let inside = if p.len == p.family.bits() { p } else { Prefix { addr: p.addr | 1, ..p } };
        match p.family {
            Family::V4 => v4.push(inside.to_ip()),
            Family::V6 => v6.push(inside.to_ip()),
        }
        prefixes.push(p);
    }
    let bans = maps.bans_mut();
    bans.set_lengths(length_words(&prefixes)).unwrap();
    bans.filter_rebuild(&prefixes);
    for p in &prefixes {
        let entry = BanEntry { expires_ns: NEVER, packets: 0, list_id: id, action: blocker_common::ACTION_DROP };
        bans.put(&BanKey::of(p), entry).unwrap();
    }
    (v4, v6)
}

/// Largest table (in CIDRs) the LPM baseline is filled with.
const LPM_LIMIT: usize = 1_500_000;

const FRAMES_PER_FAMILY: usize = 65_536;
const REPEAT: u32 = 512;

/// `BLOCKER_BENCH_FRAMES` / `BLOCKER_BENCH_REPEAT` override the defaults.
fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn frames(table: &CompiledTable, family: Family, rng: &mut Rng) -> Vec<Vec<u8>> {
    let entries = table.entries(family);
    (0..knob("BLOCKER_BENCH_FRAMES", FRAMES_PER_FAMILY))
        .map(|i| {
            let addr = if i % 2 == 0 && !entries.is_empty() {
                let r = entries[rng.below(entries.len() as u128) as usize];
                rng.in_range(r.lo, r.hi)
            } else {
                match family {
                    Family::V4 => rng.below(1 << 32),
                    Family::V6 => (1u128 << 125) | rng.below(1u128 << 125),
                }
            };
            let ip: IpAddr = Prefix { family, addr, len: family.bits() }.to_ip();
            ip_frame(ip, &[])
        })
        .collect()
}

/// Mean ns per packet of each program over all frames, and each program's
/// verdicts. The programs take turns frame by frame, so the VM's drifting clock
/// rate affects them alike and their ratios hold within the run.
fn measure(progs: &[&Xdp], frames: &[Vec<u8>]) -> Vec<(f64, Vec<u32>)> {
    let mut out: Vec<(f64, Vec<u32>)> = progs.iter().map(|_| (0.0, Vec::with_capacity(frames.len()))).collect();
    for (i, f) in frames.iter().enumerate() {
        for k in 0..progs.len() {
            // Rotate who goes first: a frame's first run warms the caches for the rest.
            let p = (i + k) % progs.len();
            let r = progs[p]
                .test_run(TestRunOptions {
                    data_in: Some(f),
                    repeat: knob("BLOCKER_BENCH_REPEAT", REPEAT),
                    ..Default::default()
                })
                .expect("BPF_PROG_TEST_RUN");
            out[p].0 += r.duration.as_nanos() as f64;
            out[p].1.push(r.return_value);
        }
    }
    for o in &mut out {
        o.0 /= frames.len() as f64;
    }
    out
}

/// The same frames with source and destination swapped: what the egress
/// program judges by destination.
fn swapped(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .map(|f| {
            let mut f = f.clone();
            let (src, len) = if f[14] >> 4 == 4 { (14 + 12, 4) } else { (14 + 8, 16) };
            let (a, b) = f[src..src + 2 * len].split_at_mut(len);
            a.swap_with_slice(b);
            f
        })
        .collect()
}

/// Mean ns per packet of the egress program over `frames`, and its verdicts
/// as XDP's (TC_ACT_SHOT as XDP_DROP, anything else as XDP_PASS).
fn measure_egress(prog: &SchedClassifier, frames: &[Vec<u8>]) -> (f64, Vec<u32>) {
    let mut ns = 0.0;
    let mut verdicts = Vec::with_capacity(frames.len());
    for f in frames {
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(f),
                repeat: knob("BLOCKER_BENCH_REPEAT", REPEAT),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        ns += r.duration.as_nanos() as f64;
        verdicts.push(if r.return_value == 2 { 1 } else { 2 });
    }
    (ns / frames.len() as f64, verdicts)
}

fn prog<'a>(ebpf: &'a Ebpf, name: &str) -> &'a Xdp {
    ebpf.program(name).unwrap().try_into().unwrap()
}

fn load_extra(ebpf: &mut Ebpf, name: &str) {
    let prog: &mut Xdp = ebpf.program_mut(name).expect(name).try_into().unwrap();
    prog.load().unwrap();
}

/// A namespace with veths to park the programs on (see the module docs). The
/// process enters it for the rest of the run.
struct ParkingNetns(String);

/// Programs parked at once: one veth each.
const PARKING_SPOTS: usize = 6;

impl ParkingNetns {
    fn enter() -> ParkingNetns {
        let name = format!("blk-bench-{}", std::process::id());
        blocker_tests::sh("ip", &["netns", "add", &name]).unwrap();
        for i in 0..PARKING_SPOTS {
            let (a, b) = (format!("bpa{i}"), format!("bpb{i}"));
            blocker_tests::sh("ip", &["-n", &name, "link", "add", &a, "type", "veth", "peer", "name", &b]).unwrap();
            blocker_tests::sh("ip", &["-n", &name, "link", "set", &a, "up"]).unwrap();
            blocker_tests::sh("ip", &["-n", &name, "link", "set", &b, "up"]).unwrap();
        }
        let f = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        // SAFETY: single-threaded at this point; enters a network namespace we made.
        assert_eq!(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) }, 0);
        ParkingNetns(name)
    }

    /// Parks the programs `names` of `ebpf` on the spots from `first` on.
    fn park(&self, ebpf: &mut Ebpf, names: &[&str], first: usize) {
        assert!(first + names.len() <= PARKING_SPOTS);
        for (i, name) in names.iter().enumerate() {
            let prog: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
            prog.attach(&format!("bpa{}", first + i), aya::programs::XdpMode::Driver).expect("native XDP on veth");
        }
    }
}

impl Drop for ParkingNetns {
    fn drop(&mut self) {
        let _ = blocker_tests::sh("ip", &["netns", "del", &self.0]);
    }
}

/// The table as CIDRs with their leaves, or None past `LPM_LIMIT`.
fn lpm_entries(table: &CompiledTable, ids: &HashMap<String, u32>) -> Option<Vec<(Prefix, u32)>> {
    let mut out = Vec::new();
    for family in [Family::V4, Family::V6] {
        for r in table.entries(family) {
            let list = &table.lists[r.list];
            let leaf = u32::from(blocker_common::classifier::leaf(list.action.code(), ids[&list.name]));
            out.extend(r.prefixes(family).into_iter().map(|p| (p, leaf)));
            if out.len() > LPM_LIMIT {
                return None;
            }
        }
    }
    Some(out)
}

fn fill_lpm(ebpf: &mut Ebpf, entries: &[(Prefix, u32)]) {
    let mut v4: LpmTrie<MapData, [u8; 4], u32> = ebpf.take_map(LPM_V4).unwrap().try_into().unwrap();
    let mut v6: LpmTrie<MapData, [u8; 16], u32> = ebpf.take_map(LPM_V6).unwrap().try_into().unwrap();
    for (p, leaf) in entries {
        match p.family {
            Family::V4 => v4.insert(&Key::new(u32::from(p.len), (p.addr as u32).to_be_bytes()), leaf, 0).unwrap(),
            Family::V6 => v6.insert(&Key::new(u32::from(p.len), p.addr.to_be_bytes()), leaf, 0).unwrap(),
        }
    }
}

/// The benchmark's tables: (name, lists).
fn tables_to_measure() -> Vec<(&'static str, CompiledTable)> {
    let db = RegionDb::bundled().unwrap();
    let all: Vec<String> = db.regions.keys().cloned().collect();
    let world_deny = Policy { deny_country: all, ..Default::default() };
    let world_allow = Policy {
        allow_country: ["US", "DE", "FR", "GB", "JP", "CA", "NL"].map(String::from).to_vec(),
        confirm_allowlist_without_never_block: true,
        ..Default::default()
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let text = tables::list_text(
        &tables::random_v4_hosts(&mut rng, 2_000_000),
        &tables::random_v6_hosts(&mut rng, 1_000_000),
        &tables::random_v6_nets64(&mut rng, 1_000_000),
    );
    let threats = ListSpec {
        name: "threats".into(),
        role: Role::Deny,
        prefixes: parse_list(std::path::Path::new("threats.txt"), &text).unwrap(),
    };
    let countries: Vec<(String, Vec<tables::Net>)> = db
        .regions
        .values()
        .map(|r| (r.code.clone(), r.prefixes.iter().map(|p| (p.family == Family::V6, p.addr, p.len)).collect()))
        .collect();
    let mut geo = RegionDb::default();
    blocker::source::region::csv::parse_csv(
        "geo.csv",
        &tables::geo_csv(&tables::geo_like(&countries, &mut rng, 2, 3, 60)),
        &mut geo,
    )
    .unwrap();
    let geo_lists = |role| -> Vec<ListSpec> {
        geo.regions
            .values()
            .map(|r| ListSpec { name: format!("country:{}", r.code), role, prefixes: r.prefixes.clone() })
            .collect()
    };
    let mut geo_allow10: Vec<ListSpec> = geo_lists(Role::AllowedRegion).into_iter().take(10).collect();
    let allowed: Vec<Prefix> = geo_allow10.iter().flat_map(|l| l.prefixes.iter().copied()).collect();
    let mut outside = complement(&allowed, Family::V4);
    outside.extend(complement(&allowed, Family::V6));
    geo_allow10.push(ListSpec { name: "outside".into(), role: Role::OutsideAllowed, prefixes: outside });
    let mut together = vec![threats.clone()];
    together.extend(geo_lists(Role::Deny));
    // Networks by owner: the bundled ASN table (the full one), its largest
    // systems first, beside the bundled countries.
    let asns = AsnDb::bundled().unwrap();
    let mut by_size: Vec<(usize, Asn)> = asns.systems.values().map(|s| (s.prefixes.len(), s.asn)).collect();
    by_size.sort_by(|a, b| b.cmp(a));
    let half: Vec<String> = db.regions.keys().step_by(2).cloned().collect();
    let asn_deny_50 = Policy {
        deny_country: half.clone(),
        deny_asn: by_size.iter().take(50).map(|(_, a)| *a).collect(),
        ..Default::default()
    };
    let asn_allow_2000 = Policy {
        allow_only_asn: by_size.iter().take(2_000).map(|(_, a)| *a).collect(),
        confirm_allowlist_without_never_block: true,
        ..Default::default()
    };
    let asn_all = Policy {
        deny_country: db.regions.keys().cloned().collect(),
        deny_asn: asns.systems.keys().copied().collect(),
        ..Default::default()
    };
    type Builder<'a> = Box<dyn Fn() -> CompiledTable + 'a>;
    let builders: Vec<(&'static str, Builder)> = vec![
        ("world deny-all", Box::new(|| build_table(&world_deny).unwrap())),
        ("world allowlist", Box::new(|| build_table(&world_allow).unwrap())),
        ("threats 4M", Box::new(|| compile(std::slice::from_ref(&threats)))),
        ("geo deny-all", Box::new(|| compile(&geo_lists(Role::Deny)))),
        ("geo allow 10", Box::new(|| compile(&geo_allow10))),
        ("threats+geo", Box::new(|| compile(&together))),
        ("asn deny 50 + half the countries", Box::new(|| build_table(&asn_deny_50).unwrap())),
        ("asn allowlist 2000", Box::new(|| build_table(&asn_allow_2000).unwrap())),
        ("asn all + every country", Box::new(|| build_table(&asn_all).unwrap())),
    ];
    builders.into_iter().filter(|(name, _)| wanted(name)).map(|(name, build)| (name, build())).collect()
}

/// `BLOCKER_BENCH_TABLES=world,geo` measures only the tables whose names contain
/// one of the words (default: all).
fn wanted(table: &str) -> bool {
    match std::env::var("BLOCKER_BENCH_TABLES") {
        Ok(words) if !words.is_empty() => words.split(',').any(|w| table.contains(w.trim())),
        _ => true,
    }
}

struct Row {
    mode: &'static str,
    family: &'static str,
    ranges: usize,
    table_mib: f64,
    floor: f64,
    /// The program with a classifier that reads no memory: parse, policy, counters.
    no_lookup: f64,
    lpm: f64,
    blocker: f64,
    /// The same table in a policy with scopes (world tables only): the port
    /// check's cost is `scoped / blocker`.
    scoped: f64,
    /// The egress program with the table as its outbound lists (world tables only).
    egress: f64,
    hits: usize,
}

fn main() {
    object::check_privileges().expect("the dataplane bench needs root");
    let mut rows = Vec::new();
    let mut ban_rows: Vec<BanRow> = Vec::new();
    let started = Instant::now();
    let tables = tables_to_measure();
    let parking = ParkingNetns::enter();
    for (mode, table) in &tables {
        let root = std::path::PathBuf::from(format!("/sys/fs/bpf/blocker-bench-{}", std::process::id()));
        pins::ensure_bpffs(&root).unwrap();
        let dir = pins::iface_dir(&root, "bench");
        let mut maps = DataplaneMaps::load(&dir, 0).unwrap();
        let report = maps.apply(table, DEFAULT_TABLE_MEMORY).unwrap();
        let ids: HashMap<String, u32> = maps.counters().unwrap().lists.into_iter().map(|l| (l.name, l.id)).collect();
        let lpm = lpm_entries(table, &ids);
        // The baselines, from the benchmark's object, on the same pinned maps.
        let mut bench = common::load_bench_object(&dir);
        for name in [PROGRAM_LPM_BASELINE, PROGRAM_DROP_FLOOR, PROGRAM_NO_LOOKUP] {
            load_extra(&mut bench, name);
        }
        if let Some(entries) = &lpm {
            fill_lpm(&mut bench, entries);
        }
        // The world tables again, in a policy with two scopes: TCP 443 first, then
        // everything else (where the frames, UDP, go). The program reads each
        // frame's L4 header and the port map before the same lookup.
        let mut scoped = mode.starts_with("world").then(|| {
            let mut m = DataplaneMaps::load(&pins::iface_dir(&root, "scoped"), 0).unwrap();
            let api: Ports = Ports(vec!["tcp:443".parse::<PortRule>().unwrap()]);
            let everything = Ports::default();
            let scopes = [
                ScopeTable { name: "api", ports: &api, table, outbound: false },
                ScopeTable { name: "default", ports: &everything, table, outbound: false },
            ];
            m.apply_scopes(&scopes, DEFAULT_TABLE_MEMORY, None).unwrap();
            m
        });
        // The same table as outbound lists, for the egress program.
        let mut outbound = mode.starts_with("world").then(|| {
            let mut m = DataplaneMaps::load(&pins::iface_dir(&root, "outbound"), 0).unwrap();
            let policy = CompiledPolicy {
                scopes: vec![
                    CompiledScope {
                        name: "default".into(),
                        ports: Ports::default(),
                        outbound: false,
                        table: compile(&[]),
                    },
                    CompiledScope {
                        name: blocker::policy::OUTBOUND_SCOPE.into(),
                        ports: Ports::default(),
                        outbound: true,
                        table: table.clone(),
                    },
                ],
            };
            m.apply_scopes(&policy.view(), DEFAULT_TABLE_MEMORY, None).unwrap();
            m
        });
        // The same table with bans beside it.
        let mut banned = (*mode == "world deny-all").then(|| {
            let mut m = DataplaneMaps::load(&pins::iface_dir(&root, "banned"), 0).unwrap();
            m.apply(table, DEFAULT_TABLE_MEMORY).unwrap();
            let t = Instant::now();
            let sources = fill_bans(&mut m, knob("BLOCKER_BENCH_BANS", BANS));
            eprintln!("{} bans written in {:.1} s", knob("BLOCKER_BENCH_BANS", BANS), t.elapsed().as_secs_f64());
            (m, sources)
        });
        if knob("BLOCKER_BENCH_PARK", 1) == 1 {
            if let Some((m, _)) = &mut banned {
                parking.park(m.ebpf_mut().unwrap(), &[PROGRAM_NAME], 5);
            }
            parking.park(maps.ebpf_mut().unwrap(), &[PROGRAM_NAME], 0);
            parking.park(&mut bench, &[PROGRAM_LPM_BASELINE, PROGRAM_DROP_FLOOR, PROGRAM_NO_LOOKUP], 1);
            if let Some(m) = &mut scoped {
                parking.park(m.ebpf_mut().unwrap(), &[PROGRAM_NAME], 4);
            }
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for family in [Family::V4, Family::V6] {
            let fs = frames(table, family, &mut rng);
            let ebpf: &Ebpf = maps.ebpf_mut().unwrap();
            let mut progs =
                vec![prog(&bench, PROGRAM_DROP_FLOOR), prog(&bench, PROGRAM_NO_LOOKUP), prog(ebpf, PROGRAM_NAME)];
            let scoped_ebpf: Option<&Ebpf> = scoped.as_mut().map(|m| &*m.ebpf_mut().unwrap());
            if let Some(e) = scoped_ebpf {
                progs.push(prog(e, PROGRAM_NAME));
            }
            let lpm_at = progs.len();
            if lpm.is_some() {
                progs.push(prog(&bench, PROGRAM_LPM_BASELINE));
            }
            let results = measure(&progs, &fs);
            let (floor, no_lookup, (blocker, verdicts)) = (results[0].0, results[1].0, &results[2]);
            let blocker = *blocker;
            let scoped_ns = scoped_ebpf.map(|_| {
                assert_eq!(&results[3].1, verdicts, "the scoped policy's default scope must judge like the table");
                results[3].0
            });
            let egress_ns = outbound.as_mut().map(|m| {
                let prog = object::egress_program_mut(m.ebpf_mut().unwrap()).expect("the egress program");
                let (ns, egress_verdicts) = measure_egress(prog, &swapped(&fs));
                assert_eq!(&egress_verdicts, verdicts, "egress must judge destinations as XDP judges sources");
                ns
            });
            let lpm_ns = results.get(lpm_at).map(|(lpm_ns, lpm_verdicts)| {
                assert_eq!(verdicts, lpm_verdicts, "the classifier and the LPM baseline must agree on every frame");
                *lpm_ns
            });
            if let Some((m, sources)) = &mut banned {
                let with_bans: &Ebpf = m.ebpf_mut().unwrap();
                let pair = [prog(ebpf, PROGRAM_NAME), prog(with_bans, PROGRAM_NAME)];
                let misses = measure(&pair, &fs);
                let from = if family == Family::V4 { &sources.0 } else { &sources.1 };
                let attack: Vec<Vec<u8>> = from.iter().take(fs.len()).map(|a| ip_frame(*a, &[])).collect();
                let hits = measure(&pair, &attack);
                let missed: Vec<&IpAddr> =
                    from.iter().zip(&hits[1].1).filter(|(_, v)| **v != 1).map(|(a, _)| a).collect();
                assert!(
                    missed.is_empty(),
                    "banned sources passed: {} of {}, like {:?}",
                    missed.len(),
                    attack.len(),
                    &missed[..missed.len().min(5)]
                );
                ban_rows.push(BanRow {
                    family: if family == Family::V4 { "IPv4" } else { "IPv6" },
                    no_bans: misses[0].0,
                    misses: misses[1].0,
                    no_bans_attack: hits[0].0,
                    hits: hits[1].0,
                });
            }
            rows.push(Row {
                mode,
                family: if family == Family::V4 { "IPv4" } else { "IPv6" },
                ranges: table.entries(family).len(),
                table_mib: report.table_bytes as f64 / f64::from(1 << 20),
                floor,
                no_lookup,
                lpm: lpm_ns.unwrap_or(f64::NAN),
                blocker,
                scoped: scoped_ns.unwrap_or(f64::NAN),
                egress: egress_ns.unwrap_or(f64::NAN),
                hits: verdicts.iter().filter(|v| **v == 1).count(),
            });
        }
        drop(bench);
        drop(banned);
        drop(scoped);
        drop(outbound);
        drop(maps);
        let _ = std::fs::remove_dir_all(&root);
    }
    let mut out = String::new();
    let (frames_n, repeat) = (knob("BLOCKER_BENCH_FRAMES", FRAMES_PER_FAMILY), knob("BLOCKER_BENCH_REPEAT", REPEAT));
    let _ =
        writeln!(out, "per packet through BPF_PROG_TEST_RUN, {frames_n} distinct frames per family, repeat {repeat}");
    let _ = writeln!(
        out,
        "{:<16} {:<5} {:>9} {:>8} {:>9} {:>10} {:>9} {:>9} {:>11} {:>9} {:>16} {:>15} {:>10} {:>10} {:>7}",
        "table",
        "fam",
        "ranges",
        "MiB",
        "floor ns",
        "no-lookup",
        "lpm ns",
        "blocker ns",
        "blk/floor",
        "lpm/blk",
        "above floor l/t",
        "lpm/no-lookup",
        "scoped/blk",
        "egress/blk",
        "drops"
    );
    let mut json = Vec::new();
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<16} {:<5} {:>9} {:>8.1} {:>9.1} {:>10.1} {:>9.1} {:>9.1} {:>10.2}x {:>8.2}x {:>15.2}x {:>14.2}x {:>9.3}x {:>9.3}x {:>7}",
            r.mode,
            r.family,
            r.ranges,
            r.table_mib,
            r.floor,
            r.no_lookup,
            r.lpm,
            r.blocker,
            r.blocker / r.floor,
            r.lpm / r.blocker,
            (r.lpm - r.floor) / (r.blocker - r.floor),
            r.lpm / r.no_lookup,
            r.scoped / r.blocker,
            r.egress / r.blocker,
            r.hits
        );
        json.push(serde_json::json!({
            "table": r.mode, "family": r.family, "ranges": r.ranges, "table_mib": r.table_mib, "floor_ns": r.floor, "no_lookup_ns": r.no_lookup, "lpm_ns": r.lpm, "blocker_ns": r.blocker,
            "lpm_over_no_lookup": r.lpm / r.no_lookup,
            "scoped_ns": r.scoped, "scoped_over_blocker": r.scoped / r.blocker,
            "egress_ns": r.egress, "egress_over_blocker": r.egress / r.blocker,
            "blocker_over_floor": r.blocker / r.floor, "lpm_over_blocker": r.lpm / r.blocker,
            "lpm_over_blocker_above_floor": (r.lpm - r.floor) / (r.blocker - r.floor), "frames": frames_n, "repeat": repeat, "drops": r.hits,
        }));
    }
    let mut ban_json = Vec::new();
    if !ban_rows.is_empty() {
        let n = knob("BLOCKER_BENCH_BANS", BANS);
        let _ = writeln!(out, "\nbans: world deny-all with {n} bans beside the table, against no bans (same run)");
        let _ = writeln!(
            out,
            "{:<5} {:>12} {:>12} {:>10} {:>16} {:>12} {:>10}",
            "fam", "no bans ns", "bans ns", "bans/blk", "no bans, attack", "bans, attack", "bans/blk"
        );
        for r in &ban_rows {
            let _ = writeln!(
                out,
                "{:<5} {:>12.1} {:>12.1} {:>9.2}x {:>16.1} {:>12.1} {:>9.2}x",
                r.family,
                r.no_bans,
                r.misses,
                r.misses / r.no_bans,
                r.no_bans_attack,
                r.hits,
                r.hits / r.no_bans_attack
            );
            ban_json.push(serde_json::json!({
                "family": r.family, "bans": n, "no_bans_ns": r.no_bans, "bans_ns": r.misses,
                "bans_over_no_bans": r.misses / r.no_bans, "no_bans_attack_ns": r.no_bans_attack,
                "bans_attack_ns": r.hits, "attack_bans_over_no_bans": r.hits / r.no_bans_attack,
            }));
        }
    }
    drop(parking);
    let _ = writeln!(out, "({:.1} s)", started.elapsed().as_secs_f64());
    print!("{out}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dataplane.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "per_packet": json, "bans": ban_json })).unwrap(),
    )
    .unwrap();
    println!("wrote {}", dir.join("dataplane.json").display());
}

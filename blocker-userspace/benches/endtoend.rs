//! End to end on a veth pair: packets per second through the receiving end, for
//! blocker and for the baselines, all fed the same traffic in the same run.
//! Needs root; `cargo xtask bench endtoend` runs it.
//!
//! Two network namespaces made for the run (and deleted after it) are joined by a
//! veth pair. The sender runs the `trafficgen` (IPv4) or `trafficgen6` XDP program
//! through BPF_PROG_TEST_RUN in live-frames mode: every frame is an Ethernet+IP+UDP
//! frame to the receiver whose source address is drawn from a pool of 65,536
//! addresses, inside the table's prefixes (hits) or uniformly random, in two mixes
//! (all hits; half and half); the program sends the frame out of the sender's veth
//! (XDP_TX). On this machine the receiver's NAPI processing runs in the sender's
//! context, so frames divided by the elapsed time of the run is the receiver's
//! rate. The receiver's `ethtool -S` XDP counters confirm that the frames arrived.
//!
//! Receivers, per family: a bare XDP_DROP (the floor) and blocker with the world
//! table (every country denied), in alternating rounds; blocker with a cache-hot
//! working set; blocker with the kernel LPM trie as classifier; XDP_PASS then
//! nftables on the netdev ingress hook with an interval set of the same prefixes;
//! XDP_PASS then ip(6)tables raw PREROUTING with an ipset hash:net of the same
//! prefixes; XDP_PASS alone. Then the control plane: the real daemon started and
//! reloaded with the world, against `nft -f` and `ipset restore` (time, peak RSS).
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

mod common;

use std::{
    collections::HashMap,
    fmt::Write as _,
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use aya::{
    maps::{lpm_trie::Key, Array, LpmTrie, MapData},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use blocker::{
    compile::table::{build_table, compile, CompiledTable},
    dataplane::{
        device, link,
        maps::{DataplaneMaps, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    net::{Family, Prefix},
    policy::{ListSpec, Policy, Role},
};
use blocker_common::{
    bench::{
        GEN_POOL6_MAP, GEN_POOL_MAP, LPM_V4, LPM_V6, PROGRAM_DROP_FLOOR, PROGRAM_LPM_BASELINE, PROGRAM_PASS_FLOOR,
        PROGRAM_TRAFFICGEN, PROGRAM_TRAFFICGEN6,
    },
    classifier::{self, Shape},
    wire::{ETH_P_IPV4, ETH_P_IPV6},
    PROGRAM_NAME,
};
use blocker_tests::{sh, tables, Rng};

const FRAMES: u32 = 3_000_000;
const POOL: usize = blocker_common::bench::GEN_POOL_SIZE as usize;

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Net {
    rx: String,
    tx: String,
}

impl Net {
    fn new() -> Net {
        let id = std::process::id();
        let net = Net { rx: format!("blk-e2e-rx-{id}"), tx: format!("blk-e2e-tx-{id}") };
        sh("ip", &["netns", "add", &net.rx]).unwrap();
        sh("ip", &["netns", "add", &net.tx]).unwrap();
        sh(
            "ip",
            &["link", "add", "e2erx", "netns", &net.rx, "type", "veth", "peer", "name", "e2etx", "netns", &net.tx],
        )
        .unwrap();
        for (ns, dev) in [(&net.rx, "e2erx"), (&net.tx, "e2etx")] {
            sh("ip", &["-n", ns, "link", "set", dev, "mtu", "1500", "up"]).unwrap();
        }
        sh("ip", &["-n", &net.rx, "addr", "add", "192.0.2.1/24", "dev", "e2erx"]).unwrap();
        sh("ip", &["-n", &net.tx, "addr", "add", "192.0.2.2/24", "dev", "e2etx"]).unwrap();
        sh("ip", &["-n", &net.rx, "addr", "add", "2001:db8:1::1/64", "dev", "e2erx", "nodad"]).unwrap();
        sh("ip", &["-n", &net.tx, "addr", "add", "2001:db8:1::2/64", "dev", "e2etx", "nodad"]).unwrap();
        net
    }

    fn enter(ns: &str) {
        let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        // SAFETY: setns of this (single) thread into a namespace of this run.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns {ns}");
    }

    fn in_rx(&self, program: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.rx, program];
        full.extend(args);
        sh("ip", &full).unwrap()
    }

    fn rx_xdp_packets(&self) -> u64 {
        let out = self.in_rx("ethtool", &["-S", "e2erx"]);
        out.lines()
            .filter(|l| l.trim_start().starts_with("rx_queue_0_xdp_packets"))
            .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "del", &self.rx]);
        let _ = sh("ip", &["netns", "del", &self.tx]);
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// Sources for the generator: `hit_percent` of them inside table prefixes (drawn
/// from the first `spread` prefixes), the rest random (IPv6: in 2000::/3, where
/// the allocations are).
fn pool(table: &CompiledTable, family: Family, hit_percent: u64, spread: usize) -> Vec<u128> {
    let entries = table.entries(family);
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    (0..POOL)
        .map(|i| {
            let random = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            if (i as u64 * 100 / POOL as u64) < hit_percent {
                let r = entries[(rng.next_u64() % spread.min(entries.len()) as u64) as usize];
                let span = r.hi - r.lo;
                r.lo + if span == u128::MAX { random } else { random % (span + 1) }
            } else {
                match family {
                    Family::V4 => random & 0xffff_ffff,
                    Family::V6 => (random >> 3) | (1u128 << 125),
                }
            }
        })
        .collect()
}

fn fill_pool(gen: &mut Ebpf, family: Family, pool: &[u128]) {
    match family {
        Family::V4 => {
            let mut map: Array<&mut MapData, u32> = gen.map_mut(GEN_POOL_MAP).unwrap().try_into().unwrap();
            for (i, a) in pool.iter().enumerate() {
                // The program copies the value's bytes as they are: network order.
                map.set(i as u32, u32::from_ne_bytes((*a as u32).to_be_bytes()), 0).unwrap();
            }
        }
        Family::V6 => {
            let mut map: Array<&mut MapData, [u8; 16]> = gen.map_mut(GEN_POOL6_MAP).unwrap().try_into().unwrap();
            for (i, a) in pool.iter().enumerate() {
                map.set(i as u32, a.to_be_bytes(), 0).unwrap();
            }
        }
    }
}

/// Runs a command to completion under GNU time: (wall time, peak RSS in KiB).
/// Not wait4(2)'s figure: a child spawned from this process starts with its
/// memory, and Linux carries that high-water mark across exec.
fn run_measured(cmd: &mut Command, stdin: Option<&std::path::Path>) -> (Duration, u64) {
    let report = std::env::temp_dir().join(format!("blocker-e2e-{}.time", std::process::id()));
    let mut timed = Command::new("/usr/bin/time");
    timed.args(["-f", "%M", "-o"]).arg(&report).arg(cmd.get_program()).args(cmd.get_args());
    if let Some(path) = stdin {
        timed.stdin(std::fs::File::open(path).unwrap());
    }
    let started = Instant::now();
    let status = timed.status().unwrap();
    let elapsed = started.elapsed();
    assert!(status.success(), "{cmd:?} failed");
    let kib = std::fs::read_to_string(&report).unwrap().trim().parse().unwrap();
    let _ = std::fs::remove_file(&report);
    (elapsed, kib)
}

/// A process's peak resident set (KiB) from /proc: `VmHWM`, which a new program
/// image starts afresh.
fn peak_rss_kib(pid: u32) -> u64 {
    blocker_tests::proc_status_kib(pid, "VmHWM:")
}

fn frame(family: Family, rx_mac: [u8; 6], tx_mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&rx_mac);
    f.extend_from_slice(&tx_mac);
    let payload = [0u8; 18];
    match family {
        Family::V4 => {
            f.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
            f.extend(blocker_tests::frames::ipv4_packet(
                "198.51.100.1".parse().unwrap(),
                "192.0.2.1".parse().unwrap(),
                0,
                &payload,
            ));
        }
        Family::V6 => {
            f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            f.extend(blocker_tests::frames::ipv6_packet(
                "2001:db8:a::1".parse().unwrap(),
                "2001:db8:1::1".parse().unwrap(),
                &payload,
            ));
        }
    }
    f
}

fn mac(ns: &str, dev: &str) -> [u8; 6] {
    let out = sh("ip", &["-n", ns, "-o", "link", "show", dev]).unwrap();
    let text = out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap();
    let v: Vec<u8> = text.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    v.try_into().unwrap()
}

/// Sends `frames` frames from the sender; returns the elapsed time.
fn send(gen: &Ebpf, program: &str, tx_ifindex: u32, frame: &[u8], frames: u32) -> Duration {
    let prog: &Xdp = gen.program(program).unwrap().try_into().unwrap();
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex }: the kernel wants data_end == the frame's length.
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&tx_ifindex.to_ne_bytes());
    let started = Instant::now();
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat: frames,
        attrs: TestRunAttrs::new().xdp_live_frames(64),
        ..Default::default()
    })
    .expect("live-frames BPF_PROG_TEST_RUN");
    started.elapsed()
}

fn attach(ebpf: &mut Ebpf, name: &str) -> aya::programs::xdp::XdpLinkId {
    let prog: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
    if prog.fd().is_err() {
        prog.load().unwrap();
    }
    prog.attach("e2erx", XdpMode::Driver).expect("native XDP on the receiving veth")
}

fn detach(ebpf: &mut Ebpf, name: &str, link: aya::programs::xdp::XdpLinkId) {
    let prog: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
    prog.detach(link).unwrap();
}

/// The traffic mixes every receiver is measured with.
const MIXES: [(&str, u64); 2] =
    [("all sources in the table (all dropped)", 100), ("half in the table, half random", 50)];

struct Receiver {
    name: String,
    /// Mpps per mix (MIXES order).
    mpps: Vec<f64>,
    arrived: Vec<u64>,
    rounds: usize,
}

/// Per mix, the median of several rounds' rates.
fn median_of(rounds: Vec<Receiver>) -> Receiver {
    let mixes = rounds[0].mpps.len();
    let mut out = Receiver { name: rounds[0].name.clone(), mpps: vec![], arrived: vec![], rounds: rounds.len() };
    for m in 0..mixes {
        let mut by_rate: Vec<(f64, u64)> = rounds.iter().map(|r| (r.mpps[m], r.arrived[m])).collect();
        by_rate.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mpps, arrived) = by_rate[by_rate.len() / 2];
        out.mpps.push(mpps);
        out.arrived.push(arrived);
    }
    out
}

/// The traffic source of one family, loaded in the sender's namespace.
struct Sender<'a> {
    net: &'a Net,
    gen: Ebpf,
    family: Family,
    program: &'static str,
    tx_ifindex: u32,
    frame: Vec<u8>,
    frames: u32,
}

impl Sender<'_> {
    /// One receiver, every pool: a warm-up run, then the measured one.
    fn measure(&mut self, name: &str, pools: &[Vec<u128>]) -> Receiver {
        let mut r = Receiver { name: name.to_owned(), mpps: vec![], arrived: vec![], rounds: 1 };
        for pool in pools {
            Net::enter(&self.net.tx);
            fill_pool(&mut self.gen, self.family, pool);
            send(&self.gen, self.program, self.tx_ifindex, &self.frame, self.frames / 10);
            let before = self.net.rx_xdp_packets();
            let elapsed = send(&self.gen, self.program, self.tx_ifindex, &self.frame, self.frames);
            let arrived = self.net.rx_xdp_packets() - before;
            // Rate through the receiver: frames that reached its XDP hook per second.
            let mpps = arrived.min(u64::from(self.frames)) as f64 / elapsed.as_secs_f64() / 1e6;
            eprintln!("{} {name}: {mpps:.2} Mpps ({arrived} frames arrived)", family_name(self.family));
            r.mpps.push(mpps);
            r.arrived.push(arrived);
        }
        Net::enter(&self.net.rx);
        r
    }
}

/// Everything measured for one family.
struct FamilyRun {
    family: Family,
    prefixes: usize,
    rows: Vec<Receiver>,
    dropped: u64,
    passed: u64,
    load_lpm: Duration,
    load_nft: (Duration, u64),
    load_ipset: (Duration, u64),
    map_memory: Vec<(String, u64)>,
}

fn run_family(family: Family, table: &CompiledTable, net: &Net, pins: &std::path::Path, frames: u32) -> FamilyRun {
    let tag = family_name(family).to_ascii_lowercase();
    let pools: Vec<Vec<u128>> =
        MIXES.iter().map(|(_, hits)| pool(table, family, *hits, table.entries(family).len())).collect();
    let sender = sender(family, net, pins, &tag, frames);
    let mut bench = FamilyBench { family, table, sender, pins, tag, pools };
    let BlockerRows { mut rows, dropped, passed, map_memory } = bench.blocker();
    let prefixes = table.entries(family).len();
    if std::env::var_os("BLOCKER_BENCH_QUICK").is_some() {
        // Profiling knob: floor and blocker only.
        let none = (Duration::ZERO, 0);
        let (load_lpm, load_nft, load_ipset) = (Duration::ZERO, none, none);
        return FamilyRun { family, prefixes, rows, dropped, passed, load_lpm, load_nft, load_ipset, map_memory };
    }
    let (lpm_row, load_lpm) = bench.lpm();
    rows.push(lpm_row);
    let (stack_rows, load_nft, load_ipset) = bench.stack_filters();
    rows.extend(stack_rows);
    FamilyRun { family, prefixes, rows, dropped, passed, load_lpm, load_nft, load_ipset, map_memory }
}

/// The traffic generator of `family` in the sending namespace.
fn sender<'a>(family: Family, net: &'a Net, pins: &std::path::Path, tag: &str, frames: u32) -> Sender<'a> {
    Net::enter(&net.tx);
    let tx_ifindex = device::ifindex("e2etx").unwrap();
    let program = if family == Family::V4 { PROGRAM_TRAFFICGEN } else { PROGRAM_TRAFFICGEN6 };
    let mut gen = common::load_bench_object(&pins::iface_dir(pins, &format!("gen-{tag}")));
    {
        let prog: &mut Xdp = gen.program_mut(program).unwrap().try_into().unwrap();
        prog.load().unwrap();
    }
    let frame = frame(family, mac(&net.rx, "e2erx"), mac(&net.tx, "e2etx"));
    Sender { net, gen, family, program, tx_ifindex, frame, frames }
}

/// blocker's rows, with what its counters saw and its maps' memory.
struct BlockerRows {
    rows: Vec<Receiver>,
    dropped: u64,
    passed: u64,
    map_memory: Vec<(String, u64)>,
}

/// What every measurement of one address family runs with: the world table, the
/// sender, the address pools of the hit mixes, and where the programs pin their maps
/// (`tag` keeps the families' pins apart).
struct FamilyBench<'a> {
    family: Family,
    table: &'a CompiledTable,
    sender: Sender<'a>,
    pins: &'a std::path::Path,
    tag: String,
    pools: Vec<Vec<u128>>,
}

impl FamilyBench<'_> {
    /// The floor and blocker in alternating rounds (and the other IPv4 layout),
    /// then blocker's profile rows: a cache-hot working set, the table cut to /16.
    fn blocker(&mut self) -> BlockerRows {
        let (family, table, pins, tag, pools) = (self.family, self.table, self.pins, self.tag.as_str(), &self.pools);
        let sender = &mut self.sender;
        let mut rows = Vec::new();
        // The floor (a bare XDP_DROP) and blocker with the world table, in alternating
        // rounds: this VM's rates drift by 15 % and more between runs, so the ratio of
        // medians taken side by side is what holds. Then blocker with every source from
        // 64 prefixes, a working set that stays in cache: the difference is the cost of
        // the table's memory.
        Net::enter(&sender.net.rx);
        let mut floor_obj = common::load_bench_object(&pins::iface_dir(pins, &format!("rx-floor-{tag}")));
        let floor = &mut floor_obj;
        let dir = pins::iface_dir(pins, &format!("rx-blocker-{tag}"));
        let mut maps = DataplaneMaps::load(&dir, 0).unwrap();
        let report = maps.apply(table, DEFAULT_TABLE_MEMORY).unwrap();
        // Profile (IPv4): the same table in the other IPv4 layout, in the same rounds.
        let alt_shape = other_v4_layout(report.shape);
        let mut alt = (family == Family::V4).then(|| {
            let mut alt = DataplaneMaps::load(&pins::iface_dir(pins, &format!("rx-alt-{tag}")), 0).unwrap();
            alt.apply_with_shape(table, DEFAULT_TABLE_MEMORY, Some(alt_shape)).unwrap();
            alt
        });
        let rounds = knob("BLOCKER_BENCH_ROUNDS", 3usize).max(1);
        let (mut floor_rounds, mut blocker_rounds, mut alt_rounds) = (Vec::new(), Vec::new(), Vec::new());
        let before = maps.counters().unwrap();
        let name = if family == Family::V4 {
            format!("blocker, world table ({})", layout_text(report.shape))
        } else {
            "blocker, world table".to_string()
        };
        for _ in 0..rounds {
            let link = attach(floor, PROGRAM_DROP_FLOOR);
            floor_rounds.push(sender.measure("XDP_DROP only (floor)", pools));
            detach(floor, PROGRAM_DROP_FLOOR, link);
            let rx = maps.ebpf_mut().unwrap();
            let link = attach(rx, PROGRAM_NAME);
            blocker_rounds.push(sender.measure(&name, pools));
            detach(rx, PROGRAM_NAME, link);
            if let Some(alt) = &mut alt {
                let rx = alt.ebpf_mut().unwrap();
                let link = attach(rx, PROGRAM_NAME);
                alt_rounds.push(sender.measure(&format!("blocker, the same in {}", layout_text(alt_shape)), pools));
                detach(rx, PROGRAM_NAME, link);
            }
        }
        drop(alt);
        let after = maps.counters().unwrap();
        rows.push(median_of(floor_rounds));
        rows.push(median_of(blocker_rounds));
        if !alt_rounds.is_empty() {
            rows.push(median_of(alt_rounds));
        }
        let link = attach(maps.ebpf_mut().unwrap(), PROGRAM_NAME);
        // Profiling knob: how many prefixes the working-set row draws from.
        let hot = knob("BLOCKER_BENCH_HOT_PREFIXES", 64usize);
        let name = format!("blocker, sources from {hot} prefixes only (cache-hot)");
        rows.push(sender.measure(&name, &[pool(table, family, 100, hot)]));
        // Profile: the same sources against the table cut to /16 (every prefix widened to
        // its /16), so that every lookup is one read of the root: what each further
        // dependent read costs shows as the difference to the world-table row.
        detach(maps.ebpf_mut().unwrap(), PROGRAM_NAME, link);
        maps.apply(&widened_to_16(table), DEFAULT_TABLE_MEMORY).unwrap();
        attach(maps.ebpf_mut().unwrap(), PROGRAM_NAME);
        rows.push(sender.measure("blocker, table cut to /16 (one read per lookup)", &pools[..1]));
        let mut map_memory = blocker::dataplane::maps::pinned_map_memory(&dir).unwrap();
        map_memory.push(("classifier maps of the table".into(), report.table_bytes));
        drop(maps);
        drop(floor_obj);
        let (dropped, passed) = (after.global[1] - before.global[1], after.global[0] - before.global[0]);
        BlockerRows { rows, dropped, passed, map_memory }
    }

    /// The same filter with the kernel LPM trie as classifier, and how long filling
    /// the trie took.
    fn lpm(&mut self) -> (Receiver, Duration) {
        let (family, table, pins, tag, pools) = (self.family, self.table, self.pins, self.tag.as_str(), &self.pools);
        let sender = &mut self.sender;
        // blocker with the kernel LPM trie.
        let dir = pins::iface_dir(pins, &format!("rx-lpm-{tag}"));
        let mut maps = DataplaneMaps::load(&dir, 0).unwrap();
        maps.apply(table, DEFAULT_TABLE_MEMORY).unwrap();
        let ids: HashMap<String, u32> = maps.counters().unwrap().lists.into_iter().map(|l| (l.name, l.id)).collect();
        // The baseline, from the benchmark's object, on the same pinned maps.
        let mut lpm_obj = common::load_bench_object(&dir);
        let rx = &mut lpm_obj;
        let leaf = |list: usize| {
            let l = &table.lists[list];
            u32::from(blocker_common::classifier::leaf(l.action.code(), ids[&l.name]))
        };
        let started = Instant::now();
        match family {
            Family::V4 => {
                let mut lpm: LpmTrie<&mut MapData, [u8; 4], u32> = rx.map_mut(LPM_V4).unwrap().try_into().unwrap();
                for r in &table.v4 {
                    for p in r.prefixes(family) {
                        lpm.insert(&Key::new(u32::from(p.len), (p.addr as u32).to_be_bytes()), leaf(r.list), 0)
                            .unwrap();
                    }
                }
            }
            Family::V6 => {
                let mut lpm: LpmTrie<&mut MapData, [u8; 16], u32> = rx.map_mut(LPM_V6).unwrap().try_into().unwrap();
                for r in &table.v6 {
                    for p in r.prefixes(family) {
                        lpm.insert(&Key::new(u32::from(p.len), p.addr.to_be_bytes()), leaf(r.list), 0).unwrap();
                    }
                }
            }
        }
        let load_lpm = started.elapsed();
        attach(rx, PROGRAM_LPM_BASELINE);
        let row = sender.measure("kernel LPM trie, world table", pools);
        drop(lpm_obj);
        drop(maps);
        (row, load_lpm)
    }

    /// XDP_PASS with the stack's filters behind it: nftables with an interval set,
    /// ip(6)tables with ipset; then no filter at all. With the time each took to load.
    fn stack_filters(&mut self) -> (Vec<Receiver>, (Duration, u64), (Duration, u64)) {
        let (family, table, pins, tag, pools) = (self.family, self.table, self.pins, self.tag.as_str(), &self.pools);
        let sender = &mut self.sender;
        let net = sender.net;
        let mut rows = Vec::new();
        // XDP_PASS, then nftables netdev ingress with an interval set.
        let (addr_type, match_kw) = if family == Family::V4 { ("ipv4_addr", "ip") } else { ("ipv6_addr", "ip6") };
        let prefixes: Vec<String> =
            table.entries(family).iter().flat_map(|r| r.prefixes(family)).map(|p| p.to_string()).collect();
        let nft = format!(
        "table netdev blk {{\n  set deny {{\n    type {addr_type}; flags interval; auto-merge;\n    elements = {{ {} }}\n  }}\n  \
         chain ingress {{\n    type filter hook ingress device \"e2erx\" priority -500; policy accept;\n    {match_kw} saddr @deny drop\n  }}\n}}\n",
        prefixes.join(", ")
    );
        let nft_file = std::env::temp_dir().join(format!("blocker-e2e-{}-{tag}.nft", std::process::id()));
        std::fs::write(&nft_file, nft).unwrap();
        let load_nft = run_measured(
            Command::new("ip").args(["netns", "exec", &net.rx, "nft", "-f", nft_file.to_str().unwrap()]),
            None,
        );
        let mut pass_obj = common::load_bench_object(&pins::iface_dir(pins, &format!("rx-pass-{tag}")));
        let rx = &mut pass_obj;
        attach(rx, PROGRAM_PASS_FLOOR);
        rows.push(sender.measure("XDP_PASS + nftables netdev ingress, interval set", pools));
        net.in_rx("nft", &["delete", "table", "netdev", "blk"]);

        // XDP_PASS, then ip(6)tables raw PREROUTING with ipset hash:net.
        let (set_family, iptables) = if family == Family::V4 { ("inet", "iptables") } else { ("inet6", "ip6tables") };
        let mut restore = format!("create blkdeny hash:net family {set_family} maxelem 1048576\n");
        for p in &prefixes {
            let _ = writeln!(restore, "add blkdeny {p}");
        }
        let restore_file = std::env::temp_dir().join(format!("blocker-e2e-{}-{tag}.ipset", std::process::id()));
        std::fs::write(&restore_file, restore).unwrap();
        let mut restore_cmd = Command::new("ip");
        restore_cmd.args(["netns", "exec", &net.rx, "ipset", "-exist", "restore"]);
        let load_ipset = run_measured(&mut restore_cmd, Some(&restore_file));
        net.in_rx(
            iptables,
            &["-t", "raw", "-A", "PREROUTING", "-m", "set", "--match-set", "blkdeny", "src", "-j", "DROP"],
        );
        rows.push(sender.measure(&format!("XDP_PASS + {iptables} raw PREROUTING, ipset hash:net"), pools));
        net.in_rx(iptables, &["-t", "raw", "-F", "PREROUTING"]);
        net.in_rx("ipset", &["destroy", "blkdeny"]);

        // XDP_PASS, no filter: the stack handles every packet.
        rows.push(sender.measure("XDP_PASS, no filter", pools));
        drop(pass_obj);
        let _ = std::fs::remove_file(&nft_file);
        let _ = std::fs::remove_file(&restore_file);
        (rows, load_nft, load_ipset)
    }
}

/// `table` with every prefix longer than /16 widened to its /16 (overlaps resolved
/// by the compiler), every list denied: a table whose lookups all end at the root.
fn widened_to_16(table: &CompiledTable) -> CompiledTable {
    let specs: Vec<ListSpec> = table
        .lists
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let prefixes = [Family::V4, Family::V6]
                .into_iter()
                .flat_map(|f| table.entries(f).iter().filter(|r| r.list == i).flat_map(move |r| r.prefixes(f)))
                .map(|p| {
                    let host = u32::from(p.family.bits()) - 16;
                    if p.len <= 16 {
                        p
                    } else {
                        Prefix { family: p.family, addr: (p.addr >> host) << host, len: 16 }
                    }
                })
                .collect();
            ListSpec { name: l.name.clone(), role: Role::Deny, prefixes }
        })
        .collect();
    compile(&specs)
}

/// The real daemon on the receiving veth with every country denied: time to
/// "ready" (read, compile, load, attach), time of one SIGHUP reload, peak RSS.
fn daemon_start_and_reload(net: &Net, pins: &std::path::Path, policy: &[&str]) -> (Duration, Duration, u64) {
    let daemon_pins = pins.join("daemon");
    let log_path = std::env::temp_dir().join(format!("blocker-e2e-{}.log", std::process::id()));
    let socket = std::env::temp_dir().join(format!("blocker-e2e-{}.sock", std::process::id()));
    let started = Instant::now();
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.rx))
        .arg(env!("CARGO_BIN_EXE_blocker"))
        .args(["--pin-root", daemon_pins.to_str().unwrap(), "--socket", socket.to_str().unwrap()])
        .args(["run", "--iface", "e2erx", "--xdp-mode", "native", "--no-watch", "--no-default-never-block"])
        .args(policy)
        .stderr(std::fs::File::create(&log_path).unwrap())
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&log_path).unwrap_or_default().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "daemon: no {needle:?}: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    wait_for("ready:");
    let start = started.elapsed();
    let started = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    wait_for("reloaded");
    let reload = started.elapsed();
    let rss = peak_rss_kib(child.id());
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut child = child;
    child.wait().unwrap();
    Net::enter(&net.rx);
    link::detach(&daemon_pins, "e2erx").unwrap();
    let _ = std::fs::remove_file(&log_path);
    (start, reload, rss)
}

/// The comparison shape of the profile rows: the smallest direct tables (2^16
/// entries), against the direct tables sized to the table.
fn other_v4_layout(shape: Shape) -> Shape {
    Shape { v4_bits: classifier::MIN_DIR_BITS, ..shape }
}

fn layout_text(shape: Shape) -> String {
    format!("2^{} direct table", shape.v4_bits)
}

/// The table of receivers' rates: per mix, Mpps, share of the floor (row 0) and
/// how many times blocker (row 1) is faster.
fn write_rates(out: &mut String, mixes: [&str; 2], rows: &[Receiver]) {
    let _ = writeln!(out, "{:<62} {:>22} {:>22}", "", mixes[0], mixes[1]);
    let _ = writeln!(
        out,
        "{:<62} {:>7} {:>6} {:>7}  {:>7} {:>6} {:>7}",
        "receiver", "Mpps", "floor", "blk is", "Mpps", "floor", "blk is"
    );
    for r in rows {
        let _ = write!(out, "{:<62}", r.name);
        for (i, mpps) in r.mpps.iter().enumerate() {
            let _ =
                write!(out, " {mpps:>7.2} {:>5.0}% {:>6.1}x ", mpps / rows[0].mpps[i] * 100.0, rows[1].mpps[i] / mpps);
        }
        let _ = writeln!(out);
    }
}

/// `BLOCKER_BENCH_PARTS=world,attack,million,crowdsec` runs only those parts (default: all).
fn wanted_part(part: &str) -> bool {
    match std::env::var("BLOCKER_BENCH_PARTS") {
        Ok(parts) if !parts.is_empty() => parts.split(',').any(|p| p.trim() == part),
        _ => true,
    }
}

/// A deny list of random IPv4 hosts, as a compiled table and as text.
fn threat_list(n: usize, seed: u64) -> (CompiledTable, Vec<u32>) {
    let hosts = tables::random_v4_hosts(&mut Rng(seed), n);
    let prefixes = hosts.iter().map(|a| Prefix { family: Family::V4, addr: u128::from(*a), len: 32 }).collect();
    (compile(&[ListSpec { name: "threats".into(), role: Role::Deny, prefixes }]), hosts)
}

const ATTACK_LIST: usize = 2_000_000;
const ATTACK_MIXES: [&str; 2] = ["every source from the list (attack)", "random sources (almost all pass)"];

/// An attack from listed addresses: a deny list of 2,000,000 random IPv4 hosts,
/// every source drawn from it; and random sources against the same list.
struct AttackRun {
    rows: Vec<Receiver>,
    load_nft: (Duration, u64),
    /// What the event sampler did over the events-on rounds.
    events: blocker::dataplane::maps::EventCounters,
    /// The attack from banned addresses (`run_ban_attack`).
    ban_rows: Vec<Receiver>,
}

fn run_attack(net: &Net, pins: &std::path::Path, frames: u32) -> AttackRun {
    let (table, hosts) = threat_list(ATTACK_LIST, 0x2545_f491_4f6c_dd1d);
    let attack: Vec<u128> = {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        (0..POOL).map(|_| u128::from(hosts[rng.below(hosts.len() as u128) as usize])).collect()
    };
    let random = pool(&table, Family::V4, 0, 1);
    let pools = [attack, random];
    Net::enter(&net.tx);
    let tx_ifindex = device::ifindex("e2etx").unwrap();
    let mut gen = common::load_bench_object(&pins::iface_dir(pins, "gen-attack"));
    {
        let prog: &mut Xdp = gen.program_mut(PROGRAM_TRAFFICGEN).unwrap().try_into().unwrap();
        prog.load().unwrap();
    }
    let frame = frame(Family::V4, mac(&net.rx, "e2erx"), mac(&net.tx, "e2etx"));
    let mut sender = Sender { net, gen, family: Family::V4, program: PROGRAM_TRAFFICGEN, tx_ifindex, frame, frames };

    Net::enter(&net.rx);
    let mut floor_obj = common::load_bench_object(&pins::iface_dir(pins, "rx-floor-attack"));
    let mut maps = DataplaneMaps::load(&pins::iface_dir(pins, "rx-blocker-attack"), 0).unwrap();
    let shape = maps.apply(&table, DEFAULT_TABLE_MEMORY).unwrap().shape;
    // Profile: the same table in the other IPv4 layout, in the same rounds.
    let mut alt = DataplaneMaps::load(&pins::iface_dir(pins, "rx-alt-attack"), 0).unwrap();
    let alt_shape = other_v4_layout(shape);
    alt.apply_with_shape(&table, DEFAULT_TABLE_MEMORY, Some(alt_shape)).unwrap();
    let (mut floor_rounds, mut blocker_rounds, mut alt_rounds) = (Vec::new(), Vec::new(), Vec::new());
    let mut events_rounds = Vec::new();
    let name = format!("blocker, 2M-address list ({}), events off", layout_text(shape));
    let alt_name = format!("blocker, the same in {}", layout_text(alt_shape));
    let events_on = blocker::events::DEFAULT_EVENTS_PER_SECOND;
    let events_name = format!("blocker, the same, events on ({events_on}/s per CPU, the default)");
    for _ in 0..knob("BLOCKER_BENCH_ROUNDS", 3usize).max(1) {
        let floor = &mut floor_obj;
        let link = attach(floor, PROGRAM_DROP_FLOOR);
        floor_rounds.push(sender.measure("XDP_DROP only (floor)", &pools));
        detach(floor, PROGRAM_DROP_FLOOR, link);
        for (m, rounds, name) in [(&mut maps, &mut blocker_rounds, &name), (&mut alt, &mut alt_rounds, &alt_name)] {
            let rx = m.ebpf_mut().unwrap();
            let link = attach(rx, PROGRAM_NAME);
            rounds.push(sender.measure(name, &pools));
            detach(rx, PROGRAM_NAME, link);
        }
        // Every frame of the first mix is dropped: each one passes the token
        // bucket, and at most the rate of them is written to the ring.
        maps.set_events_per_second(events_on).unwrap();
        let rx = maps.ebpf_mut().unwrap();
        let link = attach(rx, PROGRAM_NAME);
        events_rounds.push(sender.measure(&events_name, &pools));
        detach(rx, PROGRAM_NAME, link);
        maps.set_events_per_second(0).unwrap();
    }
    drop(alt);
    let events = maps.counters().unwrap().events;
    let mut rows =
        vec![median_of(floor_rounds), median_of(blocker_rounds), median_of(alt_rounds), median_of(events_rounds)];
    // Profile: the same table, every source from 4,096 listed addresses, whose
    // table blocks stay in cache and in the TLB: the difference to the row above
    // is what the table's memory costs (dependent reads of a 20+ MiB table).
    let hot: Vec<u128> = (0..POOL).map(|i| u128::from(hosts[i % 4096])).collect();
    let rx = maps.ebpf_mut().unwrap();
    let link = attach(rx, PROGRAM_NAME);
    let mut hot_row = sender.measure("blocker, sources from 4,096 listed (cache-hot)", &[hot]);
    hot_row.mpps.push(f64::NAN);
    hot_row.arrived.push(0);
    rows.push(hot_row);
    detach(maps.ebpf_mut().unwrap(), PROGRAM_NAME, link);
    drop(maps);

    // XDP_PASS, then nftables netdev ingress with a set of the same addresses
    // (a hash set: the fastest nftables set for hosts).
    let mut nft = String::with_capacity(16 * hosts.len());
    nft.push_str("table netdev blk {\n  set deny {\n    type ipv4_addr;\n    elements = { ");
    for (i, a) in hosts.iter().enumerate() {
        let _ = write!(nft, "{}{}", if i == 0 { "" } else { ", " }, std::net::Ipv4Addr::from(*a));
    }
    nft.push_str(" }\n  }\n  chain ingress {\n    type filter hook ingress device \"e2erx\" priority -500; policy accept;\n    ip saddr @deny drop\n  }\n}\n");
    let nft_file = std::env::temp_dir().join(format!("blocker-e2e-{}-attack.nft", std::process::id()));
    std::fs::write(&nft_file, nft).unwrap();
    let load_nft = run_measured(
        Command::new("ip").args(["netns", "exec", &net.rx, "nft", "-f", nft_file.to_str().unwrap()]),
        None,
    );
    let _ = std::fs::remove_file(&nft_file);
    let rx = &mut floor_obj;
    let link = attach(rx, PROGRAM_PASS_FLOOR);
    rows.push(sender.measure("XDP_PASS + nftables netdev ingress, same set", &pools));
    net.in_rx("nft", &["delete", "table", "netdev", "blk"]);
    rows.push(sender.measure("XDP_PASS, no filter", &pools));
    detach(rx, PROGRAM_PASS_FLOOR, link);
    let ban_rows = run_ban_attack(&mut sender, &mut floor_obj, pins, &hosts[..BANS.min(hosts.len())], &table);
    AttackRun { rows, load_nft, events, ban_rows }
}

/// Bans beside the table: the attack from banned addresses.
const BANS: usize = 1_000_000;

/// An attack from `BANS` banned addresses (`decisions`): blocker with no list
/// and the addresses banned for 4 h, against the floor, and against an
/// nftables set with timeouts holding the same addresses (the CrowdSec
/// firewall bouncer's way), each on the attack's sources and on random ones.
fn run_ban_attack(
    sender: &mut Sender<'_>,
    floor_obj: &mut Ebpf,
    pin_root: &std::path::Path,
    banned: &[u32],
    table: &CompiledTable,
) -> Vec<Receiver> {
    use blocker::dataplane::bans::{length_words, BanKey};
    use blocker_common::bans::BanEntry;
    let net = sender.net;
    let attack: Vec<u128> = {
        let mut rng = Rng(0x51_7cc1_b727_220a);
        (0..POOL).map(|_| u128::from(banned[rng.below(banned.len() as u128) as usize])).collect()
    };
    let pools = [attack, pool(table, Family::V4, 0, 1)];
    Net::enter(&net.rx);
    let mut maps = DataplaneMaps::load(&pins::iface_dir(pin_root, "rx-bans-attack"), 0).unwrap();
    maps.apply(&compile(&[]), DEFAULT_TABLE_MEMORY).unwrap();
    let id = maps.origin_id("bench").unwrap();
    let prefixes: Vec<Prefix> =
        banned.iter().map(|a| Prefix { family: Family::V4, addr: u128::from(*a), len: 32 }).collect();
    let expires_ns = blocker::clock::boot_ns() + 4 * 3600 * 1_000_000_000;
    let bans = maps.bans_mut();
    bans.set_lengths(length_words(&prefixes)).unwrap();
    bans.filter_rebuild(&prefixes);
    for p in &prefixes {
        let entry = BanEntry { expires_ns, packets: 0, list_id: id, action: blocker_common::ACTION_DROP };
        bans.put(&BanKey::of(p), entry).unwrap();
    }
    let (mut floor_rounds, mut ban_rounds) = (Vec::new(), Vec::new());
    let name = format!("blocker, {} bans (no list)", banned.len());
    for _ in 0..knob("BLOCKER_BENCH_ROUNDS", 3usize).max(1) {
        let link = attach(floor_obj, PROGRAM_DROP_FLOOR);
        floor_rounds.push(sender.measure("XDP_DROP only (floor)", &pools));
        detach(floor_obj, PROGRAM_DROP_FLOOR, link);
        let rx = maps.ebpf_mut().unwrap();
        let link = attach(rx, PROGRAM_NAME);
        ban_rounds.push(sender.measure(&name, &pools));
        detach(rx, PROGRAM_NAME, link);
    }
    drop(maps);
    let mut rows = vec![median_of(floor_rounds), median_of(ban_rounds)];
    let mut nft = String::with_capacity(32 * banned.len());
    nft.push_str("table netdev blkban {\n  set deny {\n    type ipv4_addr; flags timeout;\n    elements = { ");
    for (i, a) in banned.iter().enumerate() {
        let _ = write!(nft, "{}{} timeout 4h", if i == 0 { "" } else { ", " }, std::net::Ipv4Addr::from(*a));
    }
    nft.push_str(" }\n  }\n  chain ingress {\n    type filter hook ingress device \"e2erx\" priority -500; policy accept;\n    ip saddr @deny drop\n  }\n}\n");
    let nft_file = std::env::temp_dir().join(format!("blocker-e2e-{}-bans.nft", std::process::id()));
    std::fs::write(&nft_file, nft).unwrap();
    run_measured(Command::new("ip").args(["netns", "exec", &net.rx, "nft", "-f", nft_file.to_str().unwrap()]), None);
    let _ = std::fs::remove_file(&nft_file);
    let link = attach(floor_obj, PROGRAM_PASS_FLOOR);
    rows.push(sender.measure("XDP_PASS + nftables netdev ingress, set with timeouts", &pools));
    net.in_rx("nft", &["delete", "table", "netdev", "blkban"]);
    detach(floor_obj, PROGRAM_PASS_FLOOR, link);
    rows
}

impl AttackRun {
    fn report(&self, out: &mut String, json: &mut serde_json::Map<String, serde_json::Value>, frames: u32) {
        let _ =
            writeln!(out, "end to end, IPv4, a deny list of {ATTACK_LIST} random addresses, {frames} frames per run");
        write_rates(out, ["sources from the list", "random sources"], &self.rows);
        let mut rows_json = Vec::new();
        for r in &self.rows {
            rows_json.push(
                serde_json::json!({ "receiver": r.name, "mpps": r.mpps, "arrived": r.arrived, "rounds": r.rounds }),
            );
        }
        let (off, on) = (&self.rows[1], &self.rows[3]);
        let _ = writeln!(
            out,
            "events on / events off: {:.3}x (sources from the list), {:.3}x (random sources); the sampler wrote {} \
             events and left {} packets unsampled (rate limit), {} lost (ring full, nobody reading)",
            on.mpps[0] / off.mpps[0],
            on.mpps[1] / off.mpps[1],
            self.events.sent,
            self.events.rate_limited,
            self.events.ring_full
        );
        let _ = writeln!(
            out,
            "floor and blocker rows: median of {} alternating rounds; nft -f of the set: {:.1} s, peak RSS {:.0} MiB\n",
            self.rows[0].rounds,
            self.load_nft.0.as_secs_f64(),
            self.load_nft.1 as f64 / 1024.0
        );
        let _ = writeln!(
            out,
            "end to end, IPv4, {BANS} banned addresses beside an empty table, against an nftables set with \
             timeouts of the same addresses"
        );
        write_rates(out, ["banned sources", "random sources"], &self.ban_rows);
        let ban_rows: Vec<serde_json::Value> = self
            .ban_rows
            .iter()
            .map(
                |r| serde_json::json!({ "receiver": r.name, "mpps": r.mpps, "arrived": r.arrived, "rounds": r.rounds }),
            )
            .collect();
        json.insert(
            "attack_bans_1m".into(),
            serde_json::json!({ "mixes": ["banned sources", "random sources"], "receivers": ban_rows }),
        );
        json.insert(
            "attack_2m".into(),
            serde_json::json!({ "mixes": ATTACK_MIXES, "receivers": rows_json,
                "events_on_over_off": [on.mpps[0] / off.mpps[0], on.mpps[1] / off.mpps[1]],
                "events": self.events,
                "nft_load_s": self.load_nft.0.as_secs_f64(), "nft_peak_rss_kib": self.load_nft.1 }),
        );
    }
}

const MILLION: usize = 1_000_000;

/// 1,000,000 random IPv4 addresses: kernel memory of blocker's maps against
/// ipset hash:ip holding the same set, side by side; the load time of each, and
/// the real daemon's start, reload and peak RSS against `nft -f`.
struct MillionRun {
    blocker_kernel_bytes: u64,
    blocker_table_bytes: u64,
    compile_load_swap: Duration,
    ipset_kernel_bytes: u64,
    ipset_restore: (Duration, u64),
    nft: (Duration, u64),
    daemon: (Duration, Duration, u64),
}

fn run_million(net: &Net, pins: &std::path::Path) -> MillionRun {
    let (_, hosts) = threat_list(MILLION, 0x6a09_e667_f3bc_c909);
    let text: String = hosts.iter().map(|a| format!("{}\n", std::net::Ipv4Addr::from(*a))).collect();
    let list = std::env::temp_dir().join(format!("blocker-e2e-{}-million.txt", std::process::id()));
    std::fs::write(&list, &text).unwrap();

    // In process: parse + compile + build + load + fill + swap onto a pinned link.
    Net::enter(&net.rx);
    let root = pins.join("million");
    let dir = pins::iface_dir(&root, "e2erx");
    let mut maps = DataplaneMaps::load(&dir, 0).unwrap();
    link::attach(maps.ebpf_mut().unwrap(), &root, "e2erx", link::AttachMode::Native).unwrap();
    let started = Instant::now();
    let prefixes = blocker::source::cidr_list::parse_list(&list, &text).unwrap();
    let table = compile(&[ListSpec { name: "million".into(), role: Role::Deny, prefixes }]);
    let report = maps.apply(&table, DEFAULT_TABLE_MEMORY).unwrap();
    let compile_load_swap = started.elapsed();
    let blocker_kernel_bytes = maps.memory().unwrap();
    drop(maps);
    link::detach(&root, "e2erx").unwrap();

    // ipset hash:ip: restore, then the kernel's own figure for the set.
    let mut restore = format!("create blkmillion hash:ip family inet maxelem {}\n", 2 * MILLION);
    for a in &hosts {
        let _ = writeln!(restore, "add blkmillion {}", std::net::Ipv4Addr::from(*a));
    }
    let restore_file = std::env::temp_dir().join(format!("blocker-e2e-{}-million.ipset", std::process::id()));
    std::fs::write(&restore_file, restore).unwrap();
    let mut restore_cmd = Command::new("ip");
    restore_cmd.args(["netns", "exec", &net.rx, "ipset", "-exist", "restore"]);
    let ipset_restore = run_measured(&mut restore_cmd, Some(&restore_file));
    let listing = net.in_rx("ipset", &["list", "-t", "blkmillion"]);
    let ipset_kernel_bytes = listing
        .lines()
        .find_map(|l| l.strip_prefix("Size in memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("ipset list -t reports its size in memory");
    net.in_rx("ipset", &["destroy", "blkmillion"]);
    let _ = std::fs::remove_file(&restore_file);

    // nft -f of the same set (the netdev table is loaded and deleted again).
    let mut nft = String::from("table netdev blkm {\n  set deny {\n    type ipv4_addr;\n    elements = { ");
    nft.push_str(&hosts.iter().map(|a| std::net::Ipv4Addr::from(*a).to_string()).collect::<Vec<_>>().join(", "));
    nft.push_str(" }\n  }\n}\n");
    let nft_file = std::env::temp_dir().join(format!("blocker-e2e-{}-million.nft", std::process::id()));
    std::fs::write(&nft_file, nft).unwrap();
    let nft = run_measured(
        Command::new("ip").args(["netns", "exec", &net.rx, "nft", "-f", nft_file.to_str().unwrap()]),
        None,
    );
    net.in_rx("nft", &["delete", "table", "netdev", "blkm"]);
    let _ = std::fs::remove_file(&nft_file);

    let daemon = daemon_start_and_reload(net, pins, &["--deny", list.to_str().unwrap()]);
    let _ = std::fs::remove_file(&list);
    MillionRun {
        blocker_kernel_bytes,
        blocker_table_bytes: report.table_bytes,
        compile_load_swap,
        ipset_kernel_bytes,
        ipset_restore,
        nft,
        daemon,
    }
}

impl MillionRun {
    fn report(&self, out: &mut String, json: &mut serde_json::Map<String, serde_json::Value>) {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let _ = writeln!(out, "{MILLION} random IPv4 addresses");
        let _ = writeln!(
            out,
            "kernel memory: blocker {:.1} MiB (all its maps; the table {:.1} MiB), ipset hash:ip {:.1} MiB: blocker is {:.2}x ipset",
            mib(self.blocker_kernel_bytes),
            mib(self.blocker_table_bytes),
            mib(self.ipset_kernel_bytes),
            self.blocker_kernel_bytes as f64 / self.ipset_kernel_bytes as f64
        );
        let _ = writeln!(
            out,
            "load: blocker parse + compile + load + swap {:.0} ms; ipset restore {:.0} ms ({:.1}x blocker); nft -f {:.0} ms",
            ms(self.compile_load_swap),
            ms(self.ipset_restore.0),
            self.ipset_restore.0.as_secs_f64() / self.compile_load_swap.as_secs_f64(),
            ms(self.nft.0)
        );
        let (start, reload, rss) = self.daemon;
        let _ = writeln!(
            out,
            "daemon with the list: ready in {:.0} ms, SIGHUP reload {:.0} ms, peak RSS {:.0} MiB; nft -f peak RSS {:.0} MiB ({:.2}x the daemon's); ipset restore peak RSS {:.0} MiB\n",
            ms(start),
            ms(reload),
            rss as f64 / 1024.0,
            self.nft.1 as f64 / 1024.0,
            rss as f64 / self.nft.1 as f64,
            self.ipset_restore.1 as f64 / 1024.0
        );
        json.insert(
            "million_v4".into(),
            serde_json::json!({
                "blocker_kernel_bytes": self.blocker_kernel_bytes, "blocker_table_bytes": self.blocker_table_bytes,
                "ipset_kernel_bytes": self.ipset_kernel_bytes,
                "compile_load_swap_ms": ms(self.compile_load_swap), "ipset_restore_ms": ms(self.ipset_restore.0),
                "ipset_restore_rss_kib": self.ipset_restore.1, "nft_ms": ms(self.nft.0), "nft_rss_kib": self.nft.1,
                "daemon_ready_ms": ms(start), "daemon_reload_ms": ms(reload), "daemon_rss_kib": rss,
            }),
        );
    }
}

#[path = "endtoend/crowdsec.rs"]
mod crowdsec;

fn main() {
    object::check_privileges().expect("the end-to-end bench needs root");
    let frames = knob("BLOCKER_BENCH_FRAMES", FRAMES);
    let all: Vec<String> = blocker::source::region::db::RegionDb::bundled().unwrap().regions.keys().cloned().collect();
    let table =
        build_table(&Policy { deny_country: all.clone(), no_default_never_block: true, ..Default::default() }).unwrap();
    let net = Net::new();
    let pins = PathBuf::from(format!("/sys/fs/bpf/blocker-e2e-{}", std::process::id()));
    pins::ensure_bpffs(&pins).unwrap();
    let families: Vec<Family> = match std::env::var("BLOCKER_BENCH_FAMILY").as_deref() {
        Ok("4") => vec![Family::V4],
        Ok("6") => vec![Family::V6],
        _ => vec![Family::V4, Family::V6],
    };
    let runs: Vec<FamilyRun> = if wanted_part("world") {
        families.iter().map(|f| run_family(*f, &table, &net, &pins, frames)).collect()
    } else {
        Vec::new()
    };
    let (start_daemon, reload_daemon, rss_daemon) =
        daemon_start_and_reload(&net, &pins, &["--deny-country", &all.join(",")]);
    let attack = wanted_part("attack").then(|| run_attack(&net, &pins, frames));
    let million = wanted_part("million").then(|| run_million(&net, &pins));
    let crowdsec = wanted_part("crowdsec").then(|| {
        let mut sender = sender(Family::V4, &net, &pins, "crowdsec", frames);
        crowdsec::run(&net, &pins, &mut sender)
    });
    let _ = std::fs::remove_dir_all(&pins);

    let mut out = String::new();
    let mut json = serde_json::Map::new();
    for run in &runs {
        let fam = family_name(run.family);
        let _ = writeln!(
            out,
            "end to end on a veth pair, {fam}, {frames} frames per run, random sources from a pool of {POOL}, world table {} {fam} prefixes",
            run.prefixes
        );
        write_rates(&mut out, ["all in table (drops)", "half in table"], &run.rows);
        let mut rows_json = Vec::new();
        for r in &run.rows {
            for (i, arrived) in r.arrived.iter().enumerate() {
                if *arrived < u64::from(frames) * 99 / 100 {
                    let _ = writeln!(
                        out,
                        "  note: {} ({}): {arrived} of {frames} frames reached the receiver",
                        r.name, MIXES[i].0
                    );
                }
            }
            rows_json.push(serde_json::json!({ "receiver": r.name, "mpps": r.mpps, "arrived": r.arrived, "frames": frames, "rounds": r.rounds }));
        }
        let _ = writeln!(
            out,
            "floor and blocker: median of {} alternating rounds; the other rows one round each",
            run.rows[0].rounds
        );
        let _ =
            writeln!(out, "blocker's own counters over its rounds: {} dropped, {} passed\n", run.dropped, run.passed);
        json.insert(
            fam.to_owned(),
            serde_json::json!({ "mixes": MIXES.iter().map(|m| m.0).collect::<Vec<_>>(), "receivers": rows_json }),
        );
    }

    let _ = writeln!(out, "control plane, whole world ({} IPv4 + {} IPv6 prefixes)", table.v4.len(), table.v6.len());
    let _ = writeln!(out, "{:<62} {:>9} {:>14}", "", "wall ms", "peak RSS MiB");
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut control: Vec<(String, Duration, Option<u64>)> = vec![
        ("blocker run: read + compile + load + attach, to ready (both)".into(), start_daemon, Some(rss_daemon)),
        ("blocker reload (SIGHUP: read + compile + swap, both)".into(), reload_daemon, None),
    ];
    for run in &runs {
        let fam = family_name(run.family);
        control.push((format!("kernel LPM trie: element-by-element inserts ({fam})"), run.load_lpm, None));
        control.push((format!("nft -f (interval set, {fam})"), run.load_nft.0, Some(run.load_nft.1)));
        control.push((format!("ipset restore (hash:net, {fam})"), run.load_ipset.0, Some(run.load_ipset.1)));
    }
    let mut control_json = Vec::new();
    for (name, wall, rss) in &control {
        let rss_text = rss.map_or("(same process)".to_string(), |k| format!("{:.1}", mib(k)));
        let _ = writeln!(out, "{name:<62} {:>9.0} {rss_text:>14}", wall.as_secs_f64() * 1e3);
        control_json
            .push(serde_json::json!({ "what": name, "wall_ms": wall.as_secs_f64() * 1e3, "peak_rss_kib": rss }));
    }
    let no_memory = Vec::new();
    let map_memory = runs.first().map_or(&no_memory, |r| &r.map_memory);
    let total: u64 = map_memory.iter().map(|(_, b)| b).sum();
    let _ = writeln!(
        out,
        "kernel memory of blocker's maps (fdinfo memlock): {:.1} MiB",
        total as f64 / (1u64 << 20) as f64
    );
    for (name, bytes) in map_memory {
        if *bytes >= 1 << 20 {
            let _ = writeln!(out, "  {name:<20} {:>6.1} MiB", *bytes as f64 / (1u64 << 20) as f64);
        }
    }
    if let Some(a) = &attack {
        a.report(&mut out, &mut json, frames);
    }
    if let Some(m) = &million {
        m.report(&mut out, &mut json);
    }
    if let Some(c) = &crowdsec {
        c.report(&mut out, &mut json);
    }
    print!("{out}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    json.insert("control_plane".into(), serde_json::Value::Array(control_json));
    json.insert("map_memory_bytes".into(), total.into());
    std::fs::write(dir.join("endtoend.json"), serde_json::to_string_pretty(&serde_json::Value::Object(json)).unwrap())
        .unwrap();
    println!("wrote {}", dir.join("endtoend.json").display());
    drop(net);
}

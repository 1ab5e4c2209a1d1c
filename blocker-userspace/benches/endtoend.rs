//! End to end on a veth pair: packets per second through the receiving end, for
//! blocker and for the baselines, all fed the same traffic in the same run.
//! Needs root; `cargo xtask bench endtoend` runs it.
//!
//! Two network namespaces made for the run (and deleted after it) are joined by a
//! veth pair. The sender runs the `trafficgen` XDP program through
//! BPF_PROG_TEST_RUN in live-frames mode: every frame is an Ethernet+IPv4+UDP frame
//! to the receiver whose source address is drawn from a pool of 65,536 addresses,
//! half inside the table's prefixes (hits), half uniformly random; the program
//! fixes the checksum and sends the frame out of the sender's veth (XDP_TX). On this
//! machine the receiver's NAPI processing runs in the sender's context, so frames
//! divided by the elapsed time of the run is the receiver's rate. The receiver's
//! `ethtool -S` XDP counters confirm that every frame arrived.
//!
//! Receivers: a bare XDP_DROP (the floor); blocker with the world table (every
//! country denied); blocker with the kernel LPM trie as classifier; XDP_PASS then
//! nftables on the netdev ingress hook with an interval set of the same prefixes;
//! XDP_PASS then iptables raw PREROUTING with an ipset hash:net of the same prefixes.
//! Control plane figures (time to load the table into each) come from the same run.

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
use blocker::{compile::CompiledTable, loader, maps::DataplaneMaps, policy::Policy};
use blocker_common::{
    map_names, GEN_POOL_MAP, PROGRAM_DROP_FLOOR, PROGRAM_LPM_BASELINE, PROGRAM_NAME, PROGRAM_PASS_FLOOR,
    PROGRAM_TRAFFICGEN,
};
use blocker_tests::{sh, Rng};

const FRAMES: u32 = 3_000_000;
const POOL: usize = 65_536;

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
        sh("ip", &["link", "add", "e2erx", "netns", &net.rx, "type", "veth", "peer", "name", "e2etx", "netns", &net.tx]).unwrap();
        for (ns, dev) in [(&net.rx, "e2erx"), (&net.tx, "e2etx")] {
            sh("ip", &["-n", ns, "link", "set", dev, "mtu", "1500", "up"]).unwrap();
        }
        sh("ip", &["-n", &net.rx, "addr", "add", "192.0.2.1/24", "dev", "e2erx"]).unwrap();
        sh("ip", &["-n", &net.tx, "addr", "add", "192.0.2.2/24", "dev", "e2etx"]).unwrap();
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


/// Sources for the generator: `hit_percent` of them inside table prefixes (drawn
/// from the first `spread` prefixes), the rest uniformly random.
fn pool(table: &CompiledTable, hit_percent: u64, spread: usize) -> Vec<u32> {
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    (0..POOL)
        .map(|i| {
            let a = if (i as u64 * 100 / POOL as u64) < hit_percent {
                let (p, _) = table.v4[(rng.next() % spread as u64) as usize];
                let (lo, hi) = p.range();
                (lo + u128::from(rng.next()) % (hi - lo + 1)) as u32
            } else {
                rng.next() as u32
            };
            // The program copies the value's bytes as they are: network order.
            u32::from_ne_bytes(a.to_be_bytes())
        })
        .collect()
}

fn fill_pool(gen: &mut Ebpf, pool: &[u32]) {
    let mut pool_map: Array<&mut MapData, u32> = gen.map_mut(GEN_POOL_MAP).unwrap().try_into().unwrap();
    for (i, a) in pool.iter().enumerate() {
        pool_map.set(i as u32, *a, 0).unwrap();
    }
}

/// Waits for a child with wait4(2): its exit status and peak resident set (KiB).
fn wait_measured(child: std::process::Child) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 on our own child's pid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0, "wait4: {}", std::io::Error::last_os_error());
    (status, usage.ru_maxrss as u64)
}

/// Runs a command to completion: (wall time, peak RSS in KiB).
fn run_measured(cmd: &mut Command) -> (Duration, u64) {
    let started = Instant::now();
    let child = cmd.spawn().unwrap();
    let (status, rss) = wait_measured(child);
    assert_eq!(status, 0, "{cmd:?} failed");
    (started.elapsed(), rss)
}

fn frame(rx_mac: [u8; 6], tx_mac: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&rx_mac);
    f.extend_from_slice(&tx_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend(blocker_tests::frames::ipv4_packet("198.51.100.1".parse().unwrap(), "192.0.2.1".parse().unwrap(), 0, &[0u8; 18]));
    f
}

fn mac(ns: &str, dev: &str) -> [u8; 6] {
    let out = sh("ip", &["-n", ns, "-o", "link", "show", dev]).unwrap();
    let text = out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap();
    let v: Vec<u8> = text.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    v.try_into().unwrap()
}

/// Sends `FRAMES` frames from the sender; returns the elapsed time.
fn send(gen: &Ebpf, tx_ifindex: u32, frame: &[u8], frames: u32) -> Duration {
    let prog: &Xdp = gen.program(PROGRAM_TRAFFICGEN).unwrap().try_into().unwrap();
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

fn attach(ebpf: &mut Ebpf, name: &str) {
    let prog: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
    if prog.fd().is_err() {
        prog.load().unwrap();
    }
    prog.attach("e2erx", XdpMode::Driver).expect("native XDP on the receiving veth");
}

fn detach_all(ebpf: Ebpf) {
    drop(ebpf); // links owned by the programs detach on drop
}

/// The traffic mixes every receiver is measured with.
const MIXES: [(&str, u64); 2] = [("all sources in the table (all dropped)", 100), ("half in the table, half random", 50)];

struct Receiver {
    name: String,
    /// Mpps per mix (MIXES order).
    mpps: Vec<f64>,
    arrived: Vec<u64>,
    note: String,
}

fn main() {
    loader::check_privileges().expect("the end-to-end bench needs root");
    let frames = knob("BLOCKER_BENCH_FRAMES", FRAMES);
    let all: Vec<String> = blocker::regions::RegionDb::bundled().unwrap().regions.keys().cloned().collect();
    let table =
        Policy { deny_country: all.clone(), no_default_never_block: true, ..Default::default() }.build_table().unwrap();
    let net = Net::new();
    let (rx_mac, tx_mac) = (mac(&net.rx, "e2erx"), mac(&net.tx, "e2etx"));
    let frame = frame(rx_mac, tx_mac);
    let pins = PathBuf::from(format!("/sys/fs/bpf/blocker-e2e-{}", std::process::id()));
    loader::ensure_bpffs(&pins).unwrap();
    let pools: Vec<Vec<u32>> = MIXES.iter().map(|(_, hits)| pool(&table, *hits, table.v4.len())).collect();

    // The generator, loaded in the sender's namespace.
    Net::enter(&net.tx);
    let tx_ifindex = loader::ifindex("e2etx").unwrap();
    let mut gen = loader::load(&loader::iface_dir(&pins, "gen"), 0).unwrap();
    {
        let prog: &mut Xdp = gen.program_mut(PROGRAM_TRAFFICGEN).unwrap().try_into().unwrap();
        prog.load().unwrap();
    }
    let mut rows: Vec<Receiver> = Vec::new();
    // Every receiver and mix gets one untimed warm-up run, then the measured one.
    let mut measure = |name: &str, note: String, net: &Net, pools: &[Vec<u32>]| {
        let mut r = Receiver { name: name.to_owned(), mpps: vec![], arrived: vec![], note };
        for pool in pools {
            Net::enter(&net.tx);
            fill_pool(&mut gen, pool);
            send(&gen, tx_ifindex, &frame, frames / 10);
            let before = net.rx_xdp_packets();
            let elapsed = send(&gen, tx_ifindex, &frame, frames);
            let arrived = net.rx_xdp_packets() - before;
            // Rate through the receiver: frames that reached its XDP hook per second.
            let mpps = arrived.min(u64::from(frames)) as f64 / elapsed.as_secs_f64() / 1e6;
            eprintln!("{name}: {mpps:.2} Mpps ({arrived} frames arrived)");
            r.mpps.push(mpps);
            r.arrived.push(arrived);
        }
        rows.push(r);
    };

    // 1. Bare XDP_DROP.
    Net::enter(&net.rx);
    let mut rx = loader::load(&loader::iface_dir(&pins, "rx-floor"), 0).unwrap();
    attach(&mut rx, PROGRAM_DROP_FLOOR);
    measure("XDP_DROP only (floor)", String::new(), &net, &pools);
    Net::enter(&net.rx);
    detach_all(rx);

    // 2. blocker with the world table; then the same with every source drawn from
    // 64 prefixes, a working set that stays in cache: the difference is the cost
    // of the table's memory.
    let dir = loader::iface_dir(&pins, "rx-blocker");
    let mut rx = loader::load(&dir, 0).unwrap();
    let mut maps = DataplaneMaps::open(&dir).unwrap();
    maps.apply(&table).unwrap();
    attach(&mut rx, PROGRAM_NAME);
    let before = maps.counters().unwrap();
    measure("blocker (trie), world table", String::new(), &net, &pools);
    let after = maps.counters().unwrap();
    let (dropped, passed) = (after.global[1] - before.global[1], after.global[0] - before.global[0]);
    measure("blocker, sources from 64 prefixes only (hot cache)", String::new(), &net, &[pool(&table, 100, 64)]);
    let map_memory = blocker::maps::pinned_map_memory(&dir).unwrap();
    Net::enter(&net.rx);
    drop(maps);
    detach_all(rx);

    // 3. blocker with the kernel LPM trie.
    let dir = loader::iface_dir(&pins, "rx-lpm");
    let mut rx = loader::load(&dir, 0).unwrap();
    let mut maps = DataplaneMaps::open(&dir).unwrap();
    maps.apply(&table).unwrap();
    let ids: HashMap<String, u32> = maps.counters().unwrap().lists.into_iter().map(|l| (l.name, l.id)).collect();
    let started = Instant::now();
    {
        let mut v4: LpmTrie<&mut MapData, [u8; 4], u32> = rx.map_mut(map_names::LPM_V4).unwrap().try_into().unwrap();
        for (p, l) in &table.v4 {
            v4.insert(&Key::new(u32::from(p.len), (p.addr as u32).to_be_bytes()), ids[&table.lists[*l].name], 0).unwrap();
        }
    }
    let load_lpm = started.elapsed();
    attach(&mut rx, PROGRAM_LPM_BASELINE);
    measure("kernel LPM trie, world table", String::new(), &net, &pools);
    Net::enter(&net.rx);
    drop(maps);
    detach_all(rx);

    // 4. XDP_PASS, then nftables netdev ingress with an interval set.
    let mut nft = String::from("table netdev blk {\n  set deny {\n    type ipv4_addr; flags interval; auto-merge;\n    elements = { ");
    let v4: Vec<String> = table.v4.iter().map(|(p, _)| p.to_string()).collect();
    nft.push_str(&v4.join(", "));
    nft.push_str(" }\n  }\n  chain ingress {\n    type filter hook ingress device \"e2erx\" priority -500; policy accept;\n    ip saddr @deny drop\n  }\n}\n");
    let nft_file = std::env::temp_dir().join(format!("blocker-e2e-{}.nft", std::process::id()));
    std::fs::write(&nft_file, nft).unwrap();
    let (load_nft, rss_nft) =
        run_measured(Command::new("ip").args(["netns", "exec", &net.rx, "nft", "-f", nft_file.to_str().unwrap()]));
    let mut rx = loader::load(&loader::iface_dir(&pins, "rx-pass"), 0).unwrap();
    attach(&mut rx, PROGRAM_PASS_FLOOR);
    measure("XDP_PASS + nftables netdev ingress, interval set", String::new(), &net, &pools);
    net.in_rx("nft", &["delete", "table", "netdev", "blk"]);

    // 5. XDP_PASS, then iptables raw PREROUTING with ipset hash:net.
    let mut restore = String::from("create blkdeny hash:net family inet maxelem 1048576\n");
    for p in &v4 {
        let _ = writeln!(restore, "add blkdeny {p}");
    }
    let restore_file = std::env::temp_dir().join(format!("blocker-e2e-{}.ipset", std::process::id()));
    std::fs::write(&restore_file, restore).unwrap();
    let (load_ipset, rss_ipset) = run_measured(
        Command::new("ip")
            .args(["netns", "exec", &net.rx, "ipset", "-exist", "restore"])
            .stdin(std::fs::File::open(&restore_file).unwrap()),
    );
    net.in_rx("iptables", &["-t", "raw", "-A", "PREROUTING", "-m", "set", "--match-set", "blkdeny", "src", "-j", "DROP"]);
    measure("XDP_PASS + iptables raw PREROUTING, ipset hash:net", String::new(), &net, &pools);
    net.in_rx("iptables", &["-t", "raw", "-F", "PREROUTING"]);
    net.in_rx("ipset", &["destroy", "blkdeny"]);

    // 6. XDP_PASS, no filter: the stack handles every packet.
    measure("XDP_PASS, no filter", String::new(), &net, &pools);
    Net::enter(&net.rx);
    detach_all(rx);

    // Control plane: the real daemon, started with the whole world denied (read,
    // compile, load, attach), reloaded once (SIGHUP), stopped; time and peak memory.
    let daemon_pins = pins.join("daemon");
    let log_path = std::env::temp_dir().join(format!("blocker-e2e-{}.log", std::process::id()));
    let countries = all.join(",");
    let socket = std::env::temp_dir().join(format!("blocker-e2e-{}.sock", std::process::id()));
    let started = Instant::now();
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.rx))
        .arg(env!("CARGO_BIN_EXE_blocker"))
        .args(["--pin-root", daemon_pins.to_str().unwrap(), "--socket", socket.to_str().unwrap()])
        .args(["run", "--iface", "e2erx", "--xdp-mode", "native", "--no-watch", "--no-default-never-block"])
        .args(["--deny-country", &countries])
        .stderr(std::fs::File::create(&log_path).unwrap())
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let wait_for = |needle: &str, times: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::read_to_string(&log_path).unwrap_or_default().matches(needle).count() < times {
            assert!(Instant::now() < deadline, "daemon: no {needle:?}: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    wait_for("ready:", 1);
    let start_daemon = started.elapsed();
    let started = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    wait_for("reloaded", 1);
    let reload_daemon = started.elapsed();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (_, rss_daemon) = wait_measured(child);
    Net::enter(&net.rx);
    loader::detach(&daemon_pins, "e2erx").unwrap();

    drop(gen);
    let _ = std::fs::remove_dir_all(&pins);
    let _ = std::fs::remove_file(&nft_file);
    let _ = std::fs::remove_file(&restore_file);
    let _ = std::fs::remove_file(&log_path);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "end to end on a veth pair, {frames} frames per run, random IPv4 sources from a pool of {POOL}, world table {} IPv4 prefixes",
        table.v4.len()
    );
    let _ = writeln!(out, "{:<52} {:>22} {:>22}", "", "all in table (drops)", "half in table");
    let _ = writeln!(out, "{:<52} {:>7} {:>6} {:>7}  {:>7} {:>6} {:>7}", "receiver", "Mpps", "floor", "blk is", "Mpps", "floor", "blk is");
    let mut json = Vec::new();
    for r in &rows {
        let _ = write!(out, "{:<52}", r.name);
        for (i, mpps) in r.mpps.iter().enumerate() {
            let _ = write!(out, " {mpps:>7.2} {:>5.0}% {:>6.1}x ", mpps / rows[0].mpps[i] * 100.0, rows[1].mpps[i] / mpps);
        }
        let _ = writeln!(out);
        for (i, arrived) in r.arrived.iter().enumerate() {
            if *arrived < u64::from(frames) * 99 / 100 {
                let _ = writeln!(out, "  note: {} ({}): {arrived} of {frames} frames reached the receiver", r.name, MIXES[i].0);
            }
        }
        json.push(serde_json::json!({ "receiver": r.name, "mpps": r.mpps, "arrived": r.arrived, "frames": frames, "note": r.note }));
    }
    let _ = writeln!(out, "blocker's own counters over both mixes: {dropped} dropped, {passed} passed");
    let _ = writeln!(out, "\ncontrol plane, whole world ({} IPv4 + {} IPv6 prefixes)", table.v4.len(), table.v6.len());
    let _ = writeln!(out, "{:<62} {:>9} {:>14}", "", "wall ms", "peak RSS MiB");
    let mib = |kib: u64| kib as f64 / 1024.0;
    let control = [
        ("blocker run: read + compile + load + attach, to ready", start_daemon, Some(rss_daemon)),
        ("blocker reload (SIGHUP: read + compile + swap)", reload_daemon, None),
        ("kernel LPM trie: element-by-element inserts (IPv4 only)", load_lpm, None),
        ("nft -f (interval set, IPv4 only)", load_nft, Some(rss_nft)),
        ("ipset restore (hash:net, IPv4 only)", load_ipset, Some(rss_ipset)),
    ];
    let mut control_json = Vec::new();
    for (name, wall, rss) in control {
        let rss_text = rss.map_or("(same process)".to_string(), |k| format!("{:.1}", mib(k)));
        let _ = writeln!(out, "{name:<62} {:>9.0} {rss_text:>14}", wall.as_secs_f64() * 1e3);
        control_json.push(serde_json::json!({ "what": name, "wall_ms": wall.as_secs_f64() * 1e3, "peak_rss_kib": rss }));
    }
    let total: u64 = map_memory.iter().map(|(_, b)| b).sum();
    let _ = writeln!(out, "kernel memory of blocker's maps (fdinfo memlock): {:.1} MiB", total as f64 / (1u64 << 20) as f64);
    for (name, bytes) in &map_memory {
        if *bytes >= 1 << 20 {
            let _ = writeln!(out, "  {name:<20} {:>6.1} MiB", *bytes as f64 / (1u64 << 20) as f64);
        }
    }
    print!("{out}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let v = serde_json::json!({
        "mixes": MIXES.iter().map(|m| m.0).collect::<Vec<_>>(),
        "end_to_end": json,
        "control_plane": control_json,
        "map_memory_bytes": total,
    });
    std::fs::write(dir.join("endtoend.json"), serde_json::to_string_pretty(&v).unwrap()).unwrap();
    println!("wrote {}", dir.join("endtoend.json").display());
    drop(net);
}

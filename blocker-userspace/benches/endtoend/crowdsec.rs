//! Side by side on one LAPI: blocker's CrowdSec feed and Debian's
//! crowdsec-firewall-bouncer 0.0.25 in nftables mode, both pulling the same
//! private LAPI (crowdsec 1.4.6) in the receiving namespace every 10 s (their
//! default), with the same 100,000 imported decisions: time from the import
//! to all enforced, memory, and the drop rate under an attack from the banned
//! addresses.

use std::{
    fmt::Write as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use blocker_tests::{crowdsec::Lapi, Rng};

use super::{
    attach, common, detach, knob, median_of, peak_rss_kib, pins, Net, Receiver, Sender, POOL, PROGRAM_DROP_FLOOR,
    PROGRAM_PASS_FLOOR,
};

const DECISIONS: usize = 100_000;

pub(crate) struct CrowdsecSide {
    import: Duration,
    /// From the import's return to all enforced: blocker, the firewall bouncer.
    enforced: [Option<Duration>; 2],
    /// Peak RSS (KiB): blocker's daemon, the firewall bouncer.
    rss_kib: [u64; 2],
    /// Kernel memory the decisions took: blocker's maps (fdinfo memlock
    /// before and after), a set like the bouncer's (kmalloc caches before and
    /// after the same addresses are loaded).
    kernel_bytes: [i64; 2],
    rows: Vec<Receiver>,
}

/// Bytes of the kernel's kmalloc caches in use (active objects times their size).
fn kmalloc_bytes() -> i64 {
    let text = std::fs::read_to_string("/proc/slabinfo").unwrap();
    text.lines()
        .filter(|l| l.starts_with("kmalloc-"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(f.get(1)?.parse::<i64>().ok()? * f.get(3)?.parse::<i64>().ok()?)
        })
        .sum()
}

/// Elements in the bouncer's IPv4 set (None: no set yet).
fn nft_elements(net: &Net) -> Option<usize> {
    let out = Command::new("ip")
        .args(["netns", "exec", &net.rx, "nft", "-j", "list", "set", "ip", "crowdsec", "crowdsec-blacklists"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let set = v["nftables"].as_array()?.iter().find_map(|o| o.get("set"))?;
    Some(set.get("elem").and_then(|e| e.as_array()).map_or(0, Vec::len))
}

fn blocker_bans(socket: &Path) -> usize {
    let out = Command::new(env!("CARGO_BIN_EXE_blocker"))
        .args(["--socket", socket.to_str().unwrap(), "status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["bans"]["crowdsec:cscli-import"].as_u64().unwrap_or(0) as usize
}

fn blocker_map_bytes(socket: &Path) -> i64 {
    let out = Command::new(env!("CARGO_BIN_EXE_blocker"))
        .args(["--socket", socket.to_str().unwrap(), "status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["interfaces"][0]["map_memory_bytes"].as_i64().unwrap_or(0)
}

fn bouncer_config(dir: &Path, lapi: &Lapi, key: &str) -> std::path::PathBuf {
    let cfg = dir.join("fw-bouncer.yaml");
    std::fs::write(
        &cfg,
        format!(
            "mode: nftables\npid_dir: {d}\nupdate_frequency: 10s\ndaemonize: false\nlog_mode: file\nlog_dir: {d}\n\
             log_level: info\napi_url: {url}\napi_key: {key}\ndisable_ipv6: false\ndeny_action: DROP\ndeny_log: false\n\
             supported_decisions_types:\n  - ban\nblacklists_ipv4: crowdsec-blacklists\nblacklists_ipv6: \
             crowdsec6-blacklists\nnftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: crowdsec\n    \
             chain: crowdsec-chain\n  ipv6:\n    enabled: true\n    set-only: false\n    table: crowdsec6\n    chain: \
             crowdsec6-chain\n",
            d = dir.display(),
            url = lapi.url(),
        ),
    )
    .unwrap();
    cfg
}

fn start_bouncer(net: &Net, cfg: &Path, dir: &Path) -> std::process::Child {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.rx))
        .args(["crowdsec-firewall-bouncer", "-c"])
        .arg(cfg)
        .stdout(std::fs::File::create(dir.join("fw-bouncer.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("fw-bouncer.err")).unwrap())
        .spawn()
        .expect("crowdsec-firewall-bouncer (cargo xtask setup installs it for the bench)")
}

fn stop(mut child: std::process::Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

pub(crate) fn run(net: &Net, pins_root: &Path, sender: &mut Sender<'_>) -> CrowdsecSide {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    blocker_tests::sh("ip", &["-n", &net.rx, "link", "set", "lo", "up"]).unwrap();
    std::fs::create_dir_all(dir.join("lapi")).unwrap();
    let lapi = Lapi::start(&dir.join("lapi"), &net.rx, 8080).unwrap();
    let key_blocker = lapi.bouncer("blocker").unwrap();
    let key_fw = lapi.bouncer("fw").unwrap();
    let socket = dir.join("blocker.sock");
    let daemon_pins = pins_root.join("crowdsec");
    let daemon = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.rx))
        .arg(env!("CARGO_BIN_EXE_blocker"))
        .args(["--pin-root", daemon_pins.to_str().unwrap(), "--socket", socket.to_str().unwrap()])
        .args(["run", "--iface", "e2erx", "--xdp-mode", "native", "--no-watch", "--no-default-never-block"])
        .args(["--detach-on-exit", "--state-dir", dir.join("state").to_str().unwrap()])
        .args(["--crowdsec-lapi-url", &lapi.url(), "--crowdsec-api-key-file", key_blocker.to_str().unwrap()])
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let wait = |what: &str, limit: Duration, mut f: Box<dyn FnMut() -> bool + '_>| {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("blocker's socket", Duration::from_secs(30), Box::new(|| socket.exists()));
    let fw_cfg = bouncer_config(dir, &lapi, &std::fs::read_to_string(&key_fw).unwrap());
    let fw = start_bouncer(net, &fw_cfg, dir);
    wait("the bouncer's set", Duration::from_secs(30), Box::new(|| nft_elements(net).is_some()));
    let map_before = blocker_map_bytes(&socket);

    // 100,000 random addresses (never the test networks), imported at once.
    let mut rng = Rng(0x0c50_77ab_1e55_0001);
    let mut banned: Vec<u32> = Vec::with_capacity(DECISIONS);
    let mut seen = std::collections::HashSet::new();
    while banned.len() < DECISIONS {
        let a = 0x0b00_0000 + (rng.below(0xc000_0000 - 0x0b00_0000) as u32);
        if seen.insert(a) {
            banned.push(a);
        }
    }
    let mut csv = String::from("value,duration,reason\n");
    for a in &banned {
        let _ = writeln!(csv, "{},4h,bench", std::net::Ipv4Addr::from(*a));
    }
    let file = dir.join("decisions.csv");
    std::fs::write(&file, csv).unwrap();
    let started = Instant::now();
    let mut tries = 0;
    while let Err(e) = lapi.cscli(&["decisions", "import", "-i", file.to_str().unwrap()]) {
        tries += 1;
        assert!(tries < 3 && e.to_string().contains("database is locked"), "{e}");
    }
    let import = started.elapsed();
    let imported = Instant::now();
    let mut enforced = [None, None];
    let mut last_listed = Instant::now();
    while enforced.iter().any(Option::is_none) && imported.elapsed() < Duration::from_secs(900) {
        if enforced[0].is_none() && blocker_bans(&socket) >= DECISIONS {
            enforced[0] = Some(imported.elapsed());
        }
        // Listing 100,000 elements takes a while: once a second.
        if enforced[1].is_none() && last_listed.elapsed() >= Duration::from_secs(1) {
            last_listed = Instant::now();
            if nft_elements(net).unwrap_or(0) >= DECISIONS {
                enforced[1] = Some(imported.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let map_after = blocker_map_bytes(&socket);
    let rss_blocker = peak_rss_kib(daemon.id());

    // The bouncer's kernel memory: the same 100,000 addresses in a set like
    // its own (ipv4_addr, timeout), loaded at once with nft -f, as the kmalloc
    // caches count it (the bouncer's own full pull takes minutes, over which
    // the whole Slab drifts by more than the set).
    let mut nft = String::from("table ip blkmem {\n  set s {\n    type ipv4_addr; flags timeout;\n    elements = { ");
    for (i, a) in banned.iter().enumerate() {
        let _ = write!(nft, "{}{} timeout 4h", if i == 0 { "" } else { ", " }, std::net::Ipv4Addr::from(*a));
    }
    nft.push_str(" }\n  }\n}\n");
    let nft_file = dir.join("set.nft");
    std::fs::write(&nft_file, nft).unwrap();
    let slab_before = kmalloc_bytes();
    let loaded = Command::new("ip").args(["netns", "exec", &net.rx, "nft", "-f"]).arg(&nft_file).status().unwrap();
    assert!(loaded.success());
    std::thread::sleep(Duration::from_secs(1));
    let slab_after = kmalloc_bytes();
    let _ = Command::new("ip").args(["netns", "exec", &net.rx, "nft", "delete", "table", "ip", "blkmem"]).status();
    let rss_fw = peak_rss_kib(fw.id());

    // The attack: sources drawn from the banned addresses, then random ones.
    let attack: Vec<u128> = (0..POOL).map(|_| u128::from(banned[rng.below(banned.len() as u128) as usize])).collect();
    let random: Vec<u128> =
        (0..POOL).map(|_| u128::from(0x0b00_0000 + rng.below(0xc000_0000 - 0x0b00_0000) as u32)).collect();
    let pools = [attack, random];
    super::Net::enter(&net.rx);
    let mut floor_obj = common::load_bench_object(&pins::iface_dir(pins_root, "rx-floor-crowdsec"));
    let rounds = knob("BLOCKER_BENCH_ROUNDS", 3usize).max(1);
    // blocker's program is the daemon's own (one XDP program per device): its
    // rounds come first, then the floor's and the bouncer's in turns.
    let blocker_rounds: Vec<Receiver> =
        (0..rounds).map(|_| sender.measure("blocker, CrowdSec feed (100,000 decisions)", &pools)).collect();
    stop(daemon);
    let (mut floor_rounds, mut fw_rounds) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let link = attach(&mut floor_obj, PROGRAM_DROP_FLOOR);
        floor_rounds.push(sender.measure("XDP_DROP only (floor)", &pools));
        detach(&mut floor_obj, PROGRAM_DROP_FLOOR, link);
        let link = attach(&mut floor_obj, PROGRAM_PASS_FLOOR);
        fw_rounds.push(sender.measure("XDP_PASS + crowdsec-firewall-bouncer (nftables input hook)", &pools));
        detach(&mut floor_obj, PROGRAM_PASS_FLOOR, link);
    }
    stop(fw);
    drop(lapi);
    CrowdsecSide {
        import,
        enforced,
        rss_kib: [rss_blocker, rss_fw],
        kernel_bytes: [map_after - map_before, slab_after - slab_before],
        rows: vec![median_of(floor_rounds), median_of(blocker_rounds), median_of(fw_rounds)],
    }
}

impl CrowdsecSide {
    pub(crate) fn report(&self, out: &mut String, json: &mut serde_json::Map<String, serde_json::Value>) {
        let _ = writeln!(
            out,
            "CrowdSec side by side: one LAPI (crowdsec 1.4.6), {DECISIONS} imported decisions (the import took {:.1} s), \
             both pulling every 10 s",
            self.import.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "{:<44} {:>22} {:>14} {:>20}",
            "", "import to enforced s", "peak RSS MiB", "kernel memory MiB"
        );
        let names = ["blocker (CrowdSec feed, XDP)", "crowdsec-firewall-bouncer (nftables)"];
        for (i, name) in names.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:<44} {:>22} {:>14.1} {:>20.1}",
                name,
                self.enforced[i].map_or("not within 900 s".to_string(), |d| format!("{:.1}", d.as_secs_f64())),
                self.rss_kib[i] as f64 / 1024.0,
                self.kernel_bytes[i] as f64 / (1u64 << 20) as f64
            );
        }
        super::write_rates(out, ["banned sources", "random sources"], &self.rows);
        let _ = writeln!(
            out,
            "medians of rounds; blocker's rounds ran first (its daemon's program holds the device), then the floor's \
             and the bouncer's in turns"
        );
        let _ = writeln!(
            out,
            "kernel memory: blocker's maps (fdinfo memlock) after minus before the import; the bouncer's: a set like \
             its own (ipv4_addr, timeout) holding the same addresses, the kmalloc caches after minus before nft -f\n"
        );
        json.insert(
            "crowdsec".into(),
            serde_json::json!({
                "decisions": DECISIONS,
                "import_seconds": self.import.as_secs_f64(),
                "enforced_seconds": self.enforced.map(|d| d.map(|d| d.as_secs_f64())),
                "peak_rss_kib": self.rss_kib,
                "kernel_bytes": self.kernel_bytes,
                "receivers": self.rows.iter().map(|r| serde_json::json!({"receiver": r.name, "mpps": r.mpps, "arrived": r.arrived})).collect::<Vec<_>>(),
            }),
        );
    }
}

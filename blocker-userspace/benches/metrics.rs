//! What one Prometheus scrape costs: `cargo bench -p blocker-userspace --bench metrics`.
//!
//! 300 lists on 4 interfaces (veth devices in a network namespace of the
//! bench's own, the program attached in generic mode, so each scrape checks
//! real links). In alternating rounds it measures a whole scrape (the daemon's
//! facts, every interface's pinned counters and link, the source files, the
//! OpenMetrics text) and, as the baseline, reading the same counters the way
//! `blocker stats` does. The report gives the scrape's time against the
//! issue's 50 ms budget and as a ratio to the baseline.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use std::{
    os::fd::AsRawFd as _,
    process::Command,
    time::{Duration, Instant},
};

use blocker::{
    compile::table::compile,
    dataplane::{
        link::{self, AttachMode},
        maps::{read_pinned_counters, DataplaneMaps, Mode, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    metrics::{DaemonFacts, ListFacts, LoadFacts, Scrape},
    net::{Family, Prefix},
    policy::{ListSpec, Role},
};

const INTERFACES: usize = 4;
const LISTS: usize = 300;
/// /24s per list.
const PREFIXES_PER_LIST: u32 = 100;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect(args[0]);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    object::check_privileges().expect("the metrics bench needs root");
    let ns = Netns(format!("blk-bench-metrics-{}", std::process::id()));
    sh(&["ip", "netns", "add", &ns.0]);
    let file = std::fs::File::open(format!("/run/netns/{}", ns.0)).unwrap();
    // SAFETY: setns moves this (the bench's only) thread into the bench's namespace.
    assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    let ifaces: Vec<String> = (0..INTERFACES).map(|i| format!("bm{i}")).collect();
    for i in &ifaces {
        // veth: this kernel has no dummy devices.
        sh(&["ip", "link", "add", i, "type", "veth", "peer", "name", &format!("{i}p")]);
        sh(&["ip", "link", "set", i, "up"]);
    }
    let root = std::env::temp_dir().join(format!("blocker-bench-metrics-{}", std::process::id()));
    let root = std::path::Path::new("/sys/fs/bpf").join(root.file_name().unwrap());
    pins::ensure_bpffs(&root).unwrap();

    let specs: Vec<ListSpec> = (0..LISTS)
        .map(|l| ListSpec {
            name: format!("list-{l:03}"),
            role: Role::Deny,
            prefixes: (0..PREFIXES_PER_LIST)
                .map(|p| Prefix {
                    family: Family::V4,
                    addr: u128::from((10 << 24) | ((l as u32 * 256 + p) << 8)),
                    len: 24,
                })
                .collect(),
        })
        .collect();
    let table = compile(&specs);
    let mut loaded = Vec::new();
    for i in &ifaces {
        let mut maps = DataplaneMaps::load(&pins::iface_dir(&root, i), 0).unwrap();
        maps.apply(&table, DEFAULT_TABLE_MEMORY).unwrap();
        link::attach(maps.ebpf_mut().unwrap(), &root, i, AttachMode::Generic).unwrap();
        loaded.push(maps);
    }
    let facts = DaemonFacts {
        pin_root: root.clone(),
        cache_dir: root.join("cache"),
        interfaces: ifaces.iter().map(|i| (i.clone(), Mode::Enforce)).collect(),
        lists: table
            .lists
            .iter()
            .zip(table.prefixes_per_list())
            .map(|(l, prefixes)| ListFacts { scope: "default".into(), name: l.name.clone(), prefixes })
            .collect(),
        last_load: Some(LoadFacts { at: 0.0, ok: true, duration_seconds: 0.1 }),
        sources: vec!["/etc/hostname".into()],
        ..Default::default()
    };

    let rounds = knob("BLOCKER_BENCH_ROUNDS", 30).max(1);
    let (mut scrapes, mut stats) = (Vec::new(), Vec::new());
    let mut text_bytes = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let text = Scrape::read(facts.clone()).encode();
        scrapes.push(started.elapsed());
        text_bytes = text.len();
        assert!(text.contains("blocker_list_packets_total{interface=\"bm3\",list=\"list-299\",action=\"drop\"} 0"));
        let started = Instant::now();
        for i in &ifaces {
            let c = read_pinned_counters(&root, i).unwrap();
            assert_eq!(c.lists.len(), LISTS);
        }
        stats.push(started.elapsed());
    }
    let (scrape, baseline) = (median(scrapes), median(stats));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("metrics: one scrape of {INTERFACES} interfaces x {LISTS} lists (median of {rounds} alternating rounds)");
    println!("  scrape (facts, counters, links, OpenMetrics text): {:.2} ms; the budget is 50 ms", ms(scrape));
    println!("  baseline, the same counters read as `blocker stats` does: {:.2} ms", ms(baseline));
    println!("  scrape / baseline: {:.2}x; exposition {} KiB", ms(scrape) / ms(baseline), text_bytes / 1024);
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&out);
    let json = serde_json::json!({
        "interfaces": INTERFACES, "lists": LISTS, "rounds": rounds,
        "scrape_ms": ms(scrape), "stats_baseline_ms": ms(baseline),
        "ratio": ms(scrape) / ms(baseline), "exposition_bytes": text_bytes,
    });
    let _ = std::fs::write(out.join("metrics.json"), json.to_string());

    for i in &ifaces {
        link::detach(&root, i).unwrap();
    }
    drop(loaded);
    let _ = std::fs::remove_dir_all(&root);
}

/// The bench's network namespace, deleted however the bench ends.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).output();
    }
}

//! A fleet of 1,000 hosts against a real three-member etcd 3.4 on loopback:
//! each host is the real client code of `blocker run --fleet-etcd` (its
//! follower, which watches its group's pointer, fetches, verifies and unpacks
//! each bundle; and its reporter, which keeps its state under a lease), with
//! a stand-in for the daemon that takes each bundle at once (no XDP: the
//! reload itself is measured by the other benches). Reports, for publishes
//! of a small bundle (a list of 100 prefixes: a policy of countries and a
//! few lists) and of a large one (a list of 20,000 prefixes, new each time):
//! - propagation: from the group's pointer written to each host holding the
//!   verified bundle, p50 / p99 / max over the 1,000 hosts;
//! - the time until every host's state in etcd reports the new revision;
//! - etcd's CPU (all three members) while idle with 1,000 hosts, and during
//!   a publish, and its memory (RSS).
//!
//! Needs no XDP; `cargo xtask bench fleet` runs it and writes
//! target/bench/fleet.json. BLOCKER_BENCH_FLEET_HOSTS changes the count.
#![allow(unused_crate_dependencies)]

use std::{
    fmt::Write as _,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use blocker::fleet::{
    bundle::Bundle,
    etcd::Etcd,
    host::{FleetOptions, Follower, Host, Reporter, Unpacked, BUNDLE_TIMEOUT, REQUEST_TIMEOUT, WATCH_ROUND},
    sign,
    store::{FleetStore, HostState, Pointer},
};
use blocker_tests::etcd::Cluster;

const FLEET: &str = "bench";
const GROUP: &str = "default";
const PUBLISHES: u64 = 3;

/// When each host was offered each revision.
type Offers = Arc<Mutex<Vec<Vec<(u64, Instant)>>>>;

struct BenchHost {
    index: usize,
    offers: Offers,
}

impl Host for BenchHost {
    fn synced(&mut self, _: Result<(), String>) {}

    fn offer(&mut self, bundle: Unpacked) -> Result<(), String> {
        self.offers.lock().unwrap()[self.index].push((bundle.revision, Instant::now()));
        Ok(())
    }

    fn refused(&mut self, reason: Option<&str>) {
        if let Some(r) = reason {
            eprintln!("host {}: refused: {r}", self.index);
        }
    }
}

/// User and system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a constant.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn etcd_cpu(cluster: &Cluster) -> f64 {
    cluster.pids().into_iter().map(cpu_seconds).sum()
}

fn etcd_rss_mib(cluster: &Cluster) -> f64 {
    cluster.pids().into_iter().map(|p| blocker_tests::proc_status_kib(p, "VmRSS:") as f64 / 1024.0).sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Raises the open-file limit to its hard limit: a thousand hosts hold
/// thousands of connections, and etcd (our child) inherits the limit.
fn raise_file_limit() {
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

fn publish(etcd: &Etcd, config: &Path, key: &sign::SecretKey) -> (u64, Instant, usize) {
    let store = FleetStore::new(etcd, FLEET).unwrap();
    let mut bundle = Bundle::build(config, FLEET, 0).unwrap();
    let revision = store.reserve_revision().unwrap();
    bundle.manifest.revision = revision;
    store.store_bundle(&bundle, &bundle.sign(key)).unwrap();
    store.point(GROUP, &Pointer { revision, rollback: None, published: revision }).unwrap();
    let bytes = bundle.files.iter().map(Vec::len).sum();
    (revision, Instant::now(), bytes)
}

fn main() {
    let hosts: usize = std::env::var("BLOCKER_BENCH_FLEET_HOSTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    raise_file_limit();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The hosts' state (each writes and syncs its bundles) in memory: here a
    // thousand hosts share one disk, where each real one has its own.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    std::fs::create_dir(dir.join("etcd")).unwrap();
    let cluster = Cluster::start(&dir.join("etcd")).unwrap();
    let endpoints: Vec<String> = cluster.endpoints().split(',').map(String::from).collect();
    let (secret, public) = sign::generate().unwrap();
    // A policy with a list of its own, written anew before each publish.
    let mut rng = blocker_tests::Rng(0xf1ee_7000_0000_0001);
    let config = dir.join("policy.toml");
    std::fs::write(&config, format!("[policy]\ndeny = [\"{}\"]\n", dir.join("list.txt").display())).unwrap();
    let mut write_list = |prefixes: usize| {
        let list: String = (0..prefixes)
            .map(|_| format!("{}/24\n", std::net::Ipv4Addr::from((rng.next_u64() as u32 & 0x3fff_ff00) | 0x4000_0000)))
            .collect();
        std::fs::write(dir.join("list.txt"), list).unwrap();
    };
    write_list(100);
    let publisher = Etcd::new(&endpoints, Duration::from_secs(10), Duration::from_secs(10)).unwrap();
    let (first, _, _) = publish(&publisher, &config, &secret);
    let alone_rss = etcd_rss_mib(&cluster);

    // The hosts: each its own clients (connections), state directory, lease.
    let offers: Offers = Arc::new(Mutex::new(vec![Vec::new(); hosts]));
    let started = Instant::now();
    for i in 0..hosts {
        let opts = FleetOptions {
            endpoints: endpoints.clone(),
            fleet: FLEET.into(),
            public_key_path: dir.join("fleet.pub"),
            public_key: public.clone(),
            group: GROUP.into(),
            host: format!("host-{i:05}"),
            wait: false,
            tls: Default::default(),
        };
        let state =
            HostState { host: opts.host.clone(), group: GROUP.into(), revision: None, applied_at: None, error: None };
        let reporter =
            Reporter::spawn(&opts, opts.etcd(REQUEST_TIMEOUT, REQUEST_TIMEOUT).unwrap(), state.clone()).unwrap();
        let follower = Follower {
            opts: opts.clone(),
            state_dir: shm.path().join(i.to_string()),
            cache_dir: dir.join("cache"),
            state,
            seen: 0,
            reporter,
        };
        let etcd = opts.etcd(BUNDLE_TIMEOUT, WATCH_ROUND).unwrap();
        let mut host = BenchHost { index: i, offers: offers.clone() };
        std::thread::Builder::new().stack_size(256 << 10).spawn(move || follower.run(&etcd, &mut host)).unwrap();
    }
    let store = FleetStore::new(&publisher, FLEET).unwrap();
    let all_report = |revision: u64| {
        store
            .hosts()
            .is_ok_and(|h| h.len() == hosts && h.iter().all(|(s, alive)| s.revision == Some(revision) && *alive))
    };
    while !all_report(first) {
        assert!(started.elapsed() < Duration::from_secs(300), "the hosts did not all start");
        std::thread::sleep(Duration::from_millis(200));
    }
    let joined = started.elapsed();

    // Idle: watches, their rounds and the leases' keep-alives.
    let idle_for = Duration::from_secs(40);
    let (cpu0, t0) = (etcd_cpu(&cluster), Instant::now());
    std::thread::sleep(idle_for);
    let idle_cpu = (etcd_cpu(&cluster) - cpu0) / t0.elapsed().as_secs_f64();
    let idle_rss = etcd_rss_mib(&cluster);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "fleet: {hosts} hosts (the real follower and reporter) against a three-member etcd 3.4 on loopback"
    );
    let _ = writeln!(out, "  all {hosts} joined and reported revision {first}: {:.1} s", joined.as_secs_f64());
    let _ = writeln!(
        out,
        "  etcd idle with {hosts} hosts: {:.0} % of one core (three members), {idle_rss:.0} MiB RSS \
         ({alone_rss:.0} MiB before the hosts joined)",
        idle_cpu * 100.0
    );
    let mut rounds = Vec::new();
    for (size, prefixes) in [("small", 100), ("large", 20_000)] {
        for _ in 0..PUBLISHES {
            std::thread::sleep(Duration::from_secs(2));
            write_list(prefixes);
            let (cpu0, hosts_cpu0) = (etcd_cpu(&cluster), cpu_seconds(std::process::id()));
            let (revision, at, bundle_bytes) = publish(&publisher, &config, &secret);
            let seen = |offers: &Offers| {
                offers.lock().unwrap().iter().filter(|o| o.iter().any(|(r, _)| *r == revision)).count()
            };
            while seen(&offers) < hosts {
                assert!(
                    at.elapsed() < Duration::from_secs(120),
                    "{} of {hosts} hosts got revision {revision}",
                    seen(&offers)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut took: Vec<Duration> = offers
                .lock()
                .unwrap()
                .iter()
                .map(|o| o.iter().find(|(r, _)| *r == revision).map(|(_, t)| t.saturating_duration_since(at)).unwrap())
                .collect();
            took.sort();
            while !all_report(revision) {
                assert!(at.elapsed() < Duration::from_secs(120), "not every host reported revision {revision}");
                std::thread::sleep(Duration::from_millis(50));
            }
            let reported = at.elapsed();
            let busy = at.elapsed().as_secs_f64();
            let cpu = etcd_cpu(&cluster) - cpu0;
            // The hosts' own work (fetch, decode, verify, unpack): all on this
            // machine's two cores here, one host's share on each host there.
            let hosts_cpu = cpu_seconds(std::process::id()) - hosts_cpu0;
            let (p50, p99, max) = (percentile(&took, 0.5), percentile(&took, 0.99), *took.last().unwrap());
            let _ = writeln!(
            out,
            "  publish of revision {revision} ({size}, {:.0} KB): propagation p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; every host \
             reported it after {:.2} s; etcd used {:.2} CPU-seconds ({:.0} % of one core over those {busy:.1} s), \
             {:.0} MiB RSS; the hosts {hosts_cpu:.2} CPU-seconds ({:.1} ms each)",
            bundle_bytes as f64 / 1e3,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            reported.as_secs_f64(),
            cpu,
            cpu / busy * 100.0,
            etcd_rss_mib(&cluster),
            hosts_cpu * 1e3 / hosts as f64
        );
            rounds.push(serde_json::json!({
            "bundle": size, "bundle_bytes": bundle_bytes, "revision": revision, "p50_ms": p50.as_secs_f64() * 1e3, "p99_ms": p99.as_secs_f64() * 1e3,
            "max_ms": max.as_secs_f64() * 1e3, "all_reported_s": reported.as_secs_f64(), "etcd_cpu_s": cpu, "hosts_cpu_s": hosts_cpu,
        }));
        }
    }
    let peak =
        cluster.pids().into_iter().map(|p| blocker_tests::proc_status_kib(p, "VmHWM:") as f64 / 1024.0).sum::<f64>();
    let _ = writeln!(out, "  etcd peak RSS (three members): {peak:.0} MiB");
    print!("{out}");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&target).unwrap();
    let json = serde_json::json!({
        "hosts": hosts, "joined_s": joined.as_secs_f64(),
        "idle_etcd_cpu_cores": idle_cpu, "idle_etcd_rss_mib": idle_rss, "etcd_rss_before_mib": alone_rss, "etcd_peak_rss_mib": peak,
        "publishes": rounds,
    });
    std::fs::write(target.join("fleet.json"), serde_json::to_string_pretty(&json).unwrap()).unwrap();
    // The hosts' threads end with the process; the cluster is stopped first.
    drop(cluster);
    std::process::exit(0);
}

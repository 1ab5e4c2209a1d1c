//! The control plane of bans, end to end through the CLI and the daemon's
//! socket, with a large table loaded: issue #9's threat list (2,000,000 IPv4
//! hosts, 1,000,000 IPv6 hosts, 1,000,000 IPv6 /64s) with every country of
//! the bundled data denied. Needs root. `cargo xtask bench` runs it; it prints
//! a table and writes JSON to target/bench/bans.json.
//!
//! - one `blocker ban ADDR --for 1h` after another, 1,000 times: the time from
//!   the command's start to its return, when every interface enforces the
//!   ban; p50, p99 and the most, against `blocker unban` of an address that
//!   is not banned (the same command line, socket and state, with nothing to
//!   write: the floor of a ban) in the same run;
//! - 100,000 bans in one `blocker ban --from FILE`, against a `blocker reload`
//!   of the same table (what a ban would cost if it were a list);
//! - the ban enforced: a ping from a banned source in the test namespaces.
#![allow(unused_crate_dependencies)]

use std::{fmt::Write as _, process::Command, time::Instant};

use blocker::{dataplane::object, source::region::db::RegionDb};
use blocker_tests::{
    daemon::{blocker_bin, Daemon, PinRoot},
    netns::NetnsPair,
    tables, unique_tag, Rng,
};

const SEQUENTIAL: usize = 1000;
const BULK: usize = 100_000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    object::check_privileges().expect("the bans bench needs root");
    let started = Instant::now();
    let net = NetnsPair::new().unwrap();
    let root = PinRoot::new(&unique_tag());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let list = dir.join("threats.txt");
    std::fs::write(
        &list,
        tables::list_text(
            &tables::random_v4_hosts(&mut rng, 2_000_000),
            &tables::random_v6_hosts(&mut rng, 1_000_000),
            &tables::random_v6_nets64(&mut rng, 1_000_000),
        ),
    )
    .unwrap();
    let countries: Vec<String> = RegionDb::bundled().unwrap().regions.keys().cloned().collect();
    let sock = dir.join("blocker.sock").display().to_string();
    let deny = format!("threats={}", list.display());
    let countries = countries.join(",");
    let args = [
        "--pin-root",
        root.as_str(),
        "--socket",
        &sock,
        "run",
        "--iface",
        &net.rx_if,
        "--xdp-mode",
        "native",
        "--no-watch",
        "--deny",
        &deny,
        "--deny-country",
        &countries,
        "--state-dir",
        &dir.join("state").display().to_string(),
    ];
    let t = Instant::now();
    let _daemon = Daemon::start(&net.rx_ns, &args, &dir.join("daemon.log")).expect("daemon starts");
    eprintln!("daemon ready with the table in {:.1} s", t.elapsed().as_secs_f64());
    let cli = |args: &[&str]| -> f64 {
        let t = Instant::now();
        let out = Command::new(blocker_bin()).arg("--socket").arg(&sock).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        t.elapsed().as_secs_f64() * 1000.0
    };
    // Taking turns, so that the VM's drifting rate affects both alike.
    let (mut bans, mut status) = (Vec::new(), Vec::new());
    for i in 0..SEQUENTIAL {
        let target = format!("100.64.{}.{}", i >> 8, i & 255);
        bans.push(cli(&["ban", &target, "--for", "1h", "--origin", "bench"]));
        status.push(cli(&["unban", "192.0.2.250"]));
    }
    bans.sort_by(f64::total_cmp);
    status.sort_by(f64::total_cmp);
    // The ban is enforced when the command returns.
    cli(&["ban", "198.51.100.2", "--for", "1h"]);
    assert_eq!(net.ping_from("198.51.100.2", 1).unwrap(), 0, "a ban is enforced when `blocker ban` returns");

    let bulk = dir.join("bulk.txt");
    let mut text = String::new();
    for i in 0..BULK as u32 {
        let a = 0x6440_0000u32 + 0x1_0000 + i;
        let _ = writeln!(text, "{}", std::net::Ipv4Addr::from(a));
    }
    std::fs::write(&bulk, text).unwrap();
    let bulk_ms = cli(&["ban", "--from", &bulk.display().to_string(), "--for", "1h", "--origin", "bulk"]);
    let reload_ms = cli(&["reload"]);

    let mut out = String::new();
    let _ = writeln!(out, "bans with the threat list (4M) and the world denied loaded, through the CLI and the socket");
    let _ = writeln!(
        out,
        "{SEQUENTIAL} sequential `blocker ban`: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; `blocker unban` of nothing p50 \
         {:.2} ms (ban/unban p50 {:.2}x, p99 {:.2}x)",
        percentile(&bans, 0.5),
        percentile(&bans, 0.99),
        bans[bans.len() - 1],
        percentile(&status, 0.5),
        percentile(&bans, 0.5) / percentile(&status, 0.5),
        percentile(&bans, 0.99) / percentile(&status, 0.99),
    );
    let _ = writeln!(
        out,
        "{BULK} bans in one `blocker ban --from`: {:.0} ms; a reload of the same table: {:.0} ms (reload/bans {:.1}x)",
        bulk_ms,
        reload_ms,
        reload_ms / bulk_ms
    );
    let _ = writeln!(out, "({:.1} s)", started.elapsed().as_secs_f64());
    print!("{out}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let json = serde_json::json!({
        "sequential": SEQUENTIAL, "ban_p50_ms": percentile(&bans, 0.5), "ban_p99_ms": percentile(&bans, 0.99),
        "ban_max_ms": bans[bans.len() - 1], "floor_p50_ms": percentile(&status, 0.5),
        "floor_p99_ms": percentile(&status, 0.99), "bulk": BULK, "bulk_ms": bulk_ms, "reload_ms": reload_ms,
    });
    std::fs::write(dir.join("bans.json"), serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("wrote {}", dir.join("bans.json").display());
}

//! The CrowdSec feed's full pull of a million decisions: the answer a LAPI
//! would send (`GET /v1/decisions/stream?startup=true`, 800,000 IPv4 and
//! 200,000 IPv6 addresses), served as a file by a plain HTTP server (Python's
//! http.server) in the test namespace, pulled by the daemon. Reports the time
//! from the daemon's start to every decision enforced, and the daemon's
//! memory: the peak while it parsed (VmHWM) and what it holds after. Needs
//! root; `cargo xtask bench crowdsec` runs it and writes
//! target/bench/crowdsec.json. The side by side with crowdsec-firewall-bouncer
//! on a real LAPI is in the end-to-end bench (`BLOCKER_BENCH_PARTS=crowdsec`).
#![allow(unused_crate_dependencies)]

use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use blocker::dataplane::object;
use blocker_tests::{
    daemon::{blocker_bin, Daemon, PinRoot},
    netns::NetnsPair,
    unique_tag, Rng,
};

const V4: usize = 800_000;
const V6: usize = 200_000;

fn main() {
    object::check_privileges().expect("the crowdsec bench needs root");
    let net = NetnsPair::new().unwrap();
    let root = PinRoot::new(&unique_tag());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The answer, as the LAPI writes it.
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("v1/decisions")).unwrap();
    let mut rng = Rng(0x00c5_d3c1_5100_0001);
    let mut body = String::with_capacity(150 * (V4 + V6));
    body.push_str("{\"deleted\":null,\"new\":[");
    for i in 0..V4 + V6 {
        let value = if i < V4 {
            std::net::Ipv4Addr::from(0x0b00_0000 + (i as u32) * 7 + (rng.below(7) as u32)).to_string()
        } else {
            std::net::Ipv6Addr::from((0x2a00u128 << 112) | ((i as u128) << 64) | rng.below(1 << 60)).to_string()
        };
        let _ = write!(
            body,
            "{}{{\"duration\":\"3h59m{}.{}s\",\"id\":{},\"origin\":\"CAPI\",\"scenario\":\"crowdsecurity/ssh-bf\",\"scope\":\"Ip\",\"type\":\"ban\",\"value\":\"{value}\"}}",
            if i == 0 { "" } else { "," },
            i % 60,
            i % 1000,
            i + 1
        );
    }
    body.push_str("]}");
    let bytes = body.len();
    std::fs::write(www.join("v1/decisions/stream"), body).unwrap();
    let mut server = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.rx_ns))
        .args(["python3", "-m", "http.server", "8080", "--bind", "127.0.0.1", "--directory"])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let key = dir.join("key");
    std::fs::write(&key, "bench").unwrap();
    let sock = dir.join("blocker.sock").display().to_string();
    let started = Instant::now();
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
        "--state-dir",
        &dir.join("state").display().to_string(),
        "--crowdsec-lapi-url",
        "http://127.0.0.1:8080/",
        "--crowdsec-api-key-file",
        key.to_str().unwrap(),
        "--crowdsec-full-pull-every",
        "0",
    ];
    let daemon = Daemon::start(&net.rx_ns, &args, &dir.join("daemon.log")).unwrap();
    let pid = daemon.pid().unwrap();
    let rss_idle = blocker_tests::proc_status_kib(pid, "VmRSS:");
    let count = || -> usize {
        let out = Command::new(blocker_bin()).args(["--socket", &sock, "status", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["bans"]["crowdsec:CAPI"].as_u64().unwrap_or(0) as usize
    };
    while count() < V4 + V6 {
        assert!(started.elapsed() < Duration::from_secs(600), "{} of {}: {}", count(), V4 + V6, daemon.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let enforced = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let (peak, held) = (blocker_tests::proc_status_kib(pid, "VmHWM:"), blocker_tests::proc_status_kib(pid, "VmRSS:"));
    let _ = server.kill();
    let _ = server.wait();
    let n = V4 + V6;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "CrowdSec feed: one full pull of {n} decisions ({V4} IPv4, {V6} IPv6; {:.0} MB of JSON)",
        bytes as f64 / 1e6
    );
    let _ = writeln!(out, "  daemon start to every decision enforced: {:.1} s", enforced.as_secs_f64());
    let _ = writeln!(
        out,
        "  daemon RSS: {:.0} MiB idle, {:.0} MiB holding them ({:.0} bytes per decision), {:.0} MiB at the peak",
        rss_idle as f64 / 1024.0,
        held as f64 / 1024.0,
        (held - rss_idle) as f64 * 1024.0 / n as f64,
        peak as f64 / 1024.0
    );
    print!("{out}");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&target).unwrap();
    let json = serde_json::json!({
        "decisions": n, "answer_bytes": bytes, "enforced_seconds": enforced.as_secs_f64(),
        "rss_idle_kib": rss_idle, "rss_held_kib": held, "rss_peak_kib": peak,
    });
    std::fs::write(target.join("crowdsec.json"), serde_json::to_string_pretty(&json).unwrap()).unwrap();
    drop(daemon);
}

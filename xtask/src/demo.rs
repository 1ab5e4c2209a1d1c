//! The main job on the bundled default: two throw-away namespaces joined by a veth
//! pair, blocker on one end with lists/default-*.txt, traffic from an allowed and
//! from a denied source on the other, then `blocker stats`. Everything it creates
//! is removed at the end, and no packet leaves the two namespaces.

use std::path::Path;

use anyhow::{ensure, Result};
use blocker_tests::{
    daemon::{blocker_in, Daemon, PinRoot},
    netns::NetnsPair,
    unique_tag,
};

const PINGS: u32 = 5;

pub(crate) fn run(root: &Path) -> Result<()> {
    let deny = root.join("lists/default-deny.txt");
    let allow = root.join("lists/default-allow.txt");
    let net = NetnsPair::new()?;
    let pins = PinRoot::new(&format!("demo-{}", unique_tag()));
    let log = std::env::temp_dir().join(format!("blocker-demo-{}.log", std::process::id()));
    let sock = std::env::temp_dir().join(format!("blocker-demo-{}.sock", std::process::id()));
    let sock = sock.to_str().expect("utf-8 temp dir");
    println!("== namespaces {} (blocker on {}) and {} (sender on {})", net.rx_ns, net.rx_if, net.tx_ns, net.tx_if);
    let deny_arg = format!("default-deny={}", deny.display());
    let allow_arg = format!("default-allow={}", allow.display());
    let daemon = Daemon::start(
        &net.rx_ns,
        &[
            "--pin-root",
            pins.as_str(),
            "--socket",
            sock,
            "run",
            "--iface",
            &net.rx_if,
            "--deny",
            &deny_arg,
            "--allow",
            &allow_arg,
        ],
        &log,
    )?;
    print!("{}", daemon.log_text());

    let mut failures = Vec::new();
    for (src, expect_delivered, why) in [
        ("198.51.100.2", true, "in no list"),
        ("203.0.113.200", true, "allow exception inside the denied range"),
        ("203.0.113.2", false, "denied"),
        ("2001:db8:a::2", true, "in no list"),
        ("2001:db8:b::2", false, "denied"),
    ] {
        let received = net.ping_from(src, PINGS)?;
        println!("== ping from {src:<16} ({why}): {received}/{PINGS} replies");
        if (received == PINGS) != expect_delivered {
            failures.push(src);
        }
    }

    println!("== blocker stats --iface {}", net.rx_if);
    let out = blocker_in(&net.rx_ns, &["--pin-root", pins.as_str(), "stats", "--iface", &net.rx_if])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));

    let stopped = daemon.stop_with(libc::SIGTERM)?;
    print!("{}", stopped.lines().last().map(|l| format!("{l}\n")).unwrap_or_default());
    let out = blocker_in(&net.rx_ns, &["--pin-root", pins.as_str(), "detach", "--iface", &net.rx_if])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let _ = std::fs::remove_file(&log);
    println!("== cleaned up: namespaces, veth pair and pins removed");
    ensure!(failures.is_empty(), "unexpected verdicts for {failures:?}");
    Ok(())
}

//! The main job on the bundled default: two throw-away namespaces joined by a veth
//! pair, blocker on one end refusing two countries from the country data compiled
//! into it (and the bundled lists/default-*.txt), traffic on the other end from
//! sources in those countries, in an allowed one and in documentation ranges,
//! then `blocker lookup` and `blocker stats`. The sources' addresses are
//! assigned inside the sender's namespace and routed back over the veth: every
//! packet stays between the two namespaces, which are removed at the end.

use std::{net::IpAddr, path::Path};

use anyhow::{bail, ensure, Context as _, Result};
use blocker_tests::{
    daemon::{blocker_bin, blocker_in, Daemon, PinRoot},
    netns::NetnsPair,
    unique_tag,
};

const PINGS: u32 = 3;
/// The countries the demo refuses.
const REFUSED: &str = "CN,RU";

/// An address inside the first IPv4 (or IPv6) prefix of country `code` in the
/// bundled data, as `blocker regions show` lists it.
fn address_in(code: &str, v6: bool) -> Result<String> {
    let out = std::process::Command::new(blocker_bin()).args(["regions", "show", code]).output()?;
    ensure!(out.status.success(), "blocker regions show {code}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let prefix = text
        .lines()
        .filter_map(|l| l.trim().split_once('/'))
        .find(|(a, _)| a.contains(':') == v6 && a.parse::<IpAddr>().is_ok())
        .with_context(|| format!("no prefix of {code} in the bundled data"))?;
    // The network's second address: a host inside the prefix.
    Ok(match prefix.0.parse::<IpAddr>()? {
        IpAddr::V4(a) => std::net::Ipv4Addr::from(u32::from(a) + 1).to_string(),
        IpAddr::V6(a) => std::net::Ipv6Addr::from(u128::from(a) + 1).to_string(),
    })
}

pub(crate) fn run(root: &Path) -> Result<()> {
    let deny = root.join("lists/default-deny.txt");
    let allow = root.join("lists/default-allow.txt");
    let (cn, ru, cn6, de) =
        (address_in("CN", false)?, address_in("RU", false)?, address_in("CN", true)?, address_in("DE", false)?);
    let net = NetnsPair::new()?;
    for a in [&cn, &ru, &cn6, &de] {
        net.add_source(a)?;
    }
    let pins = PinRoot::new(&format!("demo-{}", unique_tag()));
    let log = std::env::temp_dir().join(format!("blocker-demo-{}.log", std::process::id()));
    let sock = std::env::temp_dir().join(format!("blocker-demo-{}.sock", std::process::id()));
    let sock = sock.to_str().expect("utf-8 temp dir");
    println!("== namespaces {} (blocker on {}) and {} (sender on {})", net.rx_ns, net.rx_if, net.tx_ns, net.tx_if);
    let deny_arg = format!("default-deny={}", deny.display());
    let allow_arg = format!("default-allow={}", allow.display());
    let policy = ["--deny-country", REFUSED, "--deny", &deny_arg, "--allow", &allow_arg];
    println!("== blocker run --iface {} {}", net.rx_if, policy.join(" "));
    let mut args = vec!["--pin-root", pins.as_str(), "--socket", sock, "run", "--iface", &net.rx_if];
    args.extend(policy);
    let daemon = Daemon::start(&net.rx_ns, &args, &log)?;
    print!("{}", daemon.log_text());

    let mut failures = Vec::new();
    for (src, expect_delivered, why) in [
        (cn.as_str(), false, "China: a refused country"),
        (ru.as_str(), false, "Russia: a refused country"),
        (cn6.as_str(), false, "China, IPv6"),
        (de.as_str(), true, "Germany: not refused"),
        ("203.0.113.2", false, "in lists/default-deny.txt"),
        ("203.0.113.200", true, "allow exception inside the denied range"),
        ("198.51.100.2", true, "in no list"),
    ] {
        let received = net.ping_from(src, PINGS)?;
        println!("== ping from {src:<22} ({why}): {received}/{PINGS} replies");
        if (received == PINGS) != expect_delivered {
            failures.push(src.to_owned());
        }
    }

    println!("== blocker lookup {cn} {de} (what would happen to these addresses, and why)");
    let mut lookup = vec!["--pin-root", pins.as_str(), "lookup", &cn, &de];
    lookup.extend(policy);
    let out = blocker_in(&net.rx_ns, &lookup)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));

    println!("== blocker stats --iface {}", net.rx_if);
    let out = blocker_in(&net.rx_ns, &["--pin-root", pins.as_str(), "stats", "--iface", &net.rx_if])?;
    let stats = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stats}");
    if !stats.contains("country:CN") || !stats.contains("country:RU") {
        failures.push("stats without country:CN and country:RU".into());
    }

    let stopped = daemon.stop_with(libc::SIGTERM)?;
    print!("{}", stopped.lines().last().map(|l| format!("{l}\n")).unwrap_or_default());
    let out = blocker_in(&net.rx_ns, &["--pin-root", pins.as_str(), "detach", "--iface", &net.rx_if])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let _ = std::fs::remove_file(&log);
    println!("== cleaned up: namespaces, veth pair and pins removed");
    if !failures.is_empty() {
        bail!("unexpected verdicts for {failures:?}");
    }
    Ok(())
}

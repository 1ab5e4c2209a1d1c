//! Networks by owner end to end: real packets between two namespaces, `blocker
//! run --deny-asn / --allow-asn / --allow-only-asn` on the receiving end, with
//! ASN and country data of the test's own (the test ranges), and the answers
//! of `lookup`, `regions` and `check-config`.
#![allow(unused_crate_dependencies)]

use blocker::control::protocol::{InterfaceStats, StatsReply};
use blocker_tests::{
    daemon::{blocker_cli, blocker_in, Daemon, PinRoot},
    netns::NetnsPair,
    unique_tag,
};

const PINGS: u32 = 3;

// Sender addresses (see blocker_tests::netns): 203.0.113.2 sits in AS64500,
// 203.0.113.200 in AS64501, 198.51.100.2 in AS64502, 2001:db8:b::2 in AS64500,
// 2001:db8:a::2 and 2001:db8:b:1::2 in AS64501. Country XA holds 203.0.113.0/24
// and 2001:db8:b::/48.
const ASNS: &str = "start,end,asn,organisation\n\
    203.0.113.0,203.0.113.127,64500,\"Hosting, Inc.\"\n\
    203.0.113.128,203.0.113.255,64501,\"CDN \"\"Edge\"\" Ltd\"\n\
    198.51.100.0,198.51.100.255,64502,Access ISP\n\
    2001:db8:b::,2001:db8:b:0:ffff:ffff:ffff:ffff,64500,\"Hosting, Inc.\"\n\
    2001:db8:b:1::,2001:db8:b:1:ffff:ffff:ffff:ffff,64501,\"CDN \"\"Edge\"\" Ltd\"\n\
    2001:db8:a::,2001:db8:a:ffff:ffff:ffff:ffff:ffff,64501,\"CDN \"\"Edge\"\" Ltd\"\n";
const REGIONS: &str = "203.0.113.0,203.0.113.255,XA\n2001:db8:b::,2001:db8:b:ffff:ffff:ffff:ffff:ffff,XA\n\
    198.51.100.0,198.51.100.255,XB\n2001:db8:a::,2001:db8:a:ffff:ffff:ffff:ffff:ffff,XB\n";

struct Setup {
    net: NetnsPair,
    root: PinRoot,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("asn.csv"), ASNS).unwrap();
        std::fs::write(dir.path().join("regions.csv"), REGIONS).unwrap();
        Setup { net: NetnsPair::new().expect("netns pair"), root: PinRoot::new(&unique_tag()), dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn data_args(&self) -> Vec<String> {
        [
            "--asn-source",
            &format!("csv:{}", self.file("asn.csv")),
            "--country-source",
            &format!("csv:{}", self.file("regions.csv")),
        ]
        .map(String::from)
        .to_vec()
    }

    fn start(&self, policy: &[&str]) -> Daemon {
        let sock = self.file("blocker.sock");
        let mut args: Vec<String> = [
            "--pin-root",
            self.root.as_str(),
            "--socket",
            &sock,
            "run",
            "--iface",
            &self.net.rx_if,
            "--xdp-mode",
            "native",
        ]
        .map(String::from)
        .to_vec();
        args.extend(self.data_args());
        args.extend(policy.iter().map(|a| a.to_string()));
        Daemon::start(&self.net.rx_ns, &args, &self.dir.path().join("daemon.log")).expect("daemon starts")
    }

    fn cli(&self, args: &[&str]) -> String {
        let sock = self.file("blocker.sock");
        let mut full = vec!["--pin-root", self.root.as_str(), "--socket", &sock];
        full.extend(args);
        let out = blocker_in(&self.net.rx_ns, &full).unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stats(&self) -> InterfaceStats {
        let reply: StatsReply =
            serde_json::from_str(&self.cli(&["stats", "--iface", &self.net.rx_if, "--json"])).unwrap();
        reply.interfaces.into_iter().next().unwrap()
    }

    fn counted(&self, list: &str) -> u64 {
        let s = self.stats();
        s.list(list).unwrap_or_else(|| panic!("no list {list}: {s:?}")).packets
    }

    fn ping(&self, src: &str) -> u32 {
        self.net.ping_from(src, PINGS).unwrap()
    }
}

#[test]
fn a_denied_asn_is_dropped_in_both_families_and_counted_under_its_number() {
    let s = Setup::new();
    let _d = s.start(&["--deny-asn", "AS64500"]);
    assert_eq!(s.ping("203.0.113.2"), 0, "AS64500 over IPv4");
    assert_eq!(s.ping("2001:db8:b::2"), 0, "AS64500 over IPv6");
    assert_eq!(s.ping("203.0.113.200"), PINGS, "AS64501 passes");
    assert_eq!(s.ping("198.51.100.2"), PINGS, "AS64502 passes");
    assert_eq!(s.counted("asn:64500"), 2 * u64::from(PINGS));
    assert!(s.cli(&["stats"]).contains("asn:64500"));

    // lookup: the network and its organisation, and the live verdict.
    let mut args = vec!["lookup", "203.0.113.2", "--iface", &s.net.rx_if, "--deny-asn", "AS64500"];
    let data = s.data_args();
    args.extend(data.iter().map(String::as_str));
    let out = s.cli(&args);
    assert!(out.contains("network: AS64500 (Hosting, Inc.)"), "{out}");
    assert!(out.contains("policy: list asn:64500 -> drop"), "{out}");
    assert!(out.contains("list asn:64500 -> drop (agrees"), "{out}");
    args.push("--json");
    let report: blocker::control::report::LookupReport = serde_json::from_str(&s.cli(&args)).unwrap();
    assert_eq!(report.addresses[0].asns[0].asn, 64500);
    assert_eq!(report.addresses[0].asns[0].org.as_deref(), Some("Hosting, Inc."));
}

#[test]
fn an_allowed_asn_passes_inside_a_denied_country() {
    let s = Setup::new();
    let _d = s.start(&["--deny-country", "XA", "--allow-asn", "AS64501"]);
    assert_eq!(s.ping("203.0.113.2"), 0, "the denied country");
    assert_eq!(s.ping("2001:db8:b::2"), 0);
    assert_eq!(s.ping("203.0.113.200"), PINGS, "AS64501 inside the country passes");
    assert_eq!(s.ping("2001:db8:b:1::2"), PINGS, "and over IPv6");
    assert_eq!(s.counted("country:XA"), 2 * u64::from(PINGS));
    assert_eq!(s.counted("asn:64501"), 2 * u64::from(PINGS));
}

#[test]
fn allowlist_mode_by_asn_drops_every_other_network_and_guards_the_operator() {
    let s = Setup::new();
    // Without a management range the allowlist is refused before anything is attached.
    let mut args = vec!["run", "--iface", "lo", "--allow-only-asn", "AS64502"];
    let data = s.data_args();
    args.extend(data.iter().map(String::as_str));
    let out = blocker_cli(&args).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give them with --never-block"), "{out:?}");

    let _d = s.start(&["--allow-only-asn", "AS64502,AS64501", "--never-block", "192.0.2.0/24"]);
    assert_eq!(s.ping("198.51.100.2"), PINGS, "AS64502 is allowed");
    assert_eq!(s.ping("203.0.113.200"), PINGS, "AS64501 is allowed");
    assert_eq!(s.ping("203.0.113.2"), 0, "AS64500 is outside");
    assert_eq!(s.ping("2001:db8:b::2"), 0, "and over IPv6");
    // Pings, and the sender's neighbour solicitations from its global IPv6 address.
    let outside = s.counted(blocker::policy::OUTSIDE_ALLOWED_ASNS);
    assert!((2 * u64::from(PINGS)..2 * u64::from(PINGS) + 4).contains(&outside), "{outside}");
    assert_eq!(s.counted("asn:64502"), u64::from(PINGS));
}

#[test]
fn regions_answers_and_check_config_name_the_asn_data() {
    let s = Setup::new();
    let asn_source = format!("csv:{}", s.file("asn.csv"));
    let out = blocker_cli(&["regions", "show", "AS64501", "--asn-source", &asn_source]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("AS64501 CDN \"Edge\" Ltd\n"), "{text}");
    assert!(text.contains("203.0.113.128/25\n") && text.contains("2001:db8:a::/48\n"), "{text}");
    let out = blocker_cli(&["regions", "list", "--asn", "--json", "--asn-source", &asn_source]).unwrap();
    let list: blocker::control::report::AsnList = serde_json::from_slice(&out.stdout).unwrap();
    let sizes: Vec<(u32, u64)> = list.systems.iter().map(|a| (a.asn, a.ipv4_addresses)).collect();
    assert_eq!(sizes, [(64500, 128), (64501, 128), (64502, 256)]);
    // The bundled data: Cloudflare's network, and a number nobody has.
    let out = blocker_cli(&["regions", "show", "AS13335", "--json"]).unwrap();
    let detail: blocker::control::report::AsnDetail = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(detail.summary.org.as_deref(), Some("Cloudflare, Inc."));
    assert!(detail.prefixes.iter().any(|p| p == "1.1.1.0/24"), "{:?}", &detail.prefixes[..5]);
    // A malformed AS number is said to be one, not taken for a country.
    let out = blocker_cli(&["regions", "show", "as0"]).unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("AS0 is reserved"));
    let out = blocker_cli(&["regions", "show", "AS4294967295"]).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no prefix in the ASN data"));

    // check-config says which data an ASN policy uses and how old it is.
    let config = s.dir.path().join("blocker.toml");
    std::fs::write(
        &config,
        format!(
            "[[interface]]\nname = \"eth0\"\n[policy]\ndeny_asns = [\"AS64500\"]\nasn_sources = [\"{asn_source}\"]\n\
             [[scope]]\nname = \"api\"\nports = [\"tcp:443\"]\nallow_only_asns = [\"64501\"]\nnever_block = []\n"
        ),
    )
    .unwrap();
    let out = blocker_cli(&["check-config", "--config", config.to_str().unwrap()]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `never_block`"), "a scope has no never_block: {err}");
    std::fs::write(
        &config,
        format!(
            "[[interface]]\nname = \"eth0\"\n[policy]\ndeny_asns = [\"AS64500\"]\nasn_sources = [\"{asn_source}\"]\n\
             never_block = [\"192.0.2.0/24\"]\n[[scope]]\nname = \"api\"\nports = [\"tcp:443\"]\nallow_only_asns = [\"64501\"]\n\
             [outbound]\nreject_asns = [\"AS64502\"]\n"
        ),
    )
    .unwrap();
    let out = blocker_cli(&["check-config", "--config", config.to_str().unwrap()]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("asn data:") && text.contains("asn.csv") && text.contains("modified"), "{text}");
    assert!(text.contains("asn:64500") && text.contains("asn:64501") && text.contains("asn:64502"), "{text}");
    assert!(text.contains(blocker::policy::OUTSIDE_ALLOWED_ASNS), "{text}");
    // Numbers may be TOML integers too.
    std::fs::write(
        &config,
        format!("[[interface]]\nname = \"eth0\"\n[policy]\ndeny_asns = [64500]\nasn_sources = [\"{asn_source}\"]\n"),
    )
    .unwrap();
    let out = blocker_cli(&["check-config", "--config", config.to_str().unwrap()]).unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("asn:64500"), "{out:?}");
    // A bad number names its key.
    std::fs::write(&config, "[[interface]]\nname = \"eth0\"\n[policy]\ndeny_asns = [\"AS64500\", \"Chinanet\"]\n")
        .unwrap();
    let out = blocker_cli(&["check-config", "--config", config.to_str().unwrap()]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("policy.deny_asns[1]: \"Chinanet\": not an AS number"), "{err}");
}

//! Verdict tests of the XDP program through BPF_PROG_TEST_RUN: a fixture table of
//! crafted frames, each row asserting the return code and the counter deltas.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use blocker::{
    compile::table::{build_table, compile},
    dataplane::{
        maps::{Counters, DataplaneMaps, Mode, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    net::parse_prefix,
    policy::{ListSpec, Role},
};
use blocker_common::counter;
use blocker_tests::{
    daemon::PinRoot,
    frames::{arp_request, ethernet, ip_frame, ipv4_packet, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6},
    unique_tag,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

struct Harness {
    maps: DataplaneMaps,
    _root: PinRoot,
}

fn list(name: &str, role: Role, prefixes: &[&str]) -> ListSpec {
    ListSpec { name: name.into(), role, prefixes: prefixes.iter().map(|p| parse_prefix(p).unwrap()).collect() }
}

/// deny 203.0.113.0/24 with an allow hole at .128/25; a monitor list; IPv6 alike.
fn fixture_lists() -> Vec<ListSpec> {
    vec![
        list("deny-a", Role::Deny, &["203.0.113.0/24", "2001:db8:b::/48"]),
        list("allow-a", Role::Exception, &["203.0.113.128/25", "2001:db8:b:1::/64"]),
        list("mon-a", Role::Monitor, &["198.51.100.0/24", "2001:db8:a::/48"]),
    ]
}

impl Harness {
    fn new(lists: &[ListSpec]) -> Harness {
        let root = PinRoot::new(&format!("verdict-{}", unique_tag()));
        pins::ensure_bpffs(&root.0).unwrap();
        let dir = pins::iface_dir(&root.0, "test");
        let mut maps = DataplaneMaps::load(&dir, 0).expect("load XDP program");
        maps.apply(&compile(lists), DEFAULT_TABLE_MEMORY).unwrap();
        Harness { maps, _root: root }
    }

    fn apply(&mut self, lists: &[ListSpec]) -> anyhow::Result<blocker::dataplane::maps::ApplyReport> {
        self.maps.apply(&compile(lists), DEFAULT_TABLE_MEMORY)
    }

    /// Runs the program instance that holds the live table.
    fn run(&mut self, frame: &[u8]) -> u32 {
        let prog = object::program_mut(self.maps.ebpf_mut().unwrap()).unwrap();
        prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() })
            .expect("BPF_PROG_TEST_RUN")
            .return_value
    }

    fn counters(&self) -> Counters {
        self.maps.counters().unwrap()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Row {
    name: &'static str,
    frame: Vec<u8>,
    verdict: u32,
    /// The global counter that must go up by one (and no other).
    global: u32,
    /// The list that must count this frame (packets +1, bytes +frame length).
    list: Option<&'static str>,
}

fn row(name: &'static str, frame: Vec<u8>, verdict: u32, global: u32, list: Option<&'static str>) -> Row {
    Row { name, frame, verdict, global, list }
}

fn truncated(mut f: Vec<u8>, len: usize) -> Vec<u8> {
    f.truncate(len);
    f
}

fn fixture_rows() -> Vec<Row> {
    let q = (ETH_P_8021Q, 100);
    let ad = (ETH_P_8021AD, 200);
    let v4_blocked = ip_frame(ip("203.0.113.5"), &[]);
    let v6_blocked = ip_frame(ip("2001:db8:b::5"), &[]);
    let mut v4_options = ethernet(&[], ETH_P_IPV4);
    v4_options.extend(ipv4_packet("203.0.113.9".parse().unwrap(), "192.0.2.1".parse().unwrap(), 2, &[1; 8]));
    let mut ihl4 = v4_blocked.clone();
    ihl4[14] = 0x44;
    let mut wrong_version = v4_blocked.clone();
    wrong_version[14] = 0x65;
    let mut v6_wrong_version = v6_blocked.clone();
    v6_wrong_version[14] = 0x45;
    vec![
        row("ipv4 denied", v4_blocked.clone(), XDP_DROP, counter::DROPPED, Some("deny-a")),
        row(
            "ipv4 allow exception inside deny",
            ip_frame(ip("203.0.113.200"), &[]),
            XDP_PASS,
            counter::PASSED,
            Some("allow-a"),
        ),
        row("ipv4 monitor list", ip_frame(ip("198.51.100.7"), &[]), XDP_PASS, counter::MONITORED, Some("mon-a")),
        row("ipv4 in no list", ip_frame(ip("192.0.2.9"), &[]), XDP_PASS, counter::PASSED, None),
        row("ipv4 denied with options", v4_options, XDP_DROP, counter::DROPPED, Some("deny-a")),
        row(
            "ipv4 denied, last address",
            ip_frame(ip("203.0.113.127"), &[]),
            XDP_DROP,
            counter::DROPPED,
            Some("deny-a"),
        ),
        row("ipv4 just past the list", ip_frame(ip("203.0.114.0"), &[]), XDP_PASS, counter::PASSED, None),
        row("ipv6 denied", v6_blocked.clone(), XDP_DROP, counter::DROPPED, Some("deny-a")),
        row("ipv6 allow exception", ip_frame(ip("2001:db8:b:1::9"), &[]), XDP_PASS, counter::PASSED, Some("allow-a")),
        row("ipv6 monitor list", ip_frame(ip("2001:db8:a::1"), &[]), XDP_PASS, counter::MONITORED, Some("mon-a")),
        row("ipv6 in no list", ip_frame(ip("2001:db8:c::1"), &[]), XDP_PASS, counter::PASSED, None),
        row("802.1Q ipv4 denied", ip_frame(ip("203.0.113.5"), &[q]), XDP_DROP, counter::DROPPED, Some("deny-a")),
        row("802.1Q ipv6 allowed", ip_frame(ip("2001:db8:b:1::9"), &[q]), XDP_PASS, counter::PASSED, Some("allow-a")),
        row("QinQ ipv4 denied", ip_frame(ip("203.0.113.5"), &[ad, q]), XDP_DROP, counter::DROPPED, Some("deny-a")),
        row("QinQ ipv6 denied", ip_frame(ip("2001:db8:b::1"), &[ad, q]), XDP_DROP, counter::DROPPED, Some("deny-a")),
        row(
            "double 802.1Q ipv4 denied",
            ip_frame(ip("203.0.113.5"), &[q, q]),
            XDP_DROP,
            counter::DROPPED,
            Some("deny-a"),
        ),
        row("three VLAN tags: not parsed", ip_frame(ip("203.0.113.5"), &[ad, q, q]), XDP_PASS, counter::NON_IP, None),
        row("ARP", arp_request(), XDP_PASS, counter::NON_IP, None),
        row("unknown ethertype", ethernet(&[], 0x88cc), XDP_PASS, counter::NON_IP, None),
        row("ethernet only, IPv4 type", ethernet(&[], ETH_P_IPV4), XDP_PASS, counter::MALFORMED, None),
        row("ethernet only, IPv6 type", ethernet(&[], ETH_P_IPV6), XDP_PASS, counter::MALFORMED, None),
        row("VLAN tag truncated", truncated(ip_frame(ip("203.0.113.5"), &[q]), 16), XDP_PASS, counter::MALFORMED, None),
        row(
            "inner VLAN tag truncated",
            truncated(ip_frame(ip("203.0.113.5"), &[ad, q]), 20),
            XDP_PASS,
            counter::MALFORMED,
            None,
        ),
        row(
            "ipv4 header truncated at 19 bytes",
            truncated(v4_blocked.clone(), 14 + 19),
            XDP_PASS,
            counter::MALFORMED,
            None,
        ),
        row("ipv4 truncated inside source", truncated(v4_blocked.clone(), 14 + 14), XDP_PASS, counter::MALFORMED, None),
        row(
            "ipv4 under VLAN truncated",
            truncated(ip_frame(ip("203.0.113.5"), &[q]), 18 + 19),
            XDP_PASS,
            counter::MALFORMED,
            None,
        ),
        row("ipv4 ihl 4", ihl4, XDP_PASS, counter::MALFORMED, None),
        row("ipv4 ethertype, version 6", wrong_version, XDP_PASS, counter::MALFORMED, None),
        row(
            "ipv6 header truncated at 39 bytes",
            truncated(v6_blocked.clone(), 14 + 39),
            XDP_PASS,
            counter::MALFORMED,
            None,
        ),
        row("ipv6 ethertype, version 4", v6_wrong_version, XDP_PASS, counter::MALFORMED, None),
        row("ipv4 header exactly 20 bytes", truncated(v4_blocked, 14 + 20), XDP_DROP, counter::DROPPED, Some("deny-a")),
        row("ipv6 header exactly 40 bytes", truncated(v6_blocked, 14 + 40), XDP_DROP, counter::DROPPED, Some("deny-a")),
    ]
}

fn check_row(h: &mut Harness, r: &Row, expect_verdict: u32, expect_global: u32) {
    let before = h.counters();
    let verdict = h.run(&r.frame);
    let after = h.counters();
    assert_eq!(verdict, expect_verdict, "{}: verdict", r.name);
    for i in 0..counter::COUNT {
        let delta = after.global(i) - before.global(i);
        let want = u64::from(i == expect_global);
        assert_eq!(delta, want, "{}: counter {} went up by {delta}", r.name, counter::NAMES[i as usize]);
    }
    for (b, a) in before.lists.iter().zip(&after.lists) {
        let hit = r.list == Some(a.name.as_str());
        assert_eq!(a.packets - b.packets, u64::from(hit), "{}: packets of list {}", r.name, a.name);
        let bytes = if hit { r.frame.len() as u64 } else { 0 };
        assert_eq!(a.bytes - b.bytes, bytes, "{}: bytes of list {}", r.name, a.name);
    }
}

#[test]
fn fixture_table_enforce_mode() {
    let mut h = Harness::new(&fixture_lists());
    for r in fixture_rows() {
        check_row(&mut h, &r, r.verdict, r.global);
    }
}

#[test]
fn fixture_table_monitor_mode_drops_nothing() {
    let mut h = Harness::new(&fixture_lists());
    h.maps.set_mode(Mode::Monitor).unwrap();
    for r in fixture_rows() {
        // In monitor mode every would-be drop passes and counts as monitored.
        let (verdict, global) =
            if r.verdict == XDP_DROP { (XDP_PASS, counter::MONITORED) } else { (r.verdict, r.global) };
        check_row(&mut h, &r, verdict, global);
    }
    h.maps.set_mode(Mode::Enforce).unwrap();
    assert_eq!(h.run(&ip_frame(ip("203.0.113.5"), &[])), XDP_DROP);
}

#[test]
fn reload_swaps_the_program_and_keeps_list_ids() {
    let mut h = Harness::new(&fixture_lists());
    let blocked_a = ip_frame(ip("203.0.113.5"), &[]);
    let blocked_b = ip_frame(ip("198.51.100.5"), &[]);
    assert_eq!(h.run(&blocked_a), XDP_DROP);
    let program0 = h.counters().program_id;
    let id_of = |c: &Counters, n: &str| c.list(n).map(|l| l.id);
    let id_before = id_of(&h.counters(), "deny-a");

    // Version 2: deny-a now covers 198.51.100.0/24 only; mon-a is gone.
    let v2 = vec![list("deny-a", Role::Deny, &["198.51.100.0/24"])];
    let report = h.apply(&v2).unwrap();
    let c = h.counters();
    assert_ne!(c.program_id, program0, "each table runs in a new program instance");
    assert_eq!(Some(report.program_id), c.program_id);
    assert_eq!(h.run(&blocked_a), XDP_PASS);
    assert_eq!(h.run(&blocked_b), XDP_DROP);
    let c = h.counters();
    assert_eq!(id_of(&c, "deny-a"), id_before, "a list keeps its id (and counters) across reloads");
    assert_eq!(c.list("deny-a").unwrap().packets, 2, "counter continues: one hit before, one after");
    assert!(!c.list("mon-a").unwrap().live, "lists no longer configured are kept as retired");

    // Back to version 1.
    h.apply(&fixture_lists()).unwrap();
    assert_eq!(h.run(&blocked_a), XDP_DROP);
    assert_eq!(h.run(&blocked_b), XDP_PASS);
    assert_eq!(id_of(&h.counters(), "deny-a"), id_before);
}

#[test]
fn table_too_large_is_refused_and_changes_nothing() {
    let mut h = Harness::new(&fixture_lists());
    let program = h.counters().program_id;
    // More lists than the maps have ids for.
    let too_many: Vec<ListSpec> = (0..blocker_common::MAX_LISTS + 1)
        .map(|i| ListSpec { name: format!("l{i}"), role: Role::Deny, prefixes: vec![] })
        .collect();
    let err = h.apply(&too_many).unwrap_err().to_string();
    assert!(err.contains("1025") && err.contains("1024") && err.contains("nothing was changed"), "{err}");
    assert_eq!(h.counters().program_id, program);
    assert_eq!(h.run(&ip_frame(ip("203.0.113.5"), &[])), XDP_DROP);
}

#[test]
fn live_table_answers_like_the_compiled_one() {
    let h = Harness::new(&fixture_lists());
    let table = compile(&fixture_lists());
    for a in [
        "203.0.113.5",
        "203.0.113.200",
        "198.51.100.1",
        "192.0.2.1",
        "2001:db8:b::1",
        "2001:db8:b:1::1",
        "2001:db8:ff::",
    ] {
        let (family, addr) = blocker::net::ip_to_u128(ip(a));
        let live = h.maps.lookup(family, addr).unwrap().map(|(_, action)| action.unwrap());
        let compiled = table.lookup(family, addr).map(|i| table.lists[i].action);
        assert_eq!(live, compiled, "{a}");
    }
}

#[test]
fn disabled_ebpf_logs_are_removed_at_load_time() {
    // With AYA_LOG_LEVEL 0 the verifier sees the log branches as dead and drops them,
    // so the program the kernel runs is smaller than with tracing on.
    let size = |level: u8| {
        let root = PinRoot::new(&format!("logsize-{}", unique_tag()));
        pins::ensure_bpffs(&root.0).unwrap();
        let mut maps = DataplaneMaps::load(&pins::iface_dir(&root.0, "test"), level).unwrap();
        let prog = object::program_mut(maps.ebpf_mut().unwrap()).unwrap();
        prog.info().unwrap().size_translated().unwrap()
    };
    let (off, trace) = (size(0), size(5));
    assert!(off < trace, "translated size with logs off {off} >= with trace {trace}");
}

fn policy_harness(policy: &blocker::policy::Policy) -> Harness {
    let root = PinRoot::new(&format!("verdict-{}", unique_tag()));
    pins::ensure_bpffs(&root.0).unwrap();
    let dir = pins::iface_dir(&root.0, "test");
    let mut maps = DataplaneMaps::load(&dir, 0).expect("load XDP program");
    maps.apply(&build_table(policy).unwrap(), DEFAULT_TABLE_MEMORY).unwrap();
    Harness { maps, _root: root }
}

/// An address inside the first prefix of `code` in the bundled snapshot.
fn address_in(code: &str, v6: bool) -> IpAddr {
    let db = blocker::source::region::db::RegionDb::bundled().unwrap();
    let fam = if v6 { blocker::net::Family::V6 } else { blocker::net::Family::V4 };
    let p = db.regions[code].prefixes.iter().find(|p| p.family == fam).unwrap();
    blocker::net::Prefix { family: fam, addr: p.addr + 1, len: p.family.bits() }.to_ip()
}

#[test]
fn deny_country_drops_and_counts_under_the_country() {
    let policy = blocker::policy::Policy { deny_country: vec!["CN".into(), "RU".into()], ..Default::default() };
    let mut h = policy_harness(&policy);
    for v6 in [false, true] {
        let f = ip_frame(address_in("CN", v6), &[]);
        assert_eq!(h.run(&f), XDP_DROP);
        assert_eq!(h.run(&ip_frame(address_in("RU", v6), &[])), XDP_DROP);
        assert_eq!(h.run(&ip_frame(address_in("DE", v6), &[])), XDP_PASS);
    }
    let c = h.counters();
    assert_eq!(c.list("country:CN").unwrap().packets, 2);
    assert_eq!(c.list("country:RU").unwrap().packets, 2);
    assert_eq!(c.global(counter::DROPPED), 4);
}

#[test]
fn allowlist_mode_drops_everything_outside_the_allowed_countries() {
    let dir = std::env::temp_dir().join(format!("blocker-allowlist-{}", unique_tag()));
    std::fs::create_dir_all(&dir).unwrap();
    // An explicit exception for one address outside the allowed countries.
    let exception = address_in("BR", false);
    std::fs::write(dir.join("exc.txt"), format!("{exception}\n")).unwrap();
    let policy = blocker::policy::Policy {
        allow_country: vec!["DE".into(), "US".into()],
        never_block: vec!["198.51.100.0/24".into()],
        allow: vec![format!("exc={}", dir.join("exc.txt").display()).parse().unwrap()],
        ..Default::default()
    };
    let mut h = policy_harness(&policy);
    for v6 in [false, true] {
        assert_eq!(h.run(&ip_frame(address_in("DE", v6), &[])), XDP_PASS);
        assert_eq!(h.run(&ip_frame(address_in("US", v6), &[])), XDP_PASS);
        assert_eq!(h.run(&ip_frame(address_in("CN", v6), &[])), XDP_DROP);
    }
    assert_eq!(h.run(&ip_frame(ip("192.0.2.1"), &[])), XDP_DROP, "unallocated space is outside too");
    assert_eq!(h.run(&ip_frame(exception, &[])), XDP_PASS, "explicit exceptions still pass");
    assert_eq!(h.run(&ip_frame(ip("198.51.100.7"), &[])), XDP_PASS, "the management range is never blocked");
    assert_eq!(h.run(&ip_frame(ip("fe80::1"), &[])), XDP_PASS, "link-local is never blocked");
    let c = h.counters();
    assert_eq!(c.list(blocker::policy::OUTSIDE_ALLOWED).unwrap().packets, 3);
    assert_eq!(c.list("country:DE").unwrap().packets, 2);
    assert_eq!(c.list("exc").unwrap().packets, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn table_over_the_memory_budget_is_refused_with_numbers() {
    let mut h = Harness::new(&fixture_lists());
    let program = h.counters().program_id;
    // 100,000 IPv4 hosts spread over the space: about 0.8 MiB of ranges.
    let prefixes = (0..100_000u128)
        .map(|i| blocker::net::Prefix { family: blocker::net::Family::V4, addr: (i * 42_947) | 1, len: 32 })
        .collect();
    let big = compile(&[ListSpec { name: "big".into(), role: Role::Deny, prefixes }]);
    let err = h.maps.apply(&big, 1 << 20).unwrap_err().to_string();
    assert!(
        err.contains("100000 IPv4 + 0 IPv6 ranges")
            && err.contains("over the table memory budget of 1.0 MiB")
            && err.contains("--table-memory")
            && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(h.counters().program_id, program);
    assert_eq!(h.run(&ip_frame(ip("203.0.113.5"), &[])), XDP_DROP, "the running table still answers");
    // The same table within a large enough budget loads.
    h.maps.apply(&big, 16 << 20).unwrap();
    assert_eq!(h.run(&ip_frame(ip("0.0.167.195"), &[])), XDP_DROP);
}

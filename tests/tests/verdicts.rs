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
        maps::{Counters, DataplaneMaps, MapsError, Mode, TableError, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    net::parse_prefix,
    policy::{ListSpec, Role},
};
use blocker_common::counter;
use blocker_tests::{
    daemon::PinRoot,
    frames::{ip_frame, Frame, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6},
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

    fn apply(&mut self, lists: &[ListSpec]) -> Result<blocker::dataplane::maps::ApplyReport, MapsError> {
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

/// The XDP verdict a row expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
}

impl Verdict {
    const fn code(self) -> u32 {
        match self {
            Verdict::Pass => XDP_PASS,
            Verdict::Drop => XDP_DROP,
        }
    }
}

use Verdict::{Drop, Pass};

/// One fixture: a frame, the verdict, the global counter that goes up by one (and
/// no other), and the list that counts the frame (packets +1, bytes +its length).
struct Row {
    name: &'static str,
    frame: Frame,
    expect: Verdict,
    counter: u32,
    list: Option<&'static str>,
}

const Q: u16 = ETH_P_8021Q;
const AD: u16 = ETH_P_8021AD;

/// Against `fixture_lists`: deny 203.0.113.0/24 with an allow hole at .128/25, a
/// monitor list, IPv6 alike.
fn fixture_rows() -> Vec<Row> {
    use counter::{DROPPED, MALFORMED, MONITORED, NON_IP, PASSED};
    let eth = Frame::eth;
    let (denied4, denied6) = ("203.0.113.5", "2001:db8:b::5");
    // Ethernet (14) + the IPv4 header's 20 fixed bytes; + the IPv6 header's 40.
    let (v4_end, v6_end) = (14 + 20, 14 + 40);
    #[rustfmt::skip]
    let rows = vec![
        Row { name: "ipv4 denied", frame: eth().ipv4(denied4), expect: Drop, counter: DROPPED, list: Some("deny-a") },
        Row { name: "ipv4 allow exception inside deny", frame: eth().ipv4("203.0.113.200"), expect: Pass, counter: PASSED, list: Some("allow-a") },
        Row { name: "ipv4 monitor list", frame: eth().ipv4("198.51.100.7"), expect: Pass, counter: MONITORED, list: Some("mon-a") },
        Row { name: "ipv4 in no list", frame: eth().ipv4("192.0.2.9"), expect: Pass, counter: PASSED, list: None },
        Row { name: "ipv4 denied with options", frame: eth().ipv4("203.0.113.9").options(2), expect: Drop, counter: DROPPED, list: Some("deny-a") },
        Row { name: "ipv4 denied, last address", frame: eth().ipv4("203.0.113.127"), expect: Drop, counter: DROPPED, list: Some("deny-a") },
        Row { name: "ipv4 just past the list", frame: eth().ipv4("203.0.114.0"), expect: Pass, counter: PASSED, list: None },
        Row { name: "ipv6 denied", frame: eth().ipv6(denied6), expect: Drop, counter: DROPPED, list: Some("deny-a") },
        Row { name: "ipv6 allow exception", frame: eth().ipv6("2001:db8:b:1::9"), expect: Pass, counter: PASSED, list: Some("allow-a") },
        Row { name: "ipv6 monitor list", frame: eth().ipv6("2001:db8:a::1"), expect: Pass, counter: MONITORED, list: Some("mon-a") },
        Row { name: "ipv6 in no list", frame: eth().ipv6("2001:db8:c::1"), expect: Pass, counter: PASSED, list: None },
        Row { name: "802.1Q ipv4 denied", frame: eth().vlan(Q, 100).ipv4(denied4), expect: Drop, counter: DROPPED, list: Some("deny-a") },
        Row { name: "802.1Q ipv6 allowed", frame: eth().vlan(Q, 100).ipv6("2001:db8:b:1::9"), expect: Pass, counter: PASSED, list: Some("allow-a") },
        Row { name: "QinQ ipv4 denied", frame: eth().vlan(AD, 200).vlan(Q, 100).ipv4(denied4), expect: Drop, counter: DROPPED, list: Some("deny-a") },
        Row { name: "QinQ ipv6 denied", frame: eth().vlan(AD, 200).vlan(Q, 100).ipv6("2001:db8:b::1"), expect: Drop, counter: DROPPED, list: Some("deny-a") },
        Row { name: "double 802.1Q ipv4 denied", frame: eth().vlan(Q, 100).vlan(Q, 100).ipv4(denied4), expect: Drop, counter: DROPPED, list: Some("deny-a") },
        Row { name: "three VLAN tags: not parsed", frame: eth().vlan(AD, 200).vlan(Q, 100).vlan(Q, 100).ipv4(denied4), expect: Pass, counter: NON_IP, list: None },
        Row { name: "ARP", frame: eth().arp(), expect: Pass, counter: NON_IP, list: None },
        Row { name: "unknown ethertype", frame: eth().ether_type(0x88cc), expect: Pass, counter: NON_IP, list: None },
        Row { name: "ethernet only, IPv4 type", frame: eth().ether_type(ETH_P_IPV4), expect: Pass, counter: MALFORMED, list: None },
        Row { name: "ethernet only, IPv6 type", frame: eth().ether_type(ETH_P_IPV6), expect: Pass, counter: MALFORMED, list: None },
        Row { name: "VLAN tag truncated", frame: eth().vlan(Q, 100).ipv4(denied4).truncate(16), expect: Pass, counter: MALFORMED, list: None },
        Row { name: "inner VLAN tag truncated", frame: eth().vlan(AD, 200).vlan(Q, 100).ipv4(denied4).truncate(20), expect: Pass, counter: MALFORMED, list: None },
        Row { name: "ipv4 header truncated at 19 bytes", frame: eth().ipv4(denied4).truncate(v4_end - 1), expect: Pass, counter: MALFORMED, list: None },
        Row { name: "ipv4 truncated inside source", frame: eth().ipv4(denied4).truncate(14 + 14), expect: Pass, counter: MALFORMED, list: None },
        Row { name: "ipv4 under VLAN truncated", frame: eth().vlan(Q, 100).ipv4(denied4).truncate(v4_end + 4 - 1), expect: Pass, counter: MALFORMED, list: None },
        Row { name: "ipv4 ihl 4", frame: eth().ipv4(denied4).ihl(4), expect: Pass, counter: MALFORMED, list: None },
        // The fixed header is whole, so the source is known: it is judged by its
        // source (the stack drops what the program passes of such a packet).
        Row { name: "ipv4 ihl 15, longer than the frame", frame: eth().ipv4(denied4).ihl(15).truncate(v4_end + 8), expect: Drop, counter: DROPPED, list: Some("deny-a") },
        Row { name: "ipv4 ihl 15 from no list, longer than the frame", frame: eth().ipv4("192.0.2.9").ihl(15).truncate(v4_end), expect: Pass, counter: PASSED, list: None },
        Row { name: "ipv4 ethertype, version 6", frame: eth().ipv4(denied4).version(6), expect: Pass, counter: MALFORMED, list: None },
        Row { name: "ipv6 header truncated at 39 bytes", frame: eth().ipv6(denied6).truncate(v6_end - 1), expect: Pass, counter: MALFORMED, list: None },
        Row { name: "ipv6 ethertype, version 4", frame: eth().ipv6(denied6).version(4), expect: Pass, counter: MALFORMED, list: None },
        Row { name: "ipv4 header exactly 20 bytes", frame: eth().ipv4(denied4).truncate(v4_end), expect: Drop, counter: DROPPED, list: Some("deny-a") },
        Row { name: "ipv6 header exactly 40 bytes", frame: eth().ipv6(denied6).truncate(v6_end), expect: Drop, counter: DROPPED, list: Some("deny-a") },
    ];
    rows
}

fn check_row(h: &mut Harness, r: &Row, expect: Verdict, expect_counter: u32) {
    let frame = r.frame.build();
    let before = h.counters();
    let verdict = h.run(&frame);
    let after = h.counters();
    assert_eq!(verdict, expect.code(), "{}: verdict", r.name);
    for i in 0..counter::COUNT {
        let delta = after.global(i) - before.global(i);
        let want = u64::from(i == expect_counter);
        assert_eq!(delta, want, "{}: counter {} went up by {delta}", r.name, counter::NAMES[i as usize]);
    }
    for (b, a) in before.lists.iter().zip(&after.lists) {
        let hit = r.list == Some(a.name.as_str());
        assert_eq!(a.packets - b.packets, u64::from(hit), "{}: packets of list {}", r.name, a.name);
        let bytes = if hit { frame.len() as u64 } else { 0 };
        assert_eq!(a.bytes - b.bytes, bytes, "{}: bytes of list {}", r.name, a.name);
    }
}

#[test]
fn fixture_table_enforce_mode() {
    let mut h = Harness::new(&fixture_lists());
    for r in fixture_rows() {
        check_row(&mut h, &r, r.expect, r.counter);
    }
}

#[test]
fn fixture_table_monitor_mode_drops_nothing() {
    let mut h = Harness::new(&fixture_lists());
    h.maps.set_mode(Mode::Monitor).unwrap();
    for r in fixture_rows() {
        // In monitor mode every would-be drop passes and counts as monitored.
        let (verdict, global) = if r.expect == Drop { (Pass, counter::MONITORED) } else { (r.expect, r.counter) };
        check_row(&mut h, &r, verdict, global);
    }
    h.maps.set_mode(Mode::Enforce).unwrap();
    assert_eq!(h.run(&ip_frame(ip("203.0.113.5"), &[])), XDP_DROP);
}

/// Leaves no compiled table holds, written into the classifier as they are: an
/// action the program does not know, no action, and a list id past the counters.
/// Each passes, counted as passed, and no list counts it.
#[test]
fn leaves_no_table_holds_pass() {
    use blocker_common::{classifier::leaf, ACTION_DROP, ACTION_NONE, MAX_LISTS};
    const UNKNOWN_ACTION: u32 = 5;
    let cases = [
        ("unknown action", leaf(UNKNOWN_ACTION, 0)),
        ("no action", leaf(ACTION_NONE, 0)),
        ("list id past the counters", leaf(ACTION_DROP, MAX_LISTS + 10)),
    ];
    let mut h = Harness::new(&fixture_lists());
    let table = compile(&[list("odd", Role::Deny, &["203.0.113.0/24", "2001:db8:b::/48"])]);
    for (name, odd_leaf) in cases {
        h.maps.apply_raw_leaves(&table, |_| odd_leaf).unwrap();
        for frame in [Frame::eth().ipv4("203.0.113.5"), Frame::eth().ipv6("2001:db8:b::5")] {
            let row = Row { name, frame, expect: Pass, counter: counter::PASSED, list: None };
            check_row(&mut h, &row, row.expect, row.counter);
        }
    }
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
    let err = h.apply(&too_many).unwrap_err();
    assert!(matches!(err, MapsError::Table(TableError::TooManyLists { needed: 1025, max: 1024 })), "{err}");
    assert!(err.to_string().contains("nothing was changed"), "{err}");
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
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
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
    let err = h.maps.apply(&big, 1 << 20).unwrap_err();
    let MapsError::Table(TableError::OverBudget { v4_ranges, v6_ranges, needed_mib, budget_mib, .. }) = err else {
        panic!("not refused for its size: {err}");
    };
    assert_eq!((v4_ranges, v6_ranges, budget_mib), (100_000, 0, 1.0));
    assert!(needed_mib > 1.0, "{needed_mib}");
    let text = err.to_string();
    assert!(text.contains("--table-memory") && text.contains("nothing was changed"), "{text}");
    assert_eq!(h.counters().program_id, program);
    assert_eq!(h.run(&ip_frame(ip("203.0.113.5"), &[])), XDP_DROP, "the running table still answers");
    // The same table within a large enough budget loads.
    h.maps.apply(&big, 16 << 20).unwrap();
    assert_eq!(h.run(&ip_frame(ip("0.0.167.195"), &[])), XDP_DROP);
}

/// The bundled ASN data (decoded once for the tests of this file).
fn asn_db() -> &'static blocker::source::asn::db::AsnDb {
    static DB: std::sync::OnceLock<blocker::source::asn::db::AsnDb> = std::sync::OnceLock::new();
    DB.get_or_init(|| blocker::source::asn::db::AsnDb::bundled().unwrap())
}

/// An address of system `asn` (of the bundled data) that the country data puts
/// in `country` (any country when None).
fn address_of_asn(asn: u32, v6: bool, country: Option<&str>) -> IpAddr {
    let regions = blocker::source::region::db::RegionDb::bundled().unwrap();
    let fam = if v6 { blocker::net::Family::V6 } else { blocker::net::Family::V4 };
    let system = asn_db().get(blocker::source::asn::Asn(asn)).unwrap();
    system
        .prefixes
        .iter()
        .filter(|p| p.family == fam)
        .map(|p| blocker::net::Prefix { family: fam, addr: p.addr + 1, len: fam.bits() })
        .find(|a| country.is_none_or(|c| regions.containing(fam, a.addr).iter().any(|r| r.code == c)))
        .expect("such an address")
        .to_ip()
}

#[test]
fn deny_asn_drops_and_counts_under_the_system() {
    use blocker::source::asn::Asn;
    let policy = blocker::policy::Policy { deny_asn: vec![Asn(4134), Asn(13335)], ..Default::default() };
    let mut h = policy_harness(&policy);
    for v6 in [false, true] {
        assert_eq!(h.run(&ip_frame(address_of_asn(4134, v6, None), &[])), XDP_DROP);
        assert_eq!(h.run(&ip_frame(address_of_asn(13335, v6, None), &[])), XDP_DROP);
        assert_eq!(h.run(&ip_frame(address_of_asn(15169, v6, None), &[])), XDP_PASS, "Google is not denied");
    }
    assert_eq!(h.run(&ip_frame(ip("1.1.1.1"), &[])), XDP_DROP);
    let c = h.counters();
    assert_eq!(c.list("asn:4134").unwrap().packets, 2);
    assert_eq!(c.list("asn:13335").unwrap().packets, 3);
    assert_eq!(c.global(counter::DROPPED), 5);
}

#[test]
fn an_allowed_asn_is_an_exception_inside_a_denied_country() {
    use blocker::source::asn::Asn;
    let policy = blocker::policy::Policy {
        deny_country: vec!["CN".into()],
        allow_asn: vec![Asn(4134)],
        reject_asn: vec![Asn(15169)],
        ..Default::default()
    };
    let mut h = policy_harness(&policy);
    let chinanet = address_of_asn(4134, false, Some("CN"));
    let unicom = address_of_asn(4837, false, Some("CN"));
    assert_eq!(h.run(&ip_frame(chinanet, &[])), XDP_PASS, "the exception passes inside the denied country");
    assert_eq!(h.run(&ip_frame(unicom, &[])), XDP_DROP, "the rest of the country is dropped");
    // A rejected system answers a TCP SYN (XDP_TX) within the reject rate.
    let google = address_of_asn(15169, false, None);
    assert_ne!(h.run(&ip_frame(google, &[])), XDP_PASS);
    let c = h.counters();
    assert_eq!(c.list("asn:4134").unwrap().packets, 1);
    assert_eq!(c.list("country:CN").unwrap().packets, 1);
    assert_eq!(c.list("asn:15169").unwrap().packets, 1);
}

#[test]
fn allowlist_mode_by_asn_passes_only_the_allowed_networks() {
    use blocker::source::asn::Asn;
    let policy = blocker::policy::Policy {
        allow_only_asn: vec![Asn(13335), Asn(15169)],
        never_block: vec!["198.51.100.0/24".into()],
        ..Default::default()
    };
    let mut h = policy_harness(&policy);
    for v6 in [false, true] {
        assert_eq!(h.run(&ip_frame(address_of_asn(13335, v6, None), &[])), XDP_PASS);
        assert_eq!(h.run(&ip_frame(address_of_asn(15169, v6, None), &[])), XDP_PASS);
        assert_eq!(h.run(&ip_frame(address_of_asn(4134, v6, None), &[])), XDP_DROP);
    }
    assert_eq!(h.run(&ip_frame(ip("198.51.100.7"), &[])), XDP_PASS, "the management range is never blocked");
    let c = h.counters();
    assert_eq!(c.list(blocker::policy::OUTSIDE_ALLOWED_ASNS).unwrap().packets, 2);
    assert_eq!(c.list("asn:13335").unwrap().packets, 2);
    assert_eq!(c.list("asn:15169").unwrap().packets, 2);
}

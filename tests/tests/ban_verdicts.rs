//! Bans through BPF_PROG_TEST_RUN: the XDP program with bans written the way
//! the daemon writes them (`decisions::store` then `decisions::enforce`),
//! each row a frame, its verdict, the counter that goes up and the list (or
//! origin, scope `ban`) that counts it.
#![allow(unused_crate_dependencies)]

use aya::programs::{TestRun, TestRunOptions};
use blocker::{
    clock,
    compile::table::{compile, CompiledTable, ScopeTable},
    dataplane::{
        bans::BanKey,
        maps::{Counters, DataplaneMaps, Mode, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    decisions::{
        enforce::{self, Target},
        parse_target,
        store::Store,
        Ban, BanAction,
    },
    net::parse_prefix,
    policy::{
        ports::{PortRule, Ports},
        ListSpec, Role,
    },
};
use blocker_common::{bans::BanEntry, counter};
use blocker_tests::{
    daemon::PinRoot,
    frames::{Frame, Transport},
    unique_tag,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

fn list(name: &str, role: Role, prefixes: &[&str]) -> ListSpec {
    ListSpec { name: name.into(), role, prefixes: prefixes.iter().map(|p| parse_prefix(p).unwrap()).collect() }
}

/// deny 203.0.113.0/24 with an allow hole at .128/25, never-block 192.0.2.0/24
/// and 2001:db8:1::/48, and an allowed country's range (an allowlist's pass,
/// which does not win over bans).
fn lists() -> Vec<ListSpec> {
    vec![
        list("never-block", Role::NeverBlock, &["192.0.2.0/24", "2001:db8:1::/48"]),
        list("allow-a", Role::Exception, &["203.0.113.128/25", "2001:db8:b:1::/64"]),
        list("deny-a", Role::Deny, &["203.0.113.0/24", "2001:db8:b::/48"]),
        list("country:XX", Role::AllowedRegion, &["198.18.0.0/15"]),
    ]
}

struct Harness {
    maps: DataplaneMaps,
    store: Store,
    _state: tempfile::TempDir,
    _root: PinRoot,
}

impl Harness {
    /// One table for all traffic, or `scopes` (name, ports) over the same lists.
    fn new(scopes: &[(&str, &[&str])]) -> Harness {
        let root = PinRoot::new(&format!("banverdict-{}", unique_tag()));
        pins::ensure_bpffs(&root.0).unwrap();
        let mut maps = DataplaneMaps::load(&pins::iface_dir(&root.0, "test"), 0).expect("load XDP program");
        if scopes.is_empty() {
            maps.apply(&compile(&lists()), DEFAULT_TABLE_MEMORY).unwrap();
        } else {
            let tables: Vec<(String, Ports, CompiledTable)> = scopes
                .iter()
                .map(|(n, rules)| {
                    let ports = Ports(rules.iter().map(|r| r.parse::<PortRule>().unwrap()).collect());
                    (n.to_string(), ports, compile(&lists()))
                })
                .collect();
            let view: Vec<ScopeTable<'_>> =
                tables.iter().map(|(name, ports, table)| ScopeTable { name, ports, table, outbound: false }).collect();
            maps.apply_scopes(&view, DEFAULT_TABLE_MEMORY, None).unwrap();
        }
        maps.set_reject_per_second(1000).unwrap();
        let state = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(state.path(), [1 << 20, 1 << 20]).unwrap();
        Harness { maps, store, _state: state, _root: root }
    }

    fn ban(&mut self, target: &str, origin: &str, action: BanAction, secs: Option<u64>) {
        let ban = Ban {
            prefix: parse_target(target).unwrap(),
            expires_ns: secs.map(|s| clock::boot_ns() + s * 1_000_000_000),
            origin: origin.into(),
            reason: "".into(),
            action,
        };
        let (_, changed) = self.store.add(vec![ban]).unwrap();
        let mut targets = [Target { iface: "test", maps: &mut self.maps }];
        enforce::put(&mut targets, &self.store, &changed).unwrap();
    }

    fn unban(&mut self, target: &str) {
        let removed = self.store.remove(&[parse_target(target).unwrap()]).unwrap();
        let mut targets = [Target { iface: "test", maps: &mut self.maps }];
        enforce::remove(&mut targets, &self.store, &removed).unwrap();
    }

    fn run(&mut self, frame: &[u8]) -> u32 {
        let prog = object::program_mut(self.maps.ebpf_mut().unwrap()).unwrap();
        prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() }).expect("test run").return_value
    }

    fn counters(&self) -> Counters {
        self.maps.counters().unwrap()
    }
}

struct Row {
    name: &'static str,
    frame: Frame,
    verdict: u32,
    counter: u32,
    /// (scope, name) of the list or origin that counts the frame.
    list: Option<(&'static str, &'static str)>,
}

fn check(h: &mut Harness, rows: &[Row]) {
    for r in rows {
        let frame = r.frame.build();
        let before = h.counters();
        let verdict = h.run(&frame);
        let after = h.counters();
        assert_eq!(verdict, r.verdict, "{}: verdict", r.name);
        for i in 0..counter::COUNT {
            let delta = after.global(i) - before.global(i);
            assert_eq!(delta, u64::from(i == r.counter), "{}: counter {}", r.name, counter::NAMES[i as usize]);
        }
        for a in &after.lists {
            let b = before.lists.iter().find(|b| b.id == a.id).map_or(0, |b| b.packets);
            let hit = r.list == Some((a.scope.as_str(), a.name.as_str()));
            assert_eq!(a.packets - b, u64::from(hit), "{}: packets of {}/{}", r.name, a.scope, a.name);
        }
    }
}

fn udp(src: &str) -> Frame {
    let f = Frame::eth();
    let f = if src.contains(':') { f.ipv6(src) } else { f.ipv4(src) };
    f.transport(Transport::Udp(53))
}

#[test]
fn bans_drop_their_sources_longest_prefix_first_and_lists_that_win_pass() {
    use counter::{DROPPED, PASSED, REJECTED};
    let mut h = Harness::new(&[]);
    // No bans: the table alone.
    check(
        &mut h,
        &[
            Row { name: "no ban", frame: udp("198.51.100.7"), verdict: XDP_PASS, counter: PASSED, list: None },
            Row {
                name: "denied",
                frame: udp("203.0.113.5"),
                verdict: XDP_DROP,
                counter: DROPPED,
                list: Some(("default", "deny-a")),
            },
        ],
    );
    h.ban("198.51.100.7", "ids", BanAction::Drop, Some(3600));
    h.ban("10.0.0.0/8", "ids", BanAction::Drop, None);
    h.ban("10.1.2.3", "feed", BanAction::Drop, None);
    h.ban("203.0.113.5", "feed", BanAction::Drop, None);
    h.ban("203.0.113.200", "ids", BanAction::Drop, None);
    h.ban("192.0.2.0/24", "ids", BanAction::Drop, None);
    h.ban("198.18.0.5", "ids", BanAction::Drop, None);
    h.ban("198.51.100.9", "ids", BanAction::Reject, None);
    #[rustfmt::skip]
    check(&mut h, &[
        Row { name: "banned host", frame: udp("198.51.100.7"), verdict: XDP_DROP, counter: DROPPED, list: Some(("ban", "ids")) },
        Row { name: "its neighbour", frame: udp("198.51.100.8"), verdict: XDP_PASS, counter: PASSED, list: None },
        Row { name: "inside a banned /8", frame: udp("10.200.3.4"), verdict: XDP_DROP, counter: DROPPED, list: Some(("ban", "ids")) },
        Row { name: "longest ban counts", frame: udp("10.1.2.3"), verdict: XDP_DROP, counter: DROPPED, list: Some(("ban", "feed")) },
        Row { name: "a ban over a deny list counts as the ban", frame: udp("203.0.113.5"), verdict: XDP_DROP, counter: DROPPED, list: Some(("ban", "feed")) },
        Row { name: "allow list wins", frame: udp("203.0.113.200"), verdict: XDP_PASS, counter: PASSED, list: Some(("default", "allow-a")) },
        Row { name: "never-block wins", frame: udp("192.0.2.9"), verdict: XDP_PASS, counter: PASSED, list: Some(("default", "never-block")) },
        Row { name: "an allowed country does not", frame: udp("198.18.0.5"), verdict: XDP_DROP, counter: DROPPED, list: Some(("ban", "ids")) },
        Row { name: "reject ban answers", frame: udp("198.51.100.9"), verdict: XDP_TX, counter: REJECTED, list: Some(("ban", "ids")) },
    ]);
    // Monitor mode: counted as would-be drops, passed.
    h.maps.set_mode(Mode::Monitor).unwrap();
    check(
        &mut h,
        &[Row {
            name: "monitor",
            frame: udp("198.51.100.7"),
            verdict: XDP_PASS,
            counter: counter::MONITORED,
            list: Some(("ban", "ids")),
        }],
    );
    h.maps.set_mode(Mode::Enforce).unwrap();
    // The ban's own packet count (approximate only under concurrency).
    let key = BanKey::of(&parse_target("198.51.100.7").unwrap());
    assert_eq!(h.maps.bans().get(&key).unwrap().packets, 2);
    // Unbanned: the table's verdict again, and the narrower length goes.
    h.unban("10.1.2.3");
    h.unban("203.0.113.5");
    check(
        &mut h,
        &[
            Row {
                name: "after unban, the /8",
                frame: udp("10.1.2.3"),
                verdict: XDP_DROP,
                counter: DROPPED,
                list: Some(("ban", "ids")),
            },
            Row {
                name: "after unban, the deny list",
                frame: udp("203.0.113.5"),
                verdict: XDP_DROP,
                counter: DROPPED,
                list: Some(("default", "deny-a")),
            },
        ],
    );
}

#[test]
fn every_prefix_length_is_found_in_both_families() {
    let mut h = Harness::new(&[]);
    // Bans at the edges of each length word: IPv4 32, 31, 1, 0; IPv6 128,
    // 65, 64, 1, 0. Each probed alone, by an address just inside and one
    // just outside (none outside a /0).
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("100.64.0.1/32", "100.64.0.1", Some("100.64.0.2")),
        ("100.64.0.2/31", "100.64.0.3", Some("100.64.0.4")),
        ("128.0.0.0/1", "200.1.1.1", Some("100.1.1.1")),
        ("0.0.0.0/0", "100.1.1.1", None),
        ("2001:db8:5::1/128", "2001:db8:5::1", Some("2001:db8:5::2")),
        ("2001:db8:5::8000:0:0:0/65", "2001:db8:5::8000:0:0:1", Some("2001:db8:5::1")),
        ("2001:db8:6::/64", "2001:db8:6::ffff", Some("2001:db8:6:1::1")),
        ("8000::/1", "ff00::1", Some("2001:db8:7::1")),
        ("::/0", "2001:db8:7::1", None),
    ];
    for (ban, inside, outside) in cases {
        h.ban(ban, "ids", BanAction::Drop, None);
        assert_eq!(h.run(&udp(inside).build()), XDP_DROP, "{ban}: {inside} inside");
        if let Some(o) = outside {
            assert_eq!(h.run(&udp(o).build()), XDP_PASS, "{ban}: {o} outside");
        }
        // Never-block and allow lists still win under a /0.
        assert_eq!(h.run(&udp("192.0.2.1").build()), XDP_PASS, "{ban}: never-block");
        assert_eq!(h.run(&udp("2001:db8:1::1").build()), XDP_PASS, "{ban}: never-block v6");
        h.unban(ban);
        assert_eq!(h.run(&udp(inside).build()), XDP_PASS, "{ban}: unbanned");
        assert_eq!(h.maps.bans().lengths(), [0; 4], "{ban}: no length left to probe");
    }
}

#[test]
fn an_expired_ban_is_ignored_by_the_program_itself() {
    let mut h = Harness::new(&[]);
    h.ban("198.51.100.7", "ids", BanAction::Drop, Some(1));
    assert_eq!(h.run(&udp("198.51.100.7").build()), XDP_DROP);
    // Written as it would be left by a daemon that was killed: the map entry
    // stays, its time has come; no userspace removes it.
    let key = BanKey::of(&parse_target("198.51.100.8").unwrap());
    let past = BanEntry { expires_ns: clock::boot_ns() - 1, packets: 0, list_id: 0, action: 2 };
    h.ban("198.51.100.8", "ids", BanAction::Drop, None);
    h.maps.bans_mut().put(&key, past).unwrap();
    assert_eq!(h.run(&udp("198.51.100.8").build()), XDP_PASS, "expired in the map: passed");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(h.run(&udp("198.51.100.7").build()), XDP_PASS, "expired while nobody swept");
    assert!(h.maps.bans().get(&BanKey::of(&parse_target("198.51.100.7").unwrap())).is_some(), "still in the map");
}

#[test]
fn outside_every_scope_only_never_block_wins() {
    use counter::{DROPPED, PASSED};
    // One scope, tcp:443: UDP is outside every scope.
    let mut h = Harness::new(&[("web", &["tcp:443"])]);
    h.ban("203.0.113.200", "ids", BanAction::Drop, None);
    h.ban("192.0.2.9", "ids", BanAction::Drop, None);
    h.ban("198.51.100.7", "ids", BanAction::Drop, None);
    let tcp = |src: &str| Frame::eth().ipv4(src).transport(Transport::Tcp(443));
    #[rustfmt::skip]
    check(&mut h, &[
        Row { name: "unscoped traffic of a banned source", frame: udp("198.51.100.7"), verdict: XDP_DROP, counter: DROPPED, list: Some(("ban", "ids")) },
        Row { name: "unscoped, never-block", frame: udp("192.0.2.9"), verdict: XDP_PASS, counter: PASSED, list: None },
        Row { name: "unscoped, the scope's allow list does not apply", frame: udp("203.0.113.200"), verdict: XDP_DROP, counter: DROPPED, list: Some(("ban", "ids")) },
        Row { name: "in scope, its allow list wins", frame: tcp("203.0.113.200"), verdict: XDP_PASS, counter: PASSED, list: Some(("web", "allow-a")) },
        Row { name: "in scope, never-block wins", frame: tcp("192.0.2.9"), verdict: XDP_PASS, counter: PASSED, list: Some(("web", "never-block")) },
        Row { name: "in scope, banned", frame: tcp("198.51.100.7"), verdict: XDP_DROP, counter: DROPPED, list: Some(("ban", "ids")) },
    ]);
}

#[test]
fn a_full_ban_map_refuses_the_next_ban_and_evicts_nothing() {
    use blocker::{dataplane::maps::pinned_map_memory, net::Family};
    let mut h = Harness::new(&[]);
    let max = h.maps.bans().max(Family::V4) as usize;
    assert_eq!(max, 1 << 20);
    let memory = |h: &Harness| -> u64 {
        pinned_map_memory(&h.maps.dir)
            .unwrap()
            .iter()
            .filter(|(name, _)| name == blocker_common::map_names::BANS_V4)
            .map(|(_, b)| *b)
            .sum()
    };
    let empty = memory(&h);
    // The whole map, in batches as `blocker ban --from` sends them: IPv4
    // hosts 10.0.0.0 up, and 20 % of them /24s elsewhere.
    let started = std::time::Instant::now();
    let bans: Vec<Ban> = (0..max as u32)
        .map(|i| {
            let prefix = if i % 5 == 0 {
                blocker::net::Prefix { family: Family::V4, addr: u128::from(0x4000_0000 + (i << 8)), len: 24 }
            } else {
                blocker::net::Prefix { family: Family::V4, addr: u128::from(0x0a00_0000 + i), len: 32 }
            };
            Ban { prefix, expires_ns: None, origin: "feed".into(), reason: "".into(), action: BanAction::Drop }
        })
        .collect();
    for chunk in bans.chunks(100_000) {
        let (_, changed) = h.store.add(chunk.to_vec()).unwrap();
        let mut targets = [Target { iface: "test", maps: &mut h.maps }];
        enforce::put(&mut targets, &h.store, &changed).unwrap();
    }
    let full = memory(&h);
    eprintln!(
        "{max} IPv4 bans in {:.1} s; ban map {:.1} MiB empty, {:.1} MiB full: {:.0} bytes a ban",
        started.elapsed().as_secs_f64(),
        empty as f64 / f64::from(1 << 20),
        full as f64 / f64::from(1 << 20),
        (full - empty) as f64 / max as f64
    );
    assert!(full > empty, "the map's memory grows with its bans");
    // One more: refused, with the numbers, and nothing changed.
    let more = Ban {
        prefix: parse_target("198.51.100.7").unwrap(),
        expires_ns: None,
        origin: "feed".into(),
        reason: "".into(),
        action: BanAction::Drop,
    };
    let e = h.store.add(vec![more]).unwrap_err().to_string();
    assert!(
        e.contains("1048577 IPv4 bans needed, the ban map holds 1048576") && e.contains("nothing was banned"),
        "{e}"
    );
    assert_eq!(h.run(&udp("198.51.100.7").build()), XDP_PASS, "not banned");
    // No active ban was evicted: the first, the last and a /24 still hold.
    assert_eq!(h.run(&udp("10.0.0.1").build()), XDP_DROP);
    let last_host = (0..max).rev().find(|i| i % 5 != 0).unwrap();
    let last = format!("10.{}.{}.{}", last_host >> 16 & 255, last_host >> 8 & 255, last_host & 255);
    assert_eq!(h.run(&udp(&last).build()), XDP_DROP, "{last}");
    assert_eq!(h.run(&udp("64.0.0.9").build()), XDP_DROP);
    assert_eq!(h.maps.bans().entries().len(), max);
    // IPv6 has a map of its own.
    h.ban("2001:db8:9::1", "feed", BanAction::Drop, None);
    assert_eq!(h.run(&udp("2001:db8:9::1").build()), XDP_DROP);
}

#[test]
fn the_filter_is_rebuilt_after_removals_and_never_hides_a_held_ban() {
    use blocker::{dataplane::bans::filter_bit, net::Family};
    let mut h = Harness::new(&[]);
    let bans: Vec<Ban> = (0..6000u32)
        .map(|i| Ban {
            prefix: blocker::net::Prefix { family: Family::V4, addr: u128::from(0x0a00_0000 + i), len: 32 },
            expires_ns: None,
            origin: "feed".into(),
            reason: "".into(),
            action: BanAction::Drop,
        })
        .collect();
    let (_, changed) = h.store.add(bans).unwrap();
    let mut targets = [Target { iface: "test", maps: &mut h.maps }];
    enforce::put(&mut targets, &h.store, &changed).unwrap();
    let kept = changed.iter().copied().find(|p| p.addr == 0x0a00_0000 + 5999).unwrap();
    let gone: Vec<_> = changed.iter().copied().filter(|p| *p != kept).collect();
    assert!(gone.iter().all(|p| h.maps.bans().filter_has(filter_bit(p))), "every ban's bit is set");
    // 5,999 removals: past a quarter of what is held, the filter is rebuilt.
    let removed = h.store.remove(&gone).unwrap();
    let mut targets = [Target { iface: "test", maps: &mut h.maps }];
    enforce::remove(&mut targets, &h.store, &removed).unwrap();
    assert_eq!(h.maps.bans().stale_bits, 0, "rebuilt");
    assert!(h.maps.bans().filter_has(filter_bit(&kept)), "the held ban keeps its bit");
    let still_set = gone.iter().filter(|p| h.maps.bans().filter_has(filter_bit(p))).count();
    assert!(still_set < 10, "{still_set} bits of removed bans left (only hash collisions)");
    assert_eq!(h.run(&udp("10.0.23.111").build()), XDP_DROP, "the held ban");
    assert_eq!(h.run(&udp("10.0.0.1").build()), XDP_PASS, "a removed one");
}

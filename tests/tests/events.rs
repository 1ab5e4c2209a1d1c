//! Sampled drop events through BPF_PROG_TEST_RUN: what the XDP program writes to
//! the ring buffer for each kind of frame (fixture rows: frame, expected event),
//! and the per-CPU token bucket that bounds how many it writes.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use aya::programs::{TestRun, TestRunOptions};
use blocker::{
    compile::table::compile,
    dataplane::{
        maps::{DataplaneMaps, EventCounters, Mode, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    events::{reader::EventRing, Event},
    net::parse_prefix,
    policy::{ListSpec, Role},
};
use blocker_tests::{
    daemon::PinRoot,
    frames::{Frame, Transport, ETH_P_8021Q},
    unique_tag,
};

struct Harness {
    maps: DataplaneMaps,
    ring: EventRing,
    _root: PinRoot,
}

fn list(name: &str, role: Role, prefixes: &[&str]) -> ListSpec {
    ListSpec { name: name.into(), role, prefixes: prefixes.iter().map(|p| parse_prefix(p).unwrap()).collect() }
}

impl Harness {
    fn new(events_per_second: u32) -> Harness {
        let root = PinRoot::new(&format!("events-{}", unique_tag()));
        pins::ensure_bpffs(&root.0).unwrap();
        let dir = pins::iface_dir(&root.0, "test");
        let mut maps = DataplaneMaps::load(&dir, 0).expect("load XDP program");
        let lists = [
            list("deny", Role::Deny, &["203.0.113.0/24", "2001:db8:b::/48"]),
            list("allow", Role::Exception, &["203.0.113.128/25"]),
            list("watch", Role::Monitor, &["198.51.100.0/24"]),
        ];
        maps.apply(&compile(&lists), DEFAULT_TABLE_MEMORY).unwrap();
        maps.set_events_per_second(events_per_second).unwrap();
        let ring = EventRing::open("test", &dir).expect("open the ring buffer");
        Harness { maps, ring, _root: root }
    }

    /// Runs the program `repeat` times on `frame`.
    fn run(&mut self, frame: &[u8], repeat: u32) {
        let prog = object::program_mut(self.maps.ebpf_mut().unwrap()).unwrap();
        prog.test_run(TestRunOptions { data_in: Some(frame), repeat, ..Default::default() }).expect("test run");
    }

    fn events(&mut self) -> Vec<Event> {
        self.ring.read_all()
    }

    fn counters(&self) -> EventCounters {
        self.maps.counters().unwrap().events
    }
}

/// What a row expects of the one event its frame causes.
struct Expect {
    source: &'static str,
    list: &'static str,
    action: &'static str,
    verdict: &'static str,
    protocol: &'static str,
    dst_port: Option<u16>,
    l4: Option<&'static str>,
}

struct Row {
    name: &'static str,
    frame: Frame,
    /// None: the frame causes no event.
    expect: Option<Expect>,
}

const D4: &str = "203.0.113.5";
const D6: &str = "2001:db8:b::5";

fn drop_row(name: &'static str, frame: Frame, source: &'static str, protocol: &'static str, port: Option<u16>) -> Row {
    let expect =
        Expect { source, list: "deny", action: "drop", verdict: "dropped", protocol, dst_port: port, l4: None };
    Row { name, frame, expect: Some(expect) }
}

fn no_l4_row(name: &'static str, frame: Frame, source: &'static str, protocol: &'static str, why: &'static str) -> Row {
    let mut row = drop_row(name, frame, source, protocol, None);
    if let Some(e) = &mut row.expect {
        e.l4 = Some(why);
    }
    row
}

fn rows() -> Vec<Row> {
    let eth = Frame::eth;
    let (tcp, udp) = (Transport::Tcp, Transport::Udp);
    #[rustfmt::skip]
    let rows = vec![
        drop_row("ipv4 tcp syn", eth().ipv4(D4).transport(tcp(443)), D4, "tcp", Some(443)),
        drop_row("ipv4 udp", eth().ipv4(D4).transport(udp(53)), D4, "udp", Some(53)),
        drop_row("ipv4 options before tcp (IHL honoured)", eth().ipv4(D4).options(3).transport(tcp(8443)), D4, "tcp", Some(8443)),
        drop_row("ipv4 under 802.1Q", eth().vlan(ETH_P_8021Q, 7).ipv4(D4).transport(tcp(22)), D4, "tcp", Some(22)),
        drop_row("ipv4 icmp echo: no port", eth().ipv4(D4).transport(Transport::Echo), D4, "icmp", None),
        drop_row("ipv4 first fragment (offset 0)", eth().ipv4(D4).fragment(0).transport(udp(500)), D4, "udp", Some(500)),
        no_l4_row("ipv4 later fragment", eth().ipv4(D4).fragment(185).transport(udp(500)), D4, "udp", "later fragment"),
        no_l4_row("ipv4 tcp cut before the port", eth().ipv4(D4).transport(tcp(443)).truncate(14 + 20 + 3), D4, "tcp", "unreachable"),
        drop_row("ipv6 udp", eth().ipv6(D6).transport(udp(443)), D6, "udp", Some(443)),
        drop_row("ipv6 icmpv6 echo", eth().ipv6(D6).transport(Transport::Echo), D6, "ipv6-icmp", None),
        drop_row("ipv6 hop-by-hop, routing, dest-opts, then tcp", eth().ipv6(D6).ext_headers(&[0, 43, 60]).transport(tcp(22)), D6, "tcp", Some(22)),
        drop_row("ipv6 authentication header, then udp", eth().ipv6(D6).ext_headers(&[51]).transport(udp(4500)), D6, "udp", Some(4500)),
        drop_row("ipv6 first fragment", eth().ipv6(D6).fragment(0).transport(udp(53)), D6, "udp", Some(53)),
        no_l4_row("ipv6 later fragment", eth().ipv6(D6).ext_headers(&[0]).fragment(90).transport(udp(53)), D6, "udp", "later fragment"),
        drop_row("ipv6 six extension headers (the most walked)", eth().ipv6(D6).ext_headers(&[0, 60, 43, 60, 51, 60]).transport(tcp(80)), D6, "tcp", Some(80)),
        no_l4_row("ipv6 seven extension headers", eth().ipv6(D6).ext_headers(&[0, 60, 43, 60, 51, 60, 60]).transport(tcp(80)), D6, "dst-opts", "unreachable"),
        no_l4_row("ipv6 extension header cut short", eth().ipv6(D6).ext_headers(&[0]).truncate(14 + 40 + 5), D6, "0", "unreachable"),
        Row {
            name: "monitor list",
            frame: eth().ipv4("198.51.100.9").transport(tcp(25)),
            expect: Some(Expect { source: "198.51.100.9", list: "watch", action: "monitor", verdict: "monitored", protocol: "tcp", dst_port: Some(25), l4: None }),
        },
        Row { name: "allow exception: no event", frame: eth().ipv4("203.0.113.200").transport(tcp(443)), expect: None },
        Row { name: "in no list: no event", frame: eth().ipv4("192.0.2.9").transport(tcp(443)), expect: None },
        Row { name: "not IP: no event", frame: eth().arp(), expect: None },
    ];
    rows
}

#[test]
fn each_dropped_or_monitored_frame_gives_one_event_with_its_fields() {
    // A rate no row can exhaust.
    let mut h = Harness::new(1_000_000);
    for r in rows() {
        let frame = r.frame.build();
        h.run(&frame, 1);
        let events = h.events();
        let Some(want) = &r.expect else {
            assert!(events.is_empty(), "{}: {events:?}", r.name);
            continue;
        };
        assert_eq!(events.len(), 1, "{}: {events:?}", r.name);
        let e = &events[0];
        assert_eq!(e.source.to_string(), want.source, "{}: source", r.name);
        assert_eq!(e.list.as_deref(), Some(want.list), "{}: list", r.name);
        assert_eq!((e.action.as_str(), e.verdict.as_str()), (want.action, want.verdict), "{}: action", r.name);
        // "dst-opts" and "0" stand for protocol numbers without a name.
        let protocol = match want.protocol {
            "dst-opts" => "60",
            p => p,
        };
        assert_eq!(e.protocol_name, protocol, "{}: protocol", r.name);
        assert_eq!(e.dst_port, want.dst_port, "{}: port", r.name);
        assert_eq!(e.l4.as_deref(), want.l4, "{}: l4", r.name);
        assert_eq!(e.frame_len as usize, frame.len(), "{}: frame length", r.name);
        assert_eq!((e.interface.as_str(), e.ifindex), ("test", 1), "{}: BPF_PROG_TEST_RUN runs on lo", r.name);
        let age = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.time_ms))
            .unwrap_or_default();
        assert!(age.as_secs() < 5, "{}: the event's time is now ({})", r.name, e.time);
    }
}

#[test]
fn monitor_mode_events_say_monitored_with_the_lists_action() {
    let mut h = Harness::new(1000);
    h.maps.set_mode(Mode::Monitor).unwrap();
    h.run(&Frame::eth().ipv4(D4).transport(Transport::Tcp(443)).build(), 1);
    let events = h.events();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].action.as_str(), events[0].verdict.as_str()), ("drop", "monitored"));
}

#[test]
fn the_token_bucket_bounds_events_per_cpu() {
    let frame = Frame::eth().ipv4(D4).transport(Transport::Tcp(443)).build();
    // One per second: a burst of one, then nothing until the bucket refills.
    let mut h = Harness::new(1);
    h.run(&frame, 50);
    assert_eq!(h.events().len(), 1);
    assert_eq!(h.counters(), EventCounters { sent: 1, rate_limited: 49, ring_full: 0 });

    // The default, 100 per second: a burst of at most one second's worth.
    let mut h = Harness::new(blocker::events::DEFAULT_EVENTS_PER_SECOND);
    h.run(&frame, 5000);
    let c = h.counters();
    assert!((100..=102).contains(&c.sent), "{c:?}");
    assert_eq!(c.sent + c.rate_limited, 5000);
    assert_eq!(h.events().len() as u64, c.sent);

    // Off: nothing sampled, nothing counted.
    h.maps.set_events_per_second(0).unwrap();
    h.run(&frame, 100);
    assert!(h.events().is_empty());
    assert_eq!(h.counters(), c, "the sampler does not run when off");
}

#[test]
fn a_full_ring_loses_events_and_counts_them() {
    let frame = Frame::eth().ipv4(D4).transport(Transport::Tcp(443)).build();
    let mut h = Harness::new(1_000_000);
    // Nobody reads while 30,000 events come: the ring (1 MiB, 56 bytes a record
    // with its header) holds 18,724.
    h.run(&frame, 30_000);
    let c = h.counters();
    let capacity = (blocker_common::events::RING_BYTES as u64) / 56;
    assert_eq!(c.sent, capacity, "{c:?}");
    assert_eq!((c.ring_full, c.rate_limited), (30_000 - capacity, 0));
    assert_eq!(h.events().len() as u64, capacity);
    // Read: there is room again.
    h.run(&frame, 1);
    assert_eq!(h.events().len(), 1);
}

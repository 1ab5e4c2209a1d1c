//! The XDP program's packet parser, through BPF_PROG_TEST_RUN: the program in the
//! kernel, loaded once with a fixed table, judges every input frame, and its
//! verdict and counters must match the reference (`reference_parse`, then the
//! compiled table's own lookup). The table has scopes: the reference L4 parser
//! (`reference_l4`) and `CompiledPolicy::judge` pick the scope whose table
//! judges the frame (or, without a port to read, the strictest of the scopes
//! that could hold it), as the program's port map must. A dropped or monitored frame's event must carry the
//! L4 protocol and port the reference reads. The tc egress program judges the
//! same frame by its destination in the outbound table, checked against the
//! reference the same way (its answers too).
//! Needs root, like the tests.
#![no_main]

use std::sync::Mutex;

use aya::programs::{TestRun as _, TestRunOptions};
use blocker::{
    compile::table::{compile, CompiledPolicy, CompiledScope},
    dataplane::{
        maps::{DataplaneMaps, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    events::reader::EventRing,
    net::{parse_prefix, Family},
    policy::{
        ports::{PortRule, Ports},
        Action, ListSpec, Role,
    },
};
use blocker_common::{
    counter,
    events::{has_ports, FLAG_LATER_FRAGMENT, FLAG_NO_L4},
};
use blocker_tests::frames::{reference_l4, reference_parse, reference_parse_destination, Parsed};
use libfuzzer_sys::fuzz_target;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

struct Harness {
    maps: DataplaneMaps,
    policy: CompiledPolicy,
    ring: EventRing,
}

fn list(name: &str, role: Role, prefixes: &[&str]) -> ListSpec {
    ListSpec { name: name.into(), role, prefixes: prefixes.iter().map(|p| parse_prefix(p).unwrap()).collect() }
}

fn harness() -> Harness {
    // Pins under a directory of this process; `cargo xtask fuzz` removes it.
    let root = std::path::PathBuf::from(format!("/sys/fs/bpf/blocker-fuzz-{}", std::process::id()));
    pins::ensure_bpffs(&root).expect("a bpffs (run as root)");
    let dir = pins::iface_dir(&root, "fuzz");
    let mut maps = DataplaneMaps::load(&dir, 0).expect("load the XDP program (root?)");
    // A rate no fuzzing speed exhausts: every dropped or monitored frame has its event.
    maps.set_events_per_second(blocker::dataplane::maps::MAX_EVENTS_PER_SECOND).expect("set the event rate");
    let ring = EventRing::open("fuzz", &dir).expect("open the event ring");
    // Short prefixes, so random frames hit them: deny, an allow hole, a monitor list.
    let lists = [
        list("deny", Role::Deny, &["0.0.0.0/2", "2000::/3", "::/8"]),
        list("allow", Role::Exception, &["32.0.0.0/4", "2000::/5"]),
        list("monitor", Role::Monitor, &["128.0.0.0/2", "fc00::/7"]),
    ];
    // Low ports and DNS get these lists; every other packet a deny list of its own
    // that overlaps them differently, so a wrong scope shows in the verdict.
    let rules = |r: &[&str]| Ports(r.iter().map(|r| r.parse::<PortRule>().unwrap()).collect());
    let policy = CompiledPolicy {
        scopes: vec![
            CompiledScope {
                name: "low".into(),
                ports: rules(&["tcp:0-1023", "udp:53", "sctp"]),
                table: compile(&lists),
                outbound: false,
            },
            CompiledScope {
                name: "default".into(),
                ports: Ports::default(),
                table: compile(&[
                    list("rest", Role::Deny, &["64.0.0.0/2", "4000::/3", "fc00::/8"]),
                    // Every other answer the program builds is checked.
                    list("refuse", Role::Reject, &["128.0.0.0/1", "2000::/3", "::/8"]),
                ]),
                outbound: false,
            },
            CompiledScope {
                name: blocker::policy::OUTBOUND_SCOPE.into(),
                ports: Ports::default(),
                table: compile(&[
                    list("out-deny", Role::Deny, &["0.0.0.0/1", "::/1"]),
                    list("out-refuse", Role::Reject, &["192.0.0.0/2", "c000::/2"]),
                    list("out-allow", Role::Exception, &["16.0.0.0/4", "1000::/4"]),
                ]),
                outbound: true,
            },
        ],
    };
    maps.apply_scopes(&policy.view(), DEFAULT_TABLE_MEMORY, None).expect("apply the table");
    maps.set_reject_per_second(blocker::dataplane::maps::MAX_REJECT_PER_SECOND).expect("set the reject rate");
    Harness { maps, policy, ring }
}

static HARNESS: Mutex<Option<Harness>> = Mutex::new(None);

/// The verdict and the global counter the reference expects for `frame`.
fn expected(policy: &CompiledPolicy, frame: &[u8]) -> (u32, u32) {
    let (family, addr) = match reference_parse(frame) {
        Parsed::NonIp => return (XDP_PASS, counter::NON_IP),
        Parsed::Malformed => return (XDP_PASS, counter::MALFORMED),
        Parsed::V4(a) => (Family::V4, u128::from(u32::from_be_bytes(a))),
        Parsed::V6(a) => (Family::V6, u128::from_be_bytes(a)),
    };
    let (protocol, port, flags) = reference_l4(frame).expect("an IP frame");
    let port = (flags == 0 && has_ports(protocol)).then_some(port);
    match policy.judge(protocol, port, family, addr).list.map(|l| l.action) {
        Some(Action::Drop) => (XDP_DROP, counter::DROPPED),
        Some(Action::Monitor) => (XDP_PASS, counter::MONITORED),
        // Answered or only dropped, by the kind of packet: `check_answer` judges.
        Some(Action::Reject) => (XDP_TX, counter::REJECTED),
        Some(Action::Pass) | None => (XDP_PASS, counter::PASSED),
    }
}

const XDP_TX: u32 = 3;

/// tc actions: on to the next program (TC_ACT_UNSPEC), shot, redirected.
const TC_NEXT: u32 = u32::MAX;
const TC_SHOT: u32 = 2;
const TC_REDIRECT: u32 = 7;

/// The tc action and the outbound counter the reference expects for `frame`
/// on egress: its destination in the outbound table.
fn expected_outbound(policy: &CompiledPolicy, frame: &[u8]) -> (u32, u32) {
    let (family, addr) = match reference_parse_destination(frame) {
        Parsed::NonIp => return (TC_NEXT, counter::NON_IP),
        Parsed::Malformed => return (TC_NEXT, counter::MALFORMED),
        Parsed::V4(a) => (Family::V4, u128::from(u32::from_be_bytes(a))),
        Parsed::V6(a) => (Family::V6, u128::from_be_bytes(a)),
    };
    let table = &policy.outbound().expect("an outbound table").table;
    match table.lookup(family, addr).map(|i| table.lists[i].action) {
        Some(Action::Drop) => (TC_SHOT, counter::DROPPED),
        Some(Action::Monitor) => (TC_NEXT, counter::MONITORED),
        Some(Action::Reject) => (TC_REDIRECT, counter::REJECTED),
        Some(Action::Pass) | None => (TC_NEXT, counter::PASSED),
    }
}

/// The sum of big-endian 16-bit words (0xffff over data holding its own checksum).
fn word_sum(parts: &[&[u8]]) -> u16 {
    let bytes = parts.concat();
    let mut s: u32 = bytes.chunks(2).map(|p| u32::from(u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)]))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// An answer the program built for `frame`: back to its sender, every checksum
/// valid, a TCP RST or an ICMP(v6) administratively prohibited.
fn check_answer(frame: &[u8], out: &[u8]) {
    use blocker_common::wire::{is_group_mac, is_single_host_v4, is_single_host_v6};
    assert_eq!((&out[..6], &out[6..12]), (&frame[6..12], &frame[..6]), "turned round: {frame:02x?} -> {out:02x?}");
    let l3 = (14..=22)
        .step_by(4)
        .find(|&l| matches!(u16::from_be_bytes([out[l - 2], out[l - 1]]), 0x0800 | 0x86dd))
        .unwrap();
    let ip = &out[l3..];
    // Never an answer to a group, nor from one (RFC 1122 3.2.2, RFC 4443 2.4).
    assert!(!is_group_mac(out[0]) && !is_group_mac(out[6]), "answer between single hosts: {out:02x?}");
    let single_hosts = if ip[0] >> 4 == 4 {
        is_single_host_v4(ip[12]) && is_single_host_v4(ip[16])
    } else {
        is_single_host_v6(ip[8..24].try_into().unwrap()) && is_single_host_v6(ip[24..40].try_into().unwrap())
    };
    assert!(single_hosts, "answer between single hosts: {frame:02x?} -> {out:02x?}");
    if ip[0] >> 4 == 4 {
        assert_eq!(word_sum(&[&ip[..20]]), 0xffff, "IPv4 header checksum: {out:02x?}");
        let l4 = &ip[20..];
        let len = (l4.len() as u16).to_be_bytes();
        match ip[9] {
            6 => assert_eq!(word_sum(&[&ip[12..20], &[0, 6], &len, l4]), 0xffff, "TCP checksum: {out:02x?}"),
            1 => assert_eq!((l4[0], l4[1], word_sum(&[l4])), (3, 13, 0xffff), "ICMP: {out:02x?}"),
            p => panic!("answer of protocol {p}: {out:02x?}"),
        }
    } else {
        let l4 = &ip[40..];
        let len = (l4.len() as u32).to_be_bytes();
        let pseudo = |next: u8| word_sum(&[&ip[8..40], &len, &[0, 0, 0, next], l4]);
        match ip[6] {
            6 => assert_eq!(pseudo(6), 0xffff, "TCP checksum: {out:02x?}"),
            58 => assert_eq!((l4[0], l4[1], pseudo(58)), (1, 1, 0xffff), "ICMPv6: {out:02x?}"),
            p => panic!("answer of next header {p}: {out:02x?}"),
        }
    }
}

fuzz_target!(|frame: &[u8]| {
    // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
    if frame.len() < 14 || frame.len() > 1514 {
        return;
    }
    let mut guard = HARNESS.lock().unwrap();
    let h = guard.get_or_insert_with(harness);
    let before = h.maps.counters().unwrap();
    let prog = object::program_mut(h.maps.ebpf_mut().unwrap()).unwrap();
    let mut out = vec![0u8; 2048];
    let run = prog
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(run.data_size_out as usize);
    let verdict = run.return_value;
    let after = h.maps.counters().unwrap();
    let (mut want_verdict, mut want_counter) = expected(&h.policy, frame);
    if want_verdict == XDP_TX {
        match verdict {
            XDP_TX => check_answer(frame, &out),
            // Not answerable (an error, a later fragment, too short to quote, ...).
            _ => (want_verdict, want_counter) = (XDP_DROP, counter::DROPPED),
        }
    }
    assert_eq!(verdict, want_verdict, "verdict for {frame:02x?} (reference: {:?})", reference_parse(frame));
    for c in 0..counter::COUNT {
        let delta = after.global(c) - before.global(c);
        assert_eq!(delta, u64::from(c == want_counter), "counter {c} for {frame:02x?}");
    }
    check_event(h, frame, if want_counter == counter::REJECTED { counter::DROPPED } else { want_counter });
    check_egress(h, frame);
});

/// The egress program's verdict and outbound counters for `frame`.
fn check_egress(h: &mut Harness, frame: &[u8]) {
    let before = h.maps.counters().unwrap();
    let prog = object::egress_program_mut(h.maps.ebpf_mut().unwrap()).expect("the egress program");
    let mut out = vec![0u8; 2048];
    let run =
        match prog.test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() }) {
            Ok(run) => run,
            // The kernel's skb test run refuses a frame whose IP header is cut
            // short before the program sees it (the stack never sends one; an
            // AF_PACKET frame of the kind reaches the program, which the verifier
            // keeps in bounds, and the XDP run above judged it).
            Err(_) if matches!(reference_parse_destination(frame), Parsed::Malformed) => return,
            Err(e) => panic!("BPF_PROG_TEST_RUN of the egress program for {frame:02x?}: {e}"),
        };
    out.truncate(run.data_size_out as usize);
    let after = h.maps.counters().unwrap();
    let (mut want_verdict, mut want_counter) = expected_outbound(&h.policy, frame);
    if want_verdict == TC_REDIRECT {
        match run.return_value {
            TC_REDIRECT => check_answer(frame, &out),
            _ => (want_verdict, want_counter) = (TC_SHOT, counter::DROPPED),
        }
    }
    assert_eq!(run.return_value, want_verdict, "egress verdict for {frame:02x?}");
    for c in 0..counter::COUNT as usize {
        let delta = after.outbound[c] - before.outbound[c];
        assert_eq!(delta, u64::from(c as u32 == want_counter), "outbound counter {c} for {frame:02x?}");
        assert_eq!(after.global[c], before.global[c], "no inbound count on egress for {frame:02x?}");
    }
    assert!(h.ring.read_all().is_empty(), "no events of outbound packets");
}

/// The event of a dropped or monitored frame matches the reference L4 parse.
fn check_event(h: &mut Harness, frame: &[u8], want_counter: u32) {
    let events = h.ring.read_all();
    if want_counter != counter::DROPPED && want_counter != counter::MONITORED {
        assert!(events.is_empty(), "no event for {frame:02x?}: {events:?}");
        return;
    }
    assert_eq!(events.len(), 1, "one event for {frame:02x?}: {events:?}");
    let e = &events[0];
    let (protocol, port, flags) = reference_l4(frame).expect("an IP frame");
    let l4 = match flags {
        0 => None,
        FLAG_LATER_FRAGMENT => Some("later fragment"),
        FLAG_NO_L4 => Some("unreachable"),
        other => panic!("reference flags {other}"),
    };
    let dst_port = (flags == 0 && has_ports(protocol)).then_some(port);
    assert_eq!((e.protocol, e.dst_port, e.l4.as_deref()), (protocol, dst_port, l4), "L4 of {frame:02x?}");
    assert_eq!(e.frame_len as usize, frame.len());
}

//! The XDP program's packet parser, through BPF_PROG_TEST_RUN: the program in the
//! kernel, loaded once with a fixed table, judges every input frame, and its
//! verdict and counters must match the reference (`reference_parse`, then the
//! compiled table's own lookup). A dropped or monitored frame's event must carry
//! the L4 protocol and port the reference L4 parser (`reference_l4`) reads.
//! Needs root, like the tests.
#![no_main]

use std::sync::Mutex;

use aya::programs::{TestRun as _, TestRunOptions};
use blocker::{
    compile::table::{compile, CompiledTable},
    dataplane::{
        maps::{DataplaneMaps, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    events::reader::EventRing,
    net::{parse_prefix, Family},
    policy::{Action, ListSpec, Role},
};
use blocker_common::{
    counter,
    events::{has_ports, FLAG_LATER_FRAGMENT, FLAG_NO_L4},
};
use blocker_tests::frames::{reference_l4, reference_parse, Parsed};
use libfuzzer_sys::fuzz_target;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

struct Harness {
    maps: DataplaneMaps,
    table: CompiledTable,
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
    let table = compile(&lists);
    maps.apply(&table, DEFAULT_TABLE_MEMORY).expect("apply the table");
    Harness { maps, table, ring }
}

static HARNESS: Mutex<Option<Harness>> = Mutex::new(None);

/// The verdict and the global counter the reference expects for `frame`.
fn expected(table: &CompiledTable, frame: &[u8]) -> (u32, u32) {
    let (family, addr) = match reference_parse(frame) {
        Parsed::NonIp => return (XDP_PASS, counter::NON_IP),
        Parsed::Malformed => return (XDP_PASS, counter::MALFORMED),
        Parsed::V4(a) => (Family::V4, u128::from(u32::from_be_bytes(a))),
        Parsed::V6(a) => (Family::V6, u128::from_be_bytes(a)),
    };
    match table.lookup(family, addr).map(|i| table.lists[i].action) {
        Some(Action::Drop) => (XDP_DROP, counter::DROPPED),
        Some(Action::Monitor) => (XDP_PASS, counter::MONITORED),
        Some(Action::Pass) | None => (XDP_PASS, counter::PASSED),
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
    let verdict = prog
        .test_run(TestRunOptions { data_in: Some(frame), ..Default::default() })
        .expect("BPF_PROG_TEST_RUN")
        .return_value;
    let after = h.maps.counters().unwrap();
    let (want_verdict, want_counter) = expected(&h.table, frame);
    assert_eq!(verdict, want_verdict, "verdict for {frame:02x?} (reference: {:?})", reference_parse(frame));
    for c in 0..counter::COUNT {
        let delta = after.global(c) - before.global(c);
        assert_eq!(delta, u64::from(c == want_counter), "counter {c} for {frame:02x?}");
    }
    check_event(h, frame, want_counter);
});

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

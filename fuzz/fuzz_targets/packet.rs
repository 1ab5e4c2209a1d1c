//! The XDP program's packet parser, through BPF_PROG_TEST_RUN: the program in the
//! kernel, loaded once with a fixed table, judges every input frame, and its
//! verdict and counters must match the reference (`reference_parse`, then the
//! compiled table's own lookup). Needs root, like the tests.
#![no_main]

use std::sync::Mutex;

use aya::programs::{TestRun as _, TestRunOptions};
use blocker::{
    compile::table::{compile, CompiledTable},
    dataplane::{
        maps::{DataplaneMaps, DEFAULT_TABLE_MEMORY},
        object, pins,
    },
    net::{parse_prefix, Family},
    policy::{Action, ListSpec, Role},
};
use blocker_common::counter;
use blocker_tests::frames::{reference_parse, Parsed};
use libfuzzer_sys::fuzz_target;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

struct Harness {
    maps: DataplaneMaps,
    table: CompiledTable,
}

fn list(name: &str, role: Role, prefixes: &[&str]) -> ListSpec {
    ListSpec { name: name.into(), role, prefixes: prefixes.iter().map(|p| parse_prefix(p).unwrap()).collect() }
}

fn harness() -> Harness {
    // Pins under a directory of this process; `cargo xtask fuzz` removes it.
    let root = std::path::PathBuf::from(format!("/sys/fs/bpf/blocker-fuzz-{}", std::process::id()));
    pins::ensure_bpffs(&root).expect("a bpffs (run as root)");
    let mut maps = DataplaneMaps::load(&pins::iface_dir(&root, "fuzz"), 0).expect("load the XDP program (root?)");
    // Short prefixes, so random frames hit them: deny, an allow hole, a monitor list.
    let lists = [
        list("deny", Role::Deny, &["0.0.0.0/2", "2000::/3", "::/8"]),
        list("allow", Role::Exception, &["32.0.0.0/4", "2000::/5"]),
        list("monitor", Role::Monitor, &["128.0.0.0/2", "fc00::/7"]),
    ];
    let table = compile(&lists);
    maps.apply(&table, DEFAULT_TABLE_MEMORY).expect("apply the table");
    Harness { maps, table }
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
});

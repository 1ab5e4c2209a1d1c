//! The classifier's memory is what the kernel puts in its direct map: a table of
//! many pieces adds no vmalloc'ed array (checked in /proc/vmallocinfo, where the
//! kernel lists every vmalloc area with its caller), answers through its pieces
//! like the compiler's reference, and reports the memory the kernel charges.
//! One test in its own binary: no other test allocates maps meanwhile.
// The package's dependencies serve its library, binary, tests and benches alike;
// unused_crate_dependencies is checked on the library.
#![allow(unused_crate_dependencies)]

use std::path::Path;

use blocker::{
    compile::table::compile,
    dataplane::{
        maps::{pinned_map_memory, DataplaneMaps, DEFAULT_TABLE_MEMORY},
        pins,
    },
    net::Family,
    policy::{ListSpec, Role},
    source::cidr_list::parse_list,
};
use blocker_common::classifier::{PIECE_BLOCKS, PIECE_BYTES};
use blocker_tests::{daemon::PinRoot, tables, unique_tag, Rng};

/// vmalloc areas whose caller is the array map's allocation.
fn vmalloced_arrays() -> usize {
    let text = std::fs::read_to_string("/proc/vmallocinfo").expect("read /proc/vmallocinfo (root)");
    text.lines().filter(|l| l.contains("array_map_alloc")).count()
}

#[test]
fn a_large_table_lies_in_kmalloced_pieces_and_answers_through_them() {
    let mut rng = Rng(0x5eed_0fb1_0c00);
    let v4 = tables::random_v4_hosts(&mut rng, 400_000);
    let v6 = tables::random_v6_hosts(&mut rng, 50_000);
    let text = tables::list_text(&v4, &v6, &[]);
    let prefixes = parse_list(Path::new("hosts.txt"), &text).unwrap();
    let table = compile(&[ListSpec { name: "hosts".into(), role: Role::Deny, prefixes }]);

    let root = PinRoot::new(&format!("pieces-{}", unique_tag()));
    pins::ensure_bpffs(&root.0).unwrap();
    let dir = pins::iface_dir(&root.0, "test");
    let mut maps = DataplaneMaps::load(&dir, 0).unwrap();
    let before = vmalloced_arrays();
    let report = maps.apply(&table, DEFAULT_TABLE_MEMORY).unwrap();
    let after = vmalloced_arrays();
    let pieces = report.table_bytes as usize / PIECE_BYTES;
    assert!(pieces >= 100, "the table is {} bytes: {pieces} pieces", report.table_bytes);
    // The new instance's other arrays (its read-only data, the port map) may be
    // vmalloc'ed; none of its pieces is.
    assert!(
        after.saturating_sub(before) < 8,
        "{} more vmalloc'ed arrays after a table of {pieces} pieces",
        after.saturating_sub(before)
    );

    // The live table, read piece by piece, answers like the compiled one, at
    // addresses spread over every piece.
    let live = maps.live_table().unwrap();
    let listed = |family, addr| table.lookup(family, addr).is_some();
    for (i, &addr) in v4.iter().enumerate().step_by(97) {
        for a in [u128::from(addr), u128::from(addr ^ 1)] {
            assert_eq!(live.lookup(Family::V4, a).is_some(), listed(Family::V4, a), "address {i}: {a:#x}");
        }
    }
    for &addr in v6.iter().step_by(13) {
        for a in [addr, addr ^ 1] {
            assert_eq!(live.lookup(Family::V6, a).is_some(), listed(Family::V6, a), "{a:#x}");
        }
    }

    // The memory the kernel charges for the table: each piece a little over its
    // content (the array's 312-byte header), plus the outer arrays and the port map.
    let pinned: u64 = pinned_map_memory(&dir).unwrap().iter().map(|(_, b)| b).sum();
    let table_memory = maps.memory().unwrap() - pinned;
    let content = report.table_bytes;
    assert!(table_memory >= content, "memory {table_memory} < content {content}");
    assert!(
        table_memory <= content + content / 50 + (256 << 10),
        "memory {table_memory} for {content} bytes of table ({} per piece of {PIECE_BLOCKS} blocks)",
        PIECE_BYTES
    );
}

//! The classifier: source address -> list id. Replacing the data structure means
//! replacing this file and its userspace builder (`blocker::classifier`).
//!
//! A multibit trie (see `blocker_common::trie`): the root is indexed by the first
//! 16 bits, each further level by one byte, and the walk stops at the first leaf. Userspace compiles the disjoint prefix
//! table into nodes and writes them through mmap into the idle generation's array,
//! then flips BLK_CONFIG[ACTIVE_GEN].

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{lpm_trie::Key, Array, LpmTrie},
};
use blocker_common::{
    trie::{v4, v6, LEAF_LIMIT},
    V4Node, V6Node, LPM_BASELINE_ENTRIES,
};

#[map]
static BLK_V4_G0: Array<V4Node> = Array::pinned(v4::NODES, BPF_F_MMAPABLE);
#[map]
static BLK_V4_G1: Array<V4Node> = Array::pinned(v4::NODES, BPF_F_MMAPABLE);
#[map]
static BLK_V6_G0: Array<V6Node> = Array::pinned(v6::NODES, BPF_F_MMAPABLE);
#[map]
static BLK_V6_G1: Array<V6Node> = Array::pinned(v6::NODES, BPF_F_MMAPABLE);

/// The list id of a leaf entry (None for "no list").
#[inline(always)]
fn leaf(e: u16) -> Option<u32> {
    if e == 0 || e >= LEAF_LIMIT {
        None
    } else {
        Some(u32::from(e) - 1)
    }
}

/// Walks the trie over `bytes` (network order): the root entry of the first two
/// bytes, then one byte per level; the list id of the leaf reached.
#[inline(always)]
fn walk<const N: usize>(table: &Array<[u16; 256]>, root_nodes: u32, bytes: &[u8; N]) -> Option<u32> {
    let mut e = table.get(u32::from(bytes[0]))?[bytes[1] as usize];
    let mut i = 2;
    // A bounded loop: N - 2 further levels at most.
    while i < N && e >= LEAF_LIMIT {
        let node = root_nodes + u32::from(e - LEAF_LIMIT);
        e = table.get(node)?[bytes[i] as usize];
        i += 1;
    }
    leaf(e)
}

/// The list id whose range holds `src` in generation `gen`.
#[inline(always)]
pub fn lookup_v4(gen: u32, src: [u8; 4]) -> Option<u32> {
    walk(if gen == 0 { &BLK_V4_G0 } else { &BLK_V4_G1 }, v4::ROOT_NODES, &src)
}

#[inline(always)]
pub fn lookup_v6(gen: u32, src: [u8; 16]) -> Option<u32> {
    walk(if gen == 0 { &BLK_V6_G0 } else { &BLK_V6_G1 }, v6::ROOT_NODES, &src)
}

// The kernel LPM trie classifier, kept as the benchmark baseline (one generation,
// not pinned, filled by the harness).
#[map]
static BLK_LPM_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(LPM_BASELINE_ENTRIES, 0);
#[map]
static BLK_LPM_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(LPM_BASELINE_ENTRIES, 0);

#[inline(always)]
pub fn lpm_baseline_v4(src: [u8; 4]) -> Option<u32> {
    BLK_LPM_V4.get(Key::new(32, src)).copied()
}

#[inline(always)]
pub fn lpm_baseline_v6(src: [u8; 16]) -> Option<u32> {
    BLK_LPM_V6.get(Key::new(128, src)).copied()
}

//! The classifier: source address -> list id, one longest-prefix-match lookup per
//! packet in the live generation's table. Replacing the data structure means
//! replacing this file and its userspace builder (`blocker::maps::tables`).

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, LpmTrie},
};
use blocker_common::{MAX_PREFIXES_V4, MAX_PREFIXES_V6};

// Two generations per family: userspace fills the idle one, then flips
// BLK_CONFIG[ACTIVE_GEN], so a packet never sees a half-loaded table.
#[map]
static BLK_V4_G0: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(MAX_PREFIXES_V4, 0);
#[map]
static BLK_V4_G1: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(MAX_PREFIXES_V4, 0);
#[map]
static BLK_V6_G0: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(MAX_PREFIXES_V6, 0);
#[map]
static BLK_V6_G1: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(MAX_PREFIXES_V6, 0);

/// The list id whose range holds `src` in generation `gen`.
#[inline(always)]
pub fn lookup_v4(gen: u32, src: [u8; 4]) -> Option<u32> {
    // LPM keys hold the address in network byte order: the raw header bytes.
    let key = Key::new(32, src);
    let table = if gen == 0 { &BLK_V4_G0 } else { &BLK_V4_G1 };
    table.get(&key).copied()
}

#[inline(always)]
pub fn lookup_v6(gen: u32, src: [u8; 16]) -> Option<u32> {
    let key = Key::new(128, src);
    let table = if gen == 0 { &BLK_V6_G0 } else { &BLK_V6_G1 };
    table.get(&key).copied()
}

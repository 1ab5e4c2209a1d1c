//! The classifier: source address -> leaf (list id and action). One definition of
//! its memory format and of the walk, used by the XDP program (over its maps) and
//! by userspace (over a built image, or over the kernel's maps mapped in).
//!
//! A DXR-style range table per family, sized to its content:
//! - `DIR`: a direct table of 65,536 u32, indexed by the address's first 16 bits.
//!   An entry with `DIR_LEAF` set is the leaf for the whole /16; otherwise it is
//!   the index in `RANGES` of the /16's chunk.
//! - `RANGES`: chunks of sorted range starts, each entry `key << 16 | leaf`, where
//!   `key` is the start within the /16 (IPv4: the low 16 bits; IPv6: bits 16..63,
//!   a /64 unit). A chunk's first range always starts at key 0, so its key field
//!   holds the chunk's length minus one instead. A lookup is a bounded binary
//!   search for the last start at or below the address.
//! - IPv6 only: a /64 unit cut by longer prefixes (hosts, /96s) has the leaf
//!   `LEAF_HOSTS`; `EXT` (parallel to `RANGES`) gives its chunk in `HOST_KEYS` /
//!   `HOST_VALUES`, the same search over the low 64 bits.
//!
//! Memory: 256 KiB per family for `DIR`, then 4 bytes per IPv4 range, 12 per IPv6
//! /64-level range and 10 per range inside a cut /64. Every map is an array of
//! 64-byte blocks (one cache line; arrays round each value up to 8 bytes, so
//! smaller values would waste memory).

/// Entries of each family's direct table (the first 16 bits of the address).
pub const DIR_ENTRIES: u32 = 1 << 16;
/// A direct-table entry that is a leaf rather than a chunk index.
pub const DIR_LEAF: u32 = 1 << 31;

/// Bytes of one block, the value of every classifier map.
pub const BLOCK_BYTES: usize = 64;
pub type Block32 = [u32; 16];
pub type Block64 = [u64; 8];
pub type Block16 = [u16; 32];

/// Leaves: 0 = no list; else `action << 12 | (list_id + 1)`.
pub const LEAF_NONE: u16 = 0;
/// IPv6 ranges only: the /64 continues in the host chunk named by `EXT`.
pub const LEAF_HOSTS: u16 = 0xffff;
const LEAF_LIST_BITS: u32 = 12;
const _: () = assert!(crate::MAX_LISTS < (1 << LEAF_LIST_BITS));

#[inline(always)]
pub const fn leaf(action: u32, list_id: u32) -> u16 {
    ((action << LEAF_LIST_BITS) | (list_id + 1)) as u16
}
/// The list id of a leaf other than `LEAF_NONE` / `LEAF_HOSTS`.
#[inline(always)]
pub const fn leaf_list(leaf: u16) -> u32 {
    (leaf as u32 & ((1 << LEAF_LIST_BITS) - 1)).wrapping_sub(1)
}
#[inline(always)]
pub const fn leaf_action(leaf: u16) -> u32 {
    leaf as u32 >> LEAF_LIST_BITS
}

/// Bits of the IPv6 range keys (bits 16..63 of the address).
pub const V6_KEY_BITS: u32 = 48;
const V6_KEY_MASK: u64 = (1 << V6_KEY_BITS) - 1;
/// Binary search steps: a chunk of n ranges needs ceil(log2 n). IPv4 chunks hold
/// at most 65,536 ranges; the others at most 2^32 (the builder refuses more).
pub const V4_STEPS: u32 = 16;
pub const WIDE_STEPS: u32 = 32;

/// Read access to a table's memory, by element index across its blocks.
pub trait Memory {
    fn v4_dir(&self, i: u32) -> Option<u32>;
    fn v4_range(&self, i: u32) -> Option<u32>;
    fn v6_dir(&self, i: u32) -> Option<u32>;
    fn v6_range(&self, i: u32) -> Option<u64>;
    fn v6_ext(&self, i: u32) -> Option<u32>;
    fn v6_host_key(&self, i: u32) -> Option<u64>;
    fn v6_host_value(&self, i: u32) -> Option<u16>;
}

/// The last index in `start .. start + n` whose key is at or below `key`; the key
/// of `start` itself is never read (it is 0 by construction).
#[inline(always)]
fn search(key_at: impl Fn(u32) -> Option<u64>, start: u32, n: u64, key: u64, steps: u32) -> Option<u32> {
    let mut lo = start;
    let mut len = n;
    let mut step = 0;
    while step < steps && len > 1 {
        let half = len / 2;
        if key_at(lo.wrapping_add(half as u32))? <= key {
            lo = lo.wrapping_add(half as u32);
            len -= half;
        } else {
            len = half;
        }
        step += 1;
    }
    Some(lo)
}

/// The leaf of an IPv4 address (host order). None only for a damaged table.
#[inline(always)]
pub fn lookup_v4(m: &impl Memory, addr: u32) -> Option<u16> {
    let d = m.v4_dir(addr >> 16)?;
    if d & DIR_LEAF != 0 {
        return Some(d as u16);
    }
    let n = u64::from(m.v4_range(d)? >> 16) + 1;
    let i = search(|i| m.v4_range(i).map(|e| u64::from(e >> 16)), d, n, u64::from(addr & 0xffff), V4_STEPS)?;
    m.v4_range(i).map(|e| e as u16)
}

/// The leaf of an IPv6 address given as its upper and lower 64 bits.
#[inline(always)]
pub fn lookup_v6(m: &impl Memory, hi: u64, lo: u64) -> Option<u16> {
    let d = m.v6_dir((hi >> 48) as u32)?;
    if d & DIR_LEAF != 0 {
        return Some(d as u16);
    }
    let n = (m.v6_range(d)? >> 16) + 1;
    let i = search(|i| m.v6_range(i).map(|e| e >> 16), d, n, hi & V6_KEY_MASK, WIDE_STEPS)?;
    let leaf = m.v6_range(i)? as u16;
    if leaf != LEAF_HOSTS {
        return Some(leaf);
    }
    let h = m.v6_ext(i)?;
    let n = m.v6_host_key(h)?.wrapping_add(1);
    let j = search(|i| m.v6_host_key(i), h, n, lo, WIDE_STEPS)?;
    m.v6_host_value(j)
}

//! The classifier: source address -> leaf (list id and action). One definition of
//! its memory format and of the walk, used by the XDP program (over its maps) and
//! by userspace (over a built image, or over the kernel's maps mapped in).
//!
//! A DXR-style range table per family, sized to its content:
//! - `DIR`: a direct table of 2^b u32, indexed by the address's first b bits,
//!   where b (16..=24, per family and per table) grows with the table so that
//!   chunks stay short: about one entry per range. An entry with `DIR_LEAF` set is
//!   the leaf for the whole /b; otherwise it is the index in `RANGES` of the /b's
//!   chunk. The program reads b from a read-only global set when it is loaded,
//!   which the verifier treats as a constant.
//! - `RANGES`: chunks of sorted range starts, each entry `key << 16 | leaf`, where
//!   `key` is the start within the /b (IPv4: the low 32-b bits; IPv6: bits b..63,
//!   a /64 unit). A chunk's first range always starts at key 0, so its key field
//!   holds the chunk's length minus one instead. A lookup is a bounded binary
//!   search for the last start at or below the address.
//! - IPv6 only: a /64 unit cut by longer prefixes (hosts, /96s) has the leaf
//!   `LEAF_HOSTS`; `EXT` (parallel to `RANGES`) gives its chunk in `HOST_KEYS` /
//!   `HOST_VALUES`, the same search over the low 64 bits.
//!
//! A chunk that fits in one 64-byte block never straddles two (the builder pads
//! before it), so its whole search reads one block.
//!
//! An image may hold several tables, one per scope (`crate::scope`), with one
//! shape: scope s's direct table is entries `s << b ..` of `DIR`, and its
//! chunks lie after those of the scopes before it.
//!
//! A layout with the chunk inside its direct-table entry (a 64-byte bucket per
//! /b, one cache line per lookup) was measured end to end and lost to this one,
//! for the world table and for a 2M-address list alike: the larger first level
//! costs more cache and TLB misses than the second read it saves.
//!
//! Memory: 4 bytes per `DIR` entry (at least 256 KiB per family, at most one
//! entry per range of the table above that), then 4 bytes per IPv4 range, 12 per
//! IPv6 /64-level range and 10 per range inside a cut /64. Every map is 64-byte
//! blocks (one cache line) held in pieces of just under 32 KiB (`PIECE_BLOCKS`),
//! which the kernel allocates in its huge-page direct map.

/// Bits of the address that index a family's direct table: at least
/// `MIN_DIR_BITS` (256 KiB), at most `MAX_DIR_BITS` (64 MiB).
pub const MIN_DIR_BITS: u32 = 16;
pub const MAX_DIR_BITS: u32 = 24;
/// A direct-table entry that is a leaf rather than a chunk index.
pub const DIR_LEAF: u32 = 1 << 31;

/// How a table's direct tables are laid out, chosen per table by the builder.
/// The program gets it as read-only globals (constants to the verifier), and
/// userspace from the instance's `BLK_SHAPE` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct Shape {
    /// b of each family's direct table.
    pub v4_bits: u32,
    pub v6_bits: u32,
    /// Tables in the image, one per scope (at least 1). The walk does not read
    /// it (a scope past the maps finds nothing); userspace does.
    pub scopes: u32,
}

impl Shape {
    /// The smallest shape: 256 KiB per family for the direct tables.
    pub const SMALLEST: Shape = Shape { v4_bits: MIN_DIR_BITS, v6_bits: MIN_DIR_BITS, scopes: 1 };

    /// The same with `scopes` tables.
    pub const fn with_scopes(self, scopes: u32) -> Shape {
        Shape { scopes, ..self }
    }

    /// Whether a lookup can use it (a damaged table is never walked).
    #[inline(always)]
    pub fn valid(&self) -> bool {
        (MIN_DIR_BITS..=MAX_DIR_BITS).contains(&self.v4_bits) && (MIN_DIR_BITS..=MAX_DIR_BITS).contains(&self.v6_bits)
    }
}

/// Bytes of one block, the unit every classifier map is indexed in.
pub const BLOCK_BYTES: usize = 64;

/// Blocks of one piece. Each classifier map is an array of maps whose inner maps
/// are one-element arrays holding a piece: block `b` is block `b % PIECE_BLOCKS`
/// of piece `b / PIECE_BLOCKS`.
///
/// Why pieces: the kernel allocates an array map of at most 32 KiB (the value and
/// its 312-byte `struct bpf_array` header, measured on 6.18) with kmalloc, in the
/// direct map, which 1 GiB and 2 MiB pages back; a larger one, or any mmapable
/// one, is vmalloc'ed in 4 KiB pages, and each lookup in a table of megabytes
/// then risks a TLB miss and, in a guest, a nested page walk. 507 blocks (32,448
/// bytes) is the most that keeps a piece under 32 KiB.
pub const PIECE_BLOCKS: u32 = 507;
/// A piece: the value of each inner map. A struct rather than a bare array so
/// that its BTF type carries its size (aya reads an array's as its element's).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Piece {
    pub blocks: [Block64; PIECE_BLOCKS as usize],
}

#[cfg(feature = "user")]
// SAFETY: plain integers, no padding.
unsafe impl aya::Pod for Piece {}
pub const PIECE_BYTES: usize = PIECE_BLOCKS as usize * BLOCK_BYTES;
/// Pieces of a map of `blocks` blocks (at least one: a map is never empty).
pub const fn pieces(blocks: usize) -> usize {
    let n = blocks.div_ceil(PIECE_BLOCKS as usize);
    if n == 0 {
        1
    } else {
        n
    }
}
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

/// Binary search steps: a chunk of n ranges needs ceil(log2 n). IPv4 chunks hold
/// at most 2^(32 - MIN_DIR_BITS) ranges; the others at most 2^32 (the builder
/// refuses more).
pub const V4_STEPS: u32 = 32 - MIN_DIR_BITS;
pub const WIDE_STEPS: u32 = 32;

/// A 64-byte block of elements.
pub trait Slots {
    type Elem: Copy;
    /// log2 of the elements per block.
    const SHIFT: u32;
    /// Element `i` of the map, given the block that holds it (`i >> SHIFT`).
    fn slot(&self, i: u32) -> Self::Elem;
}

impl Slots for Block32 {
    type Elem = u32;
    const SHIFT: u32 = 4;
    #[inline(always)]
    fn slot(&self, i: u32) -> u32 {
        self[(i & 15) as usize]
    }
}

impl Slots for Block64 {
    type Elem = u64;
    const SHIFT: u32 = 3;
    #[inline(always)]
    fn slot(&self, i: u32) -> u64 {
        self[(i & 7) as usize]
    }
}

impl Slots for Block16 {
    type Elem = u16;
    const SHIFT: u32 = 5;
    #[inline(always)]
    fn slot(&self, i: u32) -> u16 {
        self[(i & 31) as usize]
    }
}

/// Read access to a table's memory, block by block (`None` past a map's end).
pub trait Memory {
    fn shape(&self) -> Shape;
    fn v4_dir(&self, block: u32) -> Option<&Block32>;
    fn v4_ranges(&self, block: u32) -> Option<&Block32>;
    fn v6_dir(&self, block: u32) -> Option<&Block32>;
    fn v6_ranges(&self, block: u32) -> Option<&Block64>;
    fn v6_ext(&self, block: u32) -> Option<&Block32>;
    fn v6_host_keys(&self, block: u32) -> Option<&Block64>;
    fn v6_host_values(&self, block: u32) -> Option<&Block16>;
}

/// Element `i` of a map read through `block_at`.
#[inline(always)]
fn element<'a, B: Slots + 'a>(block_at: impl Fn(u32) -> Option<&'a B>, i: u32) -> Option<B::Elem> {
    block_at(i >> B::SHIFT).map(|b| b.slot(i))
}

/// The bounded search of `search` inside one block, for `n` at most its slots.
#[inline(always)]
fn search_block<B: Slots>(block: &B, key_of: impl Fn(B::Elem) -> u64, start: u32, n: u64, key: u64) -> (u32, B::Elem) {
    let mut lo = start;
    let mut found = block.slot(start);
    let mut len = n;
    let mut step = 0;
    while step < B::SHIFT && len > 1 {
        let half = len / 2;
        let e = block.slot(lo.wrapping_add(half as u32));
        if key_of(e) <= key {
            lo = lo.wrapping_add(half as u32);
            found = e;
        }
        len -= half;
        step += 1;
    }
    (lo, found)
}

/// Searches the chunk `start .. start + n` for the last element whose key is at
/// or below `key`, and returns its index and the element. `first` is the block
/// holding `start`; the key of `start` itself is never read (it is 0 by
/// construction; the slot holds the chunk's length instead).
///
/// The builder never lets a chunk that fits in one block straddle two, so such a
/// chunk is searched inside `first` without another map access: the common case
/// once the direct table is sized to the table. Larger chunks read one block per
/// step. The answer lies in `lo .. lo + len`; each step halves `len` whatever the
/// comparison, so the steps are ceil(log2 n) and only the comparison depends on
/// the data.
#[inline(always)]
fn search<'a, B: Slots + 'a>(
    block_at: impl Fn(u32) -> Option<&'a B>,
    key_of: impl Fn(B::Elem) -> u64,
    first: &'a B,
    start: u32,
    n: u64,
    key: u64,
    steps: u32,
) -> Option<(u32, B::Elem)> {
    if u64::from(start & ((1 << B::SHIFT) - 1)) + n <= 1 << B::SHIFT {
        return Some(search_block(first, key_of, start, n, key));
    }
    let mut lo = start;
    let mut found = first.slot(start);
    let mut len = n;
    let mut step = 0;
    while step < steps && len > 1 {
        let half = len / 2;
        let mid = lo.wrapping_add(half as u32);
        let e = element(&block_at, mid)?;
        if key_of(e) <= key {
            lo = mid;
            found = e;
        }
        len -= half;
        step += 1;
    }
    Some((lo, found))
}

/// The leaf of an IPv4 address (host order) in the table of `scope` (0 for an
/// image of one table). None only for a damaged table.
#[inline(always)]
pub fn lookup_v4(m: &impl Memory, scope: u32, addr: u32) -> Option<u16> {
    let shape = m.shape();
    if !shape.valid() {
        return None;
    }
    let bits = shape.v4_bits;
    let key = u64::from(addr & ((1 << (32 - bits)) - 1));
    // Each scope's direct table follows the one before it.
    let d = element(|b| m.v4_dir(b), (scope << bits) | (addr >> (32 - bits)))?;
    if d & DIR_LEAF != 0 {
        return Some(d as u16);
    }
    let first = m.v4_ranges(d >> Block32::SHIFT)?;
    let n = u64::from(first.slot(d) >> 16) + 1;
    let (_, e) = search(|b| m.v4_ranges(b), |e| u64::from(e >> 16), first, d, n, key, V4_STEPS)?;
    Some(e as u16)
}

/// The leaf of an IPv6 address given as its upper and lower 64 bits, in the
/// table of `scope`.
#[inline(always)]
pub fn lookup_v6(m: &impl Memory, scope: u32, hi: u64, lo: u64) -> Option<u16> {
    let shape = m.shape();
    if !shape.valid() {
        return None;
    }
    let bits = shape.v6_bits;
    let d = element(|b| m.v6_dir(b), (scope << bits) | (hi >> (64 - bits)) as u32)?;
    if d & DIR_LEAF != 0 {
        return Some(d as u16);
    }
    let first = m.v6_ranges(d >> Block64::SHIFT)?;
    let n = (first.slot(d) >> 16) + 1;
    let key = hi & ((1 << (64 - bits)) - 1);
    let (i, e) = search(|b| m.v6_ranges(b), |e| e >> 16, first, d, n, key, WIDE_STEPS)?;
    let leaf = e as u16;
    if leaf != LEAF_HOSTS {
        return Some(leaf);
    }
    let h = element(|b| m.v6_ext(b), i)?;
    let first = m.v6_host_keys(h >> Block64::SHIFT)?;
    let n = first.slot(h).wrapping_add(1);
    let (j, _) = search(|b| m.v6_host_keys(b), |e| e, first, h, n, lo, WIDE_STEPS)?;
    element(|b| m.v6_host_values(b), j)
}

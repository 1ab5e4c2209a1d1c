//! The classifier's userspace half: compiles a disjoint prefix table into the
//! multibit trie the XDP program walks (see `blocker_common::trie` and
//! blocker-ebpf/src/classify.rs), and walks it the same way for `lookup` and tests.

use blocker_common::{
    trie::{CHUNK_ENTRIES, PTR, ROOT_CHUNKS},
    Chunk,
};

use crate::lists::{Family, Prefix};

/// A compiled trie: chunk 0..ROOT_CHUNKS is the root, the rest are allocated in order.
#[derive(Clone, Debug)]
pub struct TrieImage {
    pub chunks: Vec<Chunk>,
}

fn bytes_of(family: Family, addr: u128) -> ([u8; 16], usize) {
    let all = addr.to_be_bytes();
    match family {
        Family::V4 => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&all[12..]);
            (b, 4)
        }
        Family::V6 => (all, 16),
    }
}

impl TrieImage {
    /// Builds the trie for `entries` (disjoint prefixes, as the compiler produces);
    /// `leaf(list)` is the list id the kernel counts a hit under.
    pub fn build(family: Family, entries: &[(Prefix, usize)], leaf: impl Fn(usize) -> u32) -> TrieImage {
        let mut chunks: Vec<Chunk> = vec![[0u16; CHUNK_ENTRIES]; ROOT_CHUNKS as usize];
        let bits = u32::from(family.bits());
        for (p, list) in entries {
            let value = u16::try_from(leaf(*list) + 1).expect("list ids fit below PTR");
            debug_assert!(value & PTR == 0);
            let len = u32::from(p.len);
            // Root: 65,536 entries indexed by the first 16 bits.
            let root = (p.addr >> (bits - 16)) as usize;
            if len <= 16 {
                let span = 1usize << (16 - len);
                for r in root..root + span {
                    chunks[r >> 8][r & 0xff] = value;
                }
                continue;
            }
            let mut slot = (root >> 8, root & 0xff);
            let mut depth = 16;
            loop {
                // Descend into the chunk behind `slot`, creating it if needed.
                let e = chunks[slot.0][slot.1];
                let next = if e & PTR != 0 {
                    usize::from(e & !PTR)
                } else {
                    // A new chunk inherits the entry it replaces (disjoint input: 0).
                    chunks.push([e; CHUNK_ENTRIES]);
                    let n = chunks.len() - 1;
                    // Past 0x7fff chunks the pointer would not fit; such an image is
                    // larger than any table's capacity and is refused before use.
                    chunks[slot.0][slot.1] = PTR | (n as u16 & !PTR);
                    n
                };
                let byte = ((p.addr >> (bits - depth - 8)) & 0xff) as usize;
                if len <= depth + 8 {
                    let span = 1usize << (depth + 8 - len);
                    chunks[next][byte..byte + span].fill(value);
                    break;
                }
                slot = (next, byte);
                depth += 8;
            }
        }
        TrieImage { chunks }
    }

    pub fn lookup(&self, family: Family, addr: u128) -> Option<u32> {
        walk(&self.chunks, family, addr)
    }
}

/// The walk of blocker-ebpf/src/classify.rs, over chunks in memory.
pub fn walk(chunks: &[Chunk], family: Family, addr: u128) -> Option<u32> {
    let (bytes, n) = bytes_of(family, addr);
    let mut e = chunks.get(usize::from(bytes[0]))?[usize::from(bytes[1])];
    for b in &bytes[2..n] {
        if e & PTR == 0 {
            break;
        }
        e = chunks.get(usize::from(e & !PTR))?[usize::from(*b)];
    }
    (e != 0 && e & PTR == 0).then(|| u32::from(e) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compile::{compile, ListSpec, Role},
        lists::parse_prefix,
        regions::RegionDb,
    };

    fn check_equal(table: &crate::compile::CompiledTable, family: Family, probes: impl IntoIterator<Item = u128>) {
        let image = TrieImage::build(family, table.entries(family), |l| l as u32);
        for a in probes {
            assert_eq!(image.lookup(family, a), table.lookup(family, a).map(|l| l as u32), "{family:?} {a:#x}");
        }
    }

    fn boundaries(table: &crate::compile::CompiledTable, family: Family) -> Vec<u128> {
        let mut v = Vec::new();
        for (p, _) in table.entries(family) {
            let (lo, hi) = p.range();
            v.extend([lo.wrapping_sub(1), lo, lo.wrapping_add(1), hi.wrapping_sub(1), hi, hi.wrapping_add(1)]);
        }
        v.retain(|a| *a <= family.max_addr());
        v
    }

    #[test]
    fn every_prefix_length_and_boundary() {
        let mut prefixes = Vec::new();
        for len in 0..=32u8 {
            // Disjoint by construction: one prefix per length in its own /8.
            let addr = (u128::from(len) + 1) << 24;
            let host = 32 - u32::from(len);
            prefixes.push(Prefix { family: Family::V4, addr: addr & !((1u128 << host) - 1) & 0xffff_ffff, len });
        }
        for len in [1u8, 15, 16, 17, 24, 31, 32, 33, 47, 48, 49, 64, 65, 100, 127, 128] {
            let addr = (0x2001_0db8u128 << 96) | (u128::from(len) << 64);
            let host = 128 - u32::from(len);
            let mask = if host == 128 { 0 } else { !((1u128 << host) - 1) };
            prefixes.push(Prefix { family: Family::V6, addr: addr & mask, len });
        }
        // Overlaps are resolved by the compiler first.
        let lists: Vec<ListSpec> = prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| ListSpec { name: format!("l{i}"), role: Role::Deny, prefixes: vec![*p] })
            .collect();
        let table = compile(&lists);
        for family in [Family::V4, Family::V6] {
            check_equal(&table, family, boundaries(&table, family));
        }
        let zero = compile(&[ListSpec { name: "all".into(), role: Role::Deny, prefixes: vec![parse_prefix("0.0.0.0/0").unwrap()] }]);
        check_equal(&zero, Family::V4, [0, 1, 0xffff_ffff]);
    }

    #[test]
    fn world_table_matches_the_compiled_table() {
        let db = RegionDb::bundled().unwrap();
        let lists: Vec<ListSpec> = db
            .regions
            .values()
            .map(|r| ListSpec { name: r.code.clone(), role: Role::Deny, prefixes: r.prefixes.clone() })
            .collect();
        let table = compile(&lists);
        let mut rng = blocker_tests::Rng(0x2545f4914f6cdd1d);
        let mut rnd = move || rng.next();
        for family in [Family::V4, Family::V6] {
            let mut probes = boundaries(&table, family);
            for _ in 0..100_000 {
                probes.push(match family {
                    Family::V4 => u128::from(rnd() as u32),
                    // Mostly inside 2000::/3, where the allocations are.
                    Family::V6 => (u128::from(rnd()) << 64 | u128::from(rnd())) >> 3 | (1u128 << 125),
                });
            }
            check_equal(&table, family, probes);
            let image = TrieImage::build(family, table.entries(family), |l| l as u32);
            let cap = match family {
                Family::V4 => blocker_common::trie::V4_CHUNKS,
                Family::V6 => blocker_common::trie::V6_CHUNKS,
            };
            assert!(image.chunks.len() as u32 <= cap, "{family:?}: {} chunks", image.chunks.len());
        }
    }
}

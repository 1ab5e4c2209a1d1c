//! The classifier's userspace half: compiles a disjoint prefix table into the
//! multibit trie the XDP program walks (see `blocker_common::trie` and
//! blocker-ebpf/src/classify.rs), and walks it the same way for `lookup` and tests.

use blocker_common::trie::{self, LEAF_LIMIT, ROOT_BITS};

use crate::lists::{Family, Prefix};

/// The trie shape of one family: bits per level below the root, and so the node size.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub stride: u32,
    pub root_nodes: u32,
    /// Nodes the kernel's array holds per generation.
    pub capacity: u32,
}

impl Shape {
    pub fn of(family: Family) -> Shape {
        match family {
            Family::V4 => {
                Shape { stride: trie::v4::STRIDE, root_nodes: trie::v4::ROOT_NODES, capacity: trie::v4::NODES }
            }
            Family::V6 => {
                Shape { stride: trie::v6::STRIDE, root_nodes: trie::v6::ROOT_NODES, capacity: trie::v6::NODES }
            }
        }
    }

    pub fn node_entries(&self) -> usize {
        1 << self.stride
    }
}

/// A compiled trie: nodes stored one after another (`entries` holds
/// `nodes() * node_entries` u16s, the layout of the kernel's array); nodes
/// 0..root_nodes are the root, the rest are allocated in order.
#[derive(Clone, Debug)]
pub struct TrieImage {
    pub shape: Shape,
    pub entries: Vec<u16>,
}

impl TrieImage {
    /// Builds the trie for `entries` (disjoint prefixes, as the compiler produces);
    /// `leaf(list)` is the list id the kernel counts a hit under.
    pub fn build(family: Family, entries: &[(Prefix, usize)], leaf: impl Fn(usize) -> u32) -> TrieImage {
        let shape = Shape::of(family);
        let width = shape.node_entries();
        let bits = u32::from(family.bits());
        let mut out = vec![0u16; 1 << ROOT_BITS];
        for (p, list) in entries {
            let value = u16::try_from(leaf(*list) + 1).expect("list ids fit below LEAF_LIMIT");
            debug_assert!(value < LEAF_LIMIT);
            let len = u32::from(p.len);
            // The root: 65,536 entries indexed by the first 16 bits.
            let root = (p.addr >> (bits - ROOT_BITS)) as usize;
            if len <= ROOT_BITS {
                out[root..root + (1usize << (ROOT_BITS - len))].fill(value);
                continue;
            }
            let mut slot = root;
            let mut depth = ROOT_BITS;
            loop {
                // Descend into the node behind `slot`, creating it if needed.
                let e = out[slot];
                let node = if e >= LEAF_LIMIT {
                    shape.root_nodes as usize + usize::from(e - LEAF_LIMIT)
                } else {
                    // A new node inherits the entry it replaces (disjoint input: 0).
                    let node = out.len() / width;
                    out.resize(out.len() + width, e);
                    // Past MAX_CHILD_NODES the entry would not fit: such an image is
                    // larger than every table's capacity and is refused before use.
                    let child = (node - shape.root_nodes as usize) as u32;
                    out[slot] = (u32::from(LEAF_LIMIT) + child.min(trie::MAX_CHILD_NODES - 1)) as u16;
                    node
                };
                let index = ((p.addr >> (bits - depth - shape.stride)) as usize) & (width - 1);
                let base = node * width;
                if len <= depth + shape.stride {
                    let span = 1usize << (depth + shape.stride - len);
                    out[base + index..base + index + span].fill(value);
                    break;
                }
                slot = base + index;
                depth += shape.stride;
            }
        }
        TrieImage { shape, entries: out }
    }

    /// Nodes in the image, root included.
    pub fn nodes(&self) -> usize {
        self.entries.len() / self.shape.node_entries()
    }

    pub fn fits(&self) -> bool {
        self.nodes() <= self.shape.capacity as usize
    }

    pub fn lookup(&self, family: Family, addr: u128) -> Option<u32> {
        walk(&self.entries, family, addr)
    }
}

/// The walk of blocker-ebpf/src/classify.rs, over a table's entries in memory.
pub fn walk(entries: &[u16], family: Family, addr: u128) -> Option<u32> {
    let shape = Shape::of(family);
    let bits = u32::from(family.bits());
    let mut e = *entries.get((addr >> (bits - ROOT_BITS)) as usize)?;
    let mut depth = ROOT_BITS;
    while depth < bits && e >= LEAF_LIMIT {
        let node = shape.root_nodes as usize + usize::from(e - LEAF_LIMIT);
        let index = ((addr >> (bits - depth - shape.stride)) as usize) & (shape.node_entries() - 1);
        e = *entries.get(node * shape.node_entries() + index)?;
        depth += shape.stride;
    }
    (e != 0 && e < LEAF_LIMIT).then(|| u32::from(e) - 1)
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
        let zero = compile(&[ListSpec {
            name: "all".into(),
            role: Role::Deny,
            prefixes: vec![parse_prefix("0.0.0.0/0").unwrap()],
        }]);
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
        let mut rnd = move || rng.next_u64();
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
            assert!(image.fits(), "{family:?}: {} nodes", image.nodes());
        }
    }
}

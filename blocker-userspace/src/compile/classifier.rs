//! The classifier's userspace half: builds the range tables the XDP program
//! searches (format and walk: `blocker_common::classifier`) from a compiled table,
//! and answers lookups over them with the same walk.

use blocker_common::{
    classifier::{
        self as format, Block16, Block32, Block64, Memory, Shape, BLOCK_BYTES, DIR_LEAF, LEAF_HOSTS, LEAF_NONE,
        MAX_DIR_BITS, MIN_DIR_BITS,
    },
    map_names,
};

use super::table::Range;
use crate::net::Family;

/// Why a table cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "the {family} table needs {needed} entries in {map}, more than its format addresses ({max}); nothing was changed"
    )]
    TooLarge { family: &'static str, map: &'static str, needed: usize, max: usize },
}

/// A built table: the content of each classifier map, element by element.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub shape: Shape,
    pub v4_dir: Vec<u32>,
    pub v4_ranges: Vec<u32>,
    pub v6_dir: Vec<u32>,
    pub v6_ranges: Vec<u64>,
    pub v6_ext: Vec<u32>,
    pub v6_host_keys: Vec<u64>,
    pub v6_host_values: Vec<u16>,
}

/// Elements per 64-byte block of each element size.
const fn per_block(elem_bytes: usize) -> usize {
    BLOCK_BYTES / elem_bytes
}

/// Blocks (at least one: a map cannot be empty) for `elements` elements.
pub fn blocks(elements: usize, elem_bytes: usize) -> usize {
    elements.div_ceil(per_block(elem_bytes)).max(1)
}

/// The element sizes of the classifier maps, in `map_names::CLASSIFIER` order.
pub const ELEMENT_BYTES: [usize; 7] = [4, 4, 4, 8, 4, 8, 2];
const _: () = {
    assert!(std::mem::size_of::<Block32>() == BLOCK_BYTES);
    assert!(std::mem::size_of::<Block64>() == BLOCK_BYTES);
    assert!(std::mem::size_of::<Block16>() == BLOCK_BYTES);
};

/// One scope's table for the builder: its ranges, per family.
pub type ScopeRanges<'a> = (&'a [Range], &'a [Range]);

/// A policy's image: its scopes' tables, then the union tables of the scopes
/// that judge packets whose port cannot be read (`ports::PortPlan`), and the
/// port map that sends each packet to one of them.
pub struct PolicyImage {
    pub image: Image,
    /// None: the policy has no scopes, the program reads no port.
    pub port_map: Option<Vec<u8>>,
    /// Scopes earlier ones leave no packet to (indexes of `scopes`).
    pub shadowed: Vec<usize>,
}

impl PolicyImage {
    /// Bytes of classifier memory: the maps and the port map.
    pub fn bytes(&self) -> u64 {
        self.image.bytes() + self.port_map.as_ref().map_or(0, |_| blocker_common::scope::PORT_MAP_BYTES as u64)
    }
}

/// Builds `scopes` (in the order they are tried; the outbound table among them)
/// into one image. `leaf(i)` is the leaf of a hit of the policy's list `i`, the
/// lists of every scope numbered in one sequence. `shape`: forced, or the one
/// `Image::build_scopes_for_budget` picks for `budget`. The daemon's apply and
/// `check-config` both build with it.
pub fn build_policy_image(
    scopes: &[super::table::ScopeTable<'_>],
    leaf: impl Fn(usize) -> u16,
    budget: u64,
    shape: Option<Shape>,
) -> Result<PolicyImage, BuildError> {
    use super::table::{is_scoped, strictest};
    let mut starts = Vec::with_capacity(scopes.len());
    let mut next = 0;
    for s in scopes {
        starts.push(next);
        next += s.table.lists.len();
    }
    // The outbound table is not in the port map: the inbound scopes come first
    // in `scopes`, so their indexes stand; union tables follow every scope's.
    let plan = is_scoped(scopes).then(|| {
        let ports: Vec<_> = scopes.iter().filter(|s| !s.outbound).map(|s| s.ports).collect();
        crate::policy::ports::port_plan(&ports, scopes.len())
    });
    let unions: Vec<(Vec<Range>, Vec<Range>)> = plan
        .iter()
        .flat_map(|p| &p.unions)
        .map(|members| {
            let members: Vec<_> = members.iter().map(|&m| (scopes[m].table, starts[m])).collect();
            (strictest(&members, Family::V4), strictest(&members, Family::V6))
        })
        .collect();
    // A union table's ranges number the lists of the whole policy already.
    let leaf_of = |table: usize, l: usize| leaf(if table < scopes.len() { starts[table] + l } else { l });
    let ranges: Vec<ScopeRanges<'_>> = scopes
        .iter()
        .map(|s| (&s.table.v4[..], &s.table.v6[..]))
        .chain(unions.iter().map(|(v4, v6)| (&v4[..], &v6[..])))
        .collect();
    let count = ranges.len().max(1) as u32;
    let image = match shape {
        Some(shape) => Image::build_scopes(&ranges, leaf_of, shape.with_scopes(count))?,
        None => Image::build_scopes_for_budget(&ranges, leaf_of, budget)?,
    };
    let shadowed = plan.as_ref().map(|p| p.shadowed.clone()).unwrap_or_default();
    Ok(PolicyImage { image, port_map: plan.map(|p| p.map), shadowed })
}

impl Image {
    /// Builds the range tables for `v4` and `v6` (disjoint ranges sorted by
    /// address, as the compiler produces them); `leaf(list)` is the leaf a hit of
    /// that list carries (`format::leaf(action, list_id)`).
    pub fn build(v4: &[Range], v6: &[Range], leaf: impl Fn(usize) -> u16) -> Result<Image, BuildError> {
        Image::build_with_shape(v4, v6, leaf, preferred_shape(v4.len(), v6.len()))
    }

    /// `build`, falling back to the smallest shape when the table would not fit
    /// in `budget` bytes otherwise: larger direct tables trade memory for speed,
    /// and the budget comes first. The caller still checks the result.
    pub fn build_for_budget(
        v4: &[Range],
        v6: &[Range],
        leaf: impl Fn(usize) -> u16,
        budget: u64,
    ) -> Result<Image, BuildError> {
        Image::build_scopes_for_budget(&[(v4, v6)], |_, l| leaf(l), budget)
    }

    /// `build` with the shape given (a valid one).
    pub fn build_with_shape(
        v4: &[Range],
        v6: &[Range],
        leaf: impl Fn(usize) -> u16,
        shape: Shape,
    ) -> Result<Image, BuildError> {
        Image::build_scopes(&[(v4, v6)], |_, l| leaf(l), shape.with_scopes(1))
    }

    /// One table per scope, one after another (see `blocker_common::classifier`);
    /// `leaf(scope, list)` is the leaf of a hit of that scope's list. The shape
    /// is the one the largest scope prefers, unless the budget needs the smallest.
    pub fn build_scopes_for_budget(
        scopes: &[ScopeRanges<'_>],
        leaf: impl Fn(usize, usize) -> u16,
        budget: u64,
    ) -> Result<Image, BuildError> {
        let v4 = scopes.iter().map(|s| s.0.len()).max().unwrap_or(0);
        let v6 = scopes.iter().map(|s| s.1.len()).max().unwrap_or(0);
        let count = scopes.len().max(1) as u32;
        let image = Image::build_scopes(scopes, &leaf, preferred_shape(v4, v6).with_scopes(count))?;
        if image.bytes() <= budget || image.shape == Shape::SMALLEST.with_scopes(count) {
            return Ok(image);
        }
        Image::build_scopes(scopes, leaf, Shape::SMALLEST.with_scopes(count))
    }

    /// `build_scopes_for_budget` with the shape given (a valid one, whose
    /// `scopes` is the number of tables).
    pub fn build_scopes(
        scopes: &[ScopeRanges<'_>],
        leaf: impl Fn(usize, usize) -> u16,
        shape: Shape,
    ) -> Result<Image, BuildError> {
        assert!(shape.valid() && shape.scopes as usize == scopes.len().max(1), "{shape:?}");
        let mut image = Image { shape, ..Image::default() };
        if scopes.is_empty() {
            build_v4(&mut image, &[], &|_| LEAF_NONE);
            build_v6(&mut image, &[], &|_| LEAF_NONE, shape.v6_bits);
        }
        for (i, (v4, v6)) in scopes.iter().enumerate() {
            build_v4(&mut image, v4, &|l| leaf(i, l));
            build_v6(&mut image, v6, &|l| leaf(i, l), shape.v6_bits);
        }
        image.pad_to_blocks();
        // Indices are u32 in the walk, and a direct-table entry has 31 bits.
        for (map, len) in [
            (map_names::V4_RANGES, image.v4_ranges.len()),
            (map_names::V6_RANGES, image.v6_ranges.len()),
            (map_names::V6_HOST_KEYS, image.v6_host_keys.len()),
        ] {
            if len >= DIR_LEAF as usize {
                let family = if map == map_names::V4_RANGES { "IPv4" } else { "IPv6" };
                return Err(BuildError::TooLarge { family, map, needed: len, max: DIR_LEAF as usize - 1 });
            }
        }
        Ok(image)
    }

    /// Fills each map's last block, so that every map is whole blocks.
    fn pad_to_blocks(&mut self) {
        fn pad<T: Default + Clone>(v: &mut Vec<T>) {
            let per = BLOCK_BYTES / std::mem::size_of::<T>();
            v.resize(blocks(v.len(), std::mem::size_of::<T>()) * per, T::default());
        }
        pad(&mut self.v4_dir);
        pad(&mut self.v4_ranges);
        pad(&mut self.v6_dir);
        pad(&mut self.v6_ranges);
        pad(&mut self.v6_ext);
        pad(&mut self.v6_host_keys);
        pad(&mut self.v6_host_values);
    }

    /// Elements of each map, in `map_names::CLASSIFIER` order.
    pub fn lengths(&self) -> [usize; 7] {
        [
            self.v4_dir.len(),
            self.v4_ranges.len(),
            self.v6_dir.len(),
            self.v6_ranges.len(),
            self.v6_ext.len(),
            self.v6_host_keys.len(),
            self.v6_host_values.len(),
        ]
    }

    /// Blocks of each map, in `map_names::CLASSIFIER` order: the maps' sizes.
    pub fn map_blocks(&self) -> [usize; 7] {
        let lengths = self.lengths();
        std::array::from_fn(|i| blocks(lengths[i], ELEMENT_BYTES[i]))
    }

    /// Bytes of the maps' contents (what the memory budget counts).
    pub fn bytes(&self) -> u64 {
        self.map_blocks().iter().map(|b| (*b * BLOCK_BYTES) as u64).sum()
    }

    /// Each map's content as bytes, padded to whole blocks, in `CLASSIFIER` order.
    pub fn map_bytes(&self) -> [&[u8]; 7] {
        [
            bytemuck::cast_slice(&self.v4_dir),
            bytemuck::cast_slice(&self.v4_ranges),
            bytemuck::cast_slice(&self.v6_dir),
            bytemuck::cast_slice(&self.v6_ranges),
            bytemuck::cast_slice(&self.v6_ext),
            bytemuck::cast_slice(&self.v6_host_keys),
            bytemuck::cast_slice(&self.v6_host_values),
        ]
    }

    pub fn view(&self) -> Tables<'_> {
        Tables {
            shape: self.shape,
            v4_dir: &self.v4_dir,
            v4_ranges: &self.v4_ranges,
            v6_dir: &self.v6_dir,
            v6_ranges: &self.v6_ranges,
            v6_ext: &self.v6_ext,
            v6_host_keys: &self.v6_host_keys,
            v6_host_values: &self.v6_host_values,
        }
    }
}

/// Read-only view of a table's memory: a built image, or the kernel's maps
/// mapped into this process.
#[derive(Clone, Copy, Debug)]
pub struct Tables<'a> {
    pub shape: Shape,
    pub v4_dir: &'a [u32],
    pub v4_ranges: &'a [u32],
    pub v6_dir: &'a [u32],
    pub v6_ranges: &'a [u64],
    pub v6_ext: &'a [u32],
    pub v6_host_keys: &'a [u64],
    pub v6_host_values: &'a [u16],
}

/// Block `block` of a map given as elements (whole blocks).
fn block_of<T, const N: usize>(elements: &[T], block: u32) -> Option<&[T; N]> {
    let start = (block as usize).checked_mul(N)?;
    elements.get(start..start.checked_add(N)?)?.try_into().ok()
}

impl Memory for Tables<'_> {
    fn shape(&self) -> Shape {
        self.shape
    }
    fn v4_dir(&self, block: u32) -> Option<&Block32> {
        block_of(self.v4_dir, block)
    }
    fn v4_ranges(&self, block: u32) -> Option<&Block32> {
        block_of(self.v4_ranges, block)
    }
    fn v6_dir(&self, block: u32) -> Option<&Block32> {
        block_of(self.v6_dir, block)
    }
    fn v6_ranges(&self, block: u32) -> Option<&Block64> {
        block_of(self.v6_ranges, block)
    }
    fn v6_ext(&self, block: u32) -> Option<&Block32> {
        block_of(self.v6_ext, block)
    }
    fn v6_host_keys(&self, block: u32) -> Option<&Block64> {
        block_of(self.v6_host_keys, block)
    }
    fn v6_host_values(&self, block: u32) -> Option<&Block16> {
        block_of(self.v6_host_values, block)
    }
}

impl Tables<'_> {
    /// The leaf the XDP program finds for `addr` (`LEAF_NONE`: no list), in
    /// the table of the image's first scope.
    pub fn lookup(&self, family: Family, addr: u128) -> u16 {
        self.lookup_in(0, family, addr)
    }

    /// The same in `scope`'s table.
    pub fn lookup_in(&self, scope: u32, family: Family, addr: u128) -> u16 {
        lookup_leaf(self, scope, family, addr)
    }
}

/// The leaf the XDP program finds for `addr` in `scope`'s table of `memory` (a
/// built image, or a loaded table's maps); `LEAF_NONE`: no list.
pub fn lookup_leaf(memory: &impl Memory, scope: u32, family: Family, addr: u128) -> u16 {
    let leaf = match family {
        Family::V4 => format::lookup_v4(memory, scope, addr as u32),
        Family::V6 => format::lookup_v6(memory, scope, (addr >> 64) as u64, addr as u64),
    };
    leaf.unwrap_or(LEAF_NONE)
}

/// The boundaries of a disjoint sorted range table: (first address, leaf) for
/// every run of equal leaves, starting at address 0 and covering the family.
struct Boundaries<'a, I, F> {
    entries: I,
    family: Family,
    leaf: &'a F,
    /// First address after the last prefix (None: past the family's end).
    next: Option<u128>,
    /// The leaf of the last boundary given out.
    current: Option<u16>,
    queue: [Option<(u128, u16)>; 2],
    finished: bool,
}

fn boundaries<'a, F: Fn(usize) -> u16>(
    entries: &'a [Range],
    family: Family,
    leaf: &'a F,
) -> Boundaries<'a, std::slice::Iter<'a, Range>, F> {
    Boundaries {
        entries: entries.iter(),
        family,
        leaf,
        next: Some(0),
        current: None,
        queue: [None; 2],
        finished: false,
    }
}

impl<'a, I: Iterator<Item = &'a Range>, F: Fn(usize) -> u16> Boundaries<'a, I, F> {
    fn offer(&mut self, start: u128, value: u16) {
        if self.current != Some(value) {
            self.current = Some(value);
            let slot = if self.queue[0].is_none() { 0 } else { 1 };
            self.queue[slot] = Some((start, value));
        }
    }
}

impl<'a, I: Iterator<Item = &'a Range>, F: Fn(usize) -> u16> Iterator for Boundaries<'a, I, F> {
    type Item = (u128, u16);

    fn next(&mut self) -> Option<(u128, u16)> {
        loop {
            if let Some(b) = self.queue[0].take() {
                self.queue[0] = self.queue[1].take();
                return Some(b);
            }
            if self.finished {
                return None;
            }
            match self.entries.next() {
                Some(&Range { lo, hi, list }) => {
                    if let Some(gap) = self.next.filter(|n| lo > *n) {
                        self.offer(gap, LEAF_NONE);
                    }
                    self.offer(lo, (self.leaf)(list));
                    self.next = hi.checked_add(1).filter(|a| *a <= self.family.max_addr());
                }
                None => {
                    self.finished = true;
                    if let Some(n) = self.next {
                        self.offer(n, LEAF_NONE);
                    }
                }
            }
        }
    }
}

/// The shape for a table of `v4` and `v6` compiled ranges: direct tables of
/// about one entry per range, so that a chunk holds a few boundaries and the
/// search takes one or two steps, while a direct table costs at most as much as
/// its ranges. IPv6 gets 8 entries per range (at most 2^`MAX_V6_PREFERRED_BITS`):
/// the allocated space is 2000::/3, an eighth of the first bits, and an IPv6
/// range costs 12 bytes, 3 entries' worth.
pub fn preferred_shape(v4: usize, v6: usize) -> Shape {
    let bits = |n: usize, max: u32| n.max(1).ilog2().clamp(MIN_DIR_BITS, max);
    Shape { v4_bits: bits(v4, MAX_DIR_BITS), v6_bits: bits(v6.saturating_mul(8), MAX_V6_PREFERRED_BITS), scopes: 1 }
}

/// 16 MiB of IPv6 direct table.
const MAX_V6_PREFERRED_BITS: u32 = 22;

fn build_v4(image: &mut Image, entries: &[Range], leaf: &impl Fn(usize) -> u16) {
    let bits = image.shape.v4_bits;
    let shift = 32 - bits;
    let mut bounds = boundaries(entries, Family::V4, leaf).peekable();
    let mut current = LEAF_NONE;
    image.v4_dir.reserve(1 << bits);
    for d in 0..1u32 << bits {
        let base = u128::from(d) << shift;
        let start = image.v4_ranges.len();
        // The chunk's first range starts at key 0 with the leaf in effect there.
        image.v4_ranges.push(u32::from(current));
        while let Some(&(s, value)) = bounds.peek().filter(|(s, _)| *s >> shift == u128::from(d)) {
            if s == base {
                image.v4_ranges[start] = u32::from(value);
            } else {
                image.v4_ranges.push(((s - base) as u32) << 16 | u32::from(value));
            }
            current = value;
            bounds.next();
        }
        let n = image.v4_ranges.len() - start;
        if n == 1 {
            let only = image.v4_ranges.pop().unwrap_or_default();
            image.v4_dir.push(DIR_LEAF | only);
        } else {
            let start = start + pad_chunk(&mut image.v4_ranges, start, None::<&mut Vec<u32>>);
            // The first key holds the chunk length minus one (its real key is 0).
            image.v4_ranges[start] |= ((n - 1) as u32) << 16;
            image.v4_dir.push(start as u32);
        }
    }
}

fn build_v6(image: &mut Image, entries: &[Range], leaf: &impl Fn(usize) -> u16, bits: u32) {
    // /64 units per direct-table entry.
    let units: u64 = 1 << (64 - bits);
    let mut bounds = boundaries(entries, Family::V6, leaf).peekable();
    let mut current = LEAF_NONE;
    image.v6_dir.reserve(1 << bits);
    for d in 0..1u32 << bits {
        let start = image.v6_ranges.len();
        let mut chunk = V6Chunk { image: &mut *image, start, open_hosts: None };
        chunk.push_range(0, current);
        while let Some(&(s, value)) = bounds.peek().filter(|(s, _)| (*s >> (128 - bits)) as u32 == d) {
            let unit = ((s >> 64) as u64) & (units - 1);
            let low = s as u64;
            chunk.close_hosts_before(unit, current, units);
            if low == 0 {
                chunk.push_range(unit, value);
            } else {
                chunk.push_host(unit, low, value, current);
            }
            current = value;
            bounds.next();
        }
        chunk.close_hosts_before(units, current, units);
        let n = image.v6_ranges.len() - start;
        if n == 1 && image.v6_ranges[start] as u16 != LEAF_HOSTS {
            let only = image.v6_ranges.pop().unwrap_or_default();
            image.v6_ext.pop();
            image.v6_dir.push(DIR_LEAF | u32::from(only as u16));
        } else {
            let start = start + pad_chunk(&mut image.v6_ranges, start, Some(&mut image.v6_ext));
            image.v6_ranges[start] |= ((n - 1) as u64) << 16;
            image.v6_dir.push(start as u32);
        }
    }
}

/// Moves the chunk that runs from `start` to the end of `chunks` to the next block
/// when it fits in one block but would straddle two, so that the walk searches it
/// in the one block it reads (`classifier::search`). `parallel`, indexed like
/// `chunks`, moves with it. Returns the padding put before the chunk.
fn pad_chunk<T: Default + Clone, U: Default + Clone>(
    chunks: &mut Vec<T>,
    start: usize,
    parallel: Option<&mut Vec<U>>,
) -> usize {
    let per = BLOCK_BYTES / std::mem::size_of::<T>();
    let n = chunks.len() - start;
    let offset = start % per;
    if n > per || offset + n <= per {
        return 0;
    }
    let pad = per - offset;
    chunks.splice(start..start, std::iter::repeat_n(T::default(), pad));
    if let Some(p) = parallel {
        p.splice(start..start, std::iter::repeat_n(U::default(), pad));
    }
    pad
}

/// One IPv6 chunk (a direct-table entry's /b) under construction.
struct V6Chunk<'a> {
    image: &'a mut Image,
    start: usize,
    /// The /64 unit whose host chunk is open (it takes further in-unit boundaries).
    open_hosts: Option<u64>,
}

impl V6Chunk<'_> {
    fn last_range(&self) -> Option<(u64, u16)> {
        (self.image.v6_ranges.len() > self.start).then(|| {
            let e = self.image.v6_ranges[self.image.v6_ranges.len() - 1];
            (e >> 16, e as u16)
        })
    }

    /// A /64-level range starting at `unit` (merged with an equal predecessor).
    fn push_range(&mut self, unit: u64, value: u16) {
        match self.last_range() {
            Some((u, _)) if u == unit && self.image.v6_ranges.len() - 1 == self.start && unit == 0 => {
                // The chunk's first range: its key field is patched at the end.
                let last = self.image.v6_ranges.len() - 1;
                self.image.v6_ranges[last] = u64::from(value);
            }
            Some((u, _)) if u == unit => {
                let last = self.image.v6_ranges.len() - 1;
                self.image.v6_ranges[last] = unit << 16 | u64::from(value);
            }
            Some((_, v)) if v == value && v != LEAF_HOSTS => {}
            _ => {
                self.image.v6_ranges.push(unit << 16 | u64::from(value));
                self.image.v6_ext.push(0);
            }
        }
    }

    /// A boundary inside the /64 `unit`: the unit becomes a host chunk, which
    /// starts with the leaf in effect at the unit's start.
    fn push_host(&mut self, unit: u64, low: u64, value: u16, current: u16) {
        if self.open_hosts != Some(unit) {
            let first = match self.last_range() {
                Some((u, v)) if u == unit => v,
                _ => current,
            };
            let h = self.image.v6_host_keys.len();
            self.image.v6_host_keys.push(0);
            self.image.v6_host_values.push(first);
            match self.last_range() {
                Some((u, _)) if u == unit => {
                    let last = self.image.v6_ranges.len() - 1;
                    self.image.v6_ranges[last] = (self.image.v6_ranges[last] & !0xffff) | u64::from(LEAF_HOSTS);
                    self.image.v6_ext[last] = h as u32;
                }
                _ => {
                    self.image.v6_ranges.push(unit << 16 | u64::from(LEAF_HOSTS));
                    self.image.v6_ext.push(h as u32);
                }
            }
            self.open_hosts = Some(unit);
        }
        self.image.v6_host_keys.push(low);
        self.image.v6_host_values.push(value);
        let last = self.image.v6_ext[self.image.v6_ext.len() - 1] as usize;
        self.image.v6_host_keys[last] += 1;
    }

    /// Closes an open host chunk before a boundary in a later unit: the unit after
    /// it starts with the leaf in effect at its end.
    fn close_hosts_before(&mut self, unit: u64, current: u16, units: u64) {
        match self.open_hosts {
            Some(open) if open != unit => {
                self.open_hosts = None;
                // The open unit's range is the last one; its host chunk the last.
                let last = self.image.v6_ext.len() - 1;
                let h = self.image.v6_ext[last] as usize;
                let pad = pad_chunk(&mut self.image.v6_host_keys, h, Some(&mut self.image.v6_host_values));
                self.image.v6_ext[last] = (h + pad) as u32;
                if open + 1 < units {
                    self.image.v6_ranges.push((open + 1) << 16 | u64::from(current));
                    self.image.v6_ext.push(0);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        compile::table::{compile, CompiledTable},
        net::Prefix,
        policy::{ListSpec, Role},
        source::region::db::RegionDb,
    };

    /// The image answers every probe like the compiled table's own lookup.
    fn check_equal(table: &CompiledTable, probes: impl IntoIterator<Item = (Family, u128)>) {
        check_equal_at(table, probes, preferred_shape(table.v4.len(), table.v6.len()));
    }

    /// `check_equal` with the direct tables' bits given.
    fn check_equal_at(table: &CompiledTable, probes: impl IntoIterator<Item = (Family, u128)>, shape: Shape) {
        let leaf = |l: usize| format::leaf(table.lists[l].action.code(), l as u32);
        let image = Image::build_with_shape(&table.v4, &table.v6, leaf, shape).unwrap();
        let view = image.view();
        for (family, a) in probes {
            let want =
                table.lookup(family, a).map_or(LEAF_NONE, |l| format::leaf(table.lists[l].action.code(), l as u32));
            assert_eq!(view.lookup(family, a), want, "{family:?} {a:#x}");
        }
    }

    #[test]
    fn an_image_of_several_scopes_answers_each_like_its_own_table() {
        let p = |s: &str| crate::net::parse_prefix(s).unwrap();
        // Tables of different sizes and families; hosts cut /64 units in one.
        let tables = [
            compile(&[deny("a", vec![p("203.0.113.0/24"), p("2001:db8::/32")])]),
            compile(&[
                deny("b", vec![p("10.0.0.0/8"), p("10.1.2.3"), p("2001:db8:1::5"), p("2001:db8:1::9")]),
                deny("c", vec![p("10.1.0.0/16")]),
            ]),
            compile(&[]),
        ];
        let ranges: Vec<ScopeRanges<'_>> = tables.iter().map(|t| (&t.v4[..], &t.v6[..])).collect();
        let leaf = |s: usize, l: usize| format::leaf(tables[s].lists[l].action.code(), (s * 10 + l) as u32);
        for shape in [Shape::SMALLEST, Shape { v4_bits: 20, v6_bits: 18, scopes: 1 }] {
            let image = Image::build_scopes(&ranges, leaf, shape.with_scopes(3)).unwrap();
            let view = image.view();
            for (s, table) in tables.iter().enumerate() {
                let probes = tables.iter().flat_map(boundaries);
                for (family, a) in probes {
                    let want = table.lookup(family, a).map_or(LEAF_NONE, |l| leaf(s, l));
                    assert_eq!(view.lookup_in(s as u32, family, a), want, "scope {s} {family:?} {a:#x} {shape:?}");
                }
            }
            // A scope past the image finds nothing.
            assert_eq!(view.lookup_in(3, Family::V4, 0x0a01_0203), LEAF_NONE);
        }
    }

    /// The policy image's port map and union tables against
    /// `CompiledPolicy::judge`, written from the rules alone: for random scopes
    /// and lists, every kind of packet (with a port, a later fragment, an
    /// opaque header) from addresses at every boundary gets the same list.
    #[test]
    fn the_policy_image_judges_like_the_reference() {
        use blocker_common::scope::{key_of, OPAQUE_PROTOCOLS, SCOPE_NONE};

        use crate::{
            compile::table::{CompiledPolicy, CompiledScope},
            policy::ports::{PortRule, Ports},
        };
        let mut rng = blocker_tests::Rng(11);
        let rule_choices =
            ["tcp:443", "tcp:80,443", "tcp:all-except:22", "udp:53", "udp", "sctp", "tcp:1000-2000", "tcp"];
        let roles = [Role::Deny, Role::Reject, Role::Exception, Role::Monitor, Role::NeverBlock];
        for round in 0..30 {
            let mut scopes = Vec::new();
            let n = 1 + rng.next_u64() % 4;
            for i in 0..n {
                let last = i == n - 1 && rng.next_u64().is_multiple_of(2);
                let rules: Vec<PortRule> = if last {
                    Vec::new()
                } else {
                    (0..1 + rng.next_u64() % 2)
                        .map(|_| rule_choices[(rng.next_u64() % rule_choices.len() as u64) as usize].parse().unwrap())
                        .collect()
                };
                let lists: Vec<ListSpec> = (0..1 + rng.next_u64() % 3)
                    .map(|l| {
                        let prefixes = (0..3)
                            .flat_map(|_| {
                                let len4 = 20 + (rng.next_u64() % 12) as u8;
                                let len6 = 100 + (rng.next_u64() % 28) as u8;
                                let a4 = 0x0a00_0000 + u128::from(rng.next_u64() % (1 << 16)) * 16;
                                let a6 = (0x2001_0db8u128 << 96) + u128::from(rng.next_u64() % (1 << 16)) * 16;
                                [prefix(Family::V4, a4, len4), prefix(Family::V6, a6, len6)]
                            })
                            .collect();
                        let role = roles[(rng.next_u64() % roles.len() as u64) as usize];
                        ListSpec { name: format!("s{i}l{l}"), role, prefixes }
                    })
                    .collect();
                scopes.push(CompiledScope {
                    name: format!("s{i}"),
                    ports: Ports(rules),
                    outbound: false,
                    table: compile(&lists),
                });
            }
            let policy = CompiledPolicy { scopes };
            let view = policy.view();
            let lists: Vec<(usize, usize)> =
                (0..view.len()).flat_map(|s| (0..view[s].table.lists.len()).map(move |l| (s, l))).collect();
            let leaf_of = |i: usize| {
                let (s, l) = lists[i];
                format::leaf(view[s].table.lists[l].action.code(), i as u32)
            };
            let built = build_policy_image(&view, leaf_of, u64::MAX, Some(Shape::SMALLEST)).unwrap();
            let tables = built.image.view();
            let mut probes: Vec<(Family, u128)> = policy.scopes.iter().flat_map(|s| boundaries(&s.table)).collect();
            probes.sort_unstable();
            probes.dedup();
            let packets: Vec<(u8, Option<u16>)> = [6u8, 17, 132]
                .into_iter()
                .flat_map(|p| {
                    [Some(22), Some(53), Some(80), Some(443), Some(1500), Some(9999), None].map(|port| (p, port))
                })
                .chain([(1, None), (58, None), (47, None)])
                .chain(OPAQUE_PROTOCOLS.map(|p| (p, None)))
                .collect();
            for (protocol, port) in packets {
                for &(family, addr) in &probes {
                    let want = policy.judge(protocol, port, family, addr).list.map(|l| l.name.clone());
                    let table = match &built.port_map {
                        Some(map) => map[key_of(protocol, port) as usize],
                        None => 0,
                    };
                    let got = if table == SCOPE_NONE {
                        None
                    } else {
                        let leaf = tables.lookup_in(u32::from(table), family, addr);
                        (leaf != LEAF_NONE).then(|| {
                            let (s, l) = lists[format::leaf_list(leaf) as usize];
                            view[s].table.lists[l].name.clone()
                        })
                    };
                    assert_eq!(got, want, "round {round}: protocol {protocol} port {port:?} {family:?} {addr:#x}");
                }
            }
        }
    }

    /// Every range boundary of the table, and its neighbours.
    fn boundaries(table: &CompiledTable) -> Vec<(Family, u128)> {
        let mut v = Vec::new();
        for family in [Family::V4, Family::V6] {
            for &Range { lo, hi, .. } in table.entries(family) {
                for a in [lo.wrapping_sub(1), lo, lo.wrapping_add(1), hi.wrapping_sub(1), hi, hi.wrapping_add(1)] {
                    if a <= family.max_addr() {
                        v.push((family, a));
                    }
                }
            }
            v.extend([(family, 0), (family, family.max_addr())]);
        }
        v
    }

    fn deny(name: &str, prefixes: Vec<Prefix>) -> ListSpec {
        ListSpec { name: name.into(), role: Role::Deny, prefixes }
    }

    fn prefix(family: Family, addr: u128, len: u8) -> Prefix {
        let host = u32::from(family.bits() - len);
        let mask = if host >= 128 { 0 } else { !((1u128 << host) - 1) };
        Prefix { family, addr: addr & mask & family.max_addr(), len }
    }

    #[test]
    fn every_prefix_length_and_boundary() {
        let mut lists = Vec::new();
        for len in 0..=32u8 {
            lists.push(deny(
                &format!("v4-{len}"),
                vec![prefix(Family::V4, (u128::from(len) + 1) << 24 | 0xabcdef, len)],
            ));
        }
        for len in 0..=128u8 {
            let addr = (0x2001_0db8u128 << 96) | (u128::from(len) << 64) | 0x1234_5678_9abc_def0;
            lists.push(deny(&format!("v6-{len}"), vec![prefix(Family::V6, addr, len)]));
        }
        let table = compile(&lists);
        for shape in [shape(16, 16), shape(19, 17), shape(24, 24), shape(16, 20), shape(22, 16)] {
            check_equal_at(&table, boundaries(&table), shape);
        }
        let empty = compile(&[]);
        check_equal(&empty, [(Family::V4, 0), (Family::V4, u128::from(u32::MAX)), (Family::V6, 1)]);
    }

    #[test]
    fn hosts_at_the_edges_of_units_and_chunks() {
        // /128s and /127s at the first and last address of a /64 and of a /16,
        // adjacent /64s, and a host inside a deny /48 with an allow /96 around it.
        let v6 = |a: u128, len| prefix(Family::V6, a, len);
        let base = 0x2001_0db8_0000_0000u128 << 64;
        let lists = vec![
            deny(
                "hosts",
                vec![
                    v6(base, 128),
                    v6(base | u128::from(u64::MAX), 128),
                    v6(base + (1 << 64), 127),
                    v6((0x2001_ffffu128 << 96) | ((1u128 << 96) - 1), 128),
                    v6(0x2002u128 << 112, 128),
                    v6(u128::MAX, 128),
                    v6(0, 128),
                    v6(base + (5 << 64), 64),
                    v6(base + (6 << 64), 64),
                    v6(base + (6 << 64) + 7, 128),
                ],
            ),
            ListSpec { name: "allow".into(), role: Role::Exception, prefixes: vec![v6(base + (9 << 64), 96)] },
            deny("outer", vec![v6(base, 48)]),
            deny("v4", vec![prefix(Family::V4, 0, 32), prefix(Family::V4, u128::from(u32::MAX), 32)]),
        ];
        let table = compile(&lists);
        for shape in [shape(16, 16), shape(20, 18), shape(24, 24), shape(18, 16)] {
            check_equal_at(&table, boundaries(&table), shape);
        }
        let image =
            Image::build(&table.v4, &table.v6, |l| format::leaf(table.lists[l].action.code(), l as u32)).unwrap();
        assert_eq!(straddling(&image), (0, 0, 0));
    }

    fn shape(v4_bits: u32, v6_bits: u32) -> Shape {
        Shape { v4_bits, v6_bits, scopes: 1 }
    }

    /// Chunks that fit in one block but straddle two (each would cost a map
    /// access per search step): (IPv4, IPv6 /64-level, IPv6 host) counts.
    fn straddling(image: &Image) -> (usize, usize, usize) {
        let straddles = |start: usize, n: usize, per: usize| n <= per && start % per + n > per;
        let chunks = |dir: &[u32]| dir.iter().filter(|d| *d & DIR_LEAF == 0).map(|d| *d as usize).collect::<Vec<_>>();
        let v4 = chunks(&image.v4_dir)
            .into_iter()
            .filter(|&d| straddles(d, (image.v4_ranges[d] >> 16) as usize + 1, 16))
            .count();
        let v6 = chunks(&image.v6_dir)
            .into_iter()
            .filter(|&d| straddles(d, (image.v6_ranges[d] >> 16) as usize + 1, 8))
            .count();
        let hosts = image
            .v6_ranges
            .iter()
            .zip(&image.v6_ext)
            .filter(|(r, _)| **r as u16 == LEAF_HOSTS)
            .filter(|(_, h)| straddles(**h as usize, image.v6_host_keys[**h as usize] as usize + 1, 8))
            .count();
        (v4, v6, hosts)
    }

    #[test]
    fn world_table_matches_the_compiled_table() {
        let db = RegionDb::bundled().unwrap();
        let lists: Vec<ListSpec> = db.regions.values().map(|r| deny(&r.code, r.prefixes.clone())).collect();
        let table = compile(&lists);
        let image =
            Image::build(&table.v4, &table.v6, |l| format::leaf(table.lists[l].action.code(), l as u32)).unwrap();
        assert_eq!(straddling(&image), (0, 0, 0), "a chunk that fits in a block straddles two");
        let mut rng = blocker_tests::Rng(0x2545f4914f6cdd1d);
        let mut probes = boundaries(&table);
        for _ in 0..100_000 {
            probes.push((Family::V4, u128::from(rng.next_u64() as u32)));
            // Mostly inside 2000::/3, where the allocations are.
            let a = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) >> 3 | (1u128 << 125);
            probes.push((Family::V6, a));
        }
        check_equal(&table, probes);
    }

    /// Random lists of every role: nested, adjacent and sparse prefixes, hosts,
    /// clustered in a few regions of the space so that they interact.
    fn arb_lists() -> impl Strategy<Value = Vec<ListSpec>> {
        let roles =
            [Role::NeverBlock, Role::Exception, Role::Deny, Role::OutsideAllowed, Role::Monitor, Role::AllowedRegion];
        let arb_prefix = (any::<bool>(), 0usize..4, any::<u128>(), 0u8..=128).prop_map(|(v6, region, bits, len)| {
            if v6 {
                // Regions: a /16, a /64 and a /120 neighbourhood, or anywhere.
                let bases = [0x2001u128 << 112, 0x2001_0db8u128 << 96, (0x2a00u128 << 112) | 0xff00, 0];
                let spans = [112u32, 64, 8, 128];
                let noise = if spans[region] >= 128 { bits } else { bits & ((1u128 << spans[region]) - 1) };
                prefix(Family::V6, bases[region] | noise, len)
            } else {
                let bases = [0xc000_0000u128, 0xc633_6400, 0x0a00_0000, 0];
                let spans = [16u32, 8, 24, 32];
                let noise = bits & ((1u128 << spans[region]) - 1);
                prefix(Family::V4, bases[region] | noise, len % 33)
            }
        });
        prop::collection::vec((0usize..6, prop::collection::vec(arb_prefix, 0..40)), 1..8).prop_map(move |lists| {
            lists
                .into_iter()
                .enumerate()
                .map(|(i, (role, prefixes))| ListSpec { name: format!("l{i}"), role: roles[role], prefixes })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        #[test]
        fn random_tables_match_the_reference(
            lists in arb_lists(),
            extra in prop::collection::vec(any::<u128>(), 64),
            bits in (MIN_DIR_BITS..=18, MIN_DIR_BITS..=18),
        ) {
            let table = compile(&lists);
            let mut probes = boundaries(&table);
            for list in &lists {
                for p in &list.prefixes {
                    let (lo, hi) = p.range();
                    for a in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
                        if a <= p.family.max_addr() {
                            probes.push((p.family, a));
                        }
                    }
                }
            }
            probes.extend(extra.iter().map(|a| (Family::V6, *a)));
            probes.extend(extra.iter().map(|a| (Family::V4, *a & 0xffff_ffff)));
            check_equal_at(&table, probes, shape(bits.0, bits.1));
        }
    }
}

//! Types and constants shared by the XDP program (`blocker-ebpf`) and userspace.
//!
//! One definition of each thing that crosses the kernel boundary: map names, map
//! sizes, counter indices, action codes and the layout of map values. The `user`
//! feature implements `aya::Pod` so userspace can read and write these maps.
#![no_std]

/// Bumped whenever a map's type, key, value or size changes. It is part of the pin
/// directory path, so a new layout never silently reuses an incompatible pinned map.
pub const LAYOUT_VERSION: u32 = 3;

/// Number of list ids (a list is one deny/allow/monitor source, e.g. one file).
pub const MAX_LISTS: u32 = 1024;

/// The classifier: a multibit trie per family, stored as an array of nodes of 256
/// u16 entries. Nodes `0..ROOT_NODES` form the root, a direct table indexed by the
/// first 16 bits of the address; every further level consumes the next byte. A
/// lookup reads one entry per level: one for prefixes up to /16, two up to /24
/// (most of the IPv4 data), three up to /32; for IPv6 three for a /32 allocation
/// and five for a /48.
pub mod trie {
    /// An entry below `LEAF_LIMIT` is a leaf: 0 = no list, `list_id + 1` = a list.
    /// From `LEAF_LIMIT` up it points to node `ROOT_NODES + (entry - LEAF_LIMIT)`.
    pub const LEAF_LIMIT: u16 = 2048;
    const _: () = assert!(crate::MAX_LISTS < LEAF_LIMIT as u32);
    /// The most nodes below the root an entry can point to.
    pub const MAX_CHILD_NODES: u32 = 65_536 - LEAF_LIMIT as u32;
    /// Bits of the address that index the root.
    pub const ROOT_BITS: u32 = 16;

    pub mod v4 {
        pub const STRIDE: u32 = 8;
        pub const NODE_ENTRIES: usize = 1 << STRIDE;
        pub const ROOT_NODES: u32 = (1 << super::ROOT_BITS) / NODE_ENTRIES as u32;
        /// Nodes per table (root included), per generation (6.3 MB). The world table
        /// of ../shared/data needs about 7,100.
        pub const NODES: u32 = 12_288;
    }

    pub mod v6 {
        pub const STRIDE: u32 = 8;
        pub const NODE_ENTRIES: usize = 1 << STRIDE;
        pub const ROOT_NODES: u32 = (1 << super::ROOT_BITS) / NODE_ENTRIES as u32;
        /// Nodes per table (root included), per generation (12.6 MB). The world
        /// table of ../shared/data needs about 17,700.
        pub const NODES: u32 = 24_576;
    }
}
pub type V4Node = [u16; trie::v4::NODE_ENTRIES];
pub type V6Node = [u16; trie::v6::NODE_ENTRIES];

/// Map names, as declared in the XDP program and pinned by name.
pub mod map_names {
    pub const CONFIG: &str = "BLK_CONFIG";
    pub const POLICY: &str = "BLK_POLICY";
    pub const V4_GEN0: &str = "BLK_V4_G0";
    pub const V4_GEN1: &str = "BLK_V4_G1";
    pub const V6_GEN0: &str = "BLK_V6_G0";
    pub const V6_GEN1: &str = "BLK_V6_G1";
    pub const LIST_STATS: &str = "BLK_LIST_STATS";
    pub const GLOBAL_STATS: &str = "BLK_GLOBAL_STATS";
    pub const LIST_INFO: &str = "BLK_LIST_INFO";
    /// Baseline for benchmarks only: the kernel LPM trie classifier (not pinned).
    pub const LPM_V4: &str = "BLK_LPM_V4";
    pub const LPM_V6: &str = "BLK_LPM_V6";
}

/// The log target of the XDP program's aya-log records in userspace.
pub const EBPF_LOG_TARGET: &str = "xdp";

/// The XDP program's name (its function name in the object file).
pub const PROGRAM_NAME: &str = "blocker";
/// Baselines for the benchmark harness, never attached: the same program with the
/// kernel LPM trie as classifier, and a program that only drops.
pub const PROGRAM_LPM_BASELINE: &str = "blocker_lpm";
pub const PROGRAM_DROP_FLOOR: &str = "drop_floor";
/// The program with a classifier that reads no memory (benchmark profile).
pub const PROGRAM_NO_LOOKUP: &str = "blocker_no_lookup";
pub const PROGRAM_PASS_FLOOR: &str = "pass_floor";
/// Live-frames traffic generator (see blocker-ebpf/src/bench.rs) and its pool.
pub const PROGRAM_TRAFFICGEN: &str = "trafficgen";
pub const GEN_POOL_MAP: &str = "GEN_POOL";
/// The same for Ethernet+IPv6 frames.
pub const PROGRAM_TRAFFICGEN6: &str = "trafficgen6";
pub const GEN_POOL6_MAP: &str = "GEN_POOL6";
/// Entries of each generator pool (a power of two).
pub const GEN_POOL_SIZE: u32 = 65_536;
/// Capacity of the baseline LPM tries.
pub const LPM_BASELINE_ENTRIES: u32 = 1 << 20;

/// Slots of the `BLK_CONFIG` array (u32 each). Kept in separate slots so that each
/// is replaced by one aligned 4-byte store.
pub mod config {
    /// Which generation of prefix tables and policy is live: 0 or 1.
    pub const ACTIVE_GEN: u32 = 0;
    /// `MODE_ENFORCE` or `MODE_MONITOR`.
    pub const MODE: u32 = 1;
    pub const SLOTS: u32 = 2;
}

pub const MODE_ENFORCE: u32 = 0;
/// Dry run: nothing is dropped, would-be drops are counted as monitored.
pub const MODE_MONITOR: u32 = 1;

/// Per-list actions stored in the policy map. 0 is "no action": a list id with no
/// policy in the live generation passes (it cannot be hit by a well-formed table).
pub const ACTION_NONE: u32 = 0;
pub const ACTION_PASS: u32 = 1;
pub const ACTION_DROP: u32 = 2;
/// Counted as a would-be drop, then passed.
pub const ACTION_MONITOR: u32 = 3;

/// Index into the policy array for `list_id` in generation `gen`.
#[inline(always)]
pub const fn policy_index(gen: u32, list_id: u32) -> u32 {
    (gen & 1) * MAX_LISTS + list_id
}

/// Indices of the per-CPU `BLK_GLOBAL_STATS` array (u64 packet counts).
pub mod counter {
    /// IP packets passed (no list hit, an allow list hit, or a monitor hit).
    pub const PASSED: u32 = 0;
    pub const DROPPED: u32 = 1;
    /// Would have been dropped (monitor list, or global monitor mode); passed.
    pub const MONITORED: u32 = 2;
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passed untouched.
    pub const NON_IP: u32 = 3;
    /// Too short for its headers or an impossible header: passed to the stack,
    /// which drops it itself.
    pub const MALFORMED: u32 = 4;
    pub const COUNT: u32 = 5;
    pub const NAMES: [&str; COUNT as usize] = ["passed", "dropped", "monitored", "non_ip", "malformed"];
}

/// Value of the per-CPU `BLK_LIST_STATS` array: traffic that hit a list.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ListStats {
    pub packets: u64,
    /// Whole frame length, Ethernet header included.
    pub bytes: u64,
}

pub const LIST_NAME_LEN: usize = 120;

/// Value of the `BLK_LIST_INFO` array: what a list id means, so that `blocker stats`
/// can name lists from the pins alone, without the daemon. Not read by the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ListInfo {
    /// 0 = free slot, 1 = in the live policy, 2 = retired (kept for its counters).
    pub state: u32,
    /// The list's action in the live policy (one of `ACTION_*`).
    pub action: u32,
    pub name_len: u32,
    pub name: [u8; LIST_NAME_LEN],
}

pub const LIST_STATE_FREE: u32 = 0;
pub const LIST_STATE_LIVE: u32 = 1;
pub const LIST_STATE_RETIRED: u32 = 2;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, repr(C), no padding (checked by bytemuck's derive).
    unsafe impl aya::Pod for super::ListStats {}
    unsafe impl aya::Pod for super::ListInfo {}
}

//! Types and constants shared by the XDP program (`blocker-ebpf`) and userspace.
//!
//! One definition of each thing that crosses the kernel boundary: map names, map
//! sizes, counter indices, action codes and the layout of map values. The `user`
//! feature implements `aya::Pod` so userspace can read and write these maps.
#![no_std]

/// Bumped whenever a map's type, key, value or size changes. It is part of the pin
/// directory path, so a new layout never silently reuses an incompatible pinned map.
pub const LAYOUT_VERSION: u32 = 9;

/// Number of list ids (a list is one deny/allow/monitor source, e.g. one file).
pub const MAX_LISTS: u32 = 1024;

pub mod bans;
pub mod classifier;
pub mod events;
pub mod scope;
pub mod wire;

/// Map names, as declared in the XDP program and pinned by name.
pub mod map_names {
    pub const CONFIG: &str = "BLK_CONFIG";
    pub const LIST_STATS: &str = "BLK_LIST_STATS";
    pub const GLOBAL_STATS: &str = "BLK_GLOBAL_STATS";
    pub const LIST_INFO: &str = "BLK_LIST_INFO";
    /// The full name of each list id in use (`ListName`).
    pub const LIST_NAMES: &str = "BLK_LIST_NAMES";
    /// The sampled drop events (`events::DropEvent`) and their token buckets.
    pub const EVENTS: &str = "BLK_EVENTS";
    pub const EVENT_STATE: &str = "BLK_EVENT_STATE";
    /// The reject answers' token buckets (`events::Bucket`, per CPU).
    pub const REJECT_STATE: &str = "BLK_REJECT_STATE";
    /// The classifier's maps (see `classifier`): made for each table, sized to it.
    pub const V4_DIR: &str = "BLK_V4_DIR";
    pub const V4_RANGES: &str = "BLK_V4_RANGES";
    pub const V6_DIR: &str = "BLK_V6_DIR";
    pub const V6_RANGES: &str = "BLK_V6_RANGES";
    pub const V6_EXT: &str = "BLK_V6_EXT";
    pub const V6_HOST_KEYS: &str = "BLK_V6_HKEYS";
    pub const V6_HOST_VALUES: &str = "BLK_V6_HVALS";
    pub const CLASSIFIER: [&str; 7] = [V4_DIR, V4_RANGES, V6_DIR, V6_RANGES, V6_EXT, V6_HOST_KEYS, V6_HOST_VALUES];
    /// Read-only globals of each program instance: the bits of its table's direct
    /// tables (`classifier::Shape`), set by userspace when it loads the object.
    pub const V4_DIR_BITS: &str = "BLK_V4_DIR_BITS";
    pub const V6_DIR_BITS: &str = "BLK_V6_DIR_BITS";
    /// The same shape, with the scopes' names (`scope::TableInfo`), for
    /// userspace, in a one-entry map of each program instance.
    pub const SHAPE: &str = "BLK_SHAPE";
    /// Scopes (`scope`): the port map of each program instance (one block when
    /// the policy has no scopes), and the read-only global that says whether
    /// the program reads it.
    pub const PORT_SCOPES: &str = "BLK_PORT_SCOPES";
    /// The port map again, as the read-only global the program reads.
    pub const PORT_MAP: &str = "BLK_PORT_MAP";
    pub const SCOPED: &str = "BLK_SCOPED";
    /// Read-only global: the index of the outbound table (`OUTBOUND_SCOPE`).
    pub const OUTBOUND_SCOPE: &str = "BLK_OUTBOUND_SCOPE";
    /// Bans (`bans`): per family, and the prefix lengths in use.
    pub const BANS_V4: &str = "BLK_BANS_V4";
    pub const BANS_V6: &str = "BLK_BANS_V6";
    pub const BAN_LENGTHS: &str = "BLK_BAN_LENGTHS";
    pub const BAN_FILTER: &str = "BLK_BAN_FILTER";
}

/// The log target of the XDP program's aya-log records in userspace.
pub const EBPF_LOG_TARGET: &str = "xdp";

/// The XDP program's name (its function name in the object file).
pub const PROGRAM_NAME: &str = "blocker";
/// The tc egress (TCX) program's name: the outbound direction, with the same
/// maps as the XDP program of its object.
pub const EGRESS_PROGRAM_NAME: &str = "blocker_egress";
/// The name of the scope that holds the outbound lists (`scope`): it is the
/// last table of an image, and no port map entry names it.
pub const OUTBOUND_SCOPE: &str = "outbound";

/// The benchmark's object (blocker-ebpf/src/bench.rs, `blocker-bench`): programs
/// and maps only the benchmark harness loads.
pub mod bench {
    /// The filter with the kernel LPM trie as classifier, and the trie's maps.
    pub const PROGRAM_LPM_BASELINE: &str = "blocker_lpm";
    pub const LPM_V4: &str = "BLK_LPM_V4";
    pub const LPM_V6: &str = "BLK_LPM_V6";
    /// Capacity of the baseline LPM tries.
    pub const LPM_BASELINE_ENTRIES: u32 = 1 << 22;
    /// The filter with a classifier that reads no memory (benchmark profile).
    pub const PROGRAM_NO_LOOKUP: &str = "blocker_no_lookup";
    /// Programs that only drop, or only pass.
    pub const PROGRAM_DROP_FLOOR: &str = "drop_floor";
    pub const PROGRAM_PASS_FLOOR: &str = "pass_floor";
    /// Live-frames traffic generators and their pools of source addresses.
    pub const PROGRAM_TRAFFICGEN: &str = "trafficgen";
    pub const GEN_POOL_MAP: &str = "GEN_POOL";
    /// The same for Ethernet+IPv6 frames.
    pub const PROGRAM_TRAFFICGEN6: &str = "trafficgen6";
    pub const GEN_POOL6_MAP: &str = "GEN_POOL6";
    /// Entries of each generator pool (a power of two).
    pub const GEN_POOL_SIZE: u32 = 1 << 21;
}

/// Slots of the `BLK_CONFIG` array (u32 each), each replaced by one aligned store.
pub mod config {
    /// `MODE_ENFORCE` or `MODE_MONITOR`.
    pub const MODE: u32 = 0;
    /// Nanoseconds of token-bucket credit one drop event costs on one CPU
    /// (10^9 / events per second); 0: no events.
    pub const EVENT_INTERVAL_NS: u32 = 1;
    /// The same for one reject answer (10^9 * CPUs / answers per second, so
    /// that all CPUs together keep to the interface's rate); 0: no answers.
    pub const REJECT_INTERVAL_NS: u32 = 2;
    pub const SLOTS: u32 = 3;
}

pub const MODE_ENFORCE: u32 = 0;
/// Dry run: nothing is dropped, would-be drops are counted as monitored.
pub const MODE_MONITOR: u32 = 1;

/// Per-list actions, carried in the classifier's leaves (see `classifier::leaf`).
/// 0 is "no action": such a leaf passes (a well-formed table never holds one).
pub const ACTION_NONE: u32 = 0;
pub const ACTION_PASS: u32 = 1;
pub const ACTION_DROP: u32 = 2;
/// Counted as a would-be drop, then passed.
pub const ACTION_MONITOR: u32 = 3;
/// Dropped, and answered (TCP RST, ICMP unreachable) within the reject rate.
pub const ACTION_REJECT: u32 = 4;

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
    /// Dropped and answered (a reject list, within the reject rate; past it, a
    /// reject is dropped without an answer and counted as dropped).
    pub const REJECTED: u32 = 5;
    pub const COUNT: u32 = 6;
    pub const NAMES: [&str; COUNT as usize] = ["passed", "dropped", "monitored", "non_ip", "malformed", "rejected"];
    /// The map holds one set of counters per direction: inbound (XDP, judged
    /// by source), then outbound (tc egress, judged by destination).
    pub const SLOTS: u32 = 2 * COUNT;

    /// The slot of counter `c` of a direction.
    #[inline(always)]
    pub const fn index(outbound: bool, c: u32) -> u32 {
        if outbound {
            COUNT + c
        } else {
            c
        }
    }
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

/// The longest list name, in bytes (a path or URL, `country:CC`, a NAME=): a
/// policy with a longer one is refused.
pub const LIST_NAME_LEN: usize = 4092;
/// The longest scope name (`scope`).
pub const SCOPE_NAME_LEN: usize = 28;

/// Value of the `BLK_LIST_INFO` array: what a list id means, so that `blocker stats`
/// can name lists from the pins alone, without the daemon. Not read by the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ListInfo {
    /// 0 = free slot, 1 = in the live policy, 2 = retired (kept for its counters),
    /// 3 = an origin of bans.
    pub state: u32,
    /// The list's action in the live policy (one of `ACTION_*`).
    pub action: u32,
    /// The scope the list belongs to (`default` outside every scope).
    pub scope_len: u32,
    pub scope: [u8; SCOPE_NAME_LEN],
    /// `LIST_*` flags; read by the program when a banned source hits the list.
    pub flags: u32,
}

/// `ListInfo::flags`: the list's pass wins over bans (never-block ranges and
/// allow lists, not the allowed countries of an allowlist).
pub const LIST_SHIELDS_BANS: u32 = 1;
/// The never-block ranges: they shield from bans whatever the scope.
pub const LIST_NEVER_BLOCK: u32 = 2;

/// Value of the `BLK_LIST_NAMES` hash map (key: the list id): the list's whole
/// name. A hash map that allocates an entry per id in use, so that names of
/// any length a policy may give cost only what they hold. Not read by the
/// kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct ListName {
    pub len: u32,
    pub bytes: [u8; LIST_NAME_LEN],
}

pub const LIST_STATE_FREE: u32 = 0;
pub const LIST_STATE_LIVE: u32 = 1;
pub const LIST_STATE_RETIRED: u32 = 2;
/// The origin of bans (`ban:NAME`): never retired by a reload.
pub const LIST_STATE_ORIGIN: u32 = 3;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data: repr(C), no padding, every bit pattern valid (which
    // bytemuck's Pod derive checks), so the kernel's bytes can be read as one.
    unsafe impl aya::Pod for super::ListStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListName {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::classifier::Shape {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::scope::TableInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::events::EventState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::events::Bucket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::bans::BanKeyV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::bans::BanKeyV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::bans::BanEntry {}
}

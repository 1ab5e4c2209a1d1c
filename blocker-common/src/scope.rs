//! Scopes: a policy's parts that apply to chosen L4 protocols and destination
//! ports. Each scope has its own classifier table (the tables of one program
//! instance lie one after another in its classifier maps); the port map says
//! which scope a packet belongs to.
//!
//! Port map keys: `class * 65536 + port` for the protocols with ports scopes
//! can name (`SCOPED_PROTOCOLS`, class = index), then one key per class for a
//! packet of that protocol without a readable port (a later fragment), then one
//! key per IP protocol number for every other protocol. Each key's value is the
//! index of the scope that takes it, or `SCOPE_NONE` (such packets pass).

/// tcp, udp, sctp: the protocols whose ports a scope can name.
pub const SCOPED_PROTOCOLS: [u8; 3] = [6, 17, 132];
const CLASSES: u32 = SCOPED_PROTOCOLS.len() as u32;
const NO_PORT_KEYS: u32 = CLASSES * 65536;
const OTHER_KEYS: u32 = NO_PORT_KEYS + CLASSES;
/// Keys of the port map.
pub const PORT_KEYS: u32 = OTHER_KEYS + 256;
/// The port map: one value of a one-entry array, so that the program reads a
/// key's scope with one load (the lookup of entry 0 costs next to nothing).
pub const PORT_MAP_BYTES: usize = (PORT_KEYS as usize).next_multiple_of(8);
pub type PortMap = [u8; PORT_MAP_BYTES];

/// The most scopes one policy has (`[policy]`'s own lists and the outbound
/// lists each count as one).
pub const MAX_SCOPES: u32 = 16;
/// The most tables of one image: the scopes', then one for each set of scopes
/// that judge packets whose port cannot be read together (a later fragment of
/// each scoped protocol, and `OPAQUE_PROTOCOLS`).
pub const MAX_TABLES: u32 = MAX_SCOPES + SCOPED_PROTOCOLS.len() as u32 + 1;

/// What the L4 parser leaves as the protocol of a packet whose L4 header it
/// cannot reach: IPv6 extension headers (a chain longer than the walk, or cut
/// short by the frame; also what an IPv4 header names, where the parser walks
/// none), ESP (encrypted), the reserved 255. The packet's port could be any, so
/// its key goes to the table of every scope that could take it.
pub const OPAQUE_PROTOCOLS: [u8; 12] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254, 255];
/// A key no scope takes.
pub const SCOPE_NONE: u8 = 0xff;

/// The key of a packet of class `class` to `port` (None: no port to read).
#[inline(always)]
pub const fn port_key(class: u32, port: Option<u16>) -> u32 {
    match port {
        Some(p) => class * 65536 + p as u32,
        None => NO_PORT_KEYS + class,
    }
}

/// The key of a packet of a protocol other than `SCOPED_PROTOCOLS`.
#[inline(always)]
pub const fn other_key(protocol: u8) -> u32 {
    OTHER_KEYS + protocol as u32
}

/// The key of a packet of IP protocol `protocol` to `port`.
#[inline(always)]
pub const fn key_of(protocol: u8, port: Option<u16>) -> u32 {
    match protocol {
        6 => port_key(0, port),
        17 => port_key(1, port),
        132 => port_key(2, port),
        p => other_key(p),
    }
}

/// Value of each program instance's one-entry `BLK_SHAPE` map, for userspace
/// (the program reads its shape from read-only globals): the table's shape and
/// the name of each of its scopes, in the order they are tried.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct TableInfo {
    pub shape: crate::classifier::Shape,
    /// 1: the program reads the port map.
    pub scoped: u32,
    /// 1 + the index of the outbound table (the tc egress program's), 0: none.
    pub outbound: u32,
    pub scope_name_lens: [u8; MAX_SCOPES as usize],
    pub scope_names: [[u8; crate::SCOPE_NAME_LEN]; MAX_SCOPES as usize],
}

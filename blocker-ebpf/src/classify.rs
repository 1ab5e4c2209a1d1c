//! The classifier's maps and its walk (`blocker_common::classifier`, shared with
//! userspace). The maps are created for each table, sized to it, and filled by
//! userspace before the program that uses them is swapped onto the interface.

use aya_ebpf::{
    btf_maps::{Array as BtfArray, ArrayOfMaps},
    macros::{btf_map, map},
    maps::Array,
    programs::XdpContext,
};
use blocker_common::{
    classifier::{self, Block16, Block32, Block64, Memory, Piece, Shape, PIECE_BLOCKS},
    scope::{key_of, PortMap, TableInfo, PORT_KEYS, PORT_MAP_BYTES, SCOPE_NONE},
};

use crate::parse::{self, Packet};

/// A classifier map: pieces of `PIECE_BLOCKS` blocks, each an inner map of its
/// own that the kernel allocates in its direct map (see `classifier::Piece`).
/// The outer size here is a placeholder: the loader sets it to the table's.
type Pieces = ArrayOfMaps<BtfArray<Piece, 1, 0>, 1>;

#[btf_map]
static BLK_V4_DIR: Pieces = ArrayOfMaps::new();
#[btf_map]
static BLK_V4_RANGES: Pieces = ArrayOfMaps::new();
#[btf_map]
static BLK_V6_DIR: Pieces = ArrayOfMaps::new();
#[btf_map]
static BLK_V6_RANGES: Pieces = ArrayOfMaps::new();
#[btf_map]
static BLK_V6_EXT: Pieces = ArrayOfMaps::new();
#[btf_map]
static BLK_V6_HKEYS: Pieces = ArrayOfMaps::new();
#[btf_map]
static BLK_V6_HVALS: Pieces = ArrayOfMaps::new();

/// Block `block` of a classifier map, as a block of `B` (every block type is 64
/// bytes of plain integers, at most 8-byte aligned, like the piece's).
#[inline(always)]
fn block_of<B>(map: &'static Pieces, block: u32) -> Option<&'static B> {
    // The inner key on the stack: a `&0` would be a constant in .rodata, which
    // LLVM may place at the address of a read-only global of the same value
    // (`BLK_OUTBOUND_SCOPE`, 0 at build time), and the loader changes those.
    let mut first = 0u32;
    // SAFETY: a write to a local.
    unsafe { core::ptr::write_volatile(&mut first, 0) };
    let piece = map.get_value(block / PIECE_BLOCKS, &first)?;
    // LLVM knows the remainder is below PIECE_BLOCKS and would drop the bounds
    // check; the verifier does not (it sees a multiply and a subtract). A
    // volatile read hides what LLVM knows, so the check stays for the verifier.
    let at = block % PIECE_BLOCKS;
    // SAFETY: a read of a local.
    let at = unsafe { core::ptr::read_volatile(&at) };
    let b: &Block64 = piece.blocks.get(at as usize)?;
    // SAFETY: B is one of Block16/32/64: the same size, alignment at most 8.
    Some(unsafe { &*(b as *const Block64).cast::<B>() })
}

// The bits of the direct tables, set by the loader for each table. Read-only data
// of a loaded program is frozen, so the verifier knows them as constants.
#[unsafe(no_mangle)]
static BLK_V4_DIR_BITS: u32 = classifier::MIN_DIR_BITS;
#[unsafe(no_mangle)]
static BLK_V6_DIR_BITS: u32 = classifier::MIN_DIR_BITS;
/// 1 when the table has scopes: the program reads the packet's L4 header and
/// the port map. A constant to the verifier, so a policy without scopes costs
/// nothing here.
#[unsafe(no_mangle)]
static BLK_SCOPED: u32 = 0;

/// The index of the outbound table (the last of the image), set by the loader
/// when the policy has outbound lists.
#[unsafe(no_mangle)]
static BLK_OUTBOUND_SCOPE: u32 = 0;

/// The table the egress program looks destinations up in: a constant to the
/// verifier.
#[inline(always)]
pub(crate) fn outbound_scope() -> u32 {
    // SAFETY: as in `Maps::shape`.
    unsafe { core::ptr::read_volatile(&BLK_OUTBOUND_SCOPE) }
}

/// The port map (`blocker_common::scope`): which scope a packet belongs to. A
/// read-only global, set when the program is loaded: one load reads a key's
/// scope, with no map lookup before it. `BLK_PORT_SCOPES` holds the same for
/// userspace.
#[unsafe(no_mangle)]
static BLK_PORT_MAP: PortMap = [SCOPE_NONE; PORT_MAP_BYTES];
#[map]
static BLK_PORT_SCOPES: Array<PortMap> = Array::with_max_entries(1, 0);

/// The shape again, for userspace (which cannot read the globals by name from a
/// loaded program). See `lookup_v4` for how it stays bound to the program.
#[map]
static BLK_SHAPE: Array<TableInfo> = Array::with_max_entries(1, 0);

/// The classifier's memory as the program sees it: blocks of the maps.
struct Maps;

impl Memory for Maps {
    #[inline(always)]
    fn shape(&self) -> Shape {
        // SAFETY: plain reads of statics; volatile so that the compiler does not
        // fold in the placeholder values the loader replaces.
        unsafe {
            Shape {
                v4_bits: core::ptr::read_volatile(&BLK_V4_DIR_BITS),
                v6_bits: core::ptr::read_volatile(&BLK_V6_DIR_BITS),
                scopes: 1,
            }
        }
    }
    #[inline(always)]
    fn v4_dir(&self, block: u32) -> Option<&Block32> {
        block_of(&BLK_V4_DIR, block)
    }
    #[inline(always)]
    fn v4_ranges(&self, block: u32) -> Option<&Block32> {
        block_of(&BLK_V4_RANGES, block)
    }
    #[inline(always)]
    fn v6_dir(&self, block: u32) -> Option<&Block32> {
        block_of(&BLK_V6_DIR, block)
    }
    #[inline(always)]
    fn v6_ranges(&self, block: u32) -> Option<&Block64> {
        block_of(&BLK_V6_RANGES, block)
    }
    #[inline(always)]
    fn v6_ext(&self, block: u32) -> Option<&Block32> {
        block_of(&BLK_V6_EXT, block)
    }
    #[inline(always)]
    fn v6_host_keys(&self, block: u32) -> Option<&Block64> {
        block_of(&BLK_V6_HKEYS, block)
    }
    #[inline(always)]
    fn v6_host_values(&self, block: u32) -> Option<&Block16> {
        block_of(&BLK_V6_HVALS, block)
    }
}

/// The scope a packet belongs to: 0 when the table has none; otherwise the
/// port map's entry for its L4 protocol and destination port (`SCOPE_NONE`:
/// no scope takes it). A packet without a readable port (a later fragment, a
/// cut header) takes its protocol's no-port entry, which stays in scope.
///
/// A function of its own (a BPF-to-BPF call): the verifier goes on after it
/// from the few values it returns, not from one state per header walk.
#[inline(never)]
pub(crate) fn scope_of(ctx: &XdpContext, packet: &Packet) -> u32 {
    // SAFETY: as in `Maps::shape`.
    let scoped = unsafe { core::ptr::read_volatile(&BLK_SCOPED) };
    // Never taken (the flag is 0 or 1, a constant to the verifier, which
    // removes the branch): it names the userspace copy of the port map, so that
    // it is bound to the program (see `lookup_v4`).
    if scoped > 1 {
        return BLK_PORT_SCOPES.get(0).map_or(u32::from(SCOPE_NONE), |m| u32::from(m[0]));
    }
    if scoped == 0 {
        return 0;
    }
    let Some(l4) = parse::l4(ctx, packet) else { return u32::from(SCOPE_NONE) };
    let port = if l4.flags == 0 { Some(l4.dst_port) } else { None };
    let key = key_of(l4.protocol, port);
    if key >= PORT_KEYS {
        return u32::from(SCOPE_NONE);
    }
    // SAFETY: a read of the global inside its bounds (key < PORT_KEYS).
    u32::from(unsafe { core::ptr::read_volatile(BLK_PORT_MAP.as_ptr().add(key as usize)) })
}

/// The leaf whose range holds `src` (network-order bytes) in `scope`'s table.
#[inline(always)]
pub(crate) fn lookup_v4(scope: u32, src: [u8; 4]) -> Option<u16> {
    // A program binds only the maps its code names. This branch, which the
    // verifier removes as dead (the bits are a constant and never 0), names
    // BLK_SHAPE so that userspace finds it among the program's maps.
    // SAFETY: as in `Maps::shape`.
    if unsafe { core::ptr::read_volatile(&BLK_V4_DIR_BITS) } == 0 {
        return BLK_SHAPE.get(0).map(|s| s.shape.v4_bits as u16);
    }
    classifier::lookup_v4(&Maps, scope, u32::from_be_bytes(src))
}

#[inline(always)]
pub(crate) fn lookup_v6(scope: u32, src: [u8; 16]) -> Option<u16> {
    let hi = u64::from_be_bytes([src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7]]);
    let lo = u64::from_be_bytes([src[8], src[9], src[10], src[11], src[12], src[13], src[14], src[15]]);
    classifier::lookup_v6(&Maps, scope, hi, lo)
}

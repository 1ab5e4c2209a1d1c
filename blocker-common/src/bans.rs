//! Bans: live decisions (an address or a prefix, until a time) that the XDP
//! program enforces beside the table, without recompiling it. One definition of
//! the maps' keys and values and of the walk that finds a packet's ban, shared
//! by the program and by userspace (`blocker lookup`, the tests).
//!
//! - `BLK_BANS_V4` / `BLK_BANS_V6`: hash maps from (prefix length, masked
//!   address) to `BanEntry`. Allocated per entry (no preallocation), so their
//!   memory follows the bans held; never LRU, so no active ban is evicted.
//! - `BLK_BAN_LENGTHS`: which prefix lengths have bans, one bit per length
//!   (`LENGTH_WORDS`). The walk probes only those, longest first: a host ban
//!   costs one hash lookup, and no ban at all costs one read of a zero word.
//!
//! Expiry is a time of the kernel's boot clock (CLOCK_BOOTTIME, which counts
//! suspend), the clock `bpf_ktime_get_boot_ns` reads: the program ignores a ban
//! whose time has come, whether or not the daemon runs to remove it.

/// Bans each family's map holds. The kernel sizes a hash map's bucket array
/// (16 bytes a slot) by it at creation; entries are allocated as bans come.
pub const DEFAULT_MAX_BANS: u32 = 1 << 20;

/// The `BLK_BAN_LENGTHS` words, one bit per prefix length in use, counted
/// from the longest: IPv4 length `len` is bit `32 - len` of word 0; IPv6
/// length `len` is bit `r % 64` of word `1 + r / 64`, where `r = 128 - len`.
/// The walk takes the lowest bit first, so the longest prefix first.
pub const LENGTH_WORDS: u32 = 4;
pub const V4_WORD: u32 = 0;
pub const V6_FIRST_WORD: u32 = 1;

/// `BLK_BAN_FILTER`: one bit per hash of (length, masked address) of every
/// ban, 2^24 bits (2 MiB), mmapable. The walk reads a length's bit first and
/// looks the map up only when it is set: most packets of sources with no ban
/// cost one read per length instead of a hash lookup. Bits are only ever set
/// while the ban they stand for is held (userspace rebuilds the filter from
/// its bans after many removals), so no ban is ever missed.
pub const FILTER_BITS_LOG2: u32 = 24;
pub const FILTER_WORDS: u32 = 1 << (FILTER_BITS_LOG2 - 6);

/// The filter bit of an IPv4 ban key (host-order address, bits past `len`
/// cleared).
#[inline(always)]
pub const fn filter_bit_v4(len: u32, addr: u32) -> u32 {
    filter_bit(len as u64, addr as u64, 0)
}

/// The filter bit of an IPv6 ban key (upper and lower 64 bits, masked).
#[inline(always)]
pub const fn filter_bit_v6(len: u32, hi: u64, lo: u64) -> u32 {
    filter_bit(len as u64 + 256, hi, lo)
}

#[inline(always)]
const fn filter_bit(len: u64, hi: u64, lo: u64) -> u32 {
    let x = hi ^ lo.rotate_left(29) ^ len.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let x = (x ^ (x >> 31)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    ((x ^ (x >> 32)) >> (64 - FILTER_BITS_LOG2)) as u32
}

/// An expiry that never comes (a ban without `--for`).
pub const NEVER: u64 = u64::MAX;

/// Key of `BLK_BANS_V4`: the prefix length, then the address with the bits
/// past it cleared (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct BanKeyV4 {
    pub len: u32,
    pub addr: [u8; 4],
}

/// Key of `BLK_BANS_V6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct BanKeyV6 {
    pub len: u32,
    pub addr: [u8; 16],
}

/// Value of both ban maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct BanEntry {
    /// Boot-clock nanoseconds from which the ban no longer holds (`NEVER`).
    pub expires_ns: u64,
    /// Packets the ban matched (counted by the program).
    pub packets: u64,
    /// The list id its origin is counted under (`LIST_STATE_ORIGIN`).
    pub list_id: u32,
    /// `ACTION_DROP` or `ACTION_REJECT`.
    pub action: u32,
}

impl AsRef<BanEntry> for BanEntry {
    fn as_ref(&self) -> &BanEntry {
        self
    }
}

impl BanEntry {
    #[inline(always)]
    pub fn holds_at(&self, now_ns: u64) -> bool {
        now_ns < self.expires_ns
    }
}

/// The number of set bits, without branches (SWAR).
#[inline(always)]
pub const fn ones(x: u64) -> u32 {
    let x = x - ((x >> 1) & 0x5555_5555_5555_5555);
    let x = (x & 0x3333_3333_3333_3333) + ((x >> 2) & 0x3333_3333_3333_3333);
    let x = (x + (x >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    (x.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
}

/// The index of the lowest set bit of `bits` (not 0), without branches: the
/// verifier then follows one path per round of the walks below, not one per
/// outcome of each comparison.
#[inline(always)]
pub const fn lowest_bit(bits: u64) -> u32 {
    ones((bits & bits.wrapping_neg()).wrapping_sub(1))
}

/// The ban that holds `addr` (host order) at `now_ns`, longest prefix first,
/// probing only the lengths set in `lengths` (word `V4_WORD`). `filter`
/// reads a bit of `BLK_BAN_FILTER`, `get` the map; `now` is called only when
/// an entry is found.
#[inline(always)]
pub fn find_v4<E: AsRef<BanEntry>>(
    lengths: u64,
    addr: u32,
    filter: impl Fn(u32) -> bool,
    get: impl Fn(&BanKeyV4) -> Option<E>,
    now: impl Fn() -> u64,
) -> Option<(BanKeyV4, E)> {
    let mut bits = lengths & ((1u64 << 33) - 1);
    // At most 33 lengths: a bound the verifier sees.
    let mut i = 0;
    while i < 33 && bits != 0 {
        let r = lowest_bit(bits) & 63;
        bits &= bits - 1;
        // r = 32 - len; the mask of len bits is !0 << r (r = 32: none).
        let mask = (u64::MAX << r) as u32;
        let len = 32u32.wrapping_sub(r);
        if !filter(filter_bit_v4(len, addr & mask)) {
            i += 1;
            continue;
        }
        let key = BanKeyV4 { len, addr: (addr & mask).to_be_bytes() };
        if let Some(e) = get(&key) {
            if e.as_ref().holds_at(now()) {
                return Some((key, e));
            }
        }
        i += 1;
    }
    None
}

/// The IPv6 walk over one word (`1 + W` of `BLK_BAN_LENGTHS`).
#[inline(always)]
fn find_v6_word<E: AsRef<BanEntry>, const W: u32>(
    word: u64,
    hi: u64,
    lo: u64,
    filter: &impl Fn(u32) -> bool,
    get: &impl Fn(&BanKeyV6) -> Option<E>,
    now: &impl Fn() -> u64,
) -> Option<(BanKeyV6, E)> {
    let mut bits = if W == 2 { word & 1 } else { word };
    let mut i = 0;
    while i < 64 && bits != 0 {
        let b = lowest_bit(bits) & 63;
        bits &= bits - 1;
        // r = 64 W + b = 128 - len.
        let (mh, ml, len) = match W {
            0 => (u64::MAX, u64::MAX << b, 128 - b),
            1 => (u64::MAX << b, 0, 64 - b),
            _ => (0, 0, 0),
        };
        if !filter(filter_bit_v6(len, hi & mh, lo & ml)) {
            i += 1;
            continue;
        }
        let (h, l) = ((hi & mh).to_be_bytes(), (lo & ml).to_be_bytes());
        let key = BanKeyV6 {
            len,
            addr: [h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7]],
        };
        if let Some(e) = get(&key) {
            if e.as_ref().holds_at(now()) {
                return Some((key, e));
            }
        }
        i += 1;
    }
    None
}

/// The IPv6 walk: `words` are `BLK_BAN_LENGTHS` words 1..=3; `hi` and `lo`
/// the address's upper and lower 64 bits.
#[inline(always)]
pub fn find_v6<E: AsRef<BanEntry>>(
    words: [u64; 3],
    hi: u64,
    lo: u64,
    filter: impl Fn(u32) -> bool,
    get: impl Fn(&BanKeyV6) -> Option<E>,
    now: impl Fn() -> u64,
) -> Option<(BanKeyV6, E)> {
    if let Some(found) = find_v6_word::<E, 0>(words[0], hi, lo, &filter, &get, &now) {
        return Some(found);
    }
    if let Some(found) = find_v6_word::<E, 1>(words[1], hi, lo, &filter, &get, &now) {
        return Some(found);
    }
    find_v6_word::<E, 2>(words[2], hi, lo, &filter, &get, &now)
}

/// The word and bit of an IPv4 length in `BLK_BAN_LENGTHS`.
pub const fn v4_length_slot(len: u32) -> (u32, u32) {
    (V4_WORD, 32 - len)
}

/// The word and bit of an IPv6 length in `BLK_BAN_LENGTHS`.
pub const fn v6_length_slot(len: u32) -> (u32, u32) {
    let r = 128 - len;
    (V6_FIRST_WORD + r / 64, r % 64)
}

//! An interface's ban maps (`blocker_common::bans`), pinned beside its other
//! shared maps: written by the daemon's ban store (`decisions`), read by
//! `blocker lookup` and the tests. The program reads them for every packet of a
//! family that has bans.

use std::path::Path;

use aya::maps::{Array, HashMap, MapData, MapError};
use blocker_common::{
    bans::{self, BanEntry, BanKeyV4, BanKeyV6, LENGTH_WORDS},
    map_names,
};

use super::maps::{open_pinned, MapsError};
use crate::net::{Family, Prefix};

/// Why a ban could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BanMapError {
    /// The map holds its maximum (E2BIG): nothing was evicted.
    #[error("the {family} ban map is full ({max} bans)")]
    Full { family: &'static str, max: u32 },
    #[error("{map}: {error}")]
    Kernel { map: &'static str, error: Box<MapError> },
}

/// A ban map's key, per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BanKey {
    V4(BanKeyV4),
    V6(BanKeyV6),
}

impl BanKey {
    pub fn of(p: &Prefix) -> BanKey {
        match p.family {
            Family::V4 => BanKey::V4(BanKeyV4 { len: u32::from(p.len), addr: (p.addr as u32).to_be_bytes() }),
            Family::V6 => BanKey::V6(BanKeyV6 { len: u32::from(p.len), addr: p.addr.to_be_bytes() }),
        }
    }

    pub fn prefix(&self) -> Prefix {
        match self {
            BanKey::V4(k) => {
                Prefix { family: Family::V4, addr: u128::from(u32::from_be_bytes(k.addr)), len: k.len as u8 }
            }
            BanKey::V6(k) => Prefix { family: Family::V6, addr: u128::from_be_bytes(k.addr), len: k.len as u8 },
        }
    }
}

/// The `BLK_BAN_LENGTHS` words for bans of these prefixes.
pub fn length_words<'a>(prefixes: impl IntoIterator<Item = &'a Prefix>) -> [u64; LENGTH_WORDS as usize] {
    let mut words = [0u64; LENGTH_WORDS as usize];
    for p in prefixes {
        match p.family {
            Family::V4 => {
                let (w, bit) = bans::v4_length_slot(u32::from(p.len));
                words[w as usize] |= 1 << bit;
            }
            Family::V6 => {
                let (w, bit) = bans::v6_length_slot(u32::from(p.len));
                words[w as usize] |= 1 << bit;
            }
        }
    }
    words
}

/// The filter bit of a ban of `p` (`blocker_common::bans::BLK_BAN_FILTER`).
pub fn filter_bit(p: &Prefix) -> u32 {
    match p.family {
        Family::V4 => bans::filter_bit_v4(u32::from(p.len), p.addr as u32),
        Family::V6 => bans::filter_bit_v6(u32::from(p.len), (p.addr >> 64) as u64, p.addr as u64),
    }
}

/// The pinned ban maps of one interface.
pub struct BanMaps {
    v4: HashMap<MapData, BanKeyV4, BanEntry>,
    v6: HashMap<MapData, BanKeyV6, BanEntry>,
    lengths: Array<MapData, u64>,
    /// `BLK_BAN_FILTER`, mapped into this process.
    filter: FilterMapping,
    max: [u32; 2],
    /// Bans removed since the filter was last rebuilt: their bits may still
    /// be set (costing a lookup, never a miss).
    pub stale_bits: usize,
}

/// The filter's words, mapped shared: the program reads what is written.
struct FilterMapping {
    words: *mut u64,
}

// SAFETY: the mapping is owned by the struct; one writer (the daemon's task).
unsafe impl Send for FilterMapping {}

const FILTER_BYTES: usize = bans::FILTER_WORDS as usize * 8;

impl FilterMapping {
    fn open(dir: &Path) -> Result<FilterMapping, MapsError> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let path = dir.join(map_names::BAN_FILTER);
        let data = MapData::from_pin(&path).map_err(|error| MapsError::OpenPinned { path, error: Box::new(error) })?;
        // SAFETY: an mmapable BPF array of FILTER_WORDS u64s; unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                FILTER_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MapsError::Mmap { name: map_names::BAN_FILTER, error: std::io::Error::last_os_error() });
        }
        Ok(FilterMapping { words: ptr.cast() })
    }

    fn word(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(i < bans::FILTER_WORDS as usize);
        // SAFETY: in bounds (checked), 8-byte aligned (page-aligned mapping),
        // shared with the kernel, which only reads it.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.words.add(i)) }
    }
}

impl Drop for FilterMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`.
        unsafe { libc::munmap(self.words.cast(), FILTER_BYTES) };
    }
}

fn kernel(map: &'static str) -> impl FnOnce(MapError) -> BanMapError {
    move |error| BanMapError::Kernel { map, error: Box::new(error) }
}

impl BanMaps {
    pub fn open(dir: &Path) -> Result<BanMaps, MapsError> {
        let max = |name: &str| -> Result<u32, MapsError> {
            let data = MapData::from_pin(dir.join(name))
                .map_err(|error| MapsError::OpenPinned { path: dir.join(name), error: Box::new(error) })?;
            Ok(data.info().map(|i| i.max_entries()).unwrap_or(bans::DEFAULT_MAX_BANS))
        };
        Ok(BanMaps {
            max: [max(map_names::BANS_V4)?, max(map_names::BANS_V6)?],
            v4: open_pinned(dir, map_names::BANS_V4)?,
            v6: open_pinned(dir, map_names::BANS_V6)?,
            lengths: open_pinned(dir, map_names::BAN_LENGTHS)?,
            filter: FilterMapping::open(dir)?,
            stale_bits: 0,
        })
    }

    /// Sets the filter bit of a ban of `p`: before its entry is written.
    pub fn filter_add(&mut self, p: &Prefix) {
        let bit = filter_bit(p);
        self.filter.word((bit >> 6) as usize).fetch_or(1 << (bit & 63), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether filter bit `bit` is set.
    pub fn filter_has(&self, bit: u32) -> bool {
        self.filter.word((bit >> 6) as usize).load(std::sync::atomic::Ordering::Relaxed) >> (bit & 63) & 1 != 0
    }

    /// Makes the filter hold exactly the bits of `held`, word by word: a
    /// word only ever loses the bits of bans no longer held, so the program
    /// never misses a held ban while this runs.
    pub fn filter_rebuild<'a>(&mut self, held: impl IntoIterator<Item = &'a Prefix>) {
        let mut words = vec![0u64; bans::FILTER_WORDS as usize];
        for p in held {
            let bit = filter_bit(p);
            words[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
        for (i, w) in words.iter().enumerate() {
            let word = self.filter.word(i);
            if word.load(std::sync::atomic::Ordering::Relaxed) != *w {
                word.store(*w, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.stale_bits = 0;
    }

    /// The most bans of `family` the map holds.
    pub fn max(&self, family: Family) -> u32 {
        self.max[family as usize]
    }

    /// Writes a ban; the packets already counted under the same key carry on.
    pub fn put(&mut self, key: &BanKey, mut entry: BanEntry) -> Result<(), BanMapError> {
        let full = |family, max| {
            move |e: MapError| match &e {
                MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG) => {
                    BanMapError::Full { family, max }
                }
                _ => BanMapError::Kernel { map: "ban map", error: Box::new(e) },
            }
        };
        match key {
            BanKey::V4(k) => {
                if let Ok(old) = self.v4.get(k, 0) {
                    entry.packets = old.packets;
                }
                self.v4.insert(k, entry, 0).map_err(full("IPv4", self.max[0]))
            }
            BanKey::V6(k) => {
                if let Ok(old) = self.v6.get(k, 0) {
                    entry.packets = old.packets;
                }
                self.v6.insert(k, entry, 0).map_err(full("IPv6", self.max[1]))
            }
        }
    }

    /// Removes a ban (a missing one is no error).
    pub fn remove(&mut self, key: &BanKey) -> Result<(), BanMapError> {
        let r = match key {
            BanKey::V4(k) => self.v4.remove(k),
            BanKey::V6(k) => self.v6.remove(k),
        };
        match r {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(kernel("ban map")(e)),
        }
    }

    pub fn get(&self, key: &BanKey) -> Option<BanEntry> {
        match key {
            BanKey::V4(k) => self.v4.get(k, 0).ok(),
            BanKey::V6(k) => self.v6.get(k, 0).ok(),
        }
    }

    /// Sets which prefix lengths the program probes. Lengths are added before
    /// their bans are written and removed after their last ban is.
    pub fn set_lengths(&mut self, words: [u64; LENGTH_WORDS as usize]) -> Result<(), BanMapError> {
        for (i, w) in words.iter().enumerate() {
            if self.lengths.get(&(i as u32), 0).ok() != Some(*w) {
                self.lengths.set(i as u32, *w, 0).map_err(kernel(map_names::BAN_LENGTHS))?;
            }
        }
        Ok(())
    }

    pub fn lengths(&self) -> [u64; LENGTH_WORDS as usize] {
        let mut words = [0u64; LENGTH_WORDS as usize];
        for (i, w) in words.iter_mut().enumerate() {
            *w = self.lengths.get(&(i as u32), 0).unwrap_or(0);
        }
        words
    }

    /// Every ban the maps hold, expired or not.
    pub fn entries(&self) -> Vec<(BanKey, BanEntry)> {
        let v4 = self.v4.iter().filter_map(Result::ok).map(|(k, e)| (BanKey::V4(k), e));
        let v6 = self.v6.iter().filter_map(Result::ok).map(|(k, e)| (BanKey::V6(k), e));
        v4.chain(v6).collect()
    }

    /// The ban the program would find for `addr` at boot-clock `now_ns`: the
    /// walk of `blocker_common::bans` over these maps.
    pub fn find(&self, family: Family, addr: u128, now_ns: u64) -> Option<(Prefix, BanEntry)> {
        let words = self.lengths();
        match family {
            Family::V4 => {
                bans::find_v4(words[0], addr as u32, |bit| self.filter_has(bit), |k| self.v4.get(k, 0).ok(), || now_ns)
                    .map(|(k, e)| (BanKey::V4(k).prefix(), e))
            }
            Family::V6 => bans::find_v6(
                [words[1], words[2], words[3]],
                (addr >> 64) as u64,
                addr as u64,
                |bit| self.filter_has(bit),
                |k| self.v6.get(k, 0).ok(),
                || now_ns,
            )
            .map(|(k, e)| (BanKey::V6(k).prefix(), e)),
        }
    }
}

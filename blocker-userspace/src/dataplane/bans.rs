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

/// The pinned ban maps of one interface.
pub struct BanMaps {
    v4: HashMap<MapData, BanKeyV4, BanEntry>,
    v6: HashMap<MapData, BanKeyV6, BanEntry>,
    lengths: Array<MapData, u64>,
    max: [u32; 2],
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
        })
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
            Family::V4 => bans::find_v4(words[0], addr as u32, |k| self.v4.get(k, 0).ok(), || now_ns)
                .map(|(k, e)| (BanKey::V4(k).prefix(), e)),
            Family::V6 => bans::find_v6(
                [words[1], words[2], words[3]],
                (addr >> 64) as u64,
                addr as u64,
                |k| self.v6.get(k, 0).ok(),
                || now_ns,
            )
            .map(|(k, e)| (BanKey::V6(k).prefix(), e)),
        }
    }
}

//! The data plane's maps, opened from their pins: applying a compiled table with an
//! atomic generation flip, switching the global mode, reading counters.
//!
//! Atomic reload: the classifier tables and the policy exist twice (generation 0
//! and 1). A reload writes the idle generation completely (the tables through
//! mmap, a memcpy of the compiled trie), then flips the single `ACTIVE_GEN` slot,
//! so a packet sees either the whole old table or the whole new one. If anything
//! fails before the flip, the live generation is untouched.

use std::{
    collections::HashMap,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{Array, Map, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use blocker_common::{
    config, counter, map_names, policy_index, ListInfo, ListStats, ACTION_NONE, LIST_NAME_LEN, LIST_STATE_FREE,
    LIST_STATE_LIVE, LIST_STATE_RETIRED, MAX_LISTS, MODE_ENFORCE, MODE_MONITOR,
};

use crate::{
    classifier::{walk, Shape, TrieImage},
    compile::{Action, CompiledTable},
    lists::Family,
};

/// Errors the operator can act on, with the numbers in them.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table too large: the {family} table needs {needed} classifier nodes of {node_entries} entries ({prefixes} prefixes after compilation), the maps hold {max}; nothing was changed")]
    TooManyNodes { family: &'static str, needed: usize, node_entries: usize, prefixes: usize, max: u32 },
    #[error("too many lists: {needed} list ids needed, the maps hold at most {max}; nothing was changed")]
    TooManyLists { needed: usize, max: u32 },
}

fn open<T>(dir: &Path, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let path = dir.join(name);
    let data = MapData::from_pin(&path).with_context(|| format!("cannot open pinned map {}", path.display()))?;
    let map = Map::from_map_data(data).with_context(|| format!("map {}", path.display()))?;
    T::try_from(map).with_context(|| format!("pinned map {} has an unexpected type or size", path.display()))
}

/// A classifier table (an mmapable BPF array of trie nodes) mapped into this process.
struct MappedTable {
    ptr: *mut u16,
    /// u16 entries in the mapping (nodes * entries per node).
    len: usize,
    nodes: usize,
    _map: MapData,
}

impl MappedTable {
    fn open(dir: &Path, name: &str, family: Family) -> Result<Self> {
        let path = dir.join(name);
        let map = MapData::from_pin(&path).with_context(|| format!("cannot open pinned map {}", path.display()))?;
        let info = map.info()?;
        let nodes = info.max_entries() as usize;
        let node_bytes = Shape::of(family).node_entries() * 2;
        if info.value_size() as usize != node_bytes {
            bail!("pinned map {} has an unexpected value size", path.display());
        }
        let bytes = nodes * node_bytes;
        // SAFETY: mapping a BPF array created with BPF_F_MMAPABLE; the length is the
        // array's data size; the mapping is unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!("cannot mmap {}: {}", path.display(), std::io::Error::last_os_error());
        }
        Ok(MappedTable { ptr: ptr.cast(), len: bytes / 2, nodes, _map: map })
    }

    fn as_slice(&self) -> &[u16] {
        // SAFETY: ptr maps `len` entries for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Copies a compiled image to the start of the table.
    fn write(&mut self, image: &TrieImage) {
        assert!(image.entries.len() <= self.len);
        // SAFETY: in bounds (checked above); the kernel reads this generation only
        // after ACTIVE_GEN is flipped to it.
        unsafe { std::ptr::copy_nonoverlapping(image.entries.as_ptr(), self.ptr, image.entries.len()) };
    }
}

impl Drop for MappedTable {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what open() mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len * 2) };
    }
}

/// Kernel memory charged for each map pinned in `dir` (the `memlock` the kernel
/// reports in the map fd's fdinfo), by name.
pub fn pinned_map_memory(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let Ok(map) = MapData::from_pin(&path) else { continue }; // the link pin
        let fdinfo = format!("/proc/self/fdinfo/{}", map.fd().as_fd().as_raw_fd());
        let text = std::fs::read_to_string(&fdinfo).with_context(|| format!("cannot read {fdinfo}"))?;
        let bytes =
            text.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        out.push((path.file_name().unwrap_or_default().to_string_lossy().into_owned(), bytes));
    }
    out.sort();
    Ok(out)
}

/// The data plane's maps for one interface.
pub struct DataplaneMaps {
    pub dir: PathBuf,
    config: Array<MapData, u32>,
    policy: Array<MapData, u32>,
    v4: [MappedTable; 2],
    v6: [MappedTable; 2],
    list_stats: PerCpuArray<MapData, ListStats>,
    global_stats: PerCpuArray<MapData, u64>,
    list_info: Array<MapData, ListInfo>,
}

/// What an applied reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub generation: u32,
    pub v4_prefixes: usize,
    pub v6_prefixes: usize,
    /// Classifier nodes written, and the tables' capacities.
    pub v4_nodes: usize,
    pub v6_nodes: usize,
    pub v4_capacity: usize,
    pub v6_capacity: usize,
}

/// Counters of one list id, summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCounters {
    pub id: u32,
    pub name: String,
    pub action: Option<Action>,
    pub live: bool,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    pub mode_monitor: bool,
    pub generation: u32,
    /// Indexed by `blocker_common::counter::*`.
    pub global: [u64; counter::COUNT as usize],
    pub lists: Vec<ListCounters>,
}

impl Counters {
    pub fn global(&self, index: u32) -> u64 {
        self.global[index as usize]
    }
    pub fn list(&self, name: &str) -> Option<&ListCounters> {
        self.lists.iter().find(|l| l.name == name)
    }
}

impl DataplaneMaps {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            dir: dir.to_owned(),
            config: open(dir, map_names::CONFIG)?,
            policy: open(dir, map_names::POLICY)?,
            v4: [
                MappedTable::open(dir, map_names::V4_GEN0, Family::V4)?,
                MappedTable::open(dir, map_names::V4_GEN1, Family::V4)?,
            ],
            v6: [
                MappedTable::open(dir, map_names::V6_GEN0, Family::V6)?,
                MappedTable::open(dir, map_names::V6_GEN1, Family::V6)?,
            ],
            list_stats: open(dir, map_names::LIST_STATS)?,
            global_stats: open(dir, map_names::GLOBAL_STATS)?,
            list_info: open(dir, map_names::LIST_INFO)?,
        })
    }

    pub fn active_generation(&self) -> Result<u32> {
        Ok(self.config.get(&config::ACTIVE_GEN, 0)? & 1)
    }

    pub fn set_monitor_mode(&mut self, monitor: bool) -> Result<()> {
        let mode = if monitor { MODE_MONITOR } else { MODE_ENFORCE };
        self.config.set(config::MODE, mode, 0)?;
        Ok(())
    }

    fn list_infos(&self) -> Result<Vec<ListInfo>> {
        (0..MAX_LISTS).map(|i| Ok(self.list_info.get(&i, 0)?)).collect()
    }

    /// Gives each list of the table a list id: a name keeps the id it had (and so its
    /// counters); new names take free ids, then ids of retired lists.
    fn assign_ids(&self, table: &CompiledTable, infos: &[ListInfo]) -> Result<Vec<u32>> {
        let by_name: HashMap<&[u8], u32> = infos
            .iter()
            .enumerate()
            .filter(|(_, info)| info.state != LIST_STATE_FREE)
            .map(|(id, info)| (&info.name[..info.name_len as usize], id as u32))
            .collect();
        let mut taken = vec![false; MAX_LISTS as usize];
        let mut ids = vec![u32::MAX; table.lists.len()];
        for (i, list) in table.lists.iter().enumerate() {
            if let Some(&id) = by_name.get(stored_name(&list.name).as_slice()) {
                ids[i] = id;
                taken[id as usize] = true;
            }
        }
        // Free slots first, retired ones (whose counters would be reset) last.
        let mut candidates: Vec<u32> =
            (0..MAX_LISTS).filter(|&id| !taken[id as usize] && infos[id as usize].state == LIST_STATE_FREE).collect();
        candidates
            .extend((0..MAX_LISTS).filter(|&id| !taken[id as usize] && infos[id as usize].state != LIST_STATE_FREE));
        let mut candidates = candidates.into_iter();
        for id in ids.iter_mut().filter(|id| **id == u32::MAX) {
            *id = candidates.next().ok_or(TableError::TooManyLists { needed: table.lists.len(), max: MAX_LISTS })?;
        }
        Ok(ids)
    }

    /// Loads `table` into the idle generation and makes it live in one step.
    pub fn apply(&mut self, table: &CompiledTable) -> Result<ApplyReport> {
        if table.lists.len() > MAX_LISTS as usize {
            bail!(TableError::TooManyLists { needed: table.lists.len(), max: MAX_LISTS });
        }
        let infos = self.list_infos()?;
        let ids = self.assign_ids(table, &infos)?;
        let v4 = TrieImage::build(Family::V4, &table.v4, |l| ids[l]);
        let v6 = TrieImage::build(Family::V6, &table.v6, |l| ids[l]);
        for (family, image, prefixes, cap) in
            [("IPv4", &v4, table.v4.len(), self.v4[0].nodes), ("IPv6", &v6, table.v6.len(), self.v6[0].nodes)]
        {
            if image.nodes() > cap {
                bail!(TableError::TooManyNodes {
                    family,
                    needed: image.nodes(),
                    node_entries: image.shape.node_entries(),
                    prefixes,
                    max: cap as u32,
                });
            }
        }
        let live = self.active_generation()?;
        let idle = live ^ 1;
        self.v4[idle as usize].write(&v4);
        self.v6[idle as usize].write(&v6);
        let report = ApplyReport {
            generation: idle,
            v4_prefixes: table.v4.len(),
            v6_prefixes: table.v6.len(),
            v4_nodes: v4.nodes(),
            v6_nodes: v6.nodes(),
            v4_capacity: self.v4[0].nodes,
            v6_capacity: self.v6[0].nodes,
        };

        let mut actions = vec![ACTION_NONE; MAX_LISTS as usize];
        for (list, &id) in table.lists.iter().zip(&ids) {
            actions[id as usize] = list.action.code();
        }
        for (id, action) in actions.iter().enumerate() {
            self.policy.set(policy_index(idle, id as u32), action, 0).context("writing the idle policy")?;
        }
        // An id taken over from a retired list starts from zero, so the old list's
        // counters are not shown under the new name.
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        for (list, &id) in table.lists.iter().zip(&ids) {
            let prev = &infos[id as usize];
            if prev.state != LIST_STATE_FREE && prev.name[..prev.name_len as usize] != stored_name(&list.name)[..] {
                let zero = PerCpuValues::try_from(vec![ListStats::default(); cpus])?;
                self.list_stats.set(id, zero, 0)?;
            }
        }

        // The flip: from here on packets see the new table.
        self.config.set(config::ACTIVE_GEN, idle, 0).context("switching generation")?;

        for (list, &id) in table.lists.iter().zip(&ids) {
            self.list_info.set(id, make_info(LIST_STATE_LIVE, list.action.code(), &list.name), 0)?;
        }
        for (id, info) in infos.iter().enumerate() {
            if info.state == LIST_STATE_LIVE && !ids.contains(&(id as u32)) {
                let mut retired = *info;
                retired.state = LIST_STATE_RETIRED;
                self.list_info.set(id as u32, retired, 0)?;
            }
        }
        Ok(report)
    }

    /// The list id the live tables give `addr`, as the kernel would find it.
    pub fn lookup(&self, family: Family, addr: u128) -> Result<Option<(u32, Option<Action>)>> {
        let gen = self.active_generation()? as usize;
        let table = match family {
            Family::V4 => &self.v4[gen],
            Family::V6 => &self.v6[gen],
        };
        let Some(id) = walk(table.as_slice(), family, addr) else { return Ok(None) };
        let action = Action::from_code(self.policy.get(&policy_index(gen as u32, id), 0)?);
        Ok(Some((id, action)))
    }

    pub fn counters(&self) -> Result<Counters> {
        let mut global = [0u64; counter::COUNT as usize];
        for (i, slot) in global.iter_mut().enumerate() {
            *slot = self.global_stats.get(&(i as u32), 0)?.iter().sum();
        }
        let mut lists = Vec::new();
        for (id, info) in self.list_infos()?.into_iter().enumerate() {
            if info.state == LIST_STATE_FREE {
                continue;
            }
            let per_cpu = self.list_stats.get(&(id as u32), 0)?;
            lists.push(ListCounters {
                id: id as u32,
                name: String::from_utf8_lossy(&info.name[..info.name_len as usize]).into_owned(),
                action: Action::from_code(info.action),
                live: info.state == LIST_STATE_LIVE,
                packets: per_cpu.iter().map(|s| s.packets).sum(),
                bytes: per_cpu.iter().map(|s| s.bytes).sum(),
            });
        }
        Ok(Counters {
            mode_monitor: self.config.get(&config::MODE, 0)? == MODE_MONITOR,
            generation: self.active_generation()?,
            global,
            lists,
        })
    }
}

/// Names longer than the map slot keep their end, which is the distinctive part of a path.
fn stored_name(name: &str) -> Vec<u8> {
    let bytes = name.as_bytes();
    bytes[bytes.len().saturating_sub(LIST_NAME_LEN)..].to_vec()
}

fn make_info(state: u32, action: u32, name: &str) -> ListInfo {
    let stored = stored_name(name);
    let mut info = ListInfo { state, action, name_len: stored.len() as u32, name: [0; LIST_NAME_LEN] };
    info.name[..stored.len()].copy_from_slice(&stored);
    info
}

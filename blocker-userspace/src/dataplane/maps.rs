//! The data plane's maps: applying a compiled table with an atomic swap, switching
//! the global mode, reading counters and the live tables.
//!
//! Atomic reload across sizes: every table gets its own program instance whose
//! classifier maps are created at the table's size. Userspace fills them (mmap,
//! a memcpy per map) before the program is used, then swaps the instance onto the
//! interface's pinned XDP link with one BPF_LINK_UPDATE: a packet runs either the
//! old program with the old table or the new one with the new table. The old
//! instance's maps are freed by the kernel once nothing references them, so kernel
//! memory follows the live table. Counters, list names and the mode are pinned
//! maps that every instance of the interface shares. If anything fails before the
//! swap, the running program and table are untouched.

use std::{
    collections::HashMap,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{
        links::{FdLink, PinnedLink},
        ProgramError,
    },
    util::nr_cpus,
    Ebpf,
};
use blocker_common::{
    classifier::{leaf, leaf_action, leaf_list, Block16, Block32, Block64, Memory, Shape, BLOCK_BYTES, LEAF_NONE},
    config, counter,
    events::EventState,
    map_names,
    scope::{key_of, PortMap, TableInfo, MAX_SCOPES, PORT_MAP_BYTES, SCOPE_NONE},
    ListInfo, ListName, ListStats, ACTION_DROP, LIST_NAME_LEN, LIST_STATE_FREE, LIST_STATE_LIVE, LIST_STATE_ORIGIN,
    LIST_STATE_RETIRED, MAX_LISTS, MODE_ENFORCE, MODE_MONITOR, SCOPE_NAME_LEN,
};

/// The scope the origins of bans are shown in (`ban` / ORIGIN).
pub const ORIGIN_SCOPE: &str = "ban";

use super::{
    bans::BanMaps,
    link::{self, LinkError},
    object::{self, ObjectError},
    pieces::{self, PieceMap},
    pins,
};
use crate::{
    compile::{
        classifier::{build_policy_image, lookup_leaf, BuildError, Image},
        table::{CompiledTable, ScopeTable},
    },
    net::Family,
    policy::Action,
};

/// Default for `--table-memory`: fits 2M random IPv4 hosts, 1M IPv6 hosts, 1M
/// IPv6 /64s and a fine-grained country table of both families together (about
/// 110 MiB), with room to grow.
pub const DEFAULT_TABLE_MEMORY: u64 = 256 << 20;

/// Errors the operator can act on, with the numbers in them.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(
        "table too large: {v4_ranges} IPv4 + {v6_ranges} IPv6 ranges need {needed_mib:.1} MiB of classifier \
         memory ({v4_mib:.1} MiB IPv4, {v6_mib:.1} MiB IPv6), over the table memory budget of {budget_mib:.1} MiB: \
         raise it (--table-memory / [daemon] table_memory) or shorten the lists; nothing was changed"
    )]
    OverBudget { v4_ranges: usize, v6_ranges: usize, needed_mib: f64, v4_mib: f64, v6_mib: f64, budget_mib: f64 },
    #[error("too many lists: {needed} list ids needed, the maps hold at most {max}; nothing was changed")]
    TooManyLists { needed: usize, max: u32 },
    #[error(
        "too many scopes: {needed}, at most {max} ({sections} [[scope]] sections{policy}{outbound}): merge \
         scopes that share their lists, or give one scope several ports; nothing was changed",
        policy = if *policy_lists { ", and [policy]'s own lists, which count as one" } else { "" },
        outbound = if *outbound { ", and the outbound lists, which count as one" } else { "" }
    )]
    TooManyScopes { needed: usize, max: u32, sections: usize, policy_lists: bool, outbound: bool },
}

/// Why a table cannot be applied or the maps cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(
        "blocker is not attached to {iface}: no pins under {dir} (start it with `blocker run --iface {iface} ...`)"
    )]
    NotAttached { iface: String, dir: PathBuf },
    #[error("cannot open pinned map {path}: {error}")]
    OpenPinned { path: PathBuf, error: Box<MapError> },
    /// A map of ours that is not what this blocker builds: another version's.
    #[error("{what}: {error}")]
    Map { what: String, error: Box<MapError> },
    #[error("map {name} missing from the eBPF object: the build is broken")]
    MissingMap { name: &'static str },
    #[error("cannot mmap classifier map {name}: {error}")]
    Mmap { name: &'static str, error: std::io::Error },
    #[error("the program {program_id} on the link pinned at {pin} is gone")]
    ProgramGone { program_id: u32, pin: PathBuf },
    #[error("program {program_id} on the link pinned at {pin} has no map {name}: it is not blocker's")]
    ProgramWithoutMap { program_id: u32, pin: PathBuf, name: &'static str },
    #[error("the kernel: {what}: {error}")]
    Kernel { what: String, error: Box<ProgramError> },
    #[error("cannot {action} {path}: {error}")]
    Io { action: &'static str, path: PathBuf, error: std::io::Error },
    #[error("no program is loaded or attached for {dir}")]
    NotLoaded { dir: PathBuf },
}

impl MapsError {
    /// A map operation that failed, with what it was for.
    fn map(what: impl Into<String>) -> impl FnOnce(MapError) -> MapsError {
        let what = what.into();
        move |error| MapsError::Map { what, error: Box::new(error) }
    }
}

type Result<T, E = MapsError> = std::result::Result<T, E>;

/// A policy needs one list id per list of each scope, and the maps hold
/// `MAX_LISTS`; its scopes are at most `MAX_SCOPES`. `check-config`, the start
/// and every apply check it alike.
pub fn check_list_count(scopes: &[ScopeTable<'_>]) -> Result<(), TableError> {
    if scopes.len() > MAX_SCOPES as usize {
        let policy_lists = scopes.iter().any(|s| !s.outbound && s.name == crate::policy::DEFAULT_SCOPE);
        let outbound = scopes.iter().any(|s| s.outbound);
        return Err(TableError::TooManyScopes {
            needed: scopes.len(),
            max: MAX_SCOPES,
            sections: scopes.len() - usize::from(policy_lists) - usize::from(outbound),
            policy_lists,
            outbound,
        });
    }
    let needed: usize = scopes.iter().map(|s| s.table.lists.len()).sum();
    if needed > MAX_LISTS as usize {
        return Err(TableError::TooManyLists { needed, max: MAX_LISTS });
    }
    Ok(())
}

/// One list of a policy, as the maps know it: its scope and name (together
/// they are the list), and its action.
struct PolicyList<'a> {
    scope: &'a str,
    name: &'a str,
    action: Action,
    flags: u32,
}

/// Every list of every scope, in scope order (the numbering of
/// `build_policy_image`'s leaves).
fn policy_lists<'a>(scopes: &[ScopeTable<'a>]) -> Vec<PolicyList<'a>> {
    scopes
        .iter()
        .flat_map(|s| {
            s.table.lists.iter().map(|l| PolicyList {
                scope: s.name,
                name: &l.name,
                action: l.action,
                flags: l.role.list_flags(),
            })
        })
        .collect()
}

/// Opens the pinned map `name` of `dir` as a `T`.
pub(crate) fn open_pinned<T>(dir: &Path, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    open(dir, name)
}

fn open<T>(dir: &Path, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let path = dir.join(name);
    let opened = MapData::from_pin(&path).and_then(Map::from_map_data);
    let map = opened.map_err(|error| MapsError::OpenPinned { path: path.clone(), error: Box::new(error) })?;
    T::try_from(map).map_err(MapsError::map(format!("pinned map {} has an unexpected type or size", path.display())))
}

/// The seven classifier maps of a loaded table, read piece by piece.
struct LivePieces {
    shape: Shape,
    maps: Vec<PieceMap>,
}

impl LivePieces {
    /// `maps` in `map_names::CLASSIFIER` order.
    fn open(maps: Vec<MapData>, shape: Shape) -> Result<Self> {
        let maps = maps.into_iter().zip(map_names::CLASSIFIER).map(|(m, name)| PieceMap::open(m, name));
        Ok(LivePieces { shape, maps: maps.collect::<Result<_>>()? })
    }

    /// Those of a loaded instance.
    fn of_instance(ebpf: &Ebpf, shape: Shape) -> Result<Self> {
        let maps = map_names::CLASSIFIER
            .iter()
            .map(|name| {
                let data = match ebpf.map(name) {
                    Some(Map::ArrayOfMaps(data)) => data,
                    _ => return Err(MapsError::MissingMap { name }),
                };
                let id = data.info().map_err(MapsError::map(format!("map {name}")))?.id();
                MapData::from_id(id).map_err(MapsError::map(format!("map {name}")))
            })
            .collect::<Result<_>>()?;
        LivePieces::open(maps, shape)
    }

    fn memory(&self) -> Result<u64> {
        self.maps.iter().map(PieceMap::memory).sum()
    }
}

impl Memory for LivePieces {
    fn shape(&self) -> Shape {
        self.shape
    }
    fn v4_dir(&self, block: u32) -> Option<&Block32> {
        self.maps[0].block(block)
    }
    fn v4_ranges(&self, block: u32) -> Option<&Block32> {
        self.maps[1].block(block)
    }
    fn v6_dir(&self, block: u32) -> Option<&Block32> {
        self.maps[2].block(block)
    }
    fn v6_ranges(&self, block: u32) -> Option<&Block64> {
        self.maps[3].block(block)
    }
    fn v6_ext(&self, block: u32) -> Option<&Block32> {
        self.maps[4].block(block)
    }
    fn v6_host_keys(&self, block: u32) -> Option<&Block64> {
        self.maps[5].block(block)
    }
    fn v6_host_values(&self, block: u32) -> Option<&Block16> {
        self.maps[6].block(block)
    }
}

/// A program instance with its table: the program that is (or will be) on the
/// interface and the classifier maps it reads.
/// Its maps are mapped into this process only while they are written or read:
/// a mapping held open would count the whole table in the daemon's memory.
/// A table loaded into a new program instance, not yet in force (`commit`).
pub struct Prepared {
    instance: Instance,
    infos: Vec<ListInfo>,
    ids: Vec<u32>,
    kept: Vec<bool>,
}

struct Instance {
    ebpf: Ebpf,
    info: TableInfo,
    bytes: u64,
    /// The port map of a table with scopes.
    port_map: Option<Vec<u8>>,
}

/// Kernel memory charged for each map pinned in `dir` (the `memlock` the kernel
/// reports in the map fd's fdinfo), by name.
pub fn pinned_map_memory(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let io = |error| MapsError::Io { action: "read", path: dir.to_owned(), error };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Ok(map) = MapData::from_pin(&path) else { continue }; // the link pin
        out.push((path.file_name().unwrap_or_default().to_string_lossy().into_owned(), map_memory(&map)?));
    }
    out.sort();
    Ok(out)
}

/// The kernel's `memlock` figure for a map.
pub fn map_memory(map: &MapData) -> Result<u64> {
    let fdinfo = format!("/proc/self/fdinfo/{}", map.fd().as_fd().as_raw_fd());
    let text = std::fs::read_to_string(&fdinfo).map_err(|error| MapsError::Io {
        action: "read",
        path: fdinfo.clone().into(),
        error,
    })?;
    Ok(text.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0))
}

/// The classifier maps of the program on the XDP link pinned in `dir`, found from
/// the kernel (link -> program -> its maps), and their kernel memory.
struct LinkTables {
    live: LiveTable,
    memory: u64,
}

impl LinkTables {
    fn open(dir: &Path) -> Result<Option<LinkTables>> {
        let pin = dir.join(pins::LINK_PIN);
        if !pin.exists() {
            return Ok(None);
        }
        let link_error = |error: aya::programs::links::LinkError| {
            let error = std::io::Error::other(error);
            MapsError::Link(LinkError::Open { path: pin.clone(), error })
        };
        let link = FdLink::from(PinnedLink::from_pin(&pin).map_err(link_error)?);
        let program_id = link.info().map_err(link_error)?.program_id();
        let program = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == program_id)
            .ok_or_else(|| MapsError::ProgramGone { program_id, pin: pin.clone() })?;
        let map_ids = program.map_ids().map_err(|error| MapsError::Kernel {
            what: format!("the maps of program {program_id}"),
            error: error.into(),
        })?;
        let mut found: HashMap<String, MapData> = HashMap::new();
        for id in map_ids.unwrap_or_default() {
            let map = MapData::from_id(id).map_err(MapsError::map(format!("map {id}")))?;
            let info = map.info().map_err(MapsError::map(format!("map {id}")))?;
            found.insert(info.name_as_str().unwrap_or_default().to_owned(), map);
        }
        let mut take = |name: &'static str| {
            found.remove(name).ok_or_else(|| MapsError::ProgramWithoutMap { program_id, pin: pin.clone(), name })
        };
        let maps = map_names::CLASSIFIER.iter().map(|name| take(name)).collect::<Result<Vec<_>>>()?;
        let info_map: Array<MapData, TableInfo> =
            Array::try_from(Map::Array(take(map_names::SHAPE)?)).map_err(MapsError::map(map_names::SHAPE))?;
        let info = info_map.get(&0, 0).map_err(MapsError::map(map_names::SHAPE))?;
        let ports = take(map_names::PORT_SCOPES)?;
        let tables = LivePieces::open(maps, info.shape)?;
        let memory = tables.memory()? + map_memory(&ports)?;
        let port_map = read_port_map(ports, info.scoped != 0)?;
        let live = LiveTable { tables, scopes: scope_names(&info), port_map, outbound: outbound_of(&info) };
        Ok(Some(LinkTables { live, memory }))
    }
}

/// The port map of a scoped table (None: the table has no scopes).
fn read_port_map(map: MapData, scoped: bool) -> Result<Option<Vec<u8>>> {
    if !scoped {
        return Ok(None);
    }
    let map: Array<MapData, PortMap> =
        Array::try_from(Map::Array(map)).map_err(MapsError::map(map_names::PORT_SCOPES))?;
    Ok(Some(map.get(&0, 0).map_err(MapsError::map(map_names::PORT_SCOPES))?.to_vec()))
}

/// The index of the outbound table, if the table has one.
fn outbound_of(info: &TableInfo) -> Option<u32> {
    (info.outbound != 0 && info.outbound <= info.shape.scopes).then(|| info.outbound - 1)
}

/// The names of the scopes' tables; the union tables after them have none.
fn scope_names(info: &TableInfo) -> Vec<String> {
    let named = (0..info.shape.scopes.clamp(1, MAX_SCOPES) as usize)
        .take_while(|&i| info.scope_name_lens[i] != 0)
        .count()
        .max(1);
    (0..named)
        .map(|i| {
            let len = usize::from(info.scope_name_lens[i]).min(SCOPE_NAME_LEN);
            String::from_utf8_lossy(&info.scope_names[i][..len]).into_owned()
        })
        .collect()
}

fn table_info(shape: Shape, scopes: &[ScopeTable<'_>], scoped: bool) -> TableInfo {
    let mut info = TableInfo {
        shape,
        scoped: u32::from(scoped),
        outbound: scopes.iter().position(|s| s.outbound).map_or(0, |i| i as u32 + 1),
        scope_name_lens: [0; MAX_SCOPES as usize],
        scope_names: [[0; SCOPE_NAME_LEN]; MAX_SCOPES as usize],
    };
    for (i, s) in scopes.iter().take(MAX_SCOPES as usize).enumerate() {
        let name = &s.name.as_bytes()[..s.name.len().min(SCOPE_NAME_LEN)];
        info.scope_name_lens[i] = name.len() as u8;
        info.scope_names[i][..name.len()].copy_from_slice(name);
    }
    info
}

/// A table's maps mapped read-only (see `DataplaneMaps::live_table`).
pub struct LiveTable {
    tables: LivePieces,
    /// Its scopes' names, in the order they are tried.
    scopes: Vec<String>,
    /// The port map of a table with scopes.
    port_map: Option<Vec<u8>>,
    /// The index of the outbound table.
    outbound: Option<u32>,
}

/// What the live table does with an address: its list id and action.
pub type LiveHit = Option<(u32, Option<Action>)>;

impl LiveTable {
    /// The list id and action the XDP program finds for `addr` in the first
    /// scope's table, if any.
    pub fn lookup(&self, family: Family, addr: u128) -> LiveHit {
        self.lookup_in(0, family, addr)
    }

    /// The same in scope `scope`'s table.
    pub fn lookup_in(&self, scope: u32, family: Family, addr: u128) -> LiveHit {
        let found = lookup_leaf(&self.tables, scope, family, addr);
        (found != LEAF_NONE).then(|| (leaf_list(found), Action::from_code(leaf_action(found))))
    }

    /// The scopes' names, in the order they are tried.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The index of the outbound table (the egress program's), if any.
    pub fn outbound(&self) -> Option<u32> {
        self.outbound
    }

    /// The scope that takes a packet of IP protocol `protocol` to `port` (None:
    /// no port), as the program picks it; None: no scope does (it passes).
    pub fn scope_for(&self, protocol: u8, port: Option<u16>) -> Option<u32> {
        let Some(map) = &self.port_map else { return Some(0) };
        let scope = *map.get(key_of(protocol, port) as usize)?;
        (scope != SCOPE_NONE).then_some(u32::from(scope))
    }
}

/// The pinned maps every program instance of an interface shares.
struct Shared {
    config: Array<MapData, u32>,
    list_stats: PerCpuArray<MapData, ListStats>,
    global_stats: PerCpuArray<MapData, u64>,
    lists: ListDirectory,
    event_state: PerCpuArray<MapData, EventState>,
    bans: BanMaps,
}

impl Shared {
    fn open(dir: &Path) -> Result<Self> {
        Ok(Shared {
            config: open(dir, map_names::CONFIG)?,
            list_stats: open(dir, map_names::LIST_STATS)?,
            global_stats: open(dir, map_names::GLOBAL_STATS)?,
            lists: ListDirectory::open(dir)?,
            event_state: open(dir, map_names::EVENT_STATE)?,
            bans: BanMaps::open(dir)?,
        })
    }
}

/// What each list id of an interface means, as its pinned maps say: its state,
/// action and scope (`BLK_LIST_INFO`) and its whole name (`BLK_LIST_NAMES`).
/// The daemon writes them; `stats`, `lookup`, the metrics and the event reader
/// read them, daemon or not, so that every view names a list the same way.
pub struct ListDirectory {
    infos: Array<MapData, ListInfo>,
    names: aya::maps::HashMap<MapData, u32, ListName>,
}

/// One list id in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    pub id: u32,
    pub info: ListInfo,
    /// Its scope (`default` when none was stored).
    pub scope: String,
    pub name: String,
}

impl ListDirectory {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(ListDirectory { infos: open(dir, map_names::LIST_INFO)?, names: open(dir, map_names::LIST_NAMES)? })
    }

    fn infos(&self) -> Result<Vec<ListInfo>> {
        (0..MAX_LISTS).map(|i| self.infos.get(&i, 0).map_err(MapsError::map(map_names::LIST_INFO))).collect()
    }

    /// Every id in use (live or retired), with its scope and name.
    pub fn entries(&self) -> Result<Vec<ListEntry>> {
        let infos = self.infos()?;
        Ok(infos
            .into_iter()
            .enumerate()
            .filter(|(_, info)| info.state != LIST_STATE_FREE)
            .map(|(id, info)| self.entry(id as u32, info))
            .collect())
    }

    /// The scope and name of list `id` (None: a free id).
    pub fn identity(&self, id: u32) -> Option<(String, String)> {
        let info = self.infos.get(&id, 0).ok().filter(|i| i.state != LIST_STATE_FREE)?;
        let e = self.entry(id, info);
        Some((e.scope, e.name))
    }

    fn entry(&self, id: u32, info: ListInfo) -> ListEntry {
        let name = match self.names.get(&id, 0) {
            Ok(n) => String::from_utf8_lossy(&n.bytes[..(n.len as usize).min(LIST_NAME_LEN)]).into_owned(),
            Err(_) => format!("(list {id}, name lost)"),
        };
        ListEntry { id, info, scope: stored_scope(&info), name }
    }

    fn set(&mut self, id: u32, info: ListInfo, name: Option<&str>) -> Result<()> {
        if let Some(name) = name {
            let bytes = name.as_bytes();
            let len = bytes.len().min(LIST_NAME_LEN);
            let mut value = ListName { len: len as u32, bytes: [0; LIST_NAME_LEN] };
            value.bytes[..len].copy_from_slice(&bytes[..len]);
            self.names.insert(id, value, 0).map_err(MapsError::map(map_names::LIST_NAMES))?;
        }
        self.infos.set(id, info, 0).map_err(MapsError::map(map_names::LIST_INFO))
    }
}

/// What an applied reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub v4_ranges: usize,
    pub v6_ranges: usize,
    /// Bytes of classifier maps the new table uses.
    pub table_bytes: u64,
    /// The id the kernel gave the new program instance.
    pub program_id: u32,
    pub shape: Shape,
}

/// Counters of one list id, summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCounters {
    pub id: u32,
    /// The scope of the list (`default` outside every scope).
    pub scope: String,
    pub name: String,
    pub action: Option<Action>,
    pub live: bool,
    /// `blocker_common::LIST_*` flags (whether its pass wins over bans).
    pub flags: u32,
    pub packets: u64,
    pub bytes: u64,
}

/// What an interface's program does with a drop verdict (its `BLK_CONFIG` mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    /// Dry run: nothing is dropped; would-be drops are counted as monitored.
    Monitor,
}

impl Mode {
    /// The name the config file, status and stats use.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }

    /// The name with what it means, for messages.
    pub const fn description(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor (dry run, nothing dropped)",
        }
    }

    const fn code(self) -> u32 {
        match self {
            Mode::Enforce => MODE_ENFORCE,
            Mode::Monitor => MODE_MONITOR,
        }
    }
}

/// What became of the packets the event sampler saw, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventCounters {
    /// Events written to the ring buffer.
    pub sent: u64,
    /// Dropped or monitored packets not sampled: the rate limit.
    pub rate_limited: u64,
    /// Events lost: the ring buffer was full (no reader, or a slow one).
    pub ring_full: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    pub mode: Mode,
    /// The interface's events per second and CPU (0: off), as its maps hold it.
    pub events_per_second: u32,
    pub events: EventCounters,
    /// The program running the live table (None: not attached, not loaded).
    pub program_id: Option<u32>,
    /// Indexed by `blocker_common::counter::*`: inbound packets (XDP).
    pub global: [u64; counter::COUNT as usize],
    /// The same for outbound packets (tc egress).
    pub outbound: [u64; counter::COUNT as usize],
    pub lists: Vec<ListCounters>,
    /// Whether the pinned link is on the device with the interface's name here,
    /// checked against the kernel (None: not checked).
    pub attached_here: Option<bool>,
    /// The same for the egress link (None: not checked, or none is pinned).
    pub outbound_here: Option<bool>,
    /// Programs that run before blocker's on the device's tc egress (TCX):
    /// one that passes a packet ends the chain (empty: none, or not checked).
    pub outbound_ahead: Vec<super::egress::ProgramBrief>,
    /// What the device's driver says of the frames sent back with XDP_TX
    /// (reject answers): sent and lost (None: not checked, or unreadable).
    pub xdp_tx: Option<super::device::XdpTxCounters>,
}

impl Counters {
    pub fn global(&self, index: u32) -> u64 {
        self.global[index as usize]
    }
    pub fn list(&self, name: &str) -> Option<&ListCounters> {
        self.lists.iter().find(|l| l.name == name)
    }
}

/// The data plane of one interface: its pinned maps, and the live program
/// instance when this process loaded it.
pub struct DataplaneMaps {
    pub dir: PathBuf,
    shared: Shared,
    live: Option<Instance>,
    /// What the XDP program logs (0: nothing, compiled out).
    log_level: u8,
}

impl DataplaneMaps {
    /// Opens the maps of an interface that has pins (for `stats`, `lookup`).
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self { dir: dir.to_owned(), shared: Shared::open(dir)?, live: None, log_level: 0 })
    }

    /// Loads the program for `dir` with an empty table, creating the shared pins
    /// (or reusing those an earlier run left): ready for `apply` and `link::attach`.
    pub fn load(dir: &Path, log_level: u8) -> Result<Self> {
        let empty = Image::build(&[], &[], |_| LEAF_NONE)?;
        let instance = load_instance(dir, log_level, &empty, &[], None)?;
        Ok(Self { dir: dir.to_owned(), shared: Shared::open(dir)?, live: Some(instance), log_level })
    }

    /// The loaded program instance (to attach it, or to run it in tests).
    pub fn ebpf_mut(&mut self) -> Result<&mut Ebpf> {
        self.live.as_mut().map(|i| &mut i.ebpf).ok_or_else(|| MapsError::NotLoaded { dir: self.dir.clone() })
    }

    pub fn set_mode(&mut self, mode: Mode) -> Result<()> {
        let mode = mode.code();
        self.shared.config.set(config::MODE, mode, 0).map_err(MapsError::map(map_names::CONFIG))?;
        Ok(())
    }

    /// How many rejected packets the interface answers per second, all CPUs
    /// together (0: none; past the rate they are dropped).
    pub fn set_reject_per_second(&mut self, per_second: u32) -> Result<()> {
        let cpus = nr_cpus().map_err(|(path, error)| MapsError::Io { action: "read", path: path.into(), error })?;
        let interval = reject_interval_ns(per_second, cpus);
        self.shared.config.set(config::REJECT_INTERVAL_NS, interval, 0).map_err(MapsError::map(map_names::CONFIG))?;
        Ok(())
    }

    /// How many drop events each CPU may write per second (0: none). One
    /// aligned store: the program sees the old rate or the new one.
    pub fn set_events_per_second(&mut self, per_second: u32) -> Result<()> {
        let interval = event_interval_ns(per_second);
        self.shared.config.set(config::EVENT_INTERVAL_NS, interval, 0).map_err(MapsError::map(map_names::CONFIG))?;
        Ok(())
    }

    /// Builds `table` into a new program instance sized to it and swaps it onto the
    /// interface's link (if attached) in one step, for all traffic (no scopes).
    /// `budget`: the most bytes of classifier memory the table may take.
    /// Sets list id `id`'s counters to zero on every CPU (an id handed to a
    /// new list or origin does not show its former owner's counts).
    fn zero_list_stats(&mut self, id: u32) -> Result<()> {
        let cpus = nr_cpus().map_err(|(path, error)| MapsError::Io { action: "read", path: path.into(), error })?;
        let zero = PerCpuValues::try_from(vec![ListStats::default(); cpus]).map_err(|error| MapsError::Io {
            action: "size per-CPU values for",
            path: "/sys".into(),
            error,
        })?;
        self.shared.list_stats.set(id, zero, 0).map_err(MapsError::map(map_names::LIST_STATS))
    }

    /// The interface's ban maps.
    pub fn bans(&self) -> &BanMaps {
        &self.shared.bans
    }

    pub fn bans_mut(&mut self) -> &mut BanMaps {
        &mut self.shared.bans
    }

    /// The list id the bans of `origin` are counted under (`ban:ORIGIN` in
    /// every view): the one it had, else a free id (else a retired list's),
    /// which keeps it across reloads and restarts.
    pub fn origin_id(&mut self, origin: &str) -> Result<u32> {
        let entries = self.shared.lists.entries()?;
        if let Some(e) = entries.iter().find(|e| e.info.state == LIST_STATE_ORIGIN && e.name == origin) {
            return Ok(e.id);
        }
        let state = |id: u32| entries.iter().find(|e| e.id == id).map_or(LIST_STATE_FREE, |e| e.info.state);
        let id = (0..MAX_LISTS)
            .find(|&id| state(id) == LIST_STATE_FREE)
            .or_else(|| (0..MAX_LISTS).find(|&id| state(id) == LIST_STATE_RETIRED))
            .ok_or(TableError::TooManyLists { needed: entries.len() + 1, max: MAX_LISTS })?;
        self.zero_list_stats(id)?;
        let info = make_info(LIST_STATE_ORIGIN, ACTION_DROP, ORIGIN_SCOPE, 0);
        self.shared.lists.set(id, info, Some(origin))?;
        Ok(id)
    }

    pub fn apply(&mut self, table: &CompiledTable, budget: u64) -> Result<ApplyReport> {
        self.apply_with_shape(table, budget, None)
    }

    /// `apply` with the table's shape forced (benchmarks compare shapes).
    pub fn apply_with_shape(
        &mut self,
        table: &CompiledTable,
        budget: u64,
        shape: Option<Shape>,
    ) -> Result<ApplyReport> {
        self.apply_scopes(&[ScopeTable::everything(table)], budget, shape)
    }

    /// `apply` for a policy of scopes: one table each, in the order they are
    /// tried, and the port map that picks a packet's scope.
    pub fn apply_scopes(
        &mut self,
        scopes: &[ScopeTable<'_>],
        budget: u64,
        shape: Option<Shape>,
    ) -> Result<ApplyReport> {
        let prepared = self.prepare(scopes, budget, shape)?;
        self.commit(scopes, prepared)
    }

    /// Everything of `apply` that can be refused, with nothing running changed:
    /// list ids, the image within the budget, a new program instance holding it.
    /// A daemon with several interfaces prepares all before it commits any.
    pub fn prepare(&mut self, scopes: &[ScopeTable<'_>], budget: u64, shape: Option<Shape>) -> Result<Prepared> {
        check_list_count(scopes)?;
        let entries = self.shared.lists.entries()?;
        let infos = self.shared.lists.infos()?;
        let lists = policy_lists(scopes);
        let (ids, kept) = assign_ids(&lists, &entries)?;
        let built = build_policy_image(scopes, |i| leaf(lists[i].action.code(), ids[i]), budget, shape)?;
        let (image, port_map) = (built.image, built.port_map);
        check_budget(scopes, &image, port_map.as_deref(), budget)?;
        let instance = load_instance(&self.dir, self.log_level, &image, scopes, port_map)?;
        Ok(Prepared { instance, infos, ids, kept })
    }

    /// Swaps in `table` with the leaves `leaf_of(list index)` gives, taken as they
    /// are and with no list names stored: for tests of how the program treats
    /// leaves no compiled table holds (an unknown action, a list id past the
    /// counters). The daemon never calls it.
    pub fn apply_raw_leaves(&mut self, table: &CompiledTable, leaf_of: impl Fn(usize) -> u16) -> Result<()> {
        let image = Image::build(&table.v4, &table.v6, leaf_of)?;
        let mut instance = load_instance(&self.dir, self.log_level, &image, &[], None)?;
        link::swap_program(&mut instance.ebpf, &self.dir)?;
        self.live = Some(instance);
        Ok(())
    }

    /// Puts a prepared policy in force: one BPF_LINK_UPDATE onto the interface's
    /// link (if attached), then the list names and counters follow.
    pub fn commit(&mut self, scopes: &[ScopeTable<'_>], prepared: Prepared) -> Result<ApplyReport> {
        let Prepared { mut instance, infos, ids, kept } = prepared;
        let lists = policy_lists(scopes);
        // An id taken over from a retired list starts from zero, so the old
        // list's counters are not shown under the new one. No running program
        // counts into it: ids of the live table are never handed out again in
        // the same reload (`assign_ids`).
        for (&id, &kept) in ids.iter().zip(&kept) {
            if !kept && infos[id as usize].state != LIST_STATE_FREE {
                self.zero_list_stats(id)?;
            }
        }
        // New ids first: no running program reads them yet, and the new one
        // reads their flags from its first packet on (a banned source in an
        // allow list).
        for ((list, &id), &kept) in lists.iter().zip(&ids).zip(&kept) {
            if !kept {
                let info = make_info(LIST_STATE_LIVE, list.action.code(), list.scope, list.flags);
                self.shared.lists.set(id, info, Some(list.name))?;
            }
        }
        // The swap: from here on packets see the new table.
        link::swap_program(&mut instance.ebpf, &self.dir)?;
        let program_info = object::program_mut(&mut instance.ebpf)?.info();
        let program_id = program_info
            .map_err(|error| MapsError::Kernel { what: "the new program".into(), error: error.into() })?
            .id();
        let report = ApplyReport {
            v4_ranges: scopes.iter().map(|s| s.table.v4.len()).sum(),
            v6_ranges: scopes.iter().map(|s| s.table.v6.len()).sum(),
            table_bytes: instance.bytes,
            program_id,
            shape: instance.info.shape,
        };
        self.live = Some(instance);

        for ((list, &id), &kept) in lists.iter().zip(&ids).zip(&kept) {
            if kept {
                let info = make_info(LIST_STATE_LIVE, list.action.code(), list.scope, list.flags);
                self.shared.lists.set(id, info, None)?;
            }
        }
        for (id, info) in infos.iter().enumerate() {
            if info.state == LIST_STATE_LIVE && !ids.contains(&(id as u32)) {
                let mut retired = *info;
                retired.state = LIST_STATE_RETIRED;
                self.shared.lists.set(id as u32, retired, None)?;
            }
        }
        Ok(report)
    }

    /// The list id and action the live table gives `addr`, as the kernel finds it:
    /// the table of the program on the interface's link, or of the program this
    /// process loaded when nothing is attached.
    pub fn lookup(&self, family: Family, addr: u128) -> Result<Option<(u32, Option<Action>)>> {
        Ok(self.live_table()?.lookup(family, addr))
    }

    /// The live table mapped into this process for lookups: the one on the
    /// pinned link, else the loaded instance's. Map it once for many lookups.
    pub fn live_table(&self) -> Result<LiveTable> {
        match (LinkTables::open(&self.dir)?, &self.live) {
            (Some(l), _) => Ok(l.live),
            (None, Some(i)) => Ok(LiveTable {
                tables: LivePieces::of_instance(&i.ebpf, i.info.shape)?,
                scopes: scope_names(&i.info),
                port_map: i.port_map.clone(),
                outbound: outbound_of(&i.info),
            }),
            (None, None) => Err(MapsError::NotLoaded { dir: self.dir.clone() }),
        }
    }

    /// Kernel memory of the interface's maps: the pinned ones and the live table's.
    pub fn memory(&self) -> Result<u64> {
        let pinned: u64 = pinned_map_memory(&self.dir)?.iter().map(|(_, b)| b).sum();
        let table = match (LinkTables::open(&self.dir)?, &self.live) {
            (Some(l), _) => l.memory,
            (None, Some(i)) => {
                LivePieces::of_instance(&i.ebpf, i.info.shape)?.memory()?
                    + match i.ebpf.map(map_names::PORT_SCOPES) {
                        Some(Map::Array(d)) => map_memory(d)?,
                        _ => 0,
                    }
            }
            (None, None) => 0,
        };
        Ok(pinned + table)
    }

    /// Bytes of classifier maps of the table this process loaded last.
    pub fn table_bytes(&self) -> Option<u64> {
        self.live.as_ref().map(|i| i.bytes)
    }

    pub fn counters(&self) -> Result<Counters> {
        let mut global = [0u64; counter::COUNT as usize];
        let mut outbound = [0u64; counter::COUNT as usize];
        for (i, slot) in global.iter_mut().chain(outbound.iter_mut()).enumerate() {
            let per_cpu =
                self.shared.global_stats.get(&(i as u32), 0).map_err(MapsError::map(map_names::GLOBAL_STATS))?;
            *slot = per_cpu.iter().sum();
        }
        let mut lists = Vec::new();
        for ListEntry { id, info, scope, name } in self.shared.lists.entries()? {
            let per_cpu = self.shared.list_stats.get(&id, 0).map_err(MapsError::map(map_names::LIST_STATS))?;
            lists.push(ListCounters {
                id,
                scope,
                name,
                action: Action::from_code(info.action),
                live: info.state == LIST_STATE_LIVE || info.state == LIST_STATE_ORIGIN,
                flags: info.flags,
                packets: per_cpu.iter().map(|s| s.packets).sum(),
                bytes: per_cpu.iter().map(|s| s.bytes).sum(),
            });
        }
        let program_id = match link::linked_program_id(&self.dir)? {
            Some(id) => Some(id),
            None => match &self.live {
                Some(i) => i.ebpf.program(blocker_common::PROGRAM_NAME).and_then(|p| p.info().ok()).map(|i| i.id()),
                None => None,
            },
        };
        let mut events = EventCounters::default();
        for cpu in self.shared.event_state.get(&0, 0).map_err(MapsError::map(map_names::EVENT_STATE))?.iter() {
            events.sent += cpu.sent;
            events.rate_limited += cpu.rate_limited;
            events.ring_full += cpu.ring_full;
        }
        let interval =
            self.shared.config.get(&config::EVENT_INTERVAL_NS, 0).map_err(MapsError::map(map_names::CONFIG))?;
        Ok(Counters {
            mode: match self.shared.config.get(&config::MODE, 0).map_err(MapsError::map(map_names::CONFIG))? {
                MODE_MONITOR => Mode::Monitor,
                _ => Mode::Enforce,
            },
            events_per_second: events_per_second_of(interval),
            events,
            program_id,
            global,
            outbound,
            lists,
            attached_here: None,
            outbound_here: None,
            outbound_ahead: Vec::new(),
            xdp_tx: None,
        })
    }
}

/// The most events per second and CPU: an event costs 1 µs of credit at this rate.
pub const MAX_EVENTS_PER_SECOND: u32 = 1_000_000;

/// Default of `[policy] reject_per_second`: answers per second per interface.
pub const DEFAULT_REJECT_PER_SECOND: u32 = 1000;
/// The most: an answer costs at least 1 µs of a CPU's credit.
pub const MAX_REJECT_PER_SECOND: u32 = 1_000_000;

/// A CPU's bucket cost of one answer when the interface answers `per_second`
/// on `cpus` CPUs in all (0: no answers).
fn reject_interval_ns(per_second: u32, cpus: usize) -> u32 {
    match per_second.min(MAX_REJECT_PER_SECOND) {
        0 => 0,
        n => (1_000_000_000u64 * cpus.max(1) as u64 / u64::from(n)).min(u64::from(u32::MAX)) as u32,
    }
}

/// The bucket's cost of one event at `per_second` (0: off).
fn event_interval_ns(per_second: u32) -> u32 {
    match per_second.min(MAX_EVENTS_PER_SECOND) {
        0 => 0,
        n => 1_000_000_000 / n,
    }
}

fn events_per_second_of(interval_ns: u32) -> u32 {
    match interval_ns {
        0 => 0,
        i => (1_000_000_000 + i / 2) / i,
    }
}

/// List ids for `lists`: a list keeps the id its scope and whole name had in
/// the pinned maps, live or retired (its counters carry on across reloads and
/// restarts alike); a new one takes a free id, else a retired list's. Never an
/// id of the live table: until the swap its program still counts into it.
/// Every list gets its own id: the policy names each list of a scope once.
/// Returns the ids and, for each, whether it was kept.
fn assign_ids(lists: &[PolicyList<'_>], pinned: &[ListEntry]) -> Result<(Vec<u32>, Vec<bool>)> {
    // Origins of bans are never a list's, whatever their names.
    let by_name: HashMap<(&str, &str), u32> = pinned
        .iter()
        .filter(|e| e.info.state != LIST_STATE_ORIGIN)
        .map(|e| ((e.scope.as_str(), e.name.as_str()), e.id))
        .collect();
    let mut taken = vec![false; MAX_LISTS as usize];
    let mut ids = vec![u32::MAX; lists.len()];
    for (i, list) in lists.iter().enumerate() {
        if let Some(&id) = by_name.get(&(list.scope, list.name)).filter(|id| !taken[**id as usize]) {
            ids[i] = id;
            taken[id as usize] = true;
        }
    }
    let state = |id: u32| pinned.iter().find(|e| e.id == id).map_or(LIST_STATE_FREE, |e| e.info.state);
    // Free ids first, retired ones (whose counters would be reset) last.
    let mut candidates: Vec<u32> =
        (0..MAX_LISTS).filter(|&id| !taken[id as usize] && state(id) == LIST_STATE_FREE).collect();
    candidates.extend((0..MAX_LISTS).filter(|&id| !taken[id as usize] && state(id) == LIST_STATE_RETIRED));
    let kept: Vec<bool> = ids.iter().map(|id| *id != u32::MAX).collect();
    // The live lists this reload removes hold their ids until it is in force.
    let live = pinned.iter().filter(|e| e.info.state == LIST_STATE_LIVE && !taken[e.id as usize]).count();
    let mut candidates = candidates.into_iter();
    for id in ids.iter_mut().filter(|id| **id == u32::MAX) {
        *id = candidates.next().ok_or(TableError::TooManyLists { needed: lists.len() + live, max: MAX_LISTS })?;
    }
    Ok((ids, kept))
}

/// Refuses a table whose classifier maps (and port map) would take more than
/// `budget` bytes.
fn check_budget(
    scopes: &[ScopeTable<'_>],
    image: &Image,
    port_map: Option<&[u8]>,
    budget: u64,
) -> Result<(), TableError> {
    let needed = image.bytes() + port_map.map_or(0, |m| m.len() as u64);
    if needed <= budget {
        return Ok(());
    }
    let blocks = image.map_blocks();
    let mib = |b: usize| (b * BLOCK_BYTES) as f64 / (1 << 20) as f64;
    Err(TableError::OverBudget {
        v4_ranges: scopes.iter().map(|s| s.table.v4.len()).sum(),
        v6_ranges: scopes.iter().map(|s| s.table.v6.len()).sum(),
        needed_mib: needed as f64 / (1 << 20) as f64,
        v4_mib: mib(blocks[0] + blocks[1]),
        v6_mib: mib(blocks[2..].iter().sum()),
        budget_mib: budget as f64 / (1 << 20) as f64,
    })
}

/// Loads a program instance whose classifier maps are sized to `image`, and fills
/// them, and the port map of a table with scopes. Nothing uses it until it is
/// swapped onto a link.
fn load_instance(
    dir: &Path,
    log_level: u8,
    image: &Image,
    scopes: &[ScopeTable<'_>],
    port_map: Option<Vec<u8>>,
) -> Result<Instance> {
    let blocks = image.map_blocks();
    let port_value: Option<Box<PortMap>> = port_map.as_ref().map(|map| {
        let mut value = Box::new([SCOPE_NONE; PORT_MAP_BYTES]);
        value[..map.len()].copy_from_slice(map);
        value
    });
    let outbound = scopes.iter().position(|s| s.outbound).map(|i| i as u32);
    let mut ebpf = object::load(dir, log_level, &blocks, image.shape, port_value.as_deref(), outbound)?;
    let info = table_info(image.shape, scopes, port_map.is_some());
    let info_map = ebpf.map_mut(map_names::SHAPE).ok_or(MapsError::MissingMap { name: map_names::SHAPE })?;
    let mut info_map: Array<&mut MapData, TableInfo> =
        Array::try_from(info_map).map_err(MapsError::map(map_names::SHAPE))?;
    info_map.set(0, info, 0).map_err(MapsError::map(map_names::SHAPE))?;
    if let Some(value) = &port_value {
        let ports =
            ebpf.map_mut(map_names::PORT_SCOPES).ok_or(MapsError::MissingMap { name: map_names::PORT_SCOPES })?;
        let mut ports: Array<&mut MapData, PortMap> =
            Array::try_from(ports).map_err(MapsError::map(map_names::PORT_SCOPES))?;
        ports.set(0, value.as_ref(), 0).map_err(MapsError::map(map_names::PORT_SCOPES))?;
    }
    for (name, content) in map_names::CLASSIFIER.iter().zip(image.map_bytes()) {
        let map = ebpf.map_mut(name).ok_or(MapsError::MissingMap { name })?;
        pieces::fill(map, name, content)?;
    }
    let bytes = image.bytes() + port_map.as_ref().map_or(0, |m| m.len() as u64);
    Ok(Instance { ebpf, info, bytes, port_map })
}

/// The scope a pinned list belongs to (`default` when none was stored).
fn stored_scope(info: &ListInfo) -> String {
    match (info.scope_len as usize).min(SCOPE_NAME_LEN) {
        0 => crate::policy::DEFAULT_SCOPE.to_owned(),
        n => String::from_utf8_lossy(&info.scope[..n]).into_owned(),
    }
}

fn make_info(state: u32, action: u32, scope: &str, flags: u32) -> ListInfo {
    // Scope names are checked to fit (`policy::check_scope_name`).
    let scope = &scope.as_bytes()[..scope.len().min(SCOPE_NAME_LEN)];
    let mut info = ListInfo { state, action, scope_len: scope.len() as u32, scope: [0; SCOPE_NAME_LEN], flags };
    info.scope[..scope.len()].copy_from_slice(scope);
    info
}

/// The counters of `iface`, read from its pins (no daemon needed), with whether
/// its link is on the device that has the name here.
pub fn read_pinned_counters(pin_root: &Path, iface: &str) -> Result<Counters> {
    let dir = pins::iface_dir(pin_root, iface);
    if !dir.exists() {
        return Err(MapsError::NotAttached { iface: iface.to_owned(), dir });
    }
    let counters = DataplaneMaps::open(&dir)?.counters()?;
    Ok(with_device_facts(counters, &dir, iface))
}

/// `counters` with what the kernel and the device say now, checked facts, not
/// the pins' word: whether the links are on the device that has the name here,
/// which programs run before blocker's egress program, and what the driver
/// did with the answers sent back with XDP_TX.
pub fn with_device_facts(mut counters: Counters, dir: &Path, iface: &str) -> Counters {
    counters.attached_here = Some(link::attached_here(dir, iface));
    counters.outbound_here = super::egress::egress_here(dir, iface);
    counters.outbound_ahead = super::egress::egress_ahead(dir, iface);
    counters.xdp_tx = super::device::xdp_tx_counters(iface)
        .map_err(|e| log::debug!("{iface}: no XDP_TX counters: {e}"))
        .ok()
        .filter(|c| c.sent.is_some() || c.lost.is_some());
    counters
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compile::table::compile,
        policy::{ListSpec, Role},
    };

    fn table(names: &[String]) -> CompiledTable {
        let lists: Vec<ListSpec> =
            names.iter().map(|n| ListSpec { name: n.clone(), role: Role::Deny, prefixes: vec![] }).collect();
        compile(&lists)
    }

    fn lists_of<'a>(scope: &'a str, t: &'a CompiledTable) -> Vec<PolicyList<'a>> {
        t.lists
            .iter()
            .map(|l| PolicyList { scope, name: &l.name, action: l.action, flags: l.role.list_flags() })
            .collect()
    }

    /// The pinned entries after `lists` went live with `ids`.
    fn pinned_of(lists: &[PolicyList<'_>], ids: &[u32]) -> Vec<ListEntry> {
        lists
            .iter()
            .zip(ids)
            .map(|(l, &id)| ListEntry {
                id,
                info: make_info(LIST_STATE_LIVE, l.action.code(), l.scope, l.flags),
                scope: l.scope.to_owned(),
                name: l.name.to_owned(),
            })
            .collect()
    }

    /// `pinned` after a reload to `ids` that left out the others.
    fn retire_others(mut pinned: Vec<ListEntry>, live: &[ListEntry]) -> Vec<ListEntry> {
        for e in &mut pinned {
            if !live.iter().any(|l| l.id == e.id) {
                e.info.state = LIST_STATE_RETIRED;
            }
        }
        pinned.retain(|e| !live.iter().any(|l| l.id == e.id));
        pinned.extend(live.iter().cloned());
        pinned
    }

    #[test]
    fn counters_of_an_interface_without_pins_say_how_to_start() {
        let root = tempfile::tempdir().unwrap();
        match read_pinned_counters(root.path(), "eth3") {
            Err(MapsError::NotAttached { iface, dir }) => {
                assert_eq!((iface.as_str(), dir), ("eth3", pins::iface_dir(root.path(), "eth3")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lists_whose_names_share_a_long_tail_keep_their_own_ids() {
        let tail = "x".repeat(200);
        let names = vec![format!("/a/{tail}"), format!("/b/{tail}"), "short".to_string()];
        let t = table(&names);
        let lists = lists_of("default", &t);
        let (ids, kept) = assign_ids(&lists, &[]).unwrap();
        assert_ne!(ids[0], ids[1]);
        assert_eq!(kept, vec![false; 3]);
        // A reload or a restart: each finds its own id by its whole name.
        let pinned = pinned_of(&lists, &ids);
        let reversed = table(&[names[1].clone(), names[0].clone(), names[2].clone()]);
        let (again, kept) = assign_ids(&lists_of("default", &reversed), &pinned).unwrap();
        assert_eq!(again, vec![ids[1], ids[0], ids[2]]);
        assert_eq!(kept, vec![true; 3]);
    }

    #[test]
    fn a_list_removed_and_given_again_takes_its_id_back() {
        let both = table(&["a".to_string(), "b".to_string()]);
        let (ids, _) = assign_ids(&lists_of("default", &both), &[]).unwrap();
        let pinned = pinned_of(&lists_of("default", &both), &ids);
        // Reload 1 drops b: its id is retired, not reused.
        let only_a = table(&["a".to_string()]);
        let (ids_a, _) = assign_ids(&lists_of("default", &only_a), &pinned).unwrap();
        assert_eq!(ids_a, [ids[0]]);
        let pinned = retire_others(pinned.clone(), &pinned_of(&lists_of("default", &only_a), &ids_a));
        assert_eq!(pinned.iter().find(|e| e.id == ids[1]).unwrap().info.state, LIST_STATE_RETIRED);
        // Reload 2 gives b again: it takes its id back, kept (its counters go on).
        let (again, kept) = assign_ids(&lists_of("default", &both), &pinned).unwrap();
        assert_eq!((again, kept), (ids.clone(), vec![true, true]));
    }

    #[test]
    fn an_id_the_live_table_uses_is_never_given_to_another_list() {
        // Every id but the last two is live; a reload that replaces one live
        // list with two new ones gets the two free ids, never the one its own
        // program still counts into until the swap.
        let names: Vec<String> = (0..MAX_LISTS - 2).map(|i| format!("l{i}")).collect();
        let t = table(&names);
        let (ids, _) = assign_ids(&lists_of("default", &t), &[]).unwrap();
        let pinned = pinned_of(&lists_of("default", &t), &ids);
        let mut next: Vec<String> = names[1..].to_vec();
        next.extend(["new1".to_string(), "new2".to_string()]);
        let t2 = table(&next);
        let (ids2, kept) = assign_ids(&lists_of("default", &t2), &pinned).unwrap();
        assert!(!ids2.contains(&ids[0]), "l0's id is live until the swap");
        assert_eq!(kept.iter().filter(|k| !**k).count(), 2);
        // One more new list: no id is free or retired, so it is refused.
        next.push("new3".to_string());
        match assign_ids(&lists_of("default", &table(&next)), &pinned) {
            Err(MapsError::Table(TableError::TooManyLists { .. })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_policy_past_the_scope_or_list_limit_is_refused_with_its_numbers() {
        let empty = table(&[]);
        let ports = crate::policy::ports::Ports::default();
        let mut names: Vec<String> = (0..MAX_SCOPES).map(|i| format!("s{i}")).collect();
        names.push(crate::policy::DEFAULT_SCOPE.into());
        let scopes: Vec<ScopeTable<'_>> =
            names.iter().map(|n| ScopeTable { name: n, ports: &ports, table: &empty, outbound: false }).collect();
        assert!(check_list_count(&scopes[..MAX_SCOPES as usize]).is_ok());
        match check_list_count(&scopes) {
            Err(
                e @ TableError::TooManyScopes { needed: 17, max: MAX_SCOPES, sections: 16, policy_lists: true, .. },
            ) => {
                assert_eq!(
                    e.to_string(),
                    "too many scopes: 17, at most 16 (16 [[scope]] sections, and [policy]'s own lists, which count \
                     as one): merge scopes that share their lists, or give one scope several ports; nothing was changed"
                )
            }
            other => panic!("{other:?}"),
        }
        // List ids are counted over every scope.
        let big = table(&(0..600).map(|i| format!("l{i}")).collect::<Vec<_>>());
        let two = [
            ScopeTable { name: "a", ports: &ports, table: &big, outbound: false },
            ScopeTable { name: "b", ports: &ports, table: &big, outbound: false },
        ];
        match check_list_count(&two) {
            Err(TableError::TooManyLists { needed, max }) => assert_eq!((needed, max), (1200, MAX_LISTS)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_same_list_name_in_two_scopes_is_two_lists_and_each_keeps_its_id() {
        let t = table(&["country:CN".to_string()]);
        let (api, rest) = (lists_of("api", &t), lists_of("default", &t));
        let both: Vec<PolicyList<'_>> = api.into_iter().chain(rest).collect();
        let (ids, _) = assign_ids(&both, &[]).unwrap();
        assert_ne!(ids[0], ids[1]);
        // After a restart each finds its own id again by scope and name.
        let pinned = pinned_of(&both, &ids);
        let (again, kept) = assign_ids(&both, &pinned).unwrap();
        assert_eq!((again, kept), (ids.clone(), vec![true, true]));
        assert_eq!(stored_scope(&pinned[0].info), "api");
    }
}

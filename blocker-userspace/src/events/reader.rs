//! The daemon's event reader: one thread that waits on every interface's ring
//! buffer, decodes the records, hands them to the hub, and logs a summary at
//! most once a minute. A thread of its own, so that a long reload on the
//! daemon's task never leaves the rings unread.

use std::{
    collections::HashMap,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, RingBuf};
use blocker_common::map_names;

use crate::dataplane::maps::ListDirectory;

use super::{Event, EventClock, EventHub};

/// How often the summary line may be logged.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// How long a poll waits before the thread looks at its stop flag.
const POLL_MS: i32 = 250;
/// Lists and source prefixes named in the summary line.
const SUMMARY_TOP: usize = 3;

/// Why an interface's ring buffer cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("cannot open {path}: {error}")]
    Open { path: PathBuf, error: Box<aya::maps::MapError> },
    #[error("cannot read the list names: {0}")]
    Lists(Box<crate::dataplane::maps::MapsError>),
    #[error("cannot start the event reader thread: {0}")]
    Thread(std::io::Error),
}

/// One interface's ring buffer and the names of its list ids. Only one
/// process may read a ring: the daemon (tests and the fuzzer read their own).
pub struct EventRing {
    interface: String,
    ring: RingBuf<MapData>,
    lists: ListDirectory,
    /// (scope, name) by list id, read from the pinned map; read again after a
    /// reload.
    names: HashMap<u32, (String, String)>,
}

impl EventRing {
    /// The ring pinned in `dir` (an interface's pin directory).
    pub fn open(interface: &str, dir: &Path) -> Result<EventRing, ReaderError> {
        let open = |name: &str| {
            let path = dir.join(name);
            MapData::from_pin(&path)
                .and_then(Map::from_map_data)
                .map_err(|error| ReaderError::Open { path: path.clone(), error: Box::new(error) })
                .map(|m| (m, path))
        };
        let (ring, path) = open(map_names::EVENTS)?;
        let ring = RingBuf::try_from(ring).map_err(|error| ReaderError::Open { path, error: Box::new(error) })?;
        let lists = ListDirectory::open(dir).map_err(|error| ReaderError::Lists(Box::new(error)))?;
        Ok(EventRing { interface: interface.to_owned(), ring, lists, names: HashMap::new() })
    }

    /// Every event in the ring now, oldest first.
    pub fn read_all(&mut self) -> Vec<Event> {
        let clock = EventClock::now();
        let mut out = Vec::new();
        // Each record is copied out, so the ring's slot is released before
        // the list's name is looked up.
        while let Some(record) = self.ring.next().map(|r| r.to_vec()) {
            let interface = self.interface.clone();
            if let Some(event) = Event::decode(&record, &interface, &clock, |id| self.name(id)) {
                out.push(event);
            }
        }
        out
    }

    /// The name of list `id`, from the cache or the pinned map. An id without
    /// a name is not cached: a reload may be naming it right now.
    fn name(&mut self, id: u32) -> Option<(String, String)> {
        if let Some(name) = self.names.get(&id) {
            return Some(name.clone());
        }
        let name = self.lists.identity(id)?;
        self.names.insert(id, name.clone());
        Some(name)
    }
}

/// The running reader; stopped and joined on drop.
pub struct Reader {
    stop: Arc<AtomicBool>,
    /// Bumped after each reload: list ids may have new names.
    generation: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Starts reading the rings of `interfaces` (name, pin directory). An
    /// interface whose ring cannot be opened is named in the error, and no
    /// thread is started.
    pub fn spawn(interfaces: &[(String, PathBuf)], hub: EventHub) -> Result<Reader, ReaderError> {
        let rings = interfaces.iter().map(|(name, dir)| EventRing::open(name, dir)).collect::<Result<Vec<_>, _>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let (s, g) = (stop.clone(), generation.clone());
        let thread = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || read_loop(rings, hub, &s, &g))
            .map_err(ReaderError::Thread)?;
        Ok(Reader { stop, generation, thread: Some(thread) })
    }

    /// The lists may have new ids: names are read again.
    pub fn lists_changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_loop(mut rings: Vec<EventRing>, hub: EventHub, stop: &AtomicBool, generation: &AtomicU64) {
    let mut seen_generation = generation.load(Ordering::Relaxed);
    let mut summary = Summary::new(Instant::now());
    while !stop.load(Ordering::Relaxed) {
        let mut fds: Vec<libc::pollfd> =
            rings.iter().map(|r| libc::pollfd { fd: r.ring.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        // SAFETY: `fds` is a valid array of pollfd for the call's duration.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
        let now = generation.load(Ordering::Relaxed);
        if now != seen_generation {
            seen_generation = now;
            rings.iter_mut().for_each(|r| r.names.clear());
        }
        for ring in &mut rings {
            for event in ring.read_all() {
                summary.add(&event);
                hub.publish(event);
            }
        }
        if let Some(line) = summary.take_line(Instant::now()) {
            log::info!("{line}");
        }
    }
}

/// What the events of the current minute showed, for one line in the log.
struct Summary {
    since: Instant,
    events: u64,
    lists: HashMap<String, u64>,
    prefixes: HashMap<String, u64>,
}

impl Summary {
    fn new(now: Instant) -> Summary {
        Summary { since: now, events: 0, lists: HashMap::new(), prefixes: HashMap::new() }
    }

    fn add(&mut self, e: &Event) {
        self.events += 1;
        let list = e.list.clone().unwrap_or_else(|| format!("list id {}", e.list_id));
        *self.lists.entry(list).or_insert(0) += 1;
        *self.prefixes.entry(e.source_prefix()).or_insert(0) += 1;
    }

    /// The line for the minute that ended, if one did and it saw events.
    fn take_line(&mut self, now: Instant) -> Option<String> {
        if now.duration_since(self.since) < SUMMARY_EVERY {
            return None;
        }
        let done = std::mem::replace(self, Summary::new(now));
        (done.events > 0).then(|| {
            format!(
                "sampled drop events in the last {} s: {}; top lists: {}; top sources: {}",
                now.duration_since(done.since).as_secs(),
                done.events,
                top(&done.lists),
                top(&done.prefixes)
            )
        })
    }
}

/// The `SUMMARY_TOP` largest counts, largest first (ties by name).
fn top(counts: &HashMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = counts.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter().take(SUMMARY_TOP).map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(list: &str, source: &str) -> Event {
        Event {
            time: String::new(),
            time_ms: 0,
            interface: "eth0".into(),
            ifindex: 1,
            source: source.parse().unwrap(),
            list: Some(list.into()),
            scope: Some("default".into()),
            list_id: 0,
            action: "drop".into(),
            verdict: "dropped".into(),
            protocol: 6,
            protocol_name: "tcp".into(),
            dst_port: Some(443),
            l4: None,
            frame_len: 60,
        }
    }

    #[test]
    fn the_summary_is_one_line_a_minute_with_the_top_lists_and_prefixes() {
        let t0 = Instant::now();
        let mut s = Summary::new(t0);
        for i in 0..5 {
            s.add(&event("deny", &format!("203.0.113.{i}")));
        }
        s.add(&event("country:CN", "198.51.100.1"));
        assert_eq!(s.take_line(t0 + Duration::from_secs(59)), None, "not before the minute is over");
        let line = s.take_line(t0 + Duration::from_secs(60)).unwrap();
        assert_eq!(
            line,
            "sampled drop events in the last 60 s: 6; top lists: deny 5, country:CN 1; top sources: 203.0.113.0/24 5, \
             198.51.100.0/24 1"
        );
        assert_eq!(s.take_line(t0 + Duration::from_secs(130)), None, "a quiet minute logs nothing");
    }
}

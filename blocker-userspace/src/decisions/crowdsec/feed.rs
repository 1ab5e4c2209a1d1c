//! The daemon's side of the CrowdSec feed: which decisions hold which
//! prefixes, and the holds they make in the bans.
//!
//! Several decisions may hold one prefix (two scenarios banned one address; a
//! country decision and a range inside it): the prefix stays banned until the
//! last of them ends, with the expiry of the one that ends last. Each
//! CrowdSec origin holds its prefixes as a ban origin of its own
//! (`crowdsec:cscli`), so that an operator's ban of the same address is never
//! touched by a decision's end.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use super::{
    client::{FeedMessage, PullReport},
    Decision, Skip, Target, ORIGIN_PREFIX,
};
use crate::{
    clock,
    control::protocol::CrowdsecStatus,
    decisions::{enforce::Target as MapTarget, service::Bans, store::AddError, Ban, BanAction, BanError},
    net::{Family, Prefix},
    source::{
        asn::{db::AsnDb, Asn},
        region::db::RegionDb,
    },
};

/// The ids of the decisions that hold one prefix (almost always one; boxed
/// otherwise, so that the common case takes 16 bytes).
#[derive(Debug)]
enum Ids {
    One(u64),
    #[allow(clippy::box_collection)]
    Many(Box<Vec<u64>>),
}

impl Ids {
    fn as_slice(&self) -> &[u64] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(v) => v,
        }
    }
}

/// What a decision holds.
#[derive(Debug)]
enum Held {
    Prefix(Prefix),
    /// A country's or a system's prefixes, as the data had them when it came.
    Region(Arc<[Prefix]>),
}

impl Held {
    fn prefixes(&self) -> &[Prefix] {
        match self {
            Held::Prefix(p) => std::slice::from_ref(p),
            Held::Region(ps) => ps,
        }
    }
}

/// Where a feed finds the prefixes of country and AS decisions (loaded by the
/// daemon at the first one). A closure gives region data only.
pub trait RegionData {
    fn regions(&mut self) -> Option<Arc<RegionDb>>;
    fn asns(&mut self) -> Option<Arc<AsnDb>> {
        None
    }
}

impl<F: FnMut() -> Option<Arc<RegionDb>>> RegionData for F {
    fn regions(&mut self) -> Option<Arc<RegionDb>> {
        self()
    }
}

#[derive(Debug)]
struct Entry {
    held: Held,
    origin: Arc<str>,
    scenario: Arc<str>,
    expires_ns: u64,
    action: BanAction,
    /// The startup pull that last sent it.
    generation: u32,
}

/// The decisions in force and the prefixes they hold.
#[derive(Default)]
pub struct Feed {
    decisions: HashMap<u64, Entry>,
    by_prefix: HashMap<Prefix, Ids>,
    /// Country prefixes, shared by every decision of a country.
    countries: HashMap<[u8; 2], Arc<[Prefix]>>,
    /// A system's prefixes, shared by every decision of the system.
    systems: HashMap<Asn, Arc<[Prefix]>>,
    generation: u32,
    /// Prefixes whose holds may need a change.
    dirty: HashSet<Prefix>,
    /// Decisions refused because a ban map was full, in this pull.
    refused_in_pull: u64,
    pub status: CrowdsecStatus,
    /// Asks the pull thread for a startup pull (after decisions were refused).
    resync: Option<Arc<AtomicBool>>,
    /// When to ask for it.
    resync_at: Option<Instant>,
    /// When a failure, malformed decisions and refusals were last logged.
    logged: [Option<Instant>; 3],
    /// A pull has succeeded since the start.
    synced: bool,
    /// Usage metrics: when the next report is due (None: never again), and
    /// the dropped packets per origin the last one counted up to.
    usage_due: Option<Instant>,
    usage_counted: BTreeMap<String, u64>,
    usage_last: Option<Instant>,
}

/// The least time between two log lines of one kind (failures, malformed
/// decisions, refusals): a LAPI down for a day logs a line a minute.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Ends closer than this are the same end: a decision sent again has its
/// duration counted from another instant.
const SAME_END_NS: u64 = 2_000_000_000;
/// How soon decisions refused for a full map are asked for again.
const RESYNC_AFTER_REFUSAL: Duration = Duration::from_secs(300);

impl Feed {
    pub fn new(lapi_url: &str, update_frequency: Duration, resync: Arc<AtomicBool>) -> Feed {
        Feed {
            status: CrowdsecStatus {
                lapi_url: lapi_url.to_owned(),
                update_frequency_ms: update_frequency.as_millis() as u64,
                ..Default::default()
            },
            resync: Some(resync),
            usage_due: Some(Instant::now()),
            ..Default::default()
        }
    }

    /// Whether a usage-metrics report is due (after a successful pull).
    pub fn usage_is_due(&self) -> bool {
        self.synced && self.status.failing_since.is_none() && self.usage_due.is_some_and(|at| at <= Instant::now())
    }

    /// A usage-metrics report, if one is due after a successful pull: the
    /// packets dropped per CrowdSec origin since the last one (`dropped`:
    /// totals per ban origin, from the kernel's counters) and the bans in
    /// force per origin.
    pub fn usage_report(
        &mut self,
        started_unix: u64,
        dropped: &BTreeMap<String, u64>,
        active: &BTreeMap<String, usize>,
    ) -> Option<serde_json::Value> {
        let now = Instant::now();
        if !self.usage_is_due() {
            return None;
        }
        self.usage_due = Some(now + super::client::USAGE_EVERY);
        let strip = |o: &str| o.strip_prefix(ORIGIN_PREFIX).map(str::to_owned);
        let mut diff = BTreeMap::new();
        for (origin, total) in dropped {
            let Some(name) = strip(origin) else { continue };
            let before = self.usage_counted.insert(origin.clone(), *total).unwrap_or(0);
            diff.insert(name, total.saturating_sub(before));
        }
        let active: BTreeMap<String, usize> =
            active.iter().filter_map(|(o, n)| strip(o).map(|name| (name, *n))).collect();
        let window = self.usage_last.map_or(Duration::ZERO, |t| now.duration_since(t));
        self.usage_last = Some(now);
        Some(super::client::usage_payload(started_unix, window, &diff, &active))
    }

    fn usage_outcome(&mut self, outcome: super::client::UsageOutcome) {
        use super::client::UsageOutcome;
        let lapi = &self.status.lapi_url;
        self.status.usage_metrics = Some(match outcome {
            UsageOutcome::Sent => format!("sent every {} min", super::client::USAGE_EVERY.as_secs() / 60),
            UsageOutcome::Unsupported => {
                self.usage_due = None;
                log::info!("CrowdSec LAPI {lapi}: no usage metrics there (404: older than 1.6.3); not sent again");
                "not taken by this LAPI (404: older than 1.6.3); not sent again".into()
            }
            UsageOutcome::Failed(e) => {
                log::debug!("CrowdSec usage metrics not sent: {e}");
                format!("last report failed: {e}")
            }
        });
    }

    /// Whether a log line of `kind` is due, and if so, notes it.
    fn due(&mut self, kind: usize) -> bool {
        let now = Instant::now();
        if self.logged[kind].is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            return false;
        }
        self.logged[kind] = Some(now);
        true
    }

    /// Takes a message of the pull thread in; returns whether the bans changed.
    pub fn handle(
        &mut self,
        msg: FeedMessage,
        bans: &mut Bans,
        targets: &mut [MapTarget<'_>],
        regions: &mut dyn RegionData,
    ) -> bool {
        match msg {
            FeedMessage::Begin { startup } => {
                self.begin(startup);
                false
            }
            FeedMessage::Batch { new, deleted } => {
                for (skip, n) in self.take(new, deleted, regions) {
                    *self.status.skipped.entry(skip.name().to_owned()).or_default() += n;
                }
                self.flush(bans, targets);
                true
            }
            FeedMessage::End(report) => {
                self.end(&report, bans);
                self.flush(bans, targets);
                self.ended(&report);
                true
            }
            FeedMessage::Usage(outcome) => {
                self.usage_outcome(outcome);
                false
            }
        }
    }

    /// A pull's figures into the status, and what to log (at a bounded rate).
    fn ended(&mut self, report: &PullReport) {
        let now = crate::clock::wall_ms() / 1000;
        let lapi = self.status.lapi_url.clone();
        for (skip, n) in &report.skipped {
            *self.status.skipped.entry(skip.name().to_owned()).or_default() += n;
        }
        self.status.decisions = self.decisions.len();
        match &report.error {
            None => {
                self.status.pulls_ok += 1;
                self.status.last_success = Some(now);
                if let Some(since) = self.status.failing_since.take() {
                    log::info!(
                        "CrowdSec LAPI {lapi}: back after {} s of failed pulls; in sync again: {} decisions",
                        now.saturating_sub(since),
                        self.decisions.len()
                    );
                } else if report.startup && !self.synced {
                    log::info!(
                        "CrowdSec LAPI {lapi}: {} decisions in force (full pull in {:.1} s)",
                        self.decisions.len(),
                        report.took.as_secs_f64()
                    );
                }
                self.synced = true;
                self.status.last_error = None;
            }
            Some(e) => {
                self.status.pulls_failed += 1;
                let first = self.status.failing_since.is_none();
                if first {
                    self.status.failing_since = Some(now);
                }
                self.status.last_error = Some(e.clone());
                if first || self.due(0) {
                    if first {
                        self.logged[0] = Some(Instant::now());
                    }
                    log::warn!(
                        "CrowdSec: {e}; the {} decisions in force stay, and expire on time; trying again every {}                          ms",
                        self.decisions.len(),
                        self.status.update_frequency_ms
                    );
                }
            }
        }
        let malformed = report.skipped.get(&Skip::Malformed).copied().unwrap_or(0);
        if malformed > 0 && self.due(1) {
            log::warn!(
                "CrowdSec LAPI {lapi}: {malformed} malformed decisions skipped in the last pull (e.g. {})",
                report.examples.join("; ")
            );
        }
        if self.refused_in_pull > 0 {
            if self.due(2) {
                log::error!(
                    "CrowdSec: {} decisions refused in the last pull: the ban map is full (nothing in force is                      evicted); asked for again in {} s",
                    self.refused_in_pull,
                    RESYNC_AFTER_REFUSAL.as_secs()
                );
            }
            self.resync_at.get_or_insert(Instant::now() + RESYNC_AFTER_REFUSAL);
        }
        if self.resync_at.is_some_and(|at| at <= Instant::now()) {
            self.resync_at = None;
            if let Some(flag) = &self.resync {
                flag.store(true, Ordering::Relaxed);
            }
        }
    }

    /// A pull begins: a startup pull starts a new generation, and what it does
    /// not send again is released at its end.
    pub fn begin(&mut self, startup: bool) {
        if startup {
            self.generation = self.generation.wrapping_add(1);
        }
        self.refused_in_pull = 0;
    }

    /// Takes a batch in: deletions first, then new decisions (a decision sent
    /// again replaces itself: its expiry may be sooner or later). `regions`
    /// gives the region data for country decisions. Returns the decisions
    /// skipped here (countries the data does not know).
    pub fn take(&mut self, new: Vec<Decision>, deleted: Vec<u64>, regions: &mut dyn RegionData) -> BTreeMap<Skip, u64> {
        let mut skipped = BTreeMap::new();
        for id in deleted {
            self.drop_decision(id);
        }
        let now = clock::boot_ns();
        for d in new {
            let held = match d.target {
                Target::Prefix(p) => Held::Prefix(p),
                Target::Country(cc) => match self.country(cc, regions) {
                    Some(ps) => Held::Region(ps),
                    None => {
                        *skipped.entry(Skip::UnknownCountry).or_default() += 1;
                        continue;
                    }
                },
                Target::As(asn) => match self.system(asn, regions) {
                    Some(ps) => Held::Region(ps),
                    None => {
                        *skipped.entry(Skip::UnknownAsn).or_default() += 1;
                        continue;
                    }
                },
            };
            let expires_ns = now.saturating_add(d.lasts_ns);
            if let Some(e) = self.decisions.get_mut(&d.id) {
                // Sent again (a full pull): the same decision keeps its hold
                // unless its end moved by more than the clocks' jitter.
                if e.held.prefixes() == held.prefixes()
                    && e.origin == d.origin
                    && e.action == d.action
                    && e.expires_ns.abs_diff(expires_ns) < SAME_END_NS
                {
                    e.generation = self.generation;
                    continue;
                }
            }
            self.drop_decision(d.id);
            for p in held.prefixes() {
                self.dirty.insert(*p);
                match self.by_prefix.get_mut(p) {
                    None => {
                        self.by_prefix.insert(*p, Ids::One(d.id));
                    }
                    Some(ids) => {
                        let mut v = ids.as_slice().to_vec();
                        v.push(d.id);
                        *ids = Ids::Many(Box::new(v));
                    }
                }
            }
            self.decisions.insert(
                d.id,
                Entry {
                    held,
                    origin: d.origin,
                    scenario: d.scenario,
                    expires_ns,
                    action: d.action,
                    generation: self.generation,
                },
            );
        }
        skipped
    }

    fn system(&mut self, asn: Asn, data: &mut dyn RegionData) -> Option<Arc<[Prefix]>> {
        if let Some(ps) = self.systems.get(&asn) {
            return Some(ps.clone());
        }
        let db = data.asns()?;
        let ps: Arc<[Prefix]> = db.systems.get(&asn)?.prefixes.iter().copied().collect();
        self.systems.insert(asn, ps.clone());
        Some(ps)
    }

    fn country(&mut self, cc: [u8; 2], regions: &mut dyn RegionData) -> Option<Arc<[Prefix]>> {
        if let Some(ps) = self.countries.get(&cc) {
            return Some(ps.clone());
        }
        let db = regions.regions()?;
        let code = std::str::from_utf8(&cc).ok()?;
        let region = db.regions.get(code)?;
        let ps: Arc<[Prefix]> = region.prefixes.iter().copied().collect();
        self.countries.insert(cc, ps.clone());
        Some(ps)
    }

    /// Region or ASN data changed (a reload): countries and systems are looked up again.
    pub fn forget_region_data(&mut self) {
        self.countries.clear();
        self.systems.clear();
    }

    fn drop_decision(&mut self, id: u64) {
        let Some(e) = self.decisions.remove(&id) else { return };
        for p in e.held.prefixes() {
            self.dirty.insert(*p);
            let gone = match self.by_prefix.get_mut(p) {
                Some(Ids::One(x)) => *x == id,
                Some(Ids::Many(v)) => {
                    v.retain(|x| *x != id);
                    if v.len() == 1 {
                        let last = v[0];
                        self.by_prefix.insert(*p, Ids::One(last));
                    }
                    false
                }
                None => false,
            };
            if gone {
                self.by_prefix.remove(p);
            }
        }
    }

    /// A pull ended. After a full startup pull, decisions it did not send
    /// again, and CrowdSec holds in the bans that no decision makes (a
    /// restart, a lost LAPI database), are released; decisions whose holds
    /// the bans lack are written again.
    pub fn end(&mut self, report: &PullReport, bans: &Bans) {
        if !(report.startup && report.error.is_none()) {
            return;
        }
        let stale: Vec<u64> =
            self.decisions.iter().filter(|(_, e)| e.generation != self.generation).map(|(id, _)| *id).collect();
        for id in stale {
            self.drop_decision(id);
        }
        for b in bans.store().iter_holds() {
            if b.origin.starts_with(ORIGIN_PREFIX) {
                self.dirty.insert(b.prefix);
            }
        }
        // And what the bans lack: a hold an operator lifted (`blocker unban`),
        // or one a full map refused, is asked for again.
        for p in self.by_prefix.keys() {
            if !bans.store().holds(p).any(|b| b.origin.starts_with(ORIGIN_PREFIX)) {
                self.dirty.insert(*p);
            }
        }
    }

    /// Writes the holds of the prefixes that changed into the bans (and so the
    /// kernel's maps): per CrowdSec origin, the hold ending last of its
    /// decisions. Decisions that find a ban map full are refused and counted;
    /// what is in force is never evicted for them.
    pub fn flush(&mut self, bans: &mut Bans, targets: &mut [MapTarget<'_>]) {
        if self.dirty.is_empty() {
            return;
        }
        let now = clock::boot_ns();
        let mut sets: Vec<Ban> = Vec::new();
        let mut releases: Vec<(Prefix, String)> = Vec::new();
        for p in self.dirty.drain() {
            let mut desired: Vec<Ban> = Vec::new();
            for id in self.by_prefix.get(&p).map(Ids::as_slice).unwrap_or_default() {
                let Some(e) = self.decisions.get(id) else { continue };
                if e.expires_ns <= now {
                    continue;
                }
                match desired.iter_mut().find(|b| *b.origin == *e.origin) {
                    Some(b) if b.expires_ns >= Some(e.expires_ns) => {}
                    Some(b) => {
                        b.expires_ns = Some(e.expires_ns);
                        b.action = e.action;
                        b.reason = e.scenario.clone();
                    }
                    None => desired.push(Ban {
                        prefix: p,
                        expires_ns: Some(e.expires_ns),
                        origin: e.origin.to_string(),
                        reason: e.scenario.clone(),
                        action: e.action,
                    }),
                }
            }
            for held in bans.store().holds(&p) {
                if held.origin.starts_with(ORIGIN_PREFIX) && !desired.iter().any(|d| d.origin == held.origin) {
                    releases.push((p, held.origin.clone()));
                }
            }
            sets.extend(desired);
        }
        // A full pull's million prefixes leave no million-slot set behind.
        self.dirty.shrink_to(4096);
        if !releases.is_empty() {
            if let Err(e) = bans.release(&releases, targets) {
                log::error!("CrowdSec decisions that ended stay banned: {e}");
            }
        }
        if sets.is_empty() {
            return;
        }
        // What fits: holds of prefixes banned already always do; new
        // prefixes up to each family's room.
        let mut room =
            [Family::V4, Family::V6].map(|f| (bans.store().max(f) as usize).saturating_sub(bans.store().count(f)));
        let mut counted: HashSet<Prefix> = HashSet::new();
        let before = sets.len();
        sets.retain(|b| {
            if bans.store().get(&b.prefix).is_some() || counted.contains(&b.prefix) {
                return true;
            }
            let r = &mut room[b.prefix.family as usize];
            if *r == 0 {
                return false;
            }
            *r -= 1;
            counted.insert(b.prefix);
            true
        });
        let refused = (before - sets.len()) as u64;
        if refused > 0 {
            self.refused_in_pull += refused;
            self.status.refused_full += refused;
            bans.refused_full += refused;
        }
        match bans.set(sets, targets) {
            Ok(_) => {}
            Err(AddError::Refused(e @ BanError::TooManyOrigins { .. })) => {
                log::error!("CrowdSec decisions refused: {e}")
            }
            Err(e) => log::error!("CrowdSec decisions not enforced: {e}"),
        }
    }

    /// Decisions refused in this pull because a ban map was full.
    pub fn refused_in_pull(&self) -> u64 {
        self.refused_in_pull
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decisions::store::Store;

    fn decision(id: u64, target: &str, origin: &str, secs: u64) -> Decision {
        Decision {
            id,
            target: Target::Prefix(crate::net::parse_prefix(target).unwrap()),
            origin: Arc::from(format!("{ORIGIN_PREFIX}{origin}")),
            scenario: Arc::from("test"),
            lasts_ns: secs * 1_000_000_000,
            action: BanAction::Drop,
        }
    }

    fn no_regions() -> Option<Arc<RegionDb>> {
        None
    }

    fn bans(dir: &std::path::Path) -> Bans {
        let store = Store::open(dir, [100, 100]).unwrap();
        Bans::start(store, &mut []).unwrap().0
    }

    fn until(b: &Bans, t: &str) -> Option<(u64, String)> {
        let p = crate::net::parse_prefix(t).unwrap();
        b.store().get(&p).map(|b| (b.expires_ns.unwrap() / 1_000_000_000, b.origin.clone()))
    }

    #[test]
    fn a_prefix_stays_banned_until_its_last_decision_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bans(dir.path());
        let mut f = Feed::default();
        f.begin(true);
        f.take(
            vec![decision(1, "192.0.2.1", "cscli", 100), decision(2, "192.0.2.1", "cscli", 1000)],
            vec![],
            &mut no_regions,
        );
        f.flush(&mut b, &mut []);
        let long = until(&b, "192.0.2.1").unwrap();
        // The longer one ends (deleted): the shorter one holds on.
        f.take(vec![], vec![2], &mut no_regions);
        f.flush(&mut b, &mut []);
        let short = until(&b, "192.0.2.1").unwrap();
        assert!(short.0 + 800 < long.0, "{short:?} {long:?}");
        // Deleting again, or an id never seen, changes nothing.
        f.take(vec![], vec![2, 99], &mut no_regions);
        f.flush(&mut b, &mut []);
        assert_eq!(until(&b, "192.0.2.1"), Some(short));
        f.take(vec![], vec![1], &mut no_regions);
        f.flush(&mut b, &mut []);
        assert_eq!(until(&b, "192.0.2.1"), None);
    }

    #[test]
    fn an_operators_ban_outlives_a_decision_of_the_same_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bans(dir.path());
        let req = crate::control::protocol::BanRequest {
            targets: vec!["192.0.2.7".into()],
            for_secs: Some(50),
            origin: Some("ops".into()),
            ..Default::default()
        };
        b.ban(req, &mut []).unwrap();
        let mut f = Feed::default();
        f.begin(true);
        f.take(vec![decision(1, "192.0.2.7", "crowdsec", 5000)], vec![], &mut no_regions);
        f.flush(&mut b, &mut []);
        assert_eq!(until(&b, "192.0.2.7").unwrap().1, "crowdsec:crowdsec");
        f.take(vec![], vec![1], &mut no_regions);
        f.flush(&mut b, &mut []);
        assert_eq!(until(&b, "192.0.2.7").unwrap().1, "ops");
    }

    #[test]
    fn a_startup_pull_releases_what_the_lapi_no_longer_has() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bans(dir.path());
        let mut f = Feed::default();
        f.begin(true);
        f.take(
            vec![decision(1, "192.0.2.1", "cscli", 100), decision(2, "198.51.100.0/24", "cscli", 100)],
            vec![],
            &mut no_regions,
        );
        f.flush(&mut b, &mut []);
        let ok = PullReport { startup: true, ..Default::default() };
        f.end(&ok, &b);
        f.flush(&mut b, &mut []);
        assert_eq!(b.store().len(), 2);
        // The daemon restarts: a new feed, the bans from the state file.
        drop(b);
        let mut b = bans(dir.path());
        assert_eq!(b.store().len(), 2);
        let mut f = Feed::default();
        f.begin(true);
        f.take(vec![decision(2, "198.51.100.0/24", "cscli", 100)], vec![], &mut no_regions);
        f.flush(&mut b, &mut []);
        // A failed pull releases nothing.
        f.end(&PullReport { startup: true, error: Some("down".into()), ..Default::default() }, &b);
        f.flush(&mut b, &mut []);
        assert_eq!(b.store().len(), 2);
        f.begin(true);
        f.take(vec![decision(2, "198.51.100.0/24", "cscli", 100)], vec![], &mut no_regions);
        f.end(&ok, &b);
        f.flush(&mut b, &mut []);
        assert_eq!(b.store().len(), 1);
        assert!(until(&b, "198.51.100.0/24").is_some());
    }

    #[test]
    fn a_full_pull_brings_back_what_an_operator_lifted() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bans(dir.path());
        let mut f = Feed::default();
        let ok = PullReport { startup: true, ..Default::default() };
        f.begin(true);
        f.take(vec![decision(1, "192.0.2.1", "cscli", 100)], vec![], &mut no_regions);
        f.end(&ok, &b);
        f.flush(&mut b, &mut []);
        b.unban(&["192.0.2.1".into()], None, &mut []).unwrap();
        assert!(b.store().is_empty());
        // The same decision sent again by a full pull: banned again.
        f.begin(true);
        f.take(vec![decision(1, "192.0.2.1", "cscli", 100)], vec![], &mut no_regions);
        f.end(&ok, &b);
        f.flush(&mut b, &mut []);
        assert!(until(&b, "192.0.2.1").is_some());
    }

    #[test]
    fn a_full_map_refuses_new_prefixes_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), [3, 3]).unwrap();
        let mut b = Bans::start(store, &mut []).unwrap().0;
        let mut f = Feed::default();
        f.begin(true);
        let new = (1..=5).map(|i| decision(i, &format!("192.0.2.{i}"), "cscli", 100)).collect();
        f.take(new, vec![], &mut no_regions);
        f.flush(&mut b, &mut []);
        assert_eq!(b.store().len(), 3);
        assert_eq!(f.refused_in_pull(), 2);
        assert_eq!(b.refused_full, 2);
    }

    #[test]
    fn countries_hold_their_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = bans(dir.path());
        let mut db = RegionDb::default();
        db.regions.insert(
            "ZZ".into(),
            crate::source::region::db::Region {
                code: "ZZ".into(),
                name: None,
                prefixes: vec![
                    crate::net::parse_prefix("203.0.113.0/25").unwrap(),
                    crate::net::parse_prefix("2001:db8::/32").unwrap(),
                ],
                sources: Vec::new(),
            },
        );
        let db = Arc::new(db);
        let mut regions = || Some(db.clone());
        let mut f = Feed::default();
        f.begin(true);
        let mut d = decision(1, "192.0.2.1", "cscli", 100);
        d.target = Target::Country(*b"ZZ");
        let mut unknown = d.clone();
        unknown.id = 2;
        unknown.target = Target::Country(*b"QQ");
        // A range inside the country, by another decision.
        let skipped = f.take(vec![d, unknown, decision(3, "203.0.113.0/25", "cscli", 10)], vec![], &mut regions);
        assert_eq!(skipped.get(&Skip::UnknownCountry), Some(&1));
        f.flush(&mut b, &mut []);
        assert_eq!(b.store().len(), 2);
        f.take(vec![], vec![1], &mut regions);
        f.flush(&mut b, &mut []);
        assert_eq!(b.store().len(), 1, "the range's own decision holds it");
    }
}

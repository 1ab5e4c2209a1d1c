//! The compiler from lists to a table: all lists merge into one non-overlapping,
//! sorted prefix table per family, each prefix carrying the list it is counted under.
//!
//! Precedence where ranges of different lists overlap (resolved here, so the kernel
//! needs one lookup), by the role each list plays:
//! 0. never-block ranges (lockout protection) beat everything;
//! 1. then allow exceptions (`--allow FILE`, `--allow-asn`);
//! 2. then deny and reject lists, denied and rejected countries and systems;
//! 3. then, in allowlist mode, the space outside every allowed country and system (dropped);
//! 4. then monitor lists;
//! 5. then allowed countries and systems (passed).
//!
//! Between lists of the same role the more specific prefix wins, then the list
//! given first. So where two denied countries claim the same range, its drops are
//! counted under the country whose prefix is more specific, or else the one named
//! first.
//!
//! Adjacent ranges with the same winner are merged before being cut back into
//! CIDRs, so the table is as small as the outcome allows.

use std::collections::BTreeMap;

use crate::{
    net::{range_to_prefixes, Family, Prefix},
    policy::{
        ports::{PortSet, Ports},
        Action, ListSpec, Policy, PolicyError, Role,
    },
    source::fetch::UrlAccess,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledList {
    pub name: String,
    pub action: Action,
    /// What the list is for (whether its pass wins over bans).
    pub role: Role,
}

/// A range of addresses (inclusive) and the list (index into `lists`) it is
/// counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub lo: u128,
    pub hi: u128,
    pub list: usize,
}

impl Range {
    /// The range as the fewest CIDRs (for tools that only know prefixes).
    pub fn prefixes(&self, family: Family) -> Vec<Prefix> {
        range_to_prefixes(family, self.lo, self.hi)
    }
}

/// The compiled table: disjoint ranges sorted by address, per family; touching
/// ranges always belong to different lists. Ranges, not CIDRs: a host inside a
/// country would cut the country's range into up to 64 CIDRs, but into 3 ranges.
#[derive(Clone, Debug, Default)]
pub struct CompiledTable {
    pub lists: Vec<CompiledList>,
    pub v4: Vec<Range>,
    pub v6: Vec<Range>,
}

impl CompiledTable {
    pub fn entries(&self, family: Family) -> &[Range] {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Which list (index into `lists`) the address falls in, if any.
    pub fn lookup(&self, family: Family, addr: u128) -> Option<usize> {
        let entries = self.entries(family);
        // Last range starting at or before addr; ranges are disjoint.
        let i = entries.partition_point(|r| r.lo <= addr);
        let r = entries.get(i.checked_sub(1)?)?;
        (addr <= r.hi).then_some(r.list)
    }

    /// Ranges of each list: (IPv4, IPv6), indexed like `lists`.
    /// The CIDRs each list holds in the table (its ranges as the fewest
    /// prefixes), IPv4 and IPv6.
    pub fn prefixes_per_list(&self) -> Vec<(usize, usize)> {
        let mut out = vec![(0, 0); self.lists.len()];
        for r in &self.v4 {
            out[r.list].0 += crate::net::range_prefixes(Family::V4, r.lo, r.hi).count();
        }
        for r in &self.v6 {
            out[r.list].1 += crate::net::range_prefixes(Family::V6, r.lo, r.hi).count();
        }
        out
    }

    pub fn ranges_per_list(&self) -> Vec<(usize, usize)> {
        let mut out = vec![(0, 0); self.lists.len()];
        for r in &self.v4 {
            out[r.list].0 += 1;
        }
        for r in &self.v6 {
            out[r.list].1 += 1;
        }
        out
    }
}

/// Higher wins where lists overlap.
const fn role_rank(role: Role) -> u8 {
    match role {
        Role::NeverBlock => 5,
        Role::Exception => 4,
        Role::Deny | Role::Reject => 3,
        Role::OutsideAllowed => 2,
        Role::Monitor => 1,
        Role::AllowedRegion => 0,
    }
}

/// Precedence key of one input prefix: the greatest key among the prefixes covering
/// an address decides it. Packed for a small sweep: role rank, then prefix length,
/// then the earlier list (the low bits, inverted).
type Rank = u32;
const RANK_LIST_BITS: u32 = 16;

fn rank(list_index: usize, role: Role, prefix: &Prefix) -> Rank {
    (u32::from(role_rank(role)) << 24)
        | (u32::from(prefix.len) << RANK_LIST_BITS)
        | (0xffff - list_index.min(0xffff) as u32)
}

fn rank_list(r: Rank) -> usize {
    (0xffff - (r & 0xffff)) as usize
}

/// Reference answer evaluated directly over the raw inputs, for tests: the list
/// whose covering prefix has the greatest precedence.
pub fn reference_lookup(lists: &[ListSpec], family: Family, addr: u128) -> Option<usize> {
    lists
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.prefixes.iter().map(move |p| (i, l.role, p)))
        .filter(|(_, _, p)| p.contains(family, addr))
        .max_by_key(|(i, role, p)| rank(*i, *role, p))
        .map(|(i, _, _)| i)
}

/// Reads every list of `policy`'s own scope (fetching URL sources) and
/// compiles them: the table of a policy without `[[scope]]`s. Any error aborts
/// before anything is applied.
pub fn build_table(policy: &Policy) -> Result<CompiledTable, PolicyError> {
    Ok(compile_owned(policy.list_specs(UrlAccess::Fetch)?))
}

/// A compiled policy: one table per scope, in the order scopes are tried (the
/// first whose ports take a packet judges it).
#[derive(Clone, Debug, Default)]
pub struct CompiledPolicy {
    pub scopes: Vec<CompiledScope>,
}

#[derive(Clone, Debug)]
pub struct CompiledScope {
    pub name: String,
    pub ports: Ports,
    /// The outbound lists: the last scope, judged by destination (tc egress);
    /// no port map entry names it.
    pub outbound: bool,
    pub table: CompiledTable,
}

/// Reads every list of every scope of `policy` (fetching URL sources) and
/// compiles each scope's. Any error aborts before anything is applied.
pub fn build_policy(policy: &Policy) -> Result<CompiledPolicy, PolicyError> {
    build_policy_with(policy, UrlAccess::Fetch)
}

/// `build_policy`, with URL sources read as `access` says (reloads read the
/// cached copies only).
pub fn build_policy_with(policy: &Policy, access: UrlAccess) -> Result<CompiledPolicy, PolicyError> {
    let scopes = policy
        .scope_specs(access)?
        .into_iter()
        .map(|s| CompiledScope { name: s.name, ports: s.ports, outbound: s.outbound, table: compile_owned(s.lists) })
        .collect();
    Ok(CompiledPolicy { scopes })
}

/// A scope's table as the data plane takes it: the scopes of a compiled
/// policy, or one table for all traffic.
#[derive(Clone, Copy, Debug)]
pub struct ScopeTable<'a> {
    pub name: &'a str,
    pub ports: &'a Ports,
    pub table: &'a CompiledTable,
    /// See `CompiledScope::outbound`.
    pub outbound: bool,
}

/// What the outbound table takes, in words (status, check-config, lookup).
pub const OUTGOING: &str = "outgoing packets, by destination";

/// Every packet: the ports of a table without scopes.
static EVERYTHING: Ports = Ports(Vec::new());

impl CompiledPolicy {
    pub fn view(&self) -> Vec<ScopeTable<'_>> {
        self.scopes
            .iter()
            .map(|s| ScopeTable { name: &s.name, ports: &s.ports, table: &s.table, outbound: s.outbound })
            .collect()
    }

    /// Ranges of the whole policy, IPv4 and IPv6.
    pub fn ranges(&self) -> (usize, usize) {
        self.scopes.iter().fold((0, 0), |(a, b), s| (a + s.table.v4.len(), b + s.table.v6.len()))
    }

    /// Lists of the whole policy (every scope's).
    pub fn list_count(&self) -> usize {
        self.scopes.iter().map(|s| s.table.lists.len()).sum()
    }

    /// The scope that takes a packet of IP protocol `protocol` to `port`, as
    /// the XDP program picks it: the first whose ports match.
    pub fn scope_for(&self, protocol: u8, port: u16) -> Option<&CompiledScope> {
        self.inbound().find(|s| s.ports.matches(protocol, Some(port)))
    }

    fn inbound(&self) -> impl Iterator<Item = &CompiledScope> {
        self.scopes.iter().filter(|s| !s.outbound)
    }

    /// What happens to an inbound packet from `addr` of IP protocol `protocol`
    /// to `port` (None: its port cannot be read): the scope that judges it and
    /// the list its address falls in there, if any. Written from the README's
    /// rules, independently of the port map (a reference for tests and the
    /// fuzzer): a packet with a port goes to the first scope that takes it;
    /// one without (a later fragment, a cut header, `OPAQUE_PROTOCOLS`) to
    /// every scope that takes the first of its possible keys, judged by the
    /// strictest verdict among them (`strictest`).
    pub fn judge(&self, protocol: u8, port: Option<u16>, family: Family, addr: u128) -> Judged<'_> {
        use blocker_common::scope::OPAQUE_PROTOCOLS;
        let scoped = crate::policy::ports::Protocol::ALL.into_iter().find(|p| p.number() == protocol);
        let candidates: Vec<usize> = match (port, scoped) {
            (Some(port), Some(_)) => self.first_for(protocol, port).into_iter().collect(),
            (_, None) if !OPAQUE_PROTOCOLS.contains(&protocol) => {
                self.inbound().position(|s| s.ports.matches(protocol, None)).into_iter().collect()
            }
            (None, Some(_)) => self.first_for_any(&[protocol]),
            (_, None) => {
                let every: Vec<u8> = (0..=255u8).filter(|p| !OPAQUE_PROTOCOLS.contains(p)).collect();
                self.first_for_any(&every)
            }
        };
        let scopes: Vec<&CompiledScope> = self.inbound().collect();
        let hit = |i: usize| scopes[i].table.lookup(family, addr).map(|l| (i, l));
        let best = candidates
            .iter()
            .map(|&i| (i, hit(i)))
            .max_by_key(|(i, h)| (h.map_or(0, |(s, l)| strictness(scopes[s].table.lists[l].action)), usize::MAX - i));
        match best {
            None => Judged { scope: None, list: None },
            Some((i, None)) => Judged { scope: Some(scopes[i]), list: None },
            Some((_, Some((s, l)))) => Judged { scope: Some(scopes[s]), list: Some(&scopes[s].table.lists[l]) },
        }
    }

    /// The inbound scope (index) that takes `protocol` to `port` first.
    fn first_for(&self, protocol: u8, port: u16) -> Option<usize> {
        self.inbound().position(|s| s.ports.matches(protocol, Some(port)))
    }

    /// Every inbound scope that is first for some port of one of `protocols`
    /// (every packet of a protocol without ports counts as one key).
    fn first_for_any(&self, protocols: &[u8]) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for &protocol in protocols {
            let has_ports = crate::policy::ports::Protocol::ALL.iter().any(|p| p.number() == protocol);
            let firsts: Vec<Option<usize>> = if has_ports {
                // Which scope is first can change only where a rule's range
                // starts or ends: one port of each stretch between those tells.
                let mut points: Vec<u16> = vec![0];
                for s in self.inbound() {
                    for r in s.ports.0.iter().filter(|r| r.protocol.number() == protocol) {
                        if let PortSet::Only(ranges) | PortSet::AllExcept(ranges) = &r.ports {
                            for (lo, hi) in ranges {
                                points.push(*lo);
                                points.extend(hi.checked_add(1));
                            }
                        }
                    }
                }
                points.into_iter().map(|port| self.first_for(protocol, port)).collect()
            } else {
                vec![self.inbound().position(|s| s.ports.matches(protocol, None))]
            };
            out.extend(firsts.into_iter().flatten());
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The traffic a scope takes, in words.
    pub fn describe(scope: &CompiledScope) -> String {
        if scope.outbound {
            return OUTGOING.into();
        }
        scope.ports.describe()
    }

    /// What an operator should know before this policy runs: scopes that take
    /// no packet, because the scopes before them take every port they name.
    pub fn warnings(&self) -> Vec<String> {
        let inbound: Vec<&CompiledScope> = self.inbound().collect();
        if !is_scoped(&self.view()) {
            return Vec::new();
        }
        let ports: Vec<&Ports> = inbound.iter().map(|s| &s.ports).collect();
        crate::policy::ports::port_plan(&ports, inbound.len())
            .shadowed
            .into_iter()
            .map(|i| {
                format!(
                    "scope {} ({}) takes no packet: the scopes tried before it take every port it names",
                    inbound[i].name,
                    inbound[i].ports.describe()
                )
            })
            .collect()
    }

    /// Whether any inbound list rejects (its answers go back with XDP_TX).
    pub fn rejects_inbound(&self) -> bool {
        self.inbound().any(|s| s.table.lists.iter().any(|l| l.action == Action::Reject))
    }

    /// The outbound lists' table, if the policy has any.
    pub fn outbound(&self) -> Option<&CompiledScope> {
        self.scopes.iter().find(|s| s.outbound)
    }
}

/// What `CompiledPolicy::judge` finds: the scope (None: no scope takes the
/// packet, it passes) and the list (None: no list holds the address).
#[derive(Clone, Copy, Debug)]
pub struct Judged<'a> {
    pub scope: Option<&'a CompiledScope>,
    pub list: Option<&'a CompiledList>,
}

/// How strict a verdict is, where several scopes judge one packet: a drop or
/// a reject over a monitored hit over a pass (an allow list, never-block) over
/// no list at all.
pub const fn strictness(action: Action) -> u8 {
    match action {
        Action::Drop | Action::Reject => 3,
        Action::Monitor => 2,
        Action::Pass => 1,
    }
}

/// The table of several scopes' tables for packets that any of them could
/// judge: each address takes the strictest verdict among the members
/// (`strictness`; the earlier member where two are as strict). `members`:
/// each member's table and the number added to its list indexes, so that the
/// result's `Range::list` numbers the lists of every member in one sequence.
pub fn strictest(members: &[(&CompiledTable, usize)], family: Family) -> Vec<Range> {
    // Every point where some member's verdict may change, and each member's
    // cursor into its sorted, disjoint ranges.
    let mut points: Vec<u128> = members
        .iter()
        .flat_map(|(t, _)| t.entries(family).iter().flat_map(|r| [Some(r.lo), r.hi.checked_add(1)]))
        .flatten()
        .filter(|p| *p <= family.max_addr())
        .collect();
    points.push(0);
    points.sort_unstable();
    points.dedup();
    let mut cursors = vec![0usize; members.len()];
    let mut out: Vec<Range> = Vec::new();
    for (i, &point) in points.iter().enumerate() {
        let end = points.get(i + 1).map_or(family.max_addr(), |next| next - 1);
        let mut best: Option<(u8, usize)> = None;
        for (m, (table, offset)) in members.iter().enumerate() {
            let entries = table.entries(family);
            while cursors[m] < entries.len() && entries[cursors[m]].hi < point {
                cursors[m] += 1;
            }
            let Some(r) = entries.get(cursors[m]).filter(|r| r.lo <= point) else { continue };
            let rank = strictness(table.lists[r.list].action);
            if best.is_none_or(|(b, _)| rank > b) {
                best = Some((rank, offset + r.list));
            }
        }
        let Some((_, list)) = best else { continue };
        match out.last_mut() {
            Some(last) if last.list == list && last.hi.checked_add(1) == Some(point) => last.hi = end,
            _ => out.push(Range { lo: point, hi: end, list }),
        }
    }
    out
}

impl<'a> ScopeTable<'a> {
    /// `table` for every packet, as the one scope of a policy without scopes.
    pub fn everything(table: &'a CompiledTable) -> ScopeTable<'a> {
        ScopeTable { name: crate::policy::DEFAULT_SCOPE, ports: &EVERYTHING, table, outbound: false }
    }
}

/// Whether the scopes need the port map: more than one inbound, or one that
/// does not take every packet (the outbound table is not in the port map).
pub fn is_scoped(scopes: &[ScopeTable<'_>]) -> bool {
    let inbound = || scopes.iter().filter(|s| !s.outbound);
    inbound().count() > 1 || inbound().any(|s| !s.ports.is_everything())
}

pub fn compile(lists: &[ListSpec]) -> CompiledTable {
    let events = [Events::collect(lists, Family::V4), Events::collect(lists, Family::V6)];
    CompiledTable::from_events(compiled_lists(lists), events)
}

/// `compile`, freeing the lists' prefixes before the sweep: with millions of
/// prefixes the daemon's peak memory is what matters most here.
pub fn compile_owned(lists: Vec<ListSpec>) -> CompiledTable {
    let events = [Events::collect(&lists, Family::V4), Events::collect(&lists, Family::V6)];
    let compiled = compiled_lists(&lists);
    drop(lists);
    CompiledTable::from_events(compiled, events)
}

fn compiled_lists(lists: &[ListSpec]) -> Vec<CompiledList> {
    lists.iter().map(|l| CompiledList { name: l.name.clone(), action: l.role.action(), role: l.role }).collect()
}

impl CompiledTable {
    fn from_events(lists: Vec<CompiledList>, [v4, v6]: [Events; 2]) -> CompiledTable {
        let v4 = v4.sweep();
        CompiledTable { lists, v4, v6: v6.sweep() }
    }
}

/// A family's range boundaries, sorted: a prefix starts (rank with the top bit
/// clear) or ends just before the point (top bit set). Sized exactly; IPv4's are
/// packed in a u64 (8 bytes, not 32): with millions of prefixes they are the
/// compiler's largest allocation.
enum Events {
    V4(Vec<u64>),
    V6(Vec<(u128, u32)>),
}

impl Events {
    fn collect(lists: &[ListSpec], family: Family) -> Events {
        let count: usize = lists.iter().map(|l| l.prefixes.iter().filter(|p| p.family == family).count()).sum();
        let each_event = |push: &mut dyn FnMut(u128, u32)| {
            for (i, list) in lists.iter().enumerate() {
                for p in list.prefixes.iter().filter(|p| p.family == family) {
                    let (lo, hi) = p.range();
                    let r = rank(i, list.role, p);
                    push(lo, r);
                    if let Some(after) = hi.checked_add(1).filter(|a| *a <= family.max_addr()) {
                        push(after, r | END);
                    }
                }
            }
        };
        match family {
            Family::V4 => {
                let mut events: Vec<u64> = Vec::with_capacity(2 * count);
                each_event(&mut |point, code| events.push((point as u64) << 32 | u64::from(code)));
                events.sort_unstable();
                Events::V4(events)
            }
            Family::V6 => {
                let mut events: Vec<(u128, u32)> = Vec::with_capacity(2 * count);
                each_event(&mut |point, code| events.push((point, code)));
                events.sort_unstable_by_key(|e| e.0);
                Events::V6(events)
            }
        }
    }

    fn sweep(self) -> Vec<Range> {
        match self {
            Events::V4(e) => sweep(Family::V4, e.len(), |i| (u128::from(e[i] >> 32), e[i] as u32)),
            Events::V6(e) => sweep(Family::V6, e.len(), |i| e[i]),
        }
    }
}

/// Marks an event as the end of a prefix (the point is just past it).
const END: u32 = 1 << 31;

/// The sweep over `n` events sorted by point (`event(i)`: point and rank code):
/// at each point the highest-ranked active prefix wins.
fn sweep(family: Family, n: usize, event: impl Fn(usize) -> (u128, u32)) -> Vec<Range> {
    let mut active: BTreeMap<Rank, u32> = BTreeMap::new();
    let mut out: Vec<Range> = Vec::new();
    // The run being built: (start, winning list).
    let mut run: Option<(u128, usize)> = None;
    let mut i = 0;
    while i < n {
        let point = event(i).0;
        while i < n && event(i).0 == point {
            let (_, e) = event(i);
            let r = e & !END;
            if e & END == 0 {
                *active.entry(r).or_insert(0) += 1;
            } else if let Some(n) = active.get_mut(&r) {
                *n -= 1;
                if *n == 0 {
                    active.remove(&r);
                }
            }
            i += 1;
        }
        let winner = active.last_key_value().map(|(r, _)| rank_list(*r));
        match (run, winner) {
            (Some((_, cur)), Some(w)) if cur == w => {}
            _ => {
                if let Some((start, cur)) = run.take() {
                    out.push(Range { lo: start, hi: point - 1, list: cur });
                }
                run = winner.map(|w| (point, w));
            }
        }
    }
    if let Some((start, cur)) = run {
        out.push(Range { lo: start, hi: family.max_addr(), list: cur });
    }
    out.shrink_to_fit();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::parse_prefix;

    fn list(name: &str, role: Role, prefixes: &[&str]) -> ListSpec {
        ListSpec { name: name.into(), role, prefixes: prefixes.iter().map(|p| parse_prefix(p).unwrap()).collect() }
    }

    /// The table as CIDRs, to compare with what an operator would write.
    fn strs(t: &CompiledTable, family: Family) -> Vec<(String, usize)> {
        t.entries(family).iter().flat_map(|r| r.prefixes(family).into_iter().map(|p| (p.to_string(), r.list))).collect()
    }

    #[test]
    fn a_scope_that_takes_no_packet_is_warned_about() {
        let rules = |r: &[&str]| Ports(r.iter().map(|r| r.parse().unwrap()).collect());
        let scope = |name: &str, ports: Ports| CompiledScope {
            name: name.into(),
            ports,
            outbound: false,
            table: compile(&[list("d", Role::Deny, &["10.0.0.0/8"])]),
        };
        let policy = CompiledPolicy {
            scopes: vec![
                scope("web", rules(&["tcp"])),
                scope("api", rules(&["tcp:443"])),
                scope("dns", rules(&["udp:53"])),
                scope("default", Ports::default()),
            ],
        };
        assert_eq!(
            policy.warnings(),
            ["scope api (tcp:443) takes no packet: the scopes tried before it take every port it names"]
        );
        let fine = CompiledPolicy { scopes: vec![scope("api", rules(&["tcp:443"])), scope("web", rules(&["tcp"]))] };
        assert!(fine.warnings().is_empty());
    }

    #[test]
    fn allow_punches_hole_in_deny() {
        let lists = [list("deny", Role::Deny, &["10.0.0.0/8"]), list("allow", Role::Exception, &["10.1.0.0/16"])];
        let t = compile(&lists);
        assert_eq!(
            strs(&t, Family::V4),
            vec![
                ("10.0.0.0/16".into(), 0),
                ("10.1.0.0/16".into(), 1),
                ("10.2.0.0/15".into(), 0),
                ("10.4.0.0/14".into(), 0),
                ("10.8.0.0/13".into(), 0),
                ("10.16.0.0/12".into(), 0),
                ("10.32.0.0/11".into(), 0),
                ("10.64.0.0/10".into(), 0),
                ("10.128.0.0/9".into(), 0),
            ]
        );
    }

    #[test]
    fn allow_wins_even_when_less_specific() {
        let lists = [list("deny", Role::Deny, &["192.0.2.128/25"]), list("allow", Role::Exception, &["192.0.2.0/24"])];
        let t = compile(&lists);
        assert_eq!(strs(&t, Family::V4), vec![("192.0.2.0/24".into(), 1)]);
    }

    #[test]
    fn adjacent_and_duplicate_prefixes_merge() {
        let lists = [list("d", Role::Deny, &["10.0.0.0/9", "10.128.0.0/9", "10.0.0.0/9", "10.5.0.0/16"])];
        assert_eq!(strs(&compile(&lists), Family::V4), vec![("10.0.0.0/8".into(), 0)]);
    }

    #[test]
    fn whole_address_space() {
        let lists = [list("all", Role::Deny, &["0.0.0.0/0", "::/0"])];
        let t = compile(&lists);
        assert_eq!(strs(&t, Family::V4), vec![("0.0.0.0/0".into(), 0)]);
        assert_eq!(strs(&t, Family::V6), vec![("::/0".into(), 0)]);
        assert_eq!(t.lookup(Family::V6, u128::MAX), Some(0));
    }

    #[test]
    fn deny_beats_monitor_and_specific_beats_general_and_first_list_breaks_ties() {
        let lists = [
            list("mon", Role::Monitor, &["10.0.0.0/8"]),
            list("d1", Role::Deny, &["10.0.0.0/16"]),
            list("d2", Role::Deny, &["10.0.0.0/16", "10.0.1.0/24"]),
        ];
        let t = compile(&lists);
        let at = |s: &str| {
            let p = parse_prefix(s).unwrap();
            t.lookup(p.family, p.addr)
        };
        assert_eq!(at("10.0.0.1"), Some(1)); // tie d1/d2 on /16: first given wins
        assert_eq!(at("10.0.1.1"), Some(2)); // d2's /24 is more specific
        assert_eq!(at("10.1.0.0"), Some(0)); // only monitor
        assert_eq!(at("11.0.0.0"), None);
    }

    #[test]
    fn matches_reference_on_random_overlaps_and_boundaries() {
        let mut rng = blocker_tests::Rng(7);
        for round in 0..40 {
            let mut lists = Vec::new();
            for l in 0..4 {
                let role = [
                    Role::NeverBlock,
                    Role::Exception,
                    Role::Deny,
                    Role::OutsideAllowed,
                    Role::Monitor,
                    Role::AllowedRegion,
                ][(rng.next_u64() % 6) as usize];
                let mut prefixes = Vec::new();
                for _ in 0..(5 + rng.next_u64() % 20) {
                    for family in [Family::V4, Family::V6] {
                        let bits = family.bits();
                        // Cluster addresses in a small region so prefixes overlap.
                        let len = (bits as u64 - 20 + rng.next_u64() % 20) as u8;
                        let base: u128 = if family == Family::V4 { 0x0a00_0000 } else { 0x2001_0db8u128 << 96 };
                        let raw = base + u128::from(rng.next_u64() % (1 << 20));
                        let host = u32::from(bits - len);
                        let addr = raw & !((1u128 << host) - 1);
                        prefixes.push(Prefix { family, addr, len });
                    }
                }
                lists.push(ListSpec { name: format!("l{round}-{l}"), role, prefixes });
            }
            let table = compile(&lists);
            for family in [Family::V4, Family::V6] {
                let mut probes = Vec::new();
                for l in &lists {
                    for p in l.prefixes.iter().filter(|p| p.family == family) {
                        let (lo, hi) = p.range();
                        probes.extend([lo.wrapping_sub(1), lo, lo + 1, hi - 1, hi, hi.wrapping_add(1)]);
                    }
                }
                for r in table.entries(family) {
                    probes.extend([r.lo, r.hi]);
                }
                for _ in 0..200 {
                    probes.push(probes[(rng.next_u64() as usize) % probes.len()] ^ u128::from(rng.next_u64() % 4096));
                }
                for a in probes.into_iter().filter(|a| *a <= family.max_addr()) {
                    assert_eq!(
                        table.lookup(family, a),
                        reference_lookup(&lists, family, a),
                        "round {round} {family:?} addr {a:#x}"
                    );
                }
                // Disjoint and sorted.
                for w in table.entries(family).windows(2) {
                    assert!(w[0].hi < w[1].lo && (w[0].hi + 1 < w[1].lo || w[0].list != w[1].list));
                }
            }
        }
    }
}

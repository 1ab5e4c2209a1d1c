//! Which traffic a scope applies to: by L4 protocol and destination port.
//!
//! A rule is `PROTO`, `PROTO:PORTS` ("only these") or `PROTO:all-except:PORTS`
//! ("all but these"), where PROTO is `tcp`, `udp` or `sctp` and PORTS is a
//! comma-separated list of ports and ranges (`443,8443,9000-9100`). A scope's
//! rules are a union: `--ports tcp:443,8443 --ports udp:443`.

use std::fmt;

use blocker_common::scope::{port_key, SCOPED_PROTOCOLS};

/// A protocol whose destination port a scope can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        SCOPED_PROTOCOLS[self.class() as usize]
    }

    /// Its index in the kernel's port map (`blocker_common::scope`).
    pub const fn class(self) -> u32 {
        match self {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
            Protocol::Sctp => 2,
        }
    }
}

/// Inclusive port ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSet {
    All,
    Only(Vec<(u16, u16)>),
    AllExcept(Vec<(u16, u16)>),
}

impl PortSet {
    pub fn contains(&self, port: u16) -> bool {
        let within = |ranges: &[(u16, u16)]| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port));
        match self {
            PortSet::All => true,
            PortSet::Only(r) => within(r),
            PortSet::AllExcept(r) => !within(r),
        }
    }
}

/// One `--ports` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRule {
    pub protocol: Protocol,
    pub ports: PortSet,
}

/// Why a `--ports` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortsError {
    #[error("{text}: unknown protocol {protocol} (tcp, udp or sctp; e.g. tcp:443,8443 or udp:all-except:53)")]
    UnknownProtocol { text: String, protocol: String },
    #[error("{text}: no ports after {protocol}: (give tcp for every port, tcp:443 for one)")]
    NoPorts { text: String, protocol: &'static str },
    #[error("{text}: {port} is not a port (0 to 65535, or a range like 9000-9100)")]
    NotAPort { text: String, port: String },
    #[error("{text}: the range {port} runs backwards")]
    Backwards { text: String, port: String },
    #[error("{text}: all-except: with no port excepts nothing (give the protocol alone for every port)")]
    EmptyExcept { text: String },
    #[error("{text}: excepts every port, so the rule takes no packet (remove it, or except fewer ports)")]
    ExceptsEverything { text: String },
}

impl std::str::FromStr for PortRule {
    type Err = PortsError;

    fn from_str(s: &str) -> Result<PortRule, PortsError> {
        let text = crate::source::input::quote(s);
        let t = s.trim();
        let (proto, rest) = match t.split_once(':') {
            Some((p, r)) => (p, Some(r)),
            None => (t, None),
        };
        let protocol =
            Protocol::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(proto.trim())).ok_or_else(|| {
                PortsError::UnknownProtocol { text: text.clone(), protocol: crate::source::input::quote(proto) }
            })?;
        let ports = match rest.map(str::trim) {
            None | Some("all") => PortSet::All,
            Some("") => return Err(PortsError::NoPorts { text, protocol: protocol.name() }),
            Some(r) => match r.strip_prefix("all-except:") {
                Some(except) => {
                    let ranges = parse_ranges(&text, except)?;
                    if ranges.is_empty() {
                        return Err(PortsError::EmptyExcept { text });
                    }
                    if covers_every_port(&ranges) {
                        return Err(PortsError::ExceptsEverything { text });
                    }
                    PortSet::AllExcept(ranges)
                }
                None if r == "all-except" => return Err(PortsError::EmptyExcept { text }),
                None => {
                    let ranges = parse_ranges(&text, r)?;
                    if ranges.is_empty() {
                        return Err(PortsError::NoPorts { text, protocol: protocol.name() });
                    }
                    PortSet::Only(ranges)
                }
            },
        };
        Ok(PortRule { protocol, ports })
    }
}

/// Whether `ranges` (inclusive, any order, overlapping or not) hold every port.
fn covers_every_port(ranges: &[(u16, u16)]) -> bool {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut next: u32 = 0;
    for (lo, hi) in sorted {
        if u32::from(lo) > next {
            return false;
        }
        next = next.max(u32::from(hi) + 1);
    }
    next > u32::from(u16::MAX)
}

fn parse_ranges(text: &str, list: &str) -> Result<Vec<(u16, u16)>, PortsError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = || PortsError::NotAPort { text: text.to_owned(), port: crate::source::input::quote(item) };
        let number = |n: &str| n.trim().parse::<u16>().map_err(|_| bad());
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let p = number(item)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(PortsError::Backwards { text: text.to_owned(), port: crate::source::input::quote(item) });
        }
        out.push((lo, hi));
    }
    Ok(out)
}

impl fmt::Display for PortRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges = |r: &[(u16, u16)]| {
            r.iter()
                .map(|(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") })
                .collect::<Vec<_>>()
                .join(",")
        };
        match &self.ports {
            PortSet::All => write!(f, "{}", self.protocol.name()),
            PortSet::Only(r) => write!(f, "{}:{}", self.protocol.name(), ranges(r)),
            PortSet::AllExcept(r) => write!(f, "{}:all-except:{}", self.protocol.name(), ranges(r)),
        }
    }
}

/// What a scope takes: every packet (no rules), or those its rules match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ports(pub Vec<PortRule>);

impl Ports {
    /// Every packet, whatever its protocol.
    pub fn is_everything(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a packet of IP protocol `protocol` to `port` is in scope. `None`:
    /// the packet has no L4 header to read (a fragment other than the first):
    /// it is in scope if the scope takes any port of its protocol, so that
    /// fragments are never a way around the policy.
    pub fn matches(&self, protocol: u8, port: Option<u16>) -> bool {
        if self.is_everything() {
            return true;
        }
        self.0.iter().any(|r| r.protocol.number() == protocol && port.is_none_or(|p| r.ports.contains(p)))
    }

    /// For messages and `check-config`: "tcp:443,8443 udp:443", or "all traffic".
    pub fn describe(&self) -> String {
        if self.is_everything() {
            return "all traffic".into();
        }
        self.0.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(" ")
    }
}

/// The kernel's port map for scopes tried in order, and the tables it needs
/// besides the scopes' own.
///
/// A key with a port holds the index of the first scope that takes it, or
/// `SCOPE_NONE`. A key without one (a later fragment, a TCP header cut short,
/// an L4 header behind more extension headers than the parser walks: see
/// `OPAQUE_PROTOCOLS`) could be any of its keys with ports: it goes to every
/// scope that is first for one of them, so that no such packet passes where
/// one of those scopes would drop it. One scope: its table. Several: a table
/// of their union (`unions`), where each address takes the strictest verdict
/// of theirs (`compile::table::strictest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPlan {
    pub map: Vec<u8>,
    /// The scopes (indexes, ascending) of each union table; union `i` is the
    /// image's table `first_union + i`.
    pub unions: Vec<Vec<usize>>,
    /// Scopes no key goes to first: earlier scopes take all they would (a
    /// `check-config` and start warning).
    pub shadowed: Vec<usize>,
}

pub fn port_plan(scopes: &[&Ports], first_union: usize) -> PortPlan {
    use blocker_common::scope::{other_key, OPAQUE_PROTOCOLS, PORT_KEYS, SCOPE_NONE};
    let mut map = vec![SCOPE_NONE; PORT_KEYS as usize];
    let first = |protocol: u8, port: Option<u16>| {
        scopes.iter().position(|s| s.matches(protocol, port)).map_or(SCOPE_NONE, |i| i as u8)
    };
    let opaque = |protocol: u8| OPAQUE_PROTOCOLS.contains(&protocol);
    // Keys with a port, and protocols without ports: one scope each.
    let mut every: Vec<bool> = vec![false; scopes.len()];
    let mut per_class: Vec<Vec<bool>> = vec![vec![false; scopes.len()]; Protocol::ALL.len()];
    for protocol in (0..=255u8).filter(|p| !opaque(*p)) {
        match Protocol::ALL.into_iter().find(|p| p.number() == protocol) {
            Some(p) => {
                for port in 0..=u16::MAX {
                    let scope = first(protocol, Some(port));
                    map[port_key(p.class(), Some(port)) as usize] = scope;
                    if scope != SCOPE_NONE {
                        per_class[p.class() as usize][usize::from(scope)] = true;
                        every[usize::from(scope)] = true;
                    }
                }
            }
            None => {
                let scope = first(protocol, None);
                map[other_key(protocol) as usize] = scope;
                if scope != SCOPE_NONE {
                    every[usize::from(scope)] = true;
                }
            }
        }
    }
    // Keys without a port: the table of every scope that could hold them.
    let mut unions: Vec<Vec<usize>> = Vec::new();
    let mut table_of = |members: &[bool]| -> u8 {
        let members: Vec<usize> = (0..members.len()).filter(|&i| members[i]).collect();
        match members[..] {
            [] => SCOPE_NONE,
            [one] => one as u8,
            _ => {
                let at = unions.iter().position(|u| *u == members).unwrap_or_else(|| {
                    unions.push(members);
                    unions.len() - 1
                });
                (first_union + at) as u8
            }
        }
    };
    for p in Protocol::ALL {
        map[port_key(p.class(), None) as usize] = table_of(&per_class[p.class() as usize]);
    }
    let opaque_table = table_of(&every);
    for protocol in OPAQUE_PROTOCOLS {
        map[other_key(protocol) as usize] = opaque_table;
    }
    let shadowed = (0..scopes.len()).filter(|&i| !every[i]).collect();
    PortPlan { map, unions, shadowed }
}

#[cfg(test)]
mod tests {
    use blocker_common::scope::{other_key, SCOPE_NONE};

    use super::*;

    fn rule(s: &str) -> PortRule {
        s.parse().unwrap()
    }

    #[test]
    fn rules_read_and_print_back() {
        for text in ["tcp", "tcp:443", "tcp:443,8443", "udp:all-except:53", "sctp:9000-9100,2905"] {
            assert_eq!(rule(text).to_string(), text);
        }
        assert_eq!(rule("TCP:all"), PortRule { protocol: Protocol::Tcp, ports: PortSet::All });
        assert_eq!(rule(" udp : 53 , 123 ").ports, PortSet::Only(vec![(53, 53), (123, 123)]));
    }

    #[test]
    fn bad_rules_are_named() {
        let err = |s: &str| s.parse::<PortRule>().unwrap_err().to_string();
        assert_eq!(
            err("icmp:1"),
            "\"icmp:1\": unknown protocol \"icmp\" (tcp, udp or sctp; e.g. tcp:443,8443 or udp:all-except:53)"
        );
        assert!(err("tcp:").contains("no ports after tcp:"));
        assert!(err("tcp:,").contains("no ports after tcp:"));
        assert!(err("tcp:65536").contains("\"65536\" is not a port"));
        assert!(err("tcp:http").contains("\"http\" is not a port"));
        assert!(err("tcp:200-100").contains("the range \"200-100\" runs backwards"));
        assert!(err("tcp:all-except:").contains("excepts nothing"));
        assert!(err("tcp:all-except").contains("excepts nothing"));
        assert_eq!(
            err("tcp:all-except:0-65535"),
            "\"tcp:all-except:0-65535\": excepts every port, so the rule takes no packet (remove it, or except fewer \
             ports)"
        );
        assert!(err("udp:all-except:1000-65535,0-999").contains("excepts every port"));
        assert!(err("udp:all-except:0-40000,30000-65535").contains("excepts every port"));
        assert!("udp:all-except:0-40000,40002-65535".parse::<PortRule>().is_ok(), "port 40001 is left");
    }

    #[test]
    fn matching_takes_later_fragments_of_a_protocol_the_scope_covers() {
        let api = Ports(vec![rule("tcp:443,8443"), rule("udp:443")]);
        assert!(api.matches(6, Some(443)) && api.matches(6, Some(8443)) && api.matches(17, Some(443)));
        assert!(!api.matches(6, Some(22)) && !api.matches(17, Some(53)) && !api.matches(1, None));
        assert!(api.matches(6, None), "a TCP fragment without its header stays in scope");
        let but_ssh = Ports(vec![rule("tcp:all-except:22")]);
        assert!(but_ssh.matches(6, Some(80)) && !but_ssh.matches(6, Some(22)) && but_ssh.matches(6, None));
        assert!(!but_ssh.matches(17, Some(80)));
        assert!(Ports::default().matches(1, None), "no rules: everything");
    }

    #[test]
    fn the_port_map_gives_each_key_the_first_scope_that_takes_it() {
        let api = Ports(vec![rule("tcp:443")]);
        let web = Ports(vec![rule("tcp:80,443"), rule("udp:443")]);
        let rest = Ports::default();
        let plan = port_plan(&[&api, &web, &rest], 3);
        let map = &plan.map;
        let at = |class, port| map[port_key(class, port) as usize];
        assert_eq!(at(0, Some(443)), 0, "the first scope wins where two overlap");
        assert_eq!(at(0, Some(80)), 1);
        assert_eq!(at(1, Some(443)), 1);
        assert_eq!(at(0, Some(22)), 2);
        assert_eq!(map[other_key(1) as usize], 2, "ICMP: only the scope of everything");
        assert!(plan.shadowed.is_empty());
        let plan = port_plan(&[&api], 1);
        assert_eq!(plan.map[port_key(0, Some(22)) as usize], SCOPE_NONE, "outside every scope");
        assert_eq!(plan.map[other_key(58) as usize], SCOPE_NONE);
    }

    #[test]
    fn packets_without_a_port_go_to_every_scope_that_could_hold_them() {
        use blocker_common::scope::OPAQUE_PROTOCOLS;
        let api = Ports(vec![rule("tcp:443")]);
        let web = Ports(vec![rule("tcp:80,443"), rule("udp:443")]);
        let rest = Ports::default();
        let plan = port_plan(&[&api, &web, &rest], 3);
        let at = |class, port| plan.map[port_key(class, port) as usize];
        // TCP: api, web and rest are each first for some port; UDP: web and
        // rest; SCTP: rest alone; an opaque header: any of the three.
        assert_eq!(plan.unions, vec![vec![0, 1, 2], vec![1, 2]]);
        assert_eq!((at(0, None), at(1, None), at(2, None)), (3, 4, 2));
        for p in OPAQUE_PROTOCOLS {
            assert_eq!(plan.map[other_key(p) as usize], 3, "protocol {p}");
        }
        // One scope (`--ports tcp:443`): its own table, for TCP and opaque
        // headers; UDP fragments stay outside.
        let plan = port_plan(&[&api], 1);
        assert!(plan.unions.is_empty());
        assert_eq!(plan.map[port_key(0, None) as usize], 0);
        assert_eq!(plan.map[port_key(1, None) as usize], SCOPE_NONE);
        assert_eq!(plan.map[other_key(60) as usize], 0, "an IPv6 chain past the walk");
        assert_eq!(plan.map[other_key(51) as usize], 0, "AH");
        // all-except: port 22 passes, a fragment or an opaque header does not.
        let but_ssh = Ports(vec![rule("tcp:all-except:22")]);
        let plan = port_plan(&[&but_ssh], 1);
        assert_eq!(plan.map[port_key(0, Some(22)) as usize], SCOPE_NONE);
        assert_eq!((plan.map[port_key(0, None) as usize], plan.map[other_key(0) as usize]), (0, 0));
    }

    #[test]
    fn a_scope_earlier_ones_cover_is_shadowed() {
        let all_tcp = Ports(vec![rule("tcp")]);
        let api = Ports(vec![rule("tcp:443")]);
        let plan = port_plan(&[&all_tcp, &api, &Ports::default()], 3);
        assert_eq!(plan.shadowed, vec![1]);
        assert_eq!(plan.map[port_key(0, None) as usize], 0, "only the first takes TCP");
    }
}

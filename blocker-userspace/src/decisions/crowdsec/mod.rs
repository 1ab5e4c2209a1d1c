//! A CrowdSec bouncer: the LAPI's decisions, pulled as a stream, enforced as
//! bans.
//!
//! - `stream`: the stream answer, read decision by decision;
//! - `client`: the pulls (a thread of its own: a slow LAPI never stalls the
//!   daemon), which hand normalized decisions to the daemon in batches;
//! - `feed`: the daemon's side: which decisions hold which prefixes, and the
//!   holds written into the bans (`decisions::store`).
//!
//! The LAPI is the source of truth: a pull with `startup=true` (at start, and
//! after any error) sends every active decision, and what it no longer holds
//! is released. Between pulls, and while the LAPI is down, the bans stay and
//! expire on their own.

pub mod client;
pub mod feed;
pub mod stream;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::BanAction;
use crate::net::Prefix;

/// The origin of CrowdSec's bans is this, a colon, and the decision's own
/// origin (`crowdsec:cscli`, `crowdsec:CAPI`).
pub const ORIGIN_PREFIX: &str = "crowdsec:";
/// The most distinct CrowdSec origins counted apart; the rest count as
/// `crowdsec:other`.
pub const MAX_FEED_ORIGINS: usize = 16;
pub const DEFAULT_UPDATE_FREQUENCY: Duration = Duration::from_secs(10);
/// How often a full pull (`startup=true`) replaces the deltas. The LAPI's
/// deltas can miss decisions: a bulk import commits in batches of 50 whose
/// creation time may precede the pull that should have sent them (seen with
/// crowdsec 1.4.6: 50 of 100,001 imported decisions never came as a delta).
/// A full pull brings them, and changes nothing that is right already.
pub const DEFAULT_FULL_PULL_EVERY: Duration = Duration::from_secs(300);
/// The most bytes of a stream answer (a million decisions take about 250 MB).
pub const MAX_ANSWER_BYTES: u64 = 4 << 30;

/// The decision scopes blocker can enforce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Ip,
    Range,
    Country,
    /// An autonomous system: its prefixes in the ASN data.
    As,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Ip, Scope::Range, Scope::Country, Scope::As];
    pub fn name(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::Range => "range",
            Scope::Country => "country",
            Scope::As => "as",
        }
    }
    /// A scope as the LAPI or an operator writes it, in any case.
    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.name().eq_ignore_ascii_case(text))
    }
}

/// The API key, kept out of logs and debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(pub String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// TLS to the LAPI (the same settings as etcd's).
pub use crate::tls::Tls;

/// `[crowdsec]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrowdsecOptions {
    /// The LAPI's base URL (`http://127.0.0.1:8080/`).
    pub lapi_url: String,
    /// None: a client certificate authenticates.
    pub api_key: Option<ApiKey>,
    pub update_frequency: Duration,
    /// How often a full pull is made besides (None: only at start and after errors).
    pub full_pull_every: Option<Duration>,
    pub scopes: Vec<Scope>,
    /// Only decisions of these origins (empty: all).
    pub origins: Vec<String>,
    /// Only decisions whose scenario contains one of these (empty: all).
    pub scenarios_containing: Vec<String>,
    /// No decision whose scenario contains one of these.
    pub scenarios_not_containing: Vec<String>,
    /// What each decision type does (types not named are ignored).
    pub actions: BTreeMap<String, BanAction>,
    pub tls: Tls,
}

/// Why `[crowdsec]` was refused: the key, and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct OptionError {
    pub key: String,
    pub reason: String,
}

fn refuse(key: &str, reason: impl Into<String>) -> OptionError {
    OptionError { key: key.to_owned(), reason: reason.into() }
}

/// `[crowdsec]` as the config file gives it (and the command line in part).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrowdsecSection {
    pub lapi_url: Option<String>,
    pub api_key: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub update_frequency: Option<String>,
    /// "0" turns the periodic full pull off.
    pub full_pull_every: Option<String>,
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub origins: Vec<String>,
    #[serde(default)]
    pub scenarios_containing: Vec<String>,
    #[serde(default)]
    pub scenarios_not_containing: Vec<String>,
    /// Decision type → "drop", "reject" or "ignore".
    pub actions: Option<BTreeMap<String, String>>,
    pub ca_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The most bytes of an API key (CrowdSec's are 32 characters).
const MAX_KEY_BYTES: usize = 1024;

impl CrowdsecSection {
    /// Checks the section; `key_prefix` names it in errors (`crowdsec.`).
    /// Files named are read (the key) or checked to exist (certificates).
    pub fn check(&self, key_prefix: &str) -> Result<CrowdsecOptions, OptionError> {
        let k = |name: &str| format!("{key_prefix}{name}");
        let lapi_url = self.lapi_url.clone().ok_or_else(|| {
            refuse(&k("lapi_url"), "missing: the LAPI's URL, like http://127.0.0.1:8080/ (see `cscli lapi status`)")
        })?;
        let url = lapi_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.len() > 2048
            || url.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            return Err(refuse(
                &k("lapi_url"),
                format!(
                    "{} is not an http(s) URL of a LAPI (like http://127.0.0.1:8080/)",
                    crate::source::input::quote(url)
                ),
            ));
        }
        let api_key =
            match (&self.api_key, &self.api_key_file) {
                (Some(_), Some(_)) => return Err(refuse(&k("api_key"), "give api_key or api_key_file, not both")),
                (Some(key), None) => Some(check_key(key).map_err(|r| refuse(&k("api_key"), r))?),
                (None, Some(path)) => Some(read_key(path).map_err(|r| refuse(&k("api_key_file"), r))?),
                (None, None) if self.cert.is_some() => None,
                (None, None) => return Err(refuse(
                    &k("api_key_file"),
                    "missing: a bouncer's API key (`cscli bouncers add blocker` prints one), or a client cert and key",
                )),
            };
        let update_frequency = match &self.update_frequency {
            None => DEFAULT_UPDATE_FREQUENCY,
            Some(text) => {
                let d =
                    crate::clock::parse_duration(text).map_err(|e| refuse(&k("update_frequency"), e.to_string()))?;
                if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                    return Err(refuse(&k("update_frequency"), "must be from 100ms to 1h"));
                }
                d
            }
        };
        let full_pull_every = match self.full_pull_every.as_deref().map(str::trim) {
            None => Some(DEFAULT_FULL_PULL_EVERY),
            Some("0") => None,
            Some(text) => {
                let d = crate::clock::parse_duration(text).map_err(|e| refuse(&k("full_pull_every"), e.to_string()))?;
                if d < update_frequency {
                    return Err(refuse(
                        &k("full_pull_every"),
                        "shorter than update_frequency: give a longer one, or 0 (off)",
                    ));
                }
                Some(d)
            }
        };
        let scopes = match &self.scopes {
            None => Scope::ALL.to_vec(),
            Some(names) => {
                let mut out = Vec::new();
                for n in names {
                    let s = Scope::parse(n).ok_or_else(|| {
                        refuse(
                            &k("scopes"),
                            format!(
                                "{}: blocker enforces the scopes ip, range, country and as",
                                crate::source::input::quote(n)
                            ),
                        )
                    })?;
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
                if out.is_empty() {
                    return Err(refuse(&k("scopes"), "empty: name at least one of ip, range, country, as"));
                }
                out
            }
        };
        for (name, list) in [
            ("origins", &self.origins),
            ("scenarios_containing", &self.scenarios_containing),
            ("scenarios_not_containing", &self.scenarios_not_containing),
        ] {
            if list.len() > 256 {
                return Err(refuse(&k(name), "at most 256 entries"));
            }
            for v in list {
                if v.is_empty() || v.len() > 128 || v.contains(|c: char| c.is_control() || c == ',') {
                    return Err(refuse(
                        &k(name),
                        format!("{}: 1 to 128 characters, no commas", crate::source::input::quote(v)),
                    ));
                }
            }
        }
        let mut actions = BTreeMap::from([("ban".to_owned(), BanAction::Drop)]);
        if let Some(given) = &self.actions {
            actions.clear();
            for (kind, what) in given {
                if kind.is_empty() || kind.len() > 64 || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(refuse(
                        &k("actions"),
                        format!("{}: not a decision type", crate::source::input::quote(kind)),
                    ));
                }
                match what.as_str() {
                    "drop" => {
                        actions.insert(kind.to_ascii_lowercase(), BanAction::Drop);
                    }
                    "reject" => {
                        actions.insert(kind.to_ascii_lowercase(), BanAction::Reject);
                    }
                    "ignore" => {}
                    other => {
                        return Err(refuse(
                            &k(&format!("actions.{kind}")),
                            format!("{}: use drop, reject or ignore", crate::source::input::quote(other)),
                        ))
                    }
                }
            }
        }
        let tls = Tls { ca_cert: self.ca_cert.clone(), cert: self.cert.clone(), key: self.key.clone() };
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(refuse(&k("cert"), "a client certificate needs its key: give both cert and key"));
        }
        for (name, path) in [("ca_cert", &tls.ca_cert), ("cert", &tls.cert), ("key", &tls.key)] {
            if let Some(p) = path {
                std::fs::metadata(p).map_err(|e| refuse(&k(name), format!("{}: {e}", p.display())))?;
            }
        }
        if (tls.ca_cert.is_some() || tls.cert.is_some()) && !url.starts_with("https://") {
            return Err(refuse(&k("lapi_url"), "certificates are given: use an https:// URL"));
        }
        let opts = CrowdsecOptions {
            lapi_url: url.to_owned(),
            api_key,
            update_frequency,
            full_pull_every,
            scopes,
            origins: self.origins.clone(),
            scenarios_containing: self.scenarios_containing.clone(),
            scenarios_not_containing: self.scenarios_not_containing.clone(),
            actions,
            tls,
        };
        // The certificates and key read as the daemon will read them.
        client::agent(&opts, key_prefix)?;
        Ok(opts)
    }
}

fn check_key(key: &str) -> Result<ApiKey, String> {
    let key = key.trim();
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("an API key is 1 to {MAX_KEY_BYTES} printable ASCII characters"));
    }
    Ok(ApiKey(key.to_owned()))
}

fn read_key(path: &Path) -> Result<ApiKey, String> {
    let text = crate::source::input::read_text(path, MAX_KEY_BYTES as u64 + 2).map_err(|e| e.to_string())?;
    check_key(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// What a decision bans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Prefix(Prefix),
    /// An ISO 3166 code, upper case.
    Country([u8; 2]),
    As(crate::source::asn::Asn),
}

/// A decision of the stream, checked and ready to enforce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: u64,
    pub target: Target,
    /// The ban origin (`crowdsec:cscli`).
    pub origin: Arc<str>,
    /// The scenario, the bans' reason.
    pub scenario: Arc<str>,
    /// Nanoseconds from the pull to its end.
    pub lasts_ns: u64,
    pub action: BanAction,
}

/// Why a decision of the stream is not enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    /// Not a decision blocker can read (counted, and logged).
    Malformed,
    /// A scope not enforced (`scopes`).
    Scope,
    /// A type whose action is ignore.
    Type,
    /// Left out by `origins` or the scenario filters.
    Filtered,
    /// Its duration has run out.
    Expired,
    /// A country the region data does not know.
    UnknownCountry,
    /// An AS number the ASN data has no prefix for.
    UnknownAsn,
}

impl Skip {
    pub fn name(self) -> &'static str {
        match self {
            Skip::Malformed => "malformed",
            Skip::Scope => "scope",
            Skip::Type => "type",
            Skip::Filtered => "filtered",
            Skip::Expired => "expired",
            Skip::UnknownCountry => "unknown_country",
            Skip::UnknownAsn => "unknown_asn",
        }
    }
}

/// Reads a decision's target: an address (a `/32` or `/128` suffix, and
/// IPv4-mapped IPv6, allowed), a range (host bits set are cleared, as the LAPI
/// itself reads them), a country code or an AS number (`4134` or `AS4134`).
pub fn parse_target(scope: Scope, value: &str) -> Result<Target, String> {
    let v = value.trim();
    match scope {
        Scope::Ip => {
            let p = crate::net::parse_prefix(v).map_err(|e| e.to_string())?;
            if p.len != p.family.bits() {
                return Err("an Ip decision with a range: use the Range scope".into());
            }
            Ok(Target::Prefix(p))
        }
        Scope::Range => match crate::net::parse_prefix(v) {
            Ok(p) => Ok(Target::Prefix(p)),
            Err(crate::net::LineError::HostBitsSet { suggestion }) => {
                crate::net::parse_prefix(&suggestion).map(Target::Prefix).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        },
        Scope::Country => {
            let b = v.as_bytes();
            if b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic) {
                Ok(Target::Country([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]))
            } else {
                Err("not a two-letter country code".into())
            }
        }
        Scope::As => v.parse().map(Target::As),
    }
}

/// Turns what the stream sent into decisions, with the options' filters;
/// origin and scenario strings are shared between decisions.
pub struct Normalizer {
    opts: Arc<CrowdsecOptions>,
    origins: std::collections::HashMap<String, Arc<str>>,
    scenarios: std::collections::HashMap<String, Arc<str>>,
}

impl Normalizer {
    pub fn new(opts: Arc<CrowdsecOptions>) -> Self {
        Normalizer { opts, origins: Default::default(), scenarios: Default::default() }
    }

    /// The ban origin of a decision's origin: `crowdsec:` and its letters.
    fn origin(&mut self, given: &str) -> Arc<str> {
        if let Some(o) = self.origins.get(given) {
            return o.clone();
        }
        let clean: String = given
            .chars()
            .take(32)
            .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
            .collect();
        let name: Arc<str> = if self.origins.len() >= MAX_FEED_ORIGINS || clean.is_empty() {
            Arc::from(format!("{ORIGIN_PREFIX}other"))
        } else {
            Arc::from(format!("{ORIGIN_PREFIX}{clean}"))
        };
        if self.origins.len() < MAX_FEED_ORIGINS {
            self.origins.insert(given.to_owned(), name.clone());
        }
        name
    }

    fn scenario(&mut self, given: &str) -> Arc<str> {
        if let Some(s) = self.scenarios.get(given) {
            return s.clone();
        }
        let clean = super::clean_reason(&given.chars().take(200).collect::<String>()).unwrap_or_default();
        let s: Arc<str> = Arc::from(clean);
        if self.scenarios.len() < 4096 {
            self.scenarios.insert(given.to_owned(), s.clone());
        }
        s
    }

    /// The id of a deleted decision.
    pub fn deleted(&self, raw: &stream::RawDecision) -> Result<u64, String> {
        id_of(raw)
    }

    /// A decision of `new`, or why it is skipped (with what is wrong, when
    /// it is malformed).
    pub fn new_decision(&mut self, raw: &stream::RawDecision) -> Result<Decision, (Skip, String)> {
        let bad = |why: String| (Skip::Malformed, why);
        if raw.not_an_object {
            return Err(bad("not an object".into()));
        }
        let id = id_of(raw).map_err(bad)?;
        let scope_text = raw.scope.as_deref().ok_or_else(|| bad(format!("id {id}: no scope")))?;
        let Some(scope) = Scope::parse(scope_text) else {
            // AS, Username, ...: scopes blocker does not enforce.
            return Err((Skip::Scope, String::new()));
        };
        if !self.opts.scopes.contains(&scope) {
            return Err((Skip::Scope, String::new()));
        }
        let kind = raw.kind.as_deref().ok_or_else(|| bad(format!("id {id}: no type")))?;
        let Some(&action) = self.opts.actions.get(&kind.to_ascii_lowercase()) else {
            return Err((Skip::Type, String::new()));
        };
        let origin = raw.origin.as_deref().unwrap_or("");
        let scenario = raw.scenario.as_deref().unwrap_or("");
        let o = &self.opts;
        if (!o.origins.is_empty() && !o.origins.iter().any(|x| x.eq_ignore_ascii_case(origin)))
            || (!o.scenarios_containing.is_empty()
                && !o.scenarios_containing.iter().any(|x| scenario.contains(x.as_str())))
            || o.scenarios_not_containing.iter().any(|x| scenario.contains(x.as_str()))
        {
            return Err((Skip::Filtered, String::new()));
        }
        let value = raw.value.as_deref().ok_or_else(|| bad(format!("id {id}: no value")))?;
        let target = parse_target(scope, value)
            .map_err(|e| bad(format!("id {id}: {} {}: {e}", scope.name(), crate::source::input::quote(value))))?;
        let duration = raw.duration.as_deref().ok_or_else(|| bad(format!("id {id}: no duration")))?;
        let ns = stream::go_duration_ns(duration).ok_or_else(|| {
            bad(format!("id {id}: duration {}: not a Go duration", crate::source::input::quote(duration)))
        })?;
        if ns <= 0 {
            return Err((Skip::Expired, String::new()));
        }
        let lasts_ns = u64::try_from(ns).unwrap_or(u64::MAX).min(super::MAX_BAN.as_nanos() as u64);
        Ok(Decision { id, target, origin: self.origin(origin), scenario: self.scenario(scenario), lasts_ns, action })
    }
}

fn id_of(raw: &stream::RawDecision) -> Result<u64, String> {
    let id = raw.id.as_deref().ok_or("no id")?;
    id.parse().map_err(|_| format!("id {}: not a decision id", crate::source::input::quote(id)))
}

#[cfg(test)]
mod tests {
    use super::{stream::RawDecision, *};
    use crate::source::asn::Asn;

    fn opts() -> CrowdsecOptions {
        CrowdsecSection {
            lapi_url: Some("http://127.0.0.1:8080/".into()),
            api_key: Some("k".into()),
            ..Default::default()
        }
        .check("crowdsec.")
        .unwrap()
    }

    fn raw(scope: &str, value: &str, duration: &str) -> RawDecision {
        RawDecision {
            id: Some("7".into()),
            scope: Some(scope.into()),
            value: Some(value.into()),
            kind: Some("ban".into()),
            duration: Some(duration.into()),
            origin: Some("cscli".into()),
            scenario: Some("manual".into()),
            not_an_object: false,
        }
    }

    #[test]
    fn decisions_read_as_the_lapi_writes_them() {
        let mut n = Normalizer::new(Arc::new(opts()));
        let p = |t: &str| Target::Prefix(crate::net::parse_prefix(t).unwrap());
        let d = n.new_decision(&raw("Ip", "192.0.2.1", "4h")).unwrap();
        assert_eq!((d.id, &d.target, &*d.origin), (7, &p("192.0.2.1"), "crowdsec:cscli"));
        assert_eq!(d.lasts_ns, 4 * 3600 * 1_000_000_000);
        // Case-varying scopes, /32 suffixes, IPv4-mapped values, host bits.
        assert_eq!(n.new_decision(&raw("ip", "192.0.2.1/32", "1s")).unwrap().target, p("192.0.2.1"));
        assert_eq!(n.new_decision(&raw("IP", "::ffff:192.0.2.1", "1s")).unwrap().target, p("192.0.2.1"));
        assert_eq!(n.new_decision(&raw("range", "198.51.100.77/24", "1s")).unwrap().target, p("198.51.100.0/24"));
        assert_eq!(n.new_decision(&raw("Country", "cn", "1s")).unwrap().target, Target::Country(*b"CN"));
        assert_eq!(n.new_decision(&raw("AS", "AS4134", "1s")).unwrap().target, Target::As(Asn(4134)));
        assert_eq!(n.new_decision(&raw("as", "4134", "1s")).unwrap().target, Target::As(Asn(4134)));
        let mut skip = |r: RawDecision| n.new_decision(&r).unwrap_err().0;
        assert_eq!(skip(raw("AS", "Chinanet", "1h")), Skip::Malformed);
        assert_eq!(skip(raw("Username", "root", "1h")), Skip::Scope);
        assert_eq!(skip(raw("Ip", "192.0.2.1", "-2.5s")), Skip::Expired);
        assert_eq!(skip(raw("Ip", "192.0.2.0/24", "1h")), Skip::Malformed);
        assert_eq!(skip(raw("Ip", "nonsense", "1h")), Skip::Malformed);
        assert_eq!(skip(raw("Ip", "192.0.2.1", "forever")), Skip::Malformed);
        assert_eq!(skip(RawDecision { kind: Some("captcha".into()), ..raw("Ip", "192.0.2.1", "1h") }), Skip::Type);
        assert_eq!(skip(RawDecision { id: None, ..raw("Ip", "192.0.2.1", "1h") }), Skip::Malformed);
        assert_eq!(skip(RawDecision { not_an_object: true, ..Default::default() }), Skip::Malformed);
        // Origins are bounded in number and plain.
        for i in 0..40 {
            let d =
                n.new_decision(&RawDecision { origin: Some(format!("o{i} \"x\"")), ..raw("Ip", "192.0.2.1", "1h") });
            crate::decisions::check_origin(&d.unwrap().origin).unwrap();
        }
        assert!(n.origins.len() <= MAX_FEED_ORIGINS);
    }

    #[test]
    fn filters_and_actions() {
        let mut o = opts();
        o.origins = vec!["crowdsec".into()];
        let mut n = Normalizer::new(Arc::new(o));
        assert_eq!(n.new_decision(&raw("Ip", "192.0.2.1", "1h")).unwrap_err().0, Skip::Filtered);
        let o = CrowdsecSection {
            lapi_url: Some("http://127.0.0.1:8080/".into()),
            api_key: Some("k".into()),
            scenarios_not_containing: vec!["manual".into()],
            actions: Some(BTreeMap::from([("captcha".into(), "reject".into()), ("ban".into(), "ignore".into())])),
            ..Default::default()
        }
        .check("crowdsec.")
        .unwrap();
        let mut n = Normalizer::new(Arc::new(o));
        assert_eq!(n.new_decision(&raw("Ip", "192.0.2.1", "1h")).unwrap_err().0, Skip::Type);
        let mut r = raw("Ip", "192.0.2.1", "1h");
        r.kind = Some("Captcha".into());
        assert_eq!(n.new_decision(&r).unwrap_err().0, Skip::Filtered);
        r.scenario = Some("crowdsecurity/ssh-bf".into());
        assert_eq!(n.new_decision(&r).unwrap().action, BanAction::Reject);
    }

    #[test]
    fn options_are_checked() {
        let base = || CrowdsecSection {
            lapi_url: Some("http://127.0.0.1:8080".into()),
            api_key: Some("k".into()),
            ..Default::default()
        };
        let e = |s: CrowdsecSection| s.check("crowdsec.").unwrap_err().to_string();
        assert!(e(CrowdsecSection { lapi_url: None, ..base() }).contains("crowdsec.lapi_url: missing"));
        assert!(e(CrowdsecSection { lapi_url: Some("ftp://x".into()), ..base() }).contains("not an http(s) URL"));
        assert!(e(CrowdsecSection { api_key: None, ..base() }).contains("cscli bouncers add"));
        assert!(e(CrowdsecSection { scopes: Some(vec!["asn".into()]), ..base() }).contains("range, country and as"));
        assert!(e(CrowdsecSection { update_frequency: Some("0s".into()), ..base() }).contains("100ms to 1h"));
        assert!(e(CrowdsecSection { api_key: Some("a b\n".into()), ..base() }).contains("printable"));
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "secret-key\n").unwrap();
        let o = CrowdsecSection { api_key: None, api_key_file: Some(key), ..base() }.check("crowdsec.").unwrap();
        assert_eq!(o.api_key, Some(ApiKey("secret-key".into())));
        assert!(!format!("{o:?}").contains("secret"));
        let missing = dir.path().join("nope");
        assert!(e(CrowdsecSection { api_key: None, api_key_file: Some(missing), ..base() }).contains("api_key_file"));
    }
}

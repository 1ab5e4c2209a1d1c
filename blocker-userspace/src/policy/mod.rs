//! The policy a daemon enforces (lists, countries, region data, scopes), as
//! plain data, and the list specs it yields (`compile::table` turns each
//! scope's into a table). Reading happens before anything is applied, so any
//! error leaves the running tables as they were.

pub mod ports;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use blocker_common::{ACTION_DROP, ACTION_MONITOR, ACTION_PASS, ACTION_REJECT};

use self::ports::Ports;
use crate::{
    net::{complement, Family, Prefix},
    source::{
        asn::{db::AsnDb, Asn, AsnSource},
        cidr_list::{parse_list, read_list, ListError, ListSource},
        fetch::{CheckError, FetchError, FetchOptions, Fetched, ObtainError, UrlAccess},
        region::{db::RegionDb, load_all, RegionError, RegionSource},
        spec::Refresh,
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Allow list: an exception that wins over deny lists.
    Pass,
    Drop,
    /// Counted as a would-be drop, then passed.
    Monitor,
    /// Dropped and answered (TCP RST, ICMP unreachable), within the reject rate.
    Reject,
}

impl Action {
    pub const fn code(self) -> u32 {
        match self {
            Action::Pass => ACTION_PASS,
            Action::Drop => ACTION_DROP,
            Action::Monitor => ACTION_MONITOR,
            Action::Reject => ACTION_REJECT,
        }
    }
    pub const fn from_code(code: u32) -> Option<Action> {
        match code {
            ACTION_PASS => Some(Action::Pass),
            ACTION_DROP => Some(Action::Drop),
            ACTION_MONITOR => Some(Action::Monitor),
            ACTION_REJECT => Some(Action::Reject),
            _ => None,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Action::Pass => "allow",
            Action::Drop => "drop",
            Action::Monitor => "monitor",
            Action::Reject => "reject",
        }
    }
}

/// What a list is for; decides its action and its precedence (see the
/// `compile::table` module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Lockout protection: management networks, loopback, link-local, the SSH
    /// client of the operator who started the daemon. Never dropped.
    NeverBlock,
    /// `--allow FILE`: exceptions that pass even inside denied ranges.
    Exception,
    /// `--deny FILE`, `--deny-country`, `--deny-asn`.
    Deny,
    /// `--reject FILE`, `--reject-country`, `--reject-asn`: as deny, and answered.
    Reject,
    /// Allowlist mode: everything outside the allowed countries and networks.
    OutsideAllowed,
    /// `--monitor-list FILE`: counted as would-be drops, passed.
    Monitor,
    /// `--allow-country`, `--allow-only-asn`: passed, unless a list above says otherwise.
    AllowedRegion,
}

impl Role {
    /// The `ListInfo` flags of a list of this role: never-block ranges and
    /// allow lists win over bans; the allowed countries of an allowlist do not.
    pub const fn list_flags(self) -> u32 {
        match self {
            Role::NeverBlock => blocker_common::LIST_SHIELDS_BANS | blocker_common::LIST_NEVER_BLOCK,
            Role::Exception => blocker_common::LIST_SHIELDS_BANS,
            _ => 0,
        }
    }

    pub const fn action(self) -> Action {
        match self {
            Role::NeverBlock | Role::Exception | Role::AllowedRegion => Action::Pass,
            Role::Deny | Role::OutsideAllowed => Action::Drop,
            Role::Reject => Action::Reject,
            Role::Monitor => Action::Monitor,
        }
    }
}

/// One input list: a name (unique), its role and its prefixes.
#[derive(Clone, Debug)]
pub struct ListSpec {
    pub name: String,
    pub role: Role,
    pub prefixes: Vec<Prefix>,
}

/// Why a policy cannot become a table. Nothing is applied when it is refused.
/// A list's name is kept whole in the pinned maps, up to `LIST_NAME_LEN` bytes.
fn check_name_length(name: &str) -> Result<(), PolicyError> {
    if name.len() > blocker_common::LIST_NAME_LEN {
        return Err(PolicyError::NameTooLong {
            name: crate::source::input::quote(name),
            len: name.len(),
            max: blocker_common::LIST_NAME_LEN,
        });
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("list name {name:?} is given twice; name each list uniquely with NAME=FILE")]
    DuplicateName { name: String },
    #[error("list {name} is named by {len} bytes, more than the {max} a name may have: name it with NAME=FILE")]
    NameTooLong { name: String, len: usize, max: usize },
    #[error(
        "allowlist mode (--allow-country, --allow-only-asn) drops every source outside the allowed countries and \
         networks, including your management networks: give them with --never-block CIDR,... (or pass \
         --confirm-allowlist-without-never-block if you have console access)"
    )]
    AllowlistWithoutNeverBlock,
    #[error("country {code} is both denied and allowed")]
    DeniedAndAllowed { code: String },
    #[error("country {code} is both denied and rejected: name it once")]
    DeniedAndRejected { code: String },
    #[error("{asn} is both denied and allowed")]
    AsnDeniedAndAllowed { asn: Asn },
    #[error("{asn} is both denied and rejected: name it once")]
    AsnDeniedAndRejected { asn: Asn },
    #[error(transparent)]
    UnknownAsn(#[from] crate::source::asn::db::UnknownAsn),
    #[error("--never-block {text}: {reason}")]
    BadNeverBlock { text: String, reason: crate::net::LineError },
    #[error(transparent)]
    UnknownCountry(#[from] crate::source::region::db::UnknownCountry),
    /// A list that could not be read or parsed (it names its file or URL).
    #[error(transparent)]
    List(#[from] ListError),
    /// A list URL that could not be fetched, with no copy to use.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Region data that could not be read (it names the source).
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error("scope {name}: {reason}")]
    Scope { name: String, reason: String },
}

/// What a daemon enforces: lists, countries, region data, never-block ranges,
/// and how URL sources are fetched.
#[derive(Clone, Debug)]
pub struct Policy {
    /// CIDR list whose sources are dropped: FILE or NAME=FILE.
    pub deny: Vec<ListSource>,
    /// CIDR list of exceptions that pass even inside denied ranges or countries.
    pub allow: Vec<ListSource>,
    /// CIDR list counted as would-be drops but passed.
    pub monitor_list: Vec<ListSource>,
    /// Countries whose addresses are dropped (ISO codes, comma-separated).
    pub deny_country: Vec<String>,
    /// Allowlist mode: only these countries pass; every other source is dropped
    /// (allow exceptions still pass, deny lists still drop).
    pub allow_country: Vec<String>,
    /// CIDR lists whose sources are rejected: dropped, and answered.
    pub reject: Vec<ListSource>,
    /// Countries whose addresses are rejected.
    pub reject_country: Vec<String>,
    /// Autonomous systems whose addresses are dropped (`--deny-asn AS4134,AS4837`).
    pub deny_asn: Vec<Asn>,
    /// Autonomous systems whose addresses are rejected.
    pub reject_asn: Vec<Asn>,
    /// Autonomous systems whose addresses pass even inside denied ranges,
    /// countries or systems (exceptions, like `--allow`).
    pub allow_asn: Vec<Asn>,
    /// Allowlist mode by network: only these systems (and the allowed countries)
    /// pass; every other source is dropped.
    pub allow_only_asn: Vec<Asn>,
    /// Where ASN data comes from instead of the bundled snapshot:
    /// `[optional:][refresh=DURATION:][mmdb:|csv:|tsv:]PATH|URL`. Repeat to merge several.
    pub asn_source: Vec<AsnSource>,
    /// Where country prefixes come from instead of the bundled snapshot:
    /// `[optional:][refresh=DURATION:][rir:|csv:|mmdb:|cidr-dir:]PATH|URL` (format detected when not
    /// given). Repeat to merge several.
    pub country_source: Vec<RegionSource>,
    /// Ranges never dropped, whatever the lists say (management networks). Loopback,
    /// link-local and the SSH client address of the session that starts blocker
    /// are added unless --no-default-never-block.
    pub never_block: Vec<String>,
    /// Do not add loopback, link-local and the SSH client to the never-block ranges.
    pub no_default_never_block: bool,
    /// Allowlist mode (--allow-country) drops everything else, including a remote
    /// operator: it refuses to start without --never-block unless this is given.
    pub confirm_allowlist_without_never_block: bool,
    /// How often the daemon fetches URL sources again ("off", or like 30m, 6h, 1d);
    /// a source can set its own with a `refresh=DURATION:` prefix. Content that did
    /// not change triggers no reload.
    pub url_refresh: Refresh,
    /// Where downloaded lists and databases are cached (last good copies).
    pub cache_dir: PathBuf,
    /// Apply fetched URL content even when it is empty or lost more than half of
    /// its prefixes (by default it is held back, and the last good copy used,
    /// until `blocker reload --accept-shrink`).
    pub accept_shrink: bool,
    /// The traffic the lists above apply to (none given: every packet no scope
    /// takes).
    pub ports: Ports,
    /// Scopes, tried before the lists above in this order: the first whose
    /// ports take a packet judges it with its own lists.
    pub scopes: Vec<Scope>,
    /// The outbound direction: lists and countries of destinations this host's
    /// outgoing packets may not reach (`[outbound]`, `--deny-outbound`, ...),
    /// judged by the tc egress program. Its name is `OUTBOUND_SCOPE`; it has no
    /// ports (every outgoing packet) and no allowlist countries.
    pub outbound: Scope,
}

/// The name of the outbound lists as a scope (no `[[scope]]` may take it).
pub const OUTBOUND_SCOPE: &str = blocker_common::OUTBOUND_SCOPE;

/// What follows a list's name in text: nothing outside every scope,
/// " (outbound)" for the outbound lists, else " (scope NAME)".
pub fn scope_suffix(scope: &str) -> String {
    match scope {
        DEFAULT_SCOPE => String::new(),
        OUTBOUND_SCOPE => " (outbound)".into(),
        other => format!(" (scope {other})"),
    }
}

/// The direction of a scope's lists: "outbound" (judged by destination, tc
/// egress) or "inbound" (by source, XDP).
pub fn direction_of(scope: &str) -> &'static str {
    if scope == OUTBOUND_SCOPE {
        "outbound"
    } else {
        "inbound"
    }
}

/// The name of the lists above (`[policy]`, the command line) as a scope.
pub const DEFAULT_SCOPE: &str = "default";

/// A part of the policy for chosen traffic (`[[scope]]` in the config file):
/// its own lists and countries, for the packets its ports take. Never-block
/// ranges, region data and URL settings are the policy's, shared by every scope.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub name: String,
    pub ports: Ports,
    pub deny: Vec<ListSource>,
    pub reject: Vec<ListSource>,
    pub reject_country: Vec<String>,
    pub allow: Vec<ListSource>,
    pub monitor_list: Vec<ListSource>,
    pub deny_country: Vec<String>,
    pub allow_country: Vec<String>,
    pub deny_asn: Vec<Asn>,
    pub reject_asn: Vec<Asn>,
    pub allow_asn: Vec<Asn>,
    pub allow_only_asn: Vec<Asn>,
}

/// The lists and countries of one scope (the policy's own, or a `Scope`'s).
#[derive(Clone, Copy)]
struct Rules<'a> {
    deny: &'a [ListSource],
    reject: &'a [ListSource],
    reject_country: &'a [String],
    allow: &'a [ListSource],
    monitor_list: &'a [ListSource],
    deny_country: &'a [String],
    allow_country: &'a [String],
    deny_asn: &'a [Asn],
    reject_asn: &'a [Asn],
    allow_asn: &'a [Asn],
    allow_only_asn: &'a [Asn],
}

impl Rules<'_> {
    fn lists(&self) -> impl Iterator<Item = &ListSource> {
        self.deny.iter().chain(self.reject).chain(self.allow).chain(self.monitor_list)
    }

    fn uses_countries(&self) -> bool {
        !self.deny_country.is_empty() || !self.allow_country.is_empty() || !self.reject_country.is_empty()
    }

    fn uses_asns(&self) -> bool {
        !self.deny_asn.is_empty()
            || !self.reject_asn.is_empty()
            || !self.allow_asn.is_empty()
            || !self.allow_only_asn.is_empty()
    }

    /// Whether only some sources pass (allowed countries or systems).
    fn is_allowlist(&self) -> bool {
        !self.allow_country.is_empty() || !self.allow_only_asn.is_empty()
    }

    fn has_rules(&self) -> bool {
        self.lists().next().is_some() || self.uses_countries() || self.uses_asns()
    }
}

impl Scope {
    fn rules(&self) -> Rules<'_> {
        Rules {
            deny: &self.deny,
            reject: &self.reject,
            reject_country: &self.reject_country,
            allow: &self.allow,
            monitor_list: &self.monitor_list,
            deny_country: &self.deny_country,
            allow_country: &self.allow_country,
            deny_asn: &self.deny_asn,
            reject_asn: &self.reject_asn,
            allow_asn: &self.allow_asn,
            allow_only_asn: &self.allow_only_asn,
        }
    }
}

/// A scope's lists, read: what `compile::table` compiles into its table.
#[derive(Clone, Debug)]
pub struct ScopeSpecs {
    pub name: String,
    pub ports: Ports,
    pub lists: Vec<ListSpec>,
    /// The outbound lists (judged by destination, on tc egress).
    pub outbound: bool,
}

/// A scope name: 1 to `blocker_common::SCOPE_NAME_LEN` letters, digits, `-`,
/// `_` or `.`, and not `default` (the name of the lists outside every scope).
pub fn check_scope_name(name: &str) -> Result<(), String> {
    let quoted = crate::source::input::quote(name);
    if name.is_empty() || name.len() > blocker_common::SCOPE_NAME_LEN {
        return Err(format!("scope name {quoted}: 1 to {} bytes", blocker_common::SCOPE_NAME_LEN));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(format!("scope name {quoted}: letters, digits, '-', '_' and '.' only"));
    }
    if name == DEFAULT_SCOPE {
        return Err(format!(
            "scope name {quoted} is the name of the lists outside every scope ([policy]); choose another"
        ));
    }
    if name == OUTBOUND_SCOPE {
        return Err(format!("scope name {quoted} is the name of the outbound lists ([outbound]); choose another"));
    }
    Ok(())
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            deny: vec![],
            allow: vec![],
            monitor_list: vec![],
            deny_country: vec![],
            allow_country: vec![],
            reject: vec![],
            reject_country: vec![],
            deny_asn: vec![],
            reject_asn: vec![],
            allow_asn: vec![],
            allow_only_asn: vec![],
            asn_source: vec![],
            country_source: vec![],
            never_block: vec![],
            no_default_never_block: false,
            confirm_allowlist_without_never_block: false,
            url_refresh: DEFAULT_URL_REFRESH,
            cache_dir: crate::source::fetch::DEFAULT_CACHE_DIR.into(),
            accept_shrink: false,
            ports: Ports::default(),
            scopes: vec![],
            outbound: Scope { name: OUTBOUND_SCOPE.into(), ..Scope::default() },
        }
    }
}

/// Reads a list from its file, or from its URL through the cache (fetched first
/// when `access` allows).
pub fn read_source(
    source: &ListSource,
    cache_dir: &Path,
    access: UrlAccess,
    opts: &FetchOptions,
) -> Result<Vec<Prefix>, PolicyError> {
    match source.url() {
        Some(url) => {
            let parse = |path: &Path| read_url_list(url, path);
            let (prefixes, _) = crate::source::fetch::obtain_parsed(url, cache_dir, access, opts, parse, Vec::len)
                .map_err(|e| match e {
                    ObtainError::Fetch(e) => PolicyError::Fetch(e),
                    ObtainError::Parse(e) => PolicyError::List(e),
                })?;
            Ok(prefixes)
        }
        None => Ok(read_list(&source.path)?),
    }
}

/// A downloaded list at `path`, its errors named by its URL.
fn read_url_list(url: &str, path: &Path) -> Result<Vec<Prefix>, ListError> {
    let text = crate::source::input::read_text(path, crate::source::input::MAX_SOURCE_BYTES)?;
    parse_list(Path::new(url), &text)
}

/// One URL source of a policy, ready to be fetched off the daemon's task.
#[derive(Clone, Debug)]
pub struct UrlJob {
    pub url: String,
    /// An `optional:` source: skipped while it has no copy.
    pub optional: bool,
    source: UrlSourceKind,
    cache_dir: PathBuf,
    opts: FetchOptions,
}

#[derive(Clone, Debug)]
enum UrlSourceKind {
    List,
    Region(RegionSource),
    Asn(AsnSource),
}

impl UrlJob {
    /// Fetches the URL into the cache, validated as its kind of source.
    pub fn fetch(&self) -> Result<Fetched, FetchError> {
        match &self.source {
            UrlSourceKind::List => {
                let check = |path: &Path| -> Result<usize, CheckError> { Ok(read_url_list(&self.url, path)?.len()) };
                crate::source::fetch::fetch_with(&self.url, &self.cache_dir, &check, &self.opts)
            }
            UrlSourceKind::Region(source) => crate::source::region::fetch(source, &self.cache_dir, &self.opts),
            UrlSourceKind::Asn(source) => crate::source::asn::fetch(source, &self.cache_dir, &self.opts),
        }
    }
}

impl Policy {
    /// Local files and directories the policy reads.
    pub fn local_sources(&self) -> Vec<PathBuf> {
        let policy = self;
        let mut out: Vec<PathBuf> = policy.lists().filter(|s| s.url().is_none()).map(|s| s.path.clone()).collect();
        out.extend(policy.country_source.iter().filter(|s| !s.is_url()).map(|s| PathBuf::from(&s.location)));
        out.extend(policy.asn_source.iter().filter(|s| !s.is_url()).map(|s| PathBuf::from(&s.location)));
        out
    }

    /// URL sources with their refresh interval (the source's own, or the policy default).
    pub fn url_sources(&self) -> Vec<(String, Refresh)> {
        let policy = self;
        let mut out: Vec<(String, Refresh)> = policy
            .lists()
            .filter_map(|s| s.url().map(|u| (u.to_owned(), s.refresh.unwrap_or(policy.url_refresh))))
            .collect();
        out.extend(
            policy
                .country_source
                .iter()
                .filter(|s| s.is_url())
                .map(|s| (s.location.clone(), s.refresh.unwrap_or(policy.url_refresh))),
        );
        out.extend(
            policy
                .asn_source
                .iter()
                .filter(|s| s.is_url())
                .map(|s| (s.location.clone(), s.refresh.unwrap_or(policy.url_refresh))),
        );
        out
    }
}

pub const DEFAULT_URL_REFRESH: Refresh = Refresh::Every(std::time::Duration::from_secs(6 * 3600));

pub const OUTSIDE_ALLOWED: &str = "outside-allowed-countries";
/// The allowlist's drops when it names systems only, and when it names both.
pub const OUTSIDE_ALLOWED_ASNS: &str = "outside-allowed-asns";
pub const OUTSIDE_ALLOWED_BOTH: &str = "outside-allowed-countries-and-asns";

/// More systems of one role than this in a scope are counted together, as one
/// list (`asns:deny`, ...): a table has at most `MAX_LISTS` counters.
pub const ASN_LISTS_PER_ROLE: usize = 200;
pub const NEVER_BLOCK: &str = "never-block";

/// Loopback and link-local, both families.
const DEFAULT_NEVER_BLOCK: [&str; 4] = ["127.0.0.0/8", "169.254.0.0/16", "::1/128", "fe80::/10"];

/// The client address of the SSH session this process runs in, if any
/// (`SSH_CONNECTION="client port server port"`).
pub fn ssh_client() -> Option<Prefix> {
    let conn = std::env::var("SSH_CONNECTION").or_else(|_| std::env::var("SSH_CLIENT")).ok()?;
    let addr = conn.split_whitespace().next()?;
    crate::net::parse_prefix(addr).ok()
}

impl Policy {
    /// The policy's own lists and countries (`[policy]`, the command line).
    fn default_rules(&self) -> Rules<'_> {
        Rules {
            deny: &self.deny,
            reject: &self.reject,
            reject_country: &self.reject_country,
            allow: &self.allow,
            monitor_list: &self.monitor_list,
            deny_country: &self.deny_country,
            allow_country: &self.allow_country,
            deny_asn: &self.deny_asn,
            reject_asn: &self.reject_asn,
            allow_asn: &self.allow_asn,
            allow_only_asn: &self.allow_only_asn,
        }
    }

    /// Every scope's rules: the scopes in order, then the policy's own, then
    /// the outbound lists.
    fn all_rules(&self) -> impl Iterator<Item = Rules<'_>> {
        self.scopes.iter().map(Scope::rules).chain([self.default_rules(), self.outbound.rules()])
    }

    /// Whether the policy judges outgoing packets (the tc egress program runs).
    pub fn has_outbound(&self) -> bool {
        self.outbound.rules().has_rules()
    }

    pub fn uses_countries(&self) -> bool {
        self.all_rules().any(|r| r.uses_countries())
    }

    /// Whether any scope names autonomous systems.
    pub fn uses_asns(&self) -> bool {
        self.all_rules().any(|r| r.uses_asns())
    }

    /// The ASN data this policy refers to: the given sources, or the bundled snapshot.
    pub fn asn_db(&self) -> Result<AsnDb, RegionError> {
        self.asn_db_with(UrlAccess::Fetch)
    }

    /// `asn_db` from cached copies of URL sources only.
    pub fn asn_db_cached(&self) -> Result<AsnDb, RegionError> {
        self.asn_db_with(UrlAccess::CachedOnly)
    }

    fn asn_db_with(&self, access: UrlAccess) -> Result<AsnDb, RegionError> {
        crate::source::asn::load_all(&self.asn_source, &self.cache_dir, access, &self.fetch_options())
    }

    /// Every CIDR list source of every scope: deny, reject, allow, then monitor
    /// lists; the outbound lists last.
    pub fn lists(&self) -> impl Iterator<Item = &ListSource> {
        fn of(s: &Scope) -> impl Iterator<Item = &ListSource> {
            s.deny.iter().chain(&s.reject).chain(&s.allow).chain(&s.monitor_list)
        }
        let scoped = self.scopes.iter().flat_map(of);
        scoped
            .chain(self.deny.iter().chain(&self.reject).chain(&self.allow).chain(&self.monitor_list))
            .chain(of(&self.outbound))
    }

    /// Whether anything is listed or a country named (never-block ranges alone
    /// block nothing).
    pub fn has_rules(&self) -> bool {
        self.all_rules().any(|r| r.has_rules())
    }

    /// Whether the policy names anything at all: lists, countries, systems,
    /// data sources, ports, or addresses never blocked.
    pub fn names_anything(&self) -> bool {
        self.has_rules()
            || self.has_scopes()
            || !self.country_source.is_empty()
            || !self.asn_source.is_empty()
            || !self.never_block.is_empty()
    }

    /// Whether any part of the policy is limited to some traffic.
    pub fn has_scopes(&self) -> bool {
        !self.scopes.is_empty() || !self.ports.is_everything()
    }

    /// The region data this policy refers to: the given sources, or the bundled snapshot.
    pub fn region_db(&self) -> Result<RegionDb, RegionError> {
        self.region_db_with(UrlAccess::Fetch)
    }

    /// `region_db` from cached copies of URL sources only (the daemon's task
    /// never waits on a server).
    pub fn region_db_cached(&self) -> Result<RegionDb, RegionError> {
        self.region_db_with(UrlAccess::CachedOnly)
    }

    fn region_db_with(&self, access: UrlAccess) -> Result<RegionDb, RegionError> {
        if self.country_source.is_empty() {
            return Ok(RegionDb::bundled()?);
        }
        load_all(&self.country_source, &self.cache_dir, access, &self.fetch_options())
    }

    pub fn fetch_options(&self) -> FetchOptions {
        FetchOptions { accept_shrink: self.accept_shrink, ..FetchOptions::default() }
    }

    /// Every URL source, as a job that fetches it.
    pub fn url_jobs(&self) -> Vec<UrlJob> {
        let job = |url: &str, optional: bool, source| UrlJob {
            url: url.to_owned(),
            optional,
            source,
            cache_dir: self.cache_dir.clone(),
            opts: self.fetch_options(),
        };
        let mut out: Vec<UrlJob> =
            self.lists().filter_map(|s| s.url().map(|u| job(u, s.optional, UrlSourceKind::List))).collect();
        out.extend(
            self.country_source
                .iter()
                .filter(|s| s.is_url())
                .map(|s| job(&s.location, s.optional, UrlSourceKind::Region(s.clone()))),
        );
        out.extend(
            self.asn_source
                .iter()
                .filter(|s| s.is_url())
                .map(|s| job(&s.location, s.optional, UrlSourceKind::Asn(s.clone()))),
        );
        out
    }

    /// The never-block ranges in force, each with where it comes from.
    pub fn never_block_ranges(&self) -> Result<Vec<(Prefix, &'static str)>, PolicyError> {
        let mut out = Vec::new();
        for text in &self.never_block {
            let p = crate::net::parse_prefix(text.trim())
                .map_err(|reason| PolicyError::BadNeverBlock { text: crate::source::input::quote(text), reason })?;
            out.push((p, "configured"));
        }
        if !self.no_default_never_block {
            for text in DEFAULT_NEVER_BLOCK {
                out.push((crate::net::parse_prefix(text).expect("valid"), "loopback/link-local"));
            }
            if let Some(p) = ssh_client() {
                out.push((p, "SSH client of this session"));
            }
        }
        Ok(out)
    }

    /// The lists of the policy's own scope (`[policy]`), each with its role:
    /// its files and URLs read (URL sources as `access` says), its countries
    /// resolved. Any error aborts before anything is applied.
    pub fn list_specs(&self, access: UrlAccess) -> Result<Vec<ListSpec>, PolicyError> {
        let never = self.never_block_list()?;
        let data = self.data(access)?;
        let specs = self.rules_specs(self.default_rules(), &never, &data, access)?;
        for warning in disabling_never_blocks(&specs) {
            log::warn!("{warning}");
        }
        Ok(specs)
    }

    /// Every scope with its lists read, in the order scopes are tried: the
    /// `[[scope]]`s, then the policy's own lists (when it has any). Scope names
    /// are unique and checked.
    pub fn scope_specs(&self, access: UrlAccess) -> Result<Vec<ScopeSpecs>, PolicyError> {
        let never = self.never_block_list()?;
        let data = self.data(access)?;
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for scope in &self.scopes {
            check_scope_name(&scope.name)
                .map_err(|reason| PolicyError::Scope { name: quote_name(&scope.name), reason })?;
            if !names.insert(scope.name.as_str()) {
                return Err(PolicyError::Scope {
                    name: quote_name(&scope.name),
                    reason: "given twice: name each scope uniquely".into(),
                });
            }
            if scope.ports.is_everything() {
                return Err(PolicyError::Scope {
                    name: quote_name(&scope.name),
                    reason: "no ports: a scope takes the traffic its ports name (e.g. ports = [\"tcp:443\"])".into(),
                });
            }
            let lists = self.rules_specs(scope.rules(), &never, &data, access).map_err(|e| in_scope(&scope.name, e))?;
            out.push(ScopeSpecs { name: scope.name.clone(), ports: scope.ports.clone(), lists, outbound: false });
        }
        // The policy's own lists: every packet no scope takes (or those of its
        // own ports). Without lists of its own and with scopes, such packets pass.
        if self.default_rules().has_rules() || self.scopes.is_empty() {
            let lists = self.rules_specs(self.default_rules(), &never, &data, access)?;
            out.push(ScopeSpecs { name: DEFAULT_SCOPE.into(), ports: self.ports.clone(), lists, outbound: false });
        }
        // The outbound lists: the last table, which only the egress program reads.
        if self.has_outbound() {
            if !self.outbound.allow_country.is_empty() || !self.outbound.allow_only_asn.is_empty() {
                return Err(PolicyError::Scope {
                    name: quote_name(OUTBOUND_SCOPE),
                    reason: "allowlists (countries, systems) are for sources; name the destinations to \
                             refuse (deny_countries, reject_countries, deny_asns, reject_asns)"
                        .into(),
                });
            }
            let lists = self
                .rules_specs(self.outbound.rules(), &never, &data, access)
                .map_err(|e| in_scope(OUTBOUND_SCOPE, e))?;
            out.push(ScopeSpecs { name: OUTBOUND_SCOPE.into(), ports: Ports::default(), lists, outbound: true });
        }
        for scope in &out {
            for warning in disabling_never_blocks(&scope.lists) {
                log::warn!("{warning}");
            }
        }
        Ok(out)
    }

    /// The region and ASN data the scopes name (each loaded only when named).
    fn data(&self, access: UrlAccess) -> Result<PolicyData, PolicyError> {
        Ok(PolicyData {
            regions: self.uses_countries().then(|| self.region_db_with(access)).transpose()?,
            asns: self.uses_asns().then(|| self.asn_db_with(access)).transpose()?,
        })
    }

    /// The never-block ranges as a list (None: there are none).
    fn never_block_list(&self) -> Result<Option<ListSpec>, PolicyError> {
        let never: Vec<Prefix> = self.never_block_ranges()?.into_iter().map(|(p, _)| p).collect();
        Ok((!never.is_empty()).then(|| ListSpec { name: NEVER_BLOCK.into(), role: Role::NeverBlock, prefixes: never }))
    }

    /// One scope's lists: never-block first, then its files and URLs, then its
    /// countries from `db` (present when any scope names countries).
    fn rules_specs(
        &self,
        rules: Rules<'_>,
        never: &Option<ListSpec>,
        data: &PolicyData,
        access: UrlAccess,
    ) -> Result<Vec<ListSpec>, PolicyError> {
        let mut names = HashSet::new();
        let mut specs = Vec::new();
        let mut push = |spec: ListSpec| -> Result<(), PolicyError> {
            check_name_length(&spec.name)?;
            if !names.insert(spec.name.clone()) {
                return Err(PolicyError::DuplicateName { name: spec.name });
            }
            specs.push(spec);
            Ok(())
        };
        if rules.is_allowlist() && self.never_block.is_empty() && !self.confirm_allowlist_without_never_block {
            return Err(PolicyError::AllowlistWithoutNeverBlock);
        }
        if let Some(never) = never {
            push(never.clone())?;
        }
        let files = rules
            .deny
            .iter()
            .map(|s| (s, Role::Deny))
            .chain(rules.reject.iter().map(|s| (s, Role::Reject)))
            .chain(rules.allow.iter().map(|s| (s, Role::Exception)))
            .chain(rules.monitor_list.iter().map(|s| (s, Role::Monitor)));
        for (source, role) in files {
            // Before anything is read or fetched.
            check_name_length(&source.name)?;
            let prefixes = match read_source(source, &self.cache_dir, access, &self.fetch_options()) {
                Ok(p) => p,
                Err(e) if source.optional => {
                    log::warn!("optional list {} skipped: {e:#}", source.name);
                    continue;
                }
                Err(e) => return Err(e),
            };
            push(ListSpec { name: source.name.clone(), role, prefixes })?;
        }
        // The allowlist's passes: the allowed countries, then the allowed systems.
        let mut allowed: Vec<ListSpec> = Vec::new();
        if let (true, Some(db)) = (rules.uses_countries(), data.regions.as_ref()) {
            let codes = |given: &[String]| -> Result<Vec<String>, PolicyError> {
                let mut out: Vec<String> = Vec::new();
                for c in given {
                    let code = db.get(c)?.code.clone();
                    if !out.contains(&code) {
                        out.push(code);
                    }
                }
                Ok(out)
            };
            let deny = codes(rules.deny_country)?;
            let reject = codes(rules.reject_country)?;
            let allow = codes(rules.allow_country)?;
            for code in deny.iter().chain(&reject) {
                if allow.contains(code) {
                    return Err(PolicyError::DeniedAndAllowed { code: code.clone() });
                }
            }
            if let Some(both) = deny.iter().find(|c| reject.contains(c)) {
                return Err(PolicyError::DeniedAndRejected { code: both.clone() });
            }
            for (code, role) in deny.iter().map(|c| (c, Role::Deny)).chain(reject.iter().map(|c| (c, Role::Reject))) {
                push(ListSpec { name: format!("country:{code}"), role, prefixes: db.regions[code].prefixes.clone() })?;
            }
            for code in &allow {
                allowed.push(ListSpec {
                    name: format!("country:{code}"),
                    role: Role::AllowedRegion,
                    prefixes: db.regions[code].prefixes.clone(),
                });
            }
        }
        if let (true, Some(db)) = (rules.uses_asns(), data.asns.as_ref()) {
            let known = |given: &[Asn]| -> Result<Vec<Asn>, PolicyError> {
                let mut out: Vec<Asn> = Vec::new();
                for a in given {
                    db.get(*a)?;
                    if !out.contains(a) {
                        out.push(*a);
                    }
                }
                Ok(out)
            };
            let deny = known(rules.deny_asn)?;
            let reject = known(rules.reject_asn)?;
            let except = known(rules.allow_asn)?;
            let only = known(rules.allow_only_asn)?;
            for a in deny.iter().chain(&reject) {
                if except.contains(a) || only.contains(a) {
                    return Err(PolicyError::AsnDeniedAndAllowed { asn: *a });
                }
            }
            if let Some(both) = deny.iter().find(|a| reject.contains(a)) {
                return Err(PolicyError::AsnDeniedAndRejected { asn: *both });
            }
            for (asns, role, group) in [
                (&deny, Role::Deny, "asns:deny"),
                (&reject, Role::Reject, "asns:reject"),
                (&except, Role::Exception, "asns:allow"),
            ] {
                for spec in asn_lists(db, asns, role, group) {
                    push(spec)?;
                }
            }
            allowed.extend(asn_lists(db, &only, Role::AllowedRegion, "asns:allow-only"));
        }
        if rules.is_allowlist() {
            let passes: Vec<Prefix> = allowed.iter().flat_map(|l| l.prefixes.iter().copied()).collect();
            let mut outside = complement(&passes, Family::V4);
            outside.extend(complement(&passes, Family::V6));
            let name = match (rules.allow_country.is_empty(), rules.allow_only_asn.is_empty()) {
                (false, true) => OUTSIDE_ALLOWED,
                (true, false) => OUTSIDE_ALLOWED_ASNS,
                _ => OUTSIDE_ALLOWED_BOTH,
            };
            push(ListSpec { name: name.into(), role: Role::OutsideAllowed, prefixes: outside })?;
            for spec in allowed {
                push(spec)?;
            }
        }
        Ok(specs)
    }
}

/// The region and ASN data of a policy, each present when a scope names it.
struct PolicyData {
    regions: Option<RegionDb>,
    asns: Option<AsnDb>,
}

/// The lists of systems of one role: one per system (`asn:4134`), or, past
/// `ASN_LISTS_PER_ROLE`, one list of them all named `group`.
fn asn_lists(db: &AsnDb, asns: &[Asn], role: Role, group: &str) -> Vec<ListSpec> {
    let prefixes = |a: &Asn| db.systems[a].prefixes.iter().copied();
    if asns.len() > ASN_LISTS_PER_ROLE {
        let mut all: Vec<Prefix> = asns.iter().flat_map(prefixes).collect();
        all.sort_unstable();
        all.dedup();
        return vec![ListSpec { name: group.into(), role, prefixes: all }];
    }
    asns.iter().map(|a| ListSpec { name: a.list_name(), role, prefixes: prefixes(a).collect() }).collect()
}

fn quote_name(name: &str) -> String {
    crate::source::input::quote(name)
}

/// An error of a scope's lists, named with the scope.
fn in_scope(scope: &str, e: PolicyError) -> PolicyError {
    match e {
        // Errors that name their source already say where they are.
        e @ (PolicyError::List(_) | PolicyError::Fetch(_) | PolicyError::Region(_)) => e,
        e => PolicyError::Scope { name: quote_name(scope), reason: e.to_string() },
    }
}

/// Never-block ranges that switch blocking off: one covering a whole address
/// family, or every prefix of a deny list. Not errors (an operator may mean it
/// for a while), but never silent.
pub fn disabling_never_blocks(specs: &[ListSpec]) -> Vec<String> {
    let Some(never) = specs.iter().find(|s| s.role == Role::NeverBlock) else {
        return Vec::new();
    };
    let mut out: Vec<String> = never
        .prefixes
        .iter()
        .filter(|p| p.len == 0)
        .map(|p| format!("never-block {p} covers every {} address: nothing of it is ever dropped", p.family.name()))
        .collect();
    let covered = |q: &crate::net::Prefix| {
        let (lo, hi) = q.range();
        never.prefixes.iter().any(|n| n.contains(q.family, lo) && n.contains(q.family, hi))
    };
    for list in specs.iter().filter(|s| matches!(s.role, Role::Deny | Role::Reject) && !s.prefixes.is_empty()) {
        if list.prefixes.iter().all(covered) {
            out.push(format!("never-block ranges cover every prefix of deny list {}: it drops nothing", list.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_list_named_past_the_name_limit_is_refused_before_it_is_fetched() {
        let url = format!("https://lists.invalid/{}", "a".repeat(blocker_common::LIST_NAME_LEN));
        let p = Policy { deny: vec![url.parse().unwrap()], no_default_never_block: true, ..Default::default() };
        match crate::compile::table::build_table(&p) {
            Err(e @ PolicyError::NameTooLong { len, max: blocker_common::LIST_NAME_LEN, .. }) => {
                assert_eq!(len, url.len());
                assert!(e.to_string().ends_with("name it with NAME=FILE"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn never_blocks_that_disable_blocking_are_named() {
        let spec = |name: &str, role, prefixes: &[&str]| ListSpec {
            name: name.into(),
            role,
            prefixes: prefixes.iter().map(|p| parse_prefix(p).unwrap()).collect(),
        };
        let specs = vec![
            spec("never", Role::NeverBlock, &["0.0.0.0/0", "2001:db8::/32"]),
            spec("inside", Role::Deny, &["2001:db8:1::/48", "2001:db8:2::1"]),
            spec("partly", Role::Deny, &["2001:db8:1::/48", "2001:db9::/32"]),
        ];
        let w = disabling_never_blocks(&specs);
        assert_eq!(
            w,
            vec![
                "never-block 0.0.0.0/0 covers every IPv4 address: nothing of it is ever dropped".to_string(),
                "never-block ranges cover every prefix of deny list inside: it drops nothing".to_string(),
            ]
        );
        assert!(disabling_never_blocks(&specs[1..]).is_empty());
    }

    use crate::{
        compile::table::{build_table, CompiledTable},
        net::parse_prefix,
    };

    fn write(dir: &std::path::Path, name: &str, text: &str) -> ListSource {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        ListSource { name: name.trim_end_matches(".txt").into(), path, optional: false, refresh: None }
    }

    /// A directory of the test's own, removed when it ends (even by a panic).
    fn tmpdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    /// The policy's meaning, evaluated directly over the raw inputs.
    fn reference(
        p: &Policy,
        files: &HashMap<String, Vec<Prefix>>,
        db: &RegionDb,
        family: Family,
        addr: u128,
    ) -> (Option<String>, Action) {
        let in_list = |ls: &[ListSource]| {
            ls.iter().find(|l| files[&l.name].iter().any(|x| x.contains(family, addr))).map(|l| l.name.clone())
        };
        let in_country = |cs: &[String]| {
            cs.iter()
                .map(|c| db.get(c).unwrap())
                .filter(|r| r.prefixes.iter().any(|x| x.contains(family, addr)))
                // Most specific covering prefix wins between countries, then the first given.
                .max_by_key(|r| {
                    let len = r.prefixes.iter().filter(|x| x.contains(family, addr)).map(|x| x.len).max();
                    (len, std::cmp::Reverse(cs.iter().position(|c| c.eq_ignore_ascii_case(&r.code))))
                })
                .map(|r| format!("country:{}", r.code))
        };
        let never = p.never_block_ranges().unwrap();
        if never.iter().any(|(x, _)| x.contains(family, addr)) {
            return (Some(NEVER_BLOCK.into()), Action::Pass);
        }
        if let Some(l) = in_list(&p.allow) {
            return (Some(l), Action::Pass);
        }
        let deny_file = in_list(&p.deny);
        let deny_country = in_country(&p.deny_country);
        if deny_file.is_some() || deny_country.is_some() {
            return (deny_file.or(deny_country), Action::Drop);
        }
        let allowed = in_country(&p.allow_country);
        if !p.allow_country.is_empty() && allowed.is_none() {
            return (Some(OUTSIDE_ALLOWED.into()), Action::Drop);
        }
        if let Some(l) = in_list(&p.monitor_list) {
            return (Some(l), Action::Monitor);
        }
        match allowed {
            Some(c) => (Some(c), Action::Pass),
            None => (None, Action::Pass),
        }
    }

    #[test]
    fn country_policies_match_reference_at_every_boundary() {
        let tmp = tmpdir();
        let dir = tmp.path();
        let db = RegionDb::bundled().unwrap();
        // A German exception, a deny list inside France, a monitor list across both.
        let de = &db.regions["DE"].prefixes;
        let fr = &db.regions["FR"].prefixes;
        let policy = Policy {
            allow: vec![write(dir, "exc.txt", &format!("{}\n", de[10]))],
            deny: vec![write(dir, "bad.txt", &format!("{}\n{}\n", fr[5], de[20]))],
            monitor_list: vec![write(
                dir,
                "mon.txt",
                &format!("{}\n{}\n{}\n", fr[7], de[30], db.regions["US"].prefixes[3]),
            )],
            deny_country: vec!["cn".into(), "HK".into()],
            allow_country: vec!["DE".into(), "fr".into()],
            never_block: vec![format!("{}", de[40])],
            no_default_never_block: true,
            ..Default::default()
        };
        let table = build_table(&policy).unwrap();
        let files: HashMap<String, Vec<Prefix>> = policy
            .allow
            .iter()
            .chain(&policy.deny)
            .chain(&policy.monitor_list)
            .map(|l| (l.name.clone(), read_list(&l.path).unwrap()))
            .collect();
        let mut probes: Vec<(Family, u128)> = Vec::new();
        for code in ["DE", "FR", "CN", "HK", "US"] {
            for p in db.regions[code].prefixes.iter().step_by(53) {
                let (lo, hi) = p.range();
                for a in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
                    if a <= p.family.max_addr() {
                        probes.push((p.family, a));
                    }
                }
            }
        }
        for (p, _) in policy.never_block_ranges().unwrap() {
            let (lo, hi) = p.range();
            probes.extend([(p.family, lo.wrapping_sub(1)), (p.family, lo), (p.family, hi), (p.family, hi + 1)]);
        }
        for l in policy.allow.iter().chain(&policy.deny).chain(&policy.monitor_list) {
            for p in read_list(&l.path).unwrap() {
                let (lo, hi) = p.range();
                probes.extend([(p.family, lo.wrapping_sub(1)), (p.family, lo), (p.family, hi), (p.family, hi + 1)]);
            }
        }
        let mut rng = blocker_tests::Rng(0x9e3779b97f4a7c15);
        for _ in 0..2000 {
            let x = rng.next_u64();
            probes.push((Family::V4, u128::from(x as u32)));
            probes.push((Family::V6, (0x2000u128 << 112) | (u128::from(x) << 64)));
        }
        for (family, a) in probes {
            let got = table.lookup(family, a).map(|i| table.lists[i].clone());
            let got = (got.as_ref().map(|l| l.name.clone()), got.map_or(Action::Pass, |l| l.action));
            assert_eq!(got, reference(&policy, &files, &db, family, a), "{family:?} {a:#x}");
        }
    }

    #[test]
    fn scopes_come_first_in_order_then_the_policy_own_lists_and_share_never_block() {
        use crate::{compile::table::build_policy, policy::ports::PortRule};
        let tmp = tmpdir();
        let deny = write(tmp.path(), "deny.txt", "198.51.100.0/24\n");
        let api = Scope {
            name: "api".into(),
            ports: ports::Ports(vec!["tcp:443".parse::<PortRule>().unwrap()]),
            deny_country: vec!["CN".into()],
            ..Default::default()
        };
        let p = Policy {
            deny: vec![deny],
            scopes: vec![api.clone()],
            never_block: vec!["192.0.2.0/24".into()],
            no_default_never_block: true,
            ..Default::default()
        };
        let compiled = build_policy(&p).unwrap();
        let names: Vec<&str> = compiled.scopes.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", DEFAULT_SCOPE]);
        let lists = |i: usize| compiled.scopes[i].table.lists.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
        assert_eq!(lists(0), [NEVER_BLOCK, "country:CN"], "never-block applies in every scope");
        assert_eq!(lists(1), [NEVER_BLOCK, "deny"]);
        assert_eq!(compiled.scope_for(6, 443).unwrap().name, "api");
        assert_eq!(compiled.scope_for(6, 22).unwrap().name, DEFAULT_SCOPE);
        // Without lists of its own, the policy's part is no scope: the rest passes.
        let only_api = Policy { scopes: vec![api.clone()], no_default_never_block: true, ..Default::default() };
        let compiled = build_policy(&only_api).unwrap();
        assert_eq!(compiled.scopes.len(), 1);
        assert!(compiled.scope_for(17, 53).is_none());

        let refused = |scopes: Vec<Scope>| match build_policy(&Policy { scopes, ..Default::default() }) {
            Err(e @ PolicyError::Scope { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        };
        let e = refused(vec![api.clone(), api.clone()]);
        assert!(e.contains("scope \"api\": given twice"), "{e}");
        let e = refused(vec![Scope { ports: ports::Ports::default(), ..api.clone() }]);
        assert!(e.contains("no ports"), "{e}");
        let e = refused(vec![Scope { name: DEFAULT_SCOPE.into(), ..api.clone() }]);
        assert!(e.contains("is the name of the lists outside every scope"), "{e}");
        let e = refused(vec![Scope { name: "a b".into(), ..api.clone() }]);
        assert!(e.contains("letters, digits"), "{e}");
        let e = refused(vec![Scope { allow_country: vec!["US".into()], ..api.clone() }]);
        assert!(
            e.starts_with("scope \"api\": allowlist mode (--allow-country, --allow-only-asn) drops every source"),
            "{e}"
        );
        let both = Scope { deny_country: vec!["CN".into()], allow_country: vec!["CN".into()], ..api };
        let p = Policy { scopes: vec![both], confirm_allowlist_without_never_block: true, ..Default::default() };
        let e = build_policy(&p).unwrap_err().to_string();
        assert_eq!(e, "scope \"api\": country CN is both denied and allowed");
    }

    #[test]
    fn reject_lists_and_countries_reject_and_a_country_denied_and_rejected_is_refused() {
        let tmp = tmpdir();
        let refuse = write(tmp.path(), "refuse.txt", "192.0.2.0/24\n");
        let p = Policy { reject: vec![refuse], reject_country: vec!["DE".into()], ..Default::default() };
        let t = build_table(&p).unwrap();
        let at = |a: &str| {
            let x = parse_prefix(a).unwrap();
            t.lookup(x.family, x.addr).map(|i| (t.lists[i].name.clone(), t.lists[i].action))
        };
        assert_eq!(at("192.0.2.7"), Some(("refuse".into(), Action::Reject)));
        let db = RegionDb::bundled().unwrap();
        let de = db.regions["DE"].prefixes[0];
        assert_eq!(t.lookup(de.family, de.addr).map(|i| t.lists[i].action), Some(Action::Reject));
        let both = Policy { deny_country: vec!["DE".into()], reject_country: vec!["de".into()], ..Default::default() };
        assert!(matches!(build_table(&both), Err(PolicyError::DeniedAndRejected { code }) if code == "DE"));
        assert_eq!(Action::from_code(Action::Reject.code()), Some(Action::Reject));
        assert_eq!(Action::Reject.name(), "reject");
    }

    #[test]
    fn deny_country_drops_its_prefixes() {
        let p = Policy { deny_country: vec!["de".into()], ..Default::default() };
        let t = build_table(&p).unwrap();
        let db = RegionDb::bundled().unwrap();
        let first = db.regions["DE"].prefixes[0];
        let i = t.lookup(first.family, first.addr).unwrap();
        assert_eq!((t.lists[i].name.as_str(), t.lists[i].action), ("country:DE", Action::Drop));
        let google_dns = parse_prefix("8.8.8.8").unwrap();
        assert_eq!(t.lookup(google_dns.family, google_dns.addr), None);
    }

    #[test]
    fn lockout_protection() {
        let tmp = tmpdir();
        let dir = tmp.path();
        let all = write(dir, "all.txt", "0.0.0.0/0\n::/0\n");
        let p = Policy { deny: vec![all.clone()], never_block: vec!["192.0.2.0/24".into()], ..Default::default() };
        let t = build_table(&p).unwrap();
        let verdict = |t: &CompiledTable, a: &str| {
            let x = parse_prefix(a).unwrap();
            t.lookup(x.family, x.addr).map(|i| (t.lists[i].name.clone(), t.lists[i].action))
        };
        for a in ["127.0.0.1", "169.254.1.1", "::1", "fe80::1", "192.0.2.9"] {
            assert_eq!(verdict(&t, a), Some((NEVER_BLOCK.to_string(), Action::Pass)), "{a}");
        }
        assert_eq!(verdict(&t, "198.51.100.1").unwrap().1, Action::Drop);
        // Explicitly overridden: only the configured range stays exempt.
        let p = Policy { no_default_never_block: true, ..p };
        let t = build_table(&p).unwrap();
        assert_eq!(verdict(&t, "127.0.0.1").unwrap().1, Action::Drop);
        assert_eq!(verdict(&t, "192.0.2.9").unwrap().1, Action::Pass);
        // Allowlist mode wants a management range or an explicit confirmation.
        let e = build_table(&Policy { allow_country: vec!["DE".into()], ..Default::default() }).unwrap_err();
        assert!(matches!(e, PolicyError::AllowlistWithoutNeverBlock), "{e}");
        assert!(e.to_string().contains("--never-block"), "the refusal says what to give: {e}");
        build_table(&Policy {
            allow_country: vec!["DE".into()],
            confirm_allowlist_without_never_block: true,
            ..Default::default()
        })
        .unwrap();
        let e = build_table(&Policy { never_block: vec!["10.0.0.1/8".into()], ..Default::default() }).unwrap_err();
        assert!(
            matches!(&e, PolicyError::BadNeverBlock { reason: crate::net::LineError::HostBitsSet { suggestion }, .. }
                if suggestion == "10.0.0.0/8"),
            "{e}"
        );
        assert_eq!(e.to_string(), "--never-block \"10.0.0.1/8\": host bits set: did you mean 10.0.0.0/8?");
    }

    /// URL sources fail by kind: a list the server refuses, a list whose content
    /// does not parse, a reload that has no copy yet, a region URL that is gone.
    #[test]
    fn url_source_errors_say_which_step_failed() {
        use crate::source::{fetch::FetchError, region::RegionError};
        use blocker_tests::http::{serve, Script};
        let script = std::sync::Arc::new(std::sync::Mutex::new(Script::default()));
        let base = serve(script.clone());
        let tmp = tmpdir();
        let with_list = |url: &str| Policy {
            deny: vec![url.parse().unwrap()],
            cache_dir: tmp.path().to_owned(),
            ..Default::default()
        };
        let respond = |status: u16, body: &str| script.lock().unwrap().responses.push((status, vec![], body.into()));

        respond(404, "");
        let e = with_list(&format!("{base}/gone.txt")).list_specs(UrlAccess::Fetch).unwrap_err();
        let PolicyError::Fetch(FetchError::NoCopy { url, cause }) = &e else { panic!("{e:?}") };
        assert!(url.ends_with("/gone.txt") && matches!(**cause, FetchError::Status { status: 404 }), "{e}");

        respond(200, "192.0.2.0/24\nnot-an-address\n");
        let e = with_list(&format!("{base}/bad.txt")).list_specs(UrlAccess::Fetch).unwrap_err();
        let PolicyError::Fetch(FetchError::NoCopy { cause, .. }) = &e else { panic!("{e:?}") };
        let FetchError::Invalid { had_copy: false, cause } = &**cause else { panic!("{e:?}") };
        let line = cause.downcast_ref::<ListError>();
        assert!(matches!(line, Some(ListError::Line { line: 2, .. })), "the parser's error, by line: {e:?}");

        let e = with_list(&format!("{base}/later.txt")).list_specs(UrlAccess::CachedOnly).unwrap_err();
        assert!(matches!(&e, PolicyError::Fetch(FetchError::NotCachedYet { .. })), "{e:?}");

        respond(404, "");
        let p = Policy {
            deny_country: vec!["DE".into()],
            country_source: vec![format!("rir:{base}/delegated").parse().unwrap()],
            cache_dir: tmp.path().to_owned(),
            ..Default::default()
        };
        let e = p.list_specs(UrlAccess::Fetch).unwrap_err();
        let PolicyError::Region(RegionError::SourceFailed { cause, .. }) = &e else { panic!("{e:?}") };
        assert!(matches!(&**cause, RegionError::Fetch(FetchError::NoCopy { .. })), "{e:?}");
    }

    /// ASN data of the tests: AS64500 inside Germany's first prefix, AS64501
    /// beside it, AS64502 in IPv6, as a CSV source.
    fn asn_source(dir: &std::path::Path) -> (AsnSource, Prefix) {
        // A German prefix much wider than the systems' /24s.
        let db = RegionDb::bundled().unwrap();
        let de = *db.regions["DE"].prefixes.iter().find(|p| p.family == Family::V4 && p.len <= 16).unwrap();
        let (lo, _) = de.range();
        let ip = |a: u128| std::net::Ipv4Addr::from(a as u32);
        let text = format!(
            "{},{},64500,\"Hosting, Inc.\"\n{},{},64501,Other\n2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,64502,Six\n",
            ip(lo),
            ip(lo + 255),
            ip(lo + 256),
            ip(lo + 511),
        );
        let path = dir.join("asn.csv");
        std::fs::write(&path, text).unwrap();
        (format!("csv:{}", path.display()).parse().unwrap(), de)
    }

    fn verdict_at(t: &CompiledTable, family: Family, addr: u128) -> Option<(String, Action)> {
        t.lookup(family, addr).map(|i| (t.lists[i].name.clone(), t.lists[i].action))
    }

    #[test]
    fn asn_lists_compile_beside_countries_with_their_precedence() {
        let tmp = tmpdir();
        let (source, de) = asn_source(tmp.path());
        let (lo, _) = de.range();
        let base = Policy { asn_source: vec![source], no_default_never_block: true, ..Default::default() };
        // Denied alone: counted per system.
        let t = build_table(&Policy { deny_asn: vec![Asn(64500), Asn(64502)], ..base.clone() }).unwrap();
        assert_eq!(verdict_at(&t, Family::V4, lo + 7), Some(("asn:64500".into(), Action::Drop)));
        assert_eq!(verdict_at(&t, Family::V4, lo + 256), None);
        assert_eq!(verdict_at(&t, Family::V6, 0x2001_0db8u128 << 96 | 9), Some(("asn:64502".into(), Action::Drop)));
        // With the country denied too: the system's prefix is the more specific,
        // so its drops count under it; the rest of the country under the country.
        let both = Policy { deny_country: vec!["DE".into()], deny_asn: vec![Asn(64500)], ..base.clone() };
        let t = build_table(&both).unwrap();
        assert_eq!(verdict_at(&t, Family::V4, lo), Some(("asn:64500".into(), Action::Drop)));
        assert_eq!(verdict_at(&t, Family::V4, lo + 256), Some(("country:DE".into(), Action::Drop)));
        // An allowed system is an exception inside a denied country.
        let except = Policy { deny_country: vec!["DE".into()], allow_asn: vec![Asn(64501)], ..base.clone() };
        let t = build_table(&except).unwrap();
        assert_eq!(verdict_at(&t, Family::V4, lo + 300), Some(("asn:64501".into(), Action::Pass)));
        assert_eq!(verdict_at(&t, Family::V4, lo + 3), Some(("country:DE".into(), Action::Drop)));
        // Rejected.
        let t = build_table(&Policy { reject_asn: vec![Asn(64501)], ..base.clone() }).unwrap();
        assert_eq!(verdict_at(&t, Family::V4, lo + 256), Some(("asn:64501".into(), Action::Reject)));
        // A deny list wins over an allowlisted system; the rest of the world is outside.
        let tmp2 = tmpdir();
        let deny = write(tmp2.path(), "bad.txt", &format!("{}/32\n", std::net::Ipv4Addr::from(lo as u32 + 5)));
        let only = Policy {
            deny: vec![deny],
            allow_only_asn: vec![Asn(64500), Asn(64502)],
            never_block: vec!["192.0.2.0/24".into()],
            ..base.clone()
        };
        let t = build_table(&only).unwrap();
        assert_eq!(verdict_at(&t, Family::V4, lo + 5), Some(("bad".into(), Action::Drop)));
        assert_eq!(verdict_at(&t, Family::V4, lo + 6), Some(("asn:64500".into(), Action::Pass)));
        assert_eq!(verdict_at(&t, Family::V4, lo + 256), Some((OUTSIDE_ALLOWED_ASNS.into(), Action::Drop)));
        assert_eq!(verdict_at(&t, Family::V4, 0xc000_0207), Some((NEVER_BLOCK.into(), Action::Pass)));
        assert_eq!(verdict_at(&t, Family::V6, 0x2001_0db8u128 << 96), Some(("asn:64502".into(), Action::Pass)));
        // With allowed countries too, a source passes if either allows it.
        let union = Policy { allow_country: vec!["FR".into()], ..only.clone() };
        let t = build_table(&union).unwrap();
        let fr = RegionDb::bundled().unwrap().regions["FR"].prefixes[0];
        assert_eq!(verdict_at(&t, fr.family, fr.addr), Some(("country:FR".into(), Action::Pass)));
        assert_eq!(verdict_at(&t, Family::V4, lo + 256), Some((OUTSIDE_ALLOWED_BOTH.into(), Action::Drop)));
    }

    #[test]
    fn asn_policies_refuse_what_they_cannot_mean() {
        let tmp = tmpdir();
        let (source, _) = asn_source(tmp.path());
        let base = Policy { asn_source: vec![source], no_default_never_block: true, ..Default::default() };
        let e = build_table(&Policy { deny_asn: vec![Asn(64599)], ..base.clone() }).unwrap_err();
        assert!(matches!(&e, PolicyError::UnknownAsn(u) if u.asn == Asn(64599)), "{e}");
        let e = build_table(&Policy { deny_asn: vec![Asn(64500)], allow_asn: vec![Asn(64500)], ..base.clone() });
        assert_eq!(e.unwrap_err().to_string(), "AS64500 is both denied and allowed");
        let e = build_table(&Policy { deny_asn: vec![Asn(64500)], reject_asn: vec![Asn(64500)], ..base.clone() });
        assert_eq!(e.unwrap_err().to_string(), "AS64500 is both denied and rejected: name it once");
        // The allowlist's lockout guard.
        let e = build_table(&Policy { allow_only_asn: vec![Asn(64500)], ..base.clone() }).unwrap_err();
        assert!(matches!(e, PolicyError::AllowlistWithoutNeverBlock), "{e}");
        // Outbound has no allowlist.
        let out = Scope { name: OUTBOUND_SCOPE.into(), allow_only_asn: vec![Asn(64500)], ..Default::default() };
        let e = build_policy_of(&Policy { outbound: out, ..base.clone() });
        assert!(e.contains("allowlists (countries, systems) are for sources"), "{e}");
        // Past ASN_LISTS_PER_ROLE systems of a role, one list counts them all.
        let mut db = AsnDb::default();
        for n in 0..=ASN_LISTS_PER_ROLE as u32 {
            db.add(Asn(65_000 + n), None, [Prefix { family: Family::V4, addr: u128::from(n) << 8, len: 24 }]);
        }
        let asns: Vec<Asn> = db.systems.keys().copied().collect();
        let lists = asn_lists(&db, &asns, Role::AllowedRegion, "asns:allow-only");
        assert_eq!((lists.len(), lists[0].name.as_str(), lists[0].prefixes.len()), (1, "asns:allow-only", 201));
        assert_eq!(asn_lists(&db, &asns[..3], Role::Deny, "asns:deny")[2].name, "asn:65002");
    }

    fn build_policy_of(p: &Policy) -> String {
        crate::compile::table::build_policy(p).unwrap_err().to_string()
    }

    #[test]
    fn the_bundled_asn_data_serves_a_policy() {
        let p = Policy { deny_asn: vec![Asn(13335)], no_default_never_block: true, ..Default::default() };
        let t = build_table(&p).unwrap();
        let one = parse_prefix("1.1.1.1").unwrap();
        assert_eq!(verdict_at(&t, one.family, one.addr), Some(("asn:13335".into(), Action::Drop)));
        let other = parse_prefix("8.8.8.8").unwrap();
        assert_eq!(verdict_at(&t, other.family, other.addr), None);
    }

    #[test]
    fn country_errors() {
        let e =
            build_table(&Policy { deny_country: vec!["DE".into(), "XY".into()], ..Default::default() }).unwrap_err();
        assert!(matches!(&e, PolicyError::UnknownCountry(u) if u.code == "XY"), "{e}");
        let e = build_table(&Policy {
            deny_country: vec!["DE".into()],
            allow_country: vec!["de".into()],
            confirm_allowlist_without_never_block: true,
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(&e, PolicyError::DeniedAndAllowed { code } if code == "DE"), "{e}");
        assert_eq!(e.to_string(), "country DE is both denied and allowed");
    }
}

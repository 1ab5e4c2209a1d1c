//! CIDR list files: one IPv4/IPv6 CIDR or bare address per line, `#` comments
//! (whole-line or trailing), blank lines. The country-ip-blocks files load as they are.

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

/// A prefix in either family. `addr` holds the address left-aligned in the family's
/// width (IPv4 in the low 32 bits of a u128), host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub family: Family,
    pub addr: u128,
    pub len: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    pub const fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
    /// The last address of the family as a u128.
    pub const fn max_addr(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }
}

impl Prefix {
    /// First and last address covered, inclusive.
    pub fn range(&self) -> (u128, u128) {
        let host_bits = u32::from(self.family.bits() - self.len);
        let span = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
        (self.addr, self.addr | span)
    }

    pub fn contains(&self, family: Family, addr: u128) -> bool {
        let (lo, hi) = self.range();
        family == self.family && lo <= addr && addr <= hi
    }

    pub fn to_ip(&self) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4((self.addr as u32).into()),
            Family::V6 => IpAddr::V6(self.addr.into()),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.to_ip(), self.len)
    }
}

/// Splits an address into its family and numeric value.
pub fn ip_to_u128(ip: IpAddr) -> (Family, u128) {
    match ip {
        IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (Family::V6, u128::from(a)),
    }
}

/// Cuts the inclusive range [lo, hi] into the fewest aligned CIDR blocks.
pub fn range_to_prefixes(family: Family, mut lo: u128, hi: u128) -> Vec<Prefix> {
    let bits = u32::from(family.bits());
    let span = |host: u32| if host >= 128 { u128::MAX } else { (1u128 << host) - 1 };
    let mut out = Vec::new();
    loop {
        let mut host = if lo == 0 { bits } else { lo.trailing_zeros().min(bits) };
        // lo is aligned to 2^host, so lo + span(host) == lo | span(host): no overflow.
        while lo | span(host) > hi {
            host -= 1;
        }
        out.push(Prefix { family, addr: lo, len: (bits - host) as u8 });
        let end = lo | span(host);
        if end >= hi {
            return out;
        }
        lo = end + 1;
    }
}

/// Why one line of a list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not an IP address")]
    BadAddress,
    #[error("prefix length {len} is larger than {max} for this address family")]
    LengthTooLarge { len: u32, max: u8 },
    #[error("prefix length is not a number")]
    BadLength,
    #[error("host bits set: did you mean {suggestion}?")]
    HostBitsSet { suggestion: String },
}

/// A list that could not be read, naming where and what.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    // Not a `source`: the message already says it, and `{:#}` would repeat it.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("{path}:{line}: {reason}: {text}")]
    Line { path: PathBuf, line: usize, text: String, reason: LineError },
}

/// Parses one CIDR (`a.b.c.d/n`, `x::/n`) or bare address (a /32 or /128).
pub fn parse_prefix(text: &str) -> Result<Prefix, LineError> {
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr_text.parse().map_err(|_| LineError::BadAddress)?;
    let (family, addr) = ip_to_u128(ip);
    let max = family.bits();
    let len = match len_text {
        None => max,
        Some(l) => {
            let l: u32 = l.parse().map_err(|_| LineError::BadLength)?;
            if l > u32::from(max) {
                return Err(LineError::LengthTooLarge { len: l, max });
            }
            l as u8
        }
    };
    let host_bits = u32::from(max - len);
    let mask = if host_bits == 128 { 0 } else { !((1u128 << host_bits) - 1) } & family.max_addr();
    if addr & !mask != 0 {
        // A typo such as 10.0.0.1/8 is more likely a mistake than an intent to block
        // the whole /8: refuse it and show the network it would have meant.
        let network = Prefix { family, addr: addr & mask, len };
        return Err(LineError::HostBitsSet { suggestion: network.to_string() });
    }
    Ok(unmap_v4(Prefix { family, addr, len }))
}

/// An IPv4-mapped IPv6 prefix (inside ::ffff:0:0/96) as the IPv4 prefix it names:
/// mapped addresses never appear as a source on the wire, so as IPv6 it would
/// never match anything, while the operator meant the IPv4 addresses.
fn unmap_v4(p: Prefix) -> Prefix {
    if p.family == Family::V6 && p.len >= 96 && p.addr >> 32 == 0xffff {
        Prefix { family: Family::V4, addr: p.addr & 0xffff_ffff, len: p.len - 96 }
    } else {
        p
    }
}

/// An offending piece of input for a message: quoted, escaped, and cut to about
/// 80 bytes as printed.
pub fn quote(text: &str) -> String {
    // Bytes of the escaped text: escapes (`\u{7f}`) count at their printed size.
    const QUOTE_BYTES: usize = 80;
    let mut out = String::from("\"");
    for c in text.chars() {
        let escaped: String = if c == '\'' { c.to_string() } else { c.escape_debug().collect() };
        if out.len() + escaped.len() > QUOTE_BYTES {
            out.push_str("...");
            break;
        }
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

/// Parses the text of a list; `path` is only used to name errors.
pub fn parse_list(path: &Path, text: &str) -> Result<Vec<Prefix>, ListError> {
    // One allocation at the size of the lines, not a doubling one: lists run to
    // millions of entries.
    let mut prefixes = Vec::with_capacity(text.bytes().filter(|b| *b == b'\n').count() + 1);
    for (i, raw) in text.lines().enumerate() {
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let prefix = parse_prefix(content).map_err(|reason| ListError::Line {
            path: path.to_owned(),
            line: i + 1,
            text: quote(raw),
            reason,
        })?;
        prefixes.push(prefix);
    }
    Ok(prefixes)
}

pub fn read_list(path: &Path) -> Result<Vec<Prefix>, ListError> {
    let text = crate::input::read_text(path, crate::input::MAX_SOURCE_BYTES)?;
    parse_list(path, &text)
}

/// Where a list comes from: `[optional:][refresh=DURATION:][NAME=]FILE|URL` (without NAME the path or
/// URL is the name). The name is what counters are reported under and what keeps
/// them across reloads. An optional list that cannot be read is skipped with a
/// warning instead of aborting the load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListSource {
    pub name: String,
    pub path: PathBuf,
    pub optional: bool,
    /// URL sources only: how often the daemon fetches it again (None: the policy's default).
    pub refresh: Option<crate::watch::Refresh>,
}

impl ListSource {
    pub fn url(&self) -> Option<&str> {
        let s = self.path.to_str()?;
        crate::fetch::is_url(s).then_some(s)
    }
}

impl std::str::FromStr for ListSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (optional, rest) = match s.strip_prefix("optional:") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let (refresh, rest) = crate::watch::strip_refresh(rest)?;
        let source = Self::named(s, rest, optional)?;
        if refresh.is_some() && source.url().is_none() {
            return Err(format!("{s:?}: refresh= applies to URL sources only (files are watched for changes)"));
        }
        Ok(ListSource { refresh, ..source })
    }
}

impl ListSource {
    fn named(s: &str, rest: &str, optional: bool) -> Result<Self, String> {
        if rest.is_empty() {
            return Err("empty list argument".into());
        }
        match rest.split_once('=') {
            Some((name, path))
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) =>
            {
                if path.is_empty() {
                    return Err(format!("{s:?}: no file after '='"));
                }
                Ok(ListSource { name: name.into(), path: path.into(), optional, refresh: None })
            }
            _ => Ok(ListSource { name: rest.into(), path: rest.into(), optional, refresh: None }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// ../shared/data beside the repository (as on CI), or $BLOCKER_SHARED_DATA.
    pub(crate) fn shared_data() -> PathBuf {
        std::env::var_os("BLOCKER_SHARED_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
    }

    fn p(s: &str) -> Prefix {
        parse_prefix(s).unwrap()
    }

    #[test]
    fn parses_cidrs_and_bare_addresses() {
        assert_eq!(p("10.0.0.0/8"), Prefix { family: Family::V4, addr: 0x0a00_0000, len: 8 });
        assert_eq!(p("192.0.2.7"), Prefix { family: Family::V4, addr: 0xc000_0207, len: 32 });
        assert_eq!(p("0.0.0.0/0").range(), (0, u32::MAX as u128));
        assert_eq!(p("2001:db8::/32").range().0, 0x2001_0db8u128 << 96);
        assert_eq!(p("::/0").range(), (0, u128::MAX));
        assert_eq!(p("2001:db8::1").len, 128);
    }

    #[test]
    fn rejects_bad_prefixes_with_reason() {
        assert_eq!(parse_prefix("10.0.0.300/8"), Err(LineError::BadAddress));
        assert_eq!(parse_prefix("hello"), Err(LineError::BadAddress));
        assert_eq!(parse_prefix("10.0.0.0/33"), Err(LineError::LengthTooLarge { len: 33, max: 32 }));
        assert_eq!(parse_prefix("::/129"), Err(LineError::LengthTooLarge { len: 129, max: 128 }));
        assert_eq!(parse_prefix("10.0.0.0/x"), Err(LineError::BadLength));
        assert_eq!(parse_prefix("10.0.0.0/-1"), Err(LineError::BadLength));
        assert_eq!(parse_prefix("10.1.2.3/8"), Err(LineError::HostBitsSet { suggestion: "10.0.0.0/8".into() }));
        assert_eq!(parse_prefix("2001:db8::1/32"), Err(LineError::HostBitsSet { suggestion: "2001:db8::/32".into() }));
    }

    #[test]
    fn ipv4_mapped_ipv6_prefixes_become_ipv4() {
        assert_eq!(p("::ffff:1.2.3.4"), p("1.2.3.4"));
        assert_eq!(p("::ffff:198.51.100.0/120"), p("198.51.100.0/24"));
        assert_eq!(p("::ffff:0:0/96"), p("0.0.0.0/0"));
        // Wider than the mapped space: IPv6 as written.
        assert_eq!(p("::/64").family, Family::V6);
        assert_eq!(p("::1").family, Family::V6);
    }

    #[test]
    fn error_messages_quote_a_bounded_piece_of_the_line() {
        let line = "x".repeat(10_000);
        let msg = parse_list(Path::new("l.txt"), &line).unwrap_err().to_string();
        assert!(msg.len() < 200, "{} bytes", msg.len());
        assert!(msg.ends_with("...\""), "{msg}");
        // Escapes count at their printed size (found by the control fuzzer).
        let msg = parse_list(Path::new("l.txt"), &"\u{7f}".repeat(1000)).unwrap_err().to_string();
        assert!(msg.len() < 200, "{} bytes: {msg}", msg.len());
    }

    #[test]
    fn list_skips_comments_and_blanks() {
        let text = "# header\n\n10.0.0.0/8\n  192.0.2.0/24  # trailing\n2001:db8::/32\n";
        let list = parse_list(Path::new("x.txt"), text).unwrap();
        assert_eq!(list, vec![p("10.0.0.0/8"), p("192.0.2.0/24"), p("2001:db8::/32")]);
    }

    #[test]
    fn list_error_names_file_line_and_text() {
        let text = "10.0.0.0/8\n# ok\n10.0.0.0/88\n";
        let err = parse_list(Path::new("lists/deny.txt"), text).unwrap_err();
        let msg = err.to_string();
        assert_eq!(
            msg,
            "lists/deny.txt:3: prefix length 88 is larger than 32 for this address family: \"10.0.0.0/88\""
        );
    }

    #[test]
    fn ranges_split_into_exact_cidrs() {
        let strs = |v: Vec<Prefix>| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(strs(range_to_prefixes(Family::V4, 0x0a00_0000, 0x0a00_00ff)), ["10.0.0.0/24"]);
        // 10.0.0.1 .. 10.0.0.6: not aligned at either end.
        assert_eq!(
            strs(range_to_prefixes(Family::V4, 0x0a00_0001, 0x0a00_0006)),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(strs(range_to_prefixes(Family::V4, 0, u32::MAX as u128)), ["0.0.0.0/0"]);
        assert_eq!(strs(range_to_prefixes(Family::V6, 0, u128::MAX)), ["::/0"]);
        assert_eq!(
            strs(range_to_prefixes(Family::V6, u128::MAX, u128::MAX)),
            ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"]
        );
    }

    #[test]
    fn list_source_names() {
        let s: ListSource = "cn=/data/cn.txt".parse().unwrap();
        assert_eq!(s, ListSource { name: "cn".into(), path: "/data/cn.txt".into(), optional: false, refresh: None });
        let s: ListSource = "/data/a=b.txt".parse().unwrap();
        assert_eq!(
            s,
            ListSource { name: "/data/a=b.txt".into(), path: "/data/a=b.txt".into(), optional: false, refresh: None }
        );
        let s: ListSource = "optional:x=https://h.invalid/l.txt".parse().unwrap();
        assert!(s.optional && s.url() == Some("https://h.invalid/l.txt") && s.name == "x");
        assert!("cn=".parse::<ListSource>().is_err());
        let s: ListSource = "optional:refresh=15m:x=https://h.invalid/l.txt".parse().unwrap();
        assert!(s.optional && s.name == "x");
        assert_eq!(s.refresh, Some(crate::watch::Refresh::Every(std::time::Duration::from_secs(900))));
        let e = "refresh=15m:/etc/blocker/deny.txt".parse::<ListSource>().unwrap_err();
        assert!(e.contains("URL sources only"), "{e}");
    }

    #[test]
    fn real_country_files_parse() {
        let data = shared_data();
        let dir = data.join("country-ip-blocks/country/de");
        assert!(dir.exists(), "shared data missing at {} (set BLOCKER_SHARED_DATA)", dir.display());
        let v4 = read_list(&dir.join("ipv4-aggregated.txt")).unwrap();
        let v6 = read_list(&dir.join("ipv6-aggregated.txt")).unwrap();
        assert!(v4.len() > 1000 && v4.iter().all(|p| p.family == Family::V4));
        assert!(v6.len() > 100 && v6.iter().all(|p| p.family == Family::V6));
    }
}

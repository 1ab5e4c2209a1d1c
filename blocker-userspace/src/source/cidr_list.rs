//! CIDR list files: one IPv4/IPv6 CIDR or bare address per line, `#` or `;`
//! comments (whole-line or trailing), blank lines. The country-ip-blocks files
//! and Spamhaus' DROP lists (`1.10.16.0/20 ; SBL256894`) load as they are.

use std::path::{Path, PathBuf};

use crate::{
    net::{parse_prefix, LineError, Prefix},
    source::{
        input::quote,
        spec::{is_url, Modifiers, Refresh},
    },
};

/// A list that could not be read, naming where and what.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    // Not a `source`: the message already says it, and `{:#}` would repeat it.
    #[error(transparent)]
    Input(#[from] crate::source::input::InputError),
    #[error("{path}:{line}: {reason}: {text}")]
    Line { path: PathBuf, line: usize, text: String, reason: LineError },
}

/// Parses the text of a list; `path` is only used to name errors.
pub fn parse_list(path: &Path, text: &str) -> Result<Vec<Prefix>, ListError> {
    // One allocation at the size of the lines, not a doubling one: lists run to
    // millions of entries.
    let mut prefixes = Vec::with_capacity(text.bytes().filter(|b| *b == b'\n').count() + 1);
    for (i, raw) in text.lines().enumerate() {
        let content = raw.split(['#', ';']).next().unwrap_or("").trim();
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
    let text = crate::source::input::read_text(path, crate::source::input::MAX_SOURCE_BYTES)?;
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
    pub refresh: Option<Refresh>,
}

impl ListSource {
    pub fn url(&self) -> Option<&str> {
        let s = self.path.to_str()?;
        is_url(s).then_some(s)
    }
}

impl std::str::FromStr for ListSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (modifiers, rest) = Modifiers::strip(s, |_| Ok(None))?;
        let source = Self::named(s, rest, modifiers.optional)?;
        modifiers.check(s, source.url().is_some())?;
        Ok(ListSource { refresh: modifiers.refresh, ..source })
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
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        parse_prefix(s).unwrap()
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
    fn spamhaus_drop_layout_loads() {
        let text = "; Spamhaus DROP List 2026/12/01 - (c) 2026 The Spamhaus Project SLU\n\
                    ; Last-Modified: Tue, 01 Dec 2026 10:52:19 GMT\n\
                    1.10.16.0/20 ; SBL256894\n2a06:e480::/29 ; SBL301771\n";
        let list = parse_list(Path::new("drop.txt"), text).unwrap();
        assert_eq!(list, vec![p("1.10.16.0/20"), p("2a06:e480::/29")]);
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
        assert_eq!(s.refresh, Some(Refresh::Every(std::time::Duration::from_secs(900))));
        let e = "refresh=15m:/etc/blocker/deny.txt".parse::<ListSource>().unwrap_err();
        assert!(e.contains("URL sources only"), "{e}");
    }
}

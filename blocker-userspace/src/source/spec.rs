//! The syntax every source argument shares: `[optional:][refresh=DURATION:]` before
//! its location, which is a path or an http(s) URL.

use std::{str::FromStr, time::Duration};

use crate::clock::parse_duration;

/// How often a URL source is fetched again while the daemon runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    Never,
    Every(Duration),
}

impl FromStr for Refresh {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if matches!(s, "off" | "never" | "0") {
            return Ok(Refresh::Never);
        }
        let d = parse_duration(s).map_err(|e| e.to_string())?;
        if d < Duration::from_secs(1) {
            return Err(format!("refresh interval {s:?} is under one second (use \"off\" to disable)"));
        }
        Ok(Refresh::Every(d))
    }
}

impl std::fmt::Display for Refresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refresh::Never => f.write_str("off"),
            Refresh::Every(d) => write!(f, "{}s", d.as_secs()),
        }
    }
}

/// Strips a leading `refresh=DURATION:` from a source argument.
pub fn strip_refresh(s: &str) -> Result<(Option<Refresh>, &str), String> {
    let Some(rest) = s.strip_prefix("refresh=") else { return Ok((None, s)) };
    let (value, rest) = rest.split_once(':').ok_or_else(|| format!("{s:?}: expected refresh=DURATION:SOURCE"))?;
    let refresh = value.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Ok((Some(refresh), rest))
}

/// Whether a source location is a URL (fetched through the cache) rather than a path.
pub fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// The modifiers a source argument may start with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Modifiers {
    /// `optional:`: a source that cannot be read is skipped with a warning.
    pub optional: bool,
    /// `refresh=DURATION:`: how often a URL source is fetched again.
    pub refresh: Option<Refresh>,
}

impl Modifiers {
    /// Strips the leading `optional:` and `refresh=DURATION:` of `arg`, in any order,
    /// and the prefixes `more` recognizes (it returns what follows one, or None).
    pub fn strip<'a>(
        arg: &'a str,
        mut more: impl FnMut(&'a str) -> Result<Option<&'a str>, String>,
    ) -> Result<(Modifiers, &'a str), String> {
        let mut m = Modifiers::default();
        let mut rest = arg;
        loop {
            if let Some(r) = rest.strip_prefix("optional:") {
                m.optional = true;
                rest = r;
            } else if let (Some(refresh), r) = strip_refresh(rest)? {
                m.refresh = Some(refresh);
                rest = r;
            } else if let Some(r) = more(rest)? {
                rest = r;
            } else {
                return Ok((m, rest));
            }
        }
    }

    /// Refuses `refresh=` on a source that is not a URL (`arg` names it).
    pub fn check(&self, arg: &str, location_is_url: bool) -> Result<(), String> {
        if self.refresh.is_some() && !location_is_url {
            return Err(format!("{arg:?}: refresh= applies to URL sources only (files are watched for changes)"));
        }
        Ok(())
    }
}

/// Splits a source argument `[optional:][refresh=DURATION:][FORMAT:]LOCATION`:
/// its modifiers, the format its prefix names (one of `formats`), and the
/// location (a path or URL; `refresh=` only on a URL).
pub fn split_source<'a>(s: &'a str, formats: &[&str]) -> Result<(Modifiers, Option<&'a str>, &'a str), String> {
    let mut format = None;
    let (modifiers, rest) = Modifiers::strip(s, |rest| {
        let Some((head, tail)) = rest.split_once(':') else { return Ok(None) };
        if !formats.contains(&head) {
            return Ok(None);
        }
        format = Some(head);
        Ok(Some(tail))
    })?;
    if rest.is_empty() {
        return Err(format!("{s:?}: no path or URL"));
    }
    // `xml:/path`: a format prefix that is none of the known ones, not a path.
    if let Some((head, _)) = rest.split_once(':') {
        let word = !head.is_empty() && head.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
        if word && format.is_none() && !is_url(rest) {
            return Err(format!("{s:?}: unknown format {head:?} (give one of {})", formats.join(", ")));
        }
    }
    modifiers.check(s, is_url(rest))?;
    Ok((modifiers, format, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_syntax() {
        assert_eq!("off".parse::<Refresh>().unwrap(), Refresh::Never);
        assert!("500ms".parse::<Refresh>().unwrap_err().contains("under one second"));
        assert_eq!(
            strip_refresh("refresh=1h:https://x/y").unwrap(),
            (Some(Refresh::Every(Duration::from_secs(3600))), "https://x/y")
        );
        assert_eq!(strip_refresh("/etc/x").unwrap(), (None, "/etc/x"));
        assert!(strip_refresh("refresh=1h").unwrap_err().contains("refresh=DURATION:SOURCE"));
    }
}

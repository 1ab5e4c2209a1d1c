//! The syntax every source argument shares: `[optional:][refresh=DURATION:]` before
//! its location, which is a path or an http(s) URL; and the durations it uses.

use std::{str::FromStr, time::Duration};

/// The longest duration accepted anywhere (refresh intervals, debounce): longer
/// ones are surely mistakes, and the daemon adds them to the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Parses "500ms", "90s", "15m", "6h", "1d" (a bare number is seconds), at most
/// `MAX_DURATION`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a duration (like 90s, 15m, 6h, 1d)"))?;
    let too_long = || format!("{s:?} is longer than the maximum of 365d");
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" | "m" | "h" | "d" => {
            let per = match unit {
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => 1,
            };
            Duration::from_secs(n.checked_mul(per).ok_or_else(too_long)?)
        }
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    };
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

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
        let d = parse_duration(s)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_refresh() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(21_600));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_duration("365d").unwrap(), MAX_DURATION);
        for huge in ["366d", "99999999999999999h", "18446744073709551615d", "18446744073709551615ms"] {
            assert!(parse_duration(huge).unwrap_err().contains("longer than the maximum of 365d"), "{huge}");
        }
        assert!(parse_duration("99999999999999999999999s").unwrap_err().contains("is not a duration"));
        assert!(parse_duration("6 hours").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("h").unwrap_err().contains("not a duration"));
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

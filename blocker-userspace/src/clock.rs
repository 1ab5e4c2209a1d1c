//! Time as blocker reads and shows it: durations as operators write them, Unix
//! seconds, and ages in words.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Seconds since the Unix epoch of `t` (0 for a time before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An age of `secs` seconds in words: "90 s", "5 min", "3 h", "12 days".
pub fn age_text(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
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
    }

    #[test]
    fn ages_in_words() {
        assert_eq!(age_text(90), "90 s");
        assert_eq!(age_text(300), "5 min");
        assert_eq!(age_text(3 * 3600), "3 h");
        assert_eq!(age_text(12 * 86_400), "12 days");
    }
}

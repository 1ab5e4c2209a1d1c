//! Time as blocker reads and shows it: durations as operators write them, Unix
//! seconds, and ages in words.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest duration accepted anywhere (refresh intervals, debounce): longer
/// ones are surely mistakes, and the daemon adds them to the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Why a duration could not be read; the text says what is wanted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{text:?} is not a duration (like 90s, 15m, 6h, 1d)")]
    NotADuration { text: String },
    #[error("{text:?}: unknown unit {unit:?} (ms, s, m, h, d)")]
    UnknownUnit { text: String, unit: String },
    #[error("{text:?} is longer than the maximum of 365d")]
    TooLong { text: String },
}

/// Parses "500ms", "90s", "15m", "6h", "1d" (a bare number is seconds), at most
/// `MAX_DURATION`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| DurationError::NotADuration { text: s.to_owned() })?;
    let too_long = || DurationError::TooLong { text: s.to_owned() };
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
        _ => return Err(DurationError::UnknownUnit { text: s.to_owned(), unit: unit.to_owned() }),
    };
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

/// Nanoseconds of the kernel's boot clock (CLOCK_BOOTTIME: it counts suspend),
/// the clock the XDP program reads ban expiries in.
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the struct given; CLOCK_BOOTTIME exists on every kernel
    // blocker runs on.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Milliseconds since the Unix epoch now.
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The wall-clock Unix milliseconds of boot-clock `ns`, as the clocks stand now.
pub fn boot_ns_to_wall_ms(ns: u64) -> u64 {
    let (now_ns, now_ms) = (boot_ns(), wall_ms());
    if ns >= now_ns {
        now_ms.saturating_add((ns - now_ns) / 1_000_000)
    } else {
        now_ms.saturating_sub((now_ns - ns) / 1_000_000)
    }
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

/// `t` in RFC 3339, UTC, with milliseconds: "2026-12-02T00:16:29.123Z".
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // The civil date of a day count (Howard Hinnant's days_from_civil, inverted).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The Unix time (seconds) of the start of a date given as `YYYY-MM-DD`.
pub fn date_to_unix(date: &str) -> Option<u64> {
    let mut parts = date.get(..10)?.split('-');
    let (y, m, d): (i64, i64, i64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || parts.next().is_some() {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    u64::try_from((era * 146_097 + doe - 719_468) * 86_400).ok()
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    #[test]
    fn dates_to_unix_times_and_back() {
        for t in [0u64, 86_400 * 365, 1_781_654_400, 1_796_256_000] {
            let text = rfc3339_millis(UNIX_EPOCH + Duration::from_secs(t));
            assert_eq!(date_to_unix(&text), Some(t), "{text}");
        }
        assert_eq!(date_to_unix("2026-13-01"), None);
        assert_eq!(date_to_unix("soon"), None);
    }

    use super::*;

    #[rstest]
    #[case("90s", Duration::from_secs(90))]
    #[case("15m", Duration::from_secs(900))]
    #[case("6h", Duration::from_secs(21_600))]
    #[case("1d", Duration::from_secs(86_400))]
    #[case("250ms", Duration::from_millis(250))]
    #[case("7", Duration::from_secs(7))]
    #[case(" 7s ", Duration::from_secs(7))]
    #[case("365d", MAX_DURATION)]
    fn durations_read(#[case] text: &str, #[case] want: Duration) {
        assert_eq!(parse_duration(text), Ok(want));
    }

    #[rstest]
    #[case("366d")]
    #[case("99999999999999999h")]
    #[case("18446744073709551615d")]
    #[case("18446744073709551615ms")]
    fn durations_past_a_year_are_refused(#[case] text: &str) {
        assert_eq!(parse_duration(text), Err(DurationError::TooLong { text: text.into() }));
    }

    #[rstest]
    #[case("99999999999999999999999s")]
    #[case("h")]
    #[case("")]
    #[case("-5s")]
    fn non_durations_are_refused(#[case] text: &str) {
        assert_eq!(parse_duration(text), Err(DurationError::NotADuration { text: text.into() }));
    }

    #[test]
    fn unknown_units_are_named() {
        let e = parse_duration("6 hours").unwrap_err();
        assert_eq!(e, DurationError::UnknownUnit { text: "6 hours".into(), unit: " hours".into() });
        assert_eq!(e.to_string(), "\"6 hours\": unknown unit \" hours\" (ms, s, m, h, d)");
    }

    #[rstest]
    #[case(0, "1970-01-01T00:00:00.000Z")]
    #[case(951_782_400_500, "2000-02-29T00:00:00.500Z")]
    #[case(1_796_170_589_123, "2026-12-02T00:16:29.123Z")]
    #[case(4_107_542_399_999, "2100-02-28T23:59:59.999Z")]
    fn times_in_rfc3339(#[case] ms: u64, #[case] want: &str) {
        assert_eq!(rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)), want);
    }

    #[test]
    fn ages_in_words() {
        assert_eq!(age_text(90), "90 s");
        assert_eq!(age_text(300), "5 min");
        assert_eq!(age_text(3 * 3600), "3 h");
        assert_eq!(age_text(12 * 86_400), "12 days");
    }
}

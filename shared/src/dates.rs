//! Dates as Pancake writes them: `inserted_at` in the webhook and in its
//! message listings (`YYYY-MM-DDTHH:MM:SS[.frac]`, UTC when no offset is
//! given), read into epoch seconds. A leaf: the webhook parser and the
//! Pancake client both read them.

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM[:SS[.frac]][Z|±HH[[:]MM]]`
/// (`T` or a space between date and time); no offset means UTC (Pancake's
/// `inserted_at`). Calendar-checked by the `time` crate: `2024-02-31` and
/// `2023-02-29` are refused, not rolled over.
pub fn parse_utc(s: &str) -> Option<f64> {
    use time::{PrimitiveDateTime, UtcOffset, macros::format_description};
    let s = s.trim();
    let (local, offset) = match s.strip_suffix(['Z', 'z']) {
        Some(local) => (local, UtcOffset::UTC),
        // An offset sign can only follow the time (the date's `-` come first).
        None => match s.get(11..).and_then(|time| time.rfind(['+', '-'])).map(|i| i + 11) {
            Some(at) => (&s[..at], parse_offset(&s[at..])?),
            None => (s, UtcOffset::UTC),
        },
    };
    let format = format_description!(
        "[year]-[month]-[day][first [T][ ]][hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
    );
    let at = PrimitiveDateTime::parse(local, format).ok()?.assume_offset(offset);
    (at.year() >= 1970).then(|| at.unix_timestamp() as f64 + f64::from(at.nanosecond()) / 1e9)
}

/// `±HH`, `±HHMM` or `±HH:MM`, exactly.
fn parse_offset(text: &str) -> Option<time::UtcOffset> {
    let sign: i8 = if text.starts_with('-') { -1 } else { 1 };
    // Byte positions below are only character boundaries in ASCII.
    let rest = text.get(1..).filter(|r| r.is_ascii())?;
    let (hours, minutes) = match rest.len() {
        2 => (rest, "00"),
        4 => rest.split_at(2),
        5 if rest.as_bytes()[2] == b':' => (&rest[..2], &rest[3..]),
        _ => return None,
    };
    if !(hours.bytes().chain(minutes.bytes()).all(|b| b.is_ascii_digit())) {
        return None;
    }
    let (hours, minutes): (i8, i8) = (hours.parse().ok()?, minutes.parse().ok()?);
    time::UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn dates_parse_as_the_time_crate_reads_them(
            year in 1970i32..2200, month in 1u8..=12, day in 1u8..=31,
            hour in 0u8..24, minute in 0u8..60, second in 0u8..60, offset_minutes in -840i32..=840,
        ) {
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let text = format!(
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{sign}{:02}:{:02}",
                offset_minutes.abs() / 60, offset_minutes.abs() % 60
            );
            let expected = time::Month::try_from(month).ok()
                .and_then(|m| time::Date::from_calendar_date(year, m, day).ok())
                .and_then(|d| d.with_hms(hour, minute, second).ok())
                .map(|t| (t.assume_utc().unix_timestamp() - i64::from(offset_minutes) * 60) as f64);
            prop_assert_eq!(parse_utc(&text), expected);
        }

        #[test]
        fn arbitrary_text_never_panics_the_date_parser(text in "\\PC{0,40}") {
            let _ = parse_utc(&text);
        }
    }

    #[test]
    fn pancake_timestamps_parse_as_utc() {
        assert_eq!(parse_utc("2024-12-25T11:06:07.000000"), Some(1_735_124_767.0));
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_utc("2024-12-25T18:06:07+07:00"), Some(1_735_124_767.0));
        assert_eq!(parse_utc("yesterday"), None);
        assert_eq!(parse_utc("2024-13-01T00:00:00"), None);
        assert_eq!(parse_utc("1000000000000000-01-01T00:00:00"), None);
        assert_eq!(parse_utc("2024-12-25T00:00:00+99999999999999999:00"), None);
        assert_eq!(parse_utc("2024-02-31T00:00:00"), None);
        assert_eq!(parse_utc("2023-02-29T00:00:00"), None);
        assert_eq!(parse_utc("2024-02-29T00:00:00"), Some(1_709_164_800.0));
        assert_eq!(parse_utc("2024-12-25T10:00:1e1"), None);
        assert_eq!(parse_utc("2024-12-25 11:06:07"), Some(1_735_124_767.0));
        assert_eq!(parse_utc("2024-12-25T18:06:07+07"), Some(1_735_124_767.0));
        assert_eq!(parse_utc("2024-12-25T18:06:07+0700"), Some(1_735_124_767.0));
        assert_eq!(parse_utc("2024-12-25T11:06Z"), Some(1_735_124_760.0));
        assert_eq!(parse_utc("2024-12-25T11:06:07+7:00"), None);
        for loose in ["+0:700", "+07:0:0", "+07:", "+0700:", "+𝕆", "-é:ab"] {
            assert_eq!(parse_utc(&format!("2024-12-25T11:06:07{loose}")), None, "{loose}");
        }
    }
}

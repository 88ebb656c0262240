//! RFC 3339 times and `90d`-style durations, as contracts and `--at` write them.

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::event::Nanos;

const SECOND: i64 = 1_000_000_000;
const UNITS: [(char, i64); 4] = [
    ('d', 86_400 * SECOND),
    ('h', 3_600 * SECOND),
    ('m', 60 * SECOND),
    ('s', SECOND),
];

/// Why a time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not an RFC 3339 time; write it like \"2026-11-01T00:00:00Z\" (with a date, a time and a zone)"
)]
pub struct TimeError {
    input: String,
}

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a duration; write a whole number and one unit of s, m, h or d, like \"90d\" or \"15m\""
)]
pub struct DurationError {
    input: String,
}

/// Parses an RFC 3339 time (`2026-11-01T00:00:00Z`, offsets allowed) into
/// nanoseconds since the Unix epoch. Use it as the `--at` value parser.
pub fn parse_rfc3339(s: &str) -> Result<Nanos, TimeError> {
    let err = || TimeError {
        input: s.chars().take(64).collect(),
    };
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).map_err(|_| err())?;
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| err())
}

/// Formats as RFC 3339 in UTC, whole seconds when the time has no fraction.
pub fn format_rfc3339(t: Nanos) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t))
        .ok()
        .and_then(|dt| dt.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{t}ns"))
}

/// Parses `<whole number><s|m|h|d>` into nanoseconds.
pub fn parse_duration(s: &str) -> Result<Nanos, DurationError> {
    let err = || DurationError {
        input: s.chars().take(64).collect(),
    };
    let unit = s.chars().last().ok_or_else(err)?;
    let (_, scale) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(err)?;
    let digits = s.get(..s.len() - unit.len_utf8()).ok_or_else(err)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let n: i64 = digits.parse().map_err(|_| err())?;
    n.checked_mul(*scale).ok_or_else(err)
}

/// Formats a duration with the largest unit that divides it (`90d`, `15m`);
/// sub-second durations in `ms`/`ns`.
pub fn format_duration(d: Nanos) -> String {
    if d == 0 {
        return "0s".into();
    }
    for (unit, scale) in UNITS {
        if d % scale == 0 {
            return format!("{}{unit}", d / scale);
        }
    }
    if d % 1_000_000 == 0 {
        format!("{}ms", d / 1_000_000)
    } else {
        format!("{d}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = parse_rfc3339("2026-11-01T00:00:00Z").unwrap();
        assert_eq!(t, 1_793_491_200 * SECOND);
        assert_eq!(format_rfc3339(t), "2026-11-01T00:00:00Z");
        assert_eq!(parse_rfc3339("2026-11-01T01:00:00+01:00").unwrap(), t);
        assert_eq!(
            parse_rfc3339("2026-11-01T00:00:00.5Z").unwrap(),
            t + SECOND / 2
        );
        for bad in [
            "2026-11-01",
            "2026-13-01T00:00:00Z",
            "yesterday",
            "",
            "2026-11-01T00:00:00",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d").unwrap(), 90 * 86_400 * SECOND);
        assert_eq!(parse_duration("15m").unwrap(), 900 * SECOND);
        assert_eq!(parse_duration("24h").unwrap(), 86_400 * SECOND);
        assert_eq!(parse_duration("0s").unwrap(), 0);
        for bad in [
            "",
            "d",
            "90",
            "90w",
            "-1d",
            "1.5h",
            "1h30m",
            " 1h",
            "99999999999999d",
            "٣d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(90 * 86_400 * SECOND), "90d");
        assert_eq!(format_duration(25 * 3_600 * SECOND), "25h");
        assert_eq!(format_duration(90 * SECOND), "90s");
        assert_eq!(format_duration(1_500_000), "1500000ns");
    }
}

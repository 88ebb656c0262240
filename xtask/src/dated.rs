//! The demo's contract, dated relative to now.
//!
//! `examples/contract.yaml` is written for one moment, [`ANCHOR`]: its
//! stages, credential issue dates and revocation sit around that day so
//! the demo shows exactly one of each violation and a next stage ahead.
//! Read on a later day, the calendar moves under it (on 2026-12-01 the
//! compliant client's key turns 30 days old and shows `stale_credential`).
//! The demo therefore runs a copy with every timestamp moved by whole days
//! so that today is the anchor day again.

use std::time::{SystemTime, UNIX_EPOCH};

/// The day the example contract is written for (seconds since the epoch of
/// 2026-11-29T00:00:00Z): "now" falls on this day after shifting.
pub const ANCHOR: i64 = 1_795_910_400;

const DAY: i64 = 86_400;

/// `yaml` with every `"YYYY-MM-DDTHH:MM:SSZ"` timestamp moved by the whole
/// days between [`ANCHOR`] and `now` (seconds since the epoch).
pub fn shift(yaml: &str, now: i64) -> String {
    let days = (now - ANCHOR).div_euclid(DAY);
    let mut out = String::with_capacity(yaml.len());
    let mut rest = yaml;
    while let Some(at) = rest.find('"') {
        let (head, tail) = rest.split_at(at + 1);
        out.push_str(head);
        rest = tail;
        if let Some(ts) = rest.get(..20).and_then(parse)
            && rest.as_bytes().get(20) == Some(&b'"')
        {
            out.push_str(&format(ts + days * DAY));
            rest = &rest[20..];
        }
    }
    out.push_str(rest);
    out
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(ANCHOR, |d| i64::try_from(d.as_secs()).unwrap_or(ANCHOR))
}

/// `YYYY-MM-DDTHH:MM:SSZ` → seconds since the epoch.
fn parse(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    Some(days_from_civil(y, m, d) * DAY + hh * 3600 + mm * 60 + ss)
}

fn format(t: i64) -> String {
    let (days, secs) = (t.div_euclid(DAY), t.rem_euclid(DAY));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

// Howard Hinnant's days <-> civil date algorithms (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/contract.yaml");

    fn stamps(yaml: &str) -> Vec<i64> {
        yaml.split('"').filter_map(parse).collect()
    }

    #[test]
    fn anchor_is_the_documented_day() {
        assert_eq!(format(ANCHOR), "2026-11-29T00:00:00Z");
        assert_eq!(parse("2026-11-29T00:00:00Z"), Some(ANCHOR));
    }

    #[test]
    fn dates_round_trip_across_months_and_leap_days() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "2026-12-31T12:00:00Z",
            "2027-03-01T00:00:00Z",
            "2100-02-28T01:02:03Z",
        ] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
        assert_eq!(parse("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse("not a timestamp!!!!Z"), None);
    }

    #[test]
    fn on_the_anchor_day_nothing_moves() {
        assert_eq!(shift(EXAMPLE, ANCHOR + 3600), EXAMPLE);
    }

    /// On any day the shifted contract keeps the demo's story: the same
    /// distances from now to every stage, issue date and revocation as on
    /// the anchor day, so globex's key is never stale and a next stage is
    /// always ahead.
    #[test]
    fn every_day_sees_the_anchor_days_timeline() {
        let original = stamps(EXAMPLE);
        assert_eq!(original.len(), 8, "the example's timestamps changed");
        for days in [1, 2, 30, 365, 4000] {
            let now = ANCHOR + days * DAY + 7 * 3600;
            let shifted = stamps(&shift(EXAMPLE, now));
            assert_eq!(shifted.len(), original.len());
            for (s, o) in shifted.iter().zip(&original) {
                assert_eq!(s - now, o - (ANCHOR + 7 * 3600), "{days} days on");
            }
            // The next stage (the last startsAt) is ahead of now.
            assert!(shifted.iter().any(|t| *t > now + 30 * DAY));
        }
        // The unshifted file does age: the reason for all this.
        assert!(stamps(EXAMPLE).iter().all(|t| *t < ANCHOR + 60 * DAY));
    }
}

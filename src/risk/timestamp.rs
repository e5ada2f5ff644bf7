//! The clock risk rules read: milliseconds since the Unix epoch (UTC), passed in
//! by the caller so velocity windows and expiry dates are tested without sleeping.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time, milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_unix_ms(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    /// The system clock; a clock before 1970 reads as the epoch.
    pub fn now() -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Timestamp(ms)
    }

    /// A UTC calendar time; None if any part is out of range.
    pub fn from_utc(
        year: i32,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
    ) -> Option<Timestamp> {
        let month = time::Month::try_from(month).ok()?;
        let date = time::Date::from_calendar_date(year, month, day).ok()?;
        let time = time::Time::from_hms(hour, minute, second).ok()?;
        let seconds = time::PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp();
        u64::try_from(seconds).ok().map(|s| Timestamp(s * 1000))
    }

    /// Reads `YYYY-MM-DDThh:mm:ssZ` (the `Z` may be left off).
    pub fn parse_utc(text: &str) -> Option<Timestamp> {
        let b = text.strip_suffix('Z').unwrap_or(text).as_bytes();
        if b.len() != 19
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = b.get(range)?;
            part.iter().try_fold(0u32, |acc, &d| {
                d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
            })
        };
        Timestamp::from_utc(
            i32::try_from(number(0..4)?).ok()?,
            u8::try_from(number(5..7)?).ok()?,
            u8::try_from(number(8..10)?).ok()?,
            u8::try_from(number(11..13)?).ok()?,
            u8::try_from(number(14..16)?).ok()?,
            u8::try_from(number(17..19)?).ok()?,
        )
    }

    pub fn unix_ms(self) -> u64 {
        self.0
    }

    /// This time plus `ms` milliseconds.
    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// The UTC year and month (1–12). Integer arithmetic only (H. Hinnant's
    /// days-to-civil), as the expiry rule asks on every request.
    pub fn year_month(self) -> (i32, u8) {
        // Below 2^64 ms, days fit an i64 many times over.
        let days = (self.0 / 86_400_000) as i64;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z - era * 146_097;
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let shifted_month = (5 * day_of_year + 2) / 153;
        let month = if shifted_month < 10 {
            shifted_month + 3
        } else {
            shifted_month - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        (i32::try_from(year).unwrap_or(i32::MAX), month as u8)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = i64::try_from(self.0 / 1000).unwrap_or(i64::MAX);
        match time::OffsetDateTime::from_unix_timestamp(seconds) {
            Ok(t) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            Err(_) => write!(f, "@{}ms", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_round_trips() {
        let t = Timestamp::parse_utc("2026-11-23T18:41:05Z").expect("valid");
        assert_eq!(t.unix_ms(), 1_795_459_265_000);
        assert_eq!(t.to_string(), "2026-11-23T18:41:05Z");
        assert_eq!(t.year_month(), (2026, 11));
        assert_eq!(Timestamp::parse_utc("2026-11-23 18:41:05"), Some(t));
    }

    #[test]
    fn year_and_month_agree_with_the_calendar() {
        let day = 86_400_000;
        for n in (0..60_000u64).step_by(7) {
            let t = Timestamp::from_unix_ms(n * day + (n % 86_400) * 1000);
            let civil = time::OffsetDateTime::from_unix_timestamp((t.unix_ms() / 1000) as i64)
                .expect("in range");
            assert_eq!(
                t.year_month(),
                (civil.year(), u8::from(civil.month())),
                "{t}"
            );
        }
    }

    #[test]
    fn malformed_utc_text_is_refused() {
        for bad in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-1a-23T18:41:05Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(Timestamp::parse_utc(bad), None, "{bad:?}");
        }
    }
}

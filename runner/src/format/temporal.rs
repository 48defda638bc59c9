//! Parsing date and timestamp text into Arrow's Date32 days and Timestamp microseconds.
//!
//! The default formats (`%Y-%m-%d` for dates; RFC 3339 and `%Y-%m-%d[T ]%H:%M:%S%.f` for
//! timestamps) go through a hand-written parser because they dominate real data and chrono's
//! format interpreter is several times slower; a column's own format (the field metadata key
//! [`FORMAT_METADATA_KEY`]) goes through chrono.

use std::str::FromStr;

use arrow::array::timezone::Tz;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};

/// The Field metadata key that carries a chrono strftime format for a date or timestamp column.
pub const FORMAT_METADATA_KEY: &str = "sluice.format";

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// How a timestamp column turns text into UTC microseconds.
#[derive(Debug, Clone)]
pub(crate) struct TimestampParser {
    format: Option<String>,
    /// Whether the custom format carries an offset (`%z` and friends).
    format_has_offset: bool,
    zone: Zone,
}

#[derive(Debug, Clone)]
enum Zone {
    /// No time zone, or UTC: wall time is stored as is.
    Utc,
    /// A fixed or named zone: wall time without an offset is local time there.
    Local(Tz),
}

impl TimestampParser {
    /// `tz` is the column's Arrow time zone; an unknown zone is an error naming it.
    pub(crate) fn new(format: Option<String>, tz: Option<&str>) -> Result<Self, String> {
        let zone = match tz {
            None => Zone::Utc,
            Some(name) if is_utc(name) => Zone::Utc,
            Some(name) => Zone::Local(Tz::from_str(name).map_err(|e| e.to_string())?),
        };
        let format_has_offset = format
            .as_deref()
            .is_some_and(|f| f.contains("%z") || f.contains("%:z") || f.contains("%#z"));
        Ok(TimestampParser {
            format,
            format_has_offset,
            zone,
        })
    }

    /// UTC microseconds since the epoch, or `None` when the text does not parse.
    pub(crate) fn parse(&self, text: &[u8]) -> Option<i64> {
        match &self.format {
            None => {
                let (wall, offset) = parse_default_timestamp(text)?;
                match offset {
                    Some(seconds) => wall.checked_sub(seconds as i64 * MICROS_PER_SECOND),
                    None => self.local_to_utc(wall),
                }
            }
            Some(format) => {
                let text = std::str::from_utf8(text).ok()?;
                if self.format_has_offset {
                    let parsed = DateTime::parse_from_str(text, format).ok()?;
                    return Some(parsed.timestamp_micros());
                }
                let naive = match NaiveDateTime::parse_from_str(text, format) {
                    Ok(naive) => naive,
                    // A date-only format: midnight.
                    Err(_) => NaiveDate::parse_from_str(text, format)
                        .ok()?
                        .and_hms_opt(0, 0, 0)?,
                };
                self.local_to_utc(naive.and_utc().timestamp_micros())
            }
        }
    }

    fn local_to_utc(&self, wall_micros: i64) -> Option<i64> {
        match &self.zone {
            Zone::Utc => Some(wall_micros),
            Zone::Local(tz) => {
                let naive = DateTime::from_timestamp_micros(wall_micros)?.naive_utc();
                // In a backward DST shift the earlier instant wins; a wall time inside a
                // forward shift does not exist and does not parse.
                let local = tz.from_local_datetime(&naive).earliest()?;
                Some(local.timestamp_micros())
            }
        }
    }
}

fn is_utc(name: &str) -> bool {
    matches!(
        name,
        "UTC" | "utc" | "Z" | "+00:00" | "+0000" | "+00" | "Etc/UTC" | "GMT" | "Etc/GMT"
    )
}

/// How a date column turns text into days since the epoch.
#[derive(Debug, Clone)]
pub(crate) struct DateParser {
    format: Option<String>,
}

impl DateParser {
    pub(crate) fn new(format: Option<String>) -> Self {
        DateParser { format }
    }

    pub(crate) fn parse(&self, text: &[u8]) -> Option<i32> {
        match &self.format {
            None => {
                if text.len() != 10 {
                    return None;
                }
                let days = parse_ymd(text)?;
                i32::try_from(days).ok()
            }
            Some(format) => {
                let text = std::str::from_utf8(text).ok()?;
                let date = NaiveDate::parse_from_str(text, format).ok()?;
                let days = date.signed_duration_since(NaiveDate::default()).num_days();
                i32::try_from(days).ok()
            }
        }
    }
}

/// Parses `YYYY-MM-DD` at the start of `text` into days since 1970-01-01.
fn parse_ymd(text: &[u8]) -> Option<i64> {
    if text.len() < 10 || text[4] != b'-' || text[7] != b'-' {
        return None;
    }
    let year = digits(&text[0..4])? as i64;
    let month = digits(&text[5..7])?;
    let day = digits(&text[8..10])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// Parses RFC 3339 or `YYYY-MM-DD[T ]HH:MM:SS[.fraction]` into wall-clock microseconds and
/// the offset in seconds, if the text carries one.
fn parse_default_timestamp(text: &[u8]) -> Option<(i64, Option<i32>)> {
    if text.len() < 19 {
        return None;
    }
    let days = parse_ymd(text)?;
    if !matches!(text[10], b'T' | b't' | b' ') || text[13] != b':' || text[16] != b':' {
        return None;
    }
    let hour = digits(&text[11..13])?;
    let minute = digits(&text[14..16])?;
    let second = digits(&text[17..19])?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut micros = 0i64;
    let mut rest = &text[19..];
    if let [b'.', tail @ ..] = rest {
        let count = tail.iter().take_while(|b| b.is_ascii_digit()).count();
        if count == 0 || count > 9 {
            return None;
        }
        for (i, b) in tail[..count].iter().enumerate() {
            if i < 6 {
                micros = micros * 10 + (b - b'0') as i64;
            }
        }
        for _ in count..6 {
            micros *= 10;
        }
        rest = &tail[count..];
    }
    let offset = match rest {
        [] => None,
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), zone @ ..] => {
            let (h, m) = match zone {
                [h1, h2] => (digits(&[*h1, *h2])?, 0),
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?)
                }
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = (h * 3600 + m * 60) as i32;
            Some(if *sign == b'-' { -seconds } else { seconds })
        }
        _ => return None,
    };
    let seconds = days * SECONDS_PER_DAY + (hour * 3600 + minute * 60 + second) as i64;
    Some((seconds * MICROS_PER_SECOND + micros, offset))
}

fn digits(text: &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for &b in text {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value * 10 + d as u32;
    }
    Some(value)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month as i64 + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn civil_days_match_chrono() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (1969, 12, 31),
            (2024, 3, 1),
            (1, 1, 1),
        ] {
            let expected = NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .signed_duration_since(NaiveDate::default())
                .num_days();
            assert_eq!(days_from_civil(y as i64, m, d), expected, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn default_dates() {
        let p = DateParser::new(None);
        assert_eq!(p.parse(b"1970-01-02"), Some(1));
        assert_eq!(p.parse(b"2023-02-29"), None);
        assert_eq!(p.parse(b"2024-02-29"), Some(19_782));
        assert_eq!(p.parse(b"2024-2-29"), None);
        let custom = DateParser::new(Some("%d/%m/%Y".into()));
        assert_eq!(custom.parse(b"02/01/1970"), Some(1));
    }

    #[test]
    fn default_timestamps() {
        let p = TimestampParser::new(None, None).unwrap();
        assert_eq!(
            p.parse(b"2024-01-02 03:04:05"),
            Some(micros("2024-01-02T03:04:05Z"))
        );
        assert_eq!(
            p.parse(b"2024-01-02T03:04:05.25"),
            Some(micros("2024-01-02T03:04:05.25Z"))
        );
        assert_eq!(
            p.parse(b"2024-01-02T03:04:05.123456789Z"),
            Some(micros("2024-01-02T03:04:05.123456Z"))
        );
        assert_eq!(
            p.parse(b"2024-01-02T03:04:05+02:00"),
            Some(micros("2024-01-02T01:04:05Z"))
        );
        assert_eq!(
            p.parse(b"2024-01-02T03:04:05-0130"),
            Some(micros("2024-01-02T04:34:05Z"))
        );
        assert_eq!(p.parse(b"2024-01-02 24:04:05"), None);
        assert_eq!(p.parse(b"2024-01-02 03:04"), None);
        assert_eq!(p.parse(b"2024-01-02 03:04:05x"), None);
    }

    #[test]
    fn wall_time_in_a_zone() {
        let p = TimestampParser::new(None, Some("America/New_York")).unwrap();
        assert_eq!(
            p.parse(b"2024-07-01 12:00:00"),
            Some(micros("2024-07-01T16:00:00Z"))
        );
        // An explicit offset wins over the column's zone.
        assert_eq!(
            p.parse(b"2024-07-01T12:00:00Z"),
            Some(micros("2024-07-01T12:00:00Z"))
        );
        // 02:30 does not exist on the spring-forward day.
        assert_eq!(p.parse(b"2024-03-10 02:30:00"), None);
        let fixed = TimestampParser::new(None, Some("+05:30")).unwrap();
        assert_eq!(
            fixed.parse(b"2024-07-01 12:00:00"),
            Some(micros("2024-07-01T06:30:00Z"))
        );
        assert!(TimestampParser::new(None, Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn custom_timestamp_formats() {
        let p = TimestampParser::new(Some("%d/%m/%Y %H:%M".into()), None).unwrap();
        assert_eq!(
            p.parse(b"02/01/2024 03:04"),
            Some(micros("2024-01-02T03:04:00Z"))
        );
        assert_eq!(p.parse(b"2024-01-02 03:04:05"), None);
        let offset = TimestampParser::new(Some("%Y%m%d %H%M%S %z".into()), None).unwrap();
        assert_eq!(
            offset.parse(b"20240102 030405 +0100"),
            Some(micros("2024-01-02T02:04:05Z"))
        );
        let date_only = TimestampParser::new(Some("%Y/%m/%d".into()), None).unwrap();
        assert_eq!(
            date_only.parse(b"2024/01/02"),
            Some(micros("2024-01-02T00:00:00Z"))
        );
    }
}

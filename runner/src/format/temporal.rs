//! Parsing date and timestamp text into Arrow's Date32 days and Timestamp microseconds.
//!
//! The default formats (`%Y-%m-%d` for dates; RFC 3339 and `%Y-%m-%d[T ]%H:%M:%S%.f` for
//! timestamps) go through a hand-written parser because they dominate real data and chrono's
//! format interpreter is several times slower. A column's own format (the field metadata key
//! [`FORMAT_METADATA_KEY`]) goes through chrono, except that the common fixed-width ones
//! ([`FixedLayout`]) are read digit by digit first; a value that fast reading does not accept
//! outright still goes to chrono, so the result is chrono's in every case.

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
    /// The custom format's fixed-width shape, when it has one.
    layout: Option<FixedLayout>,
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
            layout: format.as_deref().and_then(FixedLayout::of),
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
                if let Some(wall) = self.layout.and_then(|layout| layout.parse_micros(text)) {
                    return self.local_to_utc(wall);
                }
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
    /// Whether the custom format is `%Y-%m-%d`, read digit by digit first.
    iso: bool,
}

impl DateParser {
    pub(crate) fn new(format: Option<String>) -> Self {
        let iso = format.as_deref().and_then(FixedLayout::of) == Some(FixedLayout::Date);
        DateParser { format, iso }
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
                if self.iso
                    && text.len() == 10
                    && let Some(days) = parse_ymd(text)
                {
                    return i32::try_from(days).ok();
                }
                let text = std::str::from_utf8(text).ok()?;
                let date = NaiveDate::parse_from_str(text, format).ok()?;
                let days = date.signed_duration_since(NaiveDate::default()).num_days();
                i32::try_from(days).ok()
            }
        }
    }
}

/// A chrono format of fixed width that [`FixedLayout::parse_micros`] reads without chrono.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FixedLayout {
    /// `%Y-%m-%d` (or `%F`): midnight.
    Date,
    /// `%Y-%m-%d %H:%M:%S` with ` ` or `T` between date and time (`%F`, `%T` alike), and a
    /// `%.f` fraction after the seconds when `fraction` is set.
    DateTime { separator: u8, fraction: bool },
}

impl FixedLayout {
    fn of(format: &str) -> Option<FixedLayout> {
        let format = format.replace("%F", "%Y-%m-%d").replace("%T", "%H:%M:%S");
        let (format, fraction) = match format.strip_suffix("%.f") {
            Some(rest) => (rest, true),
            None => (format.as_str(), false),
        };
        match format {
            "%Y-%m-%d" if !fraction => Some(FixedLayout::Date),
            "%Y-%m-%d %H:%M:%S" => Some(FixedLayout::DateTime {
                separator: b' ',
                fraction,
            }),
            "%Y-%m-%dT%H:%M:%S" => Some(FixedLayout::DateTime {
                separator: b'T',
                fraction,
            }),
            _ => None,
        }
    }

    /// Wall-clock microseconds of a value in the strict form of the layout: every field
    /// zero-padded to its width, the seconds below 60, a fraction of 1 to 9 digits, nothing
    /// after. `None` means "not in that form", not "invalid": chrono accepts more (spaces,
    /// unpadded fields, leap seconds, longer fractions), so the caller asks chrono then.
    fn parse_micros(self, text: &[u8]) -> Option<i64> {
        let (separator, fraction) = match self {
            FixedLayout::Date => {
                if text.len() != 10 {
                    return None;
                }
                return Some(parse_ymd(text)? * SECONDS_PER_DAY * MICROS_PER_SECOND);
            }
            FixedLayout::DateTime {
                separator,
                fraction,
            } => (separator, fraction),
        };
        if text.len() < 19 || text[10] != separator {
            return None;
        }
        let micros = match &text[19..] {
            [] => 0,
            [b'.', digits @ ..] if fraction => fraction_micros(digits)?,
            _ => return None,
        };
        let days = parse_ymd(text)?;
        let seconds = parse_hms(&text[11..19])?;
        Some((days * SECONDS_PER_DAY + seconds) * MICROS_PER_SECOND + micros)
    }
}

/// Parses `HH:MM:SS` (seconds below 60) into seconds since midnight.
#[inline]
fn parse_hms(text: &[u8]) -> Option<i64> {
    if text[2] != b':' || text[5] != b':' {
        return None;
    }
    let hour = digits(&text[0..2])?;
    let minute = digits(&text[3..5])?;
    let second = digits(&text[6..8])?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some((hour * 3600 + minute * 60 + second) as i64)
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
    Some(days_from_civil_0_to_9999(year as u32, month, day))
}

/// Days before the 1st of each month in a year that starts on March 1st, by calendar month.
const DAYS_BEFORE_MONTH_FROM_MARCH: [u32; 12] =
    [306, 337, 0, 31, 61, 92, 122, 153, 184, 214, 245, 275];

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`), for
/// the years four digits can write, in unsigned arithmetic: cheaper than signed euclidean
/// divisions, and a timestamp column parses one per value.
#[inline]
fn days_from_civil_0_to_9999(year: u32, month: u32, day: u32) -> i64 {
    // One era (400 years) later, so that January of year 0 stays non-negative.
    let year = year + 400 - u32::from(month <= 2);
    let era = year / 400;
    let year_of_era = year - era * 400;
    let day_of_year = DAYS_BEFORE_MONTH_FROM_MARCH[month as usize - 1] + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era as i64 - 1) * 146_097 + day_of_era as i64 - 719_468
}

/// Parses RFC 3339 or `YYYY-MM-DD[T ]HH:MM:SS[.fraction]` into wall-clock microseconds and
/// the offset in seconds, if the text carries one.
fn parse_default_timestamp(text: &[u8]) -> Option<(i64, Option<i32>)> {
    if text.len() < 19 {
        return None;
    }
    let days = parse_ymd(text)?;
    if !matches!(text[10], b'T' | b't' | b' ') {
        return None;
    }
    let time = parse_hms(&text[11..19])?;
    let mut micros = 0;
    let mut rest = &text[19..];
    if let [b'.', tail @ ..] = rest {
        let count = tail.iter().take_while(|b| b.is_ascii_digit()).count();
        micros = fraction_micros(&tail[..count])?;
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
    let seconds = days * SECONDS_PER_DAY + time;
    Some((seconds * MICROS_PER_SECOND + micros, offset))
}

/// The microseconds of a fraction of a second given as 1 to 9 digits (truncated, as chrono
/// truncates nanoseconds to microseconds).
fn fraction_micros(text: &[u8]) -> Option<i64> {
    if !(1..=9).contains(&text.len()) {
        return None;
    }
    let kept = &text[..text.len().min(6)];
    let value = digits(kept)? as i64 * 10i64.pow(6 - kept.len() as u32);
    digits(&text[kept.len()..])?;
    Some(value)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn four_digit_civil_days_match_the_general_formula() {
        for year in 0..=9999u32 {
            for month in 1..=12 {
                for day in [1, 2, 15, 28, days_in_month(year as i64, month)] {
                    assert_eq!(
                        days_from_civil_0_to_9999(year, month, day),
                        days_from_civil(year as i64, month, day),
                        "{year}-{month}-{day}"
                    );
                }
            }
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

    /// Chrono alone, as a column's format was parsed before the fixed-width fast path.
    fn chrono_only(parser: &TimestampParser) -> TimestampParser {
        TimestampParser {
            layout: None,
            ..parser.clone()
        }
    }

    const FIXED_FORMATS: [&str; 8] = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%F %T",
        "%FT%T%.f",
        "%Y-%m-%d",
        "%F",
    ];

    #[test]
    fn fixed_layouts_are_recognised() {
        assert_eq!(FixedLayout::of("%Y-%m-%d"), Some(FixedLayout::Date));
        assert_eq!(
            FixedLayout::of("%F %T%.f"),
            Some(FixedLayout::DateTime {
                separator: b' ',
                fraction: true
            })
        );
        for other in [
            "%Y-%m-%d %H:%M",
            "%Y-%m-%d%.f",
            "%d/%m/%Y %H:%M:%S",
            "%Y-%m-%d %H:%M:%S%z",
            "%Y-%m-%d %H:%M:%S%.3f",
            "%Y-%m-%d  %H:%M:%S",
        ] {
            assert_eq!(FixedLayout::of(other), None, "{other}");
        }
    }

    #[test]
    fn fixed_layouts_agree_with_chrono_on_edge_cases() {
        let texts = [
            "2024-01-02 03:04:05",
            "2024-01-02T03:04:05",
            "2024-02-29 00:00:00",
            "2000-02-29 12:00:00",
            "2023-02-29 00:00:00",
            "1900-02-29 00:00:00",
            "2026-02-30 10:00:00",
            "2026-04-31 10:00:00",
            "2026-13-01 10:00:00",
            "2026-00-01 10:00:00",
            "2026-01-00 10:00:00",
            "2026-01-32 10:00:00",
            "0000-01-01 00:00:00",
            "9999-12-31 23:59:59",
            "1969-12-31 23:59:59.999999",
            "1969-12-31 23:59:59.5",
            "2024-01-02 24:00:00",
            "2024-01-02 23:60:00",
            "2024-12-31 23:59:60",
            "2024-12-31 23:59:60.5",
            "2024-01-02 03:04:05.1",
            "2024-01-02 03:04:05.12",
            "2024-01-02 03:04:05.123",
            "2024-01-02 03:04:05.1234",
            "2024-01-02 03:04:05.12345",
            "2024-01-02 03:04:05.123456",
            "2024-01-02 03:04:05.1234567",
            "2024-01-02 03:04:05.12345678",
            "2024-01-02 03:04:05.123456789",
            "2024-01-02 03:04:05.1234567891",
            "2024-01-02 03:04:05.",
            "2024-01-02 03:04:05.12a",
            "2024-01-02 03:04:05x",
            "2024-01-02 03:04:05 ",
            "2024-01-02 03:04:05Z",
            "2024-01-02 03:04",
            "2024-01-02 3:04:05",
            "2024-1-02 03:04:05",
            "2024-01-02  03:04:05",
            "2024-01-0203:04:05",
            "2024-01-02t03:04:05",
            "+2024-01-02 03:04:05",
            "20240-01-02 03:04:05",
            "2024/01/02 03:04:05",
            "2024-01-02",
            "2024-02-29",
            "2023-02-29",
            "2024-01-0",
            "2024-01-02x",
            "",
            "é024-01-02 03:04:05",
            "2024-01-02 03:04:0é",
        ];
        let mut fast = 0;
        for format in FIXED_FORMATS {
            for zone in [None, Some("America/New_York")] {
                let parser = TimestampParser::new(Some(format.into()), zone).unwrap();
                assert!(parser.layout.is_some(), "{format}");
                let reference = chrono_only(&parser);
                for text in texts {
                    assert_eq!(
                        parser.parse(text.as_bytes()),
                        reference.parse(text.as_bytes()),
                        "{format:?} {zone:?} {text:?}"
                    );
                    fast += usize::from(
                        parser
                            .layout
                            .unwrap()
                            .parse_micros(text.as_bytes())
                            .is_some(),
                    );
                }
            }
            let dates = DateParser::new(Some(format.into()));
            let reference = DateParser {
                iso: false,
                ..dates.clone()
            };
            for text in texts {
                assert_eq!(
                    dates.parse(text.as_bytes()),
                    reference.parse(text.as_bytes()),
                    "{format:?} {text:?}"
                );
            }
        }
        // The fast path did the work for every strictly well-formed value: 33 over the
        // formats, in each of the two zones.
        assert_eq!(fast, 66);
        let p = TimestampParser::new(Some("%Y-%m-%d %H:%M:%S".into()), None).unwrap();
        assert_eq!(
            p.parse(b"2024-02-29 01:02:03"),
            Some(micros("2024-02-29T01:02:03Z"))
        );
        assert_eq!(p.parse(b"2026-02-30 01:02:03"), None);
        assert_eq!(p.parse(b"2024-01-02 03:04:05x"), None);
        let f = TimestampParser::new(Some("%Y-%m-%dT%H:%M:%S%.f".into()), None).unwrap();
        assert_eq!(
            f.parse(b"2024-01-02T03:04:05.123456789"),
            Some(micros("2024-01-02T03:04:05.123456Z"))
        );
        let d = DateParser::new(Some("%Y-%m-%d".into()));
        assert!(d.iso);
        assert_eq!(d.parse(b"2024-02-29"), Some(19_782));
        assert_eq!(d.parse(b"2026-02-30"), None);
    }

    /// Random near-miss values (digits anywhere, a stray byte now and then) must read the
    /// same through the fast path as through chrono.
    #[test]
    fn fixed_layouts_agree_with_chrono_on_random_values() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let template = b"2024-02-28 23:59:59.123456789";
        let parsers: Vec<TimestampParser> = FIXED_FORMATS
            .iter()
            .map(|f| TimestampParser::new(Some(f.to_string()), None).unwrap())
            .collect();
        for _ in 0..20_000 {
            let len = [10, 19, 19, 19, 21, 26, 29][(next() % 7) as usize];
            let mut text = template[..len].to_vec();
            for b in text.iter_mut() {
                if b.is_ascii_digit() && next() % 3 == 0 {
                    *b = b'0' + (next() % 10) as u8;
                }
            }
            if next() % 8 == 0 {
                let i = (next() % len as u64) as usize;
                text[i] = b" T:-.x9"[(next() % 7) as usize];
            }
            if len > 10 && next() % 2 == 0 {
                text[10] = b'T';
            }
            for parser in &parsers {
                assert_eq!(
                    parser.parse(&text),
                    chrono_only(parser).parse(&text),
                    "{:?} {:?}",
                    parser.format,
                    String::from_utf8_lossy(&text)
                );
            }
        }
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

//! Cron evaluation in a time zone: the fire times of a schedule, and the data interval of
//! each fire ([previous fire, fire)). The expression is parsed and matched by `croner`.

use std::str::FromStr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;

/// The nicknames a schedule may use instead of five fields.
const NICKNAMES: [&str; 6] = [
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
];

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    cron: croner::Cron,
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl CronSchedule {
    /// Parses five fields (minute hour day-of-month month day-of-week) or a nickname.
    pub fn parse(expr: &str) -> Result<CronSchedule, String> {
        let trimmed = expr.trim();
        let fields = trimmed.split_whitespace().count();
        if trimmed.starts_with('@') {
            if !NICKNAMES.contains(&trimmed.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "unknown nickname {trimmed:?}: use @hourly, @daily, @weekly, @monthly or @yearly"
                ));
            }
        } else if fields != 5 {
            return Err(format!(
                "must have five fields (minute hour day-of-month month day-of-week) or be a nickname such as @daily (got {fields} fields in {trimmed:?})"
            ));
        }
        let cron = croner::Cron::from_str(trimmed)
            .map_err(|e| format!("not a valid cron expression ({e}; got {trimmed:?})"))?;
        Ok(CronSchedule {
            expr: trimmed.to_string(),
            cron,
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The first fire strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last fire strictly before `t`.
    pub fn previous_before(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&tz);
        self.cron
            .find_previous_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last fire at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.previous_before(t + Duration::seconds(1), tz)
    }

    /// The fires in (`after`, `until`], oldest first, at most `limit` of them (the oldest).
    pub fn fires_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        tz: Tz,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = after;
        while out.len() < limit {
            match self.next_after(t, tz) {
                Some(next) if next <= until => {
                    out.push(next);
                    t = next;
                }
                _ => break,
            }
        }
        out
    }

    /// The newest `count` fires in (`after`, `until`], oldest first, and whether older fires
    /// in that range were left out.
    pub fn newest_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        tz: Tz,
        count: usize,
    ) -> (Vec<DateTime<Utc>>, bool) {
        let mut out = Vec::new();
        let mut t = until + Duration::seconds(1);
        let mut more = false;
        while let Some(prev) = self.previous_before(t, tz) {
            if prev <= after {
                break;
            }
            if out.len() == count {
                more = true;
                break;
            }
            out.push(prev);
            t = prev;
        }
        out.reverse();
        (out, more)
    }

    /// The data interval of the fire at `fire`: [previous fire, fire).
    pub fn interval_of(&self, fire: DateTime<Utc>, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = self.previous_before(fire, tz).unwrap_or(fire);
        (start, fire)
    }
}

/// A run id derived from the scheduled time: `<job>-20261122T0200Z` (UTC, minutes).
pub fn run_id(job: &str, fire: DateTime<Utc>) -> String {
    format!("{job}-{}", fire.format("%Y%m%dT%H%MZ"))
}

/// A fire time shown in its zone and in UTC: `2026-03-29 03:00 CEST (2026-03-29 01:00 UTC)`.
pub fn describe(fire: DateTime<Utc>, tz: Tz) -> String {
    let local = tz.from_utc_datetime(&fire.naive_utc());
    format!(
        "{}  ({})",
        local.format("%Y-%m-%d %H:%M %Z (%:z)"),
        fire.format("%Y-%m-%d %H:%M UTC")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next_n(expr: &str, tz: Tz, from: &str, n: usize) -> Vec<String> {
        let cron = CronSchedule::parse(expr).unwrap();
        let mut t = utc(from);
        (0..n)
            .map(|_| {
                t = cron.next_after(t, tz).unwrap();
                t.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn five_fields_or_a_nickname() {
        assert!(CronSchedule::parse("0 2 * * *").is_ok());
        assert!(CronSchedule::parse("@hourly").is_ok());
        assert!(CronSchedule::parse("@daily").is_ok());
        let six = CronSchedule::parse("0 0 2 * * *").unwrap_err();
        assert!(six.contains("five fields"), "{six}");
        let bad = CronSchedule::parse("61 * * * *").unwrap_err();
        assert!(bad.contains("not a valid cron expression"), "{bad}");
        let nick = CronSchedule::parse("@often").unwrap_err();
        assert!(nick.contains("unknown nickname"), "{nick}");
    }

    #[test]
    fn run_ids_are_utc_minutes() {
        assert_eq!(
            run_id("taxi", utc("2026-11-22T03:00:00+01:00")),
            "taxi-20261122T0200Z"
        );
    }

    #[test]
    fn berlin_spring_forward_gap_fires_once_after_the_gap() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let fires = next_n("30 2 * * *", tz, "2026-03-27T12:00:00Z", 3);
        assert_eq!(fires[0], "2026-03-28T01:30:00+00:00");
        // The day of the gap fires once, at the first valid local time after 02:30.
        assert_eq!(fires[1], "2026-03-29T01:00:00+00:00");
        assert_eq!(fires[2], "2026-03-30T00:30:00+00:00");
    }

    #[test]
    fn berlin_fall_back_overlap_fires_once() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let fires = next_n("30 2 * * *", tz, "2026-10-24T12:00:00Z", 2);
        assert_eq!(fires[0], "2026-10-25T00:30:00+00:00");
        assert_eq!(fires[1], "2026-10-26T01:30:00+00:00");
    }

    #[test]
    fn hourly_across_new_york_transitions_is_every_real_hour() {
        let tz: Tz = "America/New_York".parse().unwrap();
        // 2026-03-08 02:00 EST -> 03:00 EDT: the local hour 02 does not exist.
        let spring = next_n("@hourly", tz, "2026-03-08T05:30:00Z", 3);
        assert_eq!(
            spring,
            [
                "2026-03-08T06:00:00+00:00",
                "2026-03-08T07:00:00+00:00",
                "2026-03-08T08:00:00+00:00"
            ]
        );
        // 2026-11-01 02:00 EDT -> 01:00 EST: the hour 01 happens twice.
        let fall = next_n("@hourly", tz, "2026-11-01T04:30:00Z", 3);
        assert_eq!(fall[0], "2026-11-01T05:00:00+00:00");
        assert_eq!(fall[2], "2026-11-01T07:00:00+00:00");
    }

    #[test]
    fn month_ends_and_february_29() {
        let leap = next_n("0 0 29 2 *", Tz::UTC, "2026-01-01T00:00:00Z", 2);
        assert_eq!(
            leap,
            ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]
        );
        let thirty_first = next_n("0 0 31 * *", Tz::UTC, "2026-01-31T12:00:00Z", 2);
        assert_eq!(
            thirty_first,
            ["2026-03-31T00:00:00+00:00", "2026-05-31T00:00:00+00:00"]
        );
        let monthly = next_n("@monthly", Tz::UTC, "2026-12-15T00:00:00Z", 2);
        assert_eq!(
            monthly,
            ["2027-01-01T00:00:00+00:00", "2027-02-01T00:00:00+00:00"]
        );
    }

    #[test]
    fn intervals_run_from_the_previous_fire() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let cron = CronSchedule::parse("0 0 * * *").unwrap();
        // Midnight Berlin after the spring-forward night: the interval is 23 hours long.
        let fire = utc("2026-03-29T22:00:00Z");
        let (start, end) = cron.interval_of(fire, tz);
        assert_eq!(start, utc("2026-03-28T23:00:00Z"));
        assert_eq!(end, fire);
    }

    #[test]
    fn newest_between_keeps_the_latest_in_order() {
        let cron = CronSchedule::parse("@hourly").unwrap();
        let (fires, more) = cron.newest_between(
            utc("2026-01-01T00:00:00Z"),
            utc("2026-01-01T05:30:00Z"),
            Tz::UTC,
            3,
        );
        assert_eq!(
            fires,
            [
                utc("2026-01-01T03:00:00Z"),
                utc("2026-01-01T04:00:00Z"),
                utc("2026-01-01T05:00:00Z")
            ]
        );
        assert!(more);
        let (all, more) = cron.newest_between(
            utc("2026-01-01T02:00:00Z"),
            utc("2026-01-01T05:00:00Z"),
            Tz::UTC,
            10,
        );
        assert_eq!(all.len(), 3);
        assert!(!more);
    }
}

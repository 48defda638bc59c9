//! Which fires are due now: the newest `catchUp.maxRuns` fires since the last one that ran,
//! oldest first, without those past `startingDeadline`.

use chrono::{DateTime, Utc};

use crate::spec::schedule::Schedule;
use crate::state::history::Trigger;

/// One fire that should start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub time: DateTime<Utc>,
    pub trigger: Trigger,
}

/// The fires due at one moment, and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DuePlan {
    /// Oldest first.
    pub due: Vec<Due>,
    /// Fires dropped because they are past the starting deadline (oldest first).
    pub past_deadline: Vec<DateTime<Utc>>,
    /// Whether older fires than those considered were missed (beyond `catchUp.maxRuns`).
    pub beyond_max_runs: bool,
}

impl DuePlan {
    /// The newest fire considered (due or dropped): what counts as handled once acted on.
    pub fn newest(&self) -> Option<DateTime<Utc>> {
        self.due
            .iter()
            .map(|d| d.time)
            .chain(self.past_deadline.iter().copied())
            .max()
    }
}

/// The fires due at `now`, given the newest fire that was handled (`None` for a schedule
/// that never ran: then only the latest fire at or before `now` is due).
pub fn due_at(schedule: &Schedule, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DuePlan {
    if schedule.suspend {
        return DuePlan::default();
    }
    let tz = schedule.time_zone;
    let (fires, beyond_max_runs) = match last {
        None => (
            schedule
                .cron
                .latest_at_or_before(now, tz)
                .into_iter()
                .collect(),
            false,
        ),
        Some(last) => {
            schedule
                .cron
                .newest_between(last, now, tz, schedule.max_catch_up_runs as usize)
        }
    };
    let mut plan = DuePlan {
        beyond_max_runs,
        ..DuePlan::default()
    };
    let newest = fires.last().copied();
    for time in fires {
        let late = now - time;
        let past = schedule
            .starting_deadline
            .is_some_and(|d| late.to_std().is_ok_and(|late| late > d));
        if past {
            plan.past_deadline.push(time);
        } else {
            let trigger = if Some(time) == newest {
                Trigger::Schedule
            } else {
                Trigger::CatchUp
            };
            plan.due.push(Due { time, trigger });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::schedule::load_schedule_str;

    fn schedule(extra: &str) -> Schedule {
        // A directory per call: tests run side by side, and one writing the file while
        // another reads it would read it empty.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sluice-catchup-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("job.yaml"), "kind: Job\n").unwrap();
        let text = format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: Schedule\nmetadata:\n  name: hourly\nspec:\n  cron: \"@hourly\"\n  target: job.yaml\n{extra}"
        );
        load_schedule_str(&text, "hourly.yaml", &dir).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_new_schedule_runs_only_the_latest_fire() {
        let plan = due_at(&schedule(""), None, utc("2026-01-01T05:10:00Z"));
        assert_eq!(plan.due.len(), 1);
        assert_eq!(plan.due[0].time, utc("2026-01-01T05:00:00Z"));
        assert_eq!(plan.due[0].trigger, Trigger::Schedule);
    }

    #[test]
    fn missed_fires_run_oldest_first_up_to_max_runs() {
        let s = schedule("  catchUp:\n    maxRuns: 2\n");
        let plan = due_at(
            &s,
            Some(utc("2026-01-01T01:00:00Z")),
            utc("2026-01-01T04:05:00Z"),
        );
        let times: Vec<_> = plan.due.iter().map(|d| d.time).collect();
        assert_eq!(
            times,
            [utc("2026-01-01T03:00:00Z"), utc("2026-01-01T04:00:00Z")]
        );
        assert_eq!(plan.due[0].trigger, Trigger::CatchUp);
        assert!(plan.beyond_max_runs);
        // Nothing new since the last fire: nothing due.
        let idle = due_at(
            &s,
            Some(utc("2026-01-01T04:00:00Z")),
            utc("2026-01-01T04:59:59Z"),
        );
        assert!(idle.due.is_empty());
    }

    #[test]
    fn fires_past_the_starting_deadline_are_dropped() {
        let s = schedule("  catchUp:\n    maxRuns: 5\n  startingDeadline: 90m\n");
        let plan = due_at(
            &s,
            Some(utc("2026-01-01T00:00:00Z")),
            utc("2026-01-01T03:10:00Z"),
        );
        assert_eq!(plan.past_deadline, [utc("2026-01-01T01:00:00Z")]);
        assert_eq!(plan.due.len(), 2);
        assert_eq!(plan.newest(), Some(utc("2026-01-01T03:00:00Z")));
    }

    #[test]
    fn a_suspended_schedule_fires_nothing() {
        let s = schedule("  suspend: true\n");
        assert!(due_at(&s, None, utc("2026-01-01T03:10:00Z")).due.is_empty());
    }
}

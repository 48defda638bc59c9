//! A schedule's params: minijinja templates over the fire's logical time and data interval,
//! rendered into `--param NAME=VALUE` overrides of a job target, and its `args`: the
//! arguments of a task definition target.
//!
//! Times are values in RFC 3339 in the schedule's time zone (`2026-11-22T03:00:00+01:00`).
//! Filters: `format(fmt[, zone])` (strftime, in the schedule's zone unless one is named),
//! `add(span)` and `sub(span)` with spans such as `1d`, `2h`, `30m`, `1w`, `1mo`, `1d12h`;
//! days, weeks and months are calendar units in the schedule's zone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Days, FixedOffset, Months, Utc};
use chrono_tz::Tz;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, context};

/// What a fire's templates can refer to.
#[derive(Debug, Clone, Copy)]
pub struct FireTimes {
    /// The scheduled (logical) time of the fire.
    pub time: DateTime<Utc>,
    /// The data interval [start, end); end is the fire time.
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub tz: Tz,
}

/// The params of a schedule, checked to compile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParamTemplates {
    sources: BTreeMap<String, String>,
}

impl ParamTemplates {
    /// Compiles every template; the errors come back by param name.
    pub fn compile(
        params: &BTreeMap<String, String>,
    ) -> Result<ParamTemplates, Vec<(String, String)>> {
        let env = environment(Tz::UTC);
        let mut errors = Vec::new();
        for (name, source) in params {
            if !crate::spec::template::is_param_name(name) {
                errors.push((
                    name.clone(),
                    "not a valid param name: a letter or '_', then letters, digits, '_' or '-'"
                        .to_string(),
                ));
            }
            if let Err(e) = env.template_from_str(source) {
                errors.push((name.clone(), format!("invalid template: {}", describe(&e))));
            }
        }
        if errors.is_empty() {
            Ok(ParamTemplates {
                sources: params.clone(),
            })
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The params whose text is a template (`{{` or `{%`), which only a scheduler can fill.
    pub fn templated(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|(_, s)| is_template(s))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// The params as written, for targets that cannot be templated per fire.
    pub fn sources(&self) -> &BTreeMap<String, String> {
        &self.sources
    }

    /// Renders every param for one fire, in name order.
    pub fn render(
        &self,
        schedule: &str,
        times: &FireTimes,
    ) -> Result<Vec<(String, String)>, String> {
        let env = environment(times.tz);
        let ctx = fire_context(schedule, times);
        self.sources
            .iter()
            .map(|(name, source)| {
                env.render_str(source, &ctx)
                    .map(|value| (name.clone(), value))
                    .map_err(|e| format!("spec.params.{name}: {}", describe(&e)))
            })
            .collect()
    }
}

/// A schedule's `args` (the arguments of a task definition target's essential container),
/// each a template like a param, checked to compile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ArgTemplates {
    sources: Vec<String>,
}

impl ArgTemplates {
    /// Compiles every template; the errors come back by position.
    pub fn compile(args: &[String]) -> Result<ArgTemplates, Vec<(usize, String)>> {
        let env = environment(Tz::UTC);
        let errors: Vec<(usize, String)> = args
            .iter()
            .enumerate()
            .filter_map(|(i, source)| {
                env.template_from_str(source)
                    .err()
                    .map(|e| (i, format!("invalid template: {}", describe(&e))))
            })
            .collect();
        if errors.is_empty() {
            Ok(ArgTemplates {
                sources: args.to_vec(),
            })
        } else {
            Err(errors)
        }
    }

    /// Whether any argument is a template, which only a scheduler can fill.
    pub fn templated(&self) -> bool {
        self.sources.iter().any(|s| is_template(s))
    }

    /// The arguments as written, for targets that cannot be templated per fire.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Renders every argument for one fire, in order.
    pub fn render(&self, schedule: &str, times: &FireTimes) -> Result<Vec<String>, String> {
        let env = environment(times.tz);
        let ctx = fire_context(schedule, times);
        self.sources
            .iter()
            .enumerate()
            .map(|(i, source)| {
                env.render_str(source, &ctx)
                    .map_err(|e| format!("spec.args[{i}]: {}", describe(&e)))
            })
            .collect()
    }
}

fn is_template(source: &str) -> bool {
    source.contains("{{") || source.contains("{%")
}

/// What a template can refer to: `schedule.name`, `schedule.time`, `interval.start`, `interval.end`.
fn fire_context(schedule: &str, times: &FireTimes) -> minijinja::Value {
    context! {
        schedule => context! { name => schedule, time => stamp(times.time, times.tz) },
        interval => context! {
            start => stamp(times.start, times.tz),
            end => stamp(times.end, times.tz),
        },
    }
}

fn describe(error: &Error) -> String {
    match error.detail() {
        Some(detail) => format!("{} ({detail})", error.kind()),
        None => error.kind().to_string(),
    }
}

fn stamp(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).to_rfc3339()
}

fn environment(tz: Tz) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_filter(
        "format",
        move |value: String, fmt: String, zone: Option<String>| -> Result<String, Error> {
            let t = parse_time(&value)?;
            let zone = match zone {
                Some(z) => z
                    .parse::<Tz>()
                    .map_err(|_| invalid(format!("unknown time zone {z:?}")))?,
                None => tz,
            };
            let mut out = String::new();
            write!(out, "{}", t.with_timezone(&zone).format(&fmt))
                .map_err(|_| invalid(format!("invalid format {fmt:?}")))?;
            Ok(out)
        },
    );
    env.add_filter("add", move |value: String, span: String| {
        shift(&value, &span, tz, false)
    });
    env.add_filter("sub", move |value: String, span: String| {
        shift(&value, &span, tz, true)
    });
    env
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

fn parse_time(value: &str) -> Result<DateTime<FixedOffset>, Error> {
    DateTime::parse_from_rfc3339(value).map_err(|_| {
        invalid(format!(
            "not a time: {value:?} (use schedule.time, interval.start or interval.end)"
        ))
    })
}

/// One part of a span: a count and its unit.
enum Unit {
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
    Months,
}

/// `1d12h` -> [(1, Days), (12, Hours)].
fn parse_span(span: &str) -> Option<Vec<(u32, Unit)>> {
    let mut parts = Vec::new();
    let mut rest = span.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let count: u32 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..letters] {
            "s" => Unit::Seconds,
            "m" | "min" => Unit::Minutes,
            "h" => Unit::Hours,
            "d" => Unit::Days,
            "w" => Unit::Weeks,
            "mo" => Unit::Months,
            _ => return None,
        };
        rest = rest[letters..].trim_start();
        parts.push((count, unit));
    }
    Some(parts)
}

fn shift(value: &str, span: &str, tz: Tz, back: bool) -> Result<String, Error> {
    let parts = parse_span(span).ok_or_else(|| {
        invalid(format!(
            "not a span: {span:?} (use counts with s, m, h, d, w or mo, such as 1d or 1d12h)"
        ))
    })?;
    let mut t = parse_time(value)?.with_timezone(&tz);
    for (n, unit) in parts {
        let exact = |secs: i64| chrono::Duration::seconds(if back { -secs } else { secs });
        let calendar = |t: DateTime<Tz>, days: u64| {
            let moved = if back {
                t.checked_sub_days(Days::new(days))
            } else {
                t.checked_add_days(Days::new(days))
            };
            // A local time that does not exist on the target day moves by whole days instead.
            moved.unwrap_or(t + exact(days as i64 * 86_400))
        };
        t = match unit {
            Unit::Seconds => t + exact(n as i64),
            Unit::Minutes => t + exact(n as i64 * 60),
            Unit::Hours => t + exact(n as i64 * 3600),
            Unit::Days => calendar(t, n as u64),
            Unit::Weeks => calendar(t, n as u64 * 7),
            Unit::Months => {
                let moved = if back {
                    t.checked_sub_months(Months::new(n))
                } else {
                    t.checked_add_months(Months::new(n))
                };
                moved.ok_or_else(|| invalid(format!("{value} moved by {span} does not exist")))?
            }
        };
    }
    Ok(t.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn render_one(source: &str, times: &FireTimes) -> Result<String, String> {
        let params = BTreeMap::from([("p".to_string(), source.to_string())]);
        let templates = ParamTemplates::compile(&params).map_err(|e| e[0].1.clone())?;
        templates
            .render("nightly", times)
            .map(|mut v| v.remove(0).1)
    }

    fn berlin_day() -> FireTimes {
        FireTimes {
            time: utc("2026-03-29T22:00:00Z"),
            start: utc("2026-03-28T23:00:00Z"),
            end: utc("2026-03-29T22:00:00Z"),
            tz: "Europe/Berlin".parse().unwrap(),
        }
    }

    #[test]
    fn times_format_in_the_schedule_zone() {
        let t = berlin_day();
        assert_eq!(
            render_one("{{ interval.start | format('%Y-%m-%d') }}", &t).unwrap(),
            "2026-03-29"
        );
        assert_eq!(
            render_one("{{ interval.end | format('%Y-%m-%dT%H', 'UTC') }}", &t).unwrap(),
            "2026-03-29T22"
        );
        assert_eq!(
            render_one("{{ schedule.time }}", &t).unwrap(),
            "2026-03-30T00:00:00+02:00"
        );
        assert_eq!(
            render_one("month-{{ schedule.name }}", &t).unwrap(),
            "month-nightly"
        );
    }

    #[test]
    fn date_arithmetic_uses_calendar_days() {
        let t = berlin_day();
        // One calendar day before local midnight is local midnight, across the DST change.
        assert_eq!(
            render_one("{{ interval.end | sub('1d') }}", &t).unwrap(),
            "2026-03-29T00:00:00+01:00"
        );
        assert_eq!(
            render_one("{{ interval.end | sub('1d') | format('%Y-%m-%d') }}", &t).unwrap(),
            "2026-03-29"
        );
        assert_eq!(
            render_one("{{ interval.start | add('1mo') | format('%Y-%m') }}", &t).unwrap(),
            "2026-04"
        );
        assert_eq!(
            render_one(
                "{{ interval.start | add('1d12h') | format('%d %H:%M') }}",
                &t
            )
            .unwrap(),
            "30 12:00"
        );
    }

    #[test]
    fn args_render_in_order_and_name_their_position() {
        let t = berlin_day();
        let args = ArgTemplates::compile(&[
            "{{ interval.start | format('%Y-%m-%d') }}".to_string(),
            "{{ interval.end | format('%Y-%m-%d') }}".to_string(),
            "--full".to_string(),
        ])
        .unwrap();
        assert!(args.templated());
        assert_eq!(
            args.render("nightly", &t).unwrap(),
            ["2026-03-29", "2026-03-30", "--full"]
        );
        let bad = ArgTemplates::compile(&["ok".to_string(), "{{ x ".to_string()]).unwrap_err();
        assert_eq!(bad[0].0, 1);
        let unknown = ArgTemplates::compile(&["{{ interval.begin }}".to_string()])
            .unwrap()
            .render("nightly", &t)
            .unwrap_err();
        assert!(unknown.starts_with("spec.args[0]: "), "{unknown}");
        assert!(
            !ArgTemplates::compile(&["a".to_string()])
                .unwrap()
                .templated()
        );
    }

    #[test]
    fn mistakes_are_reported() {
        let t = berlin_day();
        let unknown = render_one("{{ interval.begin }}", &t).unwrap_err();
        assert!(unknown.contains("spec.params.p"), "{unknown}");
        let span = render_one("{{ interval.end | sub('yesterday') }}", &t).unwrap_err();
        assert!(span.contains("not a span"), "{span}");
        let syntax = render_one("{{ interval.end ", &t).unwrap_err();
        assert!(syntax.contains("invalid template"), "{syntax}");
    }
}

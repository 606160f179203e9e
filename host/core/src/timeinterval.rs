//! Named time intervals (Alertmanager's `time_intervals`): times of day, weekdays, days of month, months and years in a location, for mute and active windows.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

/// `[[time_intervals]]` as written: a name and the ranges that make it up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeIntervalConfig {
    /// Referenced by routes (`mute_time_intervals`, `active_time_intervals`).
    pub name: String,
    /// The interval matches when any of these matches (Alertmanager's nested `time_intervals`).
    #[serde(default)]
    pub intervals: Vec<RangeConfig>,
}

/// One range: every field given must match; a field left out matches anything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeConfig {
    /// Times of day, `{ start = "09:00", end = "17:00" }`, end exclusive (`24:00` allowed).
    #[serde(default)]
    pub times: Vec<TimeRangeConfig>,
    /// `monday`, `monday:friday`.
    #[serde(default)]
    pub weekdays: Vec<String>,
    /// `1`, `1:5`, `-1` (the last day), `-7:-1`.
    #[serde(default)]
    pub days_of_month: Vec<String>,
    /// `january`, `1:3`, `march:may`.
    #[serde(default)]
    pub months: Vec<String>,
    /// `2026`, `2026:2027`.
    #[serde(default)]
    pub years: Vec<String>,
    /// An IANA zone such as `Europe/Paris`; UTC when absent.
    #[serde(default)]
    pub location: Option<String>,
}

/// `{ start = "HH:MM", end = "HH:MM" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRangeConfig {
    /// Inclusive start.
    pub start: String,
    /// Exclusive end.
    pub end: String,
}

/// A checked time interval.
#[derive(Debug, Clone)]
pub struct TimeInterval {
    /// Its name.
    pub name: String,
    ranges: Vec<Range>,
}

#[derive(Debug, Clone)]
struct Range {
    /// Minutes of the day, `[start, end)`.
    times: Vec<(u32, u32)>,
    /// Days from Monday = 0, inclusive.
    weekdays: Vec<(u32, u32)>,
    /// Signed days of month, inclusive; negative counts from the end.
    days_of_month: Vec<(i32, i32)>,
    /// 1..=12, inclusive.
    months: Vec<(u32, u32)>,
    years: Vec<(i32, i32)>,
    location: Tz,
}

const WEEKDAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
const MONTHS: [&str; 12] =
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"];

impl TimeInterval {
    /// Check `config`; the error names the field (`intervals[0].weekdays[1]`) and the fix.
    pub fn parse(config: &TimeIntervalConfig) -> Result<TimeInterval, (String, String)> {
        let mut ranges = Vec::new();
        for (i, r) in config.intervals.iter().enumerate() {
            let at = |field: &str, j: usize| format!("intervals[{i}].{field}[{j}]");
            let mut times = Vec::new();
            for (j, t) in r.times.iter().enumerate() {
                let start = clock(t.start.trim()).ok_or_else(|| (at("times", j), format!("start `{}` is not HH:MM", t.start)))?;
                let end =
                    clock(t.end.trim()).ok_or_else(|| (at("times", j), format!("end `{}` is not HH:MM (24:00 is allowed)", t.end)))?;
                if start >= end {
                    return Err((at("times", j), format!("start {} is not before end {}", t.start, t.end)));
                }
                times.push((start, end));
            }
            let named = |list: &[String], field: &str, names: &[&str], base: u32| -> Result<Vec<(u32, u32)>, (String, String)> {
                list.iter()
                    .enumerate()
                    .map(|(j, s)| {
                        let one = |p: &str| {
                            let p = p.trim().to_ascii_lowercase();
                            names
                                .iter()
                                .position(|n| *n == p)
                                .map(|k| k as u32 + base)
                                .or_else(|| p.parse::<u32>().ok().filter(|n| base == 1 && (1..=names.len() as u32).contains(n)))
                        };
                        let (a, b) = s.split_once(':').unwrap_or((s, s));
                        match (one(a), one(b)) {
                            (Some(a), Some(b)) if a <= b => Ok((a, b)),
                            _ => Err((
                                at(field, j),
                                format!("`{s}` is not a {field} range such as `{}:{}`", names[0], names[names.len() - 1]),
                            )),
                        }
                    })
                    .collect()
            };
            let weekdays = named(&r.weekdays, "weekdays", &WEEKDAYS, 0)?;
            let months = named(&r.months, "months", &MONTHS, 1)?;
            let mut days_of_month = Vec::new();
            for (j, s) in r.days_of_month.iter().enumerate() {
                let (a, b) = s.split_once(':').unwrap_or((s, s));
                let valid = |d: i32| d != 0 && (-31..=31).contains(&d);
                match (a.trim().parse::<i32>(), b.trim().parse::<i32>()) {
                    (Ok(a), Ok(b)) if valid(a) && valid(b) && (a.signum() != b.signum() || a <= b) => days_of_month.push((a, b)),
                    _ => return Err((at("days_of_month", j), format!("`{s}` is not a day range such as `1:7` or `-3:-1`"))),
                }
            }
            let mut years = Vec::new();
            for (j, s) in r.years.iter().enumerate() {
                let (a, b) = s.split_once(':').unwrap_or((s, s));
                match (a.trim().parse::<i32>(), b.trim().parse::<i32>()) {
                    (Ok(a), Ok(b)) if a <= b => years.push((a, b)),
                    _ => return Err((at("years", j), format!("`{s}` is not a year range such as `2026:2027`"))),
                }
            }
            let location = match &r.location {
                None => Tz::UTC,
                Some(name) => parse_zone(name).map_err(|why| (format!("intervals[{i}].location"), why))?,
            };
            ranges.push(Range { times, weekdays, days_of_month, months, years, location });
        }
        Ok(TimeInterval { name: config.name.clone(), ranges })
    }

    /// Whether `at` falls in the interval.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.ranges.iter().any(|r| r.contains(at))
    }
}

impl Range {
    fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.location);
        let within = |ranges: &[(u32, u32)], v: u32| ranges.is_empty() || ranges.iter().any(|&(a, b)| a <= v && v <= b);
        let minute = local.hour() * 60 + local.minute();
        if !self.times.is_empty() && !self.times.iter().any(|&(a, b)| a <= minute && minute < b) {
            return false;
        }
        if !within(&self.weekdays, local.weekday().num_days_from_monday()) || !within(&self.months, local.month()) {
            return false;
        }
        if !self.years.is_empty() && !self.years.iter().any(|&(a, b)| a <= local.year() && local.year() <= b) {
            return false;
        }
        if !self.days_of_month.is_empty() {
            let days = days_in_month(local.year(), local.month()) as i32;
            let day = local.day() as i32;
            let absolute = |d: i32| if d < 0 { days + 1 + d } else { d };
            if !self.days_of_month.iter().any(|&(a, b)| absolute(a) <= day && day <= absolute(b)) {
                return false;
            }
        }
        true
    }
}

/// An IANA time zone, or why the name is not one.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    if name.eq_ignore_ascii_case("local") {
        return Err("`Local` depends on the host; name the zone, e.g. `Europe/Paris`".into());
    }
    name.parse::<Tz>().map_err(|_| format!("`{name}` is not an IANA time zone such as `Europe/Paris` or `UTC`"))
}

/// `HH:MM` as minutes of the day; `24:00` is the end of the day.
pub fn clock(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (y, m) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    NaiveDate::from_ymd_opt(y, m, 1).and_then(|d| d.pred_opt()).map_or(31, |d| d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(toml_text: &str) -> Result<TimeInterval, (String, String)> {
        let config: TimeIntervalConfig = toml::from_str(&format!("name = \"t\"\n{toml_text}")).unwrap();
        TimeInterval::parse(&config)
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn business_hours_in_a_zone() {
        let i = interval(
            "[[intervals]]\ntimes = [{ start = \"09:00\", end = \"17:00\" }]\nweekdays = [\"monday:friday\"]\nlocation = \"Europe/Paris\"",
        )
        .unwrap();
        // Monday 2026-11-23: Paris is UTC+1 in winter.
        assert!(i.contains(at("2026-11-23T08:00:00Z")), "09:00 Paris");
        assert!(!i.contains(at("2026-11-23T07:59:00Z")), "08:59 Paris");
        assert!(!i.contains(at("2026-11-23T16:00:00Z")), "17:00 Paris: end is exclusive");
        assert!(!i.contains(at("2026-11-22T10:00:00Z")), "Sunday");
    }

    #[test]
    fn days_of_month_count_from_the_end_and_months_and_years_match() {
        let i = interval("[[intervals]]\ndays_of_month = [\"-1\"]\nmonths = [\"february\"]\nyears = [\"2028\"]").unwrap();
        assert!(i.contains(at("2028-02-29T12:00:00Z")), "leap day is the last of February 2028");
        assert!(!i.contains(at("2028-02-28T12:00:00Z")));
        assert!(!i.contains(at("2027-02-28T12:00:00Z")), "wrong year");
        let whole_day = interval("[[intervals]]\ntimes = [{ start = \"00:00\", end = \"24:00\" }]").unwrap();
        assert!(whole_day.contains(at("2026-01-01T23:59:59Z")));
    }

    #[test]
    fn any_range_matches_and_an_empty_range_matches_always() {
        let i = interval("[[intervals]]\nweekdays = [\"saturday\"]\n[[intervals]]\nweekdays = [\"sunday\"]").unwrap();
        assert!(i.contains(at("2026-11-22T10:00:00Z")) && i.contains(at("2026-11-21T10:00:00Z")));
        assert!(!i.contains(at("2026-11-23T10:00:00Z")));
        assert!(interval("[[intervals]]").unwrap().contains(at("2026-11-23T10:00:00Z")));
    }

    #[test]
    fn bad_fields_are_named() {
        for (text, field) in [
            ("[[intervals]]\ntimes = [{ start = \"9\", end = \"17:00\" }]", "intervals[0].times[0]"),
            ("[[intervals]]\ntimes = [{ start = \"18:00\", end = \"17:00\" }]", "intervals[0].times[0]"),
            ("[[intervals]]\nweekdays = [\"monday\", \"funday\"]", "intervals[0].weekdays[1]"),
            ("[[intervals]]\ndays_of_month = [\"0\"]", "intervals[0].days_of_month[0]"),
            ("[[intervals]]\nmonths = [\"13\"]", "intervals[0].months[0]"),
            ("[[intervals]]\nlocation = \"Mars/Olympus\"", "intervals[0].location"),
        ] {
            assert_eq!(interval(text).unwrap_err().0, field, "{text}");
        }
    }
}

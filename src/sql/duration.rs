//! Durations in options and statements: `FETCH … WITH (timeout = …)`, a topic's
//! `retention`, a stream's `watermark_idle_timeout`. One grammar for all of them.

use std::time::Duration;

use crate::error::{Error, Result};

/// A duration as text: PostgreSQL's interval text (`'7 days'`, `'1 hour 30 minutes'`,
/// `'1.5 seconds'`, `'00:05:00'`) or the short units Kafka's and Flink's users write
/// (`'250ms'`, `'30s'`, `'5 min'`, `'12h'`, `'7d'`, `'2w'`). A bare number is each
/// setting's own unit, which the caller reads before asking here. Months are refused: their
/// length varies.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || {
        Error::data(
            "22007",
            format!(
                "invalid duration \"{text}\" (for example '7 days', '250ms', '1 hour 30 minutes')"
            ),
        )
    };
    let lower = text.trim().to_ascii_lowercase();
    if let Some(duration) = short_units(&lower).or_else(|| clock(&lower)) {
        return duration.ok_or_else(bad);
    }
    let interval = arrow::compute::kernels::cast_utils::parse_interval_month_day_nano(text)
        .map_err(|_| bad())?;
    if interval.months != 0 || interval.days < 0 || interval.nanoseconds < 0 {
        return Err(bad());
    }
    let nanos = i128::from(interval.days) * 86_400_000_000_000 + i128::from(interval.nanoseconds);
    Ok(Duration::from_nanos(
        u64::try_from(nanos).map_err(|_| bad())?,
    ))
}

/// `text` as numbers each followed by a unit (`1h 30m`, `250ms`); `None` if it is not of
/// that shape (then it may be interval text), `Some(None)` if it overflows.
fn short_units(text: &str) -> Option<Option<Duration>> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "us" | "microsecond" | "microseconds" => 1e-6,
            "ms" | "millisecond" | "milliseconds" => 1e-3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600.0,
            "d" | "day" | "days" => 86_400.0,
            "w" | "week" | "weeks" => 604_800.0,
            _ => return None,
        };
        rest = rest[unit_len..].trim_start();
        match Duration::try_from_secs_f64(n * seconds)
            .ok()
            .and_then(|d| total.checked_add(d))
        {
            Some(sum) => total = sum,
            None => return Some(None),
        }
    }
    Some(Some(total))
}

/// `hh:mm[:ss[.fff]]`, PostgreSQL's clock form of an interval.
fn clock(text: &str) -> Option<Option<Duration>> {
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return None;
    }
    let whole = |part: &str| {
        (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse::<u64>().ok())
            .flatten()
    };
    let hours = whole(parts[0])?;
    let minutes = whole(parts[1])?;
    let seconds: f64 = match parts.get(2) {
        Some(s) if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') => s.parse().ok()?,
        Some(_) => return None,
        None => 0.0,
    };
    let total = (hours as f64) * 3_600.0 + (minutes as f64) * 60.0 + seconds;
    Some(Duration::try_from_secs_f64(total).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_units_and_interval_text_agree() {
        let seconds = |text: &str| parse_duration(text).unwrap().as_secs_f64();
        assert_eq!(seconds("7 days"), 7.0 * 86_400.0);
        assert_eq!(seconds("7d"), 7.0 * 86_400.0);
        assert_eq!(seconds("1 hour 30 minutes"), 5_400.0);
        assert_eq!(seconds("1h 30m"), 5_400.0);
        assert_eq!(seconds("250ms"), 0.25);
        assert_eq!(seconds("250 milliseconds"), 0.25);
        assert_eq!(seconds("1.5s"), 1.5);
        assert_eq!(seconds("1.5 seconds"), 1.5);
        assert_eq!(seconds("00:05:00"), 300.0);
        assert_eq!(seconds("1:30"), 5_400.0);
        assert_eq!(seconds("2 WEEKS"), 14.0 * 86_400.0);
    }

    #[test]
    fn what_is_not_a_duration_is_22007() {
        for text in ["", "7 fortnights", "1 month", "-5 seconds", "soon"] {
            let e = parse_duration(text).unwrap_err();
            assert_eq!(e.sqlstate(), "22007", "{text}");
        }
    }
}

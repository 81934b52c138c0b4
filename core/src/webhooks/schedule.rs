//! When to try a delivery again: a growing schedule with ±20 % jitter (so that receivers coming
//! back from an outage are not hit by every retry at once), stretched by a `Retry-After`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// Jitter around each scheduled delay: ±20 %.
const JITTER: f64 = 0.2;

/// The longest `Retry-After` honoured; a receiver asking for more is retried after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The delay before the next attempt, after `attempts_made` attempts (1 after the first), or
/// `None` when the schedule is exhausted. `schedule_secs[i]` is the delay before retry `i + 1`;
/// a `retry_after` longer than the jittered delay wins, up to [`MAX_RETRY_AFTER`].
pub fn next_delay(
    schedule_secs: &[u64],
    attempts_made: i32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Option<Duration> {
    let index = usize::try_from(attempts_made).ok()?.checked_sub(1)?;
    let base = Duration::from_secs(*schedule_secs.get(index)?);
    let jittered = base.mul_f64(rng.random_range(1.0 - JITTER..=1.0 + JITTER));
    Some(match retry_after {
        Some(asked) if asked > jittered => asked.min(MAX_RETRY_AFTER).max(jittered),
        _ => jittered,
    })
}

/// A `Retry-After` header: delay seconds, or an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
/// A date in the past is no delay; anything else unreadable is ignored.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVIX: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];

    #[test]
    fn delays_follow_the_schedule_within_the_jitter() {
        let mut rng = rand::rng();
        for (i, base) in SVIX.iter().enumerate() {
            for _ in 0..200 {
                let delay = next_delay(&SVIX, i as i32 + 1, None, &mut rng)
                    .unwrap()
                    .as_secs_f64();
                let base = *base as f64;
                assert!(
                    (base * 0.8..=base * 1.2).contains(&delay),
                    "{delay} for {base}"
                );
            }
        }
        assert_eq!(
            next_delay(&SVIX, SVIX.len() as i32 + 1, None, &mut rng),
            None
        );
        assert_eq!(next_delay(&SVIX, 0, None, &mut rng), None);
        assert_eq!(next_delay(&[], 1, None, &mut rng), None);
    }

    #[test]
    fn a_longer_retry_after_wins_up_to_a_day() {
        let mut rng = rand::rng();
        let asked = Duration::from_secs(60);
        assert_eq!(next_delay(&SVIX, 1, Some(asked), &mut rng), Some(asked));
        let shorter = next_delay(&SVIX, 4, Some(asked), &mut rng).unwrap();
        assert!(shorter >= Duration::from_secs(5760), "{shorter:?}");
        let huge = Some(Duration::from_secs(30 * 24 * 3600));
        assert_eq!(next_delay(&SVIX, 1, huge, &mut rng), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:02:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}

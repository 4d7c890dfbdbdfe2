//! Pure computation of ticks: cron in time zones across DST changes, missed-tick policies.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{NaiveDate, TimeZone};
use chrono_tz::Europe::Berlin;

use super::spec::Schedule;
use super::{MAX_CATCH_UP, Missed};
use crate::Error;

/// Unix ms of a wall-clock time in Berlin (the earlier one when it occurs twice).
fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
    let naive = NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(h, min, 0)
        .unwrap();
    Berlin
        .from_local_datetime(&naive)
        .earliest()
        .unwrap()
        .timestamp_millis()
}

/// The ticks in [from, to).
fn ticks(s: &Schedule, from: i64, to: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut t = s.next_after_ms(from - 1);
    while t < to {
        out.push(t);
        t = s.next_after_ms(t);
    }
    out
}

const HOUR: i64 = 3_600_000;

#[test]
fn a_fixed_time_in_the_hour_skipped_in_spring_fires_once_right_after_the_gap() {
    let s = Schedule::cron_in("0 30 2 * * *", "Europe/Berlin").unwrap();
    // 2026-03-29: Berlin clocks jump from 02:00 CET to 03:00 CEST.
    let day = ticks(&s, berlin(2026, 3, 29, 0, 0), berlin(2026, 3, 30, 0, 0));
    assert_eq!(day.len(), 1, "{day:?}");
    let gap_end = berlin(2026, 3, 29, 3, 0);
    assert!(
        (gap_end..gap_end + HOUR).contains(&day[0]),
        "{} is not in the hour after the gap",
        day[0] - gap_end
    );
}

#[test]
fn a_fixed_time_in_the_hour_repeated_in_autumn_fires_once() {
    let s = Schedule::cron_in("0 30 2 * * *", "Europe/Berlin").unwrap();
    // 2026-10-25: Berlin clocks go back from 03:00 CEST to 02:00 CET; 02:30 occurs twice.
    let day = ticks(&s, berlin(2026, 10, 25, 0, 0), berlin(2026, 10, 26, 0, 0));
    assert_eq!(day, vec![berlin(2026, 10, 25, 2, 30)]);
}

#[test]
fn an_hourly_wildcard_follows_real_time_across_both_changes() {
    let s = Schedule::cron_in("0 0 * * * *", "Europe/Berlin").unwrap();
    let spring = ticks(&s, berlin(2026, 3, 29, 0, 0), berlin(2026, 3, 30, 0, 0));
    let autumn = ticks(&s, berlin(2026, 10, 25, 0, 0), berlin(2026, 10, 26, 0, 0));
    assert_eq!((spring.len(), autumn.len()), (23, 25));
    for w in autumn.windows(2) {
        assert_eq!(w[1] - w[0], HOUR, "ticks one real hour apart");
    }
    let quarter = Schedule::cron_in("0 */15 * * * *", "Europe/Berlin").unwrap();
    let autumn = ticks(
        &quarter,
        berlin(2026, 10, 25, 0, 0),
        berlin(2026, 10, 26, 0, 0),
    );
    assert_eq!(autumn.len(), 100);
    assert!(autumn.windows(2).all(|w| w[1] - w[0] == HOUR / 4));
}

#[test]
fn the_same_cron_in_two_zones_ticks_at_their_own_local_times() {
    let utc = Schedule::cron("0 0 9 * * *").unwrap();
    let berlin_s = Schedule::cron_in("0 0 9 * * *", "Europe/Berlin").unwrap();
    let from = berlin(2026, 7, 1, 0, 0);
    // Summer: Berlin is UTC+2.
    assert_eq!(
        utc.next_after_ms(from) - berlin_s.next_after_ms(from),
        2 * HOUR
    );
}

#[test]
fn five_fields_mean_second_zero() {
    let s = Schedule::cron("*/5 * * * *").unwrap();
    let t = s.next_after_ms(berlin(2026, 7, 1, 0, 1));
    assert_eq!(t, berlin(2026, 7, 1, 0, 5));
}

#[test]
fn bad_expressions_time_zones_and_intervals_are_typed_errors_that_say_what_to_write() {
    for expr in ["61 * * * * *", "* * *", "not cron", "", "* * * * * * * *"] {
        let err = Schedule::cron(expr).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidSchedule { what, .. } if what.contains("cron expression")),
            "{expr}: {err}"
        );
        assert!(err.to_string().contains("write 5 fields"), "{err}");
    }
    let err = Schedule::cron_in("* * * * *", "Mars/Olympus").unwrap_err();
    assert!(err.to_string().contains("IANA time zone"), "{err}");
    let err = Schedule::every(Duration::ZERO).unwrap_err();
    assert!(err.to_string().contains("at least 1 ms"), "{err}");
    for n in [0, MAX_CATCH_UP + 1] {
        let s = Schedule::every(Duration::from_secs(1))
            .unwrap()
            .missed(Missed::RunEach(n));
        assert!(s.check().is_err(), "RunEach({n})");
    }
}

fn every_second(missed: Missed) -> Schedule {
    Schedule::every(Duration::from_secs(1))
        .unwrap()
        .missed(missed)
        .grace(Duration::from_millis(1500))
}

#[test]
fn a_tick_on_time_fires_and_the_next_is_one_interval_later() {
    let p = every_second(Missed::Skip).plan(10_000, 10_200);
    assert_eq!((p.fires, p.next), (vec![10_000], 11_000));
}

#[test]
fn missed_ticks_are_skipped_run_once_or_run_each_up_to_the_bound() {
    // Next tick was 10 s ago: ticks 0..=10 s came due, those older than 1.5 s are missed.
    let (next, now) = (0, 10_000);
    let skip = every_second(Missed::Skip).plan(next, now);
    assert_eq!(skip.fires, vec![9_000, 10_000]);
    let once = every_second(Missed::RunOnce).plan(next, now);
    assert_eq!(once.fires, vec![8_000, 9_000, 10_000]);
    let each = every_second(Missed::RunEach(3)).plan(next, now);
    assert_eq!(each.fires, vec![6_000, 7_000, 8_000, 9_000, 10_000]);
    assert!(
        [skip.next, once.next, each.next]
            .iter()
            .all(|&n| n == 11_000)
    );
}

#[test]
fn a_long_outage_fires_a_bounded_number_of_ticks_and_keeps_the_phase() {
    // A 1 s interval stopped for a day (cron and interval alike).
    let day = 86_400_000;
    let p = every_second(Missed::RunEach(MAX_CATCH_UP)).plan(500, 500 + day);
    assert!(p.fires.len() <= MAX_CATCH_UP as usize, "{}", p.fires.len());
    assert_eq!(p.next, 500 + day + 1_000);
    let cron = Schedule::cron("* * * * * *")
        .unwrap()
        .missed(Missed::RunEach(MAX_CATCH_UP));
    let p = cron.plan(1_000, 1_000 + day);
    assert!(p.fires.len() <= MAX_CATCH_UP as usize);
    assert_eq!(p.next, 1_000 + day + 1_000);
}

#[test]
fn a_stored_schedule_reads_back_the_same() {
    let s = Schedule::cron_in("0 30 9 * * MON-FRI", "Europe/Berlin")
        .unwrap()
        .missed(Missed::RunEach(7))
        .grace(Duration::from_secs(5));
    let back = Schedule::from_stored(
        &s.stored_when(),
        &s.stored_missed(),
        &s.grace_ms().to_string(),
    )
    .unwrap();
    let from = berlin(2026, 7, 1, 0, 0);
    assert_eq!(back.next_after_ms(from), s.next_after_ms(from));
    assert_eq!(back.missed_policy(), Missed::RunEach(7));
    assert_eq!(back.grace_ms(), 5_000);
}

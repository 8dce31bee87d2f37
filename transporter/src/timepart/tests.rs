//! Time partitions: zones, daylight saving, records without a time, JSON fields.

use super::*;
use crate::config::RecordsConfig;

fn parts(zone: &str, template: &str) -> TimeParts {
    let cfg = RecordsConfig { time_zone: zone.into(), ..RecordsConfig::default() };
    TimeParts::new(&cfg, template).expect("time parts")
}

fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339).expect("time").timestamp_millis()
}

#[test]
fn granularity_follows_the_template() {
    assert_eq!(Granularity::of_template("{topic}/dt={date}/hr={hour}/{first_offset}"), Granularity::Hour);
    assert_eq!(Granularity::of_template("{topic}/{date}/{first_offset}"), Granularity::Day);
    assert_eq!(Granularity::of_template("{topic}/{partition}/{first_offset}"), Granularity::None);
    let none = parts("UTC", "{topic}/{partition}/{first_offset}");
    assert!(!none.cuts());
    assert_eq!(none.bucket(None), none.bucket(Some(ms("2026-11-22T08:15:00Z"))), "no cut without time placeholders");
}

#[test]
fn hours_and_days_in_utc() {
    let p = parts("UTC", "{date}/{hour}");
    let a = p.bucket(Some(ms("2026-11-22T08:00:00Z")));
    assert_eq!(a, p.bucket(Some(ms("2026-11-22T08:59:59.999Z"))));
    assert_ne!(a, p.bucket(Some(ms("2026-11-22T09:00:00Z"))));
    assert_eq!(p.date_hour(a), ("2026-11-22".into(), "08".into()));
    let d = parts("UTC", "{date}");
    assert_eq!(d.bucket(Some(ms("2026-11-22T00:00:00Z"))), d.bucket(Some(ms("2026-11-22T23:59:59Z"))));
    assert_eq!(d.date_hour(d.bucket(Some(ms("2026-11-22T13:00:00Z")))).0, "2026-11-22");
}

#[test]
fn local_dates_in_a_zone() {
    let p = parts("Europe/Berlin", "{date}/{hour}");
    // 23:30 UTC in November is 00:30 the next day in Berlin (CET, +1).
    assert_eq!(p.date_hour(p.bucket(Some(ms("2026-11-22T23:30:00Z")))), ("2026-11-23".into(), "00".into()));
    // The clock falls back on 2026-10-25 at 03:00 CEST: 02:30 happens twice, one partition.
    let first = p.bucket(Some(ms("2026-10-25T00:30:00Z")));
    let second = p.bucket(Some(ms("2026-10-25T01:30:00Z")));
    assert_eq!(first, second);
    assert_eq!(p.date_hour(first), ("2026-10-25".into(), "02".into()));
    assert!(TimeParts::new(&RecordsConfig { time_zone: "Mars/Olympus".into(), ..Default::default() }, "").is_err());
}

#[test]
fn records_without_time_go_to_their_own_partition() {
    let p = parts("UTC", "{date}/{hour}");
    assert_eq!(p.bucket(None), Bucket::NoTime);
    assert_eq!(p.bucket(Some(i64::MAX)), Bucket::NoTime, "a time chrono cannot place");
    assert_eq!(p.date_hour(Bucket::NoTime), ("unknown".into(), "unknown".into()));
    assert_ne!(p.bucket(Some(0)), Bucket::NoTime, "the epoch is a time like any other");
    // Times at the edges of what chrono can place, in zones east and west of UTC: no local
    // date, so no time, never a panic.
    for zone in ["Asia/Tokyo", "America/Los_Angeles", "UTC"] {
        let p = parts(zone, "{date}/{hour}");
        for ms in
            [8_210_266_876_799_999, 8_210_266_876_800_000, -8_334_601_228_800_000, -8_334_632_851_200_001, i64::MIN]
        {
            let _ = p.bucket(Some(ms));
        }
    }
}

#[test]
fn json_fields() {
    assert_eq!(json_time(br#"{"ts":1795337700000,"msg":"x"}"#, "ts"), Some(1_795_337_700_000));
    assert_eq!(
        json_time(br#"{"msg":{"ts":1},"ts":"2026-11-22T08:15:00+01:00"}"#, "ts"),
        Some(ms("2026-11-22T07:15:00Z"))
    );
    assert_eq!(json_time(br#"{"ts":1.5e12}"#, "ts"), Some(1_500_000_000_000));
    for bad in [
        &br#"{"ts":true}"#[..],
        br#"{"ts":"yesterday"}"#,
        br#"{"other":1}"#,
        b"[1,2]",
        b"not json",
        b"\xff\xfe",
        br#"{"ts":null}"#,
        b"{\"ts\":1e300}",
    ] {
        assert_eq!(json_time(bad, "ts"), None, "{}", String::from_utf8_lossy(bad));
    }
    let cfg = RecordsConfig {
        time_source: crate::config::TimeSource::JsonField,
        time_field: Some("ts".into()),
        ..RecordsConfig::default()
    };
    let p = TimeParts::new(&cfg, "{date}/{hour}").expect("parts");
    let r = crate::buffer::tests::rec(1, br#"{"ts":"2026-11-22T08:15:00Z"}"#);
    assert_eq!(p.time_of(&r), Some(ms("2026-11-22T08:15:00Z")), "the field, not the record's timestamp");
}

proptest::proptest! {
    /// A bucket holds exactly the times that render to its date and hour.
    #[test]
    fn buckets_match_their_labels(a in 0i64..4_000_000_000_000, b in 0i64..4_000_000_000_000, zone in proptest::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])) {
        let p = parts(zone, "{date}/{hour}");
        let label = |t: i64| {
            let local = p.zone.timestamp_millis_opt(t).single().map(|d| d.format("%Y-%m-%d %H").to_string());
            local.expect("a time")
        };
        let (ba, bb) = (p.bucket(Some(a)), p.bucket(Some(b)));
        proptest::prop_assert_eq!(ba == bb, label(a) == label(b));
        let (d, h) = p.date_hour(ba);
        proptest::prop_assert_eq!(format!("{d} {h}"), label(a));
    }
}

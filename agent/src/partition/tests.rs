//! Partition choice: strategies, the zone-aware byte balance, Java-compatible murmur2.
use super::*;

fn stream(partitioning: &str, key: &str) -> StreamConfig {
    let toml = format!("name = \"s\"\npaths = [\"/x\"]\ntopic = \"t\"\npartitioning = \"{partitioning}\"\n{key}");
    use figment::providers::Format as _;
    figment::Figment::from(figment::providers::Toml::string(&toml)).extract().expect("a stream config")
}

#[test]
fn the_partitioner_owns_keys_groups_and_retries() {
    let routing = Routing { selection: None, all: vec![0, 1, 2, 3], count: 4 };
    let mut keyed = Partitioner::new(&stream("keyed", "key = { regex = 'user=(\\w+)' }")).expect("valid");
    let line = b"user=42 did something";
    let placed = keyed.for_event(&routing, 3, line);
    assert_eq!(placed.key.as_deref(), Some(&b"42"[..]));
    assert_eq!(placed.partition, keyed_partition(b"42", 4));
    assert_eq!(keyed.for_retry(&routing, Some(b"42"), 10), Some(placed.partition));
    let missing = keyed.for_event(&routing, 3, b"no key here");
    assert_eq!(missing, Placement { partition: 3, key: None, key_missing: true });

    // Zone-aware has no candidate without a selection: it waits rather than crossing zones.
    let mut zone = Partitioner::new(&stream("zone-aware", "")).expect("valid");
    assert_eq!(zone.for_group(&routing, 10), None);
    assert_eq!(zone.for_retry(&routing, None, 10), None);
    let mut rr = Partitioner::new(&stream("round-robin", "")).expect("valid");
    let got: Vec<_> = (0..5).filter_map(|_| rr.for_group(&routing, 10)).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 0]);
    assert_eq!(rr.for_event(&routing, 2, line).partition, 2);
}

proptest::proptest! {
    /// Mixed bursty batches (single lines and full batches, in any order) end balanced by
    /// bytes over the local partitions: max/mean <= 1.1 once a minute's worth has gone.
    #[test]
    fn zone_aware_balances_bytes(
        partitions in 1usize..7,
        batches in proptest::collection::vec(proptest::prop_oneof![1u64..200, 50_000u64..1_000_000], 2_000..3_000),
    ) {
        let candidates: Vec<i32> = (0..partitions as i32).map(|p| p * 3).collect();
        let mut c = Chooser::default();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
        let mut per: std::collections::BTreeMap<i32, u64> = std::collections::BTreeMap::new();
        for b in &batches {
            let p = c.for_batch(Partitioning::ZoneAware, &candidates, *b, &mut rng).expect("a partition");
            proptest::prop_assert!(candidates.contains(&p));
            *per.entry(p).or_insert(0) += b;
        }
        let max = *per.values().max().unwrap_or(&0) as f64;
        let mean = per.values().sum::<u64>() as f64 / partitions as f64;
        proptest::prop_assert!(max / mean <= 1.1, "max/mean {} over {per:?}", max / mean);
    }
}

/// After a leader moves into the zone, the new local partition shares the traffic from its
/// first batch instead of taking all of it until it has caught up.
#[test]
fn a_partition_that_becomes_local_joins_level() {
    let mut c = Chooser::default();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    for _ in 0..1_000 {
        c.for_batch(Partitioning::ZoneAware, &[0, 3], 1_000, &mut rng);
    }
    let mut per: std::collections::BTreeMap<i32, u64> = std::collections::BTreeMap::new();
    for _ in 0..300 {
        let p = c.for_batch(Partitioning::ZoneAware, &[0, 3, 6], 1_000, &mut rng).expect("a partition");
        *per.entry(p).or_insert(0) += 1;
    }
    assert_eq!(per.values().copied().collect::<Vec<_>>(), vec![100, 100, 100], "{per:?}");
    // A partition no longer local is forgotten, and starts level when it comes back.
    c.for_batch(Partitioning::ZoneAware, &[0, 6], 1_000, &mut rng);
    assert!(!c.sent.contains_key(&3));
}

/// Vectors from Kafka's own `UtilsTest.testMurmur2`.
#[test]
fn murmur2_matches_java() {
    let cases: [(&[u8], i32); 6] = [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ];
    for (input, want) in cases {
        assert_eq!(murmur2(input), want, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn keyed_partition_is_in_range_and_stable() {
    for n in 1..50 {
        for key in [&b""[..], b"a", b"user-42", &[0xff, 0x80, 0x00]] {
            let p = keyed_partition(key, n);
            assert!((0..n).contains(&p));
            assert_eq!(p, keyed_partition(key, n));
        }
    }
    assert_eq!(keyed_partition(b"x", 0), 0);
}

#[test]
fn batches_rotate_over_candidates() {
    let mut c = Chooser::default();
    let mut rng = rand::rng();
    let got: Vec<i32> =
        (0..7).filter_map(|_| c.for_batch(Partitioning::ZoneAware, &[0, 3, 6, 9], 100, &mut rng)).collect();
    assert_eq!(got, vec![0, 3, 6, 9, 0, 3, 6]);
    assert_eq!(c.for_batch(Partitioning::ZoneAware, &[], 100, &mut rng), None);
    for _ in 0..100 {
        let p = c.for_batch(Partitioning::Random, &[2, 5], 100, &mut rng);
        assert!(matches!(p, Some(2 | 5)));
    }
}

proptest::proptest! {
    /// Over any number of batches, round-robin spreads evenly: counts differ by at most one.
    #[test]
    fn round_robin_is_even(n in 1usize..20, batches in 0usize..500) {
        let candidates: Vec<i32> = (0..n as i32).collect();
        let mut c = Chooser::default();
        let mut rng = rand::rng();
        let mut counts = vec![0usize; n];
        for _ in 0..batches {
            if let Some(p) = c.for_batch(Partitioning::RoundRobin, &candidates, 100, &mut rng) {
                counts[p as usize] += 1;
            }
        }
        let (min, max) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
        proptest::prop_assert!(max - min <= 1);
    }
}

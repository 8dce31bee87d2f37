//! Partition choice, every strategy in one place (`Partitioner`): zone-aware (az-core's local
//! partitions, balanced by bytes), keyed (Java-compatible murmur2), round-robin and random. Pure
//! logic, no I/O.
//!
//! ```text
//!  Routing (az-core Selection, recomputed on each topology change) ─┐
//!  group of lines ──> Partitioner::for_group() ──> partition of the group │ zone-aware / round-robin / random
//!  each line ──> Partitioner::for_event() ──> key (keyed streams) ──> keyed_partition(murmur2(key), n)
//!  failed record ──> Partitioner::for_retry() ──> its key's partition, or chosen afresh
//! ```

use rand::Rng;
use regex::bytes::Regex;

use serde::{Deserialize, Serialize};

use crate::config::{KeyConfig, StreamConfig};

/// How a stream chooses partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partitioning {
    /// Only partitions led in the agent's zone, a batch per partition in turn.
    #[default]
    ZoneAware,
    /// Java-compatible murmur2 of the extracted key over all partitions.
    Keyed,
    /// Every partition in turn, a batch each.
    RoundRobin,
    /// A random partition per batch.
    Random,
}

/// Where a stream may write, recomputed whenever the topology changes.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// az-core's zone-aware selection.
    pub selection: Option<az_core::Selection>,
    /// Every partition with a leader (all partitions when none has).
    pub all: Vec<i32>,
    /// Number of partitions of the topic (for keyed hashing).
    pub count: i32,
}

impl Routing {
    /// The partitions a strategy may choose from.
    pub fn candidates(&self, strategy: Partitioning) -> &[i32] {
        match strategy {
            Partitioning::ZoneAware => self.selection.as_ref().map_or(&[][..], |s| &s.partitions),
            _ => &self.all,
        }
    }
}

/// How a keyed stream finds the key of a line.
#[derive(Debug)]
enum KeyExtractor {
    None,
    Regex(Regex),
    Json(String),
}

impl KeyExtractor {
    fn key(&self, line: &[u8]) -> Option<Vec<u8>> {
        match self {
            KeyExtractor::None => None,
            KeyExtractor::Regex(re) => {
                let caps = re.captures(line)?;
                caps.name("key").or_else(|| caps.get(1)).map(|m| m.as_bytes().to_vec())
            }
            KeyExtractor::Json(field) => {
                let v: serde_json::Value = serde_json::from_slice(line).ok()?;
                match v.get(field)? {
                    serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
                    serde_json::Value::Null => None,
                    other => Some(other.to_string().into_bytes()),
                }
            }
        }
    }
}

/// Where one line goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Its partition.
    pub partition: i32,
    /// Its key (keyed streams).
    pub key: Option<Vec<u8>>,
    /// A keyed stream's line without a key (it goes with its group).
    pub key_missing: bool,
}

/// Every partitioning strategy of one stream.
#[derive(Debug)]
pub struct Partitioner {
    strategy: Partitioning,
    chooser: Chooser,
    keys: KeyExtractor,
    rng: rand::rngs::StdRng,
}

impl Partitioner {
    /// The partitioner of a stream; fails only on an invalid key regex (refused by validation
    /// already).
    pub fn new(config: &StreamConfig) -> Result<Partitioner, regex::Error> {
        let keys = match (&config.partitioning, &config.key) {
            (Partitioning::Keyed, Some(KeyConfig::Regex(r))) => KeyExtractor::Regex(Regex::new(r)?),
            (Partitioning::Keyed, Some(KeyConfig::JsonField(f))) => KeyExtractor::Json(f.clone()),
            _ => KeyExtractor::None,
        };
        Ok(Partitioner {
            strategy: config.partitioning,
            chooser: Chooser::default(),
            keys,
            rng: rand::SeedableRng::from_os_rng(),
        })
    }

    /// The strategy.
    pub fn strategy(&self) -> Partitioning {
        self.strategy
    }

    /// The partition of a group of `bytes`; `None` while the routing has no candidate.
    pub fn for_group(&mut self, routing: &Routing, bytes: u64) -> Option<i32> {
        self.chooser.for_batch(self.strategy, routing.candidates(self.strategy), bytes, &mut self.rng)
    }

    /// Where a line of a group sent to `group` goes: keyed streams hash its key over all
    /// partitions, as the Java client does; a line without a key stays with its group.
    pub fn for_event(&self, routing: &Routing, group: i32, line: &[u8]) -> Placement {
        if self.strategy != Partitioning::Keyed {
            return Placement { partition: group, key: None, key_missing: false };
        }
        match self.keys.key(line) {
            Some(k) => Placement { partition: keyed_partition(&k, routing.count), key: Some(k), key_missing: false },
            None => Placement { partition: group, key: None, key_missing: true },
        }
    }

    /// The partition of a record sent again: its key's, or chosen afresh (the one it failed
    /// on may have moved out of the zone).
    pub fn for_retry(&mut self, routing: &Routing, key: Option<&[u8]>, bytes: u64) -> Option<i32> {
        match (key, self.strategy) {
            (Some(k), Partitioning::Keyed) => Some(keyed_partition(k, routing.count)),
            _ => self.for_group(routing, bytes),
        }
    }
}

/// Kafka's murmur2, exactly as `org.apache.kafka.common.utils.Utils.murmur2` computes it.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    // Java sign-extends each tail byte before xoring; `as i8 as u32` reproduces that.
    match tail.len() {
        3 => {
            h ^= ((tail[2] as i8 as u32) & 0xff) << 16;
            h ^= ((tail[1] as i8 as u32) & 0xff) << 8;
            h ^= (tail[0] as i8 as u32) & 0xff;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= ((tail[1] as i8 as u32) & 0xff) << 8;
            h ^= (tail[0] as i8 as u32) & 0xff;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= (tail[0] as i8 as u32) & 0xff;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The Java client's default partition for a key: `toPositive(murmur2(key)) % numPartitions`.
pub fn keyed_partition(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Chooses the partition of each batch for the non-keyed strategies.
#[derive(Debug, Clone, Default)]
pub struct Chooser {
    cursor: usize,
    /// Bytes recently sent to each partition (zone-aware), halved whenever the total passes
    /// [`BALANCE_WINDOW`], so the balance follows the recent past.
    sent: std::collections::BTreeMap<i32, u64>,
}

/// Bytes after which the zone-aware byte counts are halved.
pub const BALANCE_WINDOW: u64 = 256 * 1024 * 1024;

impl Chooser {
    /// The partition for the next batch of `bytes`, from `candidates` (ascending, non-empty for
    /// an existing topic). Zone-aware sends it to the local partition that received the fewest
    /// bytes lately (bursty files do not lock onto the same partitions, as a per-batch cursor
    /// would); round-robin takes the candidates in turn; random picks one. `None` when there is no
    /// candidate.
    pub fn for_batch(
        &mut self,
        strategy: Partitioning,
        candidates: &[i32],
        bytes: u64,
        rng: &mut impl Rng,
    ) -> Option<i32> {
        if candidates.is_empty() {
            return None;
        }
        match strategy {
            Partitioning::Random => Some(candidates[rng.random_range(0..candidates.len())]),
            Partitioning::ZoneAware => {
                if self.sent.len() != candidates.len() || !candidates.iter().all(|c| self.sent.contains_key(c)) {
                    self.rebase(candidates);
                }
                // Least loaded; ties go to the next one after the previous choice, so equal
                // batches still rotate.
                let n = candidates.len();
                let start = self.cursor % n;
                let p = (0..n)
                    .map(|i| candidates[(start + i) % n])
                    .min_by_key(|p| self.sent.get(p).copied().unwrap_or(0))?;
                self.cursor = candidates.iter().position(|c| *c == p).map_or(0, |i| i + 1);
                *self.sent.entry(p).or_insert(0) += bytes;
                if self.sent.values().sum::<u64>() > BALANCE_WINDOW {
                    for v in self.sent.values_mut() {
                        *v /= 2;
                    }
                }
                Some(p)
            }
            Partitioning::RoundRobin | Partitioning::Keyed => {
                let p = candidates[self.cursor % candidates.len()];
                self.cursor = self.cursor.wrapping_add(1);
                Some(p)
            }
        }
    }

    /// The candidates changed (a leader moved into or out of the zone): partitions no longer
    /// local are forgotten, and a partition that became local starts level with the least
    /// loaded one. Starting at 0 it would take the zone's whole traffic until it caught up with
    /// bytes the others received before it was local: up to [`BALANCE_WINDOW`] of skew after
    /// every leader move.
    fn rebase(&mut self, candidates: &[i32]) {
        self.sent.retain(|p, _| candidates.contains(p));
        let floor = self.sent.values().copied().min().unwrap_or(0);
        for c in candidates {
            self.sent.entry(*c).or_insert(floor);
        }
    }
}

#[cfg(test)]
mod tests;

//! `TopicPartition`: the one key for a partition everywhere (etcd keys, JSON maps, metrics),
//! written `topic/partition`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A topic partition. Its text form is `topic/partition`; topics may not contain `/`, so the
/// last `/` separates the two. It serializes as that string, so it can key a JSON map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

impl TopicPartition {
    /// A partition of `topic`.
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition { topic: topic.into(), partition }
    }

    /// `topic/partition`, the form used in etcd keys and JSON maps.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// Parses `topic/partition`; `None` when it is not that form.
    pub fn parse(s: &str) -> Option<TopicPartition> {
        s.parse().ok()
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Why a text is not `topic/partition`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not TOPIC/PARTITION (a non-empty topic, '/', a partition number >= 0)")]
pub struct ParseTopicPartitionError(pub String);

impl FromStr for TopicPartition {
    type Err = ParseTopicPartitionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseTopicPartitionError(s.to_owned());
        let (topic, p) = s.rsplit_once('/').ok_or_else(bad)?;
        let partition: i32 = p.parse().map_err(|_| bad())?;
        if topic.is_empty() || partition < 0 {
            return Err(bad());
        }
        Ok(TopicPartition { topic: topic.to_owned(), partition })
    }
}

impl Serialize for TopicPartition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TopicPartition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_form() {
        let tp = TopicPartition::new("logs.app", 7);
        assert_eq!(tp.to_string(), "logs.app/7");
        assert_eq!("logs.app/7".parse::<TopicPartition>(), Ok(tp));
        for bad in ["", "logs", "/3", "logs/", "logs/x", "logs/-1", "logs/99999999999"] {
            assert!(bad.parse::<TopicPartition>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn keys_a_json_map() {
        let map: std::collections::BTreeMap<TopicPartition, i64> = [(TopicPartition::new("a", 1), 5)].into();
        let text = serde_json::to_string(&map).expect("serialize");
        assert_eq!(text, r#"{"a/1":5}"#);
        let back: std::collections::BTreeMap<TopicPartition, i64> = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, map);
        assert!(serde_json::from_str::<std::collections::BTreeMap<TopicPartition, i64>>(r#"{"a":5}"#).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(topic in "[a-zA-Z0-9._-]{1,20}", partition in 0..i32::MAX) {
            let tp = TopicPartition::new(topic, partition);
            prop_assert_eq!(tp.to_string().parse::<TopicPartition>(), Ok(tp));
        }
    }
}

//! What a zone is ([`Zone`]: an AZ id, a name, or both) and whether a broker rack is in one
//! ([`ZoneMatcher`]: by id, by name, or through configured aliases).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// An availability zone, known by its stable id (`use1-az1`), its name (`us-east-1a`), or both.
///
/// AWS zone names are shuffled per account while ids are not, which is why brokers should carry
/// ids as racks; matching accepts either so that existing clusters with name racks work too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Zone {
    /// Stable zone id, e.g. `use1-az1`.
    pub id: Option<String>,
    /// Zone name, e.g. `us-east-1a`.
    pub name: Option<String>,
}

impl Zone {
    /// A zone known by a single label that may be an id or a name.
    pub fn label(label: impl Into<String>) -> Self {
        let label = label.into();
        Zone { id: Some(label.clone()), name: Some(label) }
    }

    /// The label to show: the id when known, else the name.
    pub fn display_label(&self) -> &str {
        self.id.as_deref().or(self.name.as_deref()).unwrap_or("?")
    }

    fn labels(&self) -> impl Iterator<Item = &str> {
        self.id.iter().chain(self.name.iter()).map(String::as_str)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.id, &self.name) {
            (Some(id), Some(name)) if id != name => write!(f, "{id} ({name})"),
            _ => f.write_str(self.display_label()),
        }
    }
}

/// Decides whether a broker rack is in a zone: by id, by name, or through an alias map
/// (rack -> zone id or name), case-insensitively.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneMatcher {
    aliases: BTreeMap<String, String>,
}

impl ZoneMatcher {
    /// A matcher with the given aliases, from rack label to zone id or name.
    pub fn new(aliases: BTreeMap<String, String>) -> Self {
        let aliases = aliases.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        ZoneMatcher { aliases }
    }

    /// Whether `rack` denotes `zone`.
    pub fn matches(&self, zone: &Zone, rack: &str) -> bool {
        let rack = rack.trim();
        if rack.is_empty() {
            return false;
        }
        let alias = self.aliases.get(&rack.to_ascii_lowercase()).map(String::as_str);
        zone.labels()
            .any(|label| label.eq_ignore_ascii_case(rack) || alias.is_some_and(|a| a.eq_ignore_ascii_case(label)))
    }

    /// The canonical label for a rack: its alias target if one is configured, else the rack.
    /// Two racks with the same canonical label are in the same zone.
    pub fn canonical<'a>(&'a self, rack: &'a str) -> &'a str {
        self.aliases.get(&rack.trim().to_ascii_lowercase()).map(String::as_str).unwrap_or(rack)
    }

    /// The label brokers use for `zone`, among their `racks` (an AZ id, a name or an alias), so
    /// that a client's `client.rack` is written the way the brokers compare it.
    pub fn rack_label<'a>(&self, zone: &Zone, racks: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
        racks.into_iter().find(|r| self.matches(zone, r))
    }

    /// Whether two racks are in the same zone.
    pub fn same_zone(&self, a: &str, b: &str) -> bool {
        self.canonical(a).eq_ignore_ascii_case(self.canonical(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(id: &str, name: &str) -> Zone {
        Zone { id: Some(id.into()), name: Some(name.into()) }
    }

    #[test]
    fn matching_accepts_id_name_and_alias() {
        let m = ZoneMatcher::new(BTreeMap::from([("rack-a".to_owned(), "use1-az1".to_owned())]));
        let z = zone("use1-az1", "us-east-1a");
        assert!(m.matches(&z, "use1-az1"));
        assert!(m.matches(&z, "US-EAST-1A"));
        assert!(m.matches(&z, "rack-a"));
        assert!(m.matches(&z, " use1-az1 "));
        assert!(!m.matches(&z, "use1-az2"));
        assert!(!m.matches(&z, ""));
        assert!(!m.matches(&Zone::default(), "use1-az1"));
        assert!(m.same_zone("rack-a", "USE1-AZ1"));
    }

    #[test]
    fn rack_label_takes_the_brokers_form() {
        let m = ZoneMatcher::new(BTreeMap::from([("rack-b".to_owned(), "use1-az2".to_owned())]));
        let z = zone("use1-az1", "us-east-1a");
        assert_eq!(m.rack_label(&z, ["us-east-1b", "us-east-1a"]), Some("us-east-1a"));
        assert_eq!(m.rack_label(&z, ["use1-az1"]), Some("use1-az1"));
        assert_eq!(m.rack_label(&zone("use1-az2", "x"), ["rack-a", "rack-b"]), Some("rack-b"));
        assert_eq!(m.rack_label(&z, ["elsewhere"]), None);
    }
}

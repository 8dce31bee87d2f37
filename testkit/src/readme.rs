//! The check that the configuration reference (`docs/configuration.md`) documents every key a
//! program has: both programs print their effective configuration (`check`), and every key of
//! it must appear in backquotes in the program's section of the reference, so the reference
//! cannot drift from the structs.
//!
//! ```text
//!  check's TOML ─config_keys─> kafka.bootstrap-servers, streams[].topic, checkpoint-dir, …
//!  docs/configuration.md ─section_start … section_end─> the program's reference ─`key`?─> undocumented keys
//! ```

/// The keys of an effective configuration as the reference names them, sorted and without
/// repeats: a top-level value is `key`, a value of a table `table.key`, and a value of the
/// tables in an array `array[].key`. Deeper levels (`kafka.options`' own keys, `etcd.tls`'s
/// fields) stay under their parent's name, since the reference documents them there.
pub fn config_keys(effective: &toml::Table) -> Vec<String> {
    let mut keys = Vec::new();
    for (k, v) in effective {
        match v {
            toml::Value::Table(t) => keys.extend(t.keys().map(|c| format!("{k}.{c}"))),
            toml::Value::Array(a) => {
                for item in a {
                    if let toml::Value::Table(t) = item {
                        keys.extend(t.keys().map(|c| format!("{k}[].{c}")));
                    }
                }
            }
            _ => keys.push(k.clone()),
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The keys of `effective` (see [`config_keys`]) that the reference's section between the first
/// `section_start` and the next `section_end` after it does not name in backquotes, leaving out
/// those `skip` accepts (settings documented in another program's section). A reference without
/// the section documents nothing.
pub fn undocumented_keys(
    effective: &toml::Table,
    readme: &str,
    section_start: &str,
    section_end: &str,
    skip: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let section = readme.split(section_start).nth(1).and_then(|s| s.split(section_end).next()).unwrap_or_default();
    config_keys(effective).into_iter().filter(|k| !skip(k) && !section.contains(&format!("`{k}`"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape a key can take: a top-level value, a table with a nested table, an array of
    /// tables whose keys repeat.
    const EFFECTIVE: &str = r#"
        checkpoint-dir = "/var/lib/x"
        kafka = { bootstrap-servers = "k:9092", options = { "statistics.interval.ms" = "200" } }
        zone = { providers = [] }
        streams = [{ name = "a", topic = "t" }, { name = "b", topic = "u" }]
    "#;

    #[test]
    fn keys_are_flattened_one_level_and_listed_once() {
        let effective: toml::Table = toml::from_str(EFFECTIVE).expect("valid TOML");
        assert_eq!(
            config_keys(&effective),
            [
                "checkpoint-dir",
                "kafka.bootstrap-servers",
                "kafka.options",
                "streams[].name",
                "streams[].topic",
                "zone.providers"
            ]
        );
    }

    #[test]
    fn only_the_section_counts_and_skipped_keys_are_left_out() {
        let effective: toml::Table = toml::from_str(EFFECTIVE).expect("valid TOML");
        let readme = "`kafka.options` `streams[].topic` before the section\n\
                      ### program\n`checkpoint-dir`, `kafka.bootstrap-servers` and `streams[].name`\n\
                      ### other program\n`kafka.options` `streams[].topic`\n";
        let missing = undocumented_keys(&effective, readme, "### program", "### other", &|k| k.starts_with("zone."));
        assert_eq!(missing, ["kafka.options", "streams[].topic"]);
        let everything = undocumented_keys(&effective, "no section here", "### program", "### other", &|_| false);
        assert_eq!(everything, config_keys(&effective));
    }
}

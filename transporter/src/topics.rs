//! Which topics the fleet moves: the configured list plus the cluster's topics matching the
//! pattern. Pure, apart from the pattern compile.

use anyhow::Context;

/// Compiles a topic pattern; it must match the whole topic name.
pub fn compile_pattern(p: &str) -> anyhow::Result<regex::Regex> {
    regex::Regex::new(&format!("^(?:{p})$")).with_context(|| format!("invalid regex {p:?}"))
}

/// The topics to move, sorted and without duplicates; internal topics (`__*`) never match the
/// pattern.
pub fn select(configured: &[String], pattern: Option<&regex::Regex>, cluster: &[String]) -> Vec<String> {
    let mut out: Vec<String> = configured.to_vec();
    if let Some(re) = pattern {
        out.extend(cluster.iter().filter(|t| !t.starts_with("__") && re.is_match(t)).cloned());
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_plus_pattern() {
        let re = compile_pattern("logs\\..*").expect("regex");
        let cluster: Vec<String> =
            ["logs.a", "logs.b", "metrics", "__consumer_offsets", "xlogs.a"].map(String::from).to_vec();
        assert_eq!(select(&["metrics".into()], Some(&re), &cluster), vec!["logs.a", "logs.b", "metrics"]);
        assert_eq!(select(&["x".into(), "x".into()], None, &cluster), vec!["x"]);
        assert!(compile_pattern("(").is_err());
    }
}

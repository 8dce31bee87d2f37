//! The environment discovery reads, behind one type so that tests can pass a fixed one.

use std::collections::BTreeMap;

/// The environment discovery reads. Tests pass a fixed map so they neither race on the process
/// environment nor need `unsafe` `set_var`.
#[derive(Clone, Debug, Default)]
pub enum Env {
    /// The real process environment.
    #[default]
    Process,
    /// A fixed set of variables.
    Fixed(BTreeMap<String, String>),
}

impl Env {
    /// A fixed environment from pairs.
    pub fn fixed<K: Into<String>, V: Into<String>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        Env::Fixed(vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    /// One variable, empty values treated as unset.
    pub fn var(&self, key: &str) -> Option<String> {
        let value = match self {
            Env::Process => std::env::var(key).ok(),
            Env::Fixed(map) => map.get(key).cloned(),
        };
        value.filter(|v| !v.trim().is_empty())
    }
}

//! Redaction of secrets: a [`Redactor`] for free text (librdkafka's messages, logs) and
//! [`redact_toml`] for whole configurations as `check` prints them.

use super::{ENV_SUFFIX, FILE_SUFFIX, REDACTED, is_secret_key};

/// Replaces secret values in text with `***`.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor of these values (empty values are ignored: they would match everywhere).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// Adds a secret.
    pub fn with(mut self, secret: Option<&str>) -> Redactor {
        if let Some(s) = secret.filter(|s| !s.is_empty()) {
            self.secrets.push(s.to_owned());
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
        self
    }

    /// `text` with every secret replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }
}

/// Renders a configuration as TOML with secrets replaced: every `options` table's secret keys,
/// and any key named in `secret_fields` (dotted paths such as `etcd.password`).
pub fn redact_toml(value: &mut toml::Value, secret_fields: &[&str]) {
    fn walk(v: &mut toml::Value, path: &str, secret_fields: &[&str]) {
        if let toml::Value::Table(t) = v {
            let in_options = path.ends_with("options");
            for (k, child) in t.iter_mut() {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                let secret = secret_fields.contains(&p.as_str())
                    || (in_options && is_secret_key(k) && !k.ends_with(FILE_SUFFIX) && !k.ends_with(ENV_SUFFIX));
                if secret && child.is_str() {
                    *child = toml::Value::String(REDACTED.to_owned());
                } else {
                    walk(child, &p, secret_fields);
                }
            }
        } else if let toml::Value::Array(a) = v {
            for child in a {
                walk(child, path, secret_fields);
            }
        }
    }
    walk(value, "", secret_fields);
}

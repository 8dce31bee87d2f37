//! librdkafka properties as both programs build them: passthrough options whose secrets may come
//! from files or environment variables, options a program must not let through because they
//! would break its guarantees, validation by librdkafka itself (so `check` refuses what `run`
//! would), and redaction of secret values in everything printed.
//!
//! ```text
//!  kafka.options (TOML) ──resolve()──> ClientOptions { properties, secrets }
//!    "sasl.password-file" = "/run/secrets/kafka"  ──read──> "sasl.password" = <file content>
//!    "sasl.password-env"  = "KAFKA_PASSWORD"      ──getenv─> "sasl.password" = <value>
//!  ClientOptions ──check_guards(guards)──> refused with the reason (acks, idempotence, ...)
//!  ClientOptions ──validate()──> every key set on a librdkafka config, errors name the key
//!  Redactor (from the secrets) ──redact(text)──> "***" wherever a secret value appears
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

/// What replaces a secret in anything printed.
pub const REDACTED: &str = "***";

/// Suffix of an option whose value is read from a file (Kubernetes Secrets, systemd credentials).
pub const FILE_SUFFIX: &str = "-file";
/// Suffix of an option whose value is read from an environment variable.
pub const ENV_SUFFIX: &str = "-env";

/// Why a set of librdkafka options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// A `*-file` option names a file that cannot be read.
    #[error("kafka.options.\"{key}\": reading {path}: {source}")]
    SecretFile {
        /// The option as written (`sasl.password-file`).
        key: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A `*-env` option names an environment variable that is not set.
    #[error("kafka.options.\"{key}\": environment variable {var} is not set")]
    SecretEnv {
        /// The option as written (`sasl.password-env`).
        key: String,
        /// The variable.
        var: String,
    },
    /// The same property is given twice (directly and through a file or variable).
    #[error("kafka.options.\"{key}\": given more than once (directly, -file or -env); keep one")]
    Duplicate {
        /// The property.
        key: String,
    },
    /// A property the program sets itself and must not be changed.
    #[error("kafka.options.\"{key}\" = \"{value}\" is refused: {reason}")]
    Guarded {
        /// The property.
        key: String,
        /// Its value (redacted if secret).
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// librdkafka refused a property.
    #[error("kafka.options.\"{key}\": {message}")]
    Rejected {
        /// The property.
        key: String,
        /// librdkafka's message, secrets redacted.
        message: String,
    },
    /// librdkafka refused to create a client from the whole configuration.
    #[error("creating a Kafka {what} from the configuration failed: {message}")]
    Client {
        /// Producer or consumer.
        what: &'static str,
        /// librdkafka's message, secrets redacted.
        message: String,
    },
}

/// A property a program sets itself and refuses from `kafka.options` unless the value is one of
/// `allowed` (compared case-insensitively).
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// The librdkafka property.
    pub key: &'static str,
    /// Values that keep the guarantee (empty: the key is always refused).
    pub allowed: &'static [&'static str],
    /// What breaks otherwise, shown to the operator.
    pub reason: &'static str,
}

/// Whether a librdkafka property holds a secret: passwords, client secrets, private keys in PEM.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k == "ssl.key.pem" || k == "sasl.oauthbearer.config"
}

/// Resolved librdkafka properties: what to set on the client, and which values are secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    properties: BTreeMap<String, String>,
    secrets: Vec<String>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

impl ClientOptions {
    /// Resolves `-file` and `-env` options through the process environment.
    pub fn resolve(options: &BTreeMap<String, String>) -> Result<ClientOptions, OptionsError> {
        Self::resolve_with(options, &|var| std::env::var(var).ok())
    }

    /// Resolves `-file` and `-env` options; `env` answers environment lookups.
    pub fn resolve_with(
        options: &BTreeMap<String, String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ClientOptions, OptionsError> {
        let mut out = ClientOptions::default();
        for (key, value) in options {
            let (property, value, secret) = if let Some(base) = key.strip_suffix(FILE_SUFFIX) {
                let path = PathBuf::from(value);
                let text = std::fs::read_to_string(&path).map_err(|source| OptionsError::SecretFile {
                    key: key.clone(),
                    path: path.clone(),
                    source,
                })?;
                // Secret files written by `echo` or editors end with a newline that is not part of
                // the secret.
                (base, text.trim_end_matches(['\n', '\r']).to_owned(), true)
            } else if let Some(base) = key.strip_suffix(ENV_SUFFIX) {
                let v = env(value).ok_or_else(|| OptionsError::SecretEnv { key: key.clone(), var: value.clone() })?;
                (base, v, true)
            } else {
                (key.as_str(), value.clone(), is_secret_key(key))
            };
            if out.properties.contains_key(property) {
                return Err(OptionsError::Duplicate { key: property.to_owned() });
            }
            if (secret || is_secret_key(property)) && !value.is_empty() {
                out.secrets.push(value.clone());
            }
            out.properties.insert(property.to_owned(), value);
        }
        Ok(out)
    }

    /// The properties to set on the client, secrets in clear.
    pub fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    /// One property.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    /// The properties with every secret value replaced by `***`, for printing.
    pub fn redacted(&self) -> BTreeMap<String, String> {
        let r = self.redactor();
        self.properties
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_key(k) || self.secrets.contains(v) { REDACTED.to_owned() } else { r.redact(v) };
                (k.clone(), v)
            })
            .collect()
    }

    /// A redactor of these options' secrets.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.secrets.iter().cloned())
    }

    /// Refuses properties that would break a guarantee of the program.
    pub fn check_guards(&self, guards: &[Guard]) -> Result<(), OptionsError> {
        for g in guards {
            if let Some(v) = self.properties.get(g.key)
                && !g.allowed.iter().any(|a| a.eq_ignore_ascii_case(v.trim()))
            {
                return Err(OptionsError::Guarded {
                    key: g.key.to_owned(),
                    value: self.redactor().redact(v),
                    reason: g.reason,
                });
            }
        }
        Ok(())
    }

    /// Sets every property on `cc`.
    pub fn apply(&self, cc: &mut ClientConfig) {
        for (k, v) in &self.properties {
            cc.set(k, v);
        }
    }

    /// Sets each property, alone, on a fresh librdkafka configuration, so an unknown key or a value
    /// librdkafka refuses (including features missing from the build) is reported with its key.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let r = self.redactor();
        for (k, v) in &self.properties {
            let mut cc = ClientConfig::new();
            cc.set(k, v);
            if let Err(e) = cc.create_native_config() {
                return Err(OptionsError::Rejected { key: k.clone(), message: r.redact(&describe(&e)) });
            }
        }
        Ok(())
    }
}

/// librdkafka's own words for a configuration error, without rdkafka's wrapping that repeats the
/// value.
fn describe(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, _, _) => desc.clone(),
        KafkaError::ClientCreation(desc) => desc.clone(),
        other => other.to_string(),
    }
}

/// Creates a client of type `T` from `cc` the way `run` would, turning librdkafka's refusal
/// into an error with secrets redacted. librdkafka's messages at this stage do not always name
/// the property ("Unsupported SASL mechanism: X"), so an option whose value the message quotes
/// is named. The client is dropped at once.
pub fn try_create<T: rdkafka::config::FromClientConfig>(
    cc: &ClientConfig,
    what: &'static str,
    options: &ClientOptions,
) -> Result<(), OptionsError> {
    T::from_config(cc).map(drop).map_err(|e| {
        let text = describe(&e);
        let culprit = options
            .properties
            .iter()
            .find(|(k, v)| !is_secret_key(k) && v.len() > 1 && text.contains(v.as_str()) && !text.contains(k.as_str()));
        let text = match culprit {
            Some((k, _)) => format!("kafka.options.\"{k}\": {text}"),
            None => text,
        };
        OptionsError::Client { what, message: options.redactor().redact(&text) }
    })
}

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

const FATAL_PREFIX: &str = "fatal: ";

/// The first authentication failure (or fatal error) a client reported (a SASL login refused). librdkafka
/// retries such a connection forever; the programs treat it as fatal instead, so a wrong password
/// fails fast with a message that says so rather than leaving a process that looks healthy.
#[derive(Debug, Default)]
pub struct AuthFailure {
    message: std::sync::Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl AuthFailure {
    /// Records `error` if it is an authentication failure; returns whether it was.
    pub fn observe(&self, error: &KafkaError, reason: &str) -> bool {
        let auth = matches!(error, KafkaError::Global(rdkafka::types::RDKafkaErrorCode::Authentication));
        if auth {
            let mut m = self.message.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if m.is_none() {
                *m = Some(reason.to_owned());
                self.notify.notify_one();
            }
        }
        auth
    }

    /// Records a fatal client error (librdkafka's `_FATAL`: an idempotent producer fenced or
    /// desynchronised); every later send would fail, so the program stops and its supervisor
    /// restarts it from the last checkpoint. Returns whether `error` was fatal.
    pub fn observe_fatal(&self, error: &KafkaError, reason: &str) -> bool {
        let fatal = matches!(error, KafkaError::Global(rdkafka::types::RDKafkaErrorCode::Fatal));
        if fatal {
            self.fatal(reason);
        }
        fatal
    }

    /// Records a fatal error found by asking the client (`rd_kafka_fatal_error`): rust-rdkafka
    /// hands the error callback the underlying code (e.g. `ClusterAuthorizationFailed`) rather
    /// than `_FATAL`, so the callback alone cannot tell.
    pub fn fatal(&self, reason: &str) {
        let mut m = self.message.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.is_none() {
            *m = Some(format!("{FATAL_PREFIX}{reason}"));
            self.notify.notify_one();
        }
    }

    /// The recorded failure.
    pub fn get(&self) -> Option<String> {
        self.message.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Resolves with the first failure.
    pub async fn wait(&self) -> String {
        loop {
            if let Some(m) = self.get() {
                return m;
            }
            self.notify.notified().await;
        }
    }

    /// The operator-facing message: librdkafka's reason, the user name and what to check.
    pub fn explain(reason: &str, options: &ClientOptions) -> String {
        if let Some(fatal) = reason.strip_prefix(FATAL_PREFIX) {
            return options.redactor().redact(&format!(
                "librdkafka reported a fatal error ({fatal}); stopping so that a restart resumes from the checkpoints"
            ));
        }
        let user = options.get("sasl.username").unwrap_or("(unset)");
        let mechanism = options.get("sasl.mechanism").or(options.get("sasl.mechanisms")).unwrap_or("GSSAPI");
        options.redactor().redact(&format!(
            "Kafka refused the login of sasl.username {user:?} ({mechanism}): {reason}; check kafka.options \"sasl.username\" and \"sasl.password\" (or sasl.password-file / -env)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn secrets_come_from_files_and_env_and_are_redacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cr3t-from-file\n").expect("write");
        let opts = map(&[
            ("sasl.password-file", file.to_str().expect("utf-8")),
            ("ssl.key.password-env", "KEY_PW"),
            ("security.protocol", "SASL_SSL"),
        ]);
        let env = |v: &str| (v == "KEY_PW").then(|| "pw-from-env".to_owned());
        let r = ClientOptions::resolve_with(&opts, &env).expect("resolves");
        assert_eq!(r.get("sasl.password"), Some("s3cr3t-from-file"));
        assert_eq!(r.get("ssl.key.password"), Some("pw-from-env"));
        let shown = format!("{r:?} {:?}", r.redacted());
        assert!(!shown.contains("s3cr3t") && !shown.contains("pw-from-env"), "{shown}");
        assert!(shown.contains("SASL_SSL"));
        let text = r.redactor().redact("login with s3cr3t-from-file failed");
        assert_eq!(text, "login with *** failed");
    }

    #[test]
    fn missing_sources_and_duplicates_name_the_key() {
        let none = |_: &str| None;
        let e = ClientOptions::resolve_with(&map(&[("sasl.password-env", "NOPE")]), &none).expect_err("unset");
        assert!(e.to_string().contains("sasl.password-env") && e.to_string().contains("NOPE"), "{e}");
        let e = ClientOptions::resolve_with(&map(&[("sasl.password-file", "/nonexistent/pw")]), &none)
            .expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/pw"), "{e}");
        let e = ClientOptions::resolve_with(&map(&[("sasl.password", "a"), ("sasl.password-env", "X")]), &|_| {
            Some("b".into())
        })
        .expect_err("duplicate");
        assert!(e.to_string().contains("sasl.password"), "{e}");
    }

    #[test]
    fn guards_refuse_with_reason() {
        const GUARDS: &[Guard] =
            &[Guard { key: "acks", allowed: &["all", "-1"], reason: "at-least-once needs acks=all" }];
        let ok = ClientOptions::resolve_with(&map(&[("acks", "ALL")]), &|_| None).expect("resolves");
        ok.check_guards(GUARDS).expect("all is allowed");
        let bad = ClientOptions::resolve_with(&map(&[("acks", "1")]), &|_| None).expect("resolves");
        let e = bad.check_guards(GUARDS).expect_err("acks=1").to_string();
        assert!(e.contains("acks") && e.contains("at-least-once"), "{e}");
    }

    #[test]
    fn librdkafka_refusals_name_the_key_without_the_secret() {
        let r = ClientOptions::resolve_with(&map(&[("no.such.property", "1")]), &|_| None).expect("resolves");
        let e = r.validate().expect_err("unknown").to_string();
        assert!(e.contains("no.such.property"), "{e}");
        let r = ClientOptions::resolve_with(&map(&[("compression.type", "hunter2")]), &|_| None).expect("resolves");
        let e = r.validate().expect_err("bad codec").to_string();
        assert!(e.contains("compression.type"), "{e}");
        // A mechanism is only checked when a client is created, which `check` does too.
        let r = ClientOptions::resolve_with(
            &map(&[("security.protocol", "SASL_SSL"), ("sasl.mechanism", "NOPE")]),
            &|_| None,
        )
        .expect("resolves");
        let mut cc = ClientConfig::new();
        r.apply(&mut cc);
        let e = try_create::<rdkafka::producer::BaseProducer>(&cc, "producer", &r).expect_err("bad mechanism");
        assert!(e.to_string().contains("sasl.mechanism"), "{e}");
        // This build links OpenSSL and zstd: what issue #8 found refused is accepted now.
        let r = ClientOptions::resolve_with(
            &map(&[
                ("security.protocol", "SASL_SSL"),
                ("compression.type", "zstd"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
            ]),
            &|_| None,
        )
        .expect("resolves");
        r.validate().expect("ssl, sasl_scram and zstd are built in");
        let mut cc = ClientConfig::new();
        cc.set("builtin.features", "ssl,sasl_plain,sasl_scram,sasl_oauthbearer,zstd");
        cc.create_native_config().expect("the build has every feature Zonal documents");
    }

    #[test]
    fn toml_redaction_keeps_file_references() {
        let mut v: toml::Value = toml::from_str(
            r#"
[kafka.options]
"sasl.password" = "hunter2"
"ssl.key.password-file" = "/run/secrets/key-pw"
"security.protocol" = "SSL"
[etcd]
password = "etcd-pw"
"#,
        )
        .expect("toml");
        redact_toml(&mut v, &["etcd.password"]);
        let text = toml::to_string(&v).expect("render");
        assert!(!text.contains("hunter2") && !text.contains("etcd-pw"), "{text}");
        assert!(text.contains("/run/secrets/key-pw") && text.contains("SSL"), "{text}");
    }
}

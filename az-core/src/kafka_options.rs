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
//!
//! Redaction lives in `redact`, and the [`AuthFailure`] that makes a refused login fatal in `auth`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

mod auth;
mod redact;

pub use auth::AuthFailure;
pub use redact::{Redactor, redact_toml};

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
        out.msk_iam()?;
        Ok(out)
    }

    /// `sasl.mechanism = "AWS_MSK_IAM"` becomes OAUTHBEARER with tokens from `msk_iam`: the
    /// region and token lifetime options move into `sasl.oauthbearer.config`, where every
    /// client context's token refresh reads them.
    fn msk_iam(&mut self) -> Result<(), OptionsError> {
        use crate::msk_iam::{LIFETIME_OPTION, MECHANISM, REGION_OPTION, Settings};
        // librdkafka's unsecured JWT is never refreshed in these programs (their contexts answer
        // token refreshes for MSK IAM): its token would expire after an hour and every login fail.
        if let Some(v) = self.properties.get("enable.sasl.oauthbearer.unsecure.jwt")
            && v.trim().eq_ignore_ascii_case("true")
        {
            return Err(OptionsError::Rejected {
                key: "enable.sasl.oauthbearer.unsecure.jwt".into(),
                message: format!(
                    "unsecured JWTs (a test mechanism) are not supported; use \"sasl.mechanism\" = \"{MECHANISM}\", SCRAM or mutual TLS"
                ),
            });
        }
        let region = self.properties.remove(REGION_OPTION);
        let lifetime = self.properties.remove(LIFETIME_OPTION);
        let mechanism_key = ["sasl.mechanism", "sasl.mechanisms"]
            .into_iter()
            .find(|k| self.properties.get(*k).is_some_and(|m| m.trim().eq_ignore_ascii_case(MECHANISM)));
        let Some(mechanism_key) = mechanism_key else {
            if let Some(key) = [(REGION_OPTION, &region), (LIFETIME_OPTION, &lifetime)]
                .into_iter()
                .find_map(|(k, v)| v.as_ref().map(|_| k))
            {
                return Err(OptionsError::Rejected {
                    key: key.to_owned(),
                    message: format!("only used with \"sasl.mechanism\" = \"{MECHANISM}\""),
                });
            }
            return Ok(());
        };
        // A token is a bearer credential for 15 minutes: it never travels in clear text.
        let protocol = self.properties.get("security.protocol").map(|p| p.trim().to_ascii_uppercase());
        if protocol.as_deref() != Some("SASL_SSL") {
            return Err(OptionsError::Rejected {
                key: "security.protocol".into(),
                message: format!(
                    "\"sasl.mechanism\" = \"{MECHANISM}\" needs \"security.protocol\" = \"SASL_SSL\" (the token must not travel in clear text)"
                ),
            });
        }
        if self.properties.contains_key("sasl.oauthbearer.config") {
            return Err(OptionsError::Rejected {
                key: "sasl.oauthbearer.config".into(),
                message: format!("set by \"sasl.mechanism\" = \"{MECHANISM}\"; remove it"),
            });
        }
        let lifetime = match lifetime {
            None => None,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (1..=900).contains(&n) => Some(std::time::Duration::from_secs(n)),
                _ => {
                    return Err(OptionsError::Rejected {
                        key: LIFETIME_OPTION.into(),
                        message: format!("{v:?} is not a number of seconds from 1 to 900 (MSK's limit)"),
                    });
                }
            },
        };
        self.properties.insert(mechanism_key.to_owned(), "OAUTHBEARER".into());
        self.properties.insert("sasl.oauthbearer.config".into(), Settings { region, lifetime }.config());
        Ok(())
    }

    /// Whether clients log in with MSK IAM (`sasl.mechanism = "AWS_MSK_IAM"`).
    pub fn msk_iam_login(&self) -> bool {
        self.get("sasl.oauthbearer.config").is_some_and(|c| crate::msk_iam::Settings::parse(c).is_some())
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

#[cfg(test)]
mod tests;

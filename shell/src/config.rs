//! Configuration layering (defaults, then the TOML file, then environment variables), errors in
//! one line that name the file and the field, and the effective configuration printed with its
//! secrets hidden.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a configuration could not be read or printed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layers did not make a valid configuration; the text names the file and each field.
    #[error("{0}")]
    Invalid(String),
    /// The configuration could not be rendered as TOML.
    #[error("rendering the configuration as TOML: {0}")]
    Render(String),
}

/// A program's one configuration struct: where its environment variables start, which of its
/// fields are secrets, and what serde cannot check. Loading, layering and printing come with it.
pub trait ProgramConfig: Serialize + DeserializeOwned + Default {
    /// Prefix of the environment variables that override the file, e.g. `ZONAL_AGENT__`.
    const ENV_PREFIX: &'static str;

    /// Dotted paths of secret fields beside librdkafka's own (which are always hidden).
    const SECRETS: &'static [&'static str] = &[];

    /// Checks what serde cannot: required values, patterns, ranges. Errors name the field.
    fn validate(&self) -> anyhow::Result<()>;

    /// The `[log]` section.
    fn log(&self) -> &LogConfig;

    /// The layers: defaults, the file (when given), the environment.
    fn figment(file: Option<&Path>) -> Figment {
        layered::<Self>(Self::ENV_PREFIX, file.as_slice())
    }

    /// Loads and validates; errors name the file and the field.
    fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Self::load_files(file.as_slice())
    }

    /// Loads `files` in order (a later file's keys win, tables merge) and validates; errors name
    /// the file and the field.
    fn load_files(files: &[&Path]) -> anyhow::Result<Self> {
        let config: Self = extract(Self::ENV_PREFIX, files)?;
        config.validate()?;
        Ok(config)
    }

    /// The effective configuration, secrets hidden.
    fn to_toml(&self) -> Result<String, ConfigError> {
        to_toml(self, Self::SECRETS)
    }
}

/// Configuration layers, later ones winning: `T::default()`, the TOML files in order (tables
/// merge, so a Kubernetes overlay can add `[kafka.options]` beside a base file's settings),
/// then environment variables `<prefix>SECTION__KEY` (`__` separates levels, `_` stands for `-`).
pub fn layered<T: Serialize + Default>(env_prefix: &str, files: &[&Path]) -> Figment {
    let mut f = Figment::from(Serialized::defaults(T::default()));
    for file in files {
        f = f.merge(Toml::file_exact(file));
    }
    f.merge(Env::prefixed(env_prefix).split("__").map(|k| k.as_str().replace('_', "-").into()))
}

/// Reads `T` from its layers (see [`layered`]). What serde cannot check (required values,
/// ranges) is the program's own validation, after this.
pub fn extract<T: Serialize + DeserializeOwned + Default>(env_prefix: &str, files: &[&Path]) -> Result<T, ConfigError> {
    layered::<T>(env_prefix, files).extract().map_err(|e| ConfigError::Invalid(config_error(e, files)))
}

/// The effective configuration as TOML, with every librdkafka secret and each of `secrets`
/// (dotted paths such as `etcd.password`) replaced, so that it can be printed and logged.
pub fn to_toml<T: Serialize>(config: &T, secrets: &[&str]) -> Result<String, ConfigError> {
    let mut value = toml::Value::try_from(config).map_err(|e| ConfigError::Render(e.to_string()))?;
    az_core::kafka_options::redact_toml(&mut value, secrets);
    toml::to_string_pretty(&value).map_err(|e| ConfigError::Render(e.to_string()))
}

/// One line for a figment extraction error: every failure with the dotted path of its field,
/// and, when there are several files, the one the value came from.
pub fn config_error(e: figment::Error, files: &[&Path]) -> String {
    let where_: String = files.iter().map(|f| format!(" {}", f.display())).collect::<Vec<_>>().join(",");
    let text = e
        .into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let from = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
                Some(figment::Source::File(f)) if files.len() > 1 => format!(" (in {})", f.display()),
                _ => String::new(),
            };
            if path.is_empty() { format!("{}{from}", e.kind) } else { format!("{path}: {}{from}", e.kind) }
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!("invalid configuration{where_}: {text}")
}

/// The `[log]` section of both programs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (the default) or `json`: one JSON object per line, with `timestamp`, `level`,
    /// `target` and `fields` (`message` and the event's own fields), for log collectors that
    /// parse JSON. `RUST_LOG` filters either.
    pub format: LogFormat,
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

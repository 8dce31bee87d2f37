//! [`AuthFailure`]: the first refused login or fatal client error, which the programs treat as
//! fatal instead of letting librdkafka retry it forever.

use rdkafka::error::KafkaError;

use super::ClientOptions;

/// Marks a recorded message as a fatal client error rather than a refused login, so that
/// [`AuthFailure::explain`] can word each as what it is.
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
        if options.msk_iam_login() {
            return options.redactor().redact(&format!(
                "Kafka refused the MSK IAM login: {reason}; check the AWS credentials the programs find (environment, IRSA or Pod Identity role, instance profile), that their role may kafka-cluster:Connect to this cluster, and kafka.options \"sasl.aws-msk-iam.region\""
            ));
        }
        let user = options.get("sasl.username").unwrap_or("(unset)");
        let mechanism = options.get("sasl.mechanism").or(options.get("sasl.mechanisms")).unwrap_or("GSSAPI");
        options.redactor().redact(&format!(
            "Kafka refused the login of sasl.username {user:?} ({mechanism}): {reason}; check kafka.options \"sasl.username\" and \"sasl.password\" (or sasl.password-file / -env)"
        ))
    }
}

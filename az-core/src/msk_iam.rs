//! Amazon MSK's IAM login for librdkafka clients: `sasl.mechanism = "AWS_MSK_IAM"` in
//! `kafka.options` (the name the Java client's plugin uses) becomes OAUTHBEARER with a token
//! that is a SigV4-presigned `kafka-cluster:Connect` request, as AWS's MSK IAM SASL signers
//! (Go, Python, JavaScript) make it, signed with the AWS credentials chain (environment, web
//! identity as EKS's IRSA and Pod Identity give it, profile, instance metadata).
//!
//! ```text
//!  kafka.options "sasl.mechanism" = "AWS_MSK_IAM" (+ "sasl.aws-msk-iam.region")
//!     ──resolve──> sasl.mechanism = OAUTHBEARER, sasl.oauthbearer.config = "aws-msk-iam region=…"
//!  librdkafka token refresh (at 80% of a token's life) ──ClientContext::generate_oauth_token──┐
//!  a client just created (`prime`, before it connects) ──────────────────────────────────────┤
//!     token(config) ──> Signer thread (its own runtime: the credentials chain is async)       │
//!        credentials (cached by the chain) ──presign(GET https://kafka.<region>.amazonaws.com/
//!        ?Action=kafka-cluster%3AConnect, 900 s)──> base64url(URL) ──> OAuthToken <──────────┘
//! ```
//!
//! A token lives 15 minutes (MSK's limit) or until the credentials expire, whichever is first;
//! librdkafka asks for the next one well before. With no credentials the error names the chain
//! and the client's login fails loudly (the programs stop on a refused login).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use base64::Engine;

/// The mechanism name in `kafka.options` that asks for MSK IAM.
pub const MECHANISM: &str = "AWS_MSK_IAM";
/// The pseudo-option naming the region to sign for (else the AWS region chain).
pub const REGION_OPTION: &str = "sasl.aws-msk-iam.region";
/// The pseudo-option setting a token's lifetime in seconds (900, MSK's limit, by default).
pub const LIFETIME_OPTION: &str = "sasl.aws-msk-iam.token-lifetime-secs";
/// What `sasl.oauthbearer.config` starts with for MSK IAM.
pub const CONFIG_PREFIX: &str = "aws-msk-iam";
/// The longest a token may live: MSK refuses `X-Amz-Expires` above 900.
pub const MAX_LIFETIME: Duration = Duration::from_secs(900);
/// How long a client waits for a token before its login is failed.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MskIamError {
    /// No region was given and the AWS region chain found none.
    #[error("MSK IAM: no AWS region: set kafka.options.\"{REGION_OPTION}\" or AWS_REGION")]
    NoRegion,
    /// The credentials chain gave no credentials.
    #[error(
        "MSK IAM: no AWS credentials from the default chain (environment, web identity, profile, instance metadata): {0}"
    )]
    Credentials(String),
    /// Signing failed.
    #[error("MSK IAM: signing the token failed: {0}")]
    Sign(String),
    /// The signer's thread is gone or did not answer in time.
    #[error("MSK IAM: the signer did not answer: {0}")]
    Signer(String),
    /// `sasl.oauthbearer.config` is not an MSK IAM configuration.
    #[error(
        "OAUTHBEARER tokens come from kafka.options \"sasl.mechanism\" = \"{MECHANISM}\"; this sasl.oauthbearer.config is not its configuration: {0}"
    )]
    NotMskIam(String),
}

/// A token and what librdkafka needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The token: the presigned URL, base64url without padding.
    pub value: String,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_ms: i64,
    /// The principal librdkafka logs: the access key id.
    pub principal: String,
}

/// The MSK IAM settings carried in `sasl.oauthbearer.config`: `aws-msk-iam [region=<r>]
/// [lifetime-secs=<n>]` (a shorter lifetime is for tests of the refresh).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// The region to sign for; the AWS region chain's when absent.
    pub region: Option<String>,
    /// The token's lifetime, at most [`MAX_LIFETIME`].
    pub lifetime: Option<Duration>,
}

impl Settings {
    /// Parses an `sasl.oauthbearer.config` value; `None` when it is not MSK IAM's.
    pub fn parse(config: &str) -> Option<Settings> {
        let mut words = config.split_whitespace();
        if words.next()? != CONFIG_PREFIX {
            return None;
        }
        let mut s = Settings::default();
        for w in words {
            match w.split_once('=') {
                Some(("region", r)) => s.region = Some(r.to_owned()),
                Some(("lifetime-secs", n)) => s.lifetime = n.parse().ok().map(Duration::from_secs),
                _ => {}
            }
        }
        Some(s)
    }

    /// The `sasl.oauthbearer.config` value for these settings.
    pub fn config(&self) -> String {
        let mut c = CONFIG_PREFIX.to_owned();
        if let Some(r) = &self.region {
            c.push_str(&format!(" region={r}"));
        }
        if let Some(l) = self.lifetime {
            c.push_str(&format!(" lifetime-secs={}", l.as_secs()));
        }
        c
    }
}

/// The host a token is signed for (MSK checks the signature, not the host it is sent to).
pub fn host(region: &str) -> String {
    format!("kafka.{region}.amazonaws.com")
}

/// Presigns MSK's `kafka-cluster:Connect` action with `credentials` at `now`, valid for
/// `lifetime` (at most 900 s, and never past the credentials' own expiry). Pure: the same
/// inputs give the same token.
pub fn presign(
    credentials: &Credentials,
    region: &str,
    now: SystemTime,
    lifetime: Duration,
) -> Result<Token, MskIamError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
    let mut lifetime = lifetime.min(MAX_LIFETIME);
    if let Some(expiry) = credentials.expiry() {
        lifetime = lifetime.min(expiry.duration_since(now).unwrap_or_default());
    }
    let lifetime = lifetime.max(Duration::from_secs(1));
    let host = host(region);
    let url = format!("https://{host}/?Action=kafka-cluster%3AConnect");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(lifetime);
    let identity = credentials.clone().into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kafka-cluster")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| MskIamError::Sign(e.to_string()))?
        .into();
    // The payload of a GET is empty: its hash is signed, as AWS's signers do.
    let request = SignableRequest::new("GET", &url, std::iter::once(("host", host.as_str())), SignableBody::Bytes(&[]))
        .map_err(|e| MskIamError::Sign(e.to_string()))?;
    let (instructions, _) = sign(request, &params).map_err(|e| MskIamError::Sign(e.to_string()))?.into_parts();
    let mut signed = url;
    for (k, v) in instructions.params() {
        signed.push('&');
        signed.push_str(k);
        signed.push('=');
        signed.push_str(&encode(v));
    }
    // Added after signing, as AWS's signers do; MSK does not sign it.
    signed.push_str(&format!("&User-Agent=zonal%2F{}", env!("CARGO_PKG_VERSION")));
    // The expiry as MSK computes it: from X-Amz-Date, which has whole seconds. Counted from
    // `now` instead, librdkafka believed a token good for up to a second longer than it was,
    // refreshed it too late, and a session opened in that second was refused.
    let signed_at = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let expires_ms = signed_at.saturating_add(lifetime.as_secs()).saturating_mul(1000);
    Ok(Token {
        value: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed),
        expires_ms: i64::try_from(expires_ms).unwrap_or(i64::MAX),
        principal: credentials.access_key_id().to_owned(),
    })
}

/// SigV4's URI encoding of a query value: unreserved characters kept, every other byte `%XX`.
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request to the signer thread.
type Request = (Settings, mpsc::Sender<Result<Token, MskIamError>>);

/// The process's signer: one thread with its own runtime, holding the AWS credentials chain
/// (which caches credentials until shortly before they expire). librdkafka asks for tokens from
/// its own threads or from inside the program's runtime, where an async chain cannot be awaited.
fn signer() -> &'static tokio::sync::mpsc::UnboundedSender<Request> {
    static SIGNER: OnceLock<tokio::sync::mpsc::UnboundedSender<Request>> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Request>();
        let spawned = std::thread::Builder::new().name("msk-iam".into()).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(serve(rx)),
                Err(e) => {
                    while let Some((_, reply)) = rx.blocking_recv() {
                        let _ = reply.send(Err(MskIamError::Signer(format!("no runtime: {e}"))));
                    }
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "MSK IAM: the signer thread could not start");
        }
        tx
    })
}

/// Answers token requests until every sender is gone. The AWS configuration is loaded at the
/// first request, with its region when the options name one (no region lookup then).
async fn serve(mut rx: tokio::sync::mpsc::UnboundedReceiver<Request>) {
    let mut config: Option<aws_config::SdkConfig> = None;
    let mut regions = BTreeSet::new();
    while let Some((settings, reply)) = rx.recv().await {
        if config.is_none() {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
            if let Some(r) = &settings.region {
                loader = loader.region(aws_config::Region::new(r.clone()));
            }
            config = Some(loader.load().await);
        }
        let Some(sdk) = config.as_ref() else { continue };
        let token = async {
            let region = settings
                .region
                .clone()
                .or_else(|| sdk.region().map(ToString::to_string))
                .ok_or(MskIamError::NoRegion)?;
            let provider =
                sdk.credentials_provider().ok_or_else(|| MskIamError::Credentials("no provider configured".into()))?;
            let credentials =
                provider.provide_credentials().await.map_err(|e| MskIamError::Credentials(format!("{e}")))?;
            if regions.insert(region.clone()) {
                tracing::info!(region, "MSK IAM: signing Kafka logins");
            }
            presign(&credentials, &region, SystemTime::now(), settings.lifetime.unwrap_or(MAX_LIFETIME))
        }
        .await;
        let _ = reply.send(token);
    }
}

/// The last token made for each configuration, served again while it is still good for
/// [`STILL_GOOD`] when a new one cannot be made: a throttled or briefly unreachable STS or
/// instance metadata service must not fail a login that the current token still covers.
fn last_tokens() -> &'static Mutex<BTreeMap<String, Token>> {
    static LAST: OnceLock<Mutex<BTreeMap<String, Token>>> = OnceLock::new();
    LAST.get_or_init(Mutex::default)
}

/// How long a token must still be good to be served again instead of an error.
const STILL_GOOD: Duration = Duration::from_secs(30);

/// A token for an `sasl.oauthbearer.config` value: MSK IAM's, signed now (or the last one,
/// while still good, when signing fails).
pub fn token(config: Option<&str>) -> Result<Token, MskIamError> {
    let text = config.unwrap_or_default();
    let settings = Settings::parse(text).ok_or_else(|| MskIamError::NotMskIam(text.to_owned()))?;
    let (tx, rx) = mpsc::channel();
    let made = signer()
        .send((settings, tx))
        .map_err(|_| MskIamError::Signer("its thread ended".into()))
        .and_then(|()| rx.recv_timeout(TOKEN_TIMEOUT).map_err(|e| MskIamError::Signer(e.to_string()))?);
    let mut last = last_tokens().lock().unwrap_or_else(PoisonError::into_inner);
    match made {
        Ok(t) => {
            last.insert(text.to_owned(), t.clone());
            Ok(t)
        }
        Err(e) => {
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
            let good_until = now_ms + STILL_GOOD.as_millis();
            match last.get(text).filter(|t| u128::try_from(t.expires_ms).unwrap_or(0) > good_until) {
                Some(t) => {
                    tracing::warn!(error = %e, "MSK IAM: no new token; the current one is served again while it lasts");
                    Ok(t.clone())
                }
                None => Err(e),
            }
        }
    }
}

/// Runs `f`, which may block for up to [`TOKEN_TIMEOUT`], without holding up the tasks of a
/// multi-threaded runtime when called from one (librdkafka's token refresh is served wherever
/// its queue is polled, which is inside the transporter's runtime).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// What a client context answers librdkafka's token refresh with.
pub fn generate(config: Option<&str>) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
    let t = blocking(|| token(config))?;
    Ok(rdkafka::client::OAuthToken { token: t.value, principal_name: t.principal, lifetime_ms: t.expires_ms })
}

/// Gives a client just created its first token, when it logs in with MSK IAM: librdkafka asks
/// for one through the client's queue, which a client used only for a metadata request (or
/// one not yet polled) never serves, and it would not connect. Later tokens come through
/// `generate` as the queue is served. A failure is logged; the login then fails loudly.
pub fn prime<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    options: &crate::kafka_options::ClientOptions,
) {
    if !options.msk_iam_login() {
        return;
    }
    let config = options.get("sasl.oauthbearer.config");
    match blocking(|| token(config)) {
        Ok(t) => {
            if let Err(e) = crate::admin::set_oauth_token(client, &t.value, t.expires_ms, &t.principal) {
                tracing::warn!(error = %e, "MSK IAM: librdkafka refused the token");
            }
        }
        Err(e) => tracing::error!(error = %e, "MSK IAM: no token for a new Kafka client"),
    }
}

/// A client context for clients that need nothing but the MSK IAM login (metadata, admin).
#[derive(Debug, Clone, Default)]
pub struct IamContext;

impl rdkafka::ClientContext for IamContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        generate(config)
    }
}

impl rdkafka::consumer::ConsumerContext for IamContext {}

#[cfg(test)]
mod tests;

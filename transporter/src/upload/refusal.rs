//! What S3's answers mean for an upload: a precondition failed (an object is at the key), a
//! lasting refusal (a 4xx that retrying does not change), or an error that may pass; and an SDK
//! error in one line.

use aws_sdk_s3::error::ProvideErrorMetadata;

/// Attempts in a row that S3 refuses with a lasting 4xx before an upload gives up.
pub const MAX_REFUSED: u32 = 3;

/// S3 refused a request with a status that retrying does not change (a 4xx other than 408,
/// 412 and 429).
#[derive(Debug, thiserror::Error)]
#[error("S3 refused it with HTTP {status}")]
pub struct Refused {
    /// The status.
    pub status: u16,
}

/// Marks an error as a lasting refusal ([`Refused`]) when `status` says so.
pub(super) fn refusal(status: Option<u16>, e: anyhow::Error) -> anyhow::Error {
    match status {
        Some(status) if (400..500).contains(&status) && ![408, 412, 429].contains(&status) => {
            e.context(Refused { status })
        }
        _ => e,
    }
}

/// An SDK error in one line: `HTTP 501 NotImplemented: <message>` for an answer, the error's
/// chain otherwise (a connection, a timeout).
pub(crate) fn brief<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match (status_of(e), e.code()) {
        (Some(s), Some(code)) => format!("HTTP {s} {code}: {}", e.message().unwrap_or_default()),
        (Some(s), None) => format!("HTTP {s}"),
        _ => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
    }
}

/// The HTTP status of an SDK error's response, if it got one.
pub(super) fn status_of<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

pub(super) fn precondition_failed<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> bool {
    e.as_service_error().and_then(ProvideErrorMetadata::code) == Some("PreconditionFailed")
        || e.raw_response().is_some_and(|r| r.status().as_u16() == 412)
}

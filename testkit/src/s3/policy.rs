//! What a bucket's owner asks of writers, as AWS S3 bucket policies commonly do: object writes
//! without server-side encryption of a given kind are denied (`403 AccessDenied`), and the
//! object-level headers of every write are recorded for tests to read. Also the credentials the
//! server accepts.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use super::errors::error_with;

/// The AWS credentials the test S3 server accepts (the same for every server of a test process):
/// programs under test get them from the environment, and a secured Kafka cluster can take them
/// for its MSK IAM login ([`crate::Security::msk_iam`]).
pub fn test_credentials() -> (String, String) {
    ("zonal-test-access".to_owned(), format!("zonal-test-secret-{}", std::process::id()))
}

/// The object-level headers recorded from each write (encryption, key, bucket key, storage
/// class), as the store received them.
pub const RECORDED: [&str; 8] = [
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-bucket-key-enabled",
    "x-amz-storage-class",
    "x-amz-checksum-algorithm",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc32",
    "x-amz-checksum-sha256",
];

/// The bucket owner's demands and what writers sent.
#[derive(Debug, Default)]
pub struct Policy {
    /// Object writes must carry `x-amz-server-side-encryption` with this value.
    require_sse: Mutex<Option<String>>,
    /// The [`RECORDED`] headers of each object write (PUT of an object, multipart creation).
    writes: Mutex<Vec<BTreeMap<String, String>>>,
}

impl Policy {
    /// Denies object writes without `x-amz-server-side-encryption: <value>` (`None`: allows all).
    pub fn require_encryption(&self, value: Option<&str>) {
        *self.require_sse.lock().unwrap_or_else(PoisonError::into_inner) = value.map(str::to_owned);
    }

    /// The recorded headers of every object write so far, in order.
    pub fn writes(&self) -> Vec<BTreeMap<String, String>> {
        self.writes.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records an object write's headers and answers a denied one.
    pub(super) fn check(
        &self,
        req: &hyper::Request<hyper::body::Incoming>,
        object_write: bool,
    ) -> Option<s3s::HttpResponse> {
        let query = req.uri().query().unwrap_or("");
        let creates = object_write && req.method() == hyper::Method::PUT
            || (req.method() == hyper::Method::POST && query.split('&').any(|p| p == "uploads" || p == "uploads="));
        if !creates {
            return None;
        }
        let header = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let seen: BTreeMap<String, String> =
            RECORDED.iter().filter_map(|k| header(k).map(|v| ((*k).to_owned(), v))).collect();
        let sse = seen.get(RECORDED[0]).cloned();
        self.writes.lock().unwrap_or_else(PoisonError::into_inner).push(seen);
        let required = self.require_sse.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match required {
            Some(r) if sse.as_deref() != Some(r.as_str()) => Some(error_with(
                403,
                "AccessDenied",
                "Access Denied (the bucket policy requires server-side encryption)",
            )),
            _ => None,
        }
    }
}

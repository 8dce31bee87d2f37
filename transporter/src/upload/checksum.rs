//! `s3.checksum-algorithm`: a checksum of each request body, computed from the file before the
//! request and sent with it, so that the store refuses a body that does not match what the
//! worker compressed and keeps the checksum with the object for readers to verify.
//!
//! ```text
//!  file[offset..offset+len] ──crc32c | crc32 | sha256──> base64 ──> x-amz-checksum-* on the PUT or the part
//!  every part's checksum ──> CompletedPart ──> CompleteMultipartUpload (the store checks the list)
//! ```

use anyhow::Context;
use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::config::ChecksumAlgorithm;

/// The checksum of `bytes`, base64 as S3 wants it (CRCs big-endian), or `None` for `none`.
pub fn of_bytes(alg: ChecksumAlgorithm, bytes: &[u8]) -> Option<String> {
    let mut h = Hasher::new(alg)?;
    h.update(bytes);
    Some(h.finish())
}

/// The checksum of `len` bytes of `path` from `offset`, read a MiB at a time.
pub async fn of_file(
    alg: ChecksumAlgorithm,
    path: &std::path::Path,
    offset: u64,
    len: u64,
) -> anyhow::Result<Option<String>> {
    let Some(mut h) = Hasher::new(alg) else { return Ok(None) };
    let mut f =
        tokio::fs::File::open(path).await.with_context(|| format!("opening {} for its checksum", path.display()))?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut left = len;
    let mut buf = vec![0; 1 << 20];
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64))?;
        let n =
            f.read(&mut buf[..want]).await.with_context(|| format!("reading {} for its checksum", path.display()))?;
        anyhow::ensure!(n > 0, "{} ended {left} bytes before the object's end", path.display());
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(Some(h.finish()))
}

enum Hasher {
    Crc32c(u32),
    Crc32(crc32fast::Hasher),
    Sha256(aws_lc_rs::digest::Context),
}

impl Hasher {
    fn new(alg: ChecksumAlgorithm) -> Option<Self> {
        Some(match alg {
            ChecksumAlgorithm::None => return None,
            ChecksumAlgorithm::Crc32c => Hasher::Crc32c(0),
            ChecksumAlgorithm::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Sha256 => Hasher::Sha256(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256)),
        })
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Crc32c(c) => *c = crc32c::crc32c_append(*c, bytes),
            Hasher::Crc32(h) => h.update(bytes),
            Hasher::Sha256(d) => d.update(bytes),
        }
    }

    fn finish(self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self {
            Hasher::Crc32c(c) => b64.encode(c.to_be_bytes()),
            Hasher::Crc32(h) => b64.encode(h.finalize().to_be_bytes()),
            Hasher::Sha256(d) => b64.encode(d.finish().as_ref()),
        }
    }
}

/// Sets a computed checksum on a request (or a completed part) under its algorithm's header.
pub trait WithChecksum: Sized {
    /// `self` with `value` as its `alg` checksum; unchanged without one.
    fn with_checksum(self, alg: ChecksumAlgorithm, value: Option<String>) -> Self;
}

macro_rules! with_checksum {
    ($($t:ty),*) => {$(
        impl WithChecksum for $t {
            fn with_checksum(self, alg: ChecksumAlgorithm, value: Option<String>) -> Self {
                let Some(v) = value else { return self };
                match alg {
                    ChecksumAlgorithm::None => self,
                    ChecksumAlgorithm::Crc32c => self.checksum_crc32_c(v),
                    ChecksumAlgorithm::Crc32 => self.checksum_crc32(v),
                    ChecksumAlgorithm::Sha256 => self.checksum_sha256(v),
                }
            }
        }
    )*};
}

with_checksum!(
    aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    aws_sdk_s3::operation::upload_part::builders::UploadPartFluentBuilder,
    aws_sdk_s3::types::builders::CompletedPartBuilder
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Values S3's documentation and the CRC catalogue give for "123456789" and for "abc".
    #[test]
    fn checksums_are_the_standard_ones_in_s3s_encoding() {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(of_bytes(ChecksumAlgorithm::Crc32c, b"123456789"), Some(b64(&0xE306_9283_u32.to_be_bytes())));
        assert_eq!(of_bytes(ChecksumAlgorithm::Crc32, b"123456789"), Some(b64(&0xCBF4_3926_u32.to_be_bytes())));
        assert_eq!(
            of_bytes(ChecksumAlgorithm::Sha256, b"abc").as_deref(),
            Some("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=")
        );
        assert_eq!(of_bytes(ChecksumAlgorithm::None, b"abc"), None);
    }

    #[tokio::test]
    async fn a_file_range_sums_as_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        for alg in [ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Crc32, ChecksumAlgorithm::Sha256] {
            let got = of_file(alg, &path, 1_000_001, 1_500_000).await.expect("reads");
            assert_eq!(got, of_bytes(alg, &bytes[1_000_001..2_500_001]), "{alg:?}");
        }
        assert!(of_file(ChecksumAlgorithm::Crc32c, &path, 2_999_000, 5_000).await.is_err(), "past the end");
    }
}

//! The `[s3]` and `[roll]` sections: where objects go, how their records are encoded and
//! compressed, how their keys are made, and when a buffer becomes an object.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Default object key template.
pub const DEFAULT_KEY_TEMPLATE: &str =
    "{prefix}/{topic}/dt={date}/hr={hour}/{topic}-{partition}-{first_offset:020}.{ext}";

/// The key template of deterministic mode (`roll.offset-interval`) when none is given: every
/// key names its first and last offset.
pub const DETERMINISTIC_KEY_TEMPLATE: &str =
    "{prefix}/{topic}/dt={date}/hr={hour}/{topic}-{partition}-{first_offset:020}-{last_offset:020}.{ext}";

pub use crate::buffer::Format;

/// Object compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Zstandard.
    #[default]
    Zstd,
    /// gzip.
    Gzip,
    /// None.
    None,
    /// Snappy: Parquet only (fast, larger than zstd; some older readers want it).
    Snappy,
}

/// S3 settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct S3Config {
    /// Bucket.
    pub bucket: String,
    /// Key prefix (`{prefix}` in the template).
    pub prefix: String,
    /// Region.
    pub region: Option<String>,
    /// Endpoint override for S3-compatible stores.
    pub endpoint: Option<String>,
    /// Path-style addressing (most S3-compatible stores need it).
    pub path_style: bool,
    /// Object key template: `{prefix} {topic} {partition} {first_offset} {first_offset:020}
    /// {date} {hour} {ext}` (`{last_offset}` is refused: a re-read roll could end elsewhere).
    /// `{date}` and `{hour}` are the records' own time partition (`[records]`): an object holds
    /// records of one, so a re-upload lands on the same key.
    pub key_template: String,
    /// Record format: `lines` (values, one per line), `json` (JSON lines with key, headers,
    /// timestamp and its type) or `parquet` (a column per field, `[parquet]`).
    pub format: Format,
    /// Compression: `zstd`, `gzip` or `none`, and `snappy` for Parquet (whose columns are
    /// compressed inside the file; the others compress the whole object).
    pub compression: Compression,
    /// Compression level (zstd 1-19, gzip 0-9).
    pub compression_level: i32,
    /// Objects above this many bytes are uploaded in parts.
    pub multipart_threshold_bytes: usize,
    /// How an upload's body is signed and checksummed; stores differ in what they accept:
    /// `unsigned-payload` (the default: `UNSIGNED-PAYLOAD` with a Content-Length, streamed from
    /// disk; every S3-compatible store tested takes it), `signed-payload` (the body's SHA-256 in
    /// the signature; each request body, at most a part or `multipart-threshold-bytes`, is
    /// read into memory first) or `aws-chunked` (the AWS SDK's default: a streamed body with a
    /// trailing CRC32 checksum; AWS S3 and MinIO take it, Garage 2.5 refuses it).
    pub upload_signing: UploadSigning,
    /// The slowest transfer an upload attempt is allowed, in bytes per second: an attempt of an
    /// object of `n` bytes is given up after `n / upload-min-bytes-per-sec` seconds (at least
    /// `upload-attempt-min-secs`) and retried, instead of waiting for the lease to be lost.
    pub upload_min_bytes_per_sec: u64,
    /// The shortest time an upload attempt is given, in seconds.
    pub upload_attempt_min_secs: u64,
    /// At start, probe the store with a small object under `{prefix}/_zonal-probe/`: an upload
    /// signed as `upload-signing`, a second conditional PUT and a conditional multipart
    /// completion (both must be refused), HEAD with metadata. A worker does not start on a
    /// store that fails it.
    pub probe_on_start: bool,
    /// Refuse to start on a store that ignores `If-None-Match: *` (or answers it 501). `false`
    /// is the weaker mode for such stores: fencing then rests on etcd alone, and an owner
    /// stalled past its lease in the middle of an upload can replace a newer object of the same
    /// key (same records from the same first offset, unless offsets were rewound meanwhile).
    pub require_conditional_writes: bool,
    /// Server-side encryption of every object: `none` (the bucket's default encryption
    /// applies), `sse-s3` (AES256, keys kept by S3) or `sse-kms` (AWS KMS; a bucket policy that
    /// denies unencrypted writes needs the matching one).
    pub server_side_encryption: Encryption,
    /// With `sse-kms`: the KMS key (id, ARN or alias); the account's `aws/s3` key when absent.
    pub sse_kms_key_id: Option<String>,
    /// With `sse-kms`: an S3 Bucket Key, which spares most KMS requests (and their cost).
    pub bucket_key: bool,
    /// Storage class of every object (the bucket's, `STANDARD` by default, when absent), as S3
    /// names it: `STANDARD_IA`, `INTELLIGENT_TIERING`, `GLACIER_IR`… `GLACIER` and
    /// `DEEP_ARCHIVE` are refused: their objects cannot be read back without a restore.
    pub storage_class: Option<String>,
    /// A checksum of every object (of every part, for multipart uploads) computed from the file
    /// before it is sent and given to the store, which refuses a body that does not match and
    /// keeps the checksum with the object: `none` (the default: TLS protects the transfer, and
    /// stores that do not know the headers are not tried), `crc32c`, `crc32` or `sha256`.
    pub checksum_algorithm: ChecksumAlgorithm,
}

/// An object's checksum (`s3.checksum-algorithm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChecksumAlgorithm {
    /// No checksum header.
    #[default]
    None,
    /// `x-amz-checksum-crc32c` (Castagnoli).
    Crc32c,
    /// `x-amz-checksum-crc32`.
    Crc32,
    /// `x-amz-checksum-sha256`.
    Sha256,
}

impl ChecksumAlgorithm {
    /// The SDK's name for it, on the creation of a multipart upload.
    pub fn sdk(self) -> Option<aws_sdk_s3::types::ChecksumAlgorithm> {
        use aws_sdk_s3::types::ChecksumAlgorithm as Sdk;
        match self {
            ChecksumAlgorithm::None => None,
            ChecksumAlgorithm::Crc32c => Some(Sdk::Crc32C),
            ChecksumAlgorithm::Crc32 => Some(Sdk::Crc32),
            ChecksumAlgorithm::Sha256 => Some(Sdk::Sha256),
        }
    }
}

/// Server-side encryption (`s3.server-side-encryption`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encryption {
    /// No encryption header: the bucket's default encryption applies.
    #[default]
    None,
    /// `AES256`, keys kept by S3.
    SseS3,
    /// `aws:kms`.
    SseKms,
}

/// The object-level settings every write carries, in the SDK's types.
#[derive(Debug, Clone, Default)]
pub struct ObjectSettings {
    /// `x-amz-server-side-encryption`.
    pub encryption: Option<aws_sdk_s3::types::ServerSideEncryption>,
    /// `x-amz-server-side-encryption-aws-kms-key-id`.
    pub kms_key: Option<String>,
    /// `x-amz-server-side-encryption-bucket-key-enabled`.
    pub bucket_key: Option<bool>,
    /// `x-amz-storage-class`.
    pub storage_class: Option<aws_sdk_s3::types::StorageClass>,
    /// `x-amz-checksum-algorithm` of a multipart upload (a PUT carries the checksum itself).
    pub checksum: ChecksumAlgorithm,
}

impl ObjectSettings {
    /// These settings on a PUT.
    pub fn on_put(
        self,
        put: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        put.set_server_side_encryption(self.encryption)
            .set_ssekms_key_id(self.kms_key)
            .set_bucket_key_enabled(self.bucket_key)
            .set_storage_class(self.storage_class)
    }

    /// These settings on the creation of a multipart upload (its parts carry none).
    pub fn on_create(
        self,
        create: aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder,
    ) -> aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder {
        create
            .set_server_side_encryption(self.encryption)
            .set_ssekms_key_id(self.kms_key)
            .set_bucket_key_enabled(self.bucket_key)
            .set_storage_class(self.storage_class)
            .set_checksum_algorithm(self.checksum.sdk())
    }
}

/// How upload bodies are signed (see `s3.upload-signing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UploadSigning {
    /// `x-amz-content-sha256: UNSIGNED-PAYLOAD`, no checksum unless an operation requires one.
    #[default]
    UnsignedPayload,
    /// The body's SHA-256 signed; bodies are read into memory.
    SignedPayload,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER` with a CRC32 trailer (aws-chunked encoding).
    AwsChunked,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            prefix: "zonal".into(),
            region: None,
            endpoint: None,
            path_style: false,
            key_template: DEFAULT_KEY_TEMPLATE.into(),
            format: Format::Lines,
            compression: Compression::Zstd,
            compression_level: 3,
            multipart_threshold_bytes: 16 * 1024 * 1024,
            upload_signing: UploadSigning::UnsignedPayload,
            upload_min_bytes_per_sec: 256 * 1024,
            upload_attempt_min_secs: 30,
            probe_on_start: true,
            require_conditional_writes: true,
            server_side_encryption: Encryption::None,
            sse_kms_key_id: None,
            bucket_key: true,
            storage_class: None,
            checksum_algorithm: ChecksumAlgorithm::None,
        }
    }
}

impl S3Config {
    /// Checks the objects' settings: where they go, how they are cut (`roll`), compressed and
    /// uploaded. One check, so errors keep the order of the fields in the file.
    pub(super) fn validate(&self, roll: &RollConfig) -> anyhow::Result<()> {
        if self.bucket.is_empty() {
            bail!("s3.bucket: must be set");
        }
        crate::naming::check_template(self.key_template(roll), roll.offset_interval > 0).context("s3.key-template")?;
        if roll.max_bytes == 0 || roll.max_age_ms == 0 || roll.max_records == 0 {
            bail!("roll.max-bytes, roll.max-age-ms and roll.max-records: must be positive");
        }
        let levels = match self.compression {
            Compression::Zstd => 1..=19,
            Compression::Gzip => 0..=9,
            Compression::None | Compression::Snappy => i32::MIN..=i32::MAX,
        };
        if self.compression == Compression::Snappy && self.format != Format::Parquet {
            bail!("s3.compression: snappy is for format = \"parquet\" only (use zstd or gzip for {:?})", self.format);
        }
        if !levels.contains(&self.compression_level) {
            bail!("s3.compression-level: {} is out of range for {:?}", self.compression_level, self.compression);
        }
        if self.multipart_threshold_bytes < 5 * 1024 * 1024 {
            bail!("s3.multipart-threshold-bytes: must be at least 5 MiB (the S3 minimum part size)");
        }
        if self.multipart_threshold_bytes as u64 > 5 * 1024 * 1024 * 1024 {
            bail!("s3.multipart-threshold-bytes: must be at most 5 GiB (the S3 limit of one PUT)");
        }
        // S3 takes at most 10,000 parts; an object is at most about roll.max-bytes (compression
        // adds a few bytes at worst).
        let most = 10_000 * crate::upload::PART as u64 - 1024 * 1024;
        if roll.max_bytes > most {
            bail!(
                "roll.max-bytes: {} would need more than S3's 10,000 parts of 8 MiB (at most {most})",
                roll.max_bytes
            );
        }
        if self.upload_min_bytes_per_sec == 0 || self.upload_attempt_min_secs == 0 {
            bail!("s3.upload-min-bytes-per-sec and s3.upload-attempt-min-secs: must be positive");
        }
        if self.sse_kms_key_id.is_some() && self.server_side_encryption != Encryption::SseKms {
            bail!("s3.sse-kms-key-id: only used with s3.server-side-encryption = \"sse-kms\"");
        }
        if let Some(class) = &self.storage_class {
            use aws_sdk_s3::types::StorageClass;
            if !StorageClass::values().contains(&class.as_str()) {
                bail!("s3.storage-class: {class:?} is not one S3 knows ({})", StorageClass::values().join(", "));
            }
            if matches!(class.as_str(), "GLACIER" | "DEEP_ARCHIVE") {
                bail!(
                    "s3.storage-class: {class} objects cannot be read back without a restore (audits and readers need them); use GLACIER_IR or a lifecycle rule"
                );
            }
        }
        Ok(())
    }

    /// The key template in use: the deterministic default when `roll.offset-interval` is set and
    /// the template is the default one.
    pub fn key_template(&self, roll: &RollConfig) -> &str {
        if roll.offset_interval > 0 && self.key_template == DEFAULT_KEY_TEMPLATE {
            DETERMINISTIC_KEY_TEMPLATE
        } else {
            &self.key_template
        }
    }

    /// The object-level settings every write carries (`server-side-encryption`, its key and
    /// bucket key, `storage-class`).
    pub fn object_settings(&self) -> ObjectSettings {
        use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
        let kms = self.server_side_encryption == Encryption::SseKms;
        ObjectSettings {
            encryption: match self.server_side_encryption {
                Encryption::None => None,
                Encryption::SseS3 => Some(ServerSideEncryption::Aes256),
                Encryption::SseKms => Some(ServerSideEncryption::AwsKms),
            },
            kms_key: self.sse_kms_key_id.clone().filter(|_| kms),
            bucket_key: kms.then_some(self.bucket_key),
            storage_class: self.storage_class.as_deref().map(StorageClass::from),
            checksum: self.checksum_algorithm,
        }
    }
}

/// When a buffer is rolled into an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RollConfig {
    /// Uncompressed bytes.
    pub max_bytes: u64,
    /// Age of the buffer's first record, in milliseconds, checked by a timer (an idle
    /// partition still uploads).
    pub max_age_ms: u64,
    /// Records.
    pub max_records: u64,
    /// Deterministic objects (0: off): objects also end at every offset that is a multiple of
    /// this, and keys name their first and last offset (`{last_offset}`). Whoever reads the
    /// same offsets again (a restart, the next owner, a stale worker) writes byte-identical
    /// objects under the same keys, so no write can replace an object with other records, even
    /// on a store without conditional writes. The cost: an object waits for its interval to
    /// fill, unless the age (or a handover) cuts it first; such an object ends elsewhere and is
    /// named so, and a reader that starts there again finds it by its first offset and goes on
    /// after it (docs/guarantees.md).
    pub offset_interval: u64,
}

impl Default for RollConfig {
    fn default() -> Self {
        RollConfig { max_bytes: 64 * 1024 * 1024, max_age_ms: 60_000, max_records: 1_000_000, offset_interval: 0 }
    }
}

impl RollConfig {
    /// Whether a partition that moved to another worker hands its open buffer over by dropping
    /// it (the next owner reads it again from Kafka) rather than uploading it: when it holds less
    /// than a quarter of `max-bytes` and was opened less than a quarter of `max-age-ms` ago. The
    /// next owner reads so little again sooner than this one could upload it, no small object is
    /// made, and its records wait at most a quarter of an age longer than an upload would have
    /// made them. A fleet forming (workers starting seconds apart) moves partitions read only
    /// for a moment; each move used to upload a tiny object before the next owner could start.
    pub fn hand_over_by_dropping(&self, bytes: u64, age: std::time::Duration) -> bool {
        bytes < self.max_bytes / 4 && age.as_millis() < u128::from(self.max_age_ms / 4)
    }
}

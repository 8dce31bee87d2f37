//! Tests of the configuration: layering, errors that name the field, hidden secrets.

use std::path::PathBuf;

use shell::ProgramConfig;

use testkit::jail::isolated;

use super::*;

const MINIMAL: &str = r#"
[kafka]
bootstrap-servers = "k:9092"
topics = ["logs"]
[etcd]
endpoints = ["http://127.0.0.1:2379"]
[s3]
bucket = "b"
"#;

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let p = dir.path().join("transporter.toml");
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn layering() {
    isolated(|jail| {
        // The file lives in the jail's own directory, removed with it.
        let path = jail.directory().join("transporter.toml");
        std::fs::write(&path, MINIMAL).expect("write the file layer");
        let c: TransporterConfig = TransporterConfig::figment(Some(&path)).extract().expect("valid layers");
        assert_eq!(c.roll.max_age_ms, 60_000);
        assert_eq!(c.s3.key_template, DEFAULT_KEY_TEMPLATE);
        jail.set_env("ZONAL_TRANSPORTER__S3__BUCKET", "from-env");
        jail.set_env("ZONAL_TRANSPORTER__ROLL__MAX_RECORDS", "7");
        let c: TransporterConfig = TransporterConfig::figment(Some(&path)).extract().expect("valid layers");
        assert_eq!((c.s3.bucket.as_str(), c.roll.max_records), ("from-env", 7));
    });
}

#[test]
fn several_files_merge_in_order_and_an_error_names_its_file() {
    // As the Kubernetes overlays mount them: a base file and a Kafka-login file that adds
    // `[kafka.options]` and overrides one key of the base.
    let dir = tempfile::tempdir().expect("tempdir");
    let base = write(
        &dir,
        &MINIMAL.replace("topics = [\"logs\"]", "topics = [\"logs\"]\n[kafka.options]\n\"client.id\" = \"base\""),
    );
    let login = dir.path().join("kafka.toml");
    std::fs::write(
        &login,
        "[kafka]\nbootstrap-servers = \"b-1.msk:9098\"\n[kafka.options]\n\"security.protocol\" = \"SASL_SSL\"\n",
    )
    .expect("write");
    let c = TransporterConfig::load_files(&[&base, &login]).expect("valid");
    assert_eq!(c.kafka.bootstrap_servers, "b-1.msk:9098");
    assert_eq!(c.kafka.topics, ["logs"]);
    assert_eq!(c.kafka.options.get("client.id").map(String::as_str), Some("base"), "tables merge");
    assert_eq!(c.kafka.options.get("security.protocol").map(String::as_str), Some("SASL_SSL"));
    std::fs::write(&login, "[kafka]\nbootstrap = \"x\"\n").expect("write");
    let e = TransporterConfig::load_files(&[&base, &login]).expect_err("unknown key").to_string();
    assert!(e.contains("kafka.toml") && e.contains("bootstrap"), "{e}");
}

#[test]
fn errors_name_the_field() {
    isolated(|_| errors_name_the_field_inner());
}

fn errors_name_the_field_inner() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, field) in [
        (MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\ncompression = \"lzma\""), "compression"),
        (MINIMAL.replace("bucket = \"b\"", "bucket = \"\""), "s3.bucket"),
        (MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\nkey-template = \"{topic}/{nope}\""), "s3.key-template"),
        (MINIMAL.replace("[etcd]", "[etcd]\nlease-ttl-secs = 0"), "etcd.lease-ttl-secs"),
        (MINIMAL.replace("topics = [\"logs\"]", "topics = []"), "kafka.topics"),
        (MINIMAL.replace("[s3]", "[roll]\nmax-age = 3\n[s3]"), "max-age"),
        (MINIMAL.replace("[s3]", "[worker]\ncapacity = -1.0\n[s3]"), "worker.capacity"),
        (MINIMAL.replace("topics = [\"logs\"]", "topics = [\"logs\"]\nstart-from = \"middle\""), "kafka.start-from"),
        (MINIMAL.replace("[s3]", "[roll]\nmax-bytes = 100000000000\n[s3]"), "roll.max-bytes"),
        (
            MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\nmultipart-threshold-bytes = 6000000000"),
            "s3.multipart-threshold-bytes",
        ),
        (MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\nupload-signing = \"sigv2\""), "upload-signing"),
        (MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\nsse-kms-key-id = \"k\""), "s3.sse-kms-key-id"),
        (MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\nstorage-class = \"COLD\""), "s3.storage-class"),
        (MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\nstorage-class = \"GLACIER\""), "s3.storage-class"),
        (
            MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\nserver-side-encryption = \"rot13\""),
            "server-side-encryption",
        ),
    ] {
        let err = TransporterConfig::load(Some(&write(&dir, &text))).expect_err(field);
        assert!(format!("{err:#}").contains(field), "{err:#} does not name {field}");
    }
}

/// The data-lake settings (issue 24): each mistake names its field.
#[test]
fn records_and_parquet_errors_name_the_field() {
    isolated(|_| {
        let dir = tempfile::tempdir().expect("tempdir");
        let with = |extra: &str| format!("{MINIMAL}{extra}");
        for (text, field) in [
            (MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\ncompression = \"snappy\""), "s3.compression"),
            (with("[records]\ntime-zone = \"Mars/Olympus\""), "records.time-zone"),
            (with("[records]\ntime-source = \"json-field\""), "records.time-field"),
            (with("[records]\ntime-field = \"ts\""), "records.time-field"),
            (with("[records]\nno-time = \"a/b\""), "records.no-time"),
            (with("[records]\nnewlines = \"drop\""), "newlines"),
            (with("[parquet]\nrow-group-bytes = 10"), "parquet.row-group-bytes"),
            (
                MINIMAL.replace(
                    "bucket = \"b\"",
                    "bucket = \"b\"\nkey-template = \"{topic}/{partition}/{first_offset}-{last_offset}\"",
                ),
                "s3.key-template",
            ),
            (
                MINIMAL
                    .replace("bucket = \"b\"", "bucket = \"b\"\nkey-template = \"{topic}/{partition}/{first_offset}\"")
                    + "[roll]\noffset-interval = 100\n",
                "s3.key-template",
            ),
        ] {
            let err = TransporterConfig::load(Some(&write(&dir, &text))).expect_err(field);
            assert!(format!("{err:#}").contains(field), "{err:#} does not name {field}");
        }
        // What is valid: Parquet with snappy, a zone, a JSON field, deterministic keys by default.
        let ok = MINIMAL.replace("bucket = \"b\"", "bucket = \"b\"\nformat = \"parquet\"\ncompression = \"snappy\"")
            + "[records]\ntime-source = \"json-field\"\ntime-field = \"ts\"\ntime-zone = \"Europe/Berlin\"\n[roll]\noffset-interval = 1000\n";
        let c = TransporterConfig::load(Some(&write(&dir, &ok))).expect("valid");
        assert_eq!(c.s3.key_template(&c.roll), DETERMINISTIC_KEY_TEMPLATE);
        assert_eq!(c.records.time_source, TimeSource::JsonField);
    });
}

#[test]
fn password_is_hidden() {
    isolated(|_| password_is_hidden_inner());
}

fn password_is_hidden_inner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = MINIMAL.replace("[etcd]", "[etcd]\nusername = \"u\"\npassword = \"hunter2\"");
    let c = TransporterConfig::load(Some(&write(&dir, &text))).expect("valid");
    assert!(!c.to_toml().expect("toml").contains("hunter2"));
}

#[test]
fn start_from_keeps_its_toml_values() {
    isolated(|_| start_from_keeps_its_toml_values_inner());
}

fn start_from_keeps_its_toml_values_inner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = TransporterConfig::load(Some(&write(&dir, MINIMAL))).expect("valid");
    assert_eq!(c.kafka.start_from, StartFrom::Earliest, "the default");
    assert!(c.to_toml().expect("toml").contains("start-from = \"earliest\""));
    let text = MINIMAL.replace("topics = [\"logs\"]", "topics = [\"logs\"]\nstart-from = \"latest\"");
    let c = TransporterConfig::load(Some(&write(&dir, &text))).expect("valid");
    assert_eq!(c.kafka.start_from, StartFrom::Latest);
}

#[test]
fn transactions_are_gathered_unless_the_worker_authenticates_or_says_otherwise() {
    let mut c = super::EtcdConfig::default();
    assert!(c.gathers_transactions());
    c.username = Some("zonal".into());
    assert!(!c.gathers_transactions(), "a role's key permissions must hold");
    c.gather_transactions = Some(true);
    assert!(c.gathers_transactions());
    let mut c = super::EtcdConfig {
        tls: Some(super::EtcdTls {
            ca_file: "ca.pem".into(),
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            domain: None,
        }),
        ..Default::default()
    };
    assert!(!c.gathers_transactions(), "a client certificate names a role too");
    c.gather_transactions = Some(true);
    assert!(c.gathers_transactions());
}

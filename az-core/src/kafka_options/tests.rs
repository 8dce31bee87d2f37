//! Tests of the librdkafka options: secrets from files and the environment, guards, refusals by
//! librdkafka itself, and redaction.

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
    let e =
        ClientOptions::resolve_with(&map(&[("sasl.password", "a"), ("sasl.password-env", "X")]), &|_| Some("b".into()))
            .expect_err("duplicate");
    assert!(e.to_string().contains("sasl.password"), "{e}");
}

#[test]
fn guards_refuse_with_reason() {
    const GUARDS: &[Guard] = &[Guard { key: "acks", allowed: &["all", "-1"], reason: "at-least-once needs acks=all" }];
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
    let r =
        ClientOptions::resolve_with(&map(&[("security.protocol", "SASL_SSL"), ("sasl.mechanism", "NOPE")]), &|_| None)
            .expect("resolves");
    let mut cc = ClientConfig::new();
    r.apply(&mut cc);
    let e = try_create::<rdkafka::producer::BaseProducer>(&cc, "producer", &r).expect_err("bad mechanism");
    assert!(e.to_string().contains("sasl.mechanism"), "{e}");
    // This build links OpenSSL and zstd: what issue #8 found refused is accepted now.
    let r = ClientOptions::resolve_with(
        &map(&[("security.protocol", "SASL_SSL"), ("compression.type", "zstd"), ("sasl.mechanism", "SCRAM-SHA-512")]),
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

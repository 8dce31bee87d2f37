//! The token's shape and the options' translation; the signature itself is checked by the
//! testkit's independent verifier in `tests/msk_iam.rs`.

use std::collections::BTreeMap;

use super::*;
use crate::kafka_options::ClientOptions;

fn credentials(expiry: Option<SystemTime>) -> Credentials {
    Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        Some("session/token".into()),
        expiry,
        "test",
    )
}

fn url(token: &Token) -> String {
    String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token.value).expect("base64url"))
        .expect("utf-8")
}

#[test]
fn a_token_is_a_presigned_connect_for_the_region() {
    let now = UNIX_EPOCH + Duration::from_secs(1_796_650_200); // 2026-12-07T13:30:00Z
    let t = presign(&credentials(None), "eu-west-1", now, MAX_LIFETIME).expect("token");
    let u = url(&t);
    assert!(u.starts_with("https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"), "{u}");
    for part in [
        "X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "X-Amz-Credential=AKIDEXAMPLE%2F20261207%2Feu-west-1%2Fkafka-cluster%2Faws4_request",
        "X-Amz-Date=20261207T133000Z",
        "X-Amz-Expires=900",
        "X-Amz-SignedHeaders=host",
        "X-Amz-Security-Token=session%2Ftoken",
        "X-Amz-Signature=",
        "User-Agent=zonal%2F",
    ] {
        assert!(u.contains(part), "{part} missing from {u}");
    }
    assert_eq!(t.expires_ms, 1_796_650_200_000 + 900_000);
    assert_eq!(t.principal, "AKIDEXAMPLE");
    assert_eq!(presign(&credentials(None), "eu-west-1", now, MAX_LIFETIME).expect("again"), t, "deterministic");
}

#[test]
fn a_token_never_outlives_its_credentials_or_msk_s_limit() {
    let now = UNIX_EPOCH + Duration::from_secs(1_796_650_200);
    let soon =
        presign(&credentials(Some(now + Duration::from_secs(120))), "us-east-1", now, MAX_LIFETIME).expect("token");
    assert!(url(&soon).contains("X-Amz-Expires=120"));
    let long = presign(&credentials(None), "us-east-1", now, Duration::from_secs(3600)).expect("token");
    assert!(url(&long).contains("X-Amz-Expires=900"));
}

#[test]
fn settings_round_trip_through_the_oauthbearer_config() {
    let s = Settings { region: Some("us-west-2".into()), lifetime: Some(Duration::from_secs(5)) };
    assert_eq!(Settings::parse(&s.config()), Some(s));
    assert_eq!(Settings::parse("aws-msk-iam"), Some(Settings::default()));
    assert_eq!(Settings::parse("principal=admin"), None, "an unsecured JWT configuration is not ours");
}

#[test]
fn the_mechanism_becomes_oauthbearer_with_the_settings_in_its_config() {
    let raw = BTreeMap::from([
        ("sasl.mechanism".to_owned(), "AWS_MSK_IAM".to_owned()),
        ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
        (REGION_OPTION.to_owned(), "eu-central-1".to_owned()),
    ]);
    let o = ClientOptions::resolve_with(&raw, &|_| None).expect("options");
    assert_eq!(o.get("sasl.mechanism"), Some("OAUTHBEARER"));
    assert_eq!(o.get("sasl.oauthbearer.config"), Some("aws-msk-iam region=eu-central-1"));
    assert_eq!(o.get(REGION_OPTION), None, "the pseudo-option does not reach librdkafka");
    assert!(o.msk_iam_login());
    o.validate().expect("librdkafka takes the translated options");

    let stray = BTreeMap::from([(REGION_OPTION.to_owned(), "eu-central-1".to_owned())]);
    let e = ClientOptions::resolve_with(&stray, &|_| None).expect_err("a region without the mechanism");
    assert!(e.to_string().contains(REGION_OPTION), "{e}");
    let bad = BTreeMap::from([
        ("sasl.mechanism".to_owned(), "aws_msk_iam".to_owned()),
        ("security.protocol".to_owned(), "sasl_ssl".to_owned()),
        (LIFETIME_OPTION.to_owned(), "3600".to_owned()),
    ]);
    let e = ClientOptions::resolve_with(&bad, &|_| None).expect_err("a lifetime over MSK's limit");
    assert!(e.to_string().contains("900"), "{e}");
}

#[test]
fn a_token_never_travels_in_clear_text_and_unsecured_jwts_are_refused() {
    let plain = BTreeMap::from([
        ("sasl.mechanism".to_owned(), "AWS_MSK_IAM".to_owned()),
        ("security.protocol".to_owned(), "SASL_PLAINTEXT".to_owned()),
    ]);
    let e = ClientOptions::resolve_with(&plain, &|_| None).expect_err("MSK IAM over plaintext");
    assert!(e.to_string().contains("SASL_SSL"), "{e}");
    let jwt = BTreeMap::from([
        ("sasl.mechanism".to_owned(), "OAUTHBEARER".to_owned()),
        ("enable.sasl.oauthbearer.unsecure.jwt".to_owned(), "true".to_owned()),
    ]);
    let e = ClientOptions::resolve_with(&jwt, &|_| None).expect_err("an unsecured JWT");
    assert!(e.to_string().contains("enable.sasl.oauthbearer.unsecure.jwt"), "{e}");
}

#[test]
fn a_refused_msk_iam_login_is_explained_in_its_own_terms() {
    let raw = BTreeMap::from([
        ("sasl.mechanism".to_owned(), "AWS_MSK_IAM".to_owned()),
        ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
    ]);
    let o = ClientOptions::resolve_with(&raw, &|_| None).expect("options");
    let text = crate::kafka_options::AuthFailure::explain("the token has expired", &o);
    assert!(text.contains("MSK IAM login") && text.contains("kafka-cluster:Connect"), "{text}");
    assert!(!text.contains("sasl.password"), "{text}");
}

//! Tests of the agent's configuration: layering, errors that name the field, the effective
//! configuration printed back.

use shell::ProgramConfig;

use testkit::jail::isolated;

use super::*;

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let p = dir.path().join("agent.toml");
    std::fs::write(&p, text).expect("write config");
    p
}

const MINIMAL: &str = r#"
checkpoint-dir = "/tmp/ckpt"
[kafka]
bootstrap-servers = "k1:9092"
[kafka.options]
"security.protocol" = "SASL_SSL"
[[streams]]
name = "app"
paths = ["/var/log/app/*.log"]
topic = "logs"
"#;

#[test]
fn defaults_file_env_layering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, MINIMAL);
    isolated(|jail| {
        let c: AgentConfig = AgentConfig::figment(Some(&path)).extract().expect("valid layers");
        assert_eq!(c.kafka.bootstrap_servers, "k1:9092");
        assert_eq!(c.kafka.options.get("security.protocol").map(String::as_str), Some("SASL_SSL"));
        assert_eq!(c.streams[0].partitioning, Partitioning::ZoneAware);
        assert_eq!(c.streams[0].batch_lines, 1000);
        assert_eq!(c.http.listen.ip().to_string(), "127.0.0.1");
        jail.set_env("ZONAL_AGENT__KAFKA__BOOTSTRAP_SERVERS", "env:9092");
        jail.set_env("ZONAL_AGENT__ZONE__ZONE", "use1-az2");
        jail.set_env("ZONAL_AGENT__MAX_IN_FLIGHT_BYTES", "1048576");
        let c: AgentConfig = AgentConfig::figment(Some(&path)).extract().expect("valid layers");
        assert_eq!(c.kafka.bootstrap_servers, "env:9092");
        assert_eq!(c.zone.zone.as_deref(), Some("use1-az2"));
        assert_eq!(c.max_in_flight_bytes, 1_048_576);
        assert_eq!(c.checkpoint_dir, PathBuf::from("/tmp/ckpt"));
    });
}

#[test]
fn errors_name_the_field() {
    isolated(|_| errors_name_the_field_inner());
}

fn errors_name_the_field_inner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (MINIMAL.replace("topic = \"logs\"", "topic = \"logs\"\npartitioning = \"sideways\""), "partitioning"),
        (MINIMAL.replace("topic = \"logs\"", "topic = \"logs\"\nbatch-linez = 5"), "batch-linez"),
        (MINIMAL.replace("topic = \"logs\"", "topic = \"logs\"\npartitioning = \"keyed\""), "streams[0].key"),
        (
            MINIMAL.replace("topic = \"logs\"", "topic = \"logs\"\nkey = { regex = \"no group\" }"),
            "streams[0].key.regex",
        ),
        (MINIMAL.replace("topic = \"logs\"", "topic = \"logs\"\nmultiline-start = \"([\""), "multiline-start"),
        (MINIMAL.replace("k1:9092", ""), "kafka.bootstrap-servers"),
        (MINIMAL.replace("topic = \"logs\"", "topic = \"logs\"\nmax-message-bytes = \"big\""), "max-message-bytes"),
        (MINIMAL.replace("[kafka]", "[kafka]\ntopology-refresh-secs = -1"), "topology-refresh-secs"),
        (MINIMAL.replace("name = \"app\"", "name = \"a/b\""), "streams[0].name"),
        ("this is = not toml [".to_owned(), "agent.toml"),
    ];
    for (text, field) in cases {
        let path = write(&dir, &text);
        let err = AgentConfig::load(Some(&path)).expect_err(field).to_string();
        assert!(err.contains(field), "error {err:?} does not name {field:?}");
    }
    let missing = dir.path().join("nope.toml");
    let err = AgentConfig::load(Some(&missing)).expect_err("missing file").to_string();
    assert!(err.contains("nope.toml"), "{err}");
}

#[test]
fn effective_config_round_trips() {
    isolated(|_| effective_config_round_trips_inner());
}

fn effective_config_round_trips_inner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(&dir, MINIMAL);
    let c = AgentConfig::load(Some(&path)).expect("valid");
    let text = c.to_toml().expect("toml");
    let again: AgentConfig = toml::from_str(&text).expect("parse back");
    assert_eq!(c, again);
}

/// The streams' parts of the in-flight budget follow their shares and never add up to more than
/// the whole; a zero share is refused by name.
#[test]
fn in_flight_shares_split_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "{MINIMAL}in-flight-share = 3\n[[streams]]\nname = \"b\"\npaths = [\"/b/*\"]\ntopic = \"b\"\n[[streams]]\nname = \"c\"\npaths = [\"/c/*\"]\ntopic = \"c\"\n"
    );
    let path = write(&dir, &text);
    isolated(|_| {
        let c = AgentConfig::load(Some(&path)).expect("valid");
        let parts: Vec<u64> = c.streams.iter().map(|s| c.in_flight_bytes_of(s)).collect();
        assert_eq!(parts, vec![8 * 1024 * 1024 * 3 / 5, 8 * 1024 * 1024 / 5, 8 * 1024 * 1024 / 5]);
        assert!(parts.iter().sum::<u64>() <= c.max_in_flight_bytes);
        let zero = write(&dir, &text.replace("in-flight-share = 3", "in-flight-share = 0"));
        let e = AgentConfig::load(Some(&zero)).expect_err("zero share");
        assert!(format!("{e:#}").contains("streams[0].in-flight-share"), "{e:#}");
    });
}

//! Tests of the config as a whole: defaults, parsing, hashing and derived settings.

use super::*;

#[test]
fn empty_file_gives_documented_defaults() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.kafka.topic, "llm.generation.events");
    assert_eq!(c.ingest.max_message_bytes, 65536);
    assert_eq!(c.cohorts.max_cohorts, 10_000);
    assert_eq!(c.windows.buckets(), 360);
    assert_eq!(c.metrics.len(), 4);
}

#[test]
fn unknown_key_is_refused_with_its_name() {
    let err = Config::parse("[kafka]\nbrokerz = \"x\"\n").unwrap_err();
    assert!(err.to_string().contains("brokerz"), "{err}");
}

#[test]
fn hash_changes_with_config() {
    let a = Config::default();
    let mut b = Config::default();
    b.ingest.max_message_bytes = 1024;
    assert_ne!(a.hash(), b.hash());
    assert_eq!(a.hash(), Config::default().hash());
}

#[test]
fn external_url_defaults_to_the_bound_admin_address() {
    let mut c = Config::default();
    c.admin.addr = "127.0.0.1:0".parse().unwrap();
    let bound = "127.0.0.1:40123".parse().unwrap();
    assert_eq!(c.external_url(bound), "http://127.0.0.1:40123");
    c.containment.external_url = "https://driftd.example.com/".into();
    assert_eq!(c.external_url(bound), "https://driftd.example.com");
}

#[test]
fn example_file_shows_the_defaults_except_where_marked_example() {
    let mut c = Config::parse(include_str!("../../docs/driftd.example.toml")).unwrap();
    c.kafka.dead_letter_topic = String::new();
    c.cohorts.segment_keys.clear();
    c.detection.canary_share = None;
    c.detection.deployments.clear();
    assert_eq!(c, Config::default());
}

#[test]
fn only_the_three_pipeline_limits_reload_without_a_restart() {
    let running = Config::default();
    let mut hot = running.clone();
    hot.ingest.max_message_bytes = 1024;
    hot.ingest.allowed_lateness = std::time::Duration::from_secs(5);
    hot.ingest.max_future_skew = std::time::Duration::from_secs(60);
    assert!(running.restart_only_changes(&hot).is_empty());
    let mut cold = running.clone();
    cold.detection.alpha = 0.02;
    cold.log.level = "debug".into();
    cold.ingest.publish_interval = std::time::Duration::from_secs(2);
    assert_eq!(
        running.restart_only_changes(&cold),
        ["ingest.publish_interval", "detection", "log.level"]
    );
}

/// Regression: an empty or short admin token was accepted, and token files and environment
/// variables were trimmed differently on the server and in `driftd release`.
#[test]
fn the_admin_token_is_read_like_every_secret_and_refused_when_short() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        SecretSource::File(p)
    };
    let admin_token = |s: &SecretSource| read_token("containment.admin_token", s);
    let good = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        admin_token(&file("crlf", &format!("{good}\r\n"))).unwrap(),
        good
    );
    std::env::set_var("DRIFTD_TEST_ADMIN_TOKEN_CRLF", format!("{good}\r\n"));
    assert_eq!(
        admin_token(&SecretSource::Env("DRIFTD_TEST_ADMIN_TOKEN_CRLF".into())).unwrap(),
        good,
        "the environment is read the same way as a file"
    );
    let empty = admin_token(&file("empty", "\n")).unwrap_err();
    assert!(empty.to_string().contains("is empty"), "{empty}");
    for (name, text) in [("empty", "\n"), ("short", "hunter2\n")] {
        let e = admin_token(&file(name, text)).unwrap_err();
        assert!(
            name == "empty" || matches!(e, ConfigError::WeakSecret { .. }),
            "{name}: {e}"
        );
        assert!(e.to_string().contains("containment.admin_token"), "{e}");
        assert!(
            !e.to_string().contains("hunter2"),
            "the value never shows: {e}"
        );
    }
}

#[test]
fn event_time_and_expiry_limits_are_checked_with_the_field_named() {
    let mut c = Config::default();
    c.ingest.max_future_skew = std::time::Duration::from_millis(500);
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("ingest.max_future_skew"), "{e}");
    let mut c = Config::default();
    c.cohorts.idle_expiry = Some(std::time::Duration::from_secs(1800));
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("cohorts.idle_expiry") && e.contains("windows.span"),
        "{e}"
    );
    let mut c = Config::default();
    c.cohorts.idle_expiry = Some(std::time::Duration::from_secs(3600));
    assert!(c.validate().is_ok());
    assert_eq!(c.idle_expiry(), std::time::Duration::from_secs(3600));
    assert_eq!(
        Config::default().idle_expiry(),
        std::time::Duration::from_secs(7200)
    );
}

#[test]
fn a_segment_key_that_cannot_be_a_label_name_is_refused_with_its_field() {
    for key in ["user-tier", "app.locale", "région"] {
        let err = Config::parse(&format!(
            "[cohorts]\nsegment_keys = [\"locale\", \"{key}\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("cohorts.segment_keys[1]"), "{err}");
        assert!(err.contains("segment_"), "{err}");
    }
    assert!(Config::parse("[cohorts]\nsegment_keys = [\"user_tier\", \"Locale2\"]\n").is_ok());
}

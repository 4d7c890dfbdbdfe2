//! The applications' settings (`WHARF_REDIS_URL` and the like, read by the crates' `from_env`)
//! do not redirect the shared brokers: a developer whose shell points an application at a
//! real broker still runs the tests against brokers the kit starts. This binary holds a
//! single test because it changes its own environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wharf_testkit::BrokerKind;

/// What the crates' `from_env` read.
const APP_SETTINGS: [&str; 4] = [
    "WHARF_REDIS_URL",
    "WHARF_KAFKA_BROKERS",
    "WHARF_PULSAR_URL",
    "WHARF_SQS_ENDPOINT",
];

#[test]
fn an_applications_broker_settings_do_not_redirect_the_shared_brokers() {
    for name in APP_SETTINGS {
        // SAFETY: the only test of this binary, and no other thread reads the environment.
        unsafe { std::env::set_var(name, "redis://127.0.0.1:1/") };
    }
    let kinds = [
        BrokerKind::Redis,
        BrokerKind::Kafka,
        BrokerKind::Pulsar,
        BrokerKind::Sqs,
    ];
    for kind in kinds {
        let var = kind.override_var();
        assert!(var.starts_with("WHARF_TEST_"), "{kind:?}: {var}");
        assert!(!APP_SETTINGS.contains(&var), "{kind:?}: {var}");
        // SAFETY: as above.
        unsafe { std::env::remove_var(var) };
    }

    let redis = wharf_testkit::redis().unwrap();

    assert!(
        !redis.is_external(),
        "the shared Redis took WHARF_REDIS_URL as its address: {redis}"
    );
    assert_ne!(redis.address(), "redis://127.0.0.1:1/");
    assert!(redis.pid().is_some());
}

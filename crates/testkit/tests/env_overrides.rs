//! The environment overrides point the shared brokers at external ones. This binary holds a
//! single test because it changes its own environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use wharf_testkit::BrokerKind;

#[test]
fn each_override_variable_replaces_its_shared_broker_and_nothing_is_started() {
    let cases = [
        (BrokerKind::Redis, "redis://127.0.0.1:1/"),
        (BrokerKind::Kafka, "127.0.0.1:2"),
        (BrokerKind::Pulsar, "pulsar://127.0.0.1:3"),
        (BrokerKind::Sqs, "http://127.0.0.1:4"),
    ];
    for (kind, address) in cases {
        // SAFETY: the only test of this binary, and no other thread reads the environment.
        unsafe { std::env::set_var(kind.override_var(), format!(" {address} ")) };
    }

    let endpoints = [
        wharf_testkit::redis().unwrap(),
        wharf_testkit::kafka().unwrap(),
        wharf_testkit::pulsar().unwrap(),
        wharf_testkit::sqs().unwrap(),
    ];

    for (endpoint, (kind, address)) in endpoints.iter().zip(cases) {
        assert_eq!(endpoint.kind(), kind);
        assert_eq!(endpoint.address(), address);
        assert!(endpoint.is_external());
        assert_eq!(endpoint.pid(), None);
    }
}

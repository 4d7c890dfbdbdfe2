//! AUTH and TLS to a real `redis-server` (wharf-testkit's `RedisServer`, with a password or
//! with TLS and a private CA); passwords never show in errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use wharf_job_partition::{Config, Enqueued, Jobs};
use wharf_testkit::RedisServer;

#[tokio::test]
async fn a_password_protected_redis_works_and_a_wrong_password_fails_without_showing_it() {
    let server = RedisServer::start_with_args(&["--requirepass", "s3cret-pw"])
        .expect("redis-server (run scripts/install)");
    let port = server.port();
    let jobs = Jobs::connect(Config::new(format!("redis://:s3cret-pw@127.0.0.1:{port}/")))
        .await
        .unwrap();
    let out = jobs
        .enqueue("auth", "q", &common::Record::default())
        .await
        .unwrap();
    assert!(matches!(out, Enqueued::Queued(_)));

    let err = Jobs::connect(Config::new(format!("redis://:wrong-pw@127.0.0.1:{port}/")))
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wrong-pw"), "{text}");
    assert!(
        text.to_lowercase().contains("auth") || text.contains("WRONGPASS"),
        "{text}"
    );
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn rediss_urls_connect_over_tls_to_a_server_of_a_private_ca() {
    // A certificate for 127.0.0.1 signed by a private CA the kit makes with openssl.
    let server = RedisServer::start_tls().expect("redis-server and openssl (run scripts/install)");
    let port = server.port();
    let ca = std::fs::read(server.tls_ca_certificate().unwrap()).unwrap();
    let config = Config::new(format!("rediss://127.0.0.1:{port}/")).tls_root_certificate(ca);
    let jobs = Jobs::connect(config).await.unwrap();
    let out = jobs
        .enqueue("tls", "q", &common::Record::default())
        .await
        .unwrap();
    assert!(matches!(out, Enqueued::Queued(_)));
    assert_eq!(jobs.counts("tls", "q").await.unwrap().queued, 1);

    // Without the CA the server's certificate is not trusted.
    let untrusted = Jobs::connect(Config::new(format!("rediss://127.0.0.1:{port}/"))).await;
    assert!(untrusted.is_err(), "connected to a server of an unknown CA");
}

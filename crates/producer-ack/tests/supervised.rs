//! The producer as a child of a wharf-core supervisor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use wharf_core::supervisor::Supervisor;
use wharf_producer_ack::{Error, Producer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_producer_serves_its_handle_and_stops_with_its_supervisor() {
    let url = common::shared_url();
    let (producer, spec) = Producer::builder(&url, common::topic("supervised"))
        .send_timeout(Duration::from_secs(10))
        .supervised("orders-producer")
        .unwrap();
    // the handle takes a message before the supervisor even starts the child
    let early = tokio::spawn({
        let producer = producer.clone();
        async move { producer.produce("queued before the start").await }
    });
    let supervisor = Supervisor::builder("app")
        .child(spec)
        .start()
        .await
        .unwrap();
    assert!(early.await.unwrap().is_ok());
    assert!(producer.produce("while running").await.is_ok());

    supervisor.shutdown().await.unwrap();
    let after = producer.produce("after the shutdown").await;
    assert!(matches!(after, Err(Error::Closed { .. })), "{after:?}");
}

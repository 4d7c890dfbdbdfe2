//! The consumer lag gauge (`wharf_kafka_consumer_lag`) through the `metrics` facade, one
//! series per partition, against a real broker (Tansu).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use wharf_kafka_wrapper::{ConsumerSpec, Handler, Outcome, ProducerSpec, Record, metrics as m};

/// The lag gauges of consumer `consumer` on `topic`, by partition.
fn lag(snapshotter: &Snapshotter, consumer: &str, topic: &str) -> BTreeMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, _, _, _)| {
            let key = k.key();
            let has = |name: &str, value: &str| {
                key.labels().any(|l| l.key() == name && l.value() == value)
            };
            key.name() == m::CONSUMER_LAG && has("consumer", consumer) && has("topic", topic)
        })
        .filter_map(|(k, _, _, v)| {
            let partition = k.key().labels().find(|l| l.key() == "partition")?;
            match v {
                DebugValue::Gauge(g) => Some((partition.value().to_owned(), g.into_inner())),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumers_lag_is_a_gauge_per_partition() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let brokers = common::brokers();
    let topic = common::topic("lag");
    let w = common::wrapper_with_topic(&brokers, &topic, 2).await;
    let c = w
        .add_consumer(ConsumerSpec::group(
            "c",
            common::topic("g"),
            [topic.clone()],
            Handler::per_message(|_| async { Outcome::Ack }),
        ))
        .unwrap();
    // Paused before the group assigns anything: the messages below wait as lag.
    c.pause_all();
    wharf_testkit::eventually("the consumer assigned", Duration::from_secs(30), || async {
        c.assignment().len() == 2
    })
    .await
    .unwrap();
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    for (partition, n) in [(0, 20), (1, 30)] {
        for i in 0..n {
            p.send(Record::new(&topic, i.to_string()).partition(partition))
                .await
                .unwrap();
        }
    }
    let behind = |a: f64, b: f64| {
        [("0".to_owned(), a), ("1".to_owned(), b)]
            .into_iter()
            .collect::<BTreeMap<_, _>>()
    };
    wharf_testkit::eventually("a lag of 20 and 30", Duration::from_secs(15), || async {
        lag(&snapshotter, "c", &topic) == behind(20.0, 30.0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", lag(&snapshotter, "c", &topic)));

    c.resume_all();
    wharf_testkit::eventually("no lag", Duration::from_secs(15), || async {
        lag(&snapshotter, "c", &topic) == behind(0.0, 0.0)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", lag(&snapshotter, "c", &topic)));
    w.shutdown().await.unwrap();
}

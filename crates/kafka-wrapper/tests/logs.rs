//! What an outage puts in the logs: at most one warning or error per client per 10 s, then a
//! summary of the rest.
//!
//! One test in this binary: it installs a process-wide tracing subscriber (librdkafka logs
//! from its own threads) and counts every client's warnings and errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Level;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use wharf_kafka_wrapper::{ConsumerSpec, Handler, KafkaWrapper, Outcome, ProducerSpec, Record};
use wharf_testkit::Tansu;

/// The wrapper's promise: one warning or error per client per this long.
const WINDOW: Duration = Duration::from_secs(10);

/// One warning or error of the wrapper or of librdkafka.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    level: Level,
    client: String,
    suppressed: Option<u64>,
    message: String,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

#[derive(Default)]
struct Fields {
    client: Option<String>,
    suppressed: Option<u64>,
    message: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "client" => self.client = Some(format!("{value:?}")),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "client" {
            self.client = Some(value.to_owned());
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "suppressed" {
            self.suppressed = Some(value);
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let ours = meta.target() == "librdkafka" || meta.target().starts_with("wharf_kafka");
        if !ours || *meta.level() > Level::WARN {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        self.0.lock().unwrap().push(Seen {
            at: Instant::now(),
            level: *meta.level(),
            client: f.client.unwrap_or_else(|| "(none)".to_owned()),
            suppressed: f.suppressed,
            message: f.message,
        });
    }
}

impl Capture {
    fn since(&self, from: Instant) -> Vec<Seen> {
        let seen = self.0.lock().unwrap();
        seen.iter().filter(|s| s.at >= from).cloned().collect()
    }
}

/// What was logged, one line each, for failure messages.
fn lines(seen: &[Seen]) -> String {
    seen.iter()
        .map(|s| {
            let suppressed = s
                .suppressed
                .map(|n| format!(" (suppressed {n})"))
                .unwrap_or_default();
            format!("\n  {} {}{suppressed}: {}", s.level, s.client, s.message)
        })
        .collect()
}

fn per_client(seen: &[Seen]) -> BTreeMap<String, Vec<Seen>> {
    let mut by = BTreeMap::<String, Vec<Seen>>::new();
    for s in seen {
        by.entry(s.client.clone()).or_default().push(s.clone());
    }
    by
}

/// Kafka goes away for 3 s under a producer, a group consumer and the wrapper's admin
/// client, long enough for the wrapper to rebuild them (`unreachable_after` 1 s). Each
/// client (and the supervision loop) logs at most one warning or error in the 10 s that
/// follow; once that window is over, the consumer's suppressed lines are summarised with
/// their count. Before the fix, librdkafka's log callback put several errors per client
/// within milliseconds (4 for the consumer within 60 ms in the report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_kafka_is_down_each_client_logs_at_most_one_warning_per_ten_seconds() {
    let capture = Capture::default();
    tracing_subscriber::registry().with(capture.clone()).init();
    let kafka = tokio::task::spawn_blocking(Tansu::start_behind_proxy)
        .await
        .unwrap()
        .unwrap();
    let brokers = kafka.bootstrap_servers();
    let topic = common::topic("logs");
    let config = common::config(&brokers)
        .request_timeout(Duration::from_millis(500))
        .unreachable_after(Duration::from_secs(1))
        .shutdown_grace(Duration::from_secs(1));
    let w = KafkaWrapper::start(config).await.unwrap();
    w.admin()
        .ensure_topics(&[wharf_kafka_wrapper::TopicSpec::new(&topic, 1)])
        .await
        .unwrap();
    let p = w
        .add_producer(ProducerSpec::new("p").queue_timeout(Duration::from_secs(60)))
        .unwrap();
    p.send(Record::new(&topic, "before")).await.unwrap();
    let c = w
        .add_consumer(ConsumerSpec::group(
            "c",
            common::topic("g"),
            [topic.clone()],
            Handler::per_message(|_| async { Outcome::Ack }),
        ))
        .unwrap();
    wharf_testkit::eventually(
        "the consumer handled a message",
        Duration::from_secs(30),
        || async { c.handled() == 1 },
    )
    .await
    .unwrap();

    let down = Instant::now();
    kafka.proxy().unwrap().down().unwrap();
    // Sent while Kafka is down: it waits in the producer, across the rebuilds.
    let during = tokio::spawn({
        let (p, topic) = (p.clone(), topic.clone());
        async move { p.send(Record::new(topic, "during")).await }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.proxy().unwrap().restore().unwrap();

    // The first window: everything logged from the outage on, until 10 s after it began.
    wharf_testkit::eventually("the end of the first window", WINDOW * 2, || async {
        down.elapsed() >= WINDOW
    })
    .await
    .unwrap();
    let first: Vec<Seen> = capture
        .since(down)
        .into_iter()
        .filter(|s| s.at.duration_since(down) < WINDOW)
        .collect();
    let by_client = per_client(&first);
    assert!(
        by_client.get("c").is_some_and(|s| !s.is_empty()),
        "the consumer logged nothing about the outage: {}",
        lines(&first)
    );
    let over: Vec<String> = by_client
        .iter()
        .filter(|(_, seen)| seen.len() > 1)
        .map(|(client, seen)| format!("\nclient {client}: {}{}", seen.len(), lines(seen)))
        .collect();
    assert!(
        over.is_empty(),
        "more than one warning or error per client within {WINDOW:?}:{}",
        over.concat()
    );

    // The consumer's first line was followed by more (at debug): once the window is over, a
    // summary says how many (or, if the supervision loop was busy rebuilding then, the
    // client's next line does).
    let first_line = by_client["c"][0].clone();
    let summary = wharf_testkit::eventually_some(
        "a summary of the consumer's suppressed lines",
        WINDOW,
        || async {
            capture.since(first_line.at).into_iter().find(|s| {
                s.client == "c" && s.at > first_line.at && s.suppressed.is_some_and(|n| n > 0)
            })
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", lines(&capture.since(down))));
    let gap = summary.at.duration_since(first_line.at);
    assert!(
        gap >= WINDOW - Duration::from_secs(1),
        "the summary came {gap:?} after the first line: {summary:?}"
    );
    assert!(
        capture
            .since(first_line.at)
            .iter()
            .filter(|s| s.client == "c" && s.at > first_line.at && s.at < summary.at)
            .count()
            == 0,
        "nothing of the consumer's between its first line and the summary"
    );

    let during = tokio::time::timeout(Duration::from_secs(60), during)
        .await
        .expect("the record sent during the outage is delivered")
        .unwrap();
    assert!(during.is_ok(), "{during:?}");
    assert!(w.rebuilds() >= 1, "the outage went through a rebuild");
    w.shutdown().await.unwrap();
}

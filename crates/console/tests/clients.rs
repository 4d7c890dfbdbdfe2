//! The clients page: a sharded consumer's counts as the console shows them, over
//! wharf-core's in-memory queue (the consumer's own counters, no broker needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use tokio_util::sync::CancellationToken;
use wharf_console::Console;
use wharf_core::{MemoryQueue, Message, Publisher};
use wharf_sharded_consumer::{Handler, Incoming, Outcome, ShardKey, ShardedConsumer};

struct Ledger;

impl Handler for Ledger {
    type State = u64;
    type Signal = Infallible;
    type Reply = u64;
    type Error = String;

    async fn init(&self, _key: &ShardKey) -> Result<u64, String> {
        Ok(0)
    }

    async fn handle_message(&self, n: &mut u64, msg: &Incoming<'_>) -> Result<Outcome, String> {
        *n += 1;
        Ok(if msg.payload().as_ref() == b"poison" {
            Outcome::DeadLetter("poison message".into())
        } else {
            Outcome::Ack
        })
    }

    async fn handle_signal(&self, _n: &mut u64, signal: Infallible) -> Result<u64, String> {
        match signal {}
    }
}

#[tokio::test]
async fn the_clients_page_shows_a_sharded_consumers_keys_acks_and_dead_letters() {
    let queue = MemoryQueue::new(100);
    let dead = MemoryQueue::new(100);
    let consumer = ShardedConsumer::builder("ledger", Ledger)
        .dead_letter(dead.publisher())
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let task = consumer.spawn(queue.source(), stop.clone()).unwrap();
    for (key, payload) in [("a", "1"), ("b", "2"), ("a", "poison")] {
        queue
            .publisher()
            .publish(Message::new(payload.to_owned()).with_key(key.to_owned()))
            .await
            .unwrap();
    }
    let c = consumer.clone();
    eventually("three messages settled", Duration::from_secs(10), || {
        let s = c.stats();
        async move { s.acked + s.dead_lettered >= 3 }
    })
    .await
    .unwrap();
    let app = Console::builder()
        .sharded_consumer(consumer.clone())
        .build();

    let a = get(&app, "/service/clients").await;
    let nav = get(&app, "/").await;

    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    for text in [
        "Sharded consumer: ledger",
        "<th>Active keys</th><td>2</td>",
        "<th>Acked</th><td>2</td>",
        "<th>Dead-lettered</th><td>1</td>",
    ] {
        assert!(a.body.contains(text), "no {text:?} in {}", a.body);
    }
    assert!(nav.body.contains("/service/clients"));
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn without_clients_the_clients_page_is_a_404() {
    let app = Console::builder().build();

    let a = get(&app, "/service/clients").await;

    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

//! One stateful, ordered actor per account with wharf-sharded-consumer.
//!
//! ```text
//! Supervisor "bank"
//! └── child "ledger"   ShardedConsumer over the in-memory queue "transactions"
//!                      one actor per account (key): state = balance, loaded by init,
//!                      deposits and withdrawals applied in order, one at a time;
//!                      overdrafts dead-lettered to "rejected" with the reason
//! ```
//!
//! 20,000 transactions over 500 accounts go through; the store that `init` reads fails
//! once for one account (its actor is restarted alone and the transaction retried), one
//! transaction has no account at all (dead-lettered with the reason, never retried forever),
//! and a signal asks an account's actor for its balance from outside. Idle actors are
//! evicted after a second: an idle actor is only a small entry in a registry.
//!
//! Run it: `cargo run --example sharded --features sharded-consumer`. `RUST_LOG=debug`
//! shows actors starting and stopping. The same consumer runs on Kafka by giving `run` a
//! `wharf_kafka_wrapper::KafkaSource` (see docs/sharded-consumer.md).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wharf::core::Backoff;
use wharf::core::supervisor::Supervisor;
use wharf::core::transport::{MemoryQueue, Message, Publisher, Source};
use wharf::sharded_consumer::{
    Handler, Incoming, Outcome, RetryPolicy, ShardKey, ShardedConsumer, StopReason,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ACCOUNTS: usize = 500;
const TRANSACTIONS: usize = 20_000;

/// Balances as a durable store would hold them: actors load them in `init` and save them
/// in `terminate`.
#[derive(Default)]
struct Store {
    balances: Mutex<HashMap<String, i64>>,
    blip_once: AtomicBool,
}

struct Ledger {
    store: Arc<Store>,
}

enum Query {
    Balance,
}

impl Handler for Ledger {
    type State = i64;
    type Signal = Query;
    type Reply = i64;
    type Error = String;

    async fn init(&self, key: &ShardKey) -> Result<i64, String> {
        let account = key.as_str().unwrap_or_default();
        if account == "acct-7" && !self.store.blip_once.swap(true, Ordering::SeqCst) {
            return Err("the balance store timed out".into()); // retried with backoff
        }
        let balances = self.store.balances.lock().map_err(|e| e.to_string())?;
        Ok(balances.get(account).copied().unwrap_or(0))
    }

    async fn handle_message(
        &self,
        balance: &mut i64,
        tx: &Incoming<'_>,
    ) -> Result<Outcome, String> {
        let text = std::str::from_utf8(tx.payload()).map_err(|e| e.to_string())?;
        let Some((kind, amount)) = text.split_once(' ') else {
            return Ok(Outcome::DeadLetter(format!(
                "unreadable transaction {text:?}"
            )));
        };
        let amount: i64 = amount.parse().map_err(|e| format!("bad amount: {e}"))?;
        match kind {
            "deposit" => *balance += amount,
            "withdraw" if amount <= *balance => *balance -= amount,
            "withdraw" => {
                return Ok(Outcome::DeadLetter(format!(
                    "insufficient funds: {amount} > {balance}"
                )));
            }
            other => {
                return Ok(Outcome::DeadLetter(format!(
                    "unknown transaction kind {other:?}"
                )));
            }
        }
        Ok(Outcome::Ack)
    }

    async fn handle_signal(&self, balance: &mut i64, query: Query) -> Result<i64, String> {
        match query {
            Query::Balance => Ok(*balance),
        }
    }

    async fn terminate(&self, key: &ShardKey, balance: i64, _reason: StopReason) {
        if let (Some(account), Ok(mut balances)) = (key.as_str(), self.store.balances.lock()) {
            balances.insert(account.to_owned(), balance);
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();

    let transactions = MemoryQueue::new(4_096);
    let rejected = MemoryQueue::new(TRANSACTIONS);
    let store = Arc::new(Store::default());
    let ledger = ShardedConsumer::builder(
        "ledger",
        Ledger {
            store: store.clone(),
        },
    )
    .dead_letter(rejected.publisher())
    .retry(RetryPolicy::new(
        5,
        Backoff::exponential(Duration::from_millis(20), Duration::from_secs(1)),
    ))
    .idle_timeout(Some(Duration::from_secs(1)))
    .max_in_flight(2_000)
    .build()?;

    let source_queue = transactions.clone();
    let bank = Supervisor::builder("bank")
        .child(ledger.child_spec("ledger", move || {
            let queue = source_queue.clone();
            async move { Ok::<_, Infallible>(queue.source()) }
        }))
        .start()
        .await?;

    // Every account gets deposits, then withdrawals it can afford; one overdraws; one
    // transaction names no account.
    let started = Instant::now();
    let publisher = transactions.publisher();
    let mut expected: HashMap<String, i64> = HashMap::new();
    for n in 0..TRANSACTIONS {
        let account = format!("acct-{}", n % ACCOUNTS);
        let (text, change) = if n < TRANSACTIONS / 2 {
            ("deposit 10".to_owned(), 10)
        } else {
            ("withdraw 3".to_owned(), -3)
        };
        *expected.entry(account.clone()).or_default() += change;
        publisher
            .publish(Message::new(text).with_key(account))
            .await?;
    }
    publisher
        .publish(Message::new("withdraw 1000000").with_key("acct-3"))
        .await?;
    publisher.publish(Message::new("deposit 5")).await?; // no key: which account?
    let total = TRANSACTIONS as u64 + 2;
    while transactions.stats().acked < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();

    let balance = ledger.signal("acct-42", Query::Balance).await?;
    println!(
        "{TRANSACTIONS} transactions over {ACCOUNTS} accounts in {took:.2?}; acct-42 holds {balance} (expected {})",
        expected["acct-42"]
    );
    assert_eq!(balance, expected["acct-42"]);

    rejected.close();
    let mut rejections = rejected.source();
    while let Some(delivery) = rejections.recv().await {
        let delivery = delivery?;
        let reason = delivery
            .message()
            .headers()
            .get("wharf-dead-letter-reason")
            .cloned()
            .unwrap_or_default();
        println!(
            "rejected {:?}: {}",
            String::from_utf8_lossy(delivery.message().payload()),
            String::from_utf8_lossy(&reason)
        );
        delivery.ack().await?;
    }

    // Idle actors go away after a second and save their balance as they stop.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let stats = ledger.stats();
    println!(
        "actors: {} started, {} restarted after a failure, {} evicted when idle, {} active now",
        stats.started, stats.restarts, stats.evicted, stats.active_keys
    );
    let saved = store
        .balances
        .lock()
        .map(|b| b.get("acct-7").copied())
        .unwrap_or_default();
    println!(
        "acct-7 (whose first load failed) saved {saved:?}, expected {}",
        expected["acct-7"]
    );
    assert_eq!(saved, Some(expected["acct-7"]));

    bank.shutdown().await?;
    Ok(())
}

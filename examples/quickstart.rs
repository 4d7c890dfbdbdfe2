//! wharf in one file, no broker needed: a supervision tree over the in-memory transport.
//!
//! ```text
//! app (one_for_one)
//! ├── ledger        a service: per-customer totals behind a handle that outlives restarts
//! ├── consumers     a nested supervisor (rest_for_one)
//! │   └── consumer  reads orders, asks the ledger, acks; panics on a poisoned order
//! └── producer      publishes the orders, then stops (transient: a normal exit is final)
//! ```
//!
//! Every order is acknowledged exactly once even though the consumer crashes on the way:
//! the order it was handling is redelivered, the ledger's queued requests are served by its
//! next incarnation. Run it with `cargo run --example quickstart [ORDERS]`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wharf::core::service::{Mailbox, ServiceHandle, mailbox};
use wharf::core::supervisor::{ChildSpec, Restart, Started, Strategy, Supervisor};
use wharf::core::transport::{MemoryQueue, Message, Publisher, Source};
use wharf::core::{Backoff, BoxError, Error};

/// The ledger's requests.
enum Ledger {
    /// Records an order; answers the customer's new total.
    Record { customer: String, amount: u64 },
    /// Answers every customer's total.
    Totals,
}

/// The ledger's answers.
enum LedgerReply {
    Total(u64),
    Totals(BTreeMap<String, u64>),
}

fn ledger_spec(mailbox: Mailbox<Ledger, LedgerReply>) -> ChildSpec {
    ChildSpec::new("ledger", move |ctx| {
        let mailbox = mailbox.clone();
        async move {
            let mut inbox = mailbox.attach().await;
            let mut totals = BTreeMap::<String, u64>::new();
            Ok::<_, Error>(Started::task(async move {
                while let Some(request) = inbox.recv_until(&ctx).await {
                    let (cmd, reply) = request.into_parts();
                    match cmd {
                        Ledger::Record { customer, amount } => {
                            let total = totals.entry(customer).or_default();
                            *total += amount;
                            reply.send(LedgerReply::Total(*total));
                        }
                        Ledger::Totals => {
                            reply.send(LedgerReply::Totals(totals.clone()));
                        }
                    }
                }
                Ok::<_, Error>(())
            }))
        }
    })
}

fn consumer_spec(queue: MemoryQueue, ledger: ServiceHandle<Ledger, LedgerReply>) -> ChildSpec {
    ChildSpec::new("consumer", move |ctx| {
        let (queue, ledger) = (queue.clone(), ledger.clone());
        async move {
            let mut source = queue.source();
            Ok::<_, Error>(Started::task(async move {
                loop {
                    let delivery = tokio::select! {
                        _ = ctx.cancelled() => return Ok::<(), BoxError>(()),
                        next = source.recv() => match next {
                            Some(delivery) => delivery?,
                            None => return Ok(()),
                        },
                    };
                    let text = String::from_utf8_lossy(delivery.message().payload()).into_owned();
                    let (customer, amount) = text.split_once(':').unwrap_or(("?", "0"));
                    if customer == "poison" && delivery.attempt() == 1 {
                        // A bug on a first attempt: the delivery is dropped un-acked, so it
                        // comes back; the supervisor restarts this consumer.
                        panic!("cannot parse order {text:?}");
                    }
                    let amount = amount.parse().unwrap_or(0);
                    let record = Ledger::Record {
                        customer: customer.to_owned(),
                        amount,
                    };
                    if let LedgerReply::Total(total) = ledger.call(record).await? {
                        tracing::debug!(customer, total, "order recorded");
                    }
                    delivery.ack().await?;
                }
            }))
        }
    })
}

fn producer_spec(queue: MemoryQueue, orders: u64) -> ChildSpec {
    ChildSpec::from_task("producer", move |_ctx| {
        let publisher = queue.publisher();
        async move {
            for n in 0..orders {
                let customer = if n == orders / 2 {
                    "poison".to_owned()
                } else {
                    format!("customer-{}", n % 5)
                };
                let payload = format!("{customer}:{}", n % 7 + 1);
                publisher
                    .publish(Message::new(payload).with_key(customer))
                    .await?;
            }
            Ok::<_, Error>(())
        }
    })
    .restart(Restart::Transient)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    // The supervisor reports panics through tracing; keep the default hook's backtraces out.
    std::panic::set_hook(Box::new(|info| eprintln!("(a child panicked: {info})")));
    let orders: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let began = Instant::now();

    let queue = MemoryQueue::new(1_024);
    let (ledger, ledger_mailbox) = mailbox::<Ledger, LedgerReply>("ledger", 256);
    let (consumers, _) = Supervisor::builder("consumers")
        .strategy(Strategy::RestForOne)
        .backoff(Backoff::exponential(
            Duration::from_millis(20),
            Duration::from_secs(1),
        ))
        .child(consumer_spec(queue.clone(), ledger.clone()))
        .into_child();
    let app = Supervisor::builder("app")
        .child(ledger_spec(ledger_mailbox))
        .child(consumers)
        .child(producer_spec(queue.clone(), orders))
        .start()
        .await?;
    println!("wharf quickstart: {orders} orders through a supervised consumer\n");

    let deadline = Instant::now() + Duration::from_secs(60);
    while queue.stats().acked < orders {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {orders} orders acked in 60 s",
                queue.stats().acked
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let tree = app.snapshot().await?;
    println!("supervision tree after the run:\n{tree}");
    let LedgerReply::Totals(totals) = ledger.call(Ledger::Totals).await? else {
        return Err("the ledger answered Totals with a single total".into());
    };
    let recorded: u64 = (0..orders).map(|n| n % 7 + 1).sum();
    let ledger_sum: u64 = totals.values().sum();
    let stats = queue.stats();
    app.shutdown().await?;

    println!("customer totals: {totals:?}");
    let restarts = tree
        .find(&["consumers", "consumer"])
        .map(|c| c.restarts)
        .unwrap_or(0);
    println!(
        "published {}, acked {}, redelivered after a crash {}, consumer restarts {restarts}",
        stats.published, stats.acked, stats.released
    );
    println!(
        "ledger total {ledger_sum} (expected {recorded}); elapsed {:?}",
        began.elapsed()
    );
    let lost = orders.saturating_sub(stats.acked) + recorded.abs_diff(ledger_sum);
    println!("lost: {lost}");
    if lost > 0 {
        std::process::exit(1);
    }
    Ok(())
}

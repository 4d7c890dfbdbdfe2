//! The load generator: orders keyed by customer, produced to Kafka at `--rate` per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument as _;

use wharf::kafka_wrapper::Record;
use wharf::webhooks_emitter::serde_json;

use crate::BoxError;
use crate::app::{App, bump, lock};
use crate::cli::Args;
use crate::customers::Order;

/// Produces orders at `args.rate` for `args.duration`, keyed by customer.
pub(crate) async fn generate(
    app: Arc<App>,
    shop: wharf::kafka_wrapper::Producer,
    topic: String,
    args: Args,
) -> Result<(), BoxError> {
    let start = Instant::now();
    let mut seqs = vec![0u64; args.customers as usize];
    let mut next = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while start.elapsed() < args.duration {
        ticker.tick().await;
        let due = (start.elapsed().as_secs_f64() * args.rate as f64) as u64;
        while next < due {
            let customer_n = next % args.customers;
            let customer = format!("customer-{customer_n:04}");
            let seq = seqs[customer_n as usize];
            seqs[customer_n as usize] += 1;
            let order = Order {
                order: next,
                customer: customer.clone(),
                seq,
                seats: 1 + (next % 4) as u32,
            };
            // The root of the order's trace (with --trace): the producer writes its context
            // into the record's headers, and every later step continues it.
            let span =
                tracing::info_span!("order_produce", order = next as i64, customer = %customer);
            let record = Record::new(&topic, serde_json::to_vec(&order)?).key(customer);
            let id = next;
            let app2 = app.clone();
            bump(&app.counters.produce_queued);
            let queued = shop
                .send_with(record, move |outcome| match outcome {
                    Ok(_) => {
                        lock(&app2.produced).insert(id);
                        bump(&app2.counters.produced);
                    }
                    Err(e) => {
                        lock(&app2.failed_produce).insert(id, e.to_string());
                        bump(&app2.counters.produce_failed);
                    }
                })
                .instrument(span)
                .await;
            if let Err(e) = queued {
                lock(&app.failed_produce).insert(id, e.to_string());
                bump(&app.counters.produce_failed);
            }
            next += 1;
        }
    }
    Ok(())
}

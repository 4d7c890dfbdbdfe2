//! Order intake: the order as the load generator writes it to Kafka, and the per-customer
//! actor (sharded-consumer) that checks each customer's orders arrive in order and enqueues
//! one ticket job per order.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use wharf::job_partition::Jobs;
use wharf::sharded_consumer::{Handler as ShardHandler, Incoming, Outcome, ShardKey};
use wharf::webhooks_emitter::serde_json;

use std::sync::Arc;

use crate::app::{App, bump};
use crate::tickets::IssueTickets;
use crate::{BoxError, PARTITION, QUEUE};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) order: u64,
    pub(crate) customer: String,
    /// 0, 1, 2, ... per customer, in the order the load generator produced them.
    pub(crate) seq: u64,
    pub(crate) seats: u32,
}

/// One actor per customer: checks that the customer's orders arrive in order, skips
/// redeliveries, and enqueues one ticket job per accepted order.
#[derive(Debug)]
pub(crate) struct Customers {
    pub(crate) jobs: Jobs,
    pub(crate) app: Arc<App>,
}

/// A customer's state, owned by its actor (no lock).
#[derive(Debug, Default)]
pub(crate) struct Customer {
    pub(crate) next_seq: u64,
    pub(crate) accepted: u64,
}

impl ShardHandler for Customers {
    type State = Customer;
    type Signal = ();
    type Reply = u64;
    type Error = BoxError;

    async fn init(&self, _key: &ShardKey) -> Result<Customer, BoxError> {
        Ok(Customer::default())
    }

    async fn handle_message(
        &self,
        state: &mut Customer,
        message: &Incoming<'_>,
    ) -> Result<Outcome, BoxError> {
        let app = &self.app;
        let order: Order = match serde_json::from_slice(message.payload()) {
            Ok(order) => order,
            Err(e) => return Ok(Outcome::DeadLetter(format!("not an order: {e}"))),
        };
        if order.seq < state.next_seq {
            bump(&app.counters.redelivered); // at least once: already accepted
            return Ok(Outcome::Ack);
        }
        if order.seq > state.next_seq {
            bump(&app.counters.out_of_order);
        }
        let job = IssueTickets {
            order: order.order,
            customer: order.customer,
            seats: order.seats,
        };
        // The job stores this span's context (with --trace): its run continues the trace.
        let span = tracing::info_span!("customer_actor", order = order.order as i64, customer = %job.customer);
        match self
            .jobs
            .enqueue(PARTITION, QUEUE, &job)
            .instrument(span)
            .await
        {
            Ok(enqueued) => {
                if matches!(enqueued, wharf::job_partition::Enqueued::Duplicate(_)) {
                    bump(&app.counters.enqueue_duplicates);
                }
                state.next_seq = order.seq + 1;
                state.accepted += 1;
                bump(&app.counters.consumed);
                bump(&app.counters.enqueued);
                Ok(Outcome::Ack)
            }
            // Not acknowledged: the same order comes back after the delay.
            Err(_) => Ok(Outcome::Retry(Duration::from_millis(500))),
        }
    }

    async fn handle_signal(&self, state: &mut Customer, _: ()) -> Result<u64, BoxError> {
        Ok(state.accepted)
    }
}

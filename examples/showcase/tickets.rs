//! The ticket job (job-partition): issues one order's tickets, then its webhook event
//! (webhooks-emitter, to SQS) and its audit record (producer-ack, to Pulsar).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::Instrument as _;
use wharf::core::Backoff;
use wharf::job_partition::{Job, JobContext, JobError};
use wharf::producer_ack::PulsarMessage as AuditMessage;
use wharf::webhooks_emitter::Event;
use wharf::webhooks_emitter::serde_json::json;

use crate::app::{App, bump, lock};

/// Issues the tickets of one order: webhook event (confirmed by SQS), then audit record
/// (acknowledged by Pulsar), then the ticket counts as issued.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct IssueTickets {
    pub(crate) order: u64,
    pub(crate) customer: String,
    pub(crate) seats: u32,
}

impl Job<App> for IssueTickets {
    const NAME: &'static str = "issue_tickets";

    async fn perform(self, ctx: JobContext<App>) -> Result<(), JobError> {
        let app = ctx.state();
        if ctx.attempt() > 1 {
            bump(&app.counters.job_retries);
        }
        let ticket = format!("T-{:08}", self.order);
        let body = json!({
            "ticket": ticket, "order": self.order, "customer": self.customer, "seats": self.seats,
        });
        let done = lock(&app.tickets)
            .get(&self.order)
            .cloned()
            .unwrap_or_default();
        if done.issued > 0 {
            return Ok(()); // an earlier run finished: never issue a ticket twice
        }
        if !done.webhook {
            let event = Event::new(&self.customer, "ticket.issued", body.clone())?;
            // The event's SQS attributes carry this span's context (with --trace).
            let span = tracing::info_span!("sqs_emit", order = self.order as i64);
            let sent = app.emitter.emit_sync(event).instrument(span).await?;
            let mut tickets = lock(&app.tickets);
            let progress = tickets.entry(self.order).or_default();
            progress.webhook = true;
            progress.webhook_receipt = Some(format!(
                "event {} = SQS MessageId {}",
                sent.event_id, sent.message_id
            ));
            drop(tickets);
            bump(&app.counters.events);
        }
        if !done.audit {
            let record = AuditMessage::new(body.to_string())
                .with_key(&self.customer)
                .with_property("ticket", &ticket);
            // The record's Pulsar properties carry this span's context (with --trace).
            let span = tracing::info_span!("pulsar_produce", order = self.order as i64);
            app.audit.produce(record).instrument(span).await?;
            lock(&app.tickets).entry(self.order).or_default().audit = true;
            bump(&app.counters.audit_acks);
        }
        lock(&app.tickets).entry(self.order).or_default().issued += 1;
        bump(&app.counters.jobs_done);
        Ok(())
    }

    fn queue_key(&self) -> Option<String> {
        Some(format!("order:{}", self.order))
    }

    fn execution_key(&self) -> Option<String> {
        Some(format!("customer:{}", self.customer))
    }

    fn max_attempts(&self) -> u32 {
        100
    }

    fn backoff(&self, attempt: u32) -> Duration {
        Backoff::exponential(Duration::from_millis(200), Duration::from_secs(2))
            .delay(attempt.saturating_sub(1))
    }

    fn max_execution_time(&self) -> Option<Duration> {
        Some(Duration::from_secs(60))
    }
}

//! The summary: what each stage counted, what the read-back found, the faults and their
//! recovery, and the orders that did not make it. Its last line is `lost: N`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use wharf::core::supervisor::TreeSnapshot;
use wharf::job_partition::QueueCounts;

use crate::app::{App, TicketProgress, get, lock};
use crate::chaos::FaultReport;
use crate::cli::Args;

/// What the run saw, for the summary.
pub(crate) struct Facts<'a> {
    pub(crate) args: &'a Args,
    pub(crate) app: &'a App,
    /// When the program started.
    pub(crate) t0: Instant,
    pub(crate) drained_in: Duration,
    pub(crate) stopped_in: Duration,
    pub(crate) sqs_read_in: Duration,
    pub(crate) pulsar_read_in: Duration,
    /// The orders Kafka acknowledged.
    pub(crate) produced: BTreeSet<u64>,
    /// Webhook events read back from SQS, per order.
    pub(crate) sqs_seen: HashMap<u64, u32>,
    /// Audit records read back from Pulsar, per order.
    pub(crate) audit_seen: HashMap<u64, u32>,
    /// The ticket jobs' progress, per order.
    pub(crate) ledger: HashMap<u64, TicketProgress>,
    pub(crate) jc: Option<QueueCounts>,
    pub(crate) faults: Vec<FaultReport>,
    /// The tree at the end of the load.
    pub(crate) snapshot: Option<TreeSnapshot>,
}

/// Prints the summary; answers the number of failures (lost orders, faults that did not
/// recover, and no order produced at all): the exit status is non-zero when it is.
pub(crate) fn print(facts: Facts<'_>) -> u64 {
    let Facts {
        args,
        app,
        t0,
        drained_in,
        stopped_in,
        sqs_read_in,
        pulsar_read_in,
        produced,
        sqs_seen,
        audit_seen,
        ledger,
        jc,
        faults,
        snapshot,
    } = facts;
    let c = &app.counters;
    let expected = produced.len();
    let count = |m: &HashMap<u64, u32>, o: &u64| m.get(o).copied().unwrap_or(0);
    let mut missing_ticket = Vec::new();
    let mut missing_event = Vec::new();
    let mut missing_audit = Vec::new();
    let mut lost = BTreeSet::new();
    for o in &produced {
        if ledger.get(o).map_or(0, |t| t.issued) == 0 {
            missing_ticket.push(*o);
            lost.insert(*o);
        }
        if count(&sqs_seen, o) == 0 {
            missing_event.push(*o);
            lost.insert(*o);
        }
        if count(&audit_seen, o) == 0 {
            missing_audit.push(*o);
            lost.insert(*o);
        }
    }
    let issued_twice = ledger.values().filter(|t| t.issued > 1).count();
    let dup = |m: &HashMap<u64, u32>| {
        m.values()
            .map(|n| u64::from(n.saturating_sub(1)))
            .sum::<u64>()
    };
    let unexpected = |m: &HashMap<u64, u32>| m.keys().filter(|o| !produced.contains(o)).count();
    let distinct = |m: &HashMap<u64, u32>| m.keys().filter(|o| produced.contains(o)).count();
    let issued = ledger
        .iter()
        .filter(|(o, t)| t.issued > 0 && produced.contains(o))
        .count();

    println!();
    println!("== summary ==================================================================");
    println!(
        "load {:.1} s at {}/s, {} customers; drained in {:.1} s; tree stopped in {:.1} s; \
         read back: rest of SQS in {:.1} s, Pulsar in {:.1} s; total {:.1} s",
        args.duration.as_secs_f64(),
        args.rate,
        args.customers,
        drained_in.as_secs_f64(),
        stopped_in.as_secs_f64(),
        sqs_read_in.as_secs_f64(),
        pulsar_read_in.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    println!("{:<44} {:>8}  notes", "stage", "count");
    let row = |stage: &str, n: usize, note: String| println!("{stage:<44} {n:>8}  {note}");
    row(
        "orders produced (acknowledged by Kafka)",
        expected,
        format!("{} not stored (excluded)", get(&c.produce_failed)),
    );
    row(
        "orders accepted by customer actors",
        get(&c.consumed) as usize,
        format!(
            "redeliveries skipped {}, out of order {}",
            get(&c.redelivered),
            get(&c.out_of_order)
        ),
    );
    row(
        "ticket jobs enqueued (job-partition)",
        get(&c.enqueued) as usize,
        format!(
            "queue-key duplicates {}; completed {} retried {} dead {}",
            get(&c.enqueue_duplicates),
            jc.as_ref().map_or(0, |j| j.completed_total),
            jc.as_ref().map_or(0, |j| j.retried_total),
            jc.as_ref().map_or(0, |j| j.dead_total)
        ),
    );
    row(
        "tickets issued (exactly once)",
        issued,
        format!("issued twice: {issued_twice}"),
    );
    row(
        "webhook events in SQS (read back)",
        distinct(&sqs_seen),
        format!(
            "duplicate deliveries {}, unexpected {}",
            dup(&sqs_seen),
            unexpected(&sqs_seen)
        ),
    );
    row(
        "audit records in Pulsar (acked, read back)",
        distinct(&audit_seen),
        format!(
            "acks {}; duplicate records {}, unexpected {}",
            get(&c.audit_acks),
            dup(&audit_seen),
            unexpected(&audit_seen)
        ),
    );
    if dup(&sqs_seen) + dup(&audit_seen) > 0 {
        println!(
            "(duplicates: the same ticket delivered again, at least once: re-sent after a \
             reconnect, or re-emitted by a job aborted mid-send; they carry the ticket id to \
             dedupe on and are not extra tickets)"
        );
    }
    if args.chaos {
        println!("faults:");
        if faults.is_empty() {
            println!("  (none injected: every broker was external)");
        }
        for f in &faults {
            println!(
                "  {:<40} at {:>5.1} s  outage {:>4.1} s  recovered {}  ({})",
                f.what,
                f.at,
                f.outage,
                f.recovered
                    .map_or("NO".to_owned(), |s| format!("{s:.2} s after")),
                f.note
            );
        }
    }
    if let Some(s) = snapshot {
        println!("supervision tree at the end of the load:");
        for line in s.to_string().lines() {
            println!("  {line}");
        }
    }
    let failed_produce = lock(&app.failed_produce).clone();
    if !failed_produce.is_empty() {
        let first: Vec<String> = failed_produce
            .iter()
            .take(5)
            .map(|(o, e)| format!("{o}: {e}"))
            .collect();
        println!(
            "orders Kafka did not store (the generator saw the error): {}",
            first.join("; ")
        );
    }
    let show = |name: &str, v: &[u64]| {
        if !v.is_empty() {
            let first: Vec<String> = v.iter().take(20).map(u64::to_string).collect();
            println!(
                "{name} ({}): {}{}",
                v.len(),
                first.join(", "),
                if v.len() > 20 { ", ..." } else { "" }
            );
        }
    };
    show("orders without an issued ticket", &missing_ticket);
    show("orders without a webhook event in SQS", &missing_event);
    for order in missing_event.iter().take(20) {
        let receipt = lock(&app.tickets)
            .get(order)
            .and_then(|t| t.webhook_receipt.clone());
        println!(
            "  order {order}: {}",
            receipt.unwrap_or_else(|| "emit_sync never confirmed an event".to_owned())
        );
    }
    show("orders without an audit record in Pulsar", &missing_audit);
    let faults_recovered = faults.iter().all(|f| f.recovered.is_some());
    if !faults_recovered {
        println!("a fault did not recover within 60 s (see above)");
    }
    println!("lost: {}", lost.len());
    lost.len() as u64 + u64::from(!faults_recovered) + u64::from(expected == 0)
}

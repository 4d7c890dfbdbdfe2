//! The wharf showcase: a small ticketing back end that composes every wharf crate under one
//! wharf-core supervision tree, on real brokers, and proves at the end that nothing was lost.
//!
//! ```text
//! showcase (one_for_one supervisor)
//! ├── kafka      KafkaWrapper: rebuilds its Kafka clients when the broker connection fails
//! ├── webhooks   Emitter: batches webhook events into SQS, retries, drains on shutdown
//! ├── audit      producer-ack Producer: audit records to Pulsar, each one acknowledged
//! ├── tickets    supervisor (one_for_one)
//! │   ├── worker-a   job-partition Worker: runs IssueTickets jobs from Redis
//! │   └── worker-b   another Worker (the one --chaos kills; restarted by its supervisor)
//! ├── orders     ShardedConsumer over a Kafka group consumer: one actor per customer
//! └── load       load generator: orders keyed by customer at --rate per second
//!
//!  load ──orders──▶ Kafka ──▶ orders (per-customer actor, in order)
//!                                 │ enqueue IssueTickets (execution key = customer,
//!                                 ▼                     queue key = order id)
//!                               Redis ──▶ worker-a / worker-b: issue the ticket, then
//!                                          ├── webhook event ──▶ SQS    (confirmed)
//!                                          └── audit record  ──▶ Pulsar (acknowledged)
//! ```
//!
//! At the end it reads the SQS queue and the Pulsar topic back and checks that every order
//! Kafka acknowledged became exactly one issued ticket, one webhook event and one audit
//! record, or lists the ones that did not. The last line is `lost: N`; the exit status is
//! non-zero when N > 0.
//!
//! `--chaos` also cuts the Kafka connection (fault proxy), kills and restarts the Kafka
//! broker (a durable Tansu, its data in S3 on moto), restarts the Pulsar broker, makes SQS
//! unreachable for a while (fault proxy) and kills a job worker, and reports how long each
//! stage took to recover.
//!
//! Run it with `scripts/demo` (installs the brokers first), or
//! `cargo run --example showcase --features full,otel -- --help`.
//!
//! The modules, in the order the program uses them: [`cli`] (options), [`brokers`]
//! (started or given), [`clients`] (connected, topics created), [`app`] (shared counters
//! and ledgers), [`tree`] (the supervision tree), [`load`] (the order generator),
//! [`customers`] (order intake: the per-customer actor), [`tickets`] (the ticket job and
//! what it emits), [`chaos`] (faults), [`progress`] (live lines), [`readback`] (SQS and
//! Pulsar read back) and [`report`] (the summary).

mod app;
mod brokers;
mod chaos;
mod cli;
mod clients;
mod customers;
mod load;
mod observe;
mod progress;
mod readback;
mod report;
mod tickets;
mod tree;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::{App, Counters, lock};
use crate::brokers::{sqs_client, start_brokers};
use crate::chaos::Chaos;
use crate::cli::{Args, parse_args};
use crate::clients::Names;
use crate::progress::Progress;
use crate::readback::{SqsReaders, read_pulsar};
use crate::tree::{Tree, shutdown_tree};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const PARTITION: &str = "ticketing";
const QUEUE: &str = "issue-tickets";
const ORDER_PARTITIONS: i32 = 8;

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("showcase: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("showcase: could not start the tokio runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match runtime.block_on(run(args)) {
        Ok(0) => 0,
        Ok(_) => 1,
        Err(e) => {
            eprintln!("showcase: error: {e}");
            eprintln!("lost: unknown (the run did not complete)");
            2
        }
    };
    // Brokers were dropped (killed) inside `run`; don't wait for lingering client threads.
    runtime.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}

async fn run(args: Args) -> Result<u64, BoxError> {
    let telemetry = observe::Telemetry::install(args.trace)?;
    let t0 = Instant::now();
    println!(
        "wharf showcase: {:.0} s of orders at {}/s from {} customers{}",
        args.duration.as_secs_f64(),
        args.rate,
        args.customers,
        if args.chaos { ", with chaos" } else { "" }
    );
    if let Some(addr) = args.metrics {
        let bound = observe::serve_metrics(addr).await?;
        println!("metrics: http://{bound}/metrics (Prometheus text)");
    }
    let brokers = start_brokers(&args).await?;
    println!(
        "brokers ({:.1} s): Kafka {}  Pulsar {}  SQS {}  Redis {}",
        t0.elapsed().as_secs_f64(),
        brokers.kafka,
        brokers.pulsar,
        brokers.sqs,
        brokers.redis
    );

    let names = Names::new(t0);
    let (clients, audit_spec) = clients::connect(&args, &brokers, &names).await?;
    let app = Arc::new(App {
        emitter: clients.emitter.clone(),
        audit: clients.audit.clone(),
        counters: Counters::default(),
        produced: Mutex::default(),
        failed_produce: Mutex::default(),
        tickets: Mutex::default(),
    });
    let tree = Tree::build(&args, &names, &clients, audit_spec, &app)?;
    let kill_worker = tree.kill_worker.clone();

    // The SQS read-back talks to moto directly, not through the fault proxy: a response
    // lost in a cut would hide its messages (received, so invisible) from the read-back.
    let reader_client = match brokers.moto.as_ref() {
        Some(moto) => sqs_client(&format!("http://{}", moto.direct_addr()), false),
        None => clients.sqs.clone(),
    };
    let sqs_readers = SqsReaders::spawn(&reader_client, &clients.queue_url);

    let tree = tree.start().await?;
    let load_start = Instant::now();
    // The operator's console over the same clients, while the showcase runs.
    let console = match args.console {
        None => None,
        Some(addr) => {
            let router = wharf::console::Console::builder()
                .title("wharf showcase")
                .jobs(clients.jobs.clone())
                .supervisor(tree.clone())
                .kafka("kafka", clients.kafka.clone())
                .emitter("webhooks", clients.emitter.clone())
                .producer("audit", clients.audit.clone())
                .build();
            let served = wharf::console::serve(router, addr)
                .await
                .map_err(|e| format!("could not serve the console on {addr}: {e}"))?;
            println!("console: http://{}/", served.local_addr());
            Some(served)
        }
    };
    println!(
        "supervision tree started ({:.1} s since launch); load running",
        t0.elapsed().as_secs_f64()
    );

    // --- chaos and progress ----------------------------------------------------------------
    let faults = Arc::new(Mutex::new(Vec::new()));
    let chaos = args.chaos.then(|| {
        tokio::spawn(
            Chaos {
                start: load_start,
                duration: args.duration,
                tansu: brokers.tansu.clone(),
                pulsar: brokers.pulsar_lite.clone(),
                moto: brokers.moto.clone(),
                kill_worker,
                app: app.clone(),
                reports: faults.clone(),
            }
            .run(),
        )
    });
    let mut progress = Progress::new(&app, &sqs_readers, load_start, args.quiet);
    progress.during_load(args.duration).await;
    if let Some(chaos) = chaos {
        let _ = chaos.await;
    }
    let drained_in = progress.drain(args.drain).await;
    let snapshot = tree.snapshot().await.ok();
    let stopping = Instant::now();
    shutdown_tree(&tree).await;
    let stopped_in = stopping.elapsed();
    if let Some(console) = console {
        let _ = tokio::time::timeout(Duration::from_secs(5), console.shutdown()).await;
    }

    // --- read back -------------------------------------------------------------------------
    let produced: BTreeSet<u64> = lock(&app.produced).clone();
    let expected = produced.len();
    let reading = Instant::now();
    let sqs_seen = sqs_readers.finish(expected).await;
    let sqs_read_in = reading.elapsed();
    let audit_seen = read_pulsar(&clients.pulsar_client, &names.audit_topic, expected).await?;
    let pulsar_read_in = reading.elapsed() - sqs_read_in;
    let ledger = lock(&app.tickets).clone();
    let jc = clients.jobs.counts(PARTITION, QUEUE).await.ok();

    let trace_report = telemetry.spans.as_ref().map(|spans| {
        spans.check(
            &produced,
            &[
                ("sqs_emit", &sqs_seen.traceparents),
                ("pulsar_produce", &audit_seen.traceparents),
            ],
        )
    });
    if let Some(trace_report) = &trace_report {
        trace_report.print();
    }
    let broken_traces = trace_report.as_ref().map_or(0, |r| r.broken() as u64);

    let failures = report::print(report::Facts {
        args: &args,
        app: &app,
        t0,
        drained_in,
        stopped_in,
        sqs_read_in,
        pulsar_read_in,
        produced,
        sqs_seen: sqs_seen.per_order,
        audit_seen: audit_seen.per_order,
        ledger,
        jc,
        faults: lock(&faults).clone(),
        snapshot,
    });
    drop(brokers);
    Ok(failures + broken_traces)
}

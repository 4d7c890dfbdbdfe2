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
//! `--chaos` also cuts the Kafka connection (fault proxy), restarts the Pulsar broker, makes
//! SQS unreachable for a while (fault proxy) and kills a job worker, and reports how long
//! each stage took to recover.
//!
//! Run it with `scripts/demo` (installs the brokers first), or
//! `cargo run --example showcase --features full -- --help`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use wharf::core::Backoff;
use wharf::core::supervisor::{
    ChildSpec, Restart, Shutdown, Started, Strategy, Supervisor, SupervisorHandle,
};
use wharf::job_partition::{
    Config as JobsConfig, Job, JobContext, JobError, Jobs, Registry, Worker,
};
use wharf::kafka_wrapper::{
    ConsumerSpec, Handler as KafkaHandler, KafkaConfig, KafkaWrapper, Outcome as KafkaOutcome,
    ProducerSpec, Record, TopicSpec,
};
use wharf::producer_ack::{OnReconnect, Producer as AuditProducer, PulsarMessage as AuditMessage};
use wharf::sharded_consumer::{
    Handler as ShardHandler, Incoming, Outcome, RetryPolicy, ShardKey, ShardedConsumer,
};
use wharf::webhooks_emitter::aws_sdk_sqs;
use wharf::webhooks_emitter::serde_json::{self, json};
use wharf::webhooks_emitter::{Emitter, Event, FullPolicy};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const PARTITION: &str = "ticketing";
const QUEUE: &str = "issue-tickets";
const ORDER_PARTITIONS: i32 = 8;

const HELP: &str = "\
wharf showcase: a ticketing back end composing every wharf crate under one supervision tree.

Orders go to Kafka (keyed by customer), a sharded consumer keeps per-customer state in order
and enqueues a job per order in Redis (job-partition); job workers issue the ticket, emit a
webhook event to SQS and an acknowledged audit record to Pulsar. At the end the SQS queue and
the Pulsar topic are read back: every order must have become exactly one ticket, one event
and one audit record. The last line is `lost: N`; the exit status is 1 when N > 0.

USAGE: showcase [OPTIONS]        (scripts/demo [OPTIONS] installs the brokers and runs this)

OPTIONS:
  --duration SECS    how long the load generator runs (default 30)
  --rate N           orders per second (default 50)
  --customers N      distinct customers, the sharding and execution key (default 50)
  --chaos            during the run: cut the Kafka connection, restart the Pulsar broker,
                     make SQS unreachable for a while, kill a job worker; the summary shows
                     each fault and its recovery time
  --drain SECS       after the load stops, how long to wait for the last tickets (default 60)
  --kafka HOST:PORT  use this Kafka instead of starting Tansu (no Kafka fault with --chaos)
  --pulsar URL       use this Pulsar (pulsar://host:port) instead of starting pulsar-lite
  --sqs URL          use this SQS endpoint (http://host:port) instead of starting moto
                     (credentials and region from the standard AWS variables, else test/us-east-1)
  --redis URL        use this Redis (redis://host:port/) instead of starting redis-server
  --quiet            no live progress lines
  -h, --help         this text

Local brokers are started by the program (wharf-testkit, binaries from scripts/install) on
free loopback ports and stopped at its end. RUST_LOG=info shows the crates' own logs.";

// ---------------------------------------------------------------------------------------
// Command line

#[derive(Debug, Clone)]
struct Args {
    duration: Duration,
    rate: u64,
    customers: u64,
    chaos: bool,
    drain: Duration,
    kafka: Option<String>,
    pulsar: Option<String>,
    sqs: Option<String>,
    redis: Option<String>,
    quiet: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs(30),
        rate: 50,
        customers: 50,
        chaos: false,
        drain: Duration::from_secs(60),
        kafka: None,
        pulsar: None,
        sqs: None,
        redis: None,
        quiet: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value (see --help)"))
        };
        let number = |name: &str, v: String| {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n > 0.0)
                .ok_or_else(|| format!("{name} wants a positive number, not {v:?}"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                use std::io::Write as _;
                let _ = writeln!(std::io::stdout(), "{HELP}"); // a closed pipe (| head) is fine
                std::process::exit(0);
            }
            "--duration" => {
                args.duration = Duration::from_secs_f64(number("--duration", value("--duration")?)?)
            }
            "--drain" => {
                args.drain = Duration::from_secs_f64(number("--drain", value("--drain")?)?)
            }
            "--rate" => args.rate = number("--rate", value("--rate")?)?.round().max(1.0) as u64,
            "--customers" => {
                args.customers = number("--customers", value("--customers")?)?
                    .round()
                    .max(1.0) as u64
            }
            "--chaos" => args.chaos = true,
            "--quiet" => args.quiet = true,
            "--kafka" => args.kafka = Some(value("--kafka")?),
            "--pulsar" => args.pulsar = Some(value("--pulsar")?),
            "--sqs" => args.sqs = Some(value("--sqs")?),
            "--redis" => args.redis = Some(value("--redis")?),
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    // Bounded: the generator keeps a counter per customer and the ledgers an entry per order.
    if args.customers > 1_000_000 || args.rate > 100_000 {
        return Err("--customers is limited to 1,000,000 and --rate to 100,000".into());
    }
    Ok(args)
}

// ---------------------------------------------------------------------------------------
// Shared state: counters for the progress lines, the ledgers the summary checks.

/// What the program saw happen, stage by stage.
#[derive(Debug, Default)]
struct Counters {
    produce_queued: AtomicU64,
    produced: AtomicU64,
    produce_failed: AtomicU64,
    consumed: AtomicU64,
    redelivered: AtomicU64,
    out_of_order: AtomicU64,
    enqueued: AtomicU64,
    enqueue_duplicates: AtomicU64,
    jobs_done: AtomicU64,
    job_retries: AtomicU64,
    events: AtomicU64,
    audit_acks: AtomicU64,
    worker_b_starts: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Per-order progress of the ticket job (its steps are idempotent: a retried or re-run job
/// skips what an earlier attempt finished).
#[derive(Debug, Default, Clone)]
struct TicketProgress {
    webhook: bool,
    /// What `emit_sync` confirmed: the event id and SQS's MessageId, quoted when the event is
    /// then missing from the queue (to tell a lost event from a missed read-back).
    webhook_receipt: Option<String>,
    audit: bool,
    issued: u32,
}

#[derive(Debug)]
struct App {
    emitter: Emitter,
    audit: AuditProducer,
    counters: Counters,
    produced: Mutex<BTreeSet<u64>>,
    failed_produce: Mutex<BTreeMap<u64, String>>,
    tickets: Mutex<HashMap<u64, TicketProgress>>,
}

static APP: OnceLock<Arc<App>> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------
// The order, the job, the per-customer actor

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    order: u64,
    customer: String,
    /// 0, 1, 2, ... per customer, in the order the load generator produced them.
    seq: u64,
    seats: u32,
}

/// Issues the tickets of one order: webhook event (confirmed by SQS), then audit record
/// (acknowledged by Pulsar), then the ticket counts as issued.
#[derive(Debug, Serialize, Deserialize)]
struct IssueTickets {
    order: u64,
    customer: String,
    seats: u32,
}

impl Job for IssueTickets {
    const NAME: &'static str = "issue_tickets";

    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        let app = APP.get().ok_or("the showcase is not initialised")?;
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
            let sent = app.emitter.emit_sync(event).await?;
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
            app.audit.produce(record).await?;
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

/// One actor per customer: checks that the customer's orders arrive in order, skips
/// redeliveries, and enqueues one ticket job per accepted order.
#[derive(Debug)]
struct Customers {
    jobs: Jobs,
}

/// A customer's state, owned by its actor (no lock).
#[derive(Debug, Default)]
struct Customer {
    next_seq: u64,
    accepted: u64,
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
        let Some(app) = APP.get() else {
            return Err("the showcase is not initialised".into());
        };
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
        match self.jobs.enqueue(PARTITION, QUEUE, &job).await {
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

// ---------------------------------------------------------------------------------------
// Brokers

struct Brokers {
    kafka: String,
    pulsar: String,
    sqs: String,
    redis: String,
    tansu: Option<Arc<wharf_testkit::Tansu>>,
    pulsar_lite: Option<Arc<wharf_testkit::PulsarLite>>,
    moto: Option<Arc<wharf_testkit::Moto>>,
    _redis_server: Option<wharf_testkit::RedisServer>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> wharf_testkit::Result<T> + Send + 'static,
) -> Result<T, BoxError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

async fn start_brokers(args: &Args) -> Result<Brokers, BoxError> {
    // Started in parallel; each is None when an address was given.
    let tansu = args
        .kafka
        .is_none()
        .then(|| blocking(wharf_testkit::Tansu::start_behind_proxy));
    let pulsar = args
        .pulsar
        .is_none()
        .then(|| blocking(wharf_testkit::PulsarLite::start));
    let moto = args
        .sqs
        .is_none()
        .then(|| blocking(wharf_testkit::Moto::start_behind_proxy));
    let redis = args
        .redis
        .is_none()
        .then(|| blocking(wharf_testkit::RedisServer::start));
    let (tansu, pulsar, moto, redis) = tokio::join!(
        async move {
            match tansu {
                Some(f) => f.await.map(Some),
                None => Ok(None),
            }
        },
        async move {
            match pulsar {
                Some(f) => f.await.map(Some),
                None => Ok(None),
            }
        },
        async move {
            match moto {
                Some(f) => f.await.map(Some),
                None => Ok(None),
            }
        },
        async move {
            match redis {
                Some(f) => f.await.map(Some),
                None => Ok(None),
            }
        },
    );
    let hint = "(run scripts/install, or give its address: see --help)";
    let tansu = tansu.map_err(|e| format!("could not start Tansu (Kafka): {e} {hint}"))?;
    let pulsar = pulsar.map_err(|e| format!("could not start pulsar-lite: {e} {hint}"))?;
    let moto = moto.map_err(|e| format!("could not start moto (SQS): {e} {hint}"))?;
    let redis = redis.map_err(|e| format!("could not start redis-server: {e} {hint}"))?;
    let (tansu, pulsar, moto) = (
        tansu.map(Arc::new),
        pulsar.map(Arc::new),
        moto.map(Arc::new),
    );
    Ok(Brokers {
        kafka: args
            .kafka
            .clone()
            .or_else(|| tansu.as_ref().map(|t| t.bootstrap_servers()))
            .unwrap_or_default(),
        pulsar: args
            .pulsar
            .clone()
            .or_else(|| pulsar.as_ref().map(|p| p.url()))
            .unwrap_or_default(),
        sqs: args
            .sqs
            .clone()
            .or_else(|| moto.as_ref().map(|m| m.endpoint()))
            .unwrap_or_default(),
        redis: args
            .redis
            .clone()
            .or_else(|| redis.as_ref().map(|r| r.url()))
            .unwrap_or_default(),
        tansu,
        pulsar_lite: pulsar,
        moto,
        _redis_server: redis,
    })
}

fn sqs_client(endpoint: &str, external: bool) -> aws_sdk_sqs::Client {
    let env = |k: &str, d: &str| {
        if external {
            std::env::var(k).unwrap_or_else(|_| d.to_owned())
        } else {
            d.to_owned()
        }
    };
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::new()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new(env(
                "AWS_REGION",
                "us-east-1",
            )))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                env("AWS_ACCESS_KEY_ID", "test"),
                env("AWS_SECRET_ACCESS_KEY", "test"),
                None,
                None,
                "showcase",
            ))
            .build(),
    )
}

// ---------------------------------------------------------------------------------------
// Faults

#[derive(Debug, Clone)]
struct FaultReport {
    what: String,
    at: f64,
    outage: f64,
    /// Seconds from the end of the outage until the affected stage made progress again.
    recovered: Option<f64>,
    note: String,
}

/// Waits until `counter` moves past its value now; answers the seconds it took.
async fn progress_after(counter: impl Fn() -> u64, limit: Duration) -> Option<f64> {
    let base = counter();
    let since = Instant::now();
    while since.elapsed() < limit {
        if counter() > base {
            return Some(since.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

struct Chaos {
    start: Instant,
    duration: Duration,
    tansu: Option<Arc<wharf_testkit::Tansu>>,
    pulsar: Option<Arc<wharf_testkit::PulsarLite>>,
    moto: Option<Arc<wharf_testkit::Moto>>,
    kill_worker: Arc<tokio::sync::Notify>,
    app: Arc<App>,
    reports: Arc<Mutex<Vec<FaultReport>>>,
}

impl Chaos {
    async fn wait_until(&self, fraction: f64) {
        let at = self.start + self.duration.mul_f64(fraction);
        tokio::time::sleep_until(at.into()).await;
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn report(&self, r: FaultReport) {
        println!(
            "  chaos: {} at {:.1} s, outage {:.1} s, {}",
            r.what,
            r.at,
            r.outage,
            r.recovered.map_or("NOT recovered".to_owned(), |s| format!(
                "recovered {s:.2} s after"
            ))
        );
        lock(&self.reports).push(r);
    }

    async fn run(self) {
        let outage = self
            .duration
            .mul_f64(0.12)
            .clamp(Duration::from_secs(1), Duration::from_secs(4));
        let limit = Duration::from_secs(60);
        let c = &self.app.counters;

        // 1. Kafka: every connection through the proxy cut, new ones refused (once orders
        //    flow: the consumer group's first join takes a few seconds).
        self.wait_until(0.15).await;
        let flowing = Instant::now();
        while get(&c.consumed) == 0 && flowing.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(proxy) = self.tansu.as_ref().and_then(|t| t.proxy()) {
            let at = self.now();
            println!(
                "  chaos: cutting every Kafka connection for {:.1} s",
                outage.as_secs_f64()
            );
            let down = proxy.down();
            tokio::time::sleep(outage).await;
            let up = proxy.restore();
            let recovered = progress_after(|| get(&c.consumed), limit).await;
            self.report(FaultReport {
                what: "Kafka connection cut (fault proxy)".into(),
                at,
                outage: self.now() - at - recovered.unwrap_or(0.0),
                recovered,
                note: match (down, up) {
                    (Ok(()), Ok(())) => "orders consumed again".into(),
                    (down, up) => format!("the fault proxy failed: {down:?} / {up:?}"),
                },
            });
        } else {
            println!("  chaos: Kafka fault skipped (an external Kafka was given)");
        }

        // 2. Pulsar: the broker is killed (SIGKILL) and restarted on the same port.
        self.wait_until(0.35).await;
        if let Some(broker) = self.pulsar.clone() {
            let at = self.now();
            println!(
                "  chaos: killing the Pulsar broker, restarting it after {:.1} s",
                outage.as_secs_f64()
            );
            let restarted = tokio::task::spawn_blocking(move || {
                broker.kill()?;
                std::thread::sleep(outage);
                broker.restart()
            })
            .await;
            let ok = matches!(restarted, Ok(Ok(())));
            let down_for = self.now() - at;
            let recovered = progress_after(|| get(&c.audit_acks), limit).await;
            self.report(FaultReport {
                what: "Pulsar broker killed and restarted".into(),
                at,
                outage: down_for,
                recovered,
                note: if ok {
                    "audit records acknowledged again".into()
                } else {
                    format!("restart failed: {restarted:?}")
                },
            });
        } else {
            println!("  chaos: Pulsar fault skipped (an external Pulsar was given)");
        }

        // 3. SQS: unreachable (connections cut and refused) for a while.
        self.wait_until(0.55).await;
        if let Some(proxy) = self.moto.as_ref().and_then(|m| m.proxy()) {
            let at = self.now();
            println!("  chaos: SQS unreachable for {:.1} s", outage.as_secs_f64());
            let _ = proxy.down();
            tokio::time::sleep(outage).await;
            let _ = proxy.restore();
            let recovered = progress_after(|| get(&c.events), limit).await;
            self.report(FaultReport {
                what: "SQS unreachable (fault proxy)".into(),
                at,
                outage: outage.as_secs_f64(),
                recovered,
                note: "webhook events confirmed again".into(),
            });
        } else {
            println!("  chaos: SQS fault skipped (an external SQS was given)");
        }

        // 4. A job worker dies: its running jobs are aborted, its supervisor restarts it.
        self.wait_until(0.75).await;
        let at = self.now();
        let starts = get(&c.worker_b_starts);
        println!("  chaos: killing job worker worker-b (running jobs aborted)");
        self.kill_worker.notify_one();
        let recovered = progress_after(
            || u64::from(get(&c.worker_b_starts) > starts) * get(&c.jobs_done),
            limit,
        )
        .await;
        self.report(FaultReport {
            what: "job worker worker-b killed".into(),
            at,
            outage: 0.0,
            recovered,
            note: "restarted by its supervisor; aborted jobs ran again".into(),
        });
    }
}

// ---------------------------------------------------------------------------------------
// Main

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
    tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "error,librdkafka=off,pulsar=off".into()),
        )
        .init();
    let t0 = Instant::now();
    println!(
        "wharf showcase: {:.0} s of orders at {}/s from {} customers{}",
        args.duration.as_secs_f64(),
        args.rate,
        args.customers,
        if args.chaos { ", with chaos" } else { "" }
    );
    let brokers = start_brokers(&args).await?;
    println!(
        "brokers ({:.1} s): Kafka {}  Pulsar {}  SQS {}  Redis {}",
        t0.elapsed().as_secs_f64(),
        brokers.kafka,
        brokers.pulsar,
        brokers.sqs,
        brokers.redis
    );

    let run_id = format!("{}-{}", std::process::id(), t0.elapsed().subsec_nanos());
    let orders_topic = format!("showcase-orders-{run_id}");
    let dead_topic = format!("showcase-orders-dead-{run_id}");
    let audit_topic = format!("persistent://public/default/showcase-audit-{run_id}");

    // --- clients -------------------------------------------------------------------------
    let kafka =
        KafkaWrapper::start(KafkaConfig::new(&brokers.kafka).set("session.timeout.ms", "6000"))
            .await?;
    kafka
        .admin()
        .ensure_topics(&[
            TopicSpec::new(&orders_topic, ORDER_PARTITIONS),
            TopicSpec::new(&dead_topic, 1),
        ])
        .await?;

    let sqs = sqs_client(&brokers.sqs, args.sqs.is_some());
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("showcase-webhooks-{run_id}"))
        .send()
        .await
        .map_err(|e| format!("CreateQueue at {} failed: {e:?}", brokers.sqs))?
        .queue_url()
        .ok_or("CreateQueue returned no queue URL")?
        .to_owned();
    let emitter = Emitter::builder()
        .client(sqs.clone())
        .queue_url(&queue_url)
        .full_policy(FullPolicy::Wait(Duration::from_secs(10)))
        .request_timeout(Duration::from_secs(2))
        .sync_timeout(Duration::from_secs(5))
        .build()?;

    let (audit, audit_spec) = AuditProducer::builder(&brokers.pulsar, &audit_topic)
        .producer_name(format!("showcase-audit-{run_id}"))
        .send_timeout(Duration::from_secs(30))
        .window(1000)
        .on_reconnect(OnReconnect::Resend)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1))
        .supervised("audit")?;
    // Subscribe the read-back consumer before anything is produced.
    let pulsar_client = pulsar::Pulsar::builder(&brokers.pulsar, pulsar::TokioExecutor)
        .build()
        .await
        .map_err(|e| format!("Pulsar client for the read-back at {}: {e}", brokers.pulsar))?;

    // A 5 s lease must cover the lease margin (1 s), one heartbeat that times out and two
    // heartbeat intervals: a 2 s response timeout leaves room (the default 5 s would not).
    let jobs =
        Jobs::connect(JobsConfig::new(&brokers.redis).response_timeout(Duration::from_secs(2)))
            .await?;
    jobs.purge(PARTITION, QUEUE).await?;

    let app = Arc::new(App {
        emitter: emitter.clone(),
        audit: audit.clone(),
        counters: Counters::default(),
        produced: Mutex::default(),
        failed_produce: Mutex::default(),
        tickets: Mutex::default(),
    });
    APP.set(app.clone())
        .map_err(|_| "the showcase ran twice in one process")?;

    // --- the supervision tree --------------------------------------------------------------
    let registry = || Registry::new().register::<IssueTickets>();
    let worker_a = Worker::builder(jobs.clone(), registry())
        .queue(PARTITION, QUEUE, 32)
        .lease(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(50))
        .build()?;
    let worker_b = Worker::builder(jobs.clone(), registry())
        .queue(PARTITION, QUEUE, 32)
        .lease(Duration::from_secs(5))
        .poll_interval(Duration::from_millis(50))
        .shutdown_grace(Duration::ZERO) // a kill aborts its running jobs at once
        .build()?;
    let kill_worker = Arc::new(tokio::sync::Notify::new());
    let worker_b_spec = {
        let (kill, app) = (kill_worker.clone(), app.clone());
        ChildSpec::new("worker-b", move |ctx| {
            let (worker, kill, app) = (worker_b.clone(), kill.clone(), app.clone());
            async move {
                bump(&app.counters.worker_b_starts);
                let handle = worker.start();
                Ok::<_, BoxError>(Started::task(async move {
                    tokio::select! {
                        _ = ctx.cancelled() => { handle.shutdown().await; Ok(()) }
                        _ = kill.notified() => {
                            handle.shutdown().await; // grace 0: running jobs aborted
                            Err::<(), BoxError>("killed by --chaos".into())
                        }
                    }
                }))
            }
        })
        .restart(Restart::Permanent)
    };
    let tickets = Supervisor::builder("tickets")
        .strategy(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(10))
        .backoff(Backoff::exponential(
            Duration::from_millis(200),
            Duration::from_secs(2),
        ))
        .child(worker_a.child_spec("worker-a"))
        .child(worker_b_spec)
        .into_child_spec();

    let dead_letters = kafka.add_producer(ProducerSpec::new("dead-letters"))?;
    let customers = ShardedConsumer::builder("orders", Customers { jobs: jobs.clone() })
        .dead_letter(dead_letters.publisher(&dead_topic))
        .retry(RetryPolicy::new(
            60,
            Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2)),
        ))
        .idle_timeout(None)
        .build()?;
    let orders_spec = {
        let (kafka, topic, group) = (
            kafka.clone(),
            orders_topic.clone(),
            format!("showcase-{run_id}"),
        );
        customers
            .child_spec("orders", move || {
                let spec = ConsumerSpec::group(
                    "orders-in",
                    group.clone(),
                    [topic.clone()],
                    KafkaHandler::per_message(|_| async { KafkaOutcome::Ack }),
                )
                // Many customers of one partition at once; each customer stays in order.
                .in_flight_per_partition(256);
                let kafka = kafka.clone();
                async move { kafka.add_source(spec, 1024) }
            })
            .shutdown(Shutdown::Timeout(Duration::from_secs(10)))
    };

    // On shutdown the producer stops taking messages and drains its window within the grace.
    let audit_spec = audit_spec.shutdown(Shutdown::Timeout(Duration::from_secs(35)));

    let shop = kafka.add_producer(ProducerSpec::new("shop"))?;
    let load_spec = {
        let (app, shop, topic, args) = (
            app.clone(),
            shop.clone(),
            orders_topic.clone(),
            args.clone(),
        );
        ChildSpec::new("load", move |ctx| {
            let (app, shop, topic, args) = (app.clone(), shop.clone(), topic.clone(), args.clone());
            async move {
                Ok::<_, BoxError>(Started::task(async move {
                    tokio::select! {
                        _ = ctx.cancelled() => Ok(()),
                        r = generate(app, shop, topic, args) => r,
                    }
                }))
            }
        })
        .restart(Restart::Temporary)
    };

    // The SQS read-back runs beside the showcase (outside the tree: it is the test's eyes).
    let sqs_seen: Arc<Mutex<SqsSeen>> = Arc::default();
    let sqs_finish = Arc::new(tokio::sync::watch::channel(None).0);
    // It talks to moto directly, not through the fault proxy: a response lost in a cut would
    // hide its messages (received, so invisible) from the read-back.
    let reader_client = match brokers.moto.as_ref() {
        Some(moto) => sqs_client(&format!("http://{}", moto.direct_addr()), false),
        None => sqs.clone(),
    };
    // Three readers: moto serves a ReceiveMessage slowly, and the queue must not pile up.
    let mut sqs_readers = tokio::task::JoinSet::new();
    for _ in 0..3 {
        sqs_readers.spawn(read_sqs(
            reader_client.clone(),
            queue_url.clone(),
            sqs_seen.clone(),
            sqs_finish.clone(),
        ));
    }

    let tree = Supervisor::builder("showcase")
        .strategy(Strategy::OneForOne)
        .intensity(10, Duration::from_secs(10))
        .backoff(Backoff::exponential(
            Duration::from_millis(100),
            Duration::from_secs(2),
        ))
        .child(
            kafka
                .child_spec("kafka")
                .shutdown(Shutdown::Timeout(Duration::from_secs(15))),
        )
        .child(emitter.child_spec("webhooks"))
        .child(audit_spec)
        .child(tickets)
        .child(orders_spec)
        .child(load_spec)
        .start()
        .await?;
    let load_start = Instant::now();
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
                kill_worker: kill_worker.clone(),
                app: app.clone(),
                reports: faults.clone(),
            }
            .run(),
        )
    });

    let c = &app.counters;
    let mut last = (0u64, 0u64, Instant::now());
    let mut print_progress = |label: &str| {
        let (orders, jobs_done) = (get(&c.produced), get(&c.jobs_done));
        let dt = last.2.elapsed().as_secs_f64().max(0.001);
        if !args.quiet {
            println!(
                "[{:>5.1}s] {label:<5} orders in {:>6} ({:>4.0}/s) | consumed {:>6} | jobs done {:>6} ({:>4.0}/s) | events {:>6} | audit acks {:>6} | SQS read {:>6}",
                load_start.elapsed().as_secs_f64(),
                orders,
                (orders - last.0) as f64 / dt,
                get(&c.consumed),
                jobs_done,
                (jobs_done - last.1) as f64 / dt,
                get(&c.events),
                get(&c.audit_acks),
                lock(&sqs_seen).per_order.len(),
            );
        }
        last = (orders, jobs_done, Instant::now());
    };
    while load_start.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        print_progress("load");
    }
    if let Some(chaos) = chaos {
        let _ = chaos.await;
    }

    // Drain: wait until every produced order has its ticket (bounded by --drain).
    let drain_start = Instant::now();
    let mut tick = Instant::now();
    loop {
        let queued = get(&c.produce_queued);
        let settled = get(&c.produced) + get(&c.produce_failed);
        let all_done = settled >= queued && {
            let produced = lock(&app.produced);
            let tickets = lock(&app.tickets);
            produced
                .iter()
                .all(|o| tickets.get(o).is_some_and(|t| t.issued > 0))
        };
        if all_done || drain_start.elapsed() > args.drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tick.elapsed() >= Duration::from_secs(1) {
            print_progress("drain");
            tick = Instant::now();
        }
    }
    print_progress("done");
    let drained_in = drain_start.elapsed();
    let snapshot = tree.snapshot().await.ok();
    let stopping = Instant::now();
    shutdown_tree(&tree).await;
    let stopped_in = stopping.elapsed();

    // --- read back -------------------------------------------------------------------------
    let produced: BTreeSet<u64> = lock(&app.produced).clone();
    let expected = produced.len();
    let reading = Instant::now();
    sqs_finish.send_replace(Some(expected));
    while sqs_readers.join_next().await.is_some() {}
    let sqs_seen = std::mem::take(&mut lock(&sqs_seen).per_order);
    let sqs_read_in = reading.elapsed();
    let audit_seen = read_pulsar(&pulsar_client, &audit_topic, expected).await?;
    let pulsar_read_in = reading.elapsed() - sqs_read_in;
    let ledger = lock(&app.tickets).clone();

    // --- summary ---------------------------------------------------------------------------
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
    let jc = jobs.counts(PARTITION, QUEUE).await.ok();

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
    let faults = lock(&faults).clone();
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
    drop(brokers);
    Ok(lost.len() as u64 + u64::from(!faults_recovered) + u64::from(expected == 0))
}

/// Produces orders at `args.rate` for `args.duration`, keyed by customer.
async fn generate(
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

async fn shutdown_tree(tree: &SupervisorHandle) {
    match tokio::time::timeout(Duration::from_secs(60), tree.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("showcase: the tree's shutdown reported: {e}"),
        Err(_) => eprintln!("showcase: the tree did not shut down within 60 s"),
    }
}

/// What the SQS read-back found: distinct envelope ids, and events per order.
#[derive(Debug, Default)]
struct SqsSeen {
    ids: HashSet<String>,
    per_order: HashMap<u64, u32>,
}

/// Reads the webhook queue back while the showcase runs (and deletes what it read, which
/// keeps moto fast), until `finish` fires and then everything expected is in or the queue
/// stays empty for a while. Errors (SQS unreachable during --chaos) are retried.
async fn read_sqs(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    seen: Arc<Mutex<SqsSeen>>,
    finish: Arc<tokio::sync::watch::Sender<Option<usize>>>,
) {
    let mut finishing = finish.subscribe();
    let mut empty_after_finish = 0;
    let mut deadline = None;
    loop {
        let expected = *finishing.borrow_and_update();
        if let Some(expected) = expected {
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(60));
            let complete = lock(&seen).per_order.len() >= expected;
            if Instant::now() > deadline || empty_after_finish >= if complete { 2 } else { 90 } {
                return;
            }
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            sqs.receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(10)
                // Not deleted in time (a lost response): visible again for the final pass.
                .visibility_timeout(20)
                .wait_time_seconds(0)
                .send(),
        )
        .await;
        let Ok(Ok(resp)) = resp else {
            tokio::time::sleep(Duration::from_millis(500)).await; // SQS away: try again
            continue;
        };
        if resp.messages().is_empty() {
            if expected.is_some() {
                empty_after_finish += 1;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = finishing.changed() => {}
            }
            continue;
        }
        empty_after_finish = 0;
        let mut delete = sqs.delete_message_batch().queue_url(&queue_url);
        {
            let mut seen = lock(&seen);
            for (n, m) in resp.messages().iter().enumerate() {
                let body: serde_json::Value =
                    serde_json::from_str(m.body().unwrap_or("{}")).unwrap_or_default();
                let event_id = body["id"].as_str().unwrap_or_default().to_owned();
                // The same event delivered twice by SQS is not a second event.
                if seen.ids.insert(event_id)
                    && let Some(order) = body["data"]["order"].as_u64()
                {
                    *seen.per_order.entry(order).or_default() += 1;
                }
                let entry = aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .set_receipt_handle(m.receipt_handle().map(str::to_owned))
                    .build();
                if let Ok(entry) = entry {
                    delete = delete.entries(entry);
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), delete.send()).await;
    }
}

/// Reads the audit topic back from its beginning: how many records each order got.
async fn read_pulsar(
    client: &pulsar::Pulsar<pulsar::TokioExecutor>,
    topic: &str,
    expected: usize,
) -> Result<HashMap<u64, u32>, BoxError> {
    use pulsar::consumer::{ConsumerOptions, InitialPosition};
    let mut consumer: pulsar::Consumer<Vec<u8>, pulsar::TokioExecutor> = tokio::time::timeout(
        Duration::from_secs(20),
        client
            .consumer()
            .with_topic(topic)
            .with_subscription(format!("showcase-readback-{}", std::process::id()))
            .with_subscription_type(pulsar::SubType::Exclusive)
            .with_options(
                ConsumerOptions::default().with_initial_position(InitialPosition::Earliest),
            )
            .build(),
    )
    .await
    .map_err(|_| "subscribing to the audit topic timed out")?
    .map_err(|e| format!("subscribing to the audit topic failed: {e}"))?;
    let mut per_order: HashMap<u64, u32> = HashMap::new();
    let mut records = 0usize;
    loop {
        let wait = if per_order.len() >= expected { 1 } else { 5 };
        let next = match tokio::time::timeout(Duration::from_secs(wait), consumer.try_next()).await
        {
            Err(_) => break, // quiet for `wait` seconds: the topic is read
            Ok(Err(e)) => return Err(format!("reading the audit topic failed: {e}").into()),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(m))) => m,
        };
        records += 1;
        let body: serde_json::Value = serde_json::from_slice(&next.payload.data)?;
        if let Some(order) = body["order"].as_u64() {
            *per_order.entry(order).or_default() += 1;
        }
        let _ = consumer.ack(&next).await;
        if records > expected * 3 + 1000 {
            break; // bounded
        }
    }
    let _ = consumer.close().await;
    Ok(per_order)
}

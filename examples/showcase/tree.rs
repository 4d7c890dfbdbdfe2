//! The supervision tree: the Kafka wrapper, the webhook emitter, the audit producer, the
//! ticket workers under their own supervisor, the per-customer consumer and the load
//! generator, each with its restart and shutdown settings.

use std::sync::Arc;
use std::time::Duration;

use wharf::core::Backoff;
use wharf::core::supervisor::{
    ChildSpec, Restart, Shutdown, Started, Strategy, Supervisor, SupervisorHandle,
};
use wharf::job_partition::{Registry, Worker};
use wharf::kafka_wrapper::{
    ConsumerSpec, Handler as KafkaHandler, Outcome as KafkaOutcome, ProducerSpec,
};
use wharf::sharded_consumer::{RetryPolicy, ShardedConsumer};

use crate::app::{App, bump};
use crate::cli::Args;
use crate::clients::{Clients, Names};
use crate::customers::Customers;
use crate::load::generate;
use crate::tickets::IssueTickets;
use crate::{BoxError, PARTITION, QUEUE};

/// The tree's children, built and not started; and the switch `--chaos` kills worker-b with.
pub(crate) struct Tree {
    children: Vec<ChildSpec>,
    pub(crate) kill_worker: Arc<tokio::sync::Notify>,
}

/// A producer's spec. With `--chaos` on the showcase's own Kafka (Tansu), which the chaos kills
/// and restarts, it takes the settings Tansu 0.6 needs to keep every record it acknowledged
/// across a crash (`wharf_testkit::Tansu::CRASH_SAFE_PRODUCER`: idempotence off, one request
/// in flight, so a retry is stored again rather than acknowledged and dropped); the customer
/// actors skip the duplicates a retry can make. Otherwise the wrapper's defaults.
fn producer_spec(args: &Args, name: &str) -> ProducerSpec {
    let spec = ProducerSpec::new(name);
    if args.chaos && args.kafka.is_none() {
        wharf_testkit::Tansu::CRASH_SAFE_PRODUCER
            .iter()
            .fold(spec, |spec, (k, v)| spec.set(*k, *v))
    } else {
        spec
    }
}

impl Tree {
    pub(crate) fn build(
        args: &Args,
        names: &Names,
        clients: &Clients,
        audit_spec: ChildSpec,
        app: &Arc<App>,
    ) -> Result<Self, BoxError> {
        let jobs = &clients.jobs;
        let kafka = &clients.kafka;
        let (run_id, orders_topic, dead_topic) =
            (&names.run_id, &names.orders_topic, &names.dead_topic);
        // Each job gets the application (emitter, producer, counters) as its state.
        let registry = || Registry::with_shared_state(app.clone()).register::<IssueTickets>();
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

        let dead_letters = kafka.add_producer(producer_spec(args, "dead-letters"))?;
        let customers = ShardedConsumer::builder(
            "orders",
            Customers {
                jobs: jobs.clone(),
                app: app.clone(),
            },
        )
        .dead_letter(dead_letters.publisher(dead_topic))
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

        let shop = kafka.add_producer(producer_spec(args, "shop"))?;
        let load_spec = {
            let (app, shop, topic, args) = (
                app.clone(),
                shop.clone(),
                orders_topic.clone(),
                args.clone(),
            );
            ChildSpec::new("load", move |ctx| {
                let (app, shop, topic, args) =
                    (app.clone(), shop.clone(), topic.clone(), args.clone());
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

        let children = vec![
            kafka
                .child_spec("kafka")
                .shutdown(Shutdown::Timeout(Duration::from_secs(15))),
            clients.emitter.child_spec("webhooks"),
            audit_spec,
            tickets,
            orders_spec,
            load_spec,
        ];
        Ok(Self {
            children,
            kill_worker,
        })
    }

    /// Starts the tree (one_for_one).
    pub(crate) async fn start(self) -> Result<SupervisorHandle, BoxError> {
        let mut tree = Supervisor::builder("showcase")
            .strategy(Strategy::OneForOne)
            .intensity(10, Duration::from_secs(10))
            .backoff(Backoff::exponential(
                Duration::from_millis(100),
                Duration::from_secs(2),
            ));
        for child in self.children {
            tree = tree.child(child);
        }
        Ok(tree.start().await?)
    }
}

/// Shuts the tree down, within 60 s.
pub(crate) async fn shutdown_tree(tree: &SupervisorHandle) {
    match tokio::time::timeout(Duration::from_secs(60), tree.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("showcase: the tree's shutdown reported: {e}"),
        Err(_) => eprintln!("showcase: the tree did not shut down within 60 s"),
    }
}

//! A group of two wrapper consumers on a durable Tansu (its data in S3 on moto) while the
//! broker is killed with SIGKILL and restarted on the same port again and again, at random
//! moments (seeded; the seed is printed, replay it with `WHARF_NEMESIS_SEED`; the number of
//! kills is `WHARF_BROKER_KILLS`, else 5 for the test `cargo test` runs and 20 for the
//! ignored one): after every restart the group consumes again. The producer sends a record
//! every 20 ms (plus its round trip) in both.
//!
//! How the members are set up matters on Tansu 0.6, whose group coordinator has a defect:
//! - With a session and a rebuild judgement longer than the broker's outages (30 s here, the
//!   crate's default rebuild judgement), the members keep their place in the group across
//!   each kill. Seed 7 with 20 kills: the group consumed again after each (see
//!   docs/RELIABILITY.md, "Nemesis runs", for the figures).
//! - With a 6 s session and a rebuild after 3 s, every kill replaces the members (new
//!   clients, new member ids), and now and then the group stops: in a probe under seed 7 it
//!   stopped after the 11th kill and, for the 60 s the probe waited, every JoinGroup answer
//!   named as the group's leader a member id whose client had left the group 1 s before;
//!   the two live members, followers both, looped JoinGroup, SyncGroup,
//!   `REBALANCE_IN_PROGRESS` and were given no partition. Tansu's coordinator has no timer
//!   and sets a leader only when there is none (docs/RELIABILITY.md, "Nemesis runs"). The
//!   test of that setup is `#[ignore]`d: it fails in some runs while Tansu has the defect
//!   (seed 7 stopped after the 9th kill in one run; with a record every 100 ms the same seed
//!   passed 20 of 20).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wharf_kafka_wrapper::{
    ConsumerSpec, Handler, KafkaConfig, KafkaWrapper, Outcome, ProducerSpec, Record,
};
use wharf_testkit::{Tansu, eventually, nemesis, unique_name};

/// How long the group may take to consume again after a restart: a rejoin (Tansu holds a
/// follower's join 3 s), a session timeout's worth of waiting for a member the broker
/// still counts, and a loaded machine.
const RESUME_WITHIN: Duration = Duration::from_secs(60);
/// Records the group must handle after a restart to count as consuming again.
const RESUMED_BY: u64 = 20;
/// The producer's pause between records, as when the coordinator's defect was seen.
const PACE: Duration = Duration::from_millis(20);
/// How long each wrapper may take to shut down at the end (its grace and more).
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_members_keep_their_place_resumes_after_every_broker_kill() {
    let config = |brokers: &str| {
        common::config(brokers)
            .set("session.timeout.ms", "30000")
            .unreachable_after(Duration::from_secs(30))
    };
    kill_the_broker_under_a_group(config, kills(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails in some runs on Tansu 0.6: its group coordinator can keep naming a departed \
            member as the leader, and the group gets no assignment (see the file's docs)"]
async fn a_group_whose_members_are_replaced_at_each_kill_resumes_after_every_broker_kill() {
    let config = |brokers: &str| common::config(brokers).unreachable_after(Duration::from_secs(3));
    kill_the_broker_under_a_group(config, kills(20)).await;
}

/// How many kills a test makes: `WHARF_BROKER_KILLS`, else `default`.
fn kills(default: usize) -> usize {
    std::env::var("WHARF_BROKER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Two group members and a producer (settings from `config`, a record every [`PACE`] plus
/// its round trip); `rounds` times: the broker runs 1 to 8 s, is killed, stays down 0.2 to 5 s,
/// is restarted, and the group must handle [`RESUMED_BY`] more records within
/// [`RESUME_WITHIN`].
async fn kill_the_broker_under_a_group(config: impl Fn(&str) -> KafkaConfig, rounds: usize) {
    common::trace();
    let seed = nemesis::seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let kafka = Arc::new(
        tokio::task::spawn_blocking(Tansu::start_durable)
            .await
            .unwrap()
            .unwrap(),
    );
    let brokers = kafka.bootstrap_servers();
    let topic = unique_name("kills");
    let group = unique_name("kills-group");
    common::wrapper_with_topic(&brokers, &topic, 4)
        .await
        .shutdown()
        .await
        .unwrap();

    let handled = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::new();
    for name in ["consumer-a", "consumer-b"] {
        let w = KafkaWrapper::start(config(&brokers)).await.unwrap();
        let h = Arc::clone(&handled);
        w.add_consumer(ConsumerSpec::group(
            name,
            &group,
            [topic.clone()],
            Handler::per_message(move |_m| {
                let h = Arc::clone(&h);
                async move {
                    h.fetch_add(1, Ordering::Relaxed);
                    Outcome::Ack
                }
            }),
        ))
        .unwrap();
        consumers.push(w);
    }

    let producer_wrapper = KafkaWrapper::start(config(&brokers)).await.unwrap();
    let producer = producer_wrapper
        .add_producer(
            Tansu::CRASH_SAFE_PRODUCER
                .iter()
                .fold(ProducerSpec::new("producer"), |s, (k, v)| s.set(*k, *v))
                .set("message.timeout.ms", "10000")
                .queue_timeout(Duration::from_secs(10)),
        )
        .unwrap();
    let producing = Arc::new(AtomicBool::new(true));
    let production = {
        let (producing, topic) = (Arc::clone(&producing), topic.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while producing.load(Ordering::Relaxed) {
                n += 1;
                let record = Record::new(&topic, format!("m{n}")).key(format!("k{}", n % 16));
                // Outcomes do not matter here: only whether the group consumes.
                let _ = tokio::time::timeout(Duration::from_secs(20), producer.send(record)).await;
                // A long run fills partitions past the 1,000 records or so that Tansu's S3
                // store serves quickly (`nemesis.rs`, `RECORDS_PER_PRODUCER`); the group
                // need only handle `RESUMED_BY` records after each restart, which a slow
                // fetch still gives.
                tokio::time::sleep(PACE).await;
            }
        })
    };

    let mut stuck = None;
    for round in 0..rounds {
        // The broker runs for a random while, then dies at that random moment.
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..8000))).await;
        let k = Arc::clone(&kafka);
        tokio::task::spawn_blocking(move || k.kill())
            .await
            .unwrap()
            .unwrap();
        let down = Duration::from_millis(rng.random_range(200..5000));
        tokio::time::sleep(down).await;
        let k = Arc::clone(&kafka);
        tokio::task::spawn_blocking(move || k.restart())
            .await
            .unwrap()
            .unwrap();
        let at = handled.load(Ordering::Relaxed);
        let resumed = eventually(
            "the group to consume again after a broker restart",
            RESUME_WITHIN,
            || async { handled.load(Ordering::Relaxed) >= at + RESUMED_BY },
        )
        .await;
        eprintln!(
            "kill {}: down {down:?}; the group {} ({} handled so far)",
            round + 1,
            if resumed.is_ok() {
                "consumes again"
            } else {
                "does not consume again"
            },
            handled.load(Ordering::Relaxed)
        );
        if resumed.is_err() {
            stuck = Some(round + 1);
            break;
        }
    }
    // The verdict first, so that a failing shutdown cannot hide it.
    let verdict = stuck.map(|kill| {
        format!(
            "the group handled fewer than {RESUMED_BY} records in the {RESUME_WITHIN:?} after \
             kill {kill} (seed {seed}; replay with WHARF_NEMESIS_SEED={seed}); broker log:\n{}",
            kafka.log_tail()
        )
    });
    producing.store(false, Ordering::Relaxed);
    let _ = tokio::time::timeout(SHUTDOWN_WITHIN, production).await;
    // A member of a group the broker lost may not close in time: not what is judged here.
    let _ = tokio::time::timeout(SHUTDOWN_WITHIN, producer_wrapper.shutdown()).await;
    for w in consumers {
        let _ = tokio::time::timeout(SHUTDOWN_WITHIN, w.shutdown()).await;
    }
    if let Some(verdict) = verdict {
        panic!("{verdict}");
    }
}

//! A link that holds bytes silently (no reset, no refusal) or a broker that answers late
//! never makes the wrapper wait longer than its own configured bounds, and its judgement of
//! the brokers does not wait for a request to fail.
//!
//! Every test runs a Tansu of its own behind wharf-testkit's fault proxy: `hold()` is the
//! silent partition, `down()` the refused connection, `set_latency` the slow broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wharf_kafka_wrapper::{
    ConsumerSpec, Error, Handler, KafkaConfig, KafkaWrapper, Outcome, ProducerSpec, Record,
    WrapperState,
};
use wharf_testkit::Tansu;

/// Scheduling on a loaded two-core machine: added to bounds derived from the configuration,
/// never a bound of its own.
const SLACK: Duration = Duration::from_secs(2);

/// How often librdkafka checks whether a group session has timed out (about once a second;
/// seen: the session of a 6 s timeout ended 6.7 s after the last heartbeat).
const SESSION_CHECK: Duration = Duration::from_secs(1);

/// How long a revoke or a stop waits for an aborted handler call to let go of its partition
/// (see `consumer/instance.rs`).
const ABORT_RELEASE: Duration = Duration::from_secs(1);

/// The consumer's fixed waits at shutdown (see `consumer/instance.rs`): for aborted
/// handlers to let go (1 s), to leave the group (2 s), for workers to let go of the client
/// (1 s).
const FIXED_STOP_WAITS: Duration = Duration::from_secs(4);

/// A Tansu of this test's own behind the fault proxy, with a new topic of `partitions`
/// partitions: (broker, bootstrap servers, topic).
async fn proxied_tansu(prefix: &str, partitions: i32) -> (Tansu, String, String) {
    let kafka = tokio::task::spawn_blocking(Tansu::start_behind_proxy)
        .await
        .unwrap()
        .unwrap();
    let brokers = kafka.bootstrap_servers();
    let topic = common::topic(prefix);
    let w = common::wrapper_with_topic(&brokers, &topic, partitions).await;
    shut_down(&w).await;
    (kafka, brokers, topic)
}

/// Shuts `w` down, failing the test if that takes a minute.
async fn shut_down(w: &KafkaWrapper) {
    tokio::time::timeout(Duration::from_secs(60), w.shutdown())
        .await
        .expect("shut down within a minute")
        .unwrap();
}

/// The payload whose first handler call never returns: a message in flight when the
/// partition is revoked or the consumer removed, which must come again.
const STUCK: &str = "stuck";

/// What the handlers of one test's consumers share.
#[derive(Clone, Default)]
struct Seen {
    /// Every payload handled (acknowledged), duplicates included.
    handled: Arc<Mutex<Vec<String>>>,
    /// Calls of the handler for [`STUCK`].
    stuck_calls: Arc<AtomicU32>,
}

impl Seen {
    fn handled(&self) -> HashSet<String> {
        self.handled.lock().unwrap().iter().cloned().collect()
    }
}

/// A group consumer that records every payload it handles into `seen`; the first call for
/// [`STUCK`] (of any consumer of the test) never returns.
fn recording_consumer(name: &str, group: &str, topic: &str, seen: &Seen) -> ConsumerSpec {
    let seen = seen.clone();
    ConsumerSpec::group(
        name,
        group,
        [topic.to_owned()],
        Handler::per_message(move |m| {
            let seen = seen.clone();
            async move {
                let payload = String::from_utf8_lossy(m.payload()).into_owned();
                if payload == STUCK && seen.stuck_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::future::pending::<()>().await;
                }
                seen.handled.lock().unwrap().push(payload);
                Outcome::Ack
            }
        }),
    )
    // Offsets are committed only by the wrapper's own commits (revoke, shutdown), the ones
    // under test.
    .set("auto.commit.interval.ms", "600000")
}

/// Sends 20 messages and then [`STUCK`], and waits until the 20 are handled and the call for
/// [`STUCK`] has begun. Returns what must be handled in the end.
async fn send_with_one_stuck(w: &KafkaWrapper, topic: &str, seen: &Seen) -> HashSet<String> {
    let mut payloads: Vec<String> = (0..20).map(|i| format!("before-{i}")).collect();
    payloads.push(STUCK.to_owned());
    send_all(w, topic, payloads.clone()).await;
    let expected: HashSet<String> = payloads.into_iter().collect();
    let mut done: HashSet<String> = expected.clone();
    done.remove(STUCK);
    wait_for_all(seen, &done, Duration::from_secs(30)).await;
    wharf_testkit::eventually("the stuck call began", Duration::from_secs(30), || async {
        seen.stuck_calls.load(Ordering::SeqCst) == 1
    })
    .await
    .unwrap();
    expected
}

async fn send_all(w: &KafkaWrapper, topic: &str, payloads: impl IntoIterator<Item = String>) {
    let p = w
        .producer("p")
        .unwrap_or_else(|| w.add_producer(ProducerSpec::new("p")).unwrap());
    for (i, payload) in payloads.into_iter().enumerate() {
        tokio::time::timeout(
            Duration::from_secs(30),
            p.send(Record::new(topic, payload).key(format!("k{i}"))),
        )
        .await
        .expect("a send within 30 s")
        .expect("delivered");
    }
}

async fn wait_for_all(seen: &Seen, expected: &HashSet<String>, within: Duration) {
    let missing = || expected.difference(&seen.handled()).count();
    let r = wharf_testkit::eventually("every message handled", within, || async { missing() == 0 })
        .await;
    assert!(
        r.is_ok(),
        "{} of {} messages never handled",
        missing(),
        expected.len()
    );
}

/// A group member cut off by a silent partition loses its session (librdkafka notices on
/// its own clock after `session.timeout.ms`) and revokes its partitions: the call in flight
/// is aborted after the grace, and the revoke's commit gets no answer. The polling thread
/// waits for it no longer than the request timeout, then publishes the empty assignment and
/// goes on; when the link heals, the member joins again and nothing is lost: the aborted
/// message comes again (the commit, whenever it landed, stopped below it), and so does
/// everything after.
///
/// Before the fix the commit was librdkafka's synchronous one: the revoke did not end for
/// over 70 s (the polling thread sat in `rd_kafka_commit`), and a rebuild or removal of the
/// consumer waited with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_under_a_silent_partition_holds_the_polling_thread_only_for_the_commit_timeout() {
    common::trace();
    let (kafka, brokers, topic) = proxied_tansu("revoke-hold", 2).await;
    let commit_timeout = Duration::from_secs(1);
    let grace = Duration::from_secs(1);
    let w = KafkaWrapper::start(
        common::config(&brokers)
            .request_timeout(commit_timeout)
            .shutdown_grace(grace)
            // No rebuild while the link is held: this test is about the member's own revoke.
            .unreachable_after(Duration::from_secs(600)),
    )
    .await
    .unwrap();
    let seen = Seen::default();
    let c = w
        .add_consumer(recording_consumer("c", &common::topic("g"), &topic, &seen))
        .unwrap();
    wharf_testkit::eventually(
        "both partitions assigned",
        Duration::from_secs(30),
        || async { c.assignment().len() == 2 },
    )
    .await
    .unwrap();
    let mut expected = send_with_one_stuck(&w, &topic, &seen).await;

    let proxy = kafka.proxy().unwrap();
    proxy.hold();
    let held = Instant::now();
    // The session ends on librdkafka's clock a session timeout after the last heartbeat
    // answered (before the hold), seen at its next check; then the revoke waits the grace for
    // the stuck call, aborts it (1 s for it to let go) and commits (the request timeout).
    let bound =
        common::SESSION_TIMEOUT + SESSION_CHECK + grace + ABORT_RELEASE + commit_timeout + SLACK;
    let revoked = wharf_testkit::eventually("the revoke to end", bound, || async {
        c.assignment().is_empty()
    })
    .await;
    assert!(
        revoked.is_ok(),
        "the revoke did not end within {bound:?} of the hold (session timeout {:?} + its check {SESSION_CHECK:?} + grace {grace:?} + abort {ABORT_RELEASE:?} + commit timeout {commit_timeout:?} + slack): the polling thread is blocked",
        common::SESSION_TIMEOUT
    );
    eprintln!("revoke ended {:?} after the hold", held.elapsed());

    proxy.release();
    wharf_testkit::eventually(
        "the member joined again",
        Duration::from_secs(60),
        || async { c.assignment().len() == 2 },
    )
    .await
    .unwrap();
    let after: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    send_all(&w, &topic, after.clone()).await;
    expected.extend(after);
    wait_for_all(&seen, &expected, Duration::from_secs(60)).await;
    assert_eq!(seen.stuck_calls.load(Ordering::SeqCst), 2);
    shut_down(&w).await;
}

/// Removing a consumer while its link holds bytes silently: its drain (a call that never
/// returns, aborted after the grace), its commit (no answer), its leave and the close of its
/// client are each bounded, so the removal returns within the consumer's stop bound; the
/// client goes on closing in the background. Nothing is lost: a new member of the group
/// handles the aborted message (the commit, whenever it landed, stopped below it) and
/// everything after.
///
/// Before the fix the removal did not return at all (the commit waited, then closing the
/// client waited for librdkafka to settle the commit with a coordinator it could not reach).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_consumer_during_a_silent_partition_returns_within_its_stop_bound() {
    common::trace();
    let (kafka, brokers, topic) = proxied_tansu("remove-hold", 2).await;
    let request_timeout = Duration::from_secs(1);
    let grace = Duration::from_secs(1);
    let w = KafkaWrapper::start(
        common::config(&brokers)
            .request_timeout(request_timeout)
            .shutdown_grace(grace)
            .unreachable_after(Duration::from_secs(600)),
    )
    .await
    .unwrap();
    let group = common::topic("g");
    let seen = Seen::default();
    let c = w
        .add_consumer(recording_consumer("c", &group, &topic, &seen))
        .unwrap();
    wharf_testkit::eventually(
        "both partitions assigned",
        Duration::from_secs(30),
        || async { c.assignment().len() == 2 },
    )
    .await
    .unwrap();
    let mut expected = send_with_one_stuck(&w, &topic, &seen).await;

    let proxy = kafka.proxy().unwrap();
    proxy.hold();
    let bound = grace + request_timeout * 2 + FIXED_STOP_WAITS + SLACK;
    let started = Instant::now();
    let removed = tokio::time::timeout(bound, w.remove_consumer("c")).await;
    assert!(
        matches!(removed, Ok(Ok(()))),
        "remove_consumer did not return within {bound:?} (grace {grace:?} + 2 x request timeout {request_timeout:?} + fixed waits {FIXED_STOP_WAITS:?} + slack): {removed:?}"
    );
    eprintln!("removed in {:?}", started.elapsed());

    proxy.release();
    let c2 = w
        .add_consumer(recording_consumer("c2", &group, &topic, &seen))
        .unwrap();
    wharf_testkit::eventually(
        "the new member got both partitions",
        Duration::from_secs(60),
        || async { c2.assignment().len() == 2 },
    )
    .await
    .unwrap();
    let after: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    send_all(&w, &topic, after.clone()).await;
    expected.extend(after);
    // The removed member never finished the stuck message: the new one must handle it.
    wait_for_all(&seen, &expected, Duration::from_secs(60)).await;
    assert_eq!(seen.stuck_calls.load(Ordering::SeqCst), 2);
    shut_down(&w).await;
}

/// How often the judging tests' wrappers probe the brokers.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// A wrapper whose probes are [`PROBE_EVERY`] apart and whose budget is `budget`, with the
/// default request timeout of 5 s.
fn judged_config(brokers: &str, budget: Duration) -> KafkaConfig {
    common::config(brokers)
        .health_interval(PROBE_EVERY)
        .unreachable_after(budget)
        .shutdown_grace(Duration::from_millis(500))
}

/// Kafka goes away (`fault` on the proxy) under a healthy wrapper: the wrapper says
/// `Rebuilding` within `unreachable_after` past the start of its last successful probe,
/// which began at most one probe interval before the fault; then the rebuild is done, and once
/// Kafka is back the rebuilt producer delivers.
async fn judged_unreachable_in_time(prefix: &str, fault: impl Fn(&wharf_testkit::FaultProxy)) {
    common::trace();
    let (kafka, brokers, topic) = proxied_tansu(prefix, 1).await;
    let budget = Duration::from_secs(2);
    let w = KafkaWrapper::start(judged_config(&brokers, budget))
        .await
        .unwrap();
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    p.send(Record::new(&topic, "before")).await.unwrap();
    let mut states = w.watch_state();
    assert_eq!(*states.borrow_and_update(), WrapperState::Running(0));

    let proxy = kafka.proxy().unwrap();
    fault(proxy);
    let faulted = Instant::now();
    let bound = budget + PROBE_EVERY + SLACK;
    let judged = tokio::time::timeout(
        bound,
        states.wait_for(|s| matches!(s, WrapperState::Rebuilding(_))),
    )
    .await;
    let judged_after = faulted.elapsed();
    // Cloned at once: the watch's read guard would hold the wrapper's next state change up.
    let state = judged.map(|r| r.map(|s| s.clone()));
    let Ok(Ok(WrapperState::Rebuilding(reason))) = state else {
        panic!(
            "not judged unreachable within {bound:?} (unreachable_after {budget:?} + one probe interval {PROBE_EVERY:?} + slack); state {:?}, rebuilds {}",
            w.state(),
            w.rebuilds()
        );
    };
    assert!(reason.contains("no broker reachable"), "{reason}");
    eprintln!("judged unreachable {judged_after:?} after the fault: {reason}");
    // The teardown is bounded too: the producer flushes for the grace, then its purged
    // records are reported (2 s at most) and its client is dropped (0.5 s).
    let teardown = Duration::from_millis(500) + Duration::from_millis(2500) + SLACK;
    wharf_testkit::eventually("the rebuild to be done", teardown, || async {
        w.rebuilds() >= 1
    })
    .await
    .unwrap();

    proxy.release();
    proxy.restore().unwrap();
    let d = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match p.send(Record::new(&topic, "after")).await {
                Ok(d) => break d,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("the rebuilt producer delivers once Kafka is back");
    assert!(d.offset >= 1, "{d:?}");
    shut_down(&w).await;
}

/// Before the fix a probe had to *fail* before the wrapper judged: under a silent
/// partition each probe waits the request timeout (5 s here), so with `unreachable_after`
/// 2 s the wrapper only said `Rebuilding` 5 s after the hold, and an outage shorter than the
/// request timeout caused no rebuild at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_is_judged_unreachable_on_the_wrappers_own_clock() {
    judged_unreachable_in_time("judge-hold", |proxy| proxy.hold()).await;
}

/// The same with the broker gone (connections reset, new ones refused): librdkafka waits
/// for a broker to come up for the whole request timeout before it fails a metadata request,
/// so before the fix the judgement came after 5 s here too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_is_judged_unreachable_on_the_wrappers_own_clock() {
    judged_unreachable_in_time("judge-down", |proxy| proxy.down().unwrap()).await;
}

/// A slow broker is not an unreachable one. Every byte is delayed 300 ms each way, so a
/// request is answered in 0.6 s, or 1.2 s behind the watermark requests the wrapper sends on
/// the same connection (the proxy, like a Kafka broker with one connection's requests,
/// takes them one at a time): under half of `unreachable_after` (4 s), and the wrapper never
/// rebuilds. Checked for three budgets' worth of latency, during which probes were seen to
/// succeed (a message produced under the latency shows in the consumer's lag, which only a
/// successful probe updates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_broker_that_answers_within_half_the_budget_is_never_judged_unreachable() {
    common::trace();
    let (kafka, brokers, topic) = proxied_tansu("slow", 1).await;
    let budget = Duration::from_secs(4);
    let w = KafkaWrapper::start(judged_config(&brokers, budget))
        .await
        .unwrap();
    let c = w
        .add_consumer(
            // Never handles anything: the lag is what the probes report.
            ConsumerSpec::group(
                "c",
                common::topic("g"),
                [topic.clone()],
                Handler::per_message(|_| async { Outcome::Retry(Duration::from_secs(3600)) }),
            )
            .handler_timeout(None),
        )
        .unwrap();
    wharf_testkit::eventually("assigned", Duration::from_secs(30), || async {
        c.assignment().len() == 1
    })
    .await
    .unwrap();

    let proxy = kafka.proxy().unwrap();
    proxy.set_latency(Duration::from_millis(300));
    let slow_since = Instant::now();
    send_all(&w, &topic, ["slow-0".to_owned(), "slow-1".to_owned()]).await;
    wharf_testkit::eventually(
        "a probe under latency reported the new messages",
        Duration::from_secs(30),
        || async { c.lag().first().is_some_and(|l| l.high_watermark >= 1) },
    )
    .await
    .unwrap();
    // A false judgement would come at most one budget after a probe went unanswered; watch
    // three budgets of latency.
    let watch_until = slow_since + budget * 3;
    while Instant::now() < watch_until {
        assert_eq!(
            w.state(),
            WrapperState::Running(0),
            "a broker answering within 1.2 s was judged unreachable {:?} into the latency (unreachable_after {budget:?})",
            slow_since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(w.rebuilds(), 0);
    proxy.clear_latency();
    shut_down(&w).await;
}

/// Settings under which a broker that answers would be judged unreachable are refused at
/// start, with the bound in the error.
#[tokio::test]
async fn a_budget_shorter_than_two_probe_intervals_is_refused_at_start() {
    let config = KafkaConfig::new("127.0.0.1:9")
        .health_interval(Duration::from_secs(1))
        .unreachable_after(Duration::from_millis(1500));
    let e = KafkaWrapper::start(config).await.expect_err("refused");
    assert!(
        matches!(
            e,
            Error::Setting {
                setting: "unreachable_after",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("at least 2s"), "{e}");
}

//! The sharded consumer on the in-memory queue: signals, eviction, failures, bounds,
//! handlers that do not answer.
//!
//! Every wait has a deadline (`WAIT`, or one derived from the configured durations), so a
//! bug fails a test instead of hanging it. Negative checks ("the consumer did not read
//! more") run under paused time, where a sleep returns only once every task is idle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wharf_core::Backoff;
use wharf_core::transport::{MemoryQueue, Message, Publisher, Source};
use wharf_sharded_consumer::{
    Error, Handler, Incoming, Outcome, RetryPolicy, ShardKey, ShardedConsumer, StopReason,
};
use wharf_testkit::eventually;

/// Bounds every wait on observable state; reached only by a bug.
const WAIT: Duration = Duration::from_secs(20);

/// Records every call, per key; behaviour per key is set by the key's name.
#[derive(Default)]
struct Recorder {
    inits: Mutex<HashMap<String, u32>>,
    handled: Mutex<Vec<(String, String)>>,
    terminated: Mutex<Vec<(String, StopReason)>>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

enum Signal {
    Get,
    Add(u64),
}

/// The handler: a shared [`Recorder`] (a newtype, as `Handler` and `Arc` are both foreign here).
#[derive(Clone)]
struct Probe(Arc<Recorder>);

impl std::ops::Deref for Probe {
    type Target = Recorder;
    fn deref(&self) -> &Recorder {
        &self.0
    }
}

impl Handler for Probe {
    type State = u64;
    type Signal = Signal;
    type Reply = u64;
    type Error = String;

    async fn init(&self, key: &ShardKey) -> Result<u64, String> {
        *self
            .inits
            .lock()
            .unwrap()
            .entry(key.as_str().unwrap().to_owned())
            .or_default() += 1;
        Ok(0)
    }

    async fn handle_message(&self, count: &mut u64, msg: &Incoming<'_>) -> Result<Outcome, String> {
        let key = msg.key().as_str().unwrap().to_owned();
        let payload = String::from_utf8(msg.payload().to_vec()).unwrap();
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if key.starts_with("bad") {
            return Err(format!("{key} always fails"));
        }
        if key.starts_with("panic") && msg.attempt() == 1 {
            panic!("injected panic for {key}");
        }
        *count += 1;
        self.handled.lock().unwrap().push((key, payload.clone()));
        Ok(match payload.as_str() {
            "stop" => Outcome::Stop,
            "poison" => Outcome::DeadLetter("poison payload".into()),
            _ => Outcome::Ack,
        })
    }

    async fn handle_signal(&self, count: &mut u64, signal: Signal) -> Result<u64, String> {
        match signal {
            Signal::Get => Ok(*count),
            Signal::Add(n) => {
                *count += n;
                Ok(*count)
            }
        }
    }

    async fn terminate(&self, key: &ShardKey, _state: u64, reason: StopReason) {
        self.terminated
            .lock()
            .unwrap()
            .push((key.as_str().unwrap().to_owned(), reason));
    }
}

struct Running {
    queue: MemoryQueue,
    dead: MemoryQueue,
    consumer: ShardedConsumer<Probe>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

impl Running {
    async fn publish(&self, key: &str, payload: &str) {
        self.queue
            .publisher()
            .publish(Message::new(payload.to_owned()).with_key(key.to_owned()))
            .await
            .unwrap();
    }

    async fn acked(&self, n: u64) {
        eventually(&format!("{n} acks"), WAIT, || async {
            self.queue.stats().acked >= n
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", self.queue.stats()));
    }

    async fn stop(self) -> Result<(), Error> {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the run ends once stopped")
            .unwrap()
    }
}

fn start(
    recorder: &Arc<Recorder>,
    tune: impl FnOnce(
        wharf_sharded_consumer::ShardedConsumerBuilder<Probe>,
    ) -> wharf_sharded_consumer::ShardedConsumerBuilder<Probe>,
) -> Running {
    let queue = MemoryQueue::new(10_000);
    let dead = MemoryQueue::new(10_000);
    let builder = ShardedConsumer::builder("test", Probe(recorder.clone()))
        .dead_letter(dead.publisher())
        .retry(RetryPolicy::new(
            3,
            Backoff::constant(Duration::from_millis(10)),
        ));
    let consumer = tune(builder).build().unwrap();
    let stop = CancellationToken::new();
    // Running when `spawn` returns: requests sent next are served.
    let task = consumer.spawn(queue.source(), stop.clone()).unwrap();
    Running {
        queue,
        dead,
        consumer,
        stop,
        task,
    }
}

async fn dead_letters(dead: &MemoryQueue) -> Vec<Message> {
    dead.close();
    let mut source = dead.source();
    let mut out = Vec::new();
    let drained = tokio::time::timeout(WAIT, async {
        while let Some(d) = source.recv().await {
            let d = d.unwrap();
            out.push(d.message().clone());
            d.ack().await.unwrap();
        }
    })
    .await;
    drained.expect("the dead-letter queue drains");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_read_and_change_the_state_of_a_keys_actor() {
    let recorder = Arc::new(Recorder::default());
    let running = start(&recorder, |b| b);
    for _ in 0..3 {
        running.publish("account-1", "m").await;
    }
    running.acked(3).await;

    let c = &running.consumer;
    assert_eq!(c.signal("account-1", Signal::Get).await.unwrap(), 3);
    assert_eq!(c.signal("account-1", Signal::Add(10)).await.unwrap(), 13);
    running.publish("account-1", "m").await;
    running.acked(4).await;
    assert_eq!(c.signal("account-1", Signal::Get).await.unwrap(), 14);
    assert_eq!(
        recorder.inits.lock().unwrap()["account-1"],
        1,
        "one actor all along"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_or_get_or_start_starts_the_actor_of_an_unseen_key() {
    let recorder = Arc::new(Recorder::default());
    let running = start(&recorder, |b| b);
    let c = &running.consumer;
    assert_eq!(c.key_info("fresh").await.unwrap(), None);

    let actor = c.get_or_start("fresh").await.unwrap();
    let info = actor.info().await.unwrap().unwrap();
    assert!(info.started && !info.running);
    assert_eq!(actor.signal(Signal::Add(2)).await.unwrap(), 2);
    assert_eq!(c.signal("other", Signal::Get).await.unwrap(), 0);
    // Counts are published at the end of the executor's round, just after the reply.
    eventually("two actors", WAIT, || async { c.stats().active_keys == 2 })
        .await
        .unwrap();
    assert!(matches!(
        c.signal("", Signal::Get).await,
        Err(Error::InvalidKey { .. })
    ));
    running.stop().await.unwrap();
    let terminated = recorder.terminated.lock().unwrap().clone();
    assert_eq!(terminated.len(), 2, "{terminated:?}");
    assert!(terminated.iter().all(|(_, r)| *r == StopReason::Shutdown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_actor_is_evicted_with_terminate_and_restarted_by_its_next_message() {
    let recorder = Arc::new(Recorder::default());
    let running = start(&recorder, |b| {
        b.idle_timeout(Some(Duration::from_millis(50)))
    });
    running.publish("sleepy", "m").await;
    running.acked(1).await;
    assert!(running.consumer.key_info("sleepy").await.unwrap().is_some());

    eventually("evicted", WAIT, || async {
        running.consumer.stats().evicted >= 1
    })
    .await
    .unwrap();
    assert_eq!(running.consumer.key_info("sleepy").await.unwrap(), None);
    assert_eq!(
        recorder.terminated.lock().unwrap().as_slice(),
        [("sleepy".to_owned(), StopReason::Idle)]
    );
    assert_eq!(running.consumer.stats().active_keys, 0);

    running.publish("sleepy", "m").await;
    running.acked(2).await;
    assert_eq!(recorder.inits.lock().unwrap()["sleepy"], 2, "a new actor");
    running.stop().await.unwrap();
}

/// Paused time: the failing key's backoff is a timer, and time moves only when nothing
/// else can run, so the healthy keys must all be done before its first retry is due.
#[tokio::test(start_paused = true)]
async fn a_key_that_always_fails_does_not_slow_the_others() {
    const BACKOFF: Duration = Duration::from_millis(300);
    let recorder = Arc::new(Recorder::default());
    // Each failing message waits 300 ms between tries, 3 tries, then is dead-lettered.
    let running = start(&recorder, |b| {
        b.retry(RetryPolicy::new(3, Backoff::constant(BACKOFF)))
    });
    for i in 0..5 {
        running.publish("bad", &format!("b{i}")).await;
    }
    let started = tokio::time::Instant::now();
    for i in 0..2_000 {
        running.publish(&format!("good-{}", i % 50), "m").await;
    }
    eventually("good keys handled", WAIT, || async {
        recorder.handled.lock().unwrap().len() >= 2_000
    })
    .await
    .unwrap();
    let good_took = started.elapsed();
    let bad_done = running.dead.stats().published;
    assert!(
        good_took < BACKOFF,
        "good keys took {good_took:?} next to a failing key"
    );
    assert_eq!(bad_done, 0, "the failing key is still in its first backoff");

    // The failing key's 5 messages: 3 tries each, 600 ms of waits each, then dead letters.
    running.acked(2_005).await;
    let dead = dead_letters(&running.dead).await;
    assert_eq!(dead.len(), 5);
    let reason = dead[0].headers().get("wharf-dead-letter-reason").unwrap();
    let reason = String::from_utf8_lossy(reason);
    assert!(
        reason.contains("gave up after 3 attempts") && reason.contains("bad always fails"),
        "{reason}"
    );
    let order: Vec<_> = dead.iter().map(|m| m.payload().clone()).collect();
    assert_eq!(
        order,
        ["b0", "b1", "b2", "b3", "b4"],
        "in order, even when failing"
    );
    assert_eq!(running.consumer.stats().restarts, 15);
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_restarts_only_its_keys_actor_with_a_fresh_state() {
    let recorder = Arc::new(Recorder::default());
    let running = start(&recorder, |b| b);
    running.publish("calm", "m").await;
    running.acked(1).await;
    running.publish("panicky", "m").await;
    running.publish("calm", "m").await;
    running.acked(3).await;

    let c = &running.consumer;
    assert_eq!(
        c.signal("calm", Signal::Get).await.unwrap(),
        2,
        "calm kept its state"
    );
    assert_eq!(
        c.signal("panicky", Signal::Get).await.unwrap(),
        1,
        "retried once, handled"
    );
    let inits = recorder.inits.lock().unwrap().clone();
    assert_eq!(
        (inits["calm"], inits["panicky"]),
        (1, 2),
        "only the panicky key restarted"
    );
    assert_eq!(c.stats().restarts, 1);
    assert_eq!(
        running.queue.stats().released,
        0,
        "retried in the actor, not requeued"
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_keys_and_dead_letter_outcomes_go_to_the_dead_letter_target_with_a_reason() {
    let recorder = Arc::new(Recorder::default());
    let running = start(&recorder, |b| b);
    running
        .queue
        .publisher()
        .publish(Message::new("no key"))
        .await
        .unwrap();
    running.publish("k", "poison").await;
    running.publish("k", "fine").await;
    running.acked(3).await;

    let dead = dead_letters(&running.dead).await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| {
            String::from_utf8_lossy(m.headers().get("wharf-dead-letter-reason").unwrap())
                .into_owned()
        })
        .collect();
    assert!(
        reasons.contains(&"the message has no key".to_owned()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"poison payload".to_owned()),
        "{reasons:?}"
    );
    let poison = dead.iter().find(|m| m.payload() == "poison").unwrap();
    assert_eq!(poison.headers().get("wharf-dead-letter-key").unwrap(), "k");
    assert_eq!(
        poison.headers().get("wharf-dead-letter-origin").unwrap(),
        "memory:1"
    );
    let stats = running.consumer.stats();
    assert_eq!(
        (stats.dead_lettered, stats.rejected_keys, stats.acked),
        (2, 1, 1)
    );
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_terminates_the_actor_after_acking_and_the_next_message_starts_a_new_one() {
    let recorder = Arc::new(Recorder::default());
    let running = start(&recorder, |b| b);
    running.publish("k", "stop").await;
    running.acked(1).await;
    assert_eq!(running.consumer.key_info("k").await.unwrap(), None);
    assert_eq!(
        recorder.terminated.lock().unwrap().as_slice(),
        [("k".to_owned(), StopReason::Requested)]
    );
    running.publish("k", "m").await;
    running.acked(2).await;
    assert_eq!(recorder.inits.lock().unwrap()["k"], 2);
    assert_eq!(running.consumer.stats().stopped, 1);
    running.stop().await.unwrap();
}

/// Paused time: the sleep below returns only once every task (reader, executors) is idle,
/// that is once the consumer has read all it was going to read.
#[tokio::test(start_paused = true)]
async fn a_full_consumer_stops_reading_the_source_instead_of_growing() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let recorder = Arc::new(Recorder {
        gate: Some(gate.clone()),
        ..Recorder::default()
    });
    let running = start(&recorder, |b| b.max_in_flight(8).max_queue_per_key(2));
    for i in 0..100 {
        running.publish(&format!("k{}", i % 3), "m").await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = running.queue.stats();
    assert_eq!(stats.in_flight, 8, "{stats:?}");
    assert_eq!(stats.queued, 92, "the source keeps the rest: {stats:?}");
    assert_eq!(running.consumer.stats().in_flight, 8);

    gate.add_permits(1_000);
    running.acked(100).await;
    running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_loses_nothing_and_keeps_each_keys_order() {
    let slow = Arc::new(tokio::sync::Semaphore::new(150));
    let recorder = Arc::new(Recorder {
        gate: Some(slow.clone()),
        ..Recorder::default()
    });
    let running = start(&recorder, |b| b.max_queue_per_key(8).executors(2));
    for i in 0..600 {
        running
            .publish(&format!("k{}", i % 7), &format!("{i}"))
            .await;
    }
    running.acked(150).await;
    let (queue, dead) = (running.queue.clone(), running.dead.clone());
    // Stop while handlers wait: those in progress finish, the rest is released. An executor
    // answers `Stopped` to a signal once it has seen the stop; once every key's executor
    // has, no new message starts, and the handlers may go on.
    running.stop.cancel();
    eventually("every executor saw the stop", WAIT, || async {
        for k in 0..7 {
            let answer = running.consumer.signal(format!("k{k}"), Signal::Get).await;
            if !matches!(answer, Err(Error::Stopped { .. })) {
                return false;
            }
        }
        true
    })
    .await
    .unwrap();
    slow.add_permits(10_000);
    tokio::time::timeout(WAIT, running.task)
        .await
        .expect("the run ends once its handlers finished")
        .unwrap()
        .unwrap();
    assert_eq!(queue.stats().in_flight, 0);
    assert!(queue.stats().acked < 600, "stopped in the middle");

    let consumer = ShardedConsumer::builder("test", Probe(recorder.clone()))
        .dead_letter(dead.publisher())
        .build()
        .unwrap();
    queue.close();
    tokio::time::timeout(WAIT, consumer.run(queue.source(), CancellationToken::new()))
        .await
        .expect("the rest is consumed")
        .unwrap();

    let handled = recorder.handled.lock().unwrap().clone();
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for (key, payload) in &handled {
        per_key
            .entry(key.clone())
            .or_default()
            .push(payload.parse().unwrap());
    }
    for (key, seqs) in &per_key {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, &sorted, "order of {key}");
    }
    assert_eq!(
        handled.len(),
        600,
        "each handled once: nothing lost, nothing twice"
    );
    assert_eq!(queue.stats().acked, 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_target_that_refuses_stops_the_consumer_without_losing_the_message() {
    let recorder = Arc::new(Recorder::default());
    let queue = MemoryQueue::new(16);
    let closed = MemoryQueue::new(1);
    closed.close();
    let consumer = ShardedConsumer::builder("test", Probe(recorder.clone()))
        .dead_letter(closed.publisher())
        .build()
        .unwrap();
    queue.publisher().publish(Message::new("x")).await.unwrap(); // no key: dead letter
    let ended = tokio::time::timeout(WAIT, consumer.run(queue.source(), CancellationToken::new()))
        .await
        .expect("the consumer gives up within its dead-letter attempts");
    assert!(
        matches!(ended, Err(Error::DeadLetterFailed { attempts: 5, .. })),
        "{ended:?}"
    );
    let stats = queue.stats();
    assert_eq!(
        (stats.acked, stats.queued),
        (0, 1),
        "not acked: delivered again"
    );
}

#[tokio::test]
async fn building_without_a_dead_letter_policy_is_refused() {
    let built = ShardedConsumer::builder("x", Probe(Arc::new(Recorder::default()))).build();
    assert!(matches!(built, Err(Error::NoDeadLetterPolicy { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_twice_at_once_is_refused() {
    let recorder = Arc::new(Recorder::default());
    let running = start(&recorder, |b| b);
    assert!(running.consumer.is_running(), "running once spawned");
    let again = running
        .consumer
        .spawn(MemoryQueue::new(1).source(), CancellationToken::new());
    assert!(
        matches!(again, Err(Error::AlreadyRunning { .. })),
        "{again:?}"
    );
    // Refused at once; were it not, this second run (whose source never ends) is cut off.
    let second = tokio::time::timeout(
        WAIT,
        running
            .consumer
            .run(MemoryQueue::new(1).source(), CancellationToken::new()),
    )
    .await
    .expect("a second run is refused at once, not run");
    assert!(
        matches!(second, Err(Error::AlreadyRunning { .. })),
        "{second:?}"
    );
    running.stop().await.unwrap();
}

/// `terminate` that waits (saving state to a store, say).
struct SlowToStop(Arc<Mutex<Vec<String>>>);

impl Handler for SlowToStop {
    type State = ();
    type Signal = std::convert::Infallible;
    type Reply = ();
    type Error = String;

    async fn init(&self, _key: &ShardKey) -> Result<(), String> {
        Ok(())
    }
    async fn handle_message(&self, _: &mut (), _msg: &Incoming<'_>) -> Result<Outcome, String> {
        Ok(Outcome::Ack)
    }
    async fn handle_signal(&self, _: &mut (), signal: Self::Signal) -> Result<(), String> {
        match signal {}
    }
    async fn terminate(&self, key: &ShardKey, _state: (), reason: StopReason) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.0.lock().unwrap().push(format!("{key} {reason:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_terminate_that_waits() {
    let saved = Arc::new(Mutex::new(Vec::new()));
    let queue = MemoryQueue::new(16);
    let consumer = ShardedConsumer::builder("slow-stop", SlowToStop(saved.clone()))
        .discard_dead_letters()
        .build()
        .unwrap();
    for key in ["a", "b", "c"] {
        queue
            .publisher()
            .publish(Message::new("m").with_key(key))
            .await
            .unwrap();
    }
    let stop = CancellationToken::new();
    let run = consumer.spawn(queue.source(), stop.clone()).unwrap();
    eventually("3 acks", WAIT, || async { queue.stats().acked >= 3 })
        .await
        .unwrap();
    stop.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("the run ends once every terminate has")
        .unwrap()
        .unwrap();
    let mut saved = saved.lock().unwrap().clone();
    saved.sort();
    assert_eq!(saved, ["a Shutdown", "b Shutdown", "c Shutdown"]);
}

// ----- a consumer that is not running -----

#[tokio::test(start_paused = true)]
async fn a_consumer_that_is_not_running_answers_stopped_at_once() {
    let recorder = Arc::new(Recorder::default());
    let consumer = ShardedConsumer::builder("idle", Probe(recorder.clone()))
        .discard_dead_letters()
        .signal_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let began = tokio::time::Instant::now();
    // Never run: nothing will ever answer, so waiting out the signal timeout helps nobody.
    let signal = consumer.signal("k", Signal::Get).await;
    assert!(matches!(signal, Err(Error::Stopped { .. })), "{signal:?}");
    let started = consumer.get_or_start("k").await;
    assert!(matches!(started, Err(Error::Stopped { .. })), "{started:?}");
    let info = consumer.key_info("k").await;
    assert!(matches!(info, Err(Error::Stopped { .. })), "{info:?}");
    assert_eq!(began.elapsed(), Duration::ZERO, "answered at once");

    // Ran and ended (its source ended): the same.
    let queue = MemoryQueue::new(1);
    queue.close();
    tokio::time::timeout(WAIT, consumer.run(queue.source(), CancellationToken::new()))
        .await
        .expect("an ended source ends the run")
        .unwrap();
    assert!(!consumer.is_running());
    let began = tokio::time::Instant::now();
    let signal = consumer.signal("k", Signal::Get).await;
    assert!(matches!(signal, Err(Error::Stopped { .. })), "{signal:?}");
    assert_eq!(began.elapsed(), Duration::ZERO, "answered at once");
    assert!(
        recorder.inits.lock().unwrap().is_empty(),
        "no actor started"
    );
}

#[tokio::test(start_paused = true)]
async fn a_signal_waiting_for_its_key_when_the_run_stops_answers_stopped() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let recorder = Arc::new(Recorder {
        gate: Some(gate.clone()),
        ..Recorder::default()
    });
    let running = start(&recorder, |b| b.signal_timeout(Duration::from_secs(60)));
    running.publish("busy", "m").await;
    // The key's handler waits at the gate, so the signal waits behind it.
    eventually("the message is being handled", WAIT, || async {
        running
            .consumer
            .key_info("busy")
            .await
            .unwrap()
            .is_some_and(|info| info.running)
    })
    .await
    .unwrap();
    let waiting = tokio::spawn({
        let consumer = running.consumer.clone();
        async move { consumer.signal("busy", Signal::Get).await }
    });
    eventually("the signal waits for the key", WAIT, || async {
        running
            .consumer
            .key_info("busy")
            .await
            .unwrap()
            .is_some_and(|info| info.signals_waiting == 1)
    })
    .await
    .unwrap();
    let began = tokio::time::Instant::now();
    running.stop.cancel();
    gate.add_permits(1);
    let answer = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(matches!(answer, Err(Error::Stopped { .. })), "{answer:?}");
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "not at its timeout"
    );
    running.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_signal_running_when_its_run_is_aborted_fails_with_interrupted_at_once() {
    let consumer = ShardedConsumer::builder("aborted", Hangs::default())
        .discard_dead_letters()
        .signal_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let queue = MemoryQueue::new(4);
    let run = consumer
        .spawn(queue.source(), CancellationToken::new())
        .unwrap();
    let hung = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.signal("k", HangSignal::Hang).await }
    });
    eventually("the signal runs", WAIT, || async {
        consumer
            .key_info("k")
            .await
            .unwrap()
            .is_some_and(|info| info.running)
    })
    .await
    .unwrap();
    // Dropping the run's future aborts its executors with the signal's handler call in them.
    run.abort();
    let answer = tokio::time::timeout(Duration::from_secs(5), hung)
        .await
        .expect("answered at once, not at its timeout")
        .unwrap();
    match &answer {
        Err(Error::Interrupted { key, .. }) => assert_eq!(key, "k"),
        other => panic!("expected Interrupted, got {other:?}"),
    }
    // Not supervised: nothing will run it again.
    let after = consumer.signal("k", HangSignal::Get).await;
    assert!(matches!(after, Err(Error::Stopped { .. })), "{after:?}");
}

// ----- keys in messages -----

#[tokio::test(start_paused = true)]
async fn errors_name_the_key_plainly() {
    let consumer = ShardedConsumer::builder("keys", Hangs::default())
        .discard_dead_letters()
        .build()
        .unwrap();
    let queue = MemoryQueue::new(4);
    let stop = CancellationToken::new();
    let run = consumer.spawn(queue.source(), stop.clone()).unwrap();
    let err = consumer
        .signal_within("customer-42", HangSignal::Hang, Duration::from_secs(1))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("key `customer-42`"), "{text}");
    assert!(!text.contains('"'), "{text}");
    // The hung signal call is cut at the default handler deadline (30 s), then the run ends.
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

// ----- handlers that do not answer -----

/// Hangs (pending forever) or blocks its thread on the messages and signals told to, and
/// records everything else; counts the hung calls whose futures were dropped.
#[derive(Default, Clone)]
struct Hangs {
    handled: Arc<Mutex<Vec<(String, String)>>>,
    attempts: Arc<Mutex<Vec<u32>>>,
    dropped: Arc<std::sync::atomic::AtomicU32>,
    terminate_hangs: bool,
}

enum HangSignal {
    Hang,
    Get,
}

/// Counts its own drop: proof that a hung call's future was dropped, not left running.
struct DropCount(Arc<std::sync::atomic::AtomicU32>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Handler for Hangs {
    type State = ();
    type Signal = HangSignal;
    type Reply = usize;
    type Error = String;

    async fn init(&self, _key: &ShardKey) -> Result<(), String> {
        Ok(())
    }

    async fn handle_message(&self, _: &mut (), msg: &Incoming<'_>) -> Result<Outcome, String> {
        let key = msg.key().as_str().unwrap().to_owned();
        let payload = String::from_utf8(msg.payload().to_vec()).unwrap();
        match payload.as_str() {
            "hang" => {
                self.attempts.lock().unwrap().push(msg.attempt());
                let _probe = DropCount(self.dropped.clone());
                std::future::pending::<()>().await;
            }
            "block" => {
                self.attempts.lock().unwrap().push(msg.attempt());
                // Holds its thread past the deadline, then answers as if all was well.
                std::thread::sleep(BLOCK);
                return Ok(Outcome::Ack);
            }
            _ => {}
        }
        self.handled.lock().unwrap().push((key, payload));
        Ok(Outcome::Ack)
    }

    async fn handle_signal(&self, _: &mut (), signal: HangSignal) -> Result<usize, String> {
        match signal {
            HangSignal::Hang => std::future::pending().await,
            HangSignal::Get => Ok(self.handled.lock().unwrap().len()),
        }
    }

    async fn terminate(&self, _key: &ShardKey, _state: (), _reason: StopReason) {
        if self.terminate_hangs {
            std::future::pending::<()>().await;
        }
    }
}

/// How long the blocking handler holds its thread: longer than the deadline it is given.
const BLOCK: Duration = Duration::from_millis(300);

async fn publish_to(queue: &MemoryQueue, key: &str, payload: &str) {
    queue
        .publisher()
        .publish(Message::new(payload.to_owned()).with_key(key.to_owned()))
        .await
        .unwrap();
}

fn handled_of(hangs: &Hangs, key: &str) -> Vec<String> {
    hangs
        .handled
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, p)| p.clone())
        .collect()
}

/// Paused time: the default deadline (30 s) passes in no wall-clock time.
#[tokio::test(start_paused = true)]
async fn a_handler_that_never_answers_is_a_failed_attempt_and_its_key_moves_on() {
    const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
    const BACKOFF: Duration = Duration::from_secs(1);
    let hangs = Hangs::default();
    let queue = MemoryQueue::new(16);
    let dead = MemoryQueue::new(16);
    // The deadline is on by default: nothing configured here.
    let consumer = ShardedConsumer::builder("hung", hangs.clone())
        .dead_letter(dead.publisher())
        .retry(RetryPolicy::new(2, Backoff::constant(BACKOFF)))
        .build()
        .unwrap();
    for (key, payload) in [
        ("stuck", "hang"),
        ("stuck", "next-1"),
        ("other", "x"),
        ("stuck", "next-2"),
    ] {
        publish_to(&queue, key, payload).await;
    }
    let began = tokio::time::Instant::now();
    let stop = CancellationToken::new();
    let run = consumer.spawn(queue.source(), stop.clone()).unwrap();
    eventually(
        "the messages behind the hung one handled",
        4 * DEFAULT_DEADLINE,
        || async { handled_of(&hangs, "stuck") == ["next-1", "next-2"] },
    )
    .await
    .unwrap();
    // Two attempts, each cut at the deadline, a backoff between them, then the dead letter.
    assert!(
        began.elapsed() >= 2 * DEFAULT_DEADLINE + BACKOFF,
        "{:?}",
        began.elapsed()
    );
    assert_eq!(*hangs.attempts.lock().unwrap(), [1, 2]);
    assert_eq!(
        hangs.dropped.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "each hung call dropped"
    );
    assert_eq!(handled_of(&hangs, "other"), ["x"]);
    let dead = dead_letters(&dead).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload(), "hang");
    let reason =
        String::from_utf8_lossy(dead[0].headers().get("wharf-dead-letter-reason").unwrap())
            .into_owned();
    assert!(reason.contains("gave up after 2 attempts"), "{reason}");
    assert!(reason.contains("did not answer within 30s"), "{reason}");
    assert_eq!(
        queue.stats().acked,
        4,
        "the hung one acked once dead-lettered"
    );
    stop.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_blocks_its_thread_past_the_deadline_is_a_failed_attempt() {
    const DEADLINE: Duration = Duration::from_millis(100);
    let hangs = Hangs::default();
    let queue = MemoryQueue::new(16);
    let dead = MemoryQueue::new(16);
    let consumer = ShardedConsumer::builder("blocked", hangs.clone())
        .dead_letter(dead.publisher())
        .retry(RetryPolicy::new(
            2,
            Backoff::constant(Duration::from_millis(10)),
        ))
        .handler_timeout(Some(DEADLINE))
        .build()
        .unwrap();
    for (key, payload) in [("blocker", "block"), ("blocker", "next"), ("other", "x")] {
        publish_to(&queue, key, payload).await;
    }
    let stop = CancellationToken::new();
    let run = consumer.spawn(queue.source(), stop.clone()).unwrap();
    eventually(
        "the message behind the blocking one handled",
        WAIT,
        || async { handled_of(&hangs, "blocker").contains(&"next".to_owned()) },
    )
    .await
    .unwrap();
    // It answered `Ack` each time, but only after holding its thread past the deadline:
    // both attempts failed, and the message went to the dead-letter target.
    assert_eq!(*hangs.attempts.lock().unwrap(), [1, 2]);
    assert_eq!(
        handled_of(&hangs, "blocker"),
        ["next"],
        "the late answers do not count"
    );
    assert_eq!(handled_of(&hangs, "other"), ["x"]);
    let dead = dead_letters(&dead).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].payload(), "block");
    let reason =
        String::from_utf8_lossy(dead[0].headers().get("wharf-dead-letter-reason").unwrap())
            .into_owned();
    assert!(reason.contains("blocked its thread"), "{reason}");
    stop.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_signal_handler_that_never_answers_fails_the_signal_and_frees_the_key() {
    const DEADLINE: Duration = Duration::from_secs(2);
    let hangs = Hangs::default();
    let queue = MemoryQueue::new(16);
    let consumer = ShardedConsumer::builder("hung-signal", hangs.clone())
        .discard_dead_letters()
        .handler_timeout(Some(DEADLINE))
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = consumer.spawn(queue.source(), stop.clone()).unwrap();
    let err = consumer
        .signal_within("k", HangSignal::Hang, 2 * DEADLINE)
        .await
        .unwrap_err();
    match &err {
        Error::ActorFailed { reason, .. } => {
            assert!(reason.contains("did not answer within 2s"), "{reason}")
        }
        other => panic!("expected ActorFailed, got {other:?}"),
    }
    publish_to(&queue, "k", "after").await;
    eventually("the key handles its next message", WAIT, || async {
        handled_of(&hangs, "k") == ["after"]
    })
    .await
    .unwrap();
    assert_eq!(consumer.signal("k", HangSignal::Get).await.unwrap(), 1);
    stop.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_terminate_that_never_ends_does_not_hold_the_shutdown_past_its_deadline() {
    const DEADLINE: Duration = Duration::from_secs(3);
    let hangs = Hangs {
        terminate_hangs: true,
        ..Hangs::default()
    };
    let queue = MemoryQueue::new(16);
    let consumer = ShardedConsumer::builder("hung-terminate", hangs.clone())
        .discard_dead_letters()
        .handler_timeout(Some(DEADLINE))
        .build()
        .unwrap();
    publish_to(&queue, "k", "m").await;
    let stop = CancellationToken::new();
    let run = consumer.spawn(queue.source(), stop.clone()).unwrap();
    eventually("handled", WAIT, || async {
        handled_of(&hangs, "k") == ["m"]
    })
    .await
    .unwrap();
    let began = tokio::time::Instant::now();
    stop.cancel();
    tokio::time::timeout(2 * DEADLINE, run)
        .await
        .expect("the run ends once the terminate's deadline passed")
        .unwrap()
        .unwrap();
    assert!(began.elapsed() >= DEADLINE, "{:?}", began.elapsed());
}

#[tokio::test(start_paused = true)]
async fn signals_past_the_per_key_bound_are_refused_at_once() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let recorder = Arc::new(Recorder {
        gate: Some(gate.clone()),
        ..Recorder::default()
    });
    let running = start(&recorder, |b| {
        b.max_signals_per_key(2)
            .signal_timeout(Duration::from_secs(60))
    });
    running.publish("busy", "m").await;
    eventually("the key is busy", WAIT, || async {
        running
            .consumer
            .key_info("busy")
            .await
            .unwrap()
            .is_some_and(|info| info.running)
    })
    .await
    .unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let consumer = running.consumer.clone();
            tokio::spawn(async move { consumer.signal("busy", Signal::Get).await })
        })
        .collect();
    eventually("two signals wait", WAIT, || async {
        running
            .consumer
            .key_info("busy")
            .await
            .unwrap()
            .is_some_and(|info| info.signals_waiting == 2)
    })
    .await
    .unwrap();
    let began = tokio::time::Instant::now();
    let third = running.consumer.signal("busy", Signal::Get).await;
    assert!(
        matches!(third, Err(Error::SignalQueueFull { capacity: 2, .. })),
        "{third:?}"
    );
    assert_eq!(began.elapsed(), Duration::ZERO, "refused at once");
    gate.add_permits(1);
    for signal in waiting {
        let answer = tokio::time::timeout(WAIT, signal).await.unwrap().unwrap();
        assert_eq!(answer.unwrap(), 1, "served after the message");
    }
    running.stop().await.unwrap();
}

/// Waits until the message of the key `busy` is being handled and `signals` signals wait
/// behind it.
async fn signals_wait_for_busy_key(consumer: &ShardedConsumer<Probe>, signals: usize) {
    eventually(
        &format!("{signals} signals wait for busy"),
        WAIT,
        || async {
            consumer
                .key_info("busy")
                .await
                .unwrap()
                .is_some_and(|info| info.running && info.signals_waiting == signals)
        },
    )
    .await
    .unwrap();
}

/// A signal its key's executor has taken, waiting behind the key's message, whose timeout
/// passes: its caller gets `Timeout`, and the signal is skipped, never run, so the key's state
/// never sees it. Paused time: the timeout follows tokio's clock.
#[tokio::test(start_paused = true)]
async fn a_signal_whose_timeout_passes_while_it_waits_for_its_busy_key_is_skipped() {
    const SHORT: Duration = Duration::from_secs(1);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let recorder = Arc::new(Recorder {
        gate: Some(gate.clone()),
        ..Recorder::default()
    });
    let running = start(&recorder, |b| b.signal_timeout(Duration::from_secs(60)));
    running.publish("busy", "m").await;
    signals_wait_for_busy_key(&running.consumer, 0).await;
    let waiting = tokio::spawn({
        let consumer = running.consumer.clone();
        async move {
            let began = tokio::time::Instant::now();
            let answer = consumer
                .signal_within("busy", Signal::Add(100), SHORT)
                .await;
            (answer, began.elapsed())
        }
    });
    signals_wait_for_busy_key(&running.consumer, 1).await;

    let (answer, took) = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();

    match answer {
        Err(Error::Timeout { key, after }) => {
            assert_eq!(key, "busy");
            assert_eq!(after, SHORT);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(took, SHORT, "at its timeout");
    gate.add_permits(1);
    running.acked(1).await;
    assert_eq!(
        running.consumer.signal("busy", Signal::Get).await.unwrap(),
        1,
        "the message counted, the timed-out Add(100) did not run"
    );
    running.stop().await.unwrap();
}

// ----- under a supervisor -----

/// The supervisor's restart backoff.
const RESTART_BACKOFF: Duration = Duration::from_secs(5);
/// Long enough that a request answered before it was answered at once, not at its timeout.
const LONG_SIGNAL_TIMEOUT: Duration = Duration::from_secs(30);
/// "At once": well before `LONG_SIGNAL_TIMEOUT`.
const AT_ONCE: Duration = Duration::from_secs(5);
/// The handler deadline of the supervised consumer: it cuts a handler held at the gate, so
/// a run that must stop can.
const SUPERVISED_HANDLER_TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer under a real supervisor (one_for_one, constant `RESTART_BACKOFF`). Each run
/// reads a queue of its own (`queues[n - 1]` for run `n`). A run crashes when its queue holds
/// a message without a key: that message must be dead-lettered, the dead-letter target
/// refuses everything, and the run fails with `DeadLetterFailed` once the attempts are spent.
struct Supervised {
    consumer: ShardedConsumer<Probe>,
    root: wharf_core::supervisor::SupervisorHandle,
    queues: Arc<Mutex<Vec<MemoryQueue>>>,
}

impl Supervised {
    /// `crashing`: the runs (from 1) whose queue starts with a message without a key.
    async fn start(recorder: &Arc<Recorder>, crashing: &'static [usize], intensity: u32) -> Self {
        let refusing = MemoryQueue::new(1);
        refusing.close();
        let consumer = ShardedConsumer::builder("supervised", Probe(recorder.clone()))
            .dead_letter(refusing.publisher())
            .signal_timeout(LONG_SIGNAL_TIMEOUT)
            .handler_timeout(Some(SUPERVISED_HANDLER_TIMEOUT))
            .build()
            .unwrap();
        let queues: Arc<Mutex<Vec<MemoryQueue>>> = Arc::default();
        let spec = consumer.child_spec("consumer", {
            let queues = queues.clone();
            move || {
                let queues = queues.clone();
                async move {
                    let queue = MemoryQueue::new(64);
                    let run = {
                        let mut queues = queues.lock().unwrap();
                        queues.push(queue.clone());
                        queues.len()
                    };
                    if crashing.contains(&run) {
                        crash(&queue).await;
                    }
                    Ok::<_, std::convert::Infallible>(queue.source())
                }
            }
        });
        let root = wharf_core::supervisor::Supervisor::builder("root")
            .backoff(Backoff::constant(RESTART_BACKOFF))
            .intensity(intensity, Duration::from_secs(3600))
            .child(spec)
            .start()
            .await
            .unwrap();
        Self {
            consumer,
            root,
            queues,
        }
    }

    fn runs(&self) -> usize {
        self.queues.lock().unwrap().len()
    }

    fn queue_of_run(&self, run: usize) -> MemoryQueue {
        self.queues.lock().unwrap()[run - 1].clone()
    }

    /// Waits until run `run` has ended and the next one has not begun: the restart backoff.
    async fn in_the_backoff_after_run(&self, run: usize) {
        eventually(&format!("run {run} crashed"), WAIT, || async {
            self.runs() == run && !self.consumer.is_running()
        })
        .await
        .unwrap();
    }

    /// Waits until the key's message is being handled and `signals` signals wait behind it.
    async fn busy_with_signals_waiting(&self, key: &str, signals: usize) {
        eventually(
            &format!("{signals} signals wait for {key}"),
            WAIT,
            || async {
                self.consumer
                    .key_info(key)
                    .await
                    .unwrap()
                    .is_some_and(|info| info.running && info.signals_waiting == signals)
            },
        )
        .await
        .unwrap();
    }
}

/// Publishes a message without a key: with a refusing dead-letter target, the run crashes.
async fn crash(queue: &MemoryQueue) {
    queue
        .publisher()
        .publish(Message::new("no key"))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn requests_sent_while_a_supervisor_restarts_the_consumer_are_served_by_the_next_run_in_order()
 {
    let recorder = Arc::new(Recorder::default());
    let supervised = Supervised::start(&recorder, &[1], 3).await;
    supervised.in_the_backoff_after_run(1).await;
    let c = &supervised.consumer;
    assert!(!c.is_running(), "sent between two runs");
    // Polled in this order, so queued in this order.
    let (first, second, started, info, third) = tokio::time::timeout(WAIT, async {
        tokio::join!(
            biased;
            c.signal("k", Signal::Add(1)),
            c.signal("k", Signal::Add(10)),
            c.get_or_start("k"),
            c.key_info("k"),
            c.signal("k", Signal::Add(100)),
        )
    })
    .await
    .expect("answered within the signal timeout");
    assert!(matches!(first, Ok(1)), "{first:?}");
    assert!(matches!(second, Ok(11)), "{second:?}");
    assert!(started.is_ok(), "{started:?}");
    assert!(info.as_ref().is_ok_and(Option::is_some), "{info:?}");
    assert!(matches!(third, Ok(111)), "{third:?}");
    assert_eq!(supervised.runs(), 2, "served by the next run");
    assert!(c.is_running());
    assert_eq!(recorder.inits.lock().unwrap()["k"], 1, "one actor");
    supervised.root.shutdown().await.unwrap();
}

/// The limit of the promise above: a request whose timeout passes before the next run begins
/// fails with `Timeout` and is withdrawn, so the next run never serves it. Paused time: the
/// timeout and the supervisor's backoff run on the same clock.
#[tokio::test(start_paused = true)]
async fn a_signal_whose_timeout_passes_during_the_restart_backoff_is_never_served() {
    const SHORT: Duration = Duration::from_secs(1);
    const _: () = assert!(SHORT.as_nanos() < RESTART_BACKOFF.as_nanos());
    let recorder = Arc::new(Recorder::default());
    let supervised = Supervised::start(&recorder, &[1], 3).await;
    supervised.in_the_backoff_after_run(1).await;
    let c = &supervised.consumer;
    let began = tokio::time::Instant::now();

    let timed_out = c.signal_within("k", Signal::Add(1), SHORT).await;

    match timed_out {
        Err(Error::Timeout { key, after }) => {
            assert_eq!(key, "k");
            assert_eq!(after, SHORT);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(began.elapsed(), SHORT, "at its timeout, within the backoff");
    assert!(!c.is_running(), "still in the backoff");
    let after = tokio::time::timeout(WAIT, c.signal("k", Signal::Get))
        .await
        .expect("answered by the next run");
    assert!(
        matches!(after, Ok(0)),
        "the withdrawn Add(1) ran: {after:?}"
    );
    assert_eq!(supervised.runs(), 2, "answered by the next run");
    supervised.root.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_signal_waiting_for_its_key_when_a_supervised_run_crashes_is_served_by_the_next_run() {
    // The gate never opens: the key's handler waits until its deadline cuts it.
    let recorder = Arc::new(Recorder {
        gate: Some(Arc::new(tokio::sync::Semaphore::new(0))),
        ..Recorder::default()
    });
    let supervised = Supervised::start(&recorder, &[], 3).await;
    let first = supervised.queue_of_run(1);
    publish_to(&first, "busy", "m").await;
    supervised.busy_with_signals_waiting("busy", 0).await;
    let waiting = tokio::spawn({
        let consumer = supervised.consumer.clone();
        async move { consumer.signal("busy", Signal::Add(7)).await }
    });
    supervised.busy_with_signals_waiting("busy", 1).await;
    crash(&first).await;
    let answer = tokio::time::timeout(LONG_SIGNAL_TIMEOUT, waiting)
        .await
        .expect("answered within its timeout")
        .unwrap();
    assert!(matches!(answer, Ok(7)), "{answer:?}");
    assert_eq!(
        supervised.runs(),
        2,
        "served by the next run, on a fresh state"
    );
    supervised.root.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_consumer_whose_supervisor_shut_down_answers_stopped_at_once() {
    let recorder = Arc::new(Recorder::default());
    let supervised = Supervised::start(&recorder, &[1], 3).await;
    supervised.in_the_backoff_after_run(1).await;
    let c = &supervised.consumer;
    // Queued for the next run, which never comes: it fails as soon as that is known.
    let (queued, shutdown) = tokio::time::timeout(AT_ONCE, async {
        tokio::join!(biased; c.signal("k", Signal::Get), supervised.root.shutdown())
    })
    .await
    .expect("the queued signal answers once the supervisor is gone");
    shutdown.unwrap();
    assert!(matches!(queued, Err(Error::Stopped { .. })), "{queued:?}");
    let (signal, started, info) = tokio::time::timeout(AT_ONCE, async {
        tokio::join!(
            c.signal("k", Signal::Get),
            c.get_or_start("k"),
            c.key_info("k")
        )
    })
    .await
    .expect("answered at once, not at the signal timeout");
    assert!(matches!(signal, Err(Error::Stopped { .. })), "{signal:?}");
    assert!(matches!(started, Err(Error::Stopped { .. })), "{started:?}");
    assert!(matches!(info, Err(Error::Stopped { .. })), "{info:?}");
    assert_eq!(supervised.runs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_consumer_whose_supervisor_gave_up_answers_stopped_at_once() {
    let recorder = Arc::new(Recorder {
        gate: Some(Arc::new(tokio::sync::Semaphore::new(0))),
        ..Recorder::default()
    });
    // No restart allowed: the first crash makes the supervisor give up.
    let supervised = Supervised::start(&recorder, &[], 0).await;
    let first = supervised.queue_of_run(1);
    publish_to(&first, "busy", "m").await;
    supervised.busy_with_signals_waiting("busy", 0).await;
    let waiting = tokio::spawn({
        let consumer = supervised.consumer.clone();
        async move { consumer.signal("busy", Signal::Get).await }
    });
    supervised.busy_with_signals_waiting("busy", 1).await;
    crash(&first).await;
    let gave_up = tokio::time::timeout(LONG_SIGNAL_TIMEOUT, supervised.root.join())
        .await
        .expect("the run ends within its handler deadline");
    assert!(
        matches!(gave_up, Err(wharf_core::Error::IntensityExceeded { .. })),
        "{gave_up:?}"
    );
    // The signal that waited for its key through the crash fails once the supervisor is gone.
    let answer = tokio::time::timeout(AT_ONCE, waiting)
        .await
        .expect("answered at once, not at its timeout")
        .unwrap();
    assert!(matches!(answer, Err(Error::Stopped { .. })), "{answer:?}");
    let (signal, started, info) = tokio::time::timeout(AT_ONCE, async {
        tokio::join!(
            supervised.consumer.signal("busy", Signal::Get),
            supervised.consumer.get_or_start("busy"),
            supervised.consumer.key_info("busy")
        )
    })
    .await
    .expect("answered at once, not at the signal timeout");
    assert!(matches!(signal, Err(Error::Stopped { .. })), "{signal:?}");
    assert!(matches!(started, Err(Error::Stopped { .. })), "{started:?}");
    assert!(matches!(info, Err(Error::Stopped { .. })), "{info:?}");
    assert_eq!(supervised.runs(), 1);
}

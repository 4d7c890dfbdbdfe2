//! The sharded consumer on the in-memory queue: signals, eviction, failures, bounds.
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
        let wait = async {
            while self.queue.stats().acked < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("{n} acks expected, got {:?}", self.queue.stats()));
    }

    async fn stop(self) -> Result<(), Error> {
        self.stop.cancel();
        self.task.await.unwrap()
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
    let task = tokio::spawn({
        let (consumer, source, stop) = (consumer.clone(), queue.source(), stop.clone());
        async move { consumer.run(source, stop).await }
    });
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
    while let Some(d) = source.recv().await {
        let d = d.unwrap();
        out.push(d.message().clone());
        d.ack().await.unwrap();
    }
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
    tokio::time::timeout(Duration::from_secs(2), async {
        while c.stats().active_keys != 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("two actors");
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

    tokio::time::timeout(Duration::from_secs(5), async {
        while running.consumer.stats().evicted < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("evicted within 5 s");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_always_fails_does_not_slow_the_others() {
    let recorder = Arc::new(Recorder::default());
    // Each failing message waits 300 ms between tries, 3 tries, then is dead-lettered.
    let running = start(&recorder, |b| {
        b.retry(RetryPolicy::new(
            3,
            Backoff::constant(Duration::from_millis(300)),
        ))
    });
    for i in 0..5 {
        running.publish("bad", &format!("b{i}")).await;
    }
    let started = tokio::time::Instant::now();
    for i in 0..2_000 {
        running.publish(&format!("good-{}", i % 50), "m").await;
    }
    let handled_fast = async {
        while recorder.handled.lock().unwrap().len() < 2_000 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), handled_fast)
        .await
        .expect("good keys handled");
    let good_took = started.elapsed();
    let bad_done = running.dead.stats().published;
    assert!(
        good_took < Duration::from_millis(1_500),
        "good keys took {good_took:?} next to a failing key"
    );
    assert!(
        bad_done < 5,
        "the failing key is still retrying ({bad_done} dead-lettered)"
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    assert!(stats.in_flight <= 8, "{stats:?}");
    assert!(stats.queued >= 92, "the source keeps the rest: {stats:?}");
    assert!(running.consumer.stats().in_flight <= 8);

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
    let running = start(&recorder, |b| b.max_queue_per_key(8));
    for i in 0..600 {
        running
            .publish(&format!("k{}", i % 7), &format!("{i}"))
            .await;
    }
    running.acked(150).await;
    let (queue, dead) = (running.queue.clone(), running.dead.clone());
    // Stop while handlers wait: those in progress finish, the rest is released.
    running.stop.cancel();
    tokio::time::sleep(Duration::from_millis(20)).await;
    slow.add_permits(10_000);
    running.task.await.unwrap().unwrap();
    assert_eq!(queue.stats().in_flight, 0);
    assert!(queue.stats().acked < 600, "stopped in the middle");

    let consumer = ShardedConsumer::builder("test", Probe(recorder.clone()))
        .dead_letter(dead.publisher())
        .build()
        .unwrap();
    queue.close();
    consumer
        .run(queue.source(), CancellationToken::new())
        .await
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
    let ended = tokio::time::timeout(
        Duration::from_secs(20),
        consumer.run(queue.source(), CancellationToken::new()),
    )
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
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = running
        .consumer
        .run(MemoryQueue::new(1).source(), CancellationToken::new())
        .await;
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
    let run = tokio::spawn({
        let (c, s, stop) = (consumer.clone(), queue.source(), stop.clone());
        async move { c.run(s, stop).await }
    });
    while queue.stats().acked < 3 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the run ends once every terminate has")
        .unwrap()
        .unwrap();
    let mut saved = saved.lock().unwrap().clone();
    saved.sort();
    assert_eq!(
        saved,
        ["\"a\" Shutdown", "\"b\" Shutdown", "\"c\" Shutdown"]
    );
}

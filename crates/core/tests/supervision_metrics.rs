//! Supervision events reach the `metrics` facade (its own binary: it installs a global recorder).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use wharf_core::metrics as m;
use wharf_core::supervisor::{ChildSpec, Started, Supervisor};
use wharf_core::{Backoff, Error};

type Entry = (
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
);

fn counter(snapshot: &[Entry], name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(key, _, _, _)| {
            let key = key.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, _, _, value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

#[tokio::test(start_paused = true)]
async fn starts_exits_restarts_and_escalations_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let failing = ChildSpec::new("failing", |_ctx| async {
        Ok::<_, Error>(Started::task(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Err::<(), _>(std::io::Error::other("boom"))
        }))
    });
    let sup = Supervisor::builder("metered")
        .backoff(Backoff::none())
        .intensity(2, Duration::from_secs(5))
        .child(failing)
        .start()
        .await
        .unwrap();
    // Paused time: the failures' sleeps cost nothing, and a supervisor that never gave up
    // fails the test at this deadline instead of hanging it.
    let ended = tokio::time::timeout(Duration::from_secs(60), sup.join())
        .await
        .expect("the supervisor gives up after its third failure");
    assert!(ended.is_err(), "{ended:?}");

    // One snapshot: taking one drains the counters.
    let snapshot = snapshotter.snapshot().into_vec();
    let who = [("supervisor", "metered"), ("child", "failing")];
    assert_eq!(counter(&snapshot, m::CHILD_STARTS, &who), 3);
    assert_eq!(counter(&snapshot, m::RESTARTS, &who), 2);
    let errors = [
        ("supervisor", "metered"),
        ("child", "failing"),
        ("reason", "error"),
    ];
    assert_eq!(counter(&snapshot, m::CHILD_EXITS, &errors), 3);
    let sup_only = [("supervisor", "metered")];
    assert_eq!(counter(&snapshot, m::ESCALATIONS, &sup_only), 1);
}

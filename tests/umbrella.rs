//! The umbrella crate re-exports wharf-core, and a tree built through it behaves: a consumer
//! that crashes on a message does not lose it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wharf::core::supervisor::{ChildSpec, Started, Supervisor};
use wharf::core::{Backoff, BoxError, MemoryQueue, Message, Publisher, Source};

#[tokio::test]
async fn a_crashing_consumer_under_a_supervisor_loses_no_message() {
    let queue = MemoryQueue::new(64);
    let consumer_queue = queue.clone();
    let spec = ChildSpec::new("consumer", move |ctx| {
        let queue = consumer_queue.clone();
        async move {
            let mut source = queue.source();
            Ok::<_, BoxError>(Started::task(async move {
                loop {
                    let delivery = tokio::select! {
                        _ = ctx.cancelled() => return Ok::<(), BoxError>(()),
                        next = source.recv() => match next {
                            Some(delivery) => delivery?,
                            None => return Ok(()),
                        },
                    };
                    // Every third message crashes the consumer on its first attempt.
                    let n: u32 = std::str::from_utf8(delivery.message().payload())?.parse()?;
                    if n.is_multiple_of(3) && delivery.attempt() == 1 {
                        return Err(format!("message {n} failed").into());
                    }
                    delivery.ack().await?;
                }
            }))
        }
    });
    let sup = Supervisor::builder("umbrella")
        .backoff(Backoff::none())
        .intensity(100, Duration::from_secs(10))
        .child(spec)
        .start()
        .await
        .unwrap();
    let publisher = queue.publisher();
    for n in 1..=30_u32 {
        publisher
            .publish(Message::new(n.to_string()))
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.stats().acked < 30 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            queue.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let children = sup.which_children().await.unwrap();
    assert_eq!(children[0].restarts, 10);
    assert_eq!(queue.stats().released, 10);
    sup.shutdown().await.unwrap();
}

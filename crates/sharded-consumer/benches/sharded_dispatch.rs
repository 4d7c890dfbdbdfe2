#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]
use std::time::Instant;
use wharf_core::transport::{MemoryQueue, Message, Source};

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let n = 1_000_000u64;
        for round in 0..3 {
            let q = MemoryQueue::new(n as usize);
            let p = q.publisher();
            let t = Instant::now();
            for i in 0..n {
                p.try_publish(Message::new("x").with_key(format!("key-{}", i % 10_000))).unwrap();
            }
            let pub_s = t.elapsed().as_secs_f64();
            let mut s = q.source();
            let t = Instant::now();
            for _ in 0..n {
                let d = s.recv().await.unwrap().unwrap();
                let _ = futures::FutureExt::now_or_never(d.ack());
            }
            let el = t.elapsed().as_secs_f64();
            println!("round {round}: publish {:.0}/s, raw recv+ack {:.0}/s", n as f64 / pub_s, n as f64 / el);
        }
    });
}

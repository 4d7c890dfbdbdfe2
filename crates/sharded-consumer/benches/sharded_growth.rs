//! `sharded-growth`: how the sharded consumer's throughput, p99 latency at 100,000 msg/s and
//! memory per key grow from 1,000 to 1,000,000 keys, next to the fixed pool of
//! `sharded-dispatch` (whose code, workload and allocator this bench shares). Writes
//! `$WHARF_BENCH_OUT` (JSON) when set; `BENCH_GROWTH_KEYS` (comma-separated) and
//! `WHARF_BENCH_ROUNDS` (default 3) change the sizes and rounds.
#![allow(missing_docs)]

#[path = "sharded_dispatch.rs"]
#[allow(dead_code)]
mod dispatch;

fn main() {
    dispatch::growth_main();
}

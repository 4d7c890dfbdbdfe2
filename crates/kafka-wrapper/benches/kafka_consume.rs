//! Benchmark placeholder (written next).
fn main() {}

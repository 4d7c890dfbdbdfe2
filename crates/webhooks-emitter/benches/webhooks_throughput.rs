//! webhooks-throughput benchmark (being written).
fn main() {}

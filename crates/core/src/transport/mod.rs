//! Broker-neutral transport traits (placeholder until the transport lands).

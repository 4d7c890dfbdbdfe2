#![doc = include_str!("../README.md")]

mod admin;
mod config;
mod consumer;
mod error;
mod health;
mod log_gate;
mod message;
pub mod metrics;
pub mod partitioner;
mod producer;
mod reachability;
mod trace;
mod transport;
mod wrapper;

#[doc(inline)]
pub use admin::{Admin, PartitionInfo, TopicInfo, TopicSpec};
#[doc(inline)]
pub use config::{BROKERS_ENV, KafkaConfig};
#[doc(inline)]
pub use consumer::{
    ConsumerHandle, ConsumerSpec, DEFAULT_HANDLER_TIMEOUT, DEFAULT_RETRY_POLICY, Handler, Outcome,
    PartitionLag, RetryPolicy, StartAt,
};
#[doc(inline)]
pub use error::{Error, Result};
#[doc(inline)]
pub use message::{ConsumedMessage, Delivered, Record};
#[doc(inline)]
pub use producer::{Producer, ProducerSpec};
#[doc(inline)]
pub use transport::{KafkaSource, TopicPublisher};
#[doc(inline)]
pub use wrapper::{KafkaWrapper, WrapperState};

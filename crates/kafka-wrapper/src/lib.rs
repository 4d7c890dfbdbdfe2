//! # wharf-kafka-wrapper
//! (docs written below)

mod admin;
mod config;
mod consumer;
mod error;
mod health;
mod message;
pub mod partitioner;
mod producer;
mod transport;
mod wrapper;

pub use admin::{Admin, PartitionInfo, TopicInfo, TopicSpec};
pub use config::{BROKERS_ENV, KafkaConfig};
pub use consumer::{ConsumerHandle, ConsumerSpec, Handler, Outcome, PartitionLag, StartAt};
pub use error::{Error, Result};
pub use message::{ConsumedMessage, Delivered, Record};
pub use producer::{Producer, ProducerSpec};
pub use transport::{KafkaSource, TopicPublisher};
pub use wrapper::{KafkaWrapper, WrapperState};

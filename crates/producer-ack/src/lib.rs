#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod ack;
mod config;
mod driver;
mod error;
mod message;
pub mod metrics;
mod producer;
mod publisher;
mod trace;

/// The `pulsar` crate this one is built on: the type of the errors kept as sources.
pub use pulsar;

#[doc(inline)]
pub use ack::{Ack, AckReceiver, AckSender, Acked, ContextAck, NotifyHandle, ack_channel};
#[doc(inline)]
pub use config::{Batching, Compression, OnReconnect, ProducerBuilder, Tls};
#[doc(inline)]
pub use error::Error;
#[doc(inline)]
pub use message::{MessageId, PulsarMessage};
#[doc(inline)]
pub use producer::Producer;

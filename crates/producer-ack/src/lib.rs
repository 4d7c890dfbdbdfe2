//! # wharf-producer-ack
//!
//! A Pulsar producer that always tells you what happened to each message. (docs below)

mod ack;
mod config;
mod driver;
mod error;
mod message;
mod producer;
mod publisher;

#[doc(inline)]
pub use ack::{Ack, AckReceiver, AckSender, Acked, ContextAck, NotifyHandle, ack_channel};
#[doc(inline)]
pub use config::{Batching, Compression, OnReconnect, ProducerBuilder, Tls};
#[doc(inline)]
pub use error::Error;
#[doc(inline)]
pub use message::{Message, MessageId};
#[doc(inline)]
pub use producer::Producer;

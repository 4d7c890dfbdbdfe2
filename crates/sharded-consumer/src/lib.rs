#![doc = include_str!("../README.md")]

mod budget;
mod config;
mod consumer;
mod deadline;
mod dispatch;
mod error;
mod handler;
mod key;
mod mailbox;
pub mod metrics;
mod shard;
mod stats;
mod trace;
mod turn;

#[doc(inline)]
pub use config::{RetryPolicy, ShardedConsumerBuilder};
#[doc(inline)]
pub use consumer::{KeyActor, KeyInfo, ShardedConsumer};
#[doc(inline)]
pub use error::{Error, Result};
#[doc(inline)]
pub use handler::{Handler, Incoming, Outcome, StopReason};
#[doc(inline)]
pub use key::{KeyDecoder, KeyRejected, ShardKey};
#[doc(inline)]
pub use stats::Stats;

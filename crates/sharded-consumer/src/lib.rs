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

/// The text of a caught panic.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

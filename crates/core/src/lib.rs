#![doc = include_str!("../README.md")]

mod backoff;
mod cause;
mod error;
pub mod metrics;
mod retry;
pub mod service;
pub mod supervisor;
pub mod transport;

#[doc(inline)]
pub use backoff::Backoff;
#[doc(inline)]
pub use cause::Cause;
#[doc(inline)]
pub use error::{BoxError, Error, Result};
#[doc(inline)]
pub use retry::RetryPolicy;
#[doc(inline)]
pub use transport::{
    Delivery, DeliveryInfo, DynPublisher, MemoryQueue, Message, Publisher, Receipt, Source,
};

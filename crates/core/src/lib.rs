#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod cause;
mod error;
pub mod metrics;
mod retry;
pub mod service;
pub mod supervisor;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod trace;
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

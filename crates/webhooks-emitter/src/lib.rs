#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod accounting;
mod config;
mod emitter;
mod envelope;
mod error;
mod event;
pub mod metrics;
mod pending;
mod report;
mod shared;
mod sqs;
mod worker;

/// The AWS configuration loader this crate uses.
pub use aws_config;
/// The AWS SDK for SQS this crate is built on (to pass a `Client` or `SdkConfig` through).
pub use aws_sdk_sqs;
/// The JSON crate of [`Event::from_json`].
pub use serde_json;

#[doc(inline)]
pub use config::{
    Compression, DeniedFields, EmitterBuilder, FailureHook, FullPolicy, GroupKey,
    LEGACY_MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES, QUEUE_URL_ENV, RetryPolicy,
};
#[doc(inline)]
pub use emitter::Emitter;
#[doc(inline)]
pub use envelope::{ATTR_EVENT, ATTR_ID, ATTR_TRACEPARENT, ATTR_TRACESTATE};
#[doc(inline)]
pub use error::{Cause, Error};
#[doc(inline)]
pub use event::{Event, EventId};
#[doc(inline)]
pub use report::{FailedEvent, Sent, ShutdownReport, Stats};

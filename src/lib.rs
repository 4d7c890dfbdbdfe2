//! # wharf
//!
//! The umbrella crate of the wharf workspace: Erlang/OTP-grade supervision and honest
//! delivery guarantees for services that talk to message brokers.
//!
//! This crate provides:
//! - [`core`]: supervisors, restart-surviving handles, the `Publisher`/`Source` transport
//!   traits and an in-memory transport (always on; it is `wharf-core`).
//!
//! Each capability crate is re-exported behind a feature of the same name, so a service
//! can depend on `wharf` with the features it needs, or on one focused crate directly.

#[doc(inline)]
pub use wharf_core as core;

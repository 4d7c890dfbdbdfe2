//! # wharf-core
//!
//! The small, stable centre of wharf. (Crate docs are written once the modules land.)

mod backoff;
pub mod supervisor;
pub mod transport;

#[doc(inline)]
pub use backoff::Backoff;

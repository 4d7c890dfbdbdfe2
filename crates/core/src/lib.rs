//! # wharf-core
//!
//! The small, stable centre of wharf. (Crate docs are written once the modules land.)

mod backoff;
mod error;
pub mod service;
pub mod supervisor;
pub mod transport;

#[doc(inline)]
pub use backoff::Backoff;
#[doc(inline)]
pub use error::{BoxError, Error, Result};

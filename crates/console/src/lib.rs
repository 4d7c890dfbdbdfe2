#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod clients;
mod error;
#[cfg(feature = "jobs")]
mod jobs;
mod layout;
mod routes;
mod security;
mod serve;
#[cfg(feature = "supervision")]
mod service;
mod state;

#[doc(inline)]
pub use builder::{Console, ConsoleBuilder};
#[doc(inline)]
pub use serve::{DEFAULT_ADDR, Served, serve};

/// The router type [`ConsoleBuilder::build`] returns (re-exported from axum).
pub use axum::Router;

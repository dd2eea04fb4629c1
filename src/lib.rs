//! Candor: an explainable, consent-aware model-serving gateway for ad-targeting
//! models.
//!
//! The crate is organised by domain. [`models`] loads and checks model
//! packages, [`inference`] runs them through ONNX Runtime off the async
//! runtime, [`gateway`] is the scoring service in plain Rust, and [`grpc`] is
//! the only place that knows protobuf. [`cli`] holds the `candor` commands;
//! the binary is a thin wrapper around it. See `ARCHITECTURE.md`.

pub mod access;
pub mod audit;
pub mod cli;
pub mod config;
pub mod consent;
pub mod decisions;
pub mod error;
pub mod explain;
pub mod gateway;
pub mod grpc;
pub mod inference;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod monitor;
pub mod paging;
pub mod printable;
pub mod store;
pub mod telemetry;
pub mod why;

pub use config::Config;
pub use error::Error;
pub use gateway::Gateway;
pub use grpc::{ServeError, serve};

//! The gateway's error type: every way a request can fail, in domain terms.
//!
//! Each layer has its own error ([`LookupError`], [`InferenceError`],
//! [`PackageError`], ...); this enum gathers them, and `src/grpc/status.rs`
//! maps it exhaustively to gRPC status codes.

use crate::{
    consent::{SignalError, ledger::LedgerError},
    explain::pool::PoolError,
    inference::{InferenceError, runtime::RuntimeError},
    models::{LookupError, PackageError},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("the gateway is still loading its models")]
    NotReady,
    #[error(transparent)]
    ExplainPool(#[from] PoolError),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("internal error: {0}")]
    Internal(String),
}

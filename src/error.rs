//! The gateway's error type: every way a request can fail, in domain terms.
//!
//! Each layer has its own error ([`LookupError`], [`InferenceError`],
//! [`PackageError`], ...); this enum gathers them, and `src/grpc/status.rs`
//! maps it exhaustively to gRPC status codes.

use crate::{
    access::AccessError,
    consent::SignalError,
    explain::pool::PoolError,
    inference::{InferenceError, runtime::RuntimeError},
    models::{LookupError, PackageError},
    store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No decision with this id: never made, erased, or past retention.
    #[error("decision_id: no decision {0} (never made, erased, or past its retention)")]
    UnknownDecision(String),
    /// No credential, or one that does not hold.
    #[error(transparent)]
    Unauthenticated(#[from] AccessError),
    /// Something the request names does not exist; the message names the
    /// field.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The answer would not fit in one message (`max_message_bytes`); the
    /// message says what to send instead.
    #[error("{0}")]
    TooLarge(String),
    /// The request is sound but the state does not allow it now.
    #[error("{0}")]
    FailedPrecondition(String),
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

impl Error {
    /// An answer for `rows` rows (sent in `field`) of `size` bytes, over
    /// the `limit` the gateway sends, with how many rows would fit. Rows
    /// differ in size, so the advice keeps a fiftieth in hand.
    pub fn answer_too_large(field: &str, rows: usize, size: usize, limit: usize) -> Self {
        let fit = (rows * limit / size * 49 / 50).max(1);
        Self::TooLarge(format!(
            "{field}: the answer for {rows} rows is {size} bytes, over the {limit} the gateway sends (max_message_bytes); send at most {fit} rows per call"
        ))
    }
}

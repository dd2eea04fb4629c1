//! The one mapping from domain errors to gRPC status codes.

use tonic::{Code, Status};

use crate::{
    consent::ledger::LedgerError, error::Error, explain::pool::PoolError,
    inference::InferenceError, models::LookupError,
};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument(_) | Error::Signal(_) => Code::InvalidArgument,
            Error::Ledger(inner) => match inner {
                LedgerError::Busy(_) | LedgerError::ShutDown => Code::Unavailable,
                LedgerError::Full(_) => Code::ResourceExhausted,
                LedgerError::Open { .. }
                | LedgerError::Key { .. }
                | LedgerError::Sqlite(_)
                | LedgerError::Corrupt { .. } => Code::Internal,
            },
            Error::Lookup(LookupError::UnknownModel(_) | LookupError::UnknownVersion { .. }) => {
                Code::NotFound
            }
            Error::NotReady => Code::Unavailable,
            Error::ExplainPool(PoolError::Overloaded(_)) => Code::ResourceExhausted,
            Error::ExplainPool(PoolError::ShutDown) => Code::Unavailable,
            Error::Inference(inner) => match inner {
                InferenceError::Overloaded(_) => Code::ResourceExhausted,
                InferenceError::ShutDown => Code::Unavailable,
                InferenceError::Runtime(_) | InferenceError::OutputShape { .. } => Code::Internal,
            },
            // Packages and the runtime are loaded at start-up; reaching a
            // handler with one of these means the server is misconfigured.
            Error::Package(_) | Error::Runtime(_) => Code::FailedPrecondition,
            Error::Internal(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        Status::new(code, e.to_string())
    }
}

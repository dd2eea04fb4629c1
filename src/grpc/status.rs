//! The one mapping from domain errors to gRPC status codes.

use tonic::{Code, Status};

use crate::{
    error::Error, explain::pool::PoolError, inference::InferenceError, models::LookupError,
    store::StoreError,
};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument(_) | Error::Signal(_) => Code::InvalidArgument,
            Error::Store(inner) => match inner {
                StoreError::Busy(_) | StoreError::ShutDown => Code::Unavailable,
                StoreError::Full(_) => Code::ResourceExhausted,
                StoreError::Erased => Code::Aborted,
                StoreError::Open { .. }
                | StoreError::Key { .. }
                | StoreError::Sqlite(_)
                | StoreError::Corrupt { .. } => Code::Internal,
            },
            Error::UnknownDecision(_) | Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Lookup(
                LookupError::UnknownModel(_)
                | LookupError::UnknownVersion { .. }
                | LookupError::NoCanary(_),
            ) => Code::NotFound,
            Error::NotReady => Code::Unavailable,
            Error::ExplainPool(PoolError::Overloaded(_)) => Code::ResourceExhausted,
            Error::ExplainPool(PoolError::ShutDown) => Code::Unavailable,
            Error::Inference(inner) => match inner {
                InferenceError::Overloaded(_) => Code::ResourceExhausted,
                InferenceError::ShutDown => Code::Unavailable,
                InferenceError::Runtime(_) | InferenceError::OutputShape { .. } => Code::Internal,
            },
            // The runtime is loaded at start-up; a package error reaching a
            // handler is a deployment the models folder does not allow.
            Error::Package(_) | Error::Runtime(_) => Code::FailedPrecondition,
            Error::Internal(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        Status::new(code, e.to_string())
    }
}

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
                StoreError::Busy(_) | StoreError::ShutDown | StoreError::Replaced(_) => {
                    Code::Unavailable
                }
                StoreError::Full(_) => Code::ResourceExhausted,
                StoreError::Erased => Code::Aborted,
                StoreError::ObjectionStands { .. } => Code::FailedPrecondition,
                StoreError::Damaged(_) => Code::DataLoss,
                StoreError::Open { .. }
                | StoreError::Key { .. }
                | StoreError::NoInputKey
                | StoreError::Sqlite(_)
                | StoreError::Corrupt { .. } => Code::Internal,
            },
            Error::UnknownDecision(_) | Error::NotFound(_) => Code::NotFound,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            // gRPC's guide: RESOURCE_EXHAUSTED for a message over the size
            // limit, the code clients read as "ask for less".
            Error::TooLarge(_) => Code::ResourceExhausted,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::Lookup(
                LookupError::UnknownModel { .. }
                | LookupError::UnknownVersion { .. }
                | LookupError::NoCanary(_),
            ) => Code::NotFound,
            Error::Lookup(LookupError::ProductionNotLoaded { .. }) => Code::FailedPrecondition,
            Error::NotReady => Code::Unavailable,
            Error::ExplainPool(PoolError::Overloaded(_)) => Code::ResourceExhausted,
            Error::ExplainPool(PoolError::ShutDown) => Code::Unavailable,
            Error::Inference(inner) => match inner {
                InferenceError::Overloaded(_) => Code::ResourceExhausted,
                InferenceError::ShutDown => Code::Unavailable,
                // Scoring tells the model's fault from the request's first
                // (`gateway::not_finite_is_named`); any other is the request's.
                InferenceError::NonFinite { .. } => Code::InvalidArgument,
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
        Status::new(code, bounded(e.to_string()))
    }
}

/// The longest message a status carries. Messages quote what the caller
/// sent, and a status travels in HTTP/2 headers, which peers cap (tonic
/// and grpc-go at 8 KiB in all): quoting a 20 kB model name whole would
/// turn a precise NOT_FOUND into a transport error that names nothing.
const MAX_MESSAGE: usize = 1024;

/// Cuts an over-long message in its middle, where the quoted value is:
/// messages lead with the field and end with what is wrong with it.
fn bounded(message: String) -> String {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let floor = |mut i: usize| {
        while !message.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let head = floor(MAX_MESSAGE / 2);
    let tail = floor(message.len() - MAX_MESSAGE / 4);
    format!(
        "{} […{} bytes cut…] {}",
        &message[..head],
        tail - head,
        &message[tail..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_keep_their_field_and_their_problem() {
        let quoted = "é".repeat(10_000);
        let status = Status::from(Error::NotFound(format!(
            "model.name: no model {quoted:?} is loaded"
        )));
        let message = status.message();
        assert_eq!(status.code(), Code::NotFound);
        assert!(message.len() <= MAX_MESSAGE + 40, "{} bytes", message.len());
        assert!(message.starts_with("model.name: no model \"é"), "{message}");
        assert!(message.ends_with("é\" is loaded"), "{message}");
        assert!(message.contains("bytes cut"));
        let short = Status::from(Error::NotFound("model.name: no model \"x\"".into()));
        assert_eq!(short.message(), "model.name: no model \"x\"");
    }

    /// Values that drive a model to NaN are the request's to change, and
    /// the answer names the row.
    #[test]
    fn a_score_that_is_not_finite_is_the_requests() {
        let status = Status::from(Error::Inference(InferenceError::NonFinite {
            row: 3,
            value: f32::NAN,
        }));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("rows[3]: "), "{status:?}");
    }
}

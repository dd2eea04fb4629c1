//! Coverage-guided fuzz target for gRPC request decoding.
//!
//! A gRPC request body is untrusted bytes: tonic hands them to
//! `prost::Message::decode` for the method's request type, and the handler
//! turns the message into a domain request with a `TryFrom` conversion
//! (`src/grpc/convert.rs`, `src/grpc/consent.rs`). Neither step may panic on
//! any input. The whole input is decoded as every request message of the
//! `candor.v1` services (`proto/candor/v1/*.proto`); each message that decodes
//! goes through its conversion, when it has one, and every result is
//! `Debug`-formatted. Score and batch requests that convert also have their
//! consent signals decoded, the gateway's next step. The Open Inference
//! Protocol's `ModelInferRequest` (`src/grpc/oip.rs`: tensor bytes, shapes,
//! parameters) and the admin requests go the same way. See `README.md`.
#![no_main]

use candor::{
    consent::service::{RecordRequest, WithdrawRequest},
    gateway::{BatchRequest, ExplainRequest, RolloutChange, ScoreRequest},
    grpc::{Infer, inference, pb},
    models::ModelSelector,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Decodes `data` as `$message`; on success formats it and, for each
/// `$domain`, converts a copy with `$domain::try_from` and formats the
/// result (the value or the error's message).
macro_rules! decode {
    ($data:expr, $message:ty $(=> $domain:ty)*) => {
        if let Ok(message) = <$message>::decode($data) {
            std::hint::black_box(format!("{message:?}"));
            $(convert::<$message, $domain>(message.clone());)*
        }
    };
}

fn convert<M, D>(message: M) -> Option<D>
where
    D: TryFrom<M> + std::fmt::Debug,
    D::Error: std::fmt::Display,
{
    match D::try_from(message) {
        Ok(domain) => {
            std::hint::black_box(format!("{domain:?}"));
            Some(domain)
        }
        Err(e) => {
            std::hint::black_box(e.to_string());
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // ScoringService.
    if let Ok(message) = pb::ScoreRequest::decode(data) {
        std::hint::black_box(format!("{message:?}"));
        if let Some(score) = convert::<_, ScoreRequest>(message) {
            let _ = std::hint::black_box(score.subject.signals.decode());
        }
    }
    if let Ok(message) = pb::ScoreBatchRequest::decode(data) {
        std::hint::black_box(format!("{message:?}"));
        if let Some(batch) = convert::<_, BatchRequest>(message) {
            let _ = std::hint::black_box(batch.subject.signals.decode());
        }
    }

    // ExplainService.
    decode!(data, pb::ExplainRequest => ExplainRequest);
    decode!(data, pb::ExplainBatchRequest => ExplainRequest);

    // ConsentService.
    decode!(data, pb::RecordConsentRequest => RecordRequest);
    decode!(data, pb::WithdrawConsentRequest => WithdrawRequest);
    decode!(data, pb::GetConsentRequest);
    decode!(data, pb::GetConsentHistoryRequest);
    decode!(data, pb::VerifyLedgerRequest);
    decode!(data, pb::EraseSubjectRequest);

    // ExplanationService: no conversions; the handlers read the fields
    // (and the audience enum) themselves.
    decode!(data, pb::GetExplanationRequest);
    decode!(data, pb::ListDecisionsRequest);
    decode!(data, pb::ExportSubjectDataRequest);

    // The Open Inference Protocol.
    decode!(data, inference::ModelInferRequest => Infer);

    // AdminService.
    decode!(data, pb::SetRolloutRequest => RolloutChange);
    decode!(data, pb::ModelVersionRequest);
    decode!(data, pb::AttributionDriftRequest);
    decode!(data, pb::FairnessReportRequest);

    // ModelService.
    decode!(data, pb::ListModelsRequest);
    if let Ok(message) = pb::DescribeModelRequest::decode(data) {
        std::hint::black_box(format!("{message:?}"));
        convert::<_, ModelSelector>(message.model);
    }
});

//! The gRPC edge: the only module that knows protobuf types.
//!
//! Handlers are thin: they convert messages into domain requests with
//! `TryFrom` (see [`convert`]), call the [`Gateway`], and convert the result
//! back. Every domain error becomes a status in one place ([`status`]).

mod auth;
pub mod client;
mod consent;
mod convert;
mod explain;
mod models;
mod scoring;
mod status;
mod why;

use std::{future::Future, sync::Arc};

use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::ServingStatus;

use crate::gateway::Gateway;

/// Generated protobuf and gRPC code for `candor.v1`.
pub mod pb {
    tonic::include_proto!("candor.v1");

    /// Encoded descriptors of every served file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/candor_descriptor.bin"));
}

use pb::{
    consent_service_server::ConsentServiceServer, explain_service_server::ExplainServiceServer,
    explanation_service_server::ExplanationServiceServer, model_service_server::ModelServiceServer,
    scoring_service_server::ScoringServiceServer,
};

/// Serves the gateway's gRPC API on `listener` until `shutdown` resolves, then
/// drains in-flight calls. Health reports NOT_SERVING until the gateway's
/// models are loaded.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut ready = gateway.readiness();
    // Set the first status before accepting calls, so no client can see the
    // reporter's own initial SERVING while the models are still loading.
    let initial = *ready.borrow_and_update();
    set_health(&health, initial).await;
    let health_task = tokio::spawn(async move {
        while ready.changed().await.is_ok() {
            let now = *ready.borrow_and_update();
            set_health(&health, now).await;
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");

    let limit = gateway.config().max_message_bytes;
    let scoring = ScoringServiceServer::new(scoring::Scoring::new(gateway.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let models = ModelServiceServer::new(models::Models::new(gateway.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let explain = ExplainServiceServer::new(explain::Explain::new(gateway.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let consent = ConsentServiceServer::new(consent::Consent::new(gateway.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let why = ExplanationServiceServer::new(why::Why::new(gateway.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let result = Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(scoring)
        .add_service(models)
        .add_service(explain)
        .add_service(consent)
        .add_service(why)
        .serve_with_incoming_shutdown(
            // Small replies must not wait for Nagle's algorithm and the
            // peer's delayed ACK: that stalls a call for ~40 ms.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    health_task.abort();
    result
}

/// The caller's `x-request-id` when it is a sensible token, else a new
/// UUIDv7: it follows the decision into the record and the logs.
fn request_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// When the caller stops waiting, from its `grpc-timeout` header (e.g.
/// "250m"), less a margin for the reply to travel: work that can be cut short
/// stops in time.
fn deadline(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = amount.parse().ok()?;
    let timeout = match unit {
        "H" => std::time::Duration::from_secs(amount.saturating_mul(3600)),
        "M" => std::time::Duration::from_secs(amount.saturating_mul(60)),
        "S" => std::time::Duration::from_secs(amount),
        "m" => std::time::Duration::from_millis(amount),
        "u" => std::time::Duration::from_micros(amount),
        "n" => std::time::Duration::from_nanos(amount),
        _ => return None,
    };
    // Keep a tenth (at least 2 ms) for the reply.
    let margin = (timeout / 10).max(std::time::Duration::from_millis(2));
    std::time::Instant::now().checked_add(timeout.saturating_sub(margin))
}

async fn set_health(health: &tonic_health::server::HealthReporter, ready: bool) {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for service in [
        "",
        SCORING_SERVICE,
        MODEL_SERVICE,
        EXPLAIN_SERVICE,
        CONSENT_SERVICE,
        EXPLANATION_SERVICE,
    ] {
        health.set_service_status(service, status).await;
    }
}

const SCORING_SERVICE: &str =
    <ScoringServiceServer<scoring::Scoring> as tonic::server::NamedService>::NAME;
const EXPLAIN_SERVICE: &str =
    <ExplainServiceServer<explain::Explain> as tonic::server::NamedService>::NAME;
const CONSENT_SERVICE: &str =
    <ConsentServiceServer<consent::Consent> as tonic::server::NamedService>::NAME;
const EXPLANATION_SERVICE: &str =
    <ExplanationServiceServer<why::Why> as tonic::server::NamedService>::NAME;
const MODEL_SERVICE: &str =
    <ModelServiceServer<models::Models> as tonic::server::NamedService>::NAME;

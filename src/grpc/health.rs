//! `grpc.health.v1` as its specification has it. tonic-health keeps each
//! service's status; this wrapper only changes `Watch` of a service the
//! server does not know: the specification answers SERVICE_UNKNOWN and
//! keeps the call open (the service may become known later), where
//! tonic-health ends the call with NOT_FOUND, which a watching client
//! reads as its call failing rather than as the service being unknown.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status};
use tonic_health::{
    pb::{
        HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
        health_server::Health as HealthApi,
    },
    server::{HealthReporter, HealthService},
};

pub(super) use tonic_health::pb::health_server::HealthServer;

type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

pub(super) struct Health(HealthService);

impl Health {
    pub(super) fn new(reporter: HealthReporter) -> Self {
        Self(HealthService::from_health_reporter(reporter))
    }
}

#[tonic::async_trait]
impl HealthApi for Health {
    type WatchStream = Statuses;

    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.0.check(request).await
    }

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let statuses: Statuses = match self.0.watch(request).await {
            Ok(known) => Box::pin(known.into_inner()),
            Err(e) if e.code() == Code::NotFound => Box::pin(
                tokio_stream::once(Ok(HealthCheckResponse {
                    status: ServingStatus::ServiceUnknown.into(),
                }))
                .chain(tokio_stream::pending()),
            ),
            Err(e) => return Err(e),
        };
        Ok(Response::new(statuses))
    }
}

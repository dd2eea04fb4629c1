//! `candor.v1.ScoringService` handlers.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::{self, scoring_service_server::ScoringService};
use crate::gateway::Gateway;

pub struct Scoring {
    gateway: Arc<Gateway>,
}

impl Scoring {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

#[tonic::async_trait]
impl ScoringService for Scoring {
    async fn score(
        &self,
        request: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        let decision = self.gateway.score(request.into_inner().try_into()?).await?;
        Ok(Response::new(pb::ScoreResponse {
            decision: Some(decision.into()),
        }))
    }

    async fn score_batch(
        &self,
        request: Request<pb::ScoreBatchRequest>,
    ) -> Result<Response<pb::ScoreBatchResponse>, Status> {
        let decisions = self
            .gateway
            .score_batch(request.into_inner().try_into()?)
            .await?;
        Ok(Response::new(pb::ScoreBatchResponse {
            decisions: decisions.into_iter().map(Into::into).collect(),
        }))
    }
}

//! `candor.v1.ScoringService` handlers.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::{self, scoring_service_server::ScoringService};
use prost::Message as _;

use crate::gateway::{AnswerSize, BatchRequest, Decision, Gateway, ScoreRequest};

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
        let request_id = super::request_id(request.metadata());
        let deadline = super::reply_by(&request);
        let mut score: ScoreRequest = request.into_inner().try_into()?;
        score.request_id = request_id;
        score.deadline = deadline;
        let decision = self.gateway.score(score).await?;
        Ok(Response::new(pb::ScoreResponse {
            decision: Some(decision.into()),
        }))
    }

    async fn score_batch(
        &self,
        request: Request<pb::ScoreBatchRequest>,
    ) -> Result<Response<pb::ScoreBatchResponse>, Status> {
        let request_id = super::request_id(request.metadata());
        let deadline = super::reply_by(&request);
        let mut batch: BatchRequest = request.into_inner().try_into()?;
        batch.request_id = request_id;
        batch.deadline = deadline;
        let decisions = self.gateway.score_batch(batch).await?;
        Ok(Response::new(answer(decisions)))
    }
}

/// What a `ScoreBatch` answer for some decisions will weigh.
pub(super) fn answer_size() -> AnswerSize {
    AnswerSize {
        field: "rows",
        bytes: Arc::new(|decisions| match decisions {
            // Decisions without attributions share their provenance, model
            // and shape: each weighs what the first does.
            [first, ..] if decisions.iter().all(|d| d.attribution.is_none()) => {
                answer(vec![first.clone()]).encoded_len() * decisions.len()
            }
            _ => answer(decisions.to_vec()).encoded_len(),
        }),
    }
}

fn answer(decisions: Vec<Decision>) -> pb::ScoreBatchResponse {
    pb::ScoreBatchResponse {
        decisions: decisions.into_iter().map(Into::into).collect(),
    }
}

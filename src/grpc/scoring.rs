//! `candor.v1.ScoringService` handlers.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::{self, scoring_service_server::ScoringService};
use crate::{
    error::Error,
    gateway::{BatchRequest, Gateway, ScoreRequest},
};

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
        batch.request_id = request_id.clone();
        batch.deadline = deadline;
        let decisions = self.gateway.score_batch(batch).await?;
        let response = pb::ScoreBatchResponse {
            decisions: decisions.into_iter().map(Into::into).collect(),
        };
        too_large(
            &response,
            self.gateway.config().max_message_bytes,
            &request_id,
        )?;
        Ok(Response::new(response))
    }
}

/// Refuses an answer larger than the gateway sends (inline attributions
/// make a row's answer some kilobytes), saying what would fit: tonic would
/// otherwise fail it as OUT_OF_RANGE, naming nothing. Its decisions were
/// made and recorded under the call's request id.
fn too_large(
    response: &pb::ScoreBatchResponse,
    limit: usize,
    request_id: &str,
) -> Result<(), Error> {
    use prost::Message;
    let size = response.encoded_len();
    if size <= limit {
        return Ok(());
    }
    let rows = response.decisions.len();
    let fit = (rows * limit / size).max(1);
    Err(Error::TooLarge(format!(
        "rows: the answer for {rows} rows is {size} bytes, over the {limit} the gateway sends (max_message_bytes); send at most {fit} rows per call, or ask for deferred attributions. These decisions are recorded under request id {request_id}"
    )))
}

//! `candor.v1.ExplainService` handlers.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::{self, explain_service_server::ExplainService};
use crate::gateway::{ExplainRequest, Gateway};

pub struct Explain {
    gateway: Arc<Gateway>,
}

impl Explain {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

#[tonic::async_trait]
impl ExplainService for Explain {
    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let deadline = super::reply_by(&request);
        let mut explain: ExplainRequest = request.into_inner().try_into()?;
        explain.deadline = deadline;
        let mut results = self.gateway.explain(explain).await?;
        Ok(Response::new(results.remove(0).into()))
    }

    async fn explain_batch(
        &self,
        request: Request<pb::ExplainBatchRequest>,
    ) -> Result<Response<pb::ExplainBatchResponse>, Status> {
        let deadline = super::reply_by(&request);
        let mut explain: ExplainRequest = request.into_inner().try_into()?;
        explain.deadline = deadline;
        let results = self.gateway.explain(explain).await?;
        let response = pb::ExplainBatchResponse {
            results: results.into_iter().map(Into::into).collect(),
        };
        super::fits(
            &response,
            response.results.len(),
            "rows",
            self.gateway.config().max_message_bytes,
        )?;
        Ok(Response::new(response))
    }
}

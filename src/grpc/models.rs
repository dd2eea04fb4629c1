//! `candor.v1.ModelService` handlers.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    convert::{describe, summarize},
    pb::{self, model_service_server::ModelService},
};
use crate::{gateway::Gateway, models::ModelSelector};

pub struct Models {
    gateway: Arc<Gateway>,
}

impl Models {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

#[tonic::async_trait]
impl ModelService for Models {
    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let registry = self.gateway.registry()?;
        let models = registry
            .models()
            .map(|(name, m)| pb::ModelSummary {
                name: name.clone(),
                default_version: m.default.to_string(),
                versions: m
                    .versions
                    .iter()
                    .map(|(v, p)| summarize(p, *v == m.default))
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }

    async fn describe_model(
        &self,
        request: Request<pb::DescribeModelRequest>,
    ) -> Result<Response<pb::ModelDescription>, Status> {
        let selector: ModelSelector = request.into_inner().model.try_into()?;
        let package = self.gateway.resolve(&selector)?;
        let registry = self.gateway.registry()?;
        let is_default = registry
            .models()
            .any(|(name, m)| name == package.name() && &m.default == package.version());
        let description = describe(&package, is_default);
        super::fits_whole(
            &description,
            &format!(
                "model: the description of {} {}",
                package.name(),
                package.version()
            ),
            self.gateway.config().max_message_bytes,
        )?;
        Ok(Response::new(description))
    }
}

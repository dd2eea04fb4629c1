//! `candor.v1.AdminService` handlers: deploying models while serving,
//! rollouts, attribution drift, shadow outputs and the fairness monitor.

use std::sync::Arc;

use semver::Version;
use tonic::{Request, Response, Status};

use super::{
    auth,
    pb::{self, admin_service_server::AdminService},
};
use crate::{
    error::Error,
    gateway::{DriftReport, Gateway, Reloaded, RolloutChange},
    models::{
        ModelVersions, VersionRef,
        rollout::{Canary, Rollout},
    },
    monitor::AttributeFairness,
    store::now_ms,
};

pub struct Admin {
    gateway: Arc<Gateway>,
}

impl Admin {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

fn version(field: &str, v: &str) -> Result<Version, Error> {
    Version::parse(v).map_err(|e| {
        Error::InvalidArgument(format!("{field}: {v:?} is not a semantic version ({e})"))
    })
}

fn model_version(r: pb::ModelVersionRequest) -> Result<(String, Version), Error> {
    required("model", &r.model)?;
    let v = version("version", required("version", &r.version)?)?;
    Ok((r.model, v))
}

fn optional_version(field: &str, v: &str) -> Result<Option<Version>, Error> {
    (!v.is_empty()).then(|| version(field, v)).transpose()
}

fn required<'a>(field: &str, v: &'a str) -> Result<&'a str, Error> {
    if v.is_empty() {
        return Err(Error::InvalidArgument(format!("{field}: is required")));
    }
    Ok(v)
}

impl TryFrom<pb::SetRolloutRequest> for RolloutChange {
    type Error = Error;

    fn try_from(r: pb::SetRolloutRequest) -> Result<Self, Error> {
        let canary = optional_version("canary", &r.canary)?;
        if canary.is_none() && r.canary_percent != 0.0 {
            return Err(Error::InvalidArgument(
                "canary_percent: needs a canary version".into(),
            ));
        }
        Ok(Self {
            model: required("model", &r.model)?.to_owned(),
            production: optional_version("production", &r.production)?,
            canary: canary.map(|version| Canary {
                version,
                percent: r.canary_percent,
            }),
            shadows: r
                .shadows
                .iter()
                .enumerate()
                .map(|(i, v)| version(&format!("shadows[{i}]"), v))
                .collect::<Result<_, _>>()?,
        })
    }
}

fn rollout(model: &str, served: &ModelVersions, file: &Rollout) -> pb::Rollout {
    let r = &served.rollout;
    pb::Rollout {
        model: model.to_owned(),
        production: served.default.to_string(),
        canary: r
            .canary
            .as_ref()
            .map_or(String::new(), |c| c.version.to_string()),
        canary_percent: r.canary.as_ref().map_or(0.0, |c| c.percent),
        shadows: r.shadows.iter().map(Version::to_string).collect(),
        unloaded: file.unloaded.iter().map(Version::to_string).collect(),
        loaded: served.versions.keys().map(Version::to_string).collect(),
        file_problem: not_in_effect(served, file),
    }
}

/// What a readable `rollout.toml` names that is not in effect, because the
/// version is not loaded: the answer shows the rollout in effect, and the
/// operator must see the difference from the file.
fn not_in_effect(served: &ModelVersions, file: &Rollout) -> String {
    let loaded = |v: &Version| served.versions.contains_key(v);
    let mut notes = Vec::new();
    if let Some(p) = file.production.as_ref().filter(|p| !loaded(p)) {
        notes.push(if *p == served.default {
            format!(
                "rollout.toml: production {p} is not loaded; requests that name no version are refused until it loads or the rollout names another"
            )
        } else {
            format!(
                "rollout.toml: production {p} is not loaded, so production stays {} until a restart, which applies the file: requests that name no version are then refused until {p} loads",
                served.default
            )
        });
    }
    if let Some(c) = file.canary.as_ref().filter(|c| !loaded(&c.version)) {
        notes.push(format!(
            "rollout.toml: canary {} is not loaded; it takes its {}% of subjects once it loads",
            c.version, c.percent
        ));
    }
    for s in file.shadows.iter().filter(|s| !loaded(s)) {
        notes.push(format!(
            "rollout.toml: shadow {s} is not loaded; it is scored once it loads"
        ));
    }
    notes.join("; ")
}

impl From<Reloaded> for pb::ReloadModelsResponse {
    fn from(r: Reloaded) -> Self {
        Self {
            loaded: r.loaded.into_iter().map(Into::into).collect(),
            unloaded: r.unloaded.into_iter().map(Into::into).collect(),
            refused: r.refused,
        }
    }
}

impl From<DriftReport> for pb::AttributionDriftReport {
    fn from(r: DriftReport) -> Self {
        Self {
            live: Some(r.live.into()),
            candidate: Some(r.candidate.into()),
            comparison: r.comparison.to_owned(),
            live_decisions: r.live_decisions,
            candidate_decisions: r.candidate_decisions,
            features: r
                .features
                .into_iter()
                .map(|f| pb::FeatureDrift {
                    rank_change: f.rank_change(),
                    feature: f.feature,
                    live_mean_abs: f.live_mean_abs,
                    candidate_mean_abs: f.candidate_mean_abs,
                    live_rank: f.live_rank,
                    candidate_rank: f.candidate_rank,
                })
                .collect(),
        }
    }
}

impl From<AttributeFairness> for pb::AttributeFairness {
    fn from(a: AttributeFairness) -> Self {
        Self {
            model: a.model,
            attribute: a.attribute,
            groups: a
                .groups
                .into_iter()
                .map(|g| pb::GroupRate {
                    group: g.group,
                    decisions: g.decisions,
                    selected: g.selected,
                    selection_rate: g.selection_rate,
                    ratio_to_most_favoured: g.ratio_to_most_favoured,
                })
                .collect(),
            disparate_impact: a.disparate_impact,
            flagged: a.flagged,
        }
    }
}

impl Admin {
    fn rollout_of(&self, model: &str) -> Result<pb::Rollout, Error> {
        let registry = self.gateway.registry()?;
        let served = registry.model_in("model", model)?;
        // An unreadable file leaves the rollout read before in effect:
        // that is what operators need to see, with why the file is not.
        Ok(
            match Rollout::read(&self.gateway.config().models_dir.join(model)) {
                Ok(file) => rollout(model, served, &file),
                Err(e) => pb::Rollout {
                    file_problem: e.to_string(),
                    ..rollout(model, served, &Rollout::default())
                },
            },
        )
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn reload_models(
        &self,
        _request: Request<pb::ReloadModelsRequest>,
    ) -> Result<Response<pb::ReloadModelsResponse>, Status> {
        Ok(Response::new(self.gateway.reload_models().await?.into()))
    }

    async fn load_model(
        &self,
        request: Request<pb::ModelVersionRequest>,
    ) -> Result<Response<pb::ReloadModelsResponse>, Status> {
        let (model, v) = model_version(request.into_inner())?;
        Ok(Response::new(
            self.gateway.load_model(&model, &v).await?.into(),
        ))
    }

    async fn unload_model(
        &self,
        request: Request<pb::ModelVersionRequest>,
    ) -> Result<Response<pb::ReloadModelsResponse>, Status> {
        let (model, v) = model_version(request.into_inner())?;
        Ok(Response::new(
            self.gateway.unload_model(&model, &v).await?.into(),
        ))
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            self.rollout_of(required("model", &r.model)?)?,
        ))
    }

    async fn set_rollout(
        &self,
        request: Request<pb::SetRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let change: RolloutChange = request.into_inner().try_into()?;
        let model = change.model.clone();
        self.gateway.set_rollout(change).await?;
        Ok(Response::new(self.rollout_of(&model)?))
    }

    async fn attribution_drift(
        &self,
        request: Request<pb::AttributionDriftRequest>,
    ) -> Result<Response<pb::AttributionDriftReport>, Status> {
        let r = request.into_inner();
        let candidate: VersionRef = required("candidate", &r.candidate)?.parse().map_err(|e| {
            Error::InvalidArgument(format!(
                "candidate: {:?} is neither a semantic version ({e}) nor \"canary\"",
                r.candidate
            ))
        })?;
        if r.since_unix_ms < 0 {
            return Err(Error::InvalidArgument(format!(
                "since_unix_ms: {} is before 1970; give 0 for every decision kept, or a time in Unix ms",
                r.since_unix_ms
            ))
            .into());
        }
        let report = self
            .gateway
            .attribution_drift(required("model", &r.model)?, &candidate, r.since_unix_ms)
            .await?;
        Ok(Response::new(report.into()))
    }

    async fn get_shadow_outputs(
        &self,
        request: Request<pb::GetShadowOutputsRequest>,
    ) -> Result<Response<pb::GetShadowOutputsResponse>, Status> {
        let admitted = auth::admitted(&request)?;
        let id = crate::gateway::decision_id(&request.get_ref().decision_id)?;
        let reason = auth::read_reason(request.metadata(), &admitted, admitted.rule)?;
        let outputs = self.gateway.shadow_outputs(&id).await?;
        // Shadow outputs hold a person's feature values: reading them is a
        // staff read of that person's data, on record before they leave.
        let subjects: std::collections::BTreeSet<&str> = outputs
            .iter()
            .filter_map(|o| o.subject_ref.as_deref())
            .collect();
        for subject in subjects {
            auth::record_read(
                &self.gateway,
                request.metadata(),
                &admitted,
                reason.clone(),
                subject,
            )
            .await?;
        }
        Ok(Response::new(pb::GetShadowOutputsResponse {
            decision_id: id,
            outputs: outputs
                .iter()
                .map(|o| pb::ShadowOutput {
                    model: Some(pb::ModelIdentity {
                        name: o.model_name.clone(),
                        version: o.model_version.clone(),
                        sha256: o.model_sha256.clone(),
                    }),
                    score: o.score,
                    attribution: Some((&o.explanation).into()),
                })
                .collect(),
        }))
    }

    async fn fairness_report(
        &self,
        request: Request<pb::FairnessReportRequest>,
    ) -> Result<Response<pb::FairnessReportResponse>, Status> {
        let r = request.into_inner();
        // A name no request could carry would only ever match nothing.
        if !r.attribute.is_empty() {
            crate::monitor::check_name(&r.attribute).map_err(|e| {
                Error::InvalidArgument(format!("attribute: {:?}: {e}", r.attribute))
            })?;
        }
        let registry = self.gateway.registry()?;
        if !r.model.is_empty() {
            // A model that does not exist is not a model with no decisions.
            registry.model_in("model", &r.model).map_err(Error::from)?;
        }
        let monitor = self.gateway.fairness();
        let config = monitor.config();
        // Nor is an attribute the monitor never counts one without groups.
        let counted = r.attribute.is_empty()
            || config.attributes.contains(&r.attribute)
            || registry
                .models()
                .filter(|(name, _)| r.model.is_empty() || **name == r.model)
                .any(|(_, m)| m.audited.contains(&r.attribute));
        if !counted {
            return Err(Error::NotFound(format!(
                "attribute: {:?} is not monitored{}; the monitor counts the columns the manifests audit and fairness.attributes ({})",
                r.attribute,
                if r.model.is_empty() {
                    String::new()
                } else {
                    format!(" for {}", r.model)
                },
                config.attributes.join(", ")
            ))
            .into());
        }
        Ok(Response::new(pb::FairnessReportResponse {
            window_secs: config.window_secs,
            min_disparate_impact: config.min_disparate_impact,
            min_group_decisions: config.min_group_decisions,
            attributes: monitor
                .report(&r.model, &r.attribute, now_ms())
                .into_iter()
                .map(Into::into)
                .collect(),
        }))
    }
}

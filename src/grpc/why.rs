//! `candor.v1.ExplanationService` handlers and their conversions.
//!
//! Who may read which view follows [`super::auth::audience`]: a
//! consumer view needs a token bound to the decision's subject or a staff
//! role; the support view the `support` role; the engineer view the
//! `engineer` role. Access is checked before any attribution is computed.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    auth,
    convert::ms_timestamp as ms,
    page,
    pb::{self, explanation_service_server::ExplanationService},
};
use crate::{
    Error,
    decisions::{DecisionRow, Explanation},
    gateway::{Gateway, ModelIdentity},
    paging::{PageRequest, Scope},
    why::{self, Audience, ConsumerView, Language, ModelFacts},
};

pub struct Why {
    gateway: Arc<Gateway>,
}

impl Why {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

fn identity(row: &DecisionRow) -> ModelIdentity {
    ModelIdentity {
        name: row.model_name.clone(),
        version: row.model_version.clone(),
        sha256: row.model_sha256.clone(),
    }
}

impl TryFrom<pb::ListDecisionsRequest> for PageRequest {
    type Error = Error;

    fn try_from(r: pb::ListDecisionsRequest) -> Result<Self, Error> {
        Ok(Self {
            // Not bounded, like every read of a person's data: see
            // `GetConsentHistoryRequest`'s conversion.
            subject_id: r.subject_id,
            size: page::size("limit", r.limit, 100)?,
            token: r.page_token,
        })
    }
}

/// The view's language, from a request's `language` field.
fn language(asked: &str) -> Result<Language, Error> {
    Language::negotiate(asked).map_err(|why| Error::InvalidArgument(format!("language: {why}")))
}

impl TryFrom<pb::ExportSubjectDataRequest> for (PageRequest, Language) {
    type Error = Error;

    fn try_from(r: pb::ExportSubjectDataRequest) -> Result<Self, Error> {
        let page = PageRequest {
            subject_id: r.subject_id,
            size: page::size("page_size", r.page_size, 1000)?,
            token: r.page_token,
        };
        Ok((page, language(&r.language)?))
    }
}

/// `ListDecisionsResponse.decisions`' field number.
const DECISIONS_FIELD: u32 = 2;

impl From<ConsumerView> for pb::ConsumerView {
    fn from(v: ConsumerView) -> Self {
        Self {
            language: v.language.tag().to_owned(),
            headline: v.headline,
            basis: v.basis.to_owned(),
            main_parameters: v.main_parameters,
            reasons: v
                .reasons
                .into_iter()
                .map(|r| pb::Reason {
                    group: r.group.as_str().to_owned(),
                    text: r.text,
                })
                .collect(),
            consent_line: v.consent_line,
            controls: v
                .controls
                .into_iter()
                .map(|c| pb::Control {
                    kind: c.kind.to_owned(),
                    label: c.label,
                    how: c.how.to_owned(),
                })
                .collect(),
        }
    }
}

impl From<&Explanation> for pb::Attribution {
    fn from(e: &Explanation) -> Self {
        Self {
            method: e.method.clone(),
            method_version: e.method_version.clone(),
            output_space: e.output_space.clone(),
            base_value: e.base_value,
            margin: e.margin,
            features: e
                .features
                .iter()
                .map(|f| pb::FeatureContribution {
                    name: f.name.clone(),
                    value: f.value,
                    contribution: f.contribution,
                    standard_error: f.standard_error,
                    masked: f.masked,
                })
                .collect(),
            groups: e
                .groups
                .iter()
                .map(|g| pb::GroupContribution {
                    name: g.name.clone(),
                    contribution: g.contribution,
                    features: g.features.clone(),
                })
                .collect(),
            additivity_residual: e.residual,
            ort_difference: e.ort_difference,
            base_score: e.base_score,
            compute_micros: 0,
            sample_pairs: e.sample_pairs as u32,
        }
    }
}

#[tonic::async_trait]
impl ExplanationService for Why {
    async fn get_explanation(
        &self,
        request: Request<pb::GetExplanationRequest>,
    ) -> Result<Response<pb::GetExplanationResponse>, Status> {
        let admitted = auth::admitted(&request)?;
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let audience = match pb::Audience::try_from(r.audience) {
            Ok(pb::Audience::Unspecified | pb::Audience::Consumer) => Audience::Consumer,
            Ok(pb::Audience::Support) => Audience::Support,
            Ok(pb::Audience::Engineer) => Audience::Engineer,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "audience: {} is not a known audience",
                    r.audience
                )));
            }
        };
        let rule = match audience {
            Audience::Consumer => &auth::audience::CONSUMER,
            Audience::Support => &auth::audience::SUPPORT,
            Audience::Engineer => &auth::audience::ENGINEER,
        };
        // The audience's role first, before any look-up: a refusal that
        // came only for ids that exist would tell which do.
        auth::check(&admitted.caller, rule).map_err(|refused| {
            Status::permission_denied(format!(
                "audience: the {} view is not for this caller; {}",
                match audience {
                    Audience::Consumer => "consumer",
                    Audience::Support => "support",
                    Audience::Engineer => "engineer",
                },
                refused.message()
            ))
        })?;
        let reason = auth::read_reason(&metadata, &admitted, rule)?;
        let language = language(&r.language)?;
        let (row, served) = self
            .gateway
            .explanation(&r.decision_id, |row| {
                // A subject learns nothing of another person's decision, not
                // even that its id exists: ids are time-ordered, so a
                // difference between "denied" and "unknown" could be probed.
                if auth::about_another_subject(&admitted.caller, row.subject_ref.as_deref()) {
                    return Err(Error::UnknownDecision(row.decision_id.clone()));
                }
                Ok(())
            })
            .await?;
        if let Some(subject_ref) = row.subject_ref.as_deref() {
            auth::record_read(&self.gateway, &metadata, &admitted, reason, subject_ref).await?;
        }
        // The artefact that made the decision, if it is still there.
        let package = self.gateway.explaining_package(&row).await.ok();
        let min_segment = self.gateway.config().decisions.min_segment_size;
        let consumer = || {
            why::consumer(
                &row,
                package.as_deref().map(ModelFacts::of),
                language,
                min_segment,
            )
            .into()
        };
        let view = match audience {
            Audience::Consumer => pb::get_explanation_response::View::Consumer(consumer()),
            Audience::Support => {
                let trail = self.gateway.consent_trail(&row.provenance).await?;
                let consumer = consumer();
                let tier_explained = why::tier_explained(
                    row.tier,
                    &consumer.basis,
                    row.provenance.masked_features.len(),
                );
                pb::get_explanation_response::View::Support(pb::SupportView {
                    groups: why::grouped(&row, package.as_ref().map(|p| &p.manifest))
                        .into_iter()
                        .map(|g| pb::GroupedContribution {
                            name: g.group.name,
                            contribution: g.group.contribution,
                            features: g.group.features,
                            description: g.description,
                            masked_features: g.masked,
                            feature_contributions: g.contributions,
                        })
                        .collect(),
                    output_space: row
                        .explanation
                        .as_ref()
                        .map_or(String::new(), |e| e.output_space.clone()),
                    base_score: row.explanation.as_ref().map_or(0.0, |e| e.base_score),
                    score: row.score,
                    provenance: Some(row.provenance.as_ref().into()),
                    consent_trail: trail
                        .into_iter()
                        .map(|t| pb::ConsentTrailEntry {
                            record: Some((&t.reference).into()),
                            kind: t.kind.as_str().to_owned(),
                            recorded_at: Some(ms(t.recorded_at_ms)),
                            content_json: t.content.unwrap_or_default(),
                        })
                        .collect(),
                    model_card: package
                        .as_ref()
                        .map(|p| crate::models::card::summary(p))
                        .unwrap_or_default(),
                    consumer: Some(consumer),
                    tier_explained,
                })
            }
            Audience::Engineer => pb::get_explanation_response::View::Engineer(pb::EngineerView {
                attribution: row.explanation.as_ref().map(Into::into),
                provenance: Some(row.provenance.as_ref().into()),
                score: row.score,
            }),
        };
        let answer = pb::GetExplanationResponse {
            decision_id: row.decision_id.clone(),
            decided_at: Some(ms(row.decided_at_ms)),
            model: Some(identity(&row).into()),
            tier: pb::Tier::from(row.tier) as i32,
            view: Some(view),
            served_from: served.as_str().to_owned(),
        };
        super::fits_whole(
            &answer,
            "audience: this view of the decision",
            self.gateway.config().max_message_bytes,
        )?;
        Ok(Response::new(answer))
    }

    async fn list_decisions(
        &self,
        request: Request<pb::ListDecisionsRequest>,
    ) -> Result<Response<pb::ListDecisionsResponse>, Status> {
        let page: PageRequest = request.get_ref().clone().try_into()?;
        auth::for_subject_page(
            &self.gateway,
            &request,
            &page.subject_id,
            Some((Scope::ListDecisions, &page.token)),
        )
        .await?;
        let page = self.gateway.decisions(&page).await?;
        let envelope = pb::ListDecisionsResponse {
            subject_ref: page.subject_ref.clone(),
            decisions: Vec::new(),
            next_page_token: page::longest_token(),
        };
        let (decisions, last) = page::fit(
            &page,
            &envelope,
            self.gateway.config().max_message_bytes,
            DECISIONS_FIELD,
            |row| pb::DecisionSummary {
                decision_id: row.decision_id.clone(),
                decided_at: Some(ms(row.decided_at_ms)),
                model: Some(identity(row).into()),
                tier: pb::Tier::from(row.tier) as i32,
                placement_id: row.placement_id.clone(),
                campaign_id: row.campaign_id.clone(),
                ad_id: row.ad_id.clone(),
                request_id: row.request_id.to_string(),
            },
            |row| Ok(row.position()?),
        )?;
        Ok(Response::new(pb::ListDecisionsResponse {
            next_page_token: last.map_or_else(String::new, |at| {
                self.gateway
                    .page_tokens()
                    .issue(Scope::ListDecisions, &page.subject_ref, at)
            }),
            subject_ref: page.subject_ref,
            decisions,
        }))
    }

    async fn export_subject_data(
        &self,
        request: Request<pb::ExportSubjectDataRequest>,
    ) -> Result<Response<pb::ExportSubjectDataResponse>, Status> {
        let (page, language): (PageRequest, _) = request.get_ref().clone().try_into()?;
        auth::for_subject_page(
            &self.gateway,
            &request,
            &page.subject_id,
            Some((Scope::Export, &page.token)),
        )
        .await?;
        let limit = self.gateway.config().max_message_bytes;
        // The response is four strings: each a one-byte tag and its length,
        // at most as long as the limit's own.
        let framing = 4 * (1 + prost::encoding::encoded_len_varint(limit as u64));
        let export = self
            .gateway
            .export_subject(&page, language, limit.saturating_sub(framing))
            .await?;
        Ok(Response::new(pb::ExportSubjectDataResponse {
            subject_ref: export.subject_ref,
            procedure: export.procedure,
            export_json: export.json,
            next_page_token: export.next_page_token.unwrap_or_default(),
        }))
    }
}

//! A typed client for the scoring API, used by `candor score` and the load
//! harness. It keeps protobuf types inside `src/grpc`: callers pass domain
//! feature rows and get JSON back.

use serde_json::{Value, json};
use tonic::transport::Channel;

use super::pb::{self, scoring_service_client::ScoringServiceClient};
use crate::models::schema::Features;

/// What to score: one row goes through `Score`, several through `ScoreBatch`.
#[derive(Debug, Clone)]
pub struct ScoreCall {
    pub model: String,
    pub version: Option<String>,
    pub subject_id: String,
    pub rows: Vec<Features>,
    pub consent: ConsentSignals,
}

/// The consent signals sent with the call; empty strings are not sent.
#[derive(Debug, Clone, Default)]
pub struct ConsentSignals {
    pub country: String,
    pub region: String,
    /// "adult", "minor" or empty for unknown.
    pub age: String,
    pub tc_string: String,
    pub gpp_string: String,
    pub gpc: bool,
}

fn context(call: &ScoreCall) -> Option<pb::RequestContext> {
    let c = &call.consent;
    Some(pb::RequestContext {
        jurisdiction_country: c.country.clone(),
        jurisdiction_region: c.region.clone(),
        age_status: match c.age.as_str() {
            "adult" => pb::AgeStatus::Adult,
            "minor" => pb::AgeStatus::Minor,
            _ => pb::AgeStatus::Unspecified,
        } as i32,
        tc_string: c.tc_string.clone(),
        gpp_string: c.gpp_string.clone(),
        gpc: c.gpc,
        ..Default::default()
    })
}

/// The request for one row, for callers that drive `Score` themselves.
pub fn score_request(call: &ScoreCall, row: &Features) -> pb::ScoreRequest {
    pb::ScoreRequest {
        model: Some(model_ref(call)),
        subject_id: call.subject_id.clone(),
        features: to_pb(row),
        context: context(call),
        values: vec![],
        explain: None,
    }
}

/// The request for all rows, for callers that drive `ScoreBatch` themselves.
pub fn batch_request(call: &ScoreCall) -> pb::ScoreBatchRequest {
    pb::ScoreBatchRequest {
        model: Some(model_ref(call)),
        subject_id: call.subject_id.clone(),
        context: context(call),
        explain: None,
        rows: call
            .rows
            .iter()
            .map(|r| pb::BatchRow {
                features: to_pb(r),
                ..Default::default()
            })
            .collect(),
    }
}

fn model_ref(call: &ScoreCall) -> pb::ModelRef {
    pb::ModelRef {
        name: call.model.clone(),
        version: call.version.clone().unwrap_or_default(),
    }
}

fn to_pb(row: &Features) -> std::collections::BTreeMap<String, pb::FeatureValue> {
    row.iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect()
}

/// Scores `call` on the server at `channel` and returns the decisions as JSON:
/// one object for one row, an array for several.
pub async fn score(channel: Channel, call: &ScoreCall) -> Result<Value, tonic::Status> {
    let mut client = ScoringServiceClient::new(channel);
    if let [row] = call.rows.as_slice() {
        let response = client.score(score_request(call, row)).await?.into_inner();
        return Ok(response.decision.map(decision_json).unwrap_or(Value::Null));
    }
    let response = client.score_batch(batch_request(call)).await?.into_inner();
    Ok(Value::Array(
        response.decisions.into_iter().map(decision_json).collect(),
    ))
}

fn decision_json(d: pb::Decision) -> Value {
    let model = d.model.unwrap_or_default();
    json!({
        "decision_id": d.decision_id,
        "model": { "name": model.name, "version": model.version, "sha256": model.sha256 },
        "score": d.score,
        "tier": pb::Tier::try_from(d.tier).map_or("unknown", |t| match t {
            pb::Tier::Personalised => "personalised",
            pb::Tier::Contextual => "contextual",
            pb::Tier::Refused => "refused",
            pb::Tier::Unspecified => "unspecified",
        }),
        "decided_at": d.decided_at.map(|t| t.to_string()),
        "provenance": d.provenance.map(|p| json!({
            "regime": p.regime,
            "rules_fired": p.rules_fired,
            "masked_features": p.masked_features,
            "ledger_records": p.ledger_records.iter().map(|r| json!({
                "seq": r.seq, "record_id": r.record_id, "sha256": r.sha256,
            })).collect::<Vec<_>>(),
            "signals_sha256": p.signals_sha256,
            "policy_version": p.policy_version,
            "policy_sha256": p.policy_sha256,
        })),
    })
}

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
}

/// The request for one row, for callers that drive `Score` themselves.
pub fn score_request(call: &ScoreCall, row: &Features) -> pb::ScoreRequest {
    pb::ScoreRequest {
        model: Some(model_ref(call)),
        subject_id: call.subject_id.clone(),
        features: to_pb(row),
        context: None,
        values: vec![],
        explain: None,
    }
}

/// The request for all rows, for callers that drive `ScoreBatch` themselves.
pub fn batch_request(call: &ScoreCall) -> pb::ScoreBatchRequest {
    pb::ScoreBatchRequest {
        model: Some(model_ref(call)),
        subject_id: call.subject_id.clone(),
        context: None,
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
        "decided_at": d.decided_at.map(|t| t.to_string()),
    })
}

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
    /// The rows came as a JSON list: the answer is a list too, however
    /// many they are.
    pub listed: bool,
    pub consent: ConsentSignals,
    /// An API key (role `scorer`), sent as `authorization: Bearer ...`.
    pub token: Option<String>,
    /// The most rows one `ScoreBatch` call carries (the gateway's
    /// `max_batch_rows`); more are sent in turn, in order.
    pub batch_rows: usize,
}

/// The decisions a [`ScoreCall`] made.
#[derive(Debug)]
pub struct Scored {
    /// One object for one row, else an array in the rows' order.
    pub decisions: Value,
    /// A batch after the first that failed: its rows (0-based, end
    /// exclusive) and why. The decisions before it were made; no row from
    /// it on was sent.
    pub failed: Option<(std::ops::Range<usize>, tonic::Status)>,
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

/// The request for `rows`, for callers that drive `ScoreBatch` themselves.
pub fn batch_request(call: &ScoreCall, rows: &[Features]) -> pb::ScoreBatchRequest {
    pb::ScoreBatchRequest {
        model: Some(model_ref(call)),
        subject_id: call.subject_id.clone(),
        context: context(call),
        explain: None,
        rows: rows
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

fn to_pb(row: &Features) -> Vec<pb::Feature> {
    pb::features(row.iter().map(|(k, v)| (k.clone(), v.clone().into())))
}

/// Scores `call` on the server at `channel`: one row through `Score`,
/// more through `ScoreBatch`, in batches of at most `call.batch_rows`. A
/// failure of the first call is the error; one of a later batch leaves the
/// decisions already made, which are recorded, in the answer.
pub async fn score(channel: Channel, call: &ScoreCall) -> Result<Scored, tonic::Status> {
    let mut client = ScoringServiceClient::new(channel);
    let token = call.token.as_deref();
    if let [row] = call.rows.as_slice() {
        let request = authorized(score_request(call, row), token, None)?;
        let response = client.score(request).await?.into_inner();
        let decision = response.decision.map(decision_json).unwrap_or(Value::Null);
        return Ok(Scored {
            decisions: if call.listed {
                Value::Array(vec![decision])
            } else {
                decision
            },
            failed: None,
        });
    }
    let per_call = call.batch_rows.max(1);
    let mut decisions = Vec::with_capacity(call.rows.len());
    let mut failed = None;
    for (n, rows) in call.rows.chunks(per_call).enumerate() {
        let request = authorized(batch_request(call, rows), token, None)?;
        match client.score_batch(request).await {
            Ok(response) => decisions.extend(
                response
                    .into_inner()
                    .decisions
                    .into_iter()
                    .map(decision_json),
            ),
            Err(status) if n == 0 => return Err(status),
            Err(status) => {
                let start = n * per_call;
                failed = Some((start..start + rows.len(), status));
                break;
            }
        }
    }
    Ok(Scored {
        decisions: Value::Array(decisions),
        failed,
    })
}

fn decision_json(d: pb::Decision) -> Value {
    let model = d.model.unwrap_or_default();
    json!({
        "decision_id": d.decision_id,
        "model": { "name": model.name, "version": model.version, "sha256": model.sha256 },
        "score": d.score,
        "tier": super::convert::tier_name(d.tier),
        "decided_at": d.decided_at.map(|t| t.to_string()),
        "provenance": d.provenance.as_ref().map(super::convert::provenance_json),
    })
}

/// A "why" question about one recorded decision.
#[derive(Debug, Clone)]
pub struct WhyCall {
    pub decision_id: String,
    /// "consumer", "support" or "engineer".
    pub audience: String,
    pub language: String,
    /// Sent as `authorization: Bearer ...`.
    pub token: Option<String>,
    /// Why a staff member reads a person's data (the support ticket), sent
    /// as `x-candor-reason`; staff reads are refused without one.
    pub reason: Option<String>,
}

/// `message` with the caller's credential and, for staff reads, the reason.
fn authorized<T>(
    message: T,
    token: Option<&str>,
    reason: Option<&str>,
) -> Result<tonic::Request<T>, tonic::Status> {
    let mut request = tonic::Request::new(message);
    let header = |field: &str, value: String| {
        value.parse().map_err(|_| {
            tonic::Status::invalid_argument(format!("{field}: not a valid header value"))
        })
    };
    if let Some(token) = token {
        let value = header("token", format!("Bearer {token}"))?;
        request.metadata_mut().insert("authorization", value);
    }
    if let Some(reason) = reason {
        let value = header("reason", reason.to_owned())?;
        request.metadata_mut().insert("x-candor-reason", value);
    }
    Ok(request)
}

/// Asks `ExplanationService.GetExplanation` and returns the answer as JSON
/// and as text for a terminal.
pub async fn why(channel: Channel, call: &WhyCall) -> Result<(Value, String), tonic::Status> {
    let audience = match call.audience.as_str() {
        "support" => pb::Audience::Support,
        "engineer" => pb::Audience::Engineer,
        _ => pb::Audience::Consumer,
    };
    let request = authorized(
        pb::GetExplanationRequest {
            decision_id: call.decision_id.clone(),
            audience: audience as i32,
            language: call.language.clone(),
        },
        call.token.as_deref(),
        call.reason.as_deref(),
    )?;
    let mut client = super::pb::explanation_service_client::ExplanationServiceClient::new(channel);
    let r = client.get_explanation(request).await?.into_inner();
    Ok((answer_json(&r), answer_text(r)))
}

/// The whole answer in the proto3 JSON mapping, with the proto's field
/// names, 64-bit integers as numbers and every field present: read through the embedded
/// descriptors, so every field the gateway sent is in it.
fn answer_json(r: &pb::GetExplanationResponse) -> Value {
    use prost::Message;
    use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set is valid");
    let descriptor = pool
        .get_message_by_name("candor.v1.GetExplanationResponse")
        .expect("the descriptor set holds the answer");
    let message = DynamicMessage::decode(descriptor, r.encode_to_vec().as_slice())
        .expect("an answer decodes as its own descriptor");
    // Zeros too: a feature's value 0 left out would read as missing.
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .expect("a message maps to JSON")
}

/// The answer for a terminal: the consumer view as a person reads it; the
/// staff views with the decision's identity first.
fn answer_text(r: pb::GetExplanationResponse) -> String {
    let model = r.model.unwrap_or_default();
    let header = format!(
        "Decision {} of {}: {}, {} {} ({})\n\n",
        r.decision_id,
        r.decided_at
            .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
            .map_or_else(String::new, |t| t.to_string()),
        pb::Tier::try_from(r.tier).map_or_else(
            |_| "unknown tier".to_owned(),
            |t| t.as_str_name().trim_start_matches("TIER_").to_lowercase()
        ),
        model.name,
        model.version,
        match r.served_from.as_str() {
            "computed" => "computed now".to_owned(),
            from => format!("answered from the {from}"),
        }
    );
    match r.view {
        Some(pb::get_explanation_response::View::Consumer(v)) => consumer_text(&v),
        Some(pb::get_explanation_response::View::Support(v)) => {
            let mut text = header;
            if let Some(c) = &v.consumer {
                text.push_str(&consumer_text(c));
            }
            text.push_str(&format!("\nTier: {}\n", v.tier_explained));
            text.push_str(&match v.score {
                Some(score) => format!(
                    "Score {score:.6}, from a base of {:.6}; contributions in {}\n",
                    v.base_score, v.output_space
                ),
                None => "No score: the decision was refused, so no model ran and nothing was attributed\n".to_owned(),
            });
            if let Some(p) = &v.provenance {
                text.push_str(&provenance_text(p));
            }
            text.push_str("\nGrouped attributions (largest first):\n");
            for g in &v.groups {
                text.push_str(&format!(
                    "  {:>+9.4}  {}  {}{}\n",
                    g.contribution,
                    g.name,
                    g.description,
                    if g.masked_features.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "  (masked: {}; the model saw a population substitute, not the person's)",
                            g.masked_features.join(", ")
                        )
                    }
                ));
                // A group of several features: each one's part, since the
                // consumer view may give a reason for one that the group's
                // sum goes against.
                if g.features.len() > 1 {
                    let parts: Vec<String> = g
                        .features
                        .iter()
                        .zip(&g.feature_contributions)
                        .map(|(f, c)| format!("{f} {c:+.4}"))
                        .collect();
                    text.push_str(&format!("             {}\n", parts.join(", ")));
                }
            }
            text.push_str(&format!(
                "\nConsent trail: {} record(s)\n",
                v.consent_trail.len()
            ));
            for t in &v.consent_trail {
                text.push_str(&trail_entry_text(t));
            }
            text.push('\n');
            text.push_str(&v.model_card);
            text
        }
        Some(pb::get_explanation_response::View::Engineer(v)) => {
            let mut text = header;
            // A refused decision has no attributions (or an empty block).
            match v.attribution.filter(|a| !a.method.is_empty()) {
                None => {
                    text.push_str("no attributions: the decision was refused, so no model ran\n")
                }
                Some(a) => {
                    text.push_str(&format!(
                        "method {} {} ({}), base {:.6}, margin {:.6}, residual {:.2e}, score {}\n",
                        a.method,
                        a.method_version,
                        a.output_space,
                        a.base_value,
                        a.margin,
                        a.additivity_residual,
                        v.score
                            .map_or("none (refused)".to_owned(), |s| format!("{s:.6}"))
                    ));
                    for f in &a.features {
                        text.push_str(&format!(
                            "  {:>+10.6}  {:<10} = {}{}{}\n",
                            f.contribution,
                            f.name,
                            f.value,
                            if f.standard_error > 0.0 {
                                format!("  (± {:.2e})", f.standard_error)
                            } else {
                                String::new()
                            },
                            if f.masked { "  (masked)" } else { "" }
                        ));
                    }
                }
            }
            if let Some(p) = &v.provenance {
                text.push_str(&provenance_text(p));
            }
            text
        }
        None => header,
    }
}

/// One ledger record a decision relied on, as support reads it: when, what
/// it said of which purposes, how and where it was collected, and who made
/// it; `--json` has the whole record.
fn trail_entry_text(t: &pb::ConsentTrailEntry) -> String {
    let r = t.record.clone().unwrap_or_default();
    let at = t
        .recorded_at
        .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        .map_or_else(String::new, |t| format!(" {t}"));
    let mut line = format!("  #{} {}{at} ({})\n", r.seq, t.kind, r.record_id);
    // An erased record's content is gone; a record from a newer gateway may
    // not read: the line above stands alone then.
    let Ok(receipt) = serde_json::from_str::<crate::consent::ledger::Receipt>(&t.content_json)
    else {
        return line;
    };
    if !receipt.purposes.is_empty() {
        let purposes: Vec<String> = receipt
            .purposes
            .iter()
            .map(|p| {
                let which = match p.tcf_id {
                    0 => "direct marketing".to_owned(),
                    id => format!("purpose {id}"),
                };
                format!("{which} {} ({})", p.status.as_str(), p.legal_basis.as_str())
            })
            .collect();
        line.push_str(&format!("      {}\n", purposes.join(", ")));
    }
    let c = &receipt.collection;
    line.push_str(&format!(
        "      collected by {} in {}{}\n",
        c.method,
        if c.jurisdiction.is_empty() {
            "an unknown jurisdiction"
        } else {
            &c.jurisdiction
        },
        receipt
            .recorded_by
            .map(|a| format!("; recorded by {} ({})", a.name, a.role))
            .unwrap_or_default()
    ));
    line
}

/// What a staff reader needs of a decision's provenance at a glance; the
/// JSON has all of it.
fn provenance_text(p: &pb::Provenance) -> String {
    let list = |items: &[String]| {
        if items.is_empty() {
            "none".to_owned()
        } else {
            items.join(", ")
        }
    };
    let purposes: Vec<String> = p
        .purposes
        .iter()
        .map(|o| {
            format!(
                "{} {} ({}{})",
                match o.tcf_purpose {
                    0 => "direct marketing".to_owned(),
                    id => format!("purpose {id}"),
                },
                o.status,
                o.source,
                if o.legal_basis.is_empty() {
                    String::new()
                } else {
                    format!(", {}", o.legal_basis)
                }
            )
        })
        .collect();
    format!(
        "Consent: {} in {}; rules fired: {}; masked features: {}\nPurposes: {}\n",
        p.regime,
        p.jurisdiction,
        list(&p.rules_fired),
        list(&p.masked_features),
        list(&purposes)
    )
}

/// The consumer view as a person would read it.
pub fn consumer_text(v: &pb::ConsumerView) -> String {
    let mut t = format!("{}\n\n", v.headline);
    if !v.main_parameters.is_empty() {
        let label = crate::why::based_on(
            crate::why::Language::negotiate(&v.language).unwrap_or(crate::why::Language::En),
        );
        t.push_str(&format!("{label}: {}\n\n", v.main_parameters.join("; ")));
    }
    for r in &v.reasons {
        t.push_str(&format!("- {}\n", r.text));
    }
    t.push_str(&format!("\n{}\n\n", v.consent_line));
    for c in &v.controls {
        t.push_str(&format!("[{}]  ", c.label));
    }
    t.push('\n');
    t
}

//! `TryFrom` conversions between protobuf messages and domain types. Structural
//! problems (an absent model, an unparsable version) are rejected here, naming
//! the field; checks that need the model's manifest happen in the gateway.

use std::{sync::Arc, time::SystemTime};

use super::pb;
use crate::{
    audit,
    consent::{
        AgeStatus, ConsentMode, Jurisdiction, ModeFlag, Signals,
        ledger::LedgerRef,
        policy::{Provenance, Tier},
    },
    error::Error,
    explain::{DecisionAttribution, ExplainMode, Method},
    gateway::{
        BatchRequest, Decision, ExplainRequest, Explained, ExplanationStatus, ModelIdentity,
        Placement, ScoreRequest, Subject,
    },
    models::{
        ModelPackage, ModelSelector, VersionRef, card,
        manifest::{FeatureType, Manifest},
        schema::{FeatureRow, FeatureValue, Features},
    },
    monitor::AuditAttributes,
};

impl TryFrom<Option<pb::ModelRef>> for ModelSelector {
    type Error = Error;

    fn try_from(model: Option<pb::ModelRef>) -> Result<Self, Error> {
        let model = model.ok_or_else(|| Error::InvalidArgument("model: is required".into()))?;
        if model.name.is_empty() {
            return Err(Error::InvalidArgument("model.name: is required".into()));
        }
        let version = match model.version.as_str() {
            "" => None,
            v => Some(v.parse().map_err(|e| {
                Error::InvalidArgument(format!(
                    "model.version: {v:?} is neither a semantic version nor an alias (production, canary): {e}"
                ))
            })?),
        };
        Ok(Self {
            name: model.name,
            version,
        })
    }
}

/// A request's named features, in the order they came. A name given twice
/// (as merging two encoded requests gives) keeps its last value, as a
/// protobuf map would: the schema sees to that when it encodes the row.
fn features(entries: Vec<pb::Feature>) -> Features {
    entries
        .into_iter()
        .map(|pb::Feature { key: name, value }| {
            let value = match value.and_then(|v| v.kind) {
                Some(pb::feature_value::Kind::Number(v)) => FeatureValue::Number(v),
                Some(pb::feature_value::Kind::Integer(v)) => FeatureValue::Integer(v),
                Some(pb::feature_value::Kind::Category(v)) => FeatureValue::Category(v),
                None => FeatureValue::Missing,
            };
            (name, value)
        })
        .collect()
}

impl From<FeatureValue> for pb::FeatureValue {
    fn from(value: FeatureValue) -> Self {
        use pb::feature_value::Kind;
        let kind = match value {
            FeatureValue::Number(v) => Some(Kind::Number(v)),
            FeatureValue::Integer(v) => Some(Kind::Integer(v)),
            FeatureValue::Category(v) => Some(Kind::Category(v)),
            FeatureValue::Missing => None,
        };
        Self { kind }
    }
}

/// A row is named or positional, never both; positional rows need a pinned
/// model version, since another version may order its columns differently.
fn feature_row(
    model: &ModelSelector,
    named: Vec<pb::Feature>,
    values: Vec<f64>,
    at: &str,
) -> Result<FeatureRow, Error> {
    match (named.is_empty(), values.is_empty()) {
        (false, false) => Err(Error::InvalidArgument(format!(
            "{at}values: give either named features or positional values, not both"
        ))),
        (true, false) if !matches!(model.version, Some(VersionRef::Exact(_))) => {
            Err(Error::InvalidArgument(
                "model.version: a version number (not an alias) is required with positional values, so the column order cannot change"
                    .into(),
            ))
        }
        (true, false) => Ok(FeatureRow::Positional(values)),
        _ => Ok(FeatureRow::Named(features(named))),
    }
}

/// Each batch row's placement: its own campaign and ad where it names them,
/// the batch context's where it leaves them empty (`BatchRow`'s contract);
/// empty when no row names either, so that every row is the context's.
fn row_placements(
    context: &Placement,
    ads: Vec<(String, String)>,
) -> Result<Vec<Placement>, Error> {
    if ads.iter().all(|(c, a)| c.is_empty() && a.is_empty()) {
        return Ok(Vec::new());
    }
    let own = |field: String, value: String, inherited: &String| {
        if value.is_empty() {
            Ok(inherited.clone())
        } else {
            identifier(&field, value)
        }
    };
    ads.into_iter()
        .enumerate()
        .map(|(i, (campaign, ad))| {
            Ok(Placement {
                placement_id: context.placement_id.clone(),
                campaign_id: own(
                    format!("rows[{i}].campaign_id"),
                    campaign,
                    &context.campaign_id,
                )?,
                ad_id: own(format!("rows[{i}].ad_id"), ad, &context.ad_id)?,
            })
        })
        .collect()
}

fn batch_rows(model: &ModelSelector, rows: Vec<pb::BatchRow>) -> Result<Vec<FeatureRow>, Error> {
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| feature_row(model, row.features, row.values, &format!("rows[{i}].")))
        .collect()
}

fn mode_flag(value: i32, field: &str) -> Result<ModeFlag, Error> {
    match pb::ConsentModeValue::try_from(value) {
        Ok(pb::ConsentModeValue::Unspecified) => Ok(ModeFlag::Unset),
        Ok(pb::ConsentModeValue::Granted) => Ok(ModeFlag::Granted),
        Ok(pb::ConsentModeValue::Denied) => Ok(ModeFlag::Denied),
        Err(_) => Err(Error::InvalidArgument(format!(
            "context.consent_mode.{field}: {value} is not a known value"
        ))),
    }
}

/// Takes the audit-only attributes out of the context, so they go to the
/// fairness monitor and nowhere else.
pub(super) fn audit_attributes(
    context: Option<&mut pb::RequestContext>,
) -> Result<AuditAttributes, Error> {
    let map = context
        .map(|c| std::mem::take(&mut c.audit_attributes))
        .unwrap_or_default();
    AuditAttributes::new(map.into_iter().collect()).map_err(|(name, e)| {
        Error::InvalidArgument(match name {
            Some(name) => format!("context.audit_attributes[{name:?}]: {e}"),
            None => format!("context.audit_attributes: {e}"),
        })
    })
}

/// The longest identifier (subject, placement, campaign, ad, a notice's
/// version) a write accepts, and the longest short description (how consent
/// was withdrawn). Identifiers are stored with every decision and indexed,
/// descriptions in the append-only ledger for good; a hashed or random id,
/// or a sentence, fits many times over.
pub(crate) const MAX_ID_BYTES: usize = 256;

/// An identifier is stored with every decision and can be quoted back to
/// the person (an ad's campaign): a control, line-breaking or invisible
/// character in one would let a caller write lines of its own into a
/// consumer's explanation, or turn it around
/// ([`crate::printable::unprintable`]).
pub(super) fn identifier(field: &str, value: String) -> Result<String, Error> {
    printable(field, value, MAX_ID_BYTES, "an identifier")
}

/// Like [`text`], for text kept for good (identifiers, a withdrawal's
/// method): no control, line-breaking or invisible characters, and not
/// only spaces.
pub(super) fn printable(
    field: &str,
    value: String,
    max: usize,
    what: &str,
) -> Result<String, Error> {
    let value = text(field, value, max, what)?;
    if !value.is_empty() && value.trim().is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{field}: holds only spaces; give {what}, or leave it empty"
        )));
    }
    if let Some((at, c)) = value
        .char_indices()
        .find(|(_, c)| crate::printable::unprintable(*c))
    {
        return Err(Error::InvalidArgument(format!(
            "{field}: holds the control, line-breaking or invisible character U+{:04X} at byte {at}; {what} is printable text",
            u32::from(c)
        )));
    }
    Ok(value)
}

/// `value` when it is at most `max` bytes; `what` names the kind of text.
pub(super) fn text(field: &str, value: String, max: usize, what: &str) -> Result<String, Error> {
    if value.len() > max {
        return Err(Error::InvalidArgument(format!(
            "{field}: {} bytes, longer than the {max} {what} may have",
            value.len()
        )));
    }
    Ok(value)
}

/// Consent strings become evidence in the append-only ledger, and one that
/// outgrew a page would keep its subject's history and export from being
/// read; the longest in use (every vendor, every section) take a few
/// kilobytes.
const MAX_SIGNAL_BYTES: usize = 16 * 1024;
const SIGNAL: &str = "a consent string";

/// The subject and the consent signals: empty strings mean "not sent".
pub(super) fn subject(
    subject_id: String,
    context: Option<pb::RequestContext>,
) -> Result<Subject, Error> {
    let c = context.unwrap_or_default();
    let subject_id = identifier("subject_id", subject_id)?;
    let present = |s: String| (!s.is_empty()).then_some(s);
    let age = match pb::AgeStatus::try_from(c.age_status) {
        Ok(pb::AgeStatus::Unspecified) => AgeStatus::Unknown,
        Ok(pb::AgeStatus::Adult) => AgeStatus::Adult,
        Ok(pb::AgeStatus::Minor) => AgeStatus::Minor,
        Err(_) => {
            return Err(Error::InvalidArgument(format!(
                "context.age_status: {} is not a known status",
                c.age_status
            )));
        }
    };
    let mode = c.consent_mode.unwrap_or_default();
    let jurisdiction = match (
        present(c.jurisdiction_country),
        present(c.jurisdiction_region),
    ) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Error::InvalidArgument(
                "context.jurisdiction_region: needs context.jurisdiction_country".into(),
            ));
        }
        (Some(country), region) => Some(Jurisdiction { country, region }),
    };
    Ok(Subject {
        id: present(subject_id),
        placement: Placement {
            placement_id: identifier("context.placement_id", c.placement_id)?,
            campaign_id: identifier("context.campaign_id", c.campaign_id)?,
            ad_id: identifier("context.ad_id", c.ad_id)?,
        },
        signals: Signals {
            jurisdiction,
            age,
            tc_string: present(text(
                "context.tc_string",
                c.tc_string,
                MAX_SIGNAL_BYTES,
                SIGNAL,
            )?),
            gpp_string: present(text(
                "context.gpp_string",
                c.gpp_string,
                MAX_SIGNAL_BYTES,
                SIGNAL,
            )?),
            gpc: c.gpc,
            consent_mode: ConsentMode {
                ad_storage: mode_flag(mode.ad_storage, "ad_storage")?,
                ad_user_data: mode_flag(mode.ad_user_data, "ad_user_data")?,
                ad_personalization: mode_flag(mode.ad_personalization, "ad_personalization")?,
                analytics_storage: mode_flag(mode.analytics_storage, "analytics_storage")?,
            },
        },
    })
}

impl TryFrom<pb::ScoreRequest> for ScoreRequest {
    type Error = Error;

    fn try_from(r: pb::ScoreRequest) -> Result<Self, Error> {
        let model: ModelSelector = r.model.try_into()?;
        let row = feature_row(&model, r.features, r.values, "")?;
        let mut context = r.context;
        Ok(Self {
            model,
            audit: audit_attributes(context.as_mut())?,
            subject: subject(r.subject_id, context)?,
            row,
            explain: explain_mode(r.explain)?,
            request_id: String::new(),
            deadline: None,
        })
    }
}

impl TryFrom<pb::ScoreBatchRequest> for BatchRequest {
    type Error = Error;

    fn try_from(mut r: pb::ScoreBatchRequest) -> Result<Self, Error> {
        let model: ModelSelector = r.model.try_into()?;
        let ads: Vec<(String, String)> = r
            .rows
            .iter_mut()
            .map(|row| {
                (
                    std::mem::take(&mut row.campaign_id),
                    std::mem::take(&mut row.ad_id),
                )
            })
            .collect();
        let rows = batch_rows(&model, r.rows)?;
        let mut context = r.context;
        let audit = audit_attributes(context.as_mut())?;
        let subject = subject(r.subject_id, context)?;
        let placements = row_placements(&subject.placement, ads)?;
        Ok(Self {
            model,
            audit,
            subject,
            rows,
            placements,
            explain: explain_mode(r.explain)?,
            request_id: String::new(),
            deadline: None,
            answer_size: Some(super::scoring::answer_size()),
        })
    }
}

impl TryFrom<pb::ExplainRequest> for ExplainRequest {
    type Error = Error;

    fn try_from(r: pb::ExplainRequest) -> Result<Self, Error> {
        let model: ModelSelector = r.model.try_into()?;
        let row = feature_row(&model, r.features, r.values, "")?;
        Ok(Self {
            model,
            rows: vec![row],
            method: explain_method(r.method, "method")?,
            batch: false,
            deadline: None,
        })
    }
}

impl TryFrom<pb::ExplainBatchRequest> for ExplainRequest {
    type Error = Error;

    fn try_from(r: pb::ExplainBatchRequest) -> Result<Self, Error> {
        let model: ModelSelector = r.model.try_into()?;
        let rows = batch_rows(&model, r.rows)?;
        Ok(Self {
            model,
            rows,
            method: explain_method(r.method, "method")?,
            batch: true,
            deadline: None,
        })
    }
}

impl From<Explained> for pb::ExplainResponse {
    fn from(e: Explained) -> Self {
        Self {
            model: Some(e.model.into()),
            score: e.score,
            attribution: Some(e.attribution.into()),
        }
    }
}

impl From<ModelIdentity> for pb::ModelIdentity {
    fn from(m: ModelIdentity) -> Self {
        Self {
            name: m.name.to_string(),
            version: m.version.to_string(),
            sha256: m.sha256.to_string(),
        }
    }
}

fn explain_method(method: i32, at: &str) -> Result<Method, Error> {
    match pb::ExplainMethod::try_from(method) {
        Ok(pb::ExplainMethod::Unspecified | pb::ExplainMethod::PathDependent) => {
            Ok(Method::PathDependent)
        }
        Ok(pb::ExplainMethod::Interventional) => Ok(Method::Interventional),
        Err(_) => Err(Error::InvalidArgument(format!(
            "{at}: {method} is not a known method"
        ))),
    }
}

pub(super) fn explain_mode(options: Option<pb::ExplainOptions>) -> Result<ExplainMode, Error> {
    let Some(options) = options else {
        return Ok(ExplainMode::None);
    };
    let method = explain_method(options.method, "explain.method")?;
    match pb::ExplainMode::try_from(options.mode) {
        Ok(pb::ExplainMode::Unspecified) => Ok(ExplainMode::None),
        Ok(pb::ExplainMode::Inline) => Ok(ExplainMode::Inline(method)),
        Ok(pb::ExplainMode::Deferred) => Ok(ExplainMode::Deferred(method)),
        Err(_) => Err(Error::InvalidArgument(format!(
            "explain.mode: {} is not a known mode",
            options.mode
        ))),
    }
}

pub(super) fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    t.into()
}

/// A time the record keeps in milliseconds since 1970.
pub(super) fn ms_timestamp(ms: i64) -> prost_types::Timestamp {
    timestamp(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
}

/// The last second a `google.protobuf.Timestamp` may hold: 9999-12-31T23:59:59Z.
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// A request's time in milliseconds since 1970, held to what
/// `google.protobuf.Timestamp` defines: prost would otherwise carry excess
/// nanos into the seconds, so 2e9 nanos would pass as two more seconds.
pub(super) fn time_ms(field: &str, t: prost_types::Timestamp) -> Result<i64, Error> {
    if !(0..=999_999_999).contains(&t.nanos) {
        return Err(Error::InvalidArgument(format!(
            "{field}.nanos: {} is outside 0 to 999999999",
            t.nanos
        )));
    }
    if t.seconds < 0 {
        return Err(Error::InvalidArgument(format!(
            "{field}.seconds: {} lies before 1970",
            t.seconds
        )));
    }
    if t.seconds > MAX_TIMESTAMP_SECONDS {
        return Err(Error::InvalidArgument(format!(
            "{field}.seconds: {} lies after 9999-12-31, past what a Timestamp holds",
            t.seconds
        )));
    }
    Ok(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

impl From<DecisionAttribution> for pb::Attribution {
    fn from(d: DecisionAttribution) -> Self {
        let a = d.attribution;
        Self {
            method: a.method.to_owned(),
            method_version: a.method_version.to_owned(),
            output_space: a.output_space.to_owned(),
            base_value: a.base_value,
            margin: a.margin,
            features: d
                .features
                .into_iter()
                .map(|f| pb::FeatureContribution {
                    name: f.name,
                    value: f64::from(f.value),
                    contribution: f.contribution,
                    standard_error: f.standard_error,
                    masked: f.masked,
                })
                .collect(),
            groups: d
                .groups
                .into_iter()
                .map(|g| pb::GroupContribution {
                    name: g.name,
                    contribution: g.contribution,
                    features: g.features,
                })
                .collect(),
            additivity_residual: a.residual,
            ort_difference: d.ort_difference,
            base_score: a.base_score,
            compute_micros: a.compute.as_micros() as u64,
            sample_pairs: a.sample_pairs as u32,
        }
    }
}

impl From<Decision> for pb::Decision {
    fn from(d: Decision) -> Self {
        Self {
            decision_id: d.id.to_string(),
            model: Some(d.model.into()),
            score: d.score,
            decided_at: Some(timestamp(d.decided_at)),
            attribution: d.attribution.map(Into::into),
            tier: pb::Tier::from(d.provenance.tier) as i32,
            // The last decision of a request owns its provenance: move it.
            provenance: Some(
                Arc::try_unwrap(d.provenance)
                    .unwrap_or_else(|shared| shared.as_ref().clone())
                    .into(),
            ),
            explanation_status: match d.explanation_status {
                ExplanationStatus::Inline => pb::ExplanationStatus::Inline,
                ExplanationStatus::Deferred => pb::ExplanationStatus::Deferred,
                ExplanationStatus::OnRequest => pb::ExplanationStatus::OnRequest,
                ExplanationStatus::NotApplicable => pb::ExplanationStatus::NotApplicable,
            } as i32,
        }
    }
}

impl From<Tier> for pb::Tier {
    fn from(t: Tier) -> Self {
        match t {
            Tier::Personalised => Self::Personalised,
            Tier::Contextual => Self::Contextual,
            Tier::Refused => Self::Refused,
        }
    }
}

impl From<&LedgerRef> for pb::LedgerReference {
    fn from(r: &LedgerRef) -> Self {
        Self {
            seq: r.seq,
            record_id: r.record_id.clone(),
            sha256: r.hash.clone(),
        }
    }
}

/// A tier as JSON names it.
pub(super) fn tier_name(tier: i32) -> &'static str {
    pb::Tier::try_from(tier).map_or("unknown", |t| match t {
        pb::Tier::Personalised => "personalised",
        pb::Tier::Contextual => "contextual",
        pb::Tier::Refused => "refused",
        pb::Tier::Unspecified => "unspecified",
    })
}

/// A provenance as JSON, in the `Provenance` message's own field names and
/// values, wherever it leaves as JSON (the CLI, the Open Inference
/// Protocol's `provenance` parameter), so that no client meets two
/// vocabularies for one answer.
pub(super) fn provenance_json(p: &pb::Provenance) -> serde_json::Value {
    serde_json::json!({
        "jurisdiction": p.jurisdiction,
        "regime": p.regime,
        "tier": tier_name(p.tier),
        "purposes": p.purposes.iter().map(|o| serde_json::json!({
            "tcf_purpose": o.tcf_purpose,
            "dpv": o.dpv,
            "status": o.status,
            "legal_basis": o.legal_basis,
            "source": o.source,
            "record_seq": o.record_seq,
        })).collect::<Vec<_>>(),
        "rules_fired": p.rules_fired,
        "masked_features": p.masked_features,
        "ledger_records": p.ledger_records.iter().map(|r| serde_json::json!({
            "seq": r.seq, "record_id": r.record_id, "sha256": r.sha256,
        })).collect::<Vec<_>>(),
        "signals_sha256": p.signals_sha256,
        "policy_version": p.policy_version,
        "policy_sha256": p.policy_sha256,
        "model_sha256": p.model_sha256,
        "subject_ref": p.subject_ref,
        "tc_last_updated": p.tc_last_updated.map(|t| {
            jiff::Timestamp::new(t.seconds, t.nanos).map_or_else(|_| String::new(), |t| t.to_string())
        }),
    })
}

impl From<&Provenance> for pb::Provenance {
    fn from(p: &Provenance) -> Self {
        p.clone().into()
    }
}

impl From<Provenance> for pb::Provenance {
    fn from(p: Provenance) -> Self {
        Self {
            jurisdiction: p.jurisdiction,
            regime: p.regime.as_str().to_owned(),
            tier: pb::Tier::from(p.tier) as i32,
            purposes: p
                .purposes
                .into_iter()
                .map(|o| pb::PurposeDecision {
                    tcf_purpose: u32::from(o.tcf_id),
                    dpv: o.dpv,
                    status: o.status.as_str().to_owned(),
                    legal_basis: o.legal_basis.map_or("", |b| b.as_str()).to_owned(),
                    source: o.source.as_str().to_owned(),
                    record_seq: o.record.as_ref().map_or(0, |r| r.seq),
                })
                .collect(),
            rules_fired: p.rules,
            masked_features: p.masked_features,
            ledger_records: p.ledger_records.iter().map(Into::into).collect(),
            signals_sha256: p.signals_hash,
            policy_version: p.policy_version,
            policy_sha256: p.policy_hash,
            model_sha256: p.model_sha256,
            subject_ref: p.subject_ref.unwrap_or_default(),
            tc_last_updated: p.tc_last_updated_ms.map(ms_timestamp),
        }
    }
}

fn feature_specs(m: &Manifest) -> Vec<pb::FeatureSpec> {
    {
        m.features_by_position()
            .into_iter()
            .map(|f| pb::FeatureSpec {
                name: f.name.clone(),
                position: f.position as u32,
                r#type: match f.kind {
                    FeatureType::Float => pb::FeatureType::Float,
                    FeatureType::Integer => pb::FeatureType::Integer,
                    FeatureType::Categorical => pb::FeatureType::Categorical,
                } as i32,
                min: f.min,
                max: f.max,
                categories: f.categories.clone(),
                missing_allowed: f.missing_allowed,
                description: f.description.clone(),
                data_category: f.category.as_str().to_owned(),
                source: f.source.as_str().to_owned(),
                special_category: f.is_special_category(),
            })
            .collect()
    }
}

/// The full description of one model version.
pub fn describe(package: &ModelPackage, is_default: bool) -> pb::ModelDescription {
    let m = &package.manifest;
    pb::ModelDescription {
        identity: Some(package.identity.clone().into()),
        is_default,
        description: m.model.description.clone(),
        owner: m.model.owner.clone(),
        purposes: m
            .model
            .purposes
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        intended_use: m.model.intended_use.clone(),
        output: Some(pb::OutputSpec {
            tensor: m.model.output.tensor.clone(),
            index: m.model.output.index as u32,
            description: m.model.output.description.clone(),
            decision_threshold: m.model.output.decision_threshold.unwrap_or_default(),
        }),
        features: feature_specs(m),
        groups: m
            .groups
            .iter()
            .map(|g| pb::FeatureGroup {
                name: g.name.clone(),
                description: g.description.clone(),
                features: g.features.clone(),
            })
            .collect(),
        training: m.training.as_ref().map(|t| pb::TrainingInfo {
            dataset: t.dataset.clone(),
            date: t.date.clone(),
            script: t.script.clone(),
            train_rows: t.train_rows.unwrap_or_default(),
            holdout_rows: t.holdout_rows.unwrap_or_default(),
            split: t.split.clone().unwrap_or_default(),
            excluded_columns: t.excluded_columns.clone(),
            libraries: t.libraries.clone(),
        }),
        metrics: m
            .metrics
            .iter()
            .map(|x| pb::Metric {
                name: x.name.clone(),
                value: x.value,
                dataset: x.dataset.clone(),
            })
            .collect(),
        manifest_toml: package.manifest_toml.clone(),
        explanation_method: package.explainer.method(Method::PathDependent).to_owned(),
        fairness: package.fairness.as_ref().map(fairness_audit),
        model_card_markdown: card::markdown(package),
    }
}

fn fairness_audit(report: &audit::Report) -> pb::FairnessAudit {
    pb::FairnessAudit {
        data: report.data.clone(),
        data_sha256: report.data_sha256.clone(),
        rows: report.overall.rows as u64,
        decision_threshold: report.decision_threshold,
        selection_rule: report.selection_rule.clone(),
        passed: report.passed,
        note: report.note.clone().unwrap_or_default(),
        attributes: report
            .attributes
            .iter()
            .map(|a| pb::FairnessAttribute {
                column: a.column.clone(),
                bands: a.bands.clone().unwrap_or_default(),
                min_disparate_impact: a.min_disparate_impact,
                max_equal_opportunity_difference: a.max_equal_opportunity_difference,
                most_favoured: a.most_favoured.clone(),
                demographic_parity_ratio: a.demographic_parity_ratio,
                equal_opportunity_difference: a.equal_opportunity_difference,
                meets_four_fifths_rule: a.meets_four_fifths_rule,
                passed: a.passed,
                findings: a.findings.clone(),
                groups: a
                    .groups
                    .iter()
                    .map(|g| pb::FairnessGroup {
                        group: g.group.clone(),
                        rows: g.rates.rows as u64,
                        selection_rate: g.rates.selection_rate,
                        disparate_impact: g.disparate_impact,
                        true_positive_rate: g.rates.true_positive_rate,
                        equal_opportunity_difference: g.equal_opportunity_difference,
                        mean_score: g.rates.mean_score,
                        observed_rate: g.rates.observed_rate,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The summary of one model version, as listed.
pub fn summarize(package: &ModelPackage, is_default: bool) -> pb::ModelVersionSummary {
    pb::ModelVersionSummary {
        identity: Some(package.identity.clone().into()),
        description: package.manifest.model.description.clone(),
        purposes: package
            .manifest
            .model
            .purposes
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        is_default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(r: Result<impl std::fmt::Debug, Error>) -> String {
        match r {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    /// The generated code reads `features` as a list of entries (build.rs);
    /// a client's map must arrive whole, and clients must still be told it
    /// is a map.
    #[test]
    fn feature_maps_are_maps_on_the_wire_and_to_clients() {
        use prost::Message;
        #[derive(Clone, PartialEq, prost::Message)]
        struct MapClient {
            #[prost(btree_map = "string, message", tag = "3")]
            features: std::collections::BTreeMap<String, pb::FeatureValue>,
        }
        let sent = MapClient {
            features: [("MAANTHUI", 1), ("PPERSAUT", 6)]
                .map(|(k, v)| (k.to_owned(), FeatureValue::Integer(v).into()))
                .into(),
        };
        let got = pb::ScoreRequest::decode(&*sent.encode_to_vec()).unwrap();
        let got: Vec<_> = got
            .features
            .into_iter()
            .map(|f| (f.key, f.value.unwrap()))
            .collect();
        assert_eq!(got, sent.features.into_iter().collect::<Vec<_>>());

        let served = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
        let messages: Vec<_> = served
            .file
            .iter()
            .filter(|f| f.package() == "candor.v1")
            .flat_map(|f| &f.message_type)
            .filter(|m| matches!(m.name(), "ScoreRequest" | "BatchRow" | "ExplainRequest"))
            .collect();
        assert_eq!(messages.len(), 3);
        for m in messages {
            let entry = m.nested_type.iter().find(|t| t.name() == "FeaturesEntry");
            let map_entry = entry
                .and_then(|t| t.options.as_ref())
                .and_then(|o| o.map_entry);
            assert_eq!(map_entry, Some(true), "{}.features", m.name());
        }
    }

    #[test]
    fn request_times_are_timestamps_as_the_proto_defines_them() {
        let t = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert_eq!(
            time_ms("at", t(1_767_000_000, 999_999_999)).unwrap(),
            1_767_000_000_999
        );
        assert_eq!(time_ms("at", t(0, 0)).unwrap(), 0);
        assert_eq!(
            time_ms("at", t(MAX_TIMESTAMP_SECONDS, 0)).unwrap(),
            MAX_TIMESTAMP_SECONDS * 1000
        );
        for (bad, field) in [
            (t(1_767_000_000, 2_000_000_000), "at.nanos: 2000000000"),
            (t(1_767_000_000, 1_000_000_000), "at.nanos: 1000000000"),
            (t(1_767_000_000, -1), "at.nanos: -1"),
            (t(-1, 0), "at.seconds: -1 lies before 1970"),
            (t(MAX_TIMESTAMP_SECONDS + 1, 0), "at.seconds: 253402300800"),
            (t(i64::MAX, 0), "at.seconds"),
        ] {
            let m = refused(time_ms("at", bad));
            assert!(m.starts_with(field), "{m}");
        }
    }

    #[test]
    fn text_is_held_to_its_bound_naming_the_field() {
        assert_eq!(
            identifier("x", "a".repeat(MAX_ID_BYTES)).unwrap().len(),
            256
        );
        let m = refused(identifier("notice.version", "é".repeat(129)));
        assert_eq!(
            m,
            "notice.version: 258 bytes, longer than the 256 an identifier may have"
        );
        let m = refused(text(
            "method",
            "x".repeat(3_000_000),
            MAX_ID_BYTES,
            "a description",
        ));
        assert!(m.starts_with("method: 3000000 bytes"), "{m}");
        let m = refused(identifier(
            "context.campaign_id",
            "spring\nYou have been diagnosed".into(),
        ));
        assert_eq!(
            m,
            "context.campaign_id: holds the control, line-breaking or invisible character U+000A at byte 6; an identifier is printable text"
        );
        // Unicode's own line and paragraph separators break a line as a
        // newline does, and a direction override turns the text around.
        for c in ['\u{2028}', '\u{2029}', '\u{202E}'] {
            let m = refused(identifier(
                "context.campaign_id",
                format!("summer{c}- You may be seeing this ad because you are in debt."),
            ));
            assert!(
                m.contains(&format!("U+{:04X} at byte 6", u32::from(c))),
                "{m}"
            );
        }
        identifier("context.ad_id", "Frühling <b>2026</b>".into()).unwrap();
        // Spaces alone name nobody: a subject "   " would be one person
        // for every caller who forgot the id.
        let m = refused(identifier("subject_id", "   ".into()));
        assert_eq!(
            m,
            "subject_id: holds only spaces; give an identifier, or leave it empty"
        );
        identifier("subject_id", String::new()).unwrap();
    }
}

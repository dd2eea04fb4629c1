//! `inference.GRPCInferenceService`: the Open Inference Protocol v2 (KServe,
//! Triton), so that existing inference clients (tritonclient, KServe's) score
//! against Candor unchanged.
//!
//! It is another edge onto the same gateway, never a second policy path:
//! `ModelInfer` becomes the native [`BatchRequest`] (one decision per row of
//! the input tensor) and goes through [`Gateway::score_batch`], so consent,
//! validation, recording and attributions are exactly the native API's.
//! Consent signals arrive as request parameters named like the native
//! `RequestContext` fields (see [`param`]); decision ids, attributions and
//! base values return as extra output tensors, and the tier, the provenance
//! (JSON) and the explanation status as response parameters.

use std::{collections::HashMap, sync::Arc};

use tonic::{Request, Response, Status};

use super::{
    convert,
    inference::{
        self as oip, InferParameter, ModelInferRequest, ModelInferResponse,
        grpc_inference_service_server::GrpcInferenceService, infer_parameter::ParameterChoice,
        model_infer_request::InferInputTensor, model_infer_response::InferOutputTensor,
        model_metadata_response::TensorMetadata,
    },
    pb,
};
use crate::{
    error::Error,
    explain::ExplainMode,
    gateway::{AnswerSize, BatchRequest, Decision, ExplanationStatus, Gateway, Readiness},
    models::{ModelPackage, ModelSelector, schema::FeatureRow},
};

/// The request parameters Candor reads. Each mirrors the native
/// `RequestContext` field (or `ScoreRequest.subject_id`, `explain`) of the
/// same name; strings unless noted.
pub mod param {
    pub const SUBJECT_ID: &str = "subject_id";
    pub const JURISDICTION_COUNTRY: &str = "jurisdiction_country";
    pub const JURISDICTION_REGION: &str = "jurisdiction_region";
    /// "adult", "minor" or "unknown".
    pub const AGE_STATUS: &str = "age_status";
    pub const TC_STRING: &str = "tc_string";
    pub const GPP_STRING: &str = "gpp_string";
    /// A bool.
    pub const GPC: &str = "gpc";
    /// "granted" or "denied", each.
    pub const CONSENT_MODE_AD_STORAGE: &str = "consent_mode.ad_storage";
    pub const CONSENT_MODE_AD_USER_DATA: &str = "consent_mode.ad_user_data";
    pub const CONSENT_MODE_AD_PERSONALIZATION: &str = "consent_mode.ad_personalization";
    pub const CONSENT_MODE_ANALYTICS_STORAGE: &str = "consent_mode.analytics_storage";
    pub const PLACEMENT_ID: &str = "placement_id";
    pub const CAMPAIGN_ID: &str = "campaign_id";
    pub const AD_ID: &str = "ad_id";
    /// "inline", "deferred" or "none" (the default).
    pub const EXPLAIN_MODE: &str = "explain_mode";
    /// "path_dependent" (the default) or "interventional".
    pub const EXPLAIN_METHOD: &str = "explain_method";
    /// `audit.<name>`: an audit-only attribute for the fairness monitor
    /// (the native `context.audit_attributes`).
    pub const AUDIT_PREFIX: &str = "audit.";
    /// Triton's own scheduling parameters (tritonclient sets them from its
    /// arguments): accepted and ignored, since Candor has no sequences or
    /// priorities and takes the deadline from `grpc-timeout`.
    pub const TRITON: [&str; 5] = [
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "priority",
        "timeout",
    ];
}

/// The response parameters: the tier ("personalised", "contextual",
/// "refused"), the provenance as JSON, and where the attributions are
/// ("inline", "deferred", "on_request", "not_applicable").
pub mod reply {
    pub const TIER: &str = "tier";
    pub const PROVENANCE: &str = "provenance";
    pub const EXPLANATION_STATUS: &str = "explanation_status";
    /// On the `attributions` tensor: the attribution method and the output
    /// space (`Attribution.output_space`) the values and base values are in.
    pub const METHOD: &str = "method";
    pub const OUTPUT_SPACE: &str = "output_space";
}

/// The output tensors a model offers, in the order they are returned when
/// the request names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// FP64 [N]; absent when the tier is refused (no model ran).
    Score,
    /// BYTES [N]: each row's decision id (UUIDv7), for `GetExplanation`.
    DecisionId,
    /// FP64 [N, features]: each feature's contribution, in input order;
    /// with `explain_mode = "inline"`, and absent when they were deferred.
    Attributions,
    /// FP64 [N]: the base value the attributions add up from.
    BaseValue,
}

impl Output {
    const ALL: [Output; 4] = [
        Output::Score,
        Output::DecisionId,
        Output::Attributions,
        Output::BaseValue,
    ];

    fn name(self) -> &'static str {
        match self {
            Output::Score => "score",
            Output::DecisionId => "decision_id",
            Output::Attributions => "attributions",
            Output::BaseValue => "base_value",
        }
    }

    fn datatype(self) -> &'static str {
        match self {
            Output::DecisionId => "BYTES",
            _ => "FP64",
        }
    }

    fn shape(self, rows: i64, width: usize) -> Vec<i64> {
        match self {
            Output::Attributions => vec![rows, width as i64],
            _ => vec![rows],
        }
    }

    fn needs_attributions(self) -> bool {
        matches!(self, Output::Attributions | Output::BaseValue)
    }
}

/// An input datatype Candor accepts: the model takes FP32, and FP64 or
/// INT64 values are checked against the manifest like any other.
#[derive(Debug, Clone, Copy)]
enum Datatype {
    Fp32,
    Fp64,
    Int64,
}

impl Datatype {
    fn parse(datatype: &str) -> Result<Self, Error> {
        match datatype {
            "FP32" => Ok(Self::Fp32),
            "FP64" => Ok(Self::Fp64),
            "INT64" => Ok(Self::Int64),
            other => Err(Error::InvalidArgument(format!(
                "inputs[0].datatype: {other:?} is not accepted; send FP32 (or FP64, INT64)"
            ))),
        }
    }

    /// Little-endian values in `raw`, which must hold exactly `count`.
    fn decode_raw(self, raw: &[u8], count: usize) -> Result<Vec<f64>, Error> {
        fn le<const W: usize>(raw: &[u8], value: fn([u8; W]) -> f64) -> Vec<f64> {
            raw.chunks_exact(W)
                .map(|b| value(b.try_into().expect("chunks_exact yields W bytes")))
                .collect()
        }
        let width = match self {
            Self::Fp32 => 4,
            Self::Fp64 | Self::Int64 => 8,
        };
        if count.checked_mul(width) != Some(raw.len()) {
            return Err(Error::InvalidArgument(format!(
                "raw_input_contents[0]: holds {} bytes; the shape needs {count} values of {width} bytes",
                raw.len()
            )));
        }
        Ok(match self {
            Self::Fp32 => le(raw, |b| f64::from(f32::from_le_bytes(b))),
            Self::Fp64 => le(raw, f64::from_le_bytes),
            Self::Int64 => le(raw, |b| i64::from_le_bytes(b) as f64),
        })
    }

    /// The values in the `contents` field of this datatype.
    fn decode_contents(
        self,
        contents: oip::InferTensorContents,
        count: usize,
    ) -> Result<Vec<f64>, Error> {
        let (field, values): (&str, Vec<f64>) = match self {
            Self::Fp32 => (
                "fp32_contents",
                contents.fp32_contents.into_iter().map(f64::from).collect(),
            ),
            Self::Fp64 => ("fp64_contents", contents.fp64_contents),
            Self::Int64 => (
                "int64_contents",
                contents
                    .int64_contents
                    .into_iter()
                    .map(|v| v as f64)
                    .collect(),
            ),
        };
        if values.len() != count {
            return Err(Error::InvalidArgument(format!(
                "inputs[0].contents.{field}: holds {} values; the shape needs {count}",
                values.len()
            )));
        }
        Ok(values)
    }
}

/// A `ModelInfer` call in domain terms. Public so that the request fuzz
/// target can drive its conversion from untrusted bytes.
#[derive(Debug)]
pub struct Infer {
    batch: BatchRequest,
    /// The input tensor's name, checked against the model.
    input: String,
    reply: Reply,
}

/// What the reply needs from the request.
#[derive(Debug, Clone)]
struct Reply {
    /// The request's `id`, echoed.
    id: String,
    /// Features per row.
    width: usize,
    outputs: Vec<Output>,
}

impl TryFrom<ModelInferRequest> for Infer {
    type Error = Error;

    fn try_from(r: ModelInferRequest) -> Result<Self, Error> {
        let model = selector(r.model_name, r.model_version)?;
        let (subject_id, mut context, explain) = parameters(r.parameters)?;
        let explain = convert::explain_mode(explain)?;
        let [input]: [InferInputTensor; 1] = r.inputs.try_into().map_err(|inputs: Vec<_>| {
            Error::InvalidArgument(format!(
                "inputs: give exactly one input tensor, the model's features; got {}",
                inputs.len()
            ))
        })?;
        let datatype = Datatype::parse(&input.datatype)?;
        let (rows, width) = match input.shape[..] {
            [rows, width] if rows > 0 && width > 0 => (rows as usize, width as usize),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "inputs[0].shape: must be [rows, features] with both above zero; got {:?}",
                    input.shape
                )));
            }
        };
        let count = rows
            .checked_mul(width)
            .ok_or_else(|| Error::InvalidArgument("inputs[0].shape: too large".into()))?;
        let mut raw = r.raw_input_contents;
        let values = match (raw.pop(), input.contents) {
            (Some(bytes), None) if raw.is_empty() => datatype.decode_raw(&bytes, count)?,
            (None, Some(contents)) => datatype.decode_contents(contents, count)?,
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "inputs[0].contents: no data; send contents or raw_input_contents".into(),
                ));
            }
            _ => {
                return Err(Error::InvalidArgument(
                    "raw_input_contents: give one entry for the one input, and no contents beside it"
                        .into(),
                ));
            }
        };
        let outputs = requested_outputs(&r.outputs, &explain)?;
        let reply = Reply {
            id: r.id,
            width,
            outputs,
        };
        let sized = reply.clone();
        Ok(Self {
            batch: BatchRequest {
                model,
                audit: convert::audit_attributes(Some(&mut context))?,
                subject: convert::subject(subject_id, Some(context))?,
                // NaN reads as missing, as in positional native rows.
                rows: values
                    .chunks(width)
                    .map(|row| FeatureRow::Positional(row.to_vec()))
                    .collect(),
                placements: Vec::new(),
                explain,
                request_id: String::new(),
                deadline: None,
                answer_size: Some(AnswerSize {
                    field: "inputs[0]",
                    // An answer that cannot be made fails when it is made.
                    bytes: Arc::new(move |decisions| {
                        sized
                            .clone()
                            .respond(decisions.to_vec())
                            .map_or(0, |r| prost::Message::encoded_len(&r))
                    }),
                }),
            },
            input: input.name,
            reply,
        })
    }
}

/// The model and version (a semantic version, or empty for the default).
/// A status in the native request's words (`model.name`, `model.version`,
/// `model`) told in the protocol's own fields: `model_name` and
/// `model_version` in ModelInfer, `name` and `version` in ModelReady and
/// ModelMetadata.
fn in_fields(status: Status, name: &str, version: &str) -> Status {
    let message = status.message();
    let renamed = [
        ("model.name:", name),
        ("model.version:", version),
        ("model:", name),
    ]
    .into_iter()
    .find_map(|(native, ours)| {
        message
            .strip_prefix(native)
            .map(|rest| format!("{ours}:{rest}"))
    });
    match renamed {
        Some(message) => Status::with_metadata(status.code(), message, status.metadata().clone()),
        None => status,
    }
}

fn selector(name: String, version: String) -> Result<ModelSelector, Error> {
    Some(pb::ModelRef { name, version }).try_into()
}

/// The outputs the client asked for, or all of them.
fn requested_outputs(
    requested: &[oip::model_infer_request::InferRequestedOutputTensor],
    explain: &ExplainMode,
) -> Result<Vec<Output>, Error> {
    if requested.is_empty() {
        return Ok(Output::ALL.to_vec());
    }
    requested
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let output = Output::ALL
                .into_iter()
                .find(|out| out.name() == o.name)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "outputs[{i}].name: {:?} is not an output; the outputs are {}",
                        o.name,
                        Output::ALL.map(Output::name).join(", ")
                    ))
                })?;
            if output.needs_attributions() && !matches!(explain, ExplainMode::Inline(_)) {
                return Err(Error::InvalidArgument(format!(
                    "outputs[{i}].name: {:?} needs the parameter {} = \"inline\"",
                    o.name,
                    param::EXPLAIN_MODE
                )));
            }
            Ok(output)
        })
        .collect()
}

/// The subject, its consent signals and the explain options, from the
/// request parameters, as the native request would carry them. A parameter
/// Candor does not know is refused: a misspelt consent signal must not
/// silently count as absent.
fn parameters(
    parameters: HashMap<String, InferParameter>,
) -> Result<(String, pb::RequestContext, Option<pb::ExplainOptions>), Error> {
    use param::*;
    let mut subject_id = String::new();
    let mut c = pb::RequestContext::default();
    let mut explain: Option<pb::ExplainOptions> = None;
    // In name order, so that a request with several bad parameters always
    // gets the same answer.
    let parameters: std::collections::BTreeMap<String, InferParameter> =
        parameters.into_iter().collect();
    for (key, value) in parameters {
        let field = |s: &mut String| -> Result<(), Error> {
            *s = text(&key, &value)?.to_owned();
            Ok(())
        };
        match key.as_str() {
            SUBJECT_ID => field(&mut subject_id)?,
            JURISDICTION_COUNTRY => field(&mut c.jurisdiction_country)?,
            JURISDICTION_REGION => field(&mut c.jurisdiction_region)?,
            TC_STRING => field(&mut c.tc_string)?,
            GPP_STRING => field(&mut c.gpp_string)?,
            PLACEMENT_ID => field(&mut c.placement_id)?,
            CAMPAIGN_ID => field(&mut c.campaign_id)?,
            AD_ID => field(&mut c.ad_id)?,
            AGE_STATUS => {
                c.age_status = choice(
                    &key,
                    &value,
                    &[
                        ("adult", pb::AgeStatus::Adult),
                        ("minor", pb::AgeStatus::Minor),
                        ("unknown", pb::AgeStatus::Unspecified),
                    ],
                )? as i32;
            }
            GPC => match value.parameter_choice {
                Some(ParameterChoice::BoolParam(gpc)) => c.gpc = gpc,
                _ => return Err(wrong_type(&key, "a bool")),
            },
            CONSENT_MODE_AD_STORAGE
            | CONSENT_MODE_AD_USER_DATA
            | CONSENT_MODE_AD_PERSONALIZATION
            | CONSENT_MODE_ANALYTICS_STORAGE => {
                let flag = choice(
                    &key,
                    &value,
                    &[
                        ("granted", pb::ConsentModeValue::Granted),
                        ("denied", pb::ConsentModeValue::Denied),
                    ],
                )? as i32;
                let mode = c.consent_mode.get_or_insert_default();
                *match key.as_str() {
                    CONSENT_MODE_AD_STORAGE => &mut mode.ad_storage,
                    CONSENT_MODE_AD_USER_DATA => &mut mode.ad_user_data,
                    CONSENT_MODE_AD_PERSONALIZATION => &mut mode.ad_personalization,
                    _ => &mut mode.analytics_storage,
                } = flag;
            }
            EXPLAIN_MODE => {
                explain.get_or_insert_default().mode = choice(
                    &key,
                    &value,
                    &[
                        ("inline", pb::ExplainMode::Inline),
                        ("deferred", pb::ExplainMode::Deferred),
                        ("none", pb::ExplainMode::Unspecified),
                    ],
                )? as i32;
            }
            EXPLAIN_METHOD => {
                explain.get_or_insert_default().method = choice(
                    &key,
                    &value,
                    &[
                        ("path_dependent", pb::ExplainMethod::PathDependent),
                        ("interventional", pb::ExplainMethod::Interventional),
                    ],
                )? as i32;
            }
            k if k.starts_with(AUDIT_PREFIX) => {
                let name = k[AUDIT_PREFIX.len()..].to_owned();
                c.audit_attributes
                    .insert(name, text(&key, &value)?.to_owned());
            }
            k if TRITON.contains(&k) => {}
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "parameters[{key:?}]: not a parameter Candor knows; see the README's Open Inference Protocol section"
                )));
            }
        }
    }
    Ok((subject_id, c, explain))
}

fn wrong_type(key: &str, want: &str) -> Error {
    Error::InvalidArgument(format!("parameters[{key:?}]: must be {want}"))
}

fn text<'a>(key: &str, value: &'a InferParameter) -> Result<&'a str, Error> {
    match &value.parameter_choice {
        Some(ParameterChoice::StringParam(s)) => Ok(s),
        _ => Err(wrong_type(key, "a string")),
    }
}

/// One of the named values a string parameter may take.
fn choice<T: Copy>(key: &str, value: &InferParameter, options: &[(&str, T)]) -> Result<T, Error> {
    let given = text(key, value)?;
    options
        .iter()
        .find(|(name, _)| *name == given)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
            Error::InvalidArgument(format!(
                "parameters[{key:?}]: {given:?} is not one of {}",
                names.join(", ")
            ))
        })
}

impl Infer {
    /// The tensor must be the model's input, one value per feature.
    fn check_input(&self, package: &ModelPackage) -> Result<(), Error> {
        let want = &package.manifest.model.input.tensor;
        if &self.input != want {
            return Err(Error::InvalidArgument(format!(
                "inputs[0].name: {:?} is not this model's input; send {want:?}",
                self.input
            )));
        }
        let features = package.schema.width();
        if self.reply.width != features {
            return Err(Error::InvalidArgument(format!(
                "inputs[0].shape: {} features per row; this model takes {features}",
                self.reply.width
            )));
        }
        Ok(())
    }
}

impl Reply {
    fn respond(self, decisions: Vec<Decision>) -> Result<ModelInferResponse, Error> {
        let first = decisions.first().ok_or_else(|| {
            Error::Internal("the gateway returned no decision for a batch".into())
        })?;
        let provenance =
            super::convert::provenance_json(&first.provenance.as_ref().into()).to_string();
        let parameters = HashMap::from([
            (
                reply::TIER.to_owned(),
                string(first.provenance.tier.as_str()),
            ),
            (reply::PROVENANCE.to_owned(), string(&provenance)),
            (
                reply::EXPLANATION_STATUS.to_owned(),
                string(status(first.explanation_status)),
            ),
        ]);
        let model_name = first.model.name.clone();
        let model_version = first.model.version.clone();
        let rows = decisions.len() as i64;
        let attributions: Option<Vec<_>> =
            decisions.iter().map(|d| d.attribution.as_ref()).collect();
        let mut outputs = Vec::with_capacity(self.outputs.len());
        let mut raw = Vec::with_capacity(self.outputs.len());
        for output in self.outputs {
            let mut tensor_parameters = HashMap::new();
            let bytes: Vec<u8> = match output {
                Output::Score => match decisions
                    .iter()
                    .map(|d| d.score)
                    .collect::<Option<Vec<_>>>()
                {
                    Some(scores) => le_f64(scores),
                    None => continue,
                },
                Output::DecisionId => decisions
                    .iter()
                    .flat_map(|d| {
                        let id = d.id.to_string();
                        // BYTES elements: a little-endian u32 length, then the bytes.
                        (id.len() as u32)
                            .to_le_bytes()
                            .into_iter()
                            .chain(id.into_bytes())
                    })
                    .collect(),
                Output::Attributions => {
                    let Some(all) = &attributions else { continue };
                    if let Some(a) = all.first() {
                        tensor_parameters
                            .insert(reply::METHOD.to_owned(), string(a.attribution.method));
                        tensor_parameters.insert(
                            reply::OUTPUT_SPACE.to_owned(),
                            string(a.attribution.output_space),
                        );
                    }
                    le_f64(
                        all.iter()
                            .flat_map(|a| a.attribution.contributions.iter().copied()),
                    )
                }
                Output::BaseValue => {
                    let Some(all) = &attributions else { continue };
                    le_f64(all.iter().map(|a| a.attribution.base_value))
                }
            };
            outputs.push(InferOutputTensor {
                name: output.name().to_owned(),
                datatype: output.datatype().to_owned(),
                shape: output.shape(rows, self.width),
                parameters: tensor_parameters,
                contents: None,
            });
            raw.push(bytes);
        }
        Ok(ModelInferResponse {
            model_name: model_name.to_string(),
            model_version: model_version.to_string(),
            id: self.id,
            parameters,
            outputs,
            // tritonclient reads numeric outputs only from raw contents.
            raw_output_contents: raw,
        })
    }
}

fn le_f64(values: impl IntoIterator<Item = f64>) -> Vec<u8> {
    values.into_iter().flat_map(f64::to_le_bytes).collect()
}

fn string(s: &str) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::StringParam(s.to_owned())),
    }
}

fn status(status: ExplanationStatus) -> &'static str {
    match status {
        ExplanationStatus::Inline => "inline",
        ExplanationStatus::Deferred => "deferred",
        ExplanationStatus::OnRequest => "on_request",
        ExplanationStatus::NotApplicable => "not_applicable",
    }
}

pub struct Oip {
    gateway: Arc<Gateway>,
}

impl Oip {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Oip {
    async fn server_live(
        &self,
        _request: Request<oip::ServerLiveRequest>,
    ) -> Result<Response<oip::ServerLiveResponse>, Status> {
        Ok(Response::new(oip::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<oip::ServerReadyRequest>,
    ) -> Result<Response<oip::ServerReadyResponse>, Status> {
        // As the health service says: loaded, and able to record.
        let ready = *self.gateway.readiness().borrow() == Readiness::Ready
            && *self.gateway.commits_succeed().borrow();
        Ok(Response::new(oip::ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<oip::ModelReadyRequest>,
    ) -> Result<Response<oip::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let selector =
            selector(r.name, r.version).map_err(|e| in_fields(e.into(), "name", "version"))?;
        let ready = match self.gateway.resolve(&selector) {
            Ok(_) => true,
            Err(Error::Lookup(_) | Error::NotReady) => false,
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(oip::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _request: Request<oip::ServerMetadataRequest>,
    ) -> Result<Response<oip::ServerMetadataResponse>, Status> {
        Ok(Response::new(oip::ServerMetadataResponse {
            name: "candor".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<oip::ModelMetadataRequest>,
    ) -> Result<Response<oip::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let named = |e: Error| in_fields(e.into(), "name", "version");
        let selector = selector(r.name, r.version).map_err(named)?;
        let package = self.gateway.resolve(&selector).map_err(named)?;
        let registry = self.gateway.registry()?;
        let versions = registry
            .models()
            .filter(|(name, _)| **name == selector.name)
            .flat_map(|(_, m)| m.versions.keys().map(ToString::to_string))
            .collect();
        let width = package.schema.width();
        let tensor = |name: &str, datatype: &str, shape: Vec<i64>| TensorMetadata {
            name: name.to_owned(),
            datatype: datatype.to_owned(),
            shape,
        };
        Ok(Response::new(oip::ModelMetadataResponse {
            name: package.name().to_owned(),
            versions,
            platform: "onnxruntime_onnx".into(),
            inputs: vec![tensor(
                &package.manifest.model.input.tensor,
                "FP32",
                vec![-1, width as i64],
            )],
            outputs: Output::ALL
                .map(|o| tensor(o.name(), o.datatype(), o.shape(-1, width)))
                .into(),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        self.infer(request)
            .await
            .map_err(|s| in_fields(s, "model_name", "model_version"))
    }
}

impl Oip {
    async fn infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let request_id = super::request_id(request.metadata());
        let deadline = super::reply_by(&request);
        let infer: Infer = request.into_inner().try_into()?;
        // Checked against the version that will score this subject: a
        // canary's columns may differ from production's.
        infer.check_input(
            &*self
                .gateway
                .serving(&infer.batch.model, &infer.batch.subject)?,
        )?;
        let Infer {
            mut batch, reply, ..
        } = infer;
        batch.request_id = request_id;
        batch.deadline = deadline;
        let decisions = self.gateway.score_batch(batch).await?;
        Ok(Response::new(reply.respond(decisions)?))
    }
}

//! The Open Inference Protocol v2 (`inference.GRPCInferenceService`) against
//! a real server: the official Triton client scores the Caravan model with
//! attributions and provenance; bad requests get exact codes naming the
//! field; and consent through OIP gives the native API's answer.

mod common;

use std::{path::PathBuf, process::Command};

use candor::grpc::{
    inference::{
        InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
        ModelMetadataRequest, ModelReadyRequest, grpc_inference_service_client,
        infer_parameter::ParameterChoice, model_infer_request::InferRequestedOutputTensor,
    },
    pb,
};
use common::*;
use tonic::{Code, transport::Channel};

type Client = grpc_inference_service_client::GrpcInferenceServiceClient<Channel>;

const MODEL: &str = "caravan-lgbm";
const VERSION: &str = "1.0.0";

/// The venv `make test` sets up with the pinned tritonclient.
fn python() -> PathBuf {
    let python = std::env::var_os("OIP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv-oip/bin/python"));
    assert!(
        python.is_file(),
        "{} is missing: `make test` creates it with tests/oip_client/requirements.txt",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_scores_caravan_with_attributions_and_provenance() {
    let python = python();
    let server = TestServer::start().await;
    let addr = server.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(repo_root().join("tests/oip_client/client.py"))
            .arg(addr)
            .arg(repo_root().join("models/caravan-lgbm/1.0.0"))
            .output()
            .expect("the venv's python runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "client.py failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    server.stop().await;
}

fn flag(b: bool) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::BoolParam(b)),
    }
}

/// A request for `rows` copies of the golden row for a US adult.
fn request(rows: usize) -> ModelInferRequest {
    ModelInferRequest {
        id: "req-1".into(),
        ..oip_request(rows, "oip-subject")
    }
}

async fn client(server: &TestServer) -> Client {
    Client::new(server.channel().await)
}

/// An FP64 output of the response, by name.
fn output(response: &ModelInferResponse, name: &str) -> Option<Vec<f64>> {
    let i = response.outputs.iter().position(|o| o.name == name)?;
    assert_eq!(response.outputs[i].datatype, "FP64");
    Some(
        response.raw_output_contents[i]
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
    )
}

fn parameter<'a>(response: &'a ModelInferResponse, name: &str) -> &'a str {
    match &response.parameters[name].parameter_choice {
        Some(ParameterChoice::StringParam(s)) => s,
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_exact_codes_naming_the_field() {
    let server = TestServer::start().await;
    let mut oip = client(&server).await;
    let width = caravan_values().len() as i64;
    type Edit = Box<dyn Fn(&mut ModelInferRequest)>;
    let cases: Vec<(&str, Edit, Code, &str)> = vec![
        (
            "too few features",
            Box::new(move |r| {
                r.inputs[0].shape = vec![1, width - 1];
                r.raw_input_contents[0].truncate(4 * (width as usize - 1));
            }),
            Code::InvalidArgument,
            "inputs[0].shape: 77 features per row; this model takes 78",
        ),
        (
            "one dimension",
            Box::new(move |r| r.inputs[0].shape = vec![width]),
            Code::InvalidArgument,
            "inputs[0].shape: must be [rows, features]",
        ),
        (
            "shape disagrees with the data",
            Box::new(move |r| r.inputs[0].shape = vec![2, width]),
            Code::InvalidArgument,
            "raw_input_contents[0]: holds 312 bytes; the shape needs 156 values of 4 bytes",
        ),
        (
            "shape whose byte count overflows",
            Box::new(|r| r.inputs[0].shape = vec![1 << 31, 1 << 31]),
            Code::InvalidArgument,
            "raw_input_contents[0]: holds 312 bytes; the shape needs 4611686018427387904 values",
        ),
        (
            "unsupported datatype",
            Box::new(|r| r.inputs[0].datatype = "INT8".into()),
            Code::InvalidArgument,
            "inputs[0].datatype: \"INT8\" is not accepted",
        ),
        (
            "wrong input name",
            Box::new(|r| r.inputs[0].name = "features".into()),
            Code::InvalidArgument,
            "inputs[0].name: \"features\" is not this model's input; send \"input\"",
        ),
        (
            "no data",
            Box::new(|r| r.raw_input_contents.clear()),
            Code::InvalidArgument,
            "inputs[0].contents: no data",
        ),
        (
            "value out of range",
            Box::new(|r| r.raw_input_contents[0][..4].copy_from_slice(&42f32.to_le_bytes())),
            Code::InvalidArgument,
            "value 42 is outside the allowed range",
        ),
        (
            "unknown model",
            Box::new(|r| r.model_name = "no-such-model".into()),
            Code::NotFound,
            "model_name: no model named \"no-such-model\"",
        ),
        (
            "unknown version",
            Box::new(|r| r.model_version = "9.9.9".into()),
            Code::NotFound,
            "model_version",
        ),
        (
            "version not semver",
            Box::new(|r| r.model_version = "1".into()),
            Code::InvalidArgument,
            "model_version: \"1\" is neither a semantic version nor an alias",
        ),
        (
            "unknown age status",
            Box::new(|r| {
                r.parameters
                    .insert("age_status".into(), oip_text("elderly"));
            }),
            Code::InvalidArgument,
            "parameters[\"age_status\"]: \"elderly\" is not one of adult, minor, unknown",
        ),
        (
            "gpc as a string",
            Box::new(|r| {
                r.parameters.insert("gpc".into(), oip_text("1"));
            }),
            Code::InvalidArgument,
            "parameters[\"gpc\"]: must be a bool",
        ),
        (
            "misspelt consent parameter",
            Box::new(|r| {
                r.parameters.insert("gcp".into(), flag(true));
            }),
            Code::InvalidArgument,
            "parameters[\"gcp\"]: not a parameter Candor knows",
        ),
        (
            "malformed TC string",
            Box::new(|r| {
                r.parameters
                    .insert("jurisdiction_country".into(), oip_text("DE"));
                r.parameters
                    .insert("tc_string".into(), oip_text("not-a-tc-string"));
            }),
            Code::InvalidArgument,
            "context.tc_string",
        ),
        (
            "attributions without explain_mode",
            Box::new(|r| {
                r.outputs = vec![InferRequestedOutputTensor {
                    name: "attributions".into(),
                    ..Default::default()
                }];
            }),
            Code::InvalidArgument,
            "outputs[0].name: \"attributions\" needs the parameter explain_mode = \"inline\"",
        ),
        (
            "unknown output",
            Box::new(|r| {
                r.outputs = vec![InferRequestedOutputTensor {
                    name: "probabilities".into(),
                    ..Default::default()
                }];
            }),
            Code::InvalidArgument,
            "outputs[0].name: \"probabilities\" is not an output",
        ),
    ];
    let mut wrong = vec![];
    for (label, edit, code, message) in cases {
        let mut r = request(1);
        edit(&mut r);
        match oip.model_infer(r).await {
            Ok(_) => wrong.push(format!("{label}: accepted")),
            Err(s) if s.code() != code || !s.message().contains(message) => {
                wrong.push(format!("{label}: got {:?} {:?}", s.code(), s.message()))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The request itself, unedited, is accepted: the cases above fail for
    // their edit alone.
    let ok = oip.model_infer(request(1)).await.unwrap().into_inner();
    assert_eq!(ok.id, "req-1");
    assert_eq!(parameter(&ok, "tier"), "personalised");

    let ready = |name: &str| ModelReadyRequest {
        name: name.into(),
        version: String::new(),
    };
    assert!(
        oip.model_ready(ready(MODEL))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !oip.model_ready(ready("nope"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let missing = oip
        .model_metadata(ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    // Named in the protocol's field, not the native request's.
    assert!(
        missing
            .message()
            .starts_with("name: no model named \"nope\""),
        "{missing:?}"
    );
    server.stop().await;
}

/// FP32, FP64 and INT64, in contents or raw: the same row, the same score.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_encoding_scores_the_same() {
    let server = TestServer::start().await;
    let mut oip = client(&server).await;
    let row = caravan_values();
    let raw = oip.model_infer(request(2)).await.unwrap().into_inner();
    let want = output(&raw, "score").unwrap();
    assert_eq!(want.len(), 2);
    let contents = [
        (
            "FP32",
            InferTensorContents {
                fp32_contents: row.iter().map(|&v| v as f32).collect(),
                ..Default::default()
            },
        ),
        (
            "FP64",
            InferTensorContents {
                fp64_contents: row.clone(),
                ..Default::default()
            },
        ),
        (
            "INT64",
            InferTensorContents {
                int64_contents: row.iter().map(|&v| v as i64).collect(),
                ..Default::default()
            },
        ),
    ];
    for (datatype, contents) in contents {
        let mut r = request(1);
        r.raw_input_contents.clear();
        r.inputs[0].datatype = datatype.into();
        r.inputs[0].contents = Some(contents);
        let got = oip.model_infer(r).await.unwrap().into_inner();
        assert_eq!(output(&got, "score").unwrap(), want[..1], "{datatype}");
    }
    let raw = [
        ("FP64", row.iter().flat_map(|v| v.to_le_bytes()).collect()),
        (
            "INT64",
            row.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect(),
        ),
    ];
    for (datatype, bytes) in raw {
        let mut r = request(1);
        r.inputs[0].datatype = datatype.into();
        r.raw_input_contents = vec![bytes];
        let got = oip.model_infer(r).await.unwrap().into_inner();
        assert_eq!(output(&got, "score").unwrap(), want[..1], "raw {datatype}");
    }
    server.stop().await;
}

/// The same signals give the same tier, score, masked features and rules
/// through OIP as through the native Score.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_through_oip_equals_the_native_answer() {
    let server = TestServer::start().await;
    let mut oip = client(&server).await;
    let us = |age: pb::AgeStatus, gpc: bool| pb::RequestContext {
        jurisdiction_country: "US".into(),
        age_status: age as i32,
        gpc,
        ..Default::default()
    };
    // (label, parameters, the native context with the same signals)
    type Parameters = Vec<(&'static str, InferParameter)>;
    let cases: Vec<(&str, Parameters, pb::RequestContext)> = vec![
        (
            "US adult",
            vec![
                ("jurisdiction_country", oip_text("US")),
                ("age_status", oip_text("adult")),
            ],
            us(pb::AgeStatus::Adult, false),
        ),
        (
            "GPC",
            vec![
                ("jurisdiction_country", oip_text("US")),
                ("age_status", oip_text("adult")),
                ("gpc", flag(true)),
            ],
            us(pb::AgeStatus::Adult, true),
        ),
        (
            "minor",
            vec![
                ("jurisdiction_country", oip_text("US")),
                ("age_status", oip_text("minor")),
            ],
            us(pb::AgeStatus::Minor, false),
        ),
        (
            "consent mode denied",
            vec![
                ("jurisdiction_country", oip_text("US")),
                ("consent_mode.ad_personalization", oip_text("denied")),
            ],
            pb::RequestContext {
                consent_mode: Some(pb::ConsentModeFlags {
                    ad_personalization: pb::ConsentModeValue::Denied as i32,
                    ..Default::default()
                }),
                ..us(pb::AgeStatus::Unspecified, false)
            },
        ),
        (
            "EEA without a TC string",
            vec![("jurisdiction_country", oip_text("DE"))],
            pb::RequestContext {
                jurisdiction_country: "DE".into(),
                ..Default::default()
            },
        ),
        ("no jurisdiction", vec![], pb::RequestContext::default()),
    ];
    let mut tiers = vec![];
    for (i, (label, parameters, context)) in cases.into_iter().enumerate() {
        let native = server
            .score_one(pb::ScoreRequest {
                model: model_ref(MODEL, VERSION),
                subject_id: format!("native-{i}"),
                values: caravan_values(),
                context: Some(context),
                ..Default::default()
            })
            .await;
        let mut r = request(1);
        r.parameters = parameters
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain([("subject_id".to_owned(), oip_text(&format!("oip-{i}")))])
            .collect();
        let got = oip.model_infer(r).await.unwrap().into_inner();
        let provenance: serde_json::Value =
            serde_json::from_str(parameter(&got, "provenance")).unwrap();
        let native_provenance = native.provenance.unwrap();
        let tier = parameter(&got, "tier");
        assert_eq!(
            pb::Tier::from_str_name(&format!("TIER_{}", tier.to_uppercase())),
            Some(pb::Tier::try_from(native.tier).unwrap()),
            "{label}"
        );
        assert_eq!(output(&got, "score").map(|s| s[0]), native.score, "{label}");
        assert_eq!(
            provenance["masked_features"],
            serde_json::json!(native_provenance.masked_features),
            "{label}"
        );
        assert_eq!(
            provenance["rules_fired"],
            serde_json::json!(native_provenance.rules_fired),
            "{label}"
        );
        // One vocabulary for one answer: the native message's names and
        // values.
        assert_eq!(provenance["regime"], native_provenance.regime, "{label}");
        assert_eq!(
            provenance["signals_sha256"], native_provenance.signals_sha256,
            "{label}"
        );
        assert_eq!(
            provenance["policy_sha256"], native_provenance.policy_sha256,
            "{label}"
        );
        tiers.push(tier.to_owned());
    }
    // The cases reach every tier, so the comparison covers each.
    tiers.sort();
    tiers.dedup();
    assert_eq!(tiers, ["contextual", "personalised", "refused"]);
    server.stop().await;
}

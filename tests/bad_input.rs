//! Every kind of bad input gets a precise status whose message names the field.

mod common;

use candor::{
    Config,
    grpc::{
        inference::grpc_inference_service_client::GrpcInferenceServiceClient,
        pb::{
            self, explain_service_client::ExplainServiceClient,
            explanation_service_client::ExplanationServiceClient,
        },
    },
};
use common::*;
use pb::feature_value::Kind;
use tonic::Code;

/// `features` with `name` set to `value`, in place or added.
fn set(features: &mut Vec<pb::Feature>, name: &str, value: pb::FeatureValue) {
    features.retain(|f| f.key != name);
    features.push(pb::Feature {
        key: name.into(),
        value: Some(value),
    });
}

fn with_feature(name: &str, kind: Option<Kind>) -> pb::ScoreRequest {
    let mut r = caravan_request();
    set(&mut r.features, name, pb::FeatureValue { kind });
    r
}

fn without_feature(name: &str) -> pb::ScoreRequest {
    let mut r = caravan_request();
    r.features.retain(|f| f.key != name);
    r
}

#[tokio::test]
async fn bad_score_requests_name_the_field() {
    let server = TestServer::start_with(Config {
        max_batch_rows: 8,
        max_message_bytes: 64 * 1024,
        ..test_config()
    })
    .await;
    let mut client = server.scoring().await;

    let cases: Vec<(&str, pb::ScoreRequest, Code, &str)> = vec![
        (
            "no model",
            pb::ScoreRequest {
                context: common::us_adult(),
                model: None,
                ..caravan_request()
            },
            Code::InvalidArgument,
            "model: is required",
        ),
        (
            "empty model name",
            pb::ScoreRequest {
                context: common::us_adult(),
                model: model_ref("", ""),
                ..caravan_request()
            },
            Code::InvalidArgument,
            "model.name",
        ),
        (
            "unknown model",
            pb::ScoreRequest {
                context: common::us_adult(),
                model: model_ref("nope", ""),
                ..caravan_request()
            },
            Code::NotFound,
            "model.name",
        ),
        (
            "unknown version",
            pb::ScoreRequest {
                context: common::us_adult(),
                model: model_ref("caravan-lgbm", "9.9.9"),
                ..caravan_request()
            },
            Code::NotFound,
            "model.version",
        ),
        (
            "unparsable version",
            pb::ScoreRequest {
                context: common::us_adult(),
                model: model_ref("caravan-lgbm", "latest"),
                ..caravan_request()
            },
            Code::InvalidArgument,
            "model.version",
        ),
        (
            "missing feature",
            without_feature("PPERSAUT"),
            Code::InvalidArgument,
            "features[\"PPERSAUT\"] is missing",
        ),
        (
            "explicitly missing feature",
            with_feature("PPERSAUT", None),
            Code::InvalidArgument,
            "features[\"PPERSAUT\"] is missing",
        ),
        (
            "unknown feature",
            with_feature("SHOE_SIZE", Some(Kind::Integer(1))),
            Code::InvalidArgument,
            "features[\"SHOE_SIZE\"] is not an input",
        ),
        (
            "excluded special-category column",
            with_feature("MGODRK", Some(Kind::Integer(1))),
            Code::InvalidArgument,
            "features[\"MGODRK\"] is not an input",
        ),
        (
            "label for an integer",
            with_feature("PPERSAUT", Some(Kind::Category("lots".into()))),
            Code::InvalidArgument,
            "features[\"PPERSAUT\"] has the wrong type",
        ),
        (
            "fraction for an integer",
            with_feature("PPERSAUT", Some(Kind::Number(2.5))),
            Code::InvalidArgument,
            "features[\"PPERSAUT\"] has the wrong type",
        ),
        (
            "out of range",
            with_feature("PPERSAUT", Some(Kind::Integer(42))),
            Code::InvalidArgument,
            "features[\"PPERSAUT\"] value 42 is outside",
        ),
        (
            "negative",
            with_feature("PPERSAUT", Some(Kind::Integer(-1))),
            Code::InvalidArgument,
            "features[\"PPERSAUT\"] value -1 is outside",
        ),
        (
            "excluded religion/ethnicity segment column",
            with_feature("MOSTYPE", Some(Kind::Integer(33))),
            Code::InvalidArgument,
            "features[\"MOSTYPE\"] is not an input",
        ),
        (
            "NaN",
            with_feature("PPERSAUT", Some(Kind::Number(f64::NAN))),
            Code::InvalidArgument,
            "features[\"PPERSAUT\"] is not finite",
        ),
        (
            "infinity",
            with_feature("PPERSAUT", Some(Kind::Number(f64::INFINITY))),
            Code::InvalidArgument,
            "features[\"PPERSAUT\"] is not finite",
        ),
        (
            "huge value",
            with_feature("PPERSAUT", Some(Kind::Number(1e300))),
            Code::InvalidArgument,
            "features[\"PPERSAUT\"] value 1e300 is outside",
        ),
        (
            "over-long subject id",
            pb::ScoreRequest {
                subject_id: "s".repeat(20_000),
                ..caravan_request()
            },
            Code::InvalidArgument,
            "subject_id: 20000 bytes, longer than the 256",
        ),
        (
            "over-long placement id",
            {
                let mut r = caravan_request();
                r.context.get_or_insert_default().placement_id = "p".repeat(300);
                r
            },
            Code::InvalidArgument,
            "context.placement_id: 300 bytes",
        ),
        (
            "over-long TC string",
            {
                let mut r = caravan_request();
                r.context.get_or_insert_default().tc_string = "C".repeat(20_000);
                r
            },
            Code::InvalidArgument,
            "context.tc_string: 20000 bytes, longer than the 16384 a consent string",
        ),
        // The message quotes the name cut short: whole, 20 kB would exceed
        // the HTTP/2 header limit and arrive as a transport error.
        (
            "over-long unknown model name",
            pb::ScoreRequest {
                context: common::us_adult(),
                model: model_ref(&"m".repeat(20_000), ""),
                ..caravan_request()
            },
            Code::NotFound,
            "model.name",
        ),
        (
            "over-long unknown feature",
            with_feature(&"F".repeat(20_000), Some(Kind::Integer(1))),
            Code::InvalidArgument,
            "is not an input",
        ),
    ];
    let positional = |version: &str, values: Vec<f64>| pb::ScoreRequest {
        context: common::us_adult(),
        model: model_ref("caravan-lgbm", version),
        values,
        ..Default::default()
    };
    let mut good = vec![1.0; 78];
    let mut both = caravan_request();
    both.model = model_ref("caravan-lgbm", "1.0.0");
    both.values = good.clone();
    let cases = cases.into_iter().chain([
        (
            "positional without a version",
            positional("", good.clone()),
            Code::InvalidArgument,
            "model.version: a version number (not an alias) is required with positional values",
        ),
        (
            "positional with an alias",
            positional("production", good.clone()),
            Code::InvalidArgument,
            "model.version: a version number (not an alias) is required with positional values",
        ),
        (
            "canary alias without a canary",
            {
                let mut r = caravan_request();
                r.model = model_ref("caravan-lgbm", "canary");
                r
            },
            Code::NotFound,
            "model.version: model \"caravan-lgbm\" has no canary",
        ),
        (
            "named and positional",
            both,
            Code::InvalidArgument,
            "values: give either named features or positional values",
        ),
        (
            "too few values",
            positional("1.0.0", vec![1.0; 77]),
            Code::InvalidArgument,
            "values: 77 positional values given, the model has 78",
        ),
        (
            "positional fraction",
            positional("1.0.0", {
                good[3] = 0.5;
                good.clone()
            }),
            Code::InvalidArgument,
            "values[3] (MRELSA) has the wrong type",
        ),
    ]);
    for (what, request, code, needle) in cases {
        let status = client.score(request).await.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(
            status.message().contains(needle),
            "{what}: {:?} should contain {needle:?}",
            status.message()
        );
    }

    let mut bad_row = caravan_batch(3);
    set(&mut bad_row.rows[2].features, "PPERSAUT", integer(99));
    let batch_cases: Vec<(&str, pb::ScoreBatchRequest, Code, &str)> = vec![
        (
            "oversized batch",
            caravan_batch(9),
            Code::InvalidArgument,
            "rows: 9 rows exceed the limit of 8",
        ),
        (
            "empty batch",
            caravan_batch(0),
            Code::InvalidArgument,
            "rows: a batch needs at least one row",
        ),
        (
            "bad row",
            bad_row,
            Code::InvalidArgument,
            "rows[2].features[\"PPERSAUT\"] value 99",
        ),
        (
            "unknown model",
            pb::ScoreBatchRequest {
                context: common::us_adult(),
                model: model_ref("nope", ""),
                ..caravan_batch(1)
            },
            Code::NotFound,
            "model.name",
        ),
    ];
    for (what, request, code, needle) in batch_cases {
        let status = client.score_batch(request).await.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(
            status.message().contains(needle),
            "{what}: {:?} should contain {needle:?}",
            status.message()
        );
    }

    // 100 rows of 78 named features is far beyond the 64 KiB message limit.
    let mut huge = caravan_batch(100);
    huge.model = model_ref("caravan-lgbm", "");
    let status = client
        .score_batch(huge)
        .await
        .expect_err("oversized message");
    // tonic rejects an oversized message while decoding it, as OUT_OF_RANGE;
    // the gateway answers RESOURCE_EXHAUSTED, as gRPC's code guide says.
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().starts_with("request: ")
            && status.message().contains("max_message_bytes")
            && status.message().ends_with("send fewer rows per call"),
        "{}",
        status.message()
    );
    // One row's request has no rows to send fewer of.
    let mut long = caravan_request();
    long.subject_id = "a".repeat(64 * 1024);
    let status = client.score(long).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(!status.message().contains("rows"), "{status:?}");

    // A message that is not valid protobuf for the method is the caller's
    // error, not the gateway's: INVALID_ARGUMENT naming where decoding
    // failed (tonic's own answer is INTERNAL).
    #[derive(Clone, PartialEq, prost::Message)]
    struct NotUtf8 {
        #[prost(bytes = "vec", tag = "2")]
        subject_id: Vec<u8>,
    }
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<_, pb::ScoreResponse, _>(
            tonic::Request::new(NotUtf8 {
                subject_id: vec![b'a', 0xff, 0xfe],
            }),
            tonic::codegen::http::uri::PathAndQuery::from_static("/candor.v1.ScoringService/Score"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("a subject_id that is not UTF-8");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().starts_with("request: ")
            && status.message().contains("ScoreRequest.subject_id"),
        "{}",
        status.message()
    );

    // The server is unharmed: a good request still scores.
    assert!(client.score(caravan_request()).await.is_ok());
    server.stop().await;
}

/// An answer refused for its size: RESOURCE_EXHAUSTED, its message
/// starting with `head` and saying `also`.
fn too_large(status: tonic::Status, head: &str, also: &str) {
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().starts_with(head) && status.message().contains(also),
        "{}",
        status.message()
    );
}

/// The subject's decisions in the record.
async fn recorded(server: &TestServer, subject: &str) -> usize {
    ExplanationServiceClient::new(server.channel().await)
        .list_decisions(pb::ListDecisionsRequest {
            subject_id: subject.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decisions
        .len()
}

/// A batch whose answer would exceed the message limit with its inline
/// attributions (kilobytes a row) is answered with its scores and its
/// attributions owed; one that would exceed it even without them is
/// RESOURCE_EXHAUSTED with how many rows fit (not tonic's OUT_OF_RANGE),
/// and none of its decisions is recorded, since nobody received them.
#[tokio::test]
async fn answers_over_the_message_limit_say_how_many_rows_fit() {
    let server = TestServer::start_with(Config {
        max_message_bytes: 16 * 1024,
        ..test_config()
    })
    .await;
    let mut client = server.scoring().await;
    let inline = Some(pb::ExplainOptions {
        mode: pb::ExplainMode::Inline as i32,
        method: 0,
    });
    let mut request = caravan_batch(8);
    request.subject_id = "wide".into();
    request.explain = inline;
    let answered = client.score_batch(request).await.unwrap().into_inner();
    assert_eq!(answered.decisions.len(), 8);
    for d in &answered.decisions {
        assert!(d.score.is_some() && d.attribution.is_none(), "{d:?}");
        assert_eq!(d.explanation_status(), pb::ExplanationStatus::Deferred);
    }
    assert_eq!(recorded(&server, "wide").await, 8);
    // Owed, so computed when asked for.
    assert!(engineer_attributions(&server, &answered.decisions[0].decision_id).await);
    // A small batch still has its attributions inline.
    let mut request = caravan_batch(1);
    request.explain = inline;
    let answered = client.score_batch(request).await.unwrap().into_inner();
    assert_eq!(
        answered.decisions[0].explanation_status(),
        pb::ExplanationStatus::Inline
    );

    // An answer too large even without attributions is refused before
    // anything is recorded. (A request that fits has an answer that fits
    // under one limit, so the edge's measure is replaced here.)
    let mut request = caravan_batch(3);
    request.subject_id = "many".into();
    let mut request: candor::gateway::BatchRequest = request.try_into().unwrap();
    request.answer_size = Some(candor::gateway::AnswerSize {
        field: "rows",
        bytes: std::sync::Arc::new(|decisions| decisions.len() * 10_000),
    });
    let refused = server.gateway.score_batch(request).await.unwrap_err();
    too_large(
        refused.into(),
        "rows: the answer for 3 rows is 30000 bytes, over the 16384",
        "send at most 1 rows",
    );
    assert_eq!(recorded(&server, "many").await, 0);
    // ExplainBatch answers with every row's attributions.
    let status = ExplainServiceClient::new(server.channel().await)
        .explain_batch(pb::ExplainBatchRequest {
            model: model_ref("caravan-lgbm", ""),
            rows: caravan_batch(8).rows,
            method: 0,
        })
        .await
        .unwrap_err();
    too_large(status, "rows: the answer for 8 rows is", "send at most");
    // ModelInfer's rows are its input tensor's.
    let mut request = oip_request(50, "alice");
    request
        .parameters
        .insert("explain_mode".into(), oip_text("inline"));
    let answered = GrpcInferenceServiceClient::new(server.channel().await)
        .model_infer(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answered.parameters["explanation_status"],
        oip_text("deferred")
    );
    server.stop().await;
}

#[tokio::test]
async fn requests_before_the_models_load_are_unavailable() {
    let server = TestServer::start_unloaded(test_config()).await;
    let status = server
        .scoring()
        .await
        .score(caravan_request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("loading"), "{}", status.message());
    server.stop().await;
}

//! Scores through the real server equal the committed Python onnxruntime
//! goldens for every bundled model.

mod common;

use std::collections::HashSet;

use candor::grpc::pb;
use common::*;
use sha2::{Digest, Sha256};

/// |Rust ORT − Python ORT|: the same library on the same rows.
const TOLERANCE: f64 = 1e-6;

#[tokio::test]
async fn score_matches_python_goldens_for_every_bundled_model() {
    let server = TestServer::start().await;
    let mut client = server.scoring().await;
    let mut ids = HashSet::new();
    for package in bundled_packages() {
        let (name, version) = name_and_version(&package);
        let sha = hex::encode(Sha256::digest(
            std::fs::read(package.join("model.onnx")).unwrap(),
        ));
        let golden = golden(&package);
        assert!(
            golden.rows.len() >= 200,
            "{name} needs a few hundred golden rows"
        );
        for (row, want) in golden.rows.iter().zip(&golden.scores) {
            let request = pb::ScoreRequest {
                model: model_ref(&name, &version),
                subject_id: "s".into(),
                features: pb::features(row.clone()),
                context: common::us_adult(),
                values: vec![],
                explain: None,
            };
            let decision = client
                .score(request)
                .await
                .unwrap()
                .into_inner()
                .decision
                .unwrap();
            assert!(
                (decision.score.unwrap() - want).abs() <= TOLERANCE,
                "{name} {version}: {} vs {want}",
                decision.score.unwrap()
            );
            let model = decision.model.unwrap();
            assert_eq!(
                (
                    model.name.as_str(),
                    model.version.as_str(),
                    model.sha256.as_str()
                ),
                (name.as_str(), version.as_str(), sha.as_str())
            );
            let id = uuid::Uuid::parse_str(&decision.decision_id).unwrap();
            assert_eq!(id.get_version_num(), 7);
            assert!(ids.insert(id), "decision ids are unique");
            assert!(decision.decided_at.is_some());
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn score_batch_matches_goldens_in_request_order() {
    let server = TestServer::start().await;
    let mut client = server.scoring().await;
    for package in bundled_packages() {
        let (name, version) = name_and_version(&package);
        let golden = golden(&package);
        let request = pb::ScoreBatchRequest {
            model: model_ref(&name, &version),
            subject_id: "s".into(),
            context: common::us_adult(),
            explain: None,
            rows: golden
                .rows
                .iter()
                .map(|r| pb::BatchRow {
                    features: pb::features(r.clone()),
                    ..Default::default()
                })
                .collect(),
        };
        let decisions = client
            .score_batch(request)
            .await
            .unwrap()
            .into_inner()
            .decisions;
        assert_eq!(decisions.len(), golden.scores.len());
        for (d, want) in decisions.iter().zip(&golden.scores) {
            assert!(
                (d.score.unwrap() - want).abs() <= TOLERANCE,
                "{name} {version}: {} vs {want}",
                d.score.unwrap()
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn concurrent_scores_are_each_answered_with_their_own_row() {
    // Concurrent requests are merged into shared ORT batches; each must still
    // get the score of its own row.
    let server = TestServer::start().await;
    let package = repo_root().join("models/caravan-lgbm/1.0.0");
    let golden = golden(&package);
    let channel = server.channel().await;
    let tasks: Vec<_> = golden
        .rows
        .iter()
        .cloned()
        .zip(golden.scores.iter().copied())
        .map(|(row, want)| {
            let mut client = pb::scoring_service_client::ScoringServiceClient::new(channel.clone());
            tokio::spawn(async move {
                let request = pb::ScoreRequest {
                    context: common::us_adult(),
                    model: model_ref("caravan-lgbm", "1.0.0"),
                    features: pb::features(row),
                    ..Default::default()
                };
                let got = client
                    .score(request)
                    .await
                    .unwrap()
                    .into_inner()
                    .decision
                    .unwrap()
                    .score
                    .unwrap();
                assert!((got - want).abs() <= TOLERANCE, "{got} vs {want}");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn an_empty_version_selects_the_default_and_versions_live_side_by_side() {
    let server = TestServer::start().await;
    let mut client = server.scoring().await;
    let mut request = caravan_request();
    let default = client
        .score(request.clone())
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(
        default.model.unwrap().version,
        "1.0.0",
        "caravan-lgbm 1.0.0 is flagged default"
    );
    request.model = model_ref("caravan-lgbm", "1.1.0");
    let candidate = client
        .score(request)
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(candidate.model.unwrap().version, "1.1.0");
    server.stop().await;
}

#[tokio::test]
async fn positional_values_score_like_named_features() {
    let server = TestServer::start().await;
    let mut client = server.scoring().await;
    for package in bundled_packages() {
        let (name, version) = name_and_version(&package);
        let golden = golden(&package);
        let rows: Vec<pb::BatchRow> = golden
            .positional()
            .into_iter()
            .map(|values| pb::BatchRow {
                values,
                ..Default::default()
            })
            .collect();
        let request = pb::ScoreBatchRequest {
            context: common::us_adult(),
            model: model_ref(&name, &version),
            rows,
            ..Default::default()
        };
        let decisions = client
            .score_batch(request)
            .await
            .unwrap()
            .into_inner()
            .decisions;
        for (d, want) in decisions.iter().zip(&golden.scores) {
            assert!(
                (d.score.unwrap() - want).abs() <= TOLERANCE,
                "{name} {version}: {} vs {want}",
                d.score.unwrap()
            );
        }
        let single = pb::ScoreRequest {
            context: common::us_adult(),
            model: model_ref(&name, &version),
            values: golden.positional()[0].clone(),
            ..Default::default()
        };
        let d = client
            .score(single)
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        assert!((d.score.unwrap() - golden.scores[0]).abs() <= TOLERANCE);
    }
    server.stop().await;
}

fn inline(method: pb::ExplainMethod) -> Option<pb::ExplainOptions> {
    Some(pb::ExplainOptions {
        mode: pb::ExplainMode::Inline as i32,
        method: method as i32,
    })
}

#[tokio::test]
async fn inline_attributions_add_up_and_agree_with_onnx_runtime() {
    let server = TestServer::start().await;
    let mut client = server.scoring().await;
    for (name, asked, method, space) in [
        (
            "caravan-lgbm",
            pb::ExplainMethod::Unspecified,
            "tree_shap_path_dependent",
            "log_odds",
        ),
        (
            "caravan-lgbm",
            pb::ExplainMethod::Interventional,
            "tree_shap_interventional",
            "log_odds",
        ),
        (
            "caravan-logreg",
            pb::ExplainMethod::PathDependent,
            "linear_exact",
            "log_odds",
        ),
    ] {
        let package = repo_root().join("models").join(name).join("1.0.0");
        let golden = golden(&package);
        for (row, want) in golden.rows.iter().zip(&golden.scores).take(20) {
            let request = pb::ScoreRequest {
                context: common::us_adult(),
                model: model_ref(name, "1.0.0"),
                features: pb::features(row.clone()),
                explain: inline(asked),
                ..Default::default()
            };
            let decision = client
                .score(request)
                .await
                .unwrap()
                .into_inner()
                .decision
                .unwrap();
            assert!((decision.score.unwrap() - want).abs() <= TOLERANCE);
            let a = decision
                .attribution
                .expect("inline attributions were asked for");
            assert_eq!(
                (a.method.as_str(), a.output_space.as_str()),
                (method, space)
            );
            assert_eq!(a.features.len(), 78);
            let sum: f64 = a.features.iter().map(|f| f.contribution).sum();
            let scale = a.margin.abs().max(1.0);
            assert!(
                (a.base_value + sum - a.margin).abs() <= 1e-5 * scale,
                "{name}: not additive"
            );
            assert!(
                a.additivity_residual <= 1e-5 * scale,
                "{name}: residual {}",
                a.additivity_residual
            );
            assert!(
                a.ort_difference <= 1e-5,
                "{name}: margin disagrees with ORT by {}",
                a.ort_difference
            );
            // Groups partition the features: their sum is the same total.
            let grouped: f64 = a.groups.iter().map(|g| g.contribution).sum();
            assert!((grouped - sum).abs() <= 1e-9 * scale);
            let members: usize = a.groups.iter().map(|g| g.features.len()).sum();
            assert_eq!(members, 78);
            // Each feature reports the value the model saw.
            let first = a.features.iter().find(|f| f.name == "PPERSAUT").unwrap();
            match row["PPERSAUT"].kind {
                Some(pb::feature_value::Kind::Integer(v)) => assert_eq!(first.value, v as f64),
                _ => unreachable!(),
            }
        }
    }
    // Without the option, no attributions are computed.
    let plain = client
        .score(caravan_request())
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert!(plain.attribution.is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_generic_graph_gets_seeded_sampled_attributions_with_standard_errors() {
    let server = TestServer::start().await;
    let mut client = server.scoring().await;
    let mut request = caravan_request();
    request.model = model_ref("caravan-mlp", "");
    request.explain = inline(pb::ExplainMethod::Unspecified);
    let first = client
        .score(request.clone())
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    let a = first.attribution.unwrap();
    assert_eq!(
        (a.method.as_str(), a.output_space.as_str()),
        ("shapley_permutation_antithetic", "score")
    );
    // The estimator explains the score itself: base + Σφ = score.
    assert!(
        (a.margin - first.score.unwrap()).abs() <= 1e-5,
        "{} vs {}",
        a.margin,
        first.score.unwrap()
    );
    assert!(a.additivity_residual <= 1e-6, "{}", a.additivity_residual);
    assert!(a.ort_difference <= 1e-5);
    assert!(
        a.features.iter().any(|f| f.standard_error > 0.0),
        "sampled values carry standard errors"
    );
    // Seeded by the row: the same row gets the same answer.
    let again = client
        .score(request.clone())
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap()
        .attribution
        .unwrap();
    let same = |x: &pb::Attribution| {
        x.features
            .iter()
            .map(|f| f.contribution)
            .collect::<Vec<_>>()
    };
    assert_eq!(same(&a), same(&again));

    request.explain = Some(pb::ExplainOptions {
        mode: 42,
        method: 0,
    });
    let status = client.score(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("explain.mode: 42"),
        "{}",
        status.message()
    );
    request.explain = Some(pb::ExplainOptions {
        mode: pb::ExplainMode::Inline as i32,
        method: 9,
    });
    let status = client.score(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("explain.method: 9"),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn explain_answers_what_if_rows_without_a_decision() {
    let server = TestServer::start().await;
    let mut client = pb::explain_service_client::ExplainServiceClient::new(server.channel().await);
    let package = repo_root().join("models/caravan-lgbm/1.0.0");
    let golden = golden(&package);
    let result = client
        .explain(pb::ExplainRequest {
            model: model_ref("caravan-lgbm", ""),
            features: pb::features(golden.rows[0].clone()),
            method: pb::ExplainMethod::Interventional as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!((result.score - golden.scores[0]).abs() <= TOLERANCE);
    let a = result.attribution.unwrap();
    assert_eq!(a.method, "tree_shap_interventional");
    assert!(a.additivity_residual <= 1e-5 * a.margin.abs().max(1.0));

    let batch = client
        .explain_batch(pb::ExplainBatchRequest {
            model: model_ref("caravan-logreg", "1.0.0"),
            rows: golden
                .positional()
                .into_iter()
                .take(5)
                .map(|values| pb::BatchRow {
                    values,
                    ..Default::default()
                })
                .collect(),
            method: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.results.len(), 5);
    assert!(
        batch
            .results
            .iter()
            .all(|r| r.attribution.as_ref().unwrap().method == "linear_exact")
    );

    let mlp = client
        .explain(pb::ExplainRequest {
            model: model_ref("caravan-mlp", ""),
            features: pb::features(golden.rows[0].clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        mlp.attribution.unwrap().method,
        "shapley_permutation_antithetic"
    );
    let status = client
        .explain(pb::ExplainRequest {
            model: model_ref("caravan-lgbm", ""),
            features: pb::features(golden.rows[0].clone()),
            method: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("method: 7"),
        "{}",
        status.message()
    );
    // A lone row's features are named as in Score; a batch's by row.
    let mut incomplete = golden.rows[0].clone();
    incomplete.remove("MAANTHUI");
    let status = client
        .explain(pb::ExplainRequest {
            model: model_ref("caravan-lgbm", ""),
            features: pb::features(incomplete.clone()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        status
            .message()
            .starts_with("features[\"MAANTHUI\"] is missing"),
        "{}",
        status.message()
    );
    let status = client
        .explain_batch(pb::ExplainBatchRequest {
            model: model_ref("caravan-lgbm", ""),
            rows: vec![pb::BatchRow {
                features: pb::features(incomplete),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        status
            .message()
            .starts_with("rows[0].features[\"MAANTHUI\"] is missing"),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn concurrent_inline_attributions_each_explain_their_own_row() {
    // Concurrent calls share the explanation threads' block walks; each must
    // get the attributions it gets alone.
    let server = TestServer::start().await;
    let golden = golden(&repo_root().join("models/caravan-lgbm/1.0.0"));
    let rows: Vec<_> = golden.rows.iter().take(64).cloned().collect();
    let request = |row| pb::ScoreRequest {
        context: common::us_adult(),
        model: model_ref("caravan-lgbm", "1.0.0"),
        features: pb::features(row),
        explain: inline(pb::ExplainMethod::PathDependent),
        ..Default::default()
    };
    let attribution = |decision: pb::ScoreResponse| {
        decision
            .decision
            .unwrap()
            .attribution
            .expect("inline attributions were asked for")
    };
    let mut client = server.scoring().await;
    let mut alone = Vec::new();
    for row in &rows {
        let response = client.score(request(row.clone())).await.unwrap();
        alone.push(attribution(response.into_inner()));
    }
    let channel = server.channel().await;
    let tasks: Vec<_> = rows
        .iter()
        .map(|row| {
            let mut client = pb::scoring_service_client::ScoringServiceClient::new(channel.clone());
            let request = request(row.clone());
            tokio::spawn(async move { client.score(request).await.unwrap().into_inner() })
        })
        .collect();
    for (task, alone) in tasks.into_iter().zip(&alone) {
        let together = attribution(task.await.unwrap());
        let scale = alone.margin.abs().max(1.0);
        assert!((together.margin - alone.margin).abs() <= 1e-12 * scale);
        for (t, a) in together.features.iter().zip(&alone.features) {
            assert_eq!((&t.name, t.value), (&a.name, a.value));
            assert!(
                (t.contribution - a.contribution).abs() <= 1e-9 * scale,
                "{}: {} together, {} alone",
                t.name,
                t.contribution,
                a.contribution
            );
        }
    }
    server.stop().await;
}

//! The decision record and "why am I seeing this ad?" against a real server:
//! answers survive a restart, the cache answers without the database,
//! erasure reaches cache and record alike, deferred attributions arrive,
//! and access follows the role table.

mod common;

use candor::{
    config::Role,
    grpc::pb::{self, explanation_service_client::ExplanationServiceClient},
};
use common::*;
use tonic::{Code, Request, transport::Channel};

async fn why(server: &TestServer) -> ExplanationServiceClient<Channel> {
    ExplanationServiceClient::new(server.channel().await)
}

async fn score(server: &TestServer, subject: &str, mode: pb::ExplainMode) -> pb::Decision {
    let mut request = caravan_request();
    request.subject_id = subject.into();
    request.explain = Some(pb::ExplainOptions {
        mode: mode as i32,
        method: 0,
    });
    request.context.as_mut().unwrap().campaign_id = "caravan-autumn".into();
    request.context.as_mut().unwrap().placement_id = "news-article-sidebar".into();
    server
        .scoring()
        .await
        .score(request)
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap()
}

async fn explain(
    client: &mut ExplanationServiceClient<Channel>,
    id: &str,
    audience: pb::Audience,
) -> Result<pb::GetExplanationResponse, tonic::Status> {
    client
        .get_explanation(pb::GetExplanationRequest {
            decision_id: id.into(),
            audience: audience as i32,
            language: "en".into(),
        })
        .await
        .map(|r| r.into_inner())
}

fn sealed_inputs(database: &std::path::Path, id: &str) -> Option<Vec<u8>> {
    rusqlite::Connection::open(database)
        .unwrap()
        .query_row(
            "SELECT inputs FROM decisions WHERE decision_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
}

fn engineer(r: &pb::GetExplanationResponse) -> &pb::EngineerView {
    match r.view.as_ref().unwrap() {
        pb::get_explanation_response::View::Engineer(v) => v,
        other => panic!("expected the engineer view, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explanations_survive_a_restart_and_then_come_from_the_cache() {
    let config = test_config();
    let database = config.database.clone();
    let server = TestServer::start_with(config.clone()).await;
    let on_request = score(&server, "alice", pb::ExplainMode::Unspecified).await;
    assert_eq!(
        on_request.explanation_status,
        pb::ExplanationStatus::OnRequest as i32
    );
    let inline = score(&server, "alice", pb::ExplainMode::Inline).await;
    let inline_attribution = inline.attribution.clone().unwrap();
    server.stop().await;

    assert!(
        sealed_inputs(&database, &on_request.decision_id).is_some_and(|b| b.len() > 78 * 4),
        "recorded with its inputs, sealed"
    );
    let server = TestServer::start_with(config).await;
    let mut client = why(&server).await;
    let first = explain(&mut client, &on_request.decision_id, pb::Audience::Engineer)
        .await
        .unwrap();
    assert_eq!(
        first.served_from, "computed",
        "attributions computed from the sealed inputs"
    );
    let a = engineer(&first).attribution.as_ref().unwrap();
    let sum: f64 = a.features.iter().map(|f| f.contribution).sum();
    assert!((a.base_value + sum - a.margin).abs() < 1e-6, "additive");
    assert!((engineer(&first).score - on_request.score.unwrap()).abs() < 1e-9);

    // Once attributions exist, the sealed inputs are erased.
    assert!(sealed_inputs(&database, &on_request.decision_id).is_none());

    let stored = explain(&mut client, &inline.decision_id, pb::Audience::Engineer)
        .await
        .unwrap();
    assert_eq!(stored.served_from, "record");
    assert_eq!(
        engineer(&stored).attribution.as_ref().unwrap().features,
        inline_attribution.features
    );

    let before = server.gateway.cache().counts();
    for _ in 0..3 {
        let again = explain(&mut client, &on_request.decision_id, pb::Audience::Consumer)
            .await
            .unwrap();
        assert_eq!(again.served_from, "cache");
    }
    let after = server.gateway.cache().counts();
    assert_eq!(after.hits - before.hits, 3, "counted as cache hits");
    assert_eq!(
        after.record_reads, before.record_reads,
        "the database was not read"
    );
    assert_eq!(after.computed, before.computed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_makes_decisions_unknown_in_cache_and_record() {
    let server = TestServer::start().await;
    let cached = score(&server, "bob", pb::ExplainMode::Inline).await;
    let recorded = score(&server, "bob", pb::ExplainMode::Unspecified).await;
    let other = score(&server, "carol", pb::ExplainMode::Inline).await;
    let mut client = why(&server).await;
    assert_eq!(
        explain(&mut client, &cached.decision_id, pb::Audience::Consumer)
            .await
            .unwrap()
            .served_from,
        "cache"
    );

    let mut consent = pb::consent_service_client::ConsentServiceClient::new(server.channel().await);
    let erased = consent
        .erase_subject(pb::EraseSubjectRequest {
            subject_id: "bob".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(erased.records_erased >= 1);
    for id in [&cached.decision_id, &recorded.decision_id] {
        let status = explain(&mut client, id, pb::Audience::Consumer)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{id}");
        assert!(
            status.message().starts_with("decision_id"),
            "{}",
            status.message()
        );
    }
    assert!(
        explain(&mut client, &other.decision_id, pb::Audience::Consumer)
            .await
            .is_ok()
    );
    let listed = client
        .list_decisions(pb::ListDecisionsRequest {
            subject_id: "bob".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.decisions.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_attributions_arrive_in_the_record() {
    let server = TestServer::start().await;
    let d = score(&server, "dave", pb::ExplainMode::Deferred).await;
    assert_eq!(d.explanation_status, pb::ExplanationStatus::Deferred as i32);
    assert!(d.attribution.is_none(), "not in the response");
    let mut client = why(&server).await;
    // The sweeper computes it in the background; wait for it to land.
    let mut served = String::new();
    for _ in 0..100 {
        let r = explain(&mut client, &d.decision_id, pb::Audience::Engineer)
            .await
            .unwrap();
        served = r.served_from.clone();
        if served != "computed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_ne!(
        served, "computed",
        "the background attribution was stored first"
    );
    let listed = client
        .list_decisions(pb::ListDecisionsRequest {
            subject_id: "dave".into(),
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.decisions[0].decision_id, d.decision_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_follow_the_role_table() {
    let mut config = test_config();
    config.access.api_keys = vec![
        api_key(Role::Support, "support-secret"),
        api_key(Role::Engineer, "eng-secret"),
        api_key(Role::Scorer, "scorer-secret"),
    ];
    let server = TestServer::start_with(config).await;
    let mut request = caravan_request();
    request.subject_id = "erin".into();
    request.explain = Some(pb::ExplainOptions {
        mode: pb::ExplainMode::Inline as i32,
        method: 0,
    });
    let mut scoring = server.scoring().await;
    let unauthenticated = scoring.score(request.clone()).await.unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    let mut request = Request::new(request);
    request
        .metadata_mut()
        .insert("authorization", "Bearer scorer-secret".parse().unwrap());
    let d = scoring
        .score(request)
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    let mut client = why(&server).await;
    let ask = |credential: Option<String>, audience: pb::Audience| {
        let mut request = Request::new(pb::GetExplanationRequest {
            decision_id: d.decision_id.clone(),
            audience: audience as i32,
            language: "nl".into(),
        });
        if let Some(c) = credential {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {c}").parse().unwrap());
        }
        request
    };
    let token = |subject: &str| {
        let ledger = server.gateway.consents().ledger();
        ledger.issue_token(
            &ledger.pseudonymise(subject),
            candor::store::now_ms() + 60_000,
        )
    };
    use pb::Audience::*;
    let cases: Vec<(Option<String>, pb::Audience, Option<Code>)> = vec![
        (None, Consumer, Some(Code::Unauthenticated)),
        (
            Some("nonsense".into()),
            Consumer,
            Some(Code::Unauthenticated),
        ),
        (Some(token("erin")), Consumer, None),
        (
            Some(token("someone-else")),
            Consumer,
            Some(Code::PermissionDenied),
        ),
        (Some(token("erin")), Support, Some(Code::PermissionDenied)),
        (Some("support-secret".into()), Support, None),
        (
            Some("support-secret".into()),
            Engineer,
            Some(Code::PermissionDenied),
        ),
        (Some("eng-secret".into()), Engineer, None),
        (Some("eng-secret".into()), Consumer, None),
        // Ad systems score; they never read a person's explanations.
        (
            Some("scorer-secret".into()),
            Consumer,
            Some(Code::PermissionDenied),
        ),
    ];
    for (i, (credential, audience, want)) in cases.into_iter().enumerate() {
        let got = client.get_explanation(ask(credential, audience)).await;
        match want {
            None => {
                let r = got.unwrap_or_else(|e| panic!("case {i}: {e}"));
                if let Some(pb::get_explanation_response::View::Consumer(v)) = r.into_inner().view {
                    assert_eq!(v.language, "nl", "case {i}");
                }
            }
            Some(code) => assert_eq!(got.unwrap_err().code(), code, "case {i}"),
        }
    }
    // An expired or forged token is refused.
    let ledger = server.gateway.consents().ledger();
    let expired = ledger.issue_token(&ledger.pseudonymise("erin"), candor::store::now_ms() - 1);
    let forged = token("erin").replace("cst_", "cst_0");
    for bad in [expired, forged] {
        let status = client
            .get_explanation(ask(Some(bad), Consumer))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_view_and_access_export_carry_the_consent_trail() {
    let server = TestServer::start().await;
    let d = score(&server, "frank", pb::ExplainMode::Inline).await;
    let mut client = why(&server).await;
    let r = explain(&mut client, &d.decision_id, pb::Audience::Support)
        .await
        .unwrap();
    let pb::get_explanation_response::View::Support(v) = r.view.unwrap() else {
        panic!("support view")
    };
    assert!(!v.groups.is_empty());
    assert!(
        v.groups
            .windows(2)
            .all(|w| w[0].contribution.abs() >= w[1].contribution.abs())
    );
    assert_eq!(
        v.consent_trail.len(),
        d.provenance.as_ref().unwrap().ledger_records.len()
    );
    assert_eq!(v.consent_trail[0].kind, "evidence");
    assert!(v.model_card.contains("caravan-lgbm"));

    let export = client
        .export_subject_data(pb::ExportSubjectDataRequest {
            subject_id: "frank".into(),
            language: "en".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(export.procedure.contains("privacy choices"));
    let json: serde_json::Value = serde_json::from_str(&export.export_json).unwrap();
    assert_eq!(json["decisions"][0]["decision_id"], d.decision_id);
    assert_eq!(json["subject_ref"], export.subject_ref);
    assert!(
        !export.export_json.contains("frank"),
        "the raw identifier is not stored"
    );

    let status = explain(&mut client, "not-a-uuid", pb::Audience::Consumer)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = explain(&mut client, &uuid_like(), pb::Audience::Consumer)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

fn uuid_like() -> String {
    "01a22580-0000-7000-8000-000000000000".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_past_their_retention_are_purged() {
    let mut config = test_config();
    config.decisions.retention_days = 30;
    // This model keeps nothing, and the purge runs every second.
    config
        .decisions
        .model_retention_days
        .insert("caravan-lgbm".into(), 0);
    config.decisions.purge_interval_secs = 1;
    let server = TestServer::start_with(config).await;
    let d = score(&server, "heidi", pb::ExplainMode::Unspecified).await;
    let mut request = caravan_request();
    request.model = model_ref("caravan-logreg", "");
    let kept = server
        .scoring()
        .await
        .score(request)
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    let mut client = why(&server).await;
    let mut gone = false;
    for _ in 0..40 {
        server.gateway.cache().clear();
        if explain(&mut client, &d.decision_id, pb::Audience::Engineer)
            .await
            .is_err()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the purge removed the decision past its retention");
    assert!(
        explain(&mut client, &kept.decision_id, pb::Audience::Engineer)
            .await
            .is_ok()
    );
}

/// Deferred attributions survive a full explanation pool: the decisions keep
/// their sealed inputs and the sweeper comes back for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_pool_loses_no_deferred_attribution() {
    let mut config = test_config();
    // One waiting job per pool: inline attributions overflow at once.
    config.inference_queue = 1;
    let database = config.database.clone();
    let server = TestServer::start_with(config).await;
    let row = caravan_request().features;
    let batch = |mode: pb::ExplainMode, n: usize| pb::ScoreBatchRequest {
        model: model_ref("caravan-lgbm", ""),
        subject_id: "ivan".into(),
        context: us_adult(),
        rows: (0..n)
            .map(|_| pb::BatchRow {
                features: row.clone(),
                ..Default::default()
            })
            .collect(),
        explain: Some(pb::ExplainOptions {
            mode: mode as i32,
            method: 0,
        }),
    };
    // Keep the pool busy with inline work while deferred decisions arrive.
    let channel = server.channel().await;
    let flood: Vec<_> = (0..12)
        .map(|_| {
            let mut c = pb::scoring_service_client::ScoringServiceClient::new(channel.clone());
            let request = batch(pb::ExplainMode::Inline, 64);
            tokio::spawn(async move {
                c.score_batch(request)
                    .await
                    .map(|_| ())
                    .map_err(|s| s.code())
            })
        })
        .collect();
    let deferred = server
        .scoring()
        .await
        .score_batch(batch(pb::ExplainMode::Deferred, 300))
        .await
        .unwrap()
        .into_inner()
        .decisions;
    let mut shed = 0;
    for f in flood {
        if f.await.unwrap() == Err(Code::ResourceExhausted) {
            shed += 1;
        }
    }
    assert!(shed > 0, "the pool was saturated");
    let db = rusqlite::Connection::open(&database).unwrap();
    let owed = || -> i64 {
        db.query_row(
            "SELECT count(*) FROM decisions WHERE explain_method IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    for _ in 0..200 {
        if owed() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(owed(), 0, "every deferred attribution was computed");
    for d in &deferred {
        let explained: Option<String> = db
            .query_row(
                "SELECT explanation FROM decisions WHERE decision_id = ?1",
                [&d.decision_id],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            explained.is_some(),
            "{} has its attributions",
            d.decision_id
        );
    }
}

/// A pseudonym is public (callers see it), so it must never work as a
/// token's signature: the token key is derived, not shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudonyms_cannot_be_turned_into_subject_tokens() {
    let server = TestServer::start().await;
    let ledger = server.gateway.consents().ledger();
    let subject = ledger.pseudonymise("alice");
    let body = format!("cst_{subject}.99999999999999");
    for forged in [
        format!("{body}.{}", ledger.pseudonymise(&format!("token|{body}"))),
        format!("{body}.{}", ledger.pseudonymise(&body)),
    ] {
        assert_eq!(ledger.verify_token(&forged), None);
    }
    let genuine = ledger.issue_token(&subject, candor::store::now_ms() + 60_000);
    assert_eq!(ledger.verify_token(&genuine), Some(subject));
}

/// Every consent RPC follows the role table once API keys exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_rpcs_follow_the_role_table() {
    let mut config = test_config();
    config.access.api_keys = vec![
        api_key(Role::Support, "support-secret"),
        api_key(Role::Scorer, "scorer-secret"),
    ];
    let server = TestServer::start_with(config).await;
    let mut consent = pb::consent_service_client::ConsentServiceClient::new(server.channel().await);
    let ledger = server.gateway.consents().ledger();
    let own = ledger.issue_token(
        &ledger.pseudonymise("judy"),
        candor::store::now_ms() + 60_000,
    );
    let with = |credential: Option<&str>, subject: &str| {
        let mut r = Request::new(pb::GetConsentHistoryRequest {
            subject_id: subject.into(),
        });
        if let Some(c) = credential {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {c}").parse().unwrap());
        }
        r
    };
    let cases: Vec<(Option<&str>, &str, Option<Code>)> = vec![
        (None, "judy", Some(Code::Unauthenticated)),
        (Some("scorer-secret"), "judy", Some(Code::PermissionDenied)),
        (Some("support-secret"), "judy", None),
        (Some(own.as_str()), "judy", None),
        (Some(own.as_str()), "mallory", Some(Code::PermissionDenied)),
    ];
    for (i, (credential, subject, want)) in cases.into_iter().enumerate() {
        let got = consent.get_consent_history(with(credential, subject)).await;
        assert_eq!(got.err().map(|s| s.code()), want, "case {i}");
    }
    // The ad system may record what its CMP collected, and nothing reads back.
    let mut record = Request::new(pb::RecordConsentRequest {
        subject_id: "judy".into(),
        purposes: vec![pb::PurposeChoice {
            tcf_purpose: 1,
            granted: true,
            ..Default::default()
        }],
        ..Default::default()
    });
    record
        .metadata_mut()
        .insert("authorization", "Bearer scorer-secret".parse().unwrap());
    assert!(consent.record_consent(record).await.is_ok());
    let mut erase = Request::new(pb::EraseSubjectRequest {
        subject_id: "judy".into(),
    });
    erase
        .metadata_mut()
        .insert("authorization", "Bearer scorer-secret".parse().unwrap());
    assert_eq!(
        consent.erase_subject(erase).await.unwrap_err().code(),
        Code::PermissionDenied
    );
}

//! The decision record and "why am I seeing this ad?" against a real server:
//! answers survive a restart, the cache answers without the database,
//! erasure reaches cache and record alike, and deferred attributions
//! arrive. Access control has its own matrix in `authorization.rs`.

mod common;

use candor::grpc::pb::{self, explanation_service_client::ExplanationServiceClient};
use common::*;
use tonic::{Code, transport::Channel};

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
    server.score_one(request).await
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

fn stored(database: &std::path::Path, column: &str, id: &str) -> Option<Vec<u8>> {
    rusqlite::Connection::open(database)
        .unwrap()
        .query_row(
            &format!("SELECT {column} FROM decisions WHERE decision_id = ?1"),
            [id],
            |r| r.get(0),
        )
        .unwrap()
}

fn sealed_inputs(database: &std::path::Path, id: &str) -> Option<Vec<u8>> {
    stored(database, "inputs", id)
}

/// The stored explanation of `id` holds none of the values the model saw
/// in clear (as little-endian doubles, its encoded form).
fn assert_sealed(database: &std::path::Path, id: &str, values: &[f64]) {
    let blob = stored(database, "explanation", id).expect("an explanation is stored");
    for v in values.iter().filter(|v| **v != 0.0) {
        let bytes = v.to_le_bytes();
        assert!(
            !blob.windows(8).any(|w| w == bytes),
            "{id}: the value {v} is stored in clear"
        );
    }
}

fn engineer(r: &pb::GetExplanationResponse) -> &pb::EngineerView {
    match r.view.as_ref().unwrap() {
        pb::get_explanation_response::View::Engineer(v) => v,
        other => panic!("expected the engineer view, got {other:?}"),
    }
}

/// Look-ups at once of a decision owed its attributions (a person and a
/// support agent, a client's retries) compute them once; the others wait
/// and are answered from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_ups_at_once_compute_an_explanation_once() {
    let server = TestServer::start().await;
    let on_request = score(&server, "alice", pb::ExplainMode::Unspecified).await;
    let client = why(&server).await;
    let asking: Vec<_> = (0..8)
        .map(|_| {
            let (mut client, id) = (client.clone(), on_request.decision_id.clone());
            tokio::spawn(async move {
                explain(&mut client, &id, pb::Audience::Engineer)
                    .await
                    .unwrap()
                    .served_from
            })
        })
        .collect();
    let mut served = Vec::new();
    for a in asking {
        served.push(a.await.unwrap());
    }
    served.sort();
    let counts = server.gateway.cache().counts();
    assert_eq!(counts.computed, 1, "{served:?}");
    assert_eq!(
        served.iter().filter(|s| *s == "computed").count(),
        1,
        "{served:?}"
    );
    assert!(
        served.iter().all(|s| s == "computed" || s == "cache"),
        "{served:?}"
    );
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
    let values: Vec<f64> = inline_attribution
        .features
        .iter()
        .map(|f| f.value)
        .collect();
    assert!(values.iter().filter(|v| **v != 0.0).count() > 10);
    assert_sealed(&database, &inline.decision_id, &values);

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
    // One look-up, counted once: as computed, not also as a record read.
    let counts = server.gateway.cache().counts();
    assert_eq!((counts.computed, counts.record_reads), (1, 0));
    let a = engineer(&first).attribution.as_ref().unwrap();
    let sum: f64 = a.features.iter().map(|f| f.contribution).sum();
    assert!((a.base_value + sum - a.margin).abs() < 1e-6, "additive");
    assert!((engineer(&first).score.unwrap() - on_request.score.unwrap()).abs() < 1e-9);

    // Once attributions exist, the sealed inputs are erased, and the
    // attributions are kept sealed as they were.
    assert!(sealed_inputs(&database, &on_request.decision_id).is_none());
    assert_sealed(&database, &on_request.decision_id, &values);

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
    let config = test_config();
    let database = config.database.clone();
    let server = TestServer::start_with(config).await;
    let cached = score(&server, "bob", pb::ExplainMode::Inline).await;
    let recorded = score(&server, "bob", pb::ExplainMode::Unspecified).await;
    // More decisions than one step of an erasure takes.
    let mut scoring = server.scoring().await;
    for _ in 0..2 {
        let batch = scoring
            .score_batch(pb::ScoreBatchRequest {
                subject_id: "bob".into(),
                ..caravan_batch(1024)
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(batch.decisions.len(), 1024);
    }
    let bob = recorded.provenance.as_ref().unwrap().subject_ref.clone();
    let bobs = || -> i64 {
        rusqlite::Connection::open(&database)
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM decisions WHERE subject_ref = ?1",
                [&bob],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(bobs(), 2 + 2 * 1024);
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
    assert_eq!(erased.decisions_erased, 2 + 2 * 1024);
    assert_eq!(bobs(), 0, "every step of the erasure ran");
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
            ..Default::default()
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
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.decisions[0].decision_id, d.decision_id);
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
    // Each group's features with their own parts, which add up to it.
    for g in &v.groups {
        assert_eq!(
            g.feature_contributions.len(),
            g.features.len(),
            "{}",
            g.name
        );
        let sum: f64 = g.feature_contributions.iter().sum();
        assert!((sum - g.contribution).abs() < 1e-9, "{}: {sum}", g.name);
    }
    assert_eq!(
        v.consent_trail.len(),
        d.provenance.as_ref().unwrap().ledger_records.len()
    );
    assert_eq!(v.consent_trail[0].kind, "evidence");
    assert!(v.model_card.contains("caravan-lgbm"));
    // What support needs to answer "is it fair, and how is it explained?":
    // the audit with its note, the method and the data it reads.
    for part in [
        "four-fifths rule NOT met",
        "> ",
        "**Explanation method:** tree_shap_path_dependent",
        "**Data categories read:**",
    ] {
        assert!(v.model_card.contains(part), "{part}: {}", v.model_card);
    }

    let export = client
        .export_subject_data(pb::ExportSubjectDataRequest {
            subject_id: "frank".into(),
            language: "en".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(export.procedure.contains("privacy choices"));
    assert!(export.next_page_token.is_empty(), "one page holds it all");
    let json: serde_json::Value = serde_json::from_str(&export.export_json).unwrap();
    assert_eq!(json["more_pages"], false);
    assert_eq!(json["decisions"][0]["decision_id"], d.decision_id);
    assert_eq!(json["subject_ref"], export.subject_ref);
    assert!(
        !export.export_json.contains("frank"),
        "the raw identifier is not stored"
    );

    // Reads take an id of any length, which no write takes now: a person
    // recorded under a longer id before writes were bounded still reaches
    // their data (consent.proto, RecordConsentRequest.subject_id).
    let long = client
        .list_decisions(pb::ListDecisionsRequest {
            subject_id: "f".repeat(4096),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(long.decisions.is_empty(), "{long:?}");

    let status = explain(&mut client, "not-a-uuid", pb::Audience::Consumer)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = explain(&mut client, &uuid_like(), pb::Audience::Consumer)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

/// A decision whose attributions were left for later is explained in the
/// access export as GetExplanation would explain it: profiling-based, with
/// its reasons, never "your profile was not used".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_explains_a_decision_whose_attributions_were_left_for_later() {
    let server = TestServer::start().await;
    let d = score(&server, "gina", pb::ExplainMode::Unspecified).await;
    assert_eq!(d.tier, pb::Tier::Personalised as i32);
    let export = why(&server)
        .await
        .export_subject_data(export_request("gina", ""))
        .await
        .unwrap()
        .into_inner();
    let json: serde_json::Value = serde_json::from_str(&export.export_json).unwrap();
    let view = &json["decisions"][0]["why"];
    assert_eq!(view["basis"], "profiling", "{view}");
    let reasons = view["reasons"].as_array().unwrap();
    assert!((3..=5).contains(&reasons.len()), "{view}");
    assert!(
        !view.to_string().contains("Your profile was not used"),
        "{view}"
    );
}

/// An access export says how long each decision is kept (GDPR Art.
/// 15(1)(d)) and gives a copy of the data its model saw (Art. 15(3)): every feature the person's data filled, with its value,
/// description and data category; not the features the policy kept back,
/// for which the model saw the population's average.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_export_gives_the_data_each_decision_used() {
    let server = TestServer::start().await;
    let mut request = caravan_request();
    request.subject_id = "hana".into();
    request.context.as_mut().unwrap().gpc = true;
    let sent: std::collections::BTreeMap<String, f64> = request
        .features
        .iter()
        .map(|f| match f.value.as_ref().and_then(|v| v.kind.clone()) {
            Some(pb::feature_value::Kind::Number(x)) => (f.key.clone(), x),
            Some(pb::feature_value::Kind::Integer(i)) => (f.key.clone(), i as f64),
            other => panic!("{}: {other:?}", f.key),
        })
        .collect();
    let d = server.score_one(request).await;
    assert_eq!(d.tier, pb::Tier::Contextual as i32);
    let masked = d.provenance.unwrap().masked_features;
    assert!(!masked.is_empty());

    let export = why(&server)
        .await
        .export_subject_data(export_request("hana", ""))
        .await
        .unwrap()
        .into_inner();
    let json: serde_json::Value = serde_json::from_str(&export.export_json).unwrap();
    let kept_until = json["decisions"][0]["kept_until_ms"].as_i64().unwrap();
    let days = server.gateway.config().decisions.retention_days;
    let decided_at = json["decisions"][0]["decided_at_ms"].as_i64().unwrap();
    assert!(
        (kept_until - decided_at - i64::from(days) * 86_400_000).abs() < 60_000,
        "kept {days} days: {kept_until} after {decided_at}"
    );
    let used = json["decisions"][0]["data_used"].as_array().unwrap();
    assert_eq!(used.len(), sent.len() - masked.len(), "{used:?}");
    for f in used {
        let name = f["feature"].as_str().unwrap();
        assert!(!masked.iter().any(|m| m == name), "{name} was kept back");
        assert_eq!(f["value"].as_f64(), Some(sent[name]), "{name}");
        assert!(!f["description"].as_str().unwrap().is_empty(), "{f}");
        assert!(f["data_category"].is_string(), "{f}");
        // Art. 15(1)(g): Caravan's inputs are first-party or postcode data.
        assert!(
            ["first_party", "zip_code_aggregate"].contains(&f["source"].as_str().unwrap()),
            "{f}"
        );
    }
    // On what basis, purpose by purpose.
    let purposes = json["decisions"][0]["purposes"].as_array().unwrap();
    assert!(!purposes.is_empty());
    for p in purposes {
        assert!(p["purpose"].is_string() && p["status"].is_string(), "{p}");
    }
    assert_eq!(json["decisions"][0]["jurisdiction"], "US");
}

/// `rows` decisions for `subject` in one ScoreBatch; their ids.
async fn score_rows(server: &TestServer, subject: &str, rows: usize) -> Vec<String> {
    let features = caravan_request().features;
    server
        .scoring()
        .await
        .score_batch(pb::ScoreBatchRequest {
            model: model_ref("caravan-logreg", "1.0.0"),
            subject_id: subject.into(),
            context: us_adult(),
            rows: (0..rows)
                .map(|_| pb::BatchRow {
                    features: features.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decisions
        .into_iter()
        .map(|d| d.decision_id)
        .collect()
}

fn export_request(subject: &str, token: &str) -> pb::ExportSubjectDataRequest {
    pb::ExportSubjectDataRequest {
        subject_id: subject.into(),
        language: "en".into(),
        page_token: token.into(),
        ..Default::default()
    }
}

/// Every id in `ids` once: no page repeated an item.
fn once(ids: &[String]) -> std::collections::BTreeSet<String> {
    let set: std::collections::BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "an item came twice");
    set
}

/// A person with more decisions than one message can carry still gets
/// their access request answered: page by page, each page under the
/// message limit, every decision and ledger record exactly once, a
/// decision made meanwhile neither repeated nor hiding another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_subjects_export_and_list_come_in_pages_that_fit() {
    use prost::Message;
    const LIMIT: usize = 24 * 1024;
    let server = TestServer::start_with(candor::Config {
        max_message_bytes: LIMIT,
        ..test_config()
    })
    .await;
    let mut decided = Vec::new();
    for _ in 0..16 {
        decided.extend(score_rows(&server, "heidi", 5).await);
    }
    let decided = once(&decided);
    let mut consent = pb::consent_service_client::ConsentServiceClient::new(server.channel().await);
    for purposes in [vec![1, 2], vec![3, 4], vec![12]] {
        consent
            .record_consent(pb::RecordConsentRequest {
                subject_id: "heidi".into(),
                purposes: purposes
                    .into_iter()
                    .map(|p| pb::PurposeChoice {
                        tcf_purpose: p,
                        granted: true,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let history: Vec<i64> = consent
        .get_consent_history(pb::GetConsentHistoryRequest {
            subject_id: "heidi".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records
        .iter()
        .map(|r| r.record.as_ref().unwrap().seq)
        .collect();
    assert!(
        history.len() >= 4,
        "three consents and the signals' evidence"
    );

    let mut client = why(&server).await;
    let (mut pages, mut token, mut late) = (Vec::new(), String::new(), None);
    loop {
        let page = client
            .export_subject_data(export_request("heidi", &token))
            .await
            .unwrap()
            .into_inner();
        assert!(page.encoded_len() <= LIMIT, "{} bytes", page.encoded_len());
        let json: serde_json::Value = serde_json::from_str(&page.export_json).unwrap();
        if late.is_none() && !json["decisions"].as_array().unwrap().is_empty() {
            // Newer than every decision the export has still to give.
            late = score_rows(&server, "heidi", 1).await.pop();
        }
        token = page.next_page_token.clone();
        pages.push((page, json));
        if token.is_empty() {
            break;
        }
        assert!(pages.len() < 100, "the export must end");
    }
    let total: usize = pages.iter().map(|(p, _)| p.export_json.len()).sum();
    assert!(
        pages.len() > 2 && total > LIMIT,
        "{} pages, {total} bytes: one message could not have carried it",
        pages.len()
    );
    for (i, (page, json)) in pages.iter().enumerate() {
        let last = i + 1 == pages.len();
        assert_eq!(json["more_pages"], !last, "page {i}");
        assert_eq!(
            page.procedure.contains("only part of your data"),
            !last,
            "page {i}"
        );
        assert!(page.procedure.contains("privacy choices"));
        assert_eq!(json.get("consent_state").is_some(), i == 0, "page {i}");
        assert_eq!(json["subject_ref"], page.subject_ref);
    }
    let items = |list: &str, key: &str| -> Vec<serde_json::Value> {
        pages
            .iter()
            .flat_map(|(_, json)| json[list].as_array().unwrap().clone())
            .map(|item| item[key].clone())
            .collect()
    };
    let exported: Vec<String> = items("decisions", "decision_id")
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        once(&exported),
        decided,
        "every decision once, the late one not"
    );
    let seqs: Vec<i64> = items("consent_history", "record")
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, history, "every ledger record once, oldest first");

    // ListDecisions pages the same way, newest first, and the late
    // decision is the newest.
    let late = late.unwrap();
    let (mut listed, mut token) = (Vec::new(), String::new());
    loop {
        let page = client
            .list_decisions(pb::ListDecisionsRequest {
                subject_id: "heidi".into(),
                limit: 7,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.decisions.len() <= 7);
        listed.extend(page.decisions.into_iter().map(|d| d.decision_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed[0], late);
    let mut all = decided.clone();
    all.insert(late);
    assert_eq!(once(&listed), all);
    // Small pages cross from the ledger to the decisions at every offset,
    // and still give each item once.
    for page_size in 1..=3 {
        let (mut ledger, mut decisions, mut token) = (Vec::new(), Vec::new(), String::new());
        loop {
            let page = client
                .export_subject_data(pb::ExportSubjectDataRequest {
                    page_size,
                    ..export_request("heidi", &token)
                })
                .await
                .unwrap()
                .into_inner();
            let json: serde_json::Value = serde_json::from_str(&page.export_json).unwrap();
            let history = json["consent_history"].as_array().unwrap();
            let made = json["decisions"].as_array().unwrap();
            assert!(history.len() + made.len() <= page_size as usize);
            ledger.extend(history.iter().map(|r| r["record"]["seq"].as_i64().unwrap()));
            decisions.extend(
                made.iter()
                    .map(|d| d["decision_id"].as_str().unwrap().to_owned()),
            );
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(ledger, history, "page_size {page_size}");
        assert_eq!(once(&decisions), all, "page_size {page_size}");
    }
    // Without a token the old call is unchanged: the newest `limit`.
    let newest = client
        .list_decisions(pb::ListDecisionsRequest {
            subject_id: "heidi".into(),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        newest
            .decisions
            .iter()
            .map(|d| &d.decision_id)
            .collect::<Vec<_>>(),
        listed[..3].iter().collect::<Vec<_>>()
    );
    assert!(!newest.next_page_token.is_empty());

    // A token works only for the call and the person it was issued for.
    let export_token = client
        .export_subject_data(export_request("heidi", ""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let foreign = [
        (export_request("ivan", &export_token), "page_token"),
        (
            export_request("heidi", &newest.next_page_token),
            "page_token",
        ),
        (export_request("heidi", "not a token"), "page_token"),
        (
            pb::ExportSubjectDataRequest {
                page_size: 1001,
                ..export_request("heidi", "")
            },
            "page_size",
        ),
        (
            pb::ExportSubjectDataRequest {
                language: "nl\u{0}".into(),
                ..export_request("heidi", "")
            },
            "language",
        ),
    ];
    for (request, field) in foreign {
        let status = client.export_subject_data(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(
            status.message().starts_with(&format!("{field}: ")),
            "{}",
            status.message()
        );
    }
    let status = client
        .list_decisions(pb::ListDecisionsRequest {
            subject_id: "heidi".into(),
            limit: 7,
            page_token: export_token,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("page_token: "),
        "{}",
        status.message()
    );
    server.stop().await;
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
    let kept = server.score_one(request).await;
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

/// Retention ends a decision at once: the cache and the record stop
/// answering for it before the scheduled purge deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_past_its_retention_is_unknown_before_the_purge() {
    let mut config = test_config();
    config
        .decisions
        .model_retention_days
        .insert("caravan-lgbm".into(), 0);
    config.decisions.purge_interval_secs = 3600;
    let database = config.database.clone();
    let server = TestServer::start_with(config).await;
    // Inline attributions: the decision enters the cache as it is recorded.
    let d = score(&server, "ivan", pb::ExplainMode::Inline).await;
    let mut request = caravan_request();
    request.subject_id = "ivan".into();
    request.model = model_ref("caravan-logreg", "");
    let kept = server.score_one(request).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut client = why(&server).await;
    for audience in [pb::Audience::Consumer, pb::Audience::Engineer] {
        let status = explain(&mut client, &d.decision_id, audience)
            .await
            .expect_err("past its retention");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    }
    // Still on disk: the purge has not run, yet nothing answers for it.
    assert!(sealed_inputs(&database, &d.decision_id).is_none());
    let rows: i64 = rusqlite::Connection::open(&database)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM decisions WHERE decision_id = ?1",
            [&d.decision_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 1);
    let listed: Vec<String> = client
        .list_decisions(pb::ListDecisionsRequest {
            subject_id: "ivan".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decisions
        .into_iter()
        .map(|d| d.decision_id)
        .collect();
    assert_eq!(listed, vec![kept.decision_id.clone()]);
    assert!(
        explain(&mut client, &kept.decision_id, pb::Audience::Engineer)
            .await
            .is_ok()
    );
    server.stop().await;
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
    let batch = |mode: pb::ExplainMode, n: usize| pb::ScoreBatchRequest {
        subject_id: "ivan".into(),
        explain: Some(pb::ExplainOptions {
            mode: mode as i32,
            method: 0,
        }),
        ..caravan_batch(n)
    };
    // Keep the pool busy with inline work while deferred decisions arrive.
    let channel = server.channel().await;
    let flood: Vec<_> = (0..12)
        .map(|_| {
            let mut c = pb::scoring_service_client::ScoringServiceClient::new(channel.clone());
            let request = batch(pb::ExplainMode::Inline, 64);
            tokio::spawn(async move { c.score_batch(request).await })
        })
        .collect();
    // The one-slot inference queue may shed this call too: retry with
    // backoff, as the status asks.
    let mut scoring = server.scoring().await;
    let mut deferred = None;
    for attempt in 0..100 {
        match scoring
            .score_batch(batch(pb::ExplainMode::Deferred, 300))
            .await
        {
            Ok(r) => {
                deferred = Some(r.into_inner().decisions);
                break;
            }
            Err(s) if s.code() == Code::ResourceExhausted => {
                tokio::time::sleep(std::time::Duration::from_millis(10 * (attempt + 1))).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    let deferred = deferred.expect("the deferred batch was taken in the end");
    // Inline attributions the saturated pool could not take are owed
    // instead: the scores went out, and the responses say so.
    // (A call the inference queue itself cannot take is shed.)
    let (mut fell_back, mut shed) = (Vec::new(), 0);
    for f in flood {
        match f.await.unwrap() {
            Ok(r) => fell_back.extend(r.into_inner().decisions.into_iter().filter(|d| {
                d.explanation_status == pb::ExplanationStatus::Deferred as i32
                    && d.attribution.is_none()
            })),
            Err(s) if s.code() == Code::ResourceExhausted => shed += 1,
            Err(s) => panic!("{s:?}"),
        }
    }
    assert!(fell_back.len() + shed > 0, "the pools were saturated");
    let db = rusqlite::Connection::open(&database).unwrap();
    let owed = || -> i64 {
        db.query_row(
            "SELECT count(*) FROM decisions WHERE explain_method IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    // A liveness wait, not a timing bound: an unoptimised build sharing two
    // cores with other tests needs a while for hundreds of TreeSHAP rows.
    for _ in 0..900 {
        if owed() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(owed(), 0, "every deferred attribution was computed");
    for d in deferred.iter().chain(&fell_back) {
        let explained: Option<Vec<u8>> = db
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

/// A batch scores candidates: each row is recorded with its own campaign
/// and ad, and a row that leaves them empty inherits the batch context's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_rows_are_recorded_with_their_own_campaign_and_ad() {
    let server = TestServer::start().await;
    let features = caravan_request().features;
    let mut context = us_adult().unwrap();
    context.placement_id = "feed".into();
    context.campaign_id = "ctx-camp".into();
    context.ad_id = "ctx-ad".into();
    let row = |campaign: &str, ad: &str| pb::BatchRow {
        features: features.clone(),
        campaign_id: campaign.into(),
        ad_id: ad.into(),
        ..Default::default()
    };
    let request = |rows: Vec<pb::BatchRow>| pb::ScoreBatchRequest {
        model: model_ref("caravan-logreg", "1.0.0"),
        subject_id: "auction".into(),
        context: Some(context.clone()),
        rows,
        ..Default::default()
    };
    let mut call = tonic::Request::new(request(vec![
        row("camp-a", "ad-a"),
        row("", ""),
        row("camp-c", ""),
    ]));
    call.metadata_mut()
        .insert("x-request-id", "auction-1".parse().unwrap());
    let decisions = server
        .scoring()
        .await
        .score_batch(call)
        .await
        .unwrap()
        .into_inner()
        .decisions;
    let listed = why(&server)
        .await
        .list_decisions(pb::ListDecisionsRequest {
            subject_id: "auction".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .decisions;
    let recorded = |d: &pb::Decision| {
        let s = listed
            .iter()
            .find(|s| s.decision_id == d.decision_id)
            .expect("every decision is listed");
        // Listed with the call that made it, found by its request id.
        assert_eq!(s.request_id, "auction-1");
        (
            s.placement_id.as_str(),
            s.campaign_id.as_str(),
            s.ad_id.as_str(),
        )
    };
    assert_eq!(recorded(&decisions[0]), ("feed", "camp-a", "ad-a"));
    assert_eq!(recorded(&decisions[1]), ("feed", "ctx-camp", "ctx-ad"));
    assert_eq!(recorded(&decisions[2]), ("feed", "camp-c", "ctx-ad"));
    // A row's ids are identifiers, bounded like the context's.
    let refused = server
        .scoring()
        .await
        .score_batch(request(vec![row("", ""), row(&"x".repeat(300), "")]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("rows[1].campaign_id"),
        "{}",
        refused.message()
    );
    server.stop().await;
}

/// In `async` durability a decision is answered before its commit: asked
/// for at once, it is still found, once what was acknowledged before is
/// committed; an id never made is still NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_asked_for_at_once_in_async_is_found() {
    let mut config = test_config();
    config.decisions.durability = candor::decisions::Durability::Async;
    // The longest window, so that the read comes before the commit.
    config.decisions.async_commit_window_ms = 100;
    let server = TestServer::start_with(config).await;
    let mut client = why(&server).await;
    for i in 0..5 {
        let d = score(&server, &format!("now-{i}"), pb::ExplainMode::Unspecified).await;
        let read = explain(&mut client, &d.decision_id, pb::Audience::Engineer).await;
        assert!(read.is_ok(), "{read:?}");
    }
    let never = explain(
        &mut client,
        "01900000-0000-7000-8000-000000000000",
        pb::Audience::Engineer,
    )
    .await
    .unwrap_err();
    assert_eq!(never.code(), tonic::Code::NotFound, "{never:?}");
    server.stop().await;
}

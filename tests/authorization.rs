//! The authorization matrix, against a real server: every RPC × every role
//! × {valid, expired, wrong-subject, tampered, missing} credential, with the
//! exact status code each cell must get. The expected table below is
//! written from the specification, independently of `src/grpc/auth.rs`.
//! Also: staff reads are recorded with who, when, whom and why.

mod common;

use std::time::Duration;

use candor::{
    config::{ApiKey, Role},
    grpc::inference::{self as oip, grpc_inference_service_client::GrpcInferenceServiceClient},
    grpc::pb::{
        self, admin_service_client::AdminServiceClient,
        consent_service_client::ConsentServiceClient, explain_service_client::ExplainServiceClient,
        explanation_service_client::ExplanationServiceClient,
        model_service_client::ModelServiceClient, scoring_service_client::ScoringServiceClient,
    },
};
use common::*;
use tonic::{Code, Request, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Declares `Rpc` and `Rpc::ALL` from one list, so that no RPC can be left
/// out of the matrix.
macro_rules! rpcs {
    ($($rpc:ident),* $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Rpc {
            $($rpc),*
        }

        impl Rpc {
            const ALL: [Rpc; [$(Rpc::$rpc),*].len()] = [$(Rpc::$rpc),*];
        }
    };
}

rpcs! {
    Score,
    ScoreBatch,
    ListModels,
    DescribeModel,
    Explain,
    ExplainBatch,
    RecordConsent,
    WithdrawConsent,
    GetConsent,
    GetConsentHistory,
    VerifyLedger,
    EraseSubject,
    ConsumerView,
    SupportView,
    EngineerView,
    ListDecisions,
    ExportSubjectData,
    HealthCheck,
    OipServerLive,
    OipServerReady,
    OipServerMetadata,
    OipModelReady,
    OipModelMetadata,
    OipModelInfer,
    ReloadModels,
    LoadModel,
    UnloadModel,
    GetRollout,
    SetRollout,
    AttributionDrift,
    GetShadowOutputs,
    FairnessReport,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Staff(Role),
    Consumer,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Credential {
    Valid,
    Expired,
    WrongSubject,
    Tampered,
    Missing,
}

/// Who each RPC admits, from the specification: "subject" means a
/// consumer token for the subject the call is about; "public" needs none.
fn admits(rpc: Rpc) -> &'static str {
    use Rpc::*;
    match rpc {
        Score | ScoreBatch | OipModelInfer => "scorer admin",
        ListModels | DescribeModel | OipServerMetadata | OipModelReady | OipModelMetadata => {
            "scorer support engineer admin"
        }
        Explain | ExplainBatch => "engineer admin",
        RecordConsent | WithdrawConsent => "scorer support admin subject",
        GetConsent | GetConsentHistory => "support admin subject",
        VerifyLedger => "support engineer admin",
        EraseSubject => "support admin subject",
        ConsumerView => "support engineer admin subject",
        SupportView => "support admin",
        EngineerView => "engineer admin",
        ListDecisions | ExportSubjectData => "support admin subject",
        HealthCheck | OipServerLive | OipServerReady => "public",
        ReloadModels | LoadModel | UnloadModel | GetRollout | SetRollout | AttributionDrift
        | GetShadowOutputs | FairnessReport => "engineer admin",
    }
}

/// What an admitted call gets: success, except unloading the production
/// version and comparing the attributions of a version no decision used,
/// which the handlers refuse once the call is admitted.
fn admitted_outcome(rpc: Rpc) -> Option<Code> {
    matches!(rpc, Rpc::UnloadModel | Rpc::AttributionDrift).then_some(Code::FailedPrecondition)
}

/// How `admits` names `who`.
fn who_name(who: Who) -> &'static str {
    match who {
        Who::Staff(role) => role.as_str(),
        Who::Consumer => "subject",
    }
}

/// The status a cell must get (`None` for success).
fn expected(rpc: Rpc, who: Who, credential: Credential) -> Option<Code> {
    let admitted = admits(rpc);
    if admitted == "public" {
        return None;
    }
    let name = who_name(who);
    match credential {
        Credential::Missing | Credential::Expired | Credential::Tampered => {
            Some(Code::Unauthenticated)
        }
        // Staff credentials are not bound to a subject. Another person's
        // decision is unknown to a subject, not forbidden: whether its id
        // exists is not theirs to learn.
        Credential::WrongSubject if who == Who::Consumer && rpc == Rpc::ConsumerView => {
            Some(Code::NotFound)
        }
        Credential::WrongSubject if who == Who::Consumer => Some(Code::PermissionDenied),
        _ if admitted.split(' ').any(|r| r == name) => admitted_outcome(rpc),
        _ => Some(Code::PermissionDenied),
    }
}

const ROLES: [Role; 4] = [Role::Scorer, Role::Support, Role::Engineer, Role::Admin];

fn key(role: Role, expired: bool) -> String {
    format!("{}-{}", if expired { "old" } else { "key" }, role.as_str())
}

fn with<T>(mut request: Request<T>, credential: Option<&str>) -> Request<T> {
    if let Some(c) = credential {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {c}").parse().unwrap());
    }
    request
        .metadata_mut()
        .insert("x-candor-reason", "authorization matrix".parse().unwrap());
    request
}

fn score_request(subject: &str) -> pb::ScoreRequest {
    pb::ScoreRequest {
        subject_id: subject.into(),
        ..caravan_request()
    }
}

async fn call(
    channel: &Channel,
    rpc: Rpc,
    subject: &str,
    decision_id: &str,
    credential: Option<&str>,
) -> Result<(), Status> {
    let ch = channel.clone();
    let row = caravan_request().features;
    let model = || model_ref("caravan-lgbm", "");
    let oip = || GrpcInferenceServiceClient::new(channel.clone());
    let view = |audience: pb::Audience| pb::GetExplanationRequest {
        decision_id: decision_id.into(),
        audience: audience as i32,
        language: "en".into(),
    };
    match rpc {
        Rpc::Score => ScoringServiceClient::new(ch)
            .score(with(Request::new(score_request(subject)), credential))
            .await
            .map(drop),
        Rpc::ScoreBatch => ScoringServiceClient::new(ch)
            .score_batch(with(
                Request::new(pb::ScoreBatchRequest {
                    model: model(),
                    subject_id: subject.into(),
                    context: us_adult(),
                    rows: vec![pb::BatchRow {
                        features: row,
                        ..Default::default()
                    }],
                    explain: None,
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::ListModels => ModelServiceClient::new(ch)
            .list_models(with(Request::new(pb::ListModelsRequest {}), credential))
            .await
            .map(drop),
        Rpc::DescribeModel => ModelServiceClient::new(ch)
            .describe_model(with(
                Request::new(pb::DescribeModelRequest { model: model() }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::Explain => ExplainServiceClient::new(ch)
            .explain(with(
                Request::new(pb::ExplainRequest {
                    model: model(),
                    features: row,
                    ..Default::default()
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::ExplainBatch => ExplainServiceClient::new(ch)
            .explain_batch(with(
                Request::new(pb::ExplainBatchRequest {
                    model: model(),
                    rows: vec![pb::BatchRow {
                        features: row,
                        ..Default::default()
                    }],
                    method: 0,
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::RecordConsent => ConsentServiceClient::new(ch)
            .record_consent(with(
                Request::new(pb::RecordConsentRequest {
                    subject_id: subject.into(),
                    purposes: vec![pb::PurposeChoice {
                        tcf_purpose: 1,
                        granted: true,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::WithdrawConsent => ConsentServiceClient::new(ch)
            .withdraw_consent(with(
                Request::new(pb::WithdrawConsentRequest {
                    subject_id: subject.into(),
                    tcf_purposes: vec![1],
                    ..Default::default()
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::GetConsent => ConsentServiceClient::new(ch)
            .get_consent(with(
                Request::new(pb::GetConsentRequest {
                    subject_id: subject.into(),
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::GetConsentHistory => ConsentServiceClient::new(ch)
            .get_consent_history(with(
                Request::new(pb::GetConsentHistoryRequest {
                    subject_id: subject.into(),
                    ..Default::default()
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::VerifyLedger => ConsentServiceClient::new(ch)
            .verify_ledger(with(Request::new(pb::VerifyLedgerRequest {}), credential))
            .await
            .map(drop),
        Rpc::EraseSubject => ConsentServiceClient::new(ch)
            .erase_subject(with(
                Request::new(pb::EraseSubjectRequest {
                    subject_id: subject.into(),
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::ConsumerView | Rpc::SupportView | Rpc::EngineerView => {
            let audience = match rpc {
                Rpc::ConsumerView => pb::Audience::Consumer,
                Rpc::SupportView => pb::Audience::Support,
                _ => pb::Audience::Engineer,
            };
            ExplanationServiceClient::new(ch)
                .get_explanation(with(Request::new(view(audience)), credential))
                .await
                .map(drop)
        }
        Rpc::ListDecisions => ExplanationServiceClient::new(ch)
            .list_decisions(with(
                Request::new(pb::ListDecisionsRequest {
                    subject_id: subject.into(),
                    limit: 10,
                    ..Default::default()
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::ExportSubjectData => ExplanationServiceClient::new(ch)
            .export_subject_data(with(
                Request::new(pb::ExportSubjectDataRequest {
                    subject_id: subject.into(),
                    language: "en".into(),
                    ..Default::default()
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::ReloadModels => AdminServiceClient::new(ch)
            .reload_models(with(Request::new(pb::ReloadModelsRequest {}), credential))
            .await
            .map(drop),
        Rpc::LoadModel | Rpc::UnloadModel => {
            let mut admin = AdminServiceClient::new(ch);
            let request = |version: &str| {
                with(
                    Request::new(pb::ModelVersionRequest {
                        model: "caravan-lgbm".into(),
                        version: version.into(),
                    }),
                    credential,
                )
            };
            if rpc == Rpc::LoadModel {
                admin.load_model(request("1.1.0")).await.map(drop)
            } else {
                admin.unload_model(request("1.0.0")).await.map(drop)
            }
        }
        Rpc::GetRollout => AdminServiceClient::new(ch)
            .get_rollout(with(
                Request::new(pb::GetRolloutRequest {
                    model: "caravan-lgbm".into(),
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::SetRollout => AdminServiceClient::new(ch)
            .set_rollout(with(
                Request::new(pb::SetRolloutRequest {
                    model: "caravan-lgbm".into(),
                    production: "1.0.0".into(),
                    ..Default::default()
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::AttributionDrift => AdminServiceClient::new(ch)
            .attribution_drift(with(
                Request::new(pb::AttributionDriftRequest {
                    model: "caravan-lgbm".into(),
                    candidate: "1.1.0".into(),
                    since_unix_ms: 0,
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::GetShadowOutputs => AdminServiceClient::new(ch)
            .get_shadow_outputs(with(
                Request::new(pb::GetShadowOutputsRequest {
                    decision_id: decision_id.into(),
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::FairnessReport => AdminServiceClient::new(ch)
            .fairness_report(with(
                Request::new(pb::FairnessReportRequest::default()),
                credential,
            ))
            .await
            .map(drop),
        Rpc::HealthCheck => HealthClient::new(ch)
            .check(with(
                Request::new(HealthCheckRequest {
                    service: String::new(),
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::OipServerLive => oip()
            .server_live(with(Request::new(oip::ServerLiveRequest {}), credential))
            .await
            .map(drop),
        Rpc::OipServerReady => oip()
            .server_ready(with(Request::new(oip::ServerReadyRequest {}), credential))
            .await
            .map(drop),
        Rpc::OipServerMetadata => oip()
            .server_metadata(with(
                Request::new(oip::ServerMetadataRequest {}),
                credential,
            ))
            .await
            .map(drop),
        Rpc::OipModelReady => oip()
            .model_ready(with(
                Request::new(oip::ModelReadyRequest {
                    name: "caravan-lgbm".into(),
                    version: String::new(),
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::OipModelMetadata => oip()
            .model_metadata(with(
                Request::new(oip::ModelMetadataRequest {
                    name: "caravan-lgbm".into(),
                    version: String::new(),
                }),
                credential,
            ))
            .await
            .map(drop),
        Rpc::OipModelInfer => oip()
            .model_infer(with(Request::new(oip_request(1, subject)), credential))
            .await
            .map(drop),
    }
}

/// Changes one character of a credential's last part (a JWT's signature).
fn tamper(credential: &str) -> String {
    let mut bytes = credential.as_bytes().to_vec();
    let i = bytes.len() - 6;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_role_and_credential_gets_its_exact_status() {
    let mut config = test_config();
    // The admin RPCs write the model's rollout file: not into the repository.
    let models = tempfile::tempdir().unwrap();
    copy_package("caravan-lgbm/1.0.0", models.path());
    copy_package("caravan-lgbm/1.1.0", models.path());
    config.models_dir = models.path().to_path_buf();
    config.watch_models = false;
    for role in ROLES {
        config
            .access
            .api_keys
            .push(api_key(role, &key(role, false)));
        config.access.api_keys.push(ApiKey {
            expires: Some("2026-01-01T00:00:00Z".parse().unwrap()),
            name: format!("{}-expired", role.as_str()),
            ..api_key(role, &key(role, true))
        });
    }
    let server = TestServer::start_with(config).await;
    let channel = server.channel().await;
    let admin = key(Role::Admin, false);
    // A decision about alice, for the explanation views.
    let mut request = Request::new(score_request("alice"));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {admin}").parse().unwrap());
    let decision_id = ScoringServiceClient::new(channel.clone())
        .score(request)
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap()
        .decision_id;

    let token = |subject: &str, age: u64, ttl: u64| {
        subject_token(
            &server.gateway,
            subject,
            Duration::from_secs(age),
            Duration::from_secs(ttl),
        )
    };
    let whos = ROLES
        .map(Who::Staff)
        .into_iter()
        .chain([Who::Consumer])
        .collect::<Vec<_>>();
    use Credential::*;
    let mut cells = 0;
    let mut wrong = Vec::new();
    for rpc in Rpc::ALL {
        for &who in &whos {
            for credential in [Valid, Expired, WrongSubject, Tampered, Missing] {
                cells += 1;
                // Erasures get a subject of their own, so that the other
                // cells keep alice's data.
                let subject = if rpc == Rpc::EraseSubject {
                    format!("erase-{cells}")
                } else {
                    "alice".to_owned()
                };
                let presented = match (who, credential) {
                    (_, Missing) => None,
                    (Who::Staff(role), Valid | WrongSubject) => Some(key(role, false)),
                    (Who::Staff(role), Expired) => Some(key(role, true)),
                    (Who::Staff(role), Tampered) => Some(tamper(&key(role, false))),
                    (Who::Consumer, Valid) => Some(token(&subject, 0, 600)),
                    (Who::Consumer, Expired) => Some(token(&subject, 7200, 3600)),
                    (Who::Consumer, WrongSubject) => Some(token("mallory", 0, 600)),
                    (Who::Consumer, Tampered) => Some(tamper(&token(&subject, 0, 600))),
                };
                let got = call(&channel, rpc, &subject, &decision_id, presented.as_deref())
                    .await
                    .err();
                // A refusal never repeats the credential it was given.
                if let (Some(status), Some(secret)) = (&got, &presented)
                    && status.message().contains(secret.as_str())
                {
                    wrong.push(format!(
                        "{rpc:?} × {who:?} × {credential:?}: echoes the credential"
                    ));
                }
                // A staff member turned away is told who may call: the
                // roles, and the person themself where their token admits.
                if let (Some(status), Who::Staff(_), Valid) = (&got, who, credential)
                    && status.code() == Code::PermissionDenied
                {
                    // GetExplanation is admitted before its message says
                    // which view: a caller no view admits hears of them all.
                    let any_view = admits(Rpc::ConsumerView);
                    let judged = match rpc {
                        Rpc::SupportView | Rpc::EngineerView
                            if !any_view.split(' ').any(|r| r == who_name(who)) =>
                        {
                            any_view
                        }
                        _ => admits(rpc),
                    };
                    let roles: Vec<&str> = judged.split(' ').filter(|r| *r != "subject").collect();
                    let mut told = format!("[{}]", roles.join(", "));
                    if judged.contains("subject") {
                        told.push_str(", or the subject's own token");
                    }
                    if !status.message().contains(&told) {
                        wrong.push(format!(
                            "{rpc:?} × {who:?}: {:?} does not say {told:?}",
                            status.message()
                        ));
                    }
                }
                let got = got.map(|s| s.code());
                let want = expected(rpc, who, credential);
                if got != want {
                    wrong.push(format!(
                        "{rpc:?} × {who:?} × {credential:?}: got {got:?}, want {want:?}"
                    ));
                }
            }
        }
    }
    assert_eq!(cells, Rpc::ALL.len() * 5 * 5);
    assert!(
        wrong.is_empty(),
        "{} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // A person asking for a staff view learns nothing of which ids exist:
    // a real decision and a made-up id get the same refusal.
    let made_up = uuid::Uuid::now_v7().to_string();
    let mallory = token("mallory", 0, 600);
    for rpc in [Rpc::SupportView, Rpc::EngineerView] {
        let real = call(&channel, rpc, "alice", &decision_id, Some(&mallory))
            .await
            .unwrap_err();
        let unknown = call(&channel, rpc, "alice", &made_up, Some(&mallory))
            .await
            .unwrap_err();
        assert_eq!(real.code(), Code::PermissionDenied, "{rpc:?}: {real:?}");
        // The refusal names the field the caller may change.
        assert!(real.message().starts_with("audience: the "), "{real:?}");
        assert_eq!(
            (real.code(), real.message()),
            (unknown.code(), unknown.message()),
            "{rpc:?}"
        );
    }
}

/// A read of a person's data by staff needs a reason and is put on record
/// before anything is returned; the person's own reads are not logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_reads_are_recorded_with_who_whom_and_why() {
    let mut config = test_config();
    config.access.api_keys = vec![api_key(Role::Support, "support-key")];
    let server = TestServer::start_with(config).await;
    let mut consent = ConsentServiceClient::new(server.channel().await);
    let ask = |reason: Option<&str>, credential: &str| {
        let mut r = Request::new(pb::GetConsentHistoryRequest {
            subject_id: "carol".into(),
            ..Default::default()
        });
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {credential}").parse().unwrap(),
        );
        r.metadata_mut()
            .insert("x-request-id", "req-42".parse().unwrap());
        if let Some(reason) = reason {
            r.metadata_mut()
                .insert("x-candor-reason", reason.parse().unwrap());
        }
        r
    };
    let refused = consent
        .get_consent_history(ask(None, "support-key"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("x-candor-reason"), "{refused:?}");
    // A reason names people as they are spelt: UTF-8, not only ASCII.
    consent
        .get_consent_history(ask(Some("ticket 1234, Ms Müller"), "support-key"))
        .await
        .unwrap();
    let own = subject_token(
        &server.gateway,
        "carol",
        Duration::ZERO,
        Duration::from_secs(60),
    );
    consent.get_consent_history(ask(None, &own)).await.unwrap();
    // One printable reason: a second would not be recorded, and the read
    // log is read as text.
    let mut twice = ask(Some("ticket 1234"), "support-key");
    twice
        .metadata_mut()
        .append("x-candor-reason", "ticket 9999".parse().unwrap());
    let refused = consent.get_consent_history(twice).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("given twice"), "{refused:?}");
    let refused = consent
        .get_consent_history(ask(Some("ticket\t1234"), "support-key"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("control, line-breaking or invisible character"),
        "{refused:?}"
    );
    // A read refused as bad input is not a read: nothing goes on record.
    let mut greedy = ask(Some("ticket 1234"), "support-key");
    greedy.get_mut().page_size = 5000;
    let mut nobody = ask(Some("ticket 1234"), "support-key");
    nobody.get_mut().subject_id.clear();
    let mut forged = ask(Some("ticket 1234"), "support-key");
    forged.get_mut().page_token = "ab".repeat(40);
    for (bad, field) in [
        (greedy, "page_size"),
        (nobody, "subject_id"),
        (forged, "page_token"),
    ] {
        let refused = consent.get_consent_history(bad).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(field), "{refused:?}");
    }

    let subject_ref = server.gateway.consents().ledger().pseudonymise("carol");
    let db = rusqlite::Connection::open(&server.gateway.config().database).unwrap();
    let reads: Vec<(String, String, String, String, String)> = db
        .prepare(
            "SELECT actor, role, rpc, reason, request_id FROM staff_reads WHERE subject_ref = ?1",
        )
        .unwrap()
        .query_map([&subject_ref], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        reads,
        vec![(
            "Support".to_owned(),
            "support".to_owned(),
            "/candor.v1.ConsentService/GetConsentHistory".to_owned(),
            "ticket 1234, Ms Müller".to_owned(),
            "req-42".to_owned(),
        )]
    );
    let all: i64 = db
        .query_row("SELECT COUNT(*) FROM staff_reads", [], |r| r.get(0))
        .unwrap();
    assert_eq!(all, 1, "only the one read that was answered is on record");

    // The reason is checked before the decision is looked up: a read
    // without one tells nothing of whether the id exists.
    let mut why = ExplanationServiceClient::new(server.channel().await);
    let unknown = format!("{}", uuid::Uuid::now_v7());
    let mut request = Request::new(pb::GetExplanationRequest {
        decision_id: unknown,
        audience: pb::Audience::Support as i32,
        language: "en".into(),
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer support-key".parse().unwrap());
    let refused = why.get_explanation(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("x-candor-reason"), "{refused:?}");
}

/// A consent change names who made it in the ledger record itself, whose
/// hash covers it: a staff member by their credential's name and role, or
/// the person. The erasure's tombstone, which outlives the person's
/// records, names who asked for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_changes_name_who_made_them() {
    let mut config = test_config();
    config.access.api_keys = vec![api_key(Role::Support, "key-support")];
    let server = TestServer::start_with(config).await;
    let channel = server.channel().await;
    let own = subject_token(
        &server.gateway,
        "dave",
        Duration::ZERO,
        Duration::from_secs(60),
    );
    for (rpc, credential) in [
        (Rpc::RecordConsent, "key-support"),
        (Rpc::WithdrawConsent, own.as_str()),
    ] {
        call(&channel, rpc, "dave", "", Some(credential))
            .await
            .unwrap();
    }
    let db = rusqlite::Connection::open(&server.gateway.config().database).unwrap();
    let recorded_by = |kind: &str| -> serde_json::Value {
        let content: String = db
            .query_row(
                "SELECT content FROM ledger WHERE kind = ?1 ORDER BY seq DESC LIMIT 1",
                [kind],
                |r| r.get(0),
            )
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&content).unwrap()["recorded_by"].clone()
    };
    let support = serde_json::json!({ "name": "Support", "role": "support" });
    assert_eq!(recorded_by("consent"), support);
    assert_eq!(
        recorded_by("withdrawal"),
        serde_json::json!({ "name": "(the subject)", "role": "subject" })
    );
    call(&channel, Rpc::EraseSubject, "dave", "", Some("key-support"))
        .await
        .unwrap();
    assert_eq!(recorded_by("erasure"), support);
    let verified = ConsentServiceClient::new(channel)
        .verify_ledger(with(
            Request::new(pb::VerifyLedgerRequest {}),
            Some("key-support"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(verified.intact, "{verified:?}");
}

/// An ad system cannot lift an objection the person made themselves (or
/// through support) by recording a consent; it can lift one it relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ad_system_cannot_lift_the_persons_own_objection() {
    let mut config = test_config();
    config.access.api_keys = vec![
        api_key(Role::Support, "key-support"),
        api_key(Role::Scorer, "key-scorer"),
    ];
    let server = TestServer::start_with(config).await;
    let mut consent = ConsentServiceClient::new(server.channel().await);
    let own = subject_token(
        &server.gateway,
        "erin",
        Duration::ZERO,
        Duration::from_secs(60),
    );
    let withdraw = |credential: &str, purposes: Vec<u32>, kind: pb::WithdrawalKind| {
        with(
            Request::new(pb::WithdrawConsentRequest {
                subject_id: "erin".into(),
                tcf_purposes: purposes,
                kind: kind as i32,
                ..Default::default()
            }),
            Some(credential),
        )
    };
    let object = |credential: &str| withdraw(credential, vec![3, 4], pb::WithdrawalKind::Objection);
    let grant = |credential: &str| {
        with(
            Request::new(pb::RecordConsentRequest {
                subject_id: "erin".into(),
                purposes: (1..=4)
                    .map(|p| pb::PurposeChoice {
                        tcf_purpose: p,
                        granted: true,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            Some(credential),
        )
    };
    consent.withdraw_consent(object(&own)).await.unwrap();
    let refused = consent
        .record_consent(grant("key-scorer"))
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        Code::FailedPrecondition,
        "purposes[2]: purpose 3 is under an objection",
    );
    assert!(
        refused.message().contains("made by the person)"),
        "{refused:?}"
    );
    // Nor by first putting something weaker in its place: a withdrawal or
    // a refusal of the purpose leaves the objection as it is.
    let scorer = |purposes: Vec<u32>, kind| withdraw("key-scorer", purposes, kind);
    for kind in [
        pb::WithdrawalKind::Withdrawal,
        pb::WithdrawalKind::Objection,
    ] {
        let alone = consent
            .withdraw_consent(scorer(vec![3], kind))
            .await
            .unwrap_err();
        assert_refused(
            &alone,
            Code::FailedPrecondition,
            "tcf_purposes[0]: purpose 3 is under an objection",
        );
    }
    consent
        .withdraw_consent(scorer(vec![2, 3], pb::WithdrawalKind::Withdrawal))
        .await
        .unwrap();
    let refuse_three = with(
        Request::new(pb::RecordConsentRequest {
            subject_id: "erin".into(),
            purposes: [(1, true), (3, false)]
                .map(|(p, granted)| pb::PurposeChoice {
                    tcf_purpose: p,
                    granted,
                    ..Default::default()
                })
                .into(),
            ..Default::default()
        }),
        Some("key-scorer"),
    );
    consent.record_consent(refuse_three).await.unwrap();
    let state = consent
        .get_consent(with(
            Request::new(pb::GetConsentRequest {
                subject_id: "erin".into(),
            }),
            Some("key-support"),
        ))
        .await
        .unwrap()
        .into_inner();
    let status = |p: u32| {
        let found = state.purposes.iter().find(|s| s.tcf_purpose == p);
        found.map(|s| s.status.clone()).unwrap_or_default()
    };
    assert_eq!(
        [1, 2, 3, 4].map(status),
        ["given", "withdrawn", "objected", "objected"]
    );
    let still = consent
        .record_consent(grant("key-scorer"))
        .await
        .unwrap_err();
    assert_eq!(still.code(), Code::FailedPrecondition, "{still:?}");
    // Support, acting for the person, can; then an objection the ad system
    // relayed is the ad system's to lift again.
    consent.record_consent(grant("key-support")).await.unwrap();
    consent
        .withdraw_consent(object("key-scorer"))
        .await
        .unwrap();
    consent.record_consent(grant("key-scorer")).await.unwrap();

    // An opt-out remembered from a browser signal (GPC) the ad system
    // relayed with a Score is the ad system's to lift too, as the
    // person's choice to opt back in.
    let mut gpc = caravan_request();
    gpc.subject_id = "fay".into();
    gpc.context.as_mut().unwrap().gpc = true;
    ScoringServiceClient::new(server.channel().await)
        .score(with(Request::new(gpc), Some("key-scorer")))
        .await
        .unwrap();
    // The ad system relays the person's choice to opt back in.
    let opt_in = |subject: &str| {
        with(
            Request::new(pb::RecordConsentRequest {
                subject_id: subject.into(),
                purposes: vec![pb::PurposeChoice {
                    tcf_purpose: 12,
                    granted: true,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            Some("key-scorer"),
        )
    };
    consent.record_consent(opt_in("fay")).await.unwrap();

    // A Score that read the state before the person's own objection to
    // purpose 12 committed still remembers its GPC opt-out after it: the
    // person's objection stays the purpose's record, which the ad system
    // cannot lift.
    let object_twelve = with(
        Request::new(pb::WithdrawConsentRequest {
            subject_id: "gil".into(),
            tcf_purposes: vec![12],
            kind: pb::WithdrawalKind::Objection as i32,
            ..Default::default()
        }),
        Some(&subject_token(
            &server.gateway,
            "gil",
            Duration::ZERO,
            Duration::from_secs(60),
        )),
    );
    let own = consent
        .withdraw_consent(object_twelve)
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap();
    let consents = server.gateway.consents();
    let gil = consents.subject_ref("gil").unwrap();
    consents
        .remember_opt_out(&gil, "US-CA".into())
        .await
        .unwrap();
    let (_, state) = consents.state("gil").await.unwrap();
    let twelve = state.iter().find(|s| s.tcf_id == 12).unwrap();
    assert_eq!(twelve.record.seq, own.seq, "the person's objection stays");
    let refused = consent.record_consent(opt_in("gil")).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    server.stop().await;
}

/// A call with two credentials is refused, whichever comes first: the
/// gateway will not guess which is the caller's, and a valid key must not
/// vouch for whatever follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_two_credentials_is_refused() {
    let mut config = test_config();
    config.access.api_keys = vec![
        api_key(Role::Scorer, "scorer-key"),
        api_key(Role::Admin, "admin-key"),
    ];
    let server = TestServer::start_with(config).await;
    let mut client = ScoringServiceClient::new(server.channel().await);
    for pair in [
        ["scorer-key", "not-a-key"],
        ["not-a-key", "scorer-key"],
        ["scorer-key", "admin-key"],
    ] {
        let mut request = Request::new(caravan_request());
        for credential in pair {
            request.metadata_mut().append(
                "authorization",
                format!("Bearer {credential}").parse().unwrap(),
            );
        }
        let refused = client.score(request).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::Unauthenticated,
            "{pair:?}: {refused:?}"
        );
        assert!(
            refused
                .message()
                .contains("authorization: given more than once"),
            "{refused:?}"
        );
    }
    let mut one = Request::new(caravan_request());
    one.metadata_mut()
        .insert("authorization", "Bearer scorer-key".parse().unwrap());
    client.score(one).await.unwrap();
    server.stop().await;
}

//! The consent policy end to end through `Score`: for every rule, a request
//! that fires it and one that does not, plus withdrawal, objection and the
//! provenance every response carries.

mod common;

use std::fs;

use candor::grpc::pb::{
    self, consent_service_client::ConsentServiceClient,
    scoring_service_client::ScoringServiceClient,
};
use common::*;
use tonic::transport::Channel;

/// The bundled LightGBM model, plus `geo-logreg`: the logistic regression with
/// its first feature declared as precise geolocation from the request, so the
/// geolocation rules have something to act on.
async fn server() -> TestServer {
    let mut config = test_config();
    let models = config.database.parent().unwrap().join("models");
    copy_package("caravan-lgbm/1.0.0", &models);
    let geo = models.join("geo-logreg/1.0.0");
    fs::create_dir_all(geo.parent().unwrap()).unwrap();
    fs::rename(copy_package("caravan-logreg/1.0.0", &models), &geo).unwrap();
    let manifest = geo.join("manifest.toml");
    let text = fs::read_to_string(&manifest).unwrap();
    let text = text
        .replacen("name = \"caravan-logreg\"", "name = \"geo-logreg\"", 1)
        .replacen(
            "category = \"zip_code_demographics\"\nsource = \"zip_code_aggregate\"",
            "category = \"precise_geolocation\"\nsource = \"request_context\"",
            1,
        );
    fs::write(&manifest, text).unwrap();
    config.models_dir = models;
    TestServer::start_with(config).await
}

const GEO_FEATURE: &str = "MAANTHUI";
/// A zip-code aggregate (cross-context) and a first-party feature.
const ZIP_FEATURE: &str = "MGEMOMV";
const OWN_FEATURE: &str = "PPERSAUT";

#[derive(Clone, Default)]
struct Ctx {
    country: &'static str,
    region: &'static str,
    minor: bool,
    tc: Option<&'static str>,
    gpp: Option<&'static str>,
    gpc: bool,
    personalization: i32,
    user_data: i32,
}

fn ctx(country: &'static str) -> Ctx {
    Ctx {
        country,
        ..Ctx::default()
    }
}

impl Ctx {
    fn tc(mut self, name: &'static str) -> Self {
        self.tc = Some(name);
        self
    }
    fn gpp(mut self, name: &'static str) -> Self {
        self.gpp = Some(name);
        self
    }
    fn region(mut self, region: &'static str) -> Self {
        self.region = region;
        self
    }
    fn context(&self) -> pb::RequestContext {
        pb::RequestContext {
            jurisdiction_country: self.country.into(),
            jurisdiction_region: self.region.into(),
            age_status: if self.minor {
                pb::AgeStatus::Minor
            } else {
                pb::AgeStatus::Adult
            } as i32,
            tc_string: self.tc.map(policy_string).unwrap_or_default(),
            gpp_string: self.gpp.map(policy_string).unwrap_or_default(),
            gpc: self.gpc,
            consent_mode: Some(pb::ConsentModeFlags {
                ad_personalization: self.personalization,
                ad_user_data: self.user_data,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

async fn score(
    client: &mut ScoringServiceClient<Channel>,
    model: &str,
    subject: &str,
    c: &Ctx,
) -> pb::Decision {
    let mut request = caravan_request();
    request.model = model_ref(model, "");
    request.subject_id = subject.into();
    request.context = Some(c.context());
    request.explain = Some(pb::ExplainOptions {
        mode: pb::ExplainMode::Inline as i32,
        method: 0,
    });
    decide(client, request).await
}

/// Scores a request that must succeed.
async fn decide(
    client: &mut ScoringServiceClient<Channel>,
    request: pb::ScoreRequest,
) -> pb::Decision {
    client
        .score(request)
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap()
}

fn tier(d: &pb::Decision) -> pb::Tier {
    pb::Tier::try_from(d.tier).unwrap()
}

fn provenance(d: &pb::Decision) -> &pb::Provenance {
    d.provenance
        .as_ref()
        .expect("every decision has provenance")
}

fn fired(d: &pb::Decision, rule: &str) -> bool {
    provenance(d).rules_fired.iter().any(|r| r == rule)
}

fn masked(d: &pb::Decision, feature: &str) -> bool {
    provenance(d).masked_features.iter().any(|f| f == feature)
}

struct Case {
    rule: &'static str,
    model: &'static str,
    fires: Ctx,
    fired_tier: pb::Tier,
    /// A feature the rule masks (when it masks rather than refuses).
    masks: Option<&'static str>,
    quiet: Ctx,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_fires_when_it_should_and_only_then() {
    use pb::Tier::{Contextual, Refused};
    let server = server().await;
    let mut client = server.scoring().await;
    let lgbm = "caravan-lgbm";
    let geo = "geo-logreg";
    let de_all = || ctx("DE").tc("tcf-all");
    let us = || ctx("US");
    let cases = vec![
        Case {
            rule: "jurisdiction.unknown_refuse",
            model: lgbm,
            fires: ctx("BR"),
            fired_tier: Refused,
            masks: None,
            quiet: us(),
        },
        Case {
            rule: "jurisdiction.unknown_refuse",
            model: lgbm,
            fires: ctx(""),
            fired_tier: Refused,
            masks: None,
            quiet: ctx("GB").tc("tcf-all"),
        },
        Case {
            rule: "tcf.no_signal",
            model: lgbm,
            fires: ctx("DE"),
            fired_tier: Refused,
            masks: None,
            quiet: de_all(),
        },
        Case {
            rule: "tcf.stale_tc_string",
            model: lgbm,
            fires: ctx("FR").tc("tcf-stale"),
            fired_tier: Refused,
            masks: None,
            quiet: ctx("FR").tc("tcf-all"),
        },
        Case {
            rule: "tcf.personalised_ads_not_granted",
            model: lgbm,
            fires: ctx("DE").tc("tcf-no-p3"),
            fired_tier: Contextual,
            masks: Some(OWN_FEATURE),
            quiet: de_all(),
        },
        Case {
            rule: "tcf.personalised_ads_not_granted",
            model: lgbm,
            fires: ctx("DE").tc("tcf-restrict-p3-not-allowed"),
            fired_tier: Contextual,
            masks: Some(ZIP_FEATURE),
            quiet: de_all(),
        },
        Case {
            rule: "tcf.personalised_ads_not_granted",
            model: lgbm,
            fires: ctx("DE").tc("tcf-p2-li-only"),
            fired_tier: Contextual,
            masks: Some(OWN_FEATURE),
            quiet: de_all(),
        },
        Case {
            rule: "tcf.basic_ads_not_granted",
            model: lgbm,
            fires: ctx("DE").tc("tcf-nothing"),
            fired_tier: Refused,
            masks: None,
            quiet: ctx("DE").tc("tcf-p2-consent-only"),
        },
        Case {
            rule: "tcf.basic_ads_not_granted",
            model: lgbm,
            fires: ctx("DE").tc("tcf-vendor-missing"),
            fired_tier: Refused,
            masks: None,
            quiet: ctx("DE").tc("tcf-p2-li-only"),
        },
        Case {
            rule: "tcf.basic_ads_not_granted",
            model: lgbm,
            fires: ctx("DE").tc("tcf-restrict-p2-require-consent"),
            fired_tier: Refused,
            masks: None,
            quiet: ctx("DE").tc("tcf-p2-li-only"),
        },
        Case {
            rule: "tcf.special_feature_1_not_opted_in",
            model: geo,
            fires: ctx("DE").tc("tcf-no-sf1"),
            fired_tier: Contextual,
            masks: Some(GEO_FEATURE),
            quiet: de_all(),
        },
        Case {
            rule: "tcf.personalised_ads_not_granted",
            model: lgbm,
            fires: ctx("IT").gpp("gpp-tcfeuv2-all").tc("tcf-no-p3"),
            fired_tier: Contextual,
            masks: Some(OWN_FEATURE),
            quiet: ctx("IT").gpp("gpp-tcfeuv2-all"),
        },
        Case {
            rule: "tcf.conflicting_signals_stricter_applied",
            model: lgbm,
            fires: ctx("IT").gpp("gpp-tcfeuv2-all").tc("tcf-no-p3"),
            fired_tier: Contextual,
            masks: Some(OWN_FEATURE),
            quiet: ctx("IT").gpp("gpp-tcfeuv2-all").tc("tcf-all"),
        },
        Case {
            rule: "us.gpc_opt_out",
            model: lgbm,
            fires: Ctx { gpc: true, ..us() },
            fired_tier: Contextual,
            masks: Some(ZIP_FEATURE),
            quiet: us(),
        },
        Case {
            rule: "us.gpc_opt_out",
            model: lgbm,
            fires: us().gpp("gpp-usnat-gpc"),
            fired_tier: Contextual,
            masks: Some(ZIP_FEATURE),
            quiet: us().gpp("gpp-usnat-none"),
        },
        Case {
            rule: "us.sale_sharing_targeting_opt_out",
            model: lgbm,
            fires: us().gpp("gpp-usnat-sale-opt-out"),
            fired_tier: Contextual,
            masks: Some(ZIP_FEATURE),
            quiet: us().gpp("gpp-usnat-none"),
        },
        Case {
            rule: "us.sale_sharing_targeting_opt_out",
            model: lgbm,
            fires: us().gpp("gpp-usnat-targeted-opt-out"),
            fired_tier: Contextual,
            masks: Some(ZIP_FEATURE),
            quiet: us().gpp("gpp-usnat-none"),
        },
        Case {
            rule: "us.sale_sharing_targeting_opt_out",
            model: lgbm,
            fires: us().region("CA").gpp("gpp-usca-sale-opt-out"),
            fired_tier: Contextual,
            masks: Some(ZIP_FEATURE),
            quiet: us().region("CA").gpp("gpp-usca-none"),
        },
        Case {
            rule: "us.usnat_sensitive_data_no_consent",
            model: geo,
            fires: us().gpp("gpp-usnat-none"),
            fired_tier: Contextual,
            masks: Some(GEO_FEATURE),
            quiet: us().gpp("gpp-usnat-geo-consent"),
        },
        Case {
            rule: "us.usca_sensitive_data_opt_out",
            model: geo,
            fires: us().region("CA").gpp("gpp-usca-geo-opt-out"),
            fired_tier: Contextual,
            masks: Some(GEO_FEATURE),
            quiet: us().region("CA").gpp("gpp-usca-none"),
        },
        Case {
            rule: "dsa.art28_minor",
            model: lgbm,
            fires: Ctx {
                minor: true,
                ..us()
            },
            fired_tier: Contextual,
            masks: Some(OWN_FEATURE),
            quiet: us(),
        },
        Case {
            rule: "dsa.art28_minor",
            model: lgbm,
            fires: Ctx {
                minor: true,
                ..de_all()
            },
            fired_tier: Contextual,
            masks: Some(ZIP_FEATURE),
            quiet: de_all(),
        },
        // A precise location is profile data too: a minor's is not used
        // even where special feature 1 is opted in.
        Case {
            rule: "dsa.art28_minor",
            model: geo,
            fires: Ctx {
                minor: true,
                ..de_all()
            },
            fired_tier: Contextual,
            masks: Some(GEO_FEATURE),
            quiet: de_all(),
        },
        Case {
            rule: "gpp.known_child",
            model: lgbm,
            fires: us().gpp("gpp-usnat-known-child"),
            fired_tier: Contextual,
            masks: Some(OWN_FEATURE),
            quiet: us().gpp("gpp-usnat-none"),
        },
        Case {
            rule: "consent_mode.ad_personalization_denied",
            model: lgbm,
            fires: Ctx {
                personalization: pb::ConsentModeValue::Denied as i32,
                ..de_all()
            },
            fired_tier: Contextual,
            masks: Some(OWN_FEATURE),
            quiet: Ctx {
                personalization: pb::ConsentModeValue::Granted as i32,
                ..de_all()
            },
        },
        Case {
            rule: "consent_mode.ad_user_data_denied",
            model: lgbm,
            fires: Ctx {
                user_data: pb::ConsentModeValue::Denied as i32,
                ..us()
            },
            fired_tier: Contextual,
            masks: Some(OWN_FEATURE),
            quiet: Ctx {
                user_data: pb::ConsentModeValue::Granted as i32,
                ..us()
            },
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let subject = format!("rule-table-{i}");
        let d = score(&mut client, case.model, &subject, &case.fires).await;
        assert!(
            fired(&d, case.rule),
            "case {i}: {} did not fire: {:?}",
            case.rule,
            provenance(&d).rules_fired
        );
        assert_eq!(tier(&d), case.fired_tier, "case {i}: {}", case.rule);
        match (case.fired_tier, case.masks) {
            (pb::Tier::Refused, _) => {
                assert!(
                    d.score.is_none() && d.attribution.is_none(),
                    "case {i}: refused but scored"
                );
            }
            (_, Some(feature)) => {
                assert!(masked(&d, feature), "case {i}: {feature} not masked");
                let a = d.attribution.as_ref().unwrap();
                let f = a.features.iter().find(|f| f.name == feature).unwrap();
                assert!(
                    f.masked,
                    "case {i}: the attribution must show {feature} as masked"
                );
                assert!(d.score.is_some());
            }
            (_, None) => unreachable!("a masking rule names a feature it masks"),
        }
        let quiet = score(&mut client, case.model, &subject, &case.quiet).await;
        assert!(
            !fired(&quiet, case.rule),
            "case {i}: {} fired on the quiet request: {:?}",
            case.rule,
            provenance(&quiet).rules_fired
        );
        assert_ne!(
            tier(&quiet),
            pb::Tier::Refused,
            "case {i}: the quiet request was refused"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn us_opt_out_keeps_first_party_features_and_unrestricted_requests_are_personalised() {
    let server = server().await;
    let mut client = server.scoring().await;
    let d = score(
        &mut client,
        "caravan-lgbm",
        "s",
        &Ctx {
            gpc: true,
            ..ctx("US")
        },
    )
    .await;
    assert!(masked(&d, ZIP_FEATURE) && !masked(&d, OWN_FEATURE));
    let full = score(&mut client, "caravan-lgbm", "s", &ctx("DE").tc("tcf-all")).await;
    assert_eq!(tier(&full), pb::Tier::Personalised);
    assert!(
        provenance(&full).masked_features.is_empty() && provenance(&full).rules_fired.is_empty()
    );
    // Masking changes what the model saw, so the score moves.
    assert_ne!(d.score, full.score);
}

fn consent_client(channel: Channel) -> ConsentServiceClient<Channel> {
    ConsentServiceClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawal_takes_effect_on_the_very_next_score() {
    let server = server().await;
    let mut scoring = server.scoring().await;
    let mut consent = consent_client(server.channel().await);
    let eu = ctx("DE").tc("tcf-all");
    let before = score(&mut scoring, "caravan-lgbm", "alice", &eu).await;
    assert_eq!(tier(&before), pb::Tier::Personalised);

    let withdrawn = consent
        .withdraw_consent(pb::WithdrawConsentRequest {
            subject_id: "alice".into(),
            tcf_purposes: vec![3, 4],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let after = score(&mut scoring, "caravan-lgbm", "alice", &eu).await;
    assert_eq!(tier(&after), pb::Tier::Contextual);
    assert!(fired(&after, "tcf.personalised_ads_withdrawn"));
    let p3 = provenance(&after)
        .purposes
        .iter()
        .find(|p| p.tcf_purpose == 3)
        .unwrap();
    assert_eq!(
        (p3.status.as_str(), p3.source.as_str()),
        ("withdrawn", "ledger")
    );
    assert_eq!(
        p3.record_seq,
        withdrawn.record.as_ref().unwrap().seq,
        "the provenance cites the withdrawal"
    );
    assert!(
        provenance(&after)
            .ledger_records
            .contains(withdrawn.record.as_ref().unwrap())
    );

    // Someone else's withdrawal changes nothing for bob; in the US the
    // ledger withdrawal removes the profile too.
    assert_eq!(
        tier(&score(&mut scoring, "caravan-lgbm", "bob", &eu).await),
        pb::Tier::Personalised
    );
    let us = score(&mut scoring, "caravan-lgbm", "alice", &ctx("US")).await;
    assert!(fired(&us, "ledger.personalised_ads_withdrawn"));

    // An objection to direct marketing refuses outright, in every regime,
    // and the refusal cites the objection.
    let objection = consent
        .withdraw_consent(pb::WithdrawConsentRequest {
            subject_id: "alice".into(),
            kind: pb::WithdrawalKind::Objection as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let objection = objection.record.as_ref().unwrap();
    for context in [&eu, &ctx("US")] {
        let objected = score(&mut scoring, "caravan-lgbm", "alice", context).await;
        assert_eq!(tier(&objected), pb::Tier::Refused);
        assert!(fired(&objected, "gdpr.art21_objection"));
        let direct_marketing = provenance(&objected)
            .purposes
            .iter()
            .find(|p| p.tcf_purpose == 0)
            .expect("the direct-marketing purpose is in the provenance");
        assert_eq!(
            (
                direct_marketing.status.as_str(),
                direct_marketing.source.as_str()
            ),
            ("objected", "ledger")
        );
        assert_eq!(direct_marketing.record_seq, objection.seq);
        assert!(provenance(&objected).ledger_records.contains(objection));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_recorded_through_the_api_stands_in_for_a_tc_string() {
    let server = server().await;
    let mut scoring = server.scoring().await;
    let mut consent = consent_client(server.channel().await);
    let no_string = ctx("AT");
    assert_eq!(
        tier(&score(&mut scoring, "caravan-lgbm", "carol", &no_string).await),
        pb::Tier::Refused
    );
    // Purposes 1-4 granted in a CMP's dialog in Austria.
    let all_four = |subject: &str| pb::RecordConsentRequest {
        subject_id: subject.into(),
        purposes: (1..=4)
            .map(|p| pb::PurposeChoice {
                tcf_purpose: p,
                granted: true,
                ..Default::default()
            })
            .collect(),
        method: pb::CollectionMethod::CmpUi as i32,
        jurisdiction: "AT".into(),
        ..Default::default()
    };
    let recorded = consent
        .record_consent(pb::RecordConsentRequest {
            language: "de".into(),
            notice: Some(pb::Notice {
                url: "https://publisher.example/privacy".into(),
                version: "2026-10".into(),
                sha256: "ab".repeat(32),
            }),
            ..all_four("carol")
        })
        .await
        .unwrap()
        .into_inner();
    let d = score(&mut scoring, "caravan-lgbm", "carol", &no_string).await;
    assert_eq!(tier(&d), pb::Tier::Personalised);
    let p = provenance(&d);
    assert!(
        p.purposes
            .iter()
            .all(|p| p.source == "ledger" && p.legal_basis == "consent")
    );
    assert!(p.ledger_records.contains(recorded.record.as_ref().unwrap()));
    assert_eq!(p.subject_ref, recorded.subject_ref);
    assert_ne!(p.subject_ref, "carol", "the subject is pseudonymised");

    // A consent for some data categories covers those only.
    consent
        .record_consent(pb::RecordConsentRequest {
            data_categories: vec!["first_party_purchase_history".into()],
            ..all_four("dana")
        })
        .await
        .unwrap();
    let d = score(&mut scoring, "caravan-lgbm", "dana", &no_string).await;
    assert_eq!(tier(&d), pb::Tier::Contextual);
    assert!(fired(&d, "ledger.consent_limited_to_categories"), "{d:?}");
    assert!(masked(&d, ZIP_FEATURE) && !masked(&d, OWN_FEATURE), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_provenance() {
    let server = server().await;
    let mut client = server.scoring().await;
    let contexts = [
        ctx(""),
        ctx("BR"),
        ctx("DE"),
        ctx("DE").tc("tcf-all"),
        ctx("DE").tc("tcf-no-p3"),
        ctx("DE").tc("tcf-nothing"),
        Ctx {
            minor: true,
            ..ctx("US")
        },
        ctx("US").gpp("gpp-usnat-usca-none").region("CA"),
    ];
    for (i, c) in contexts.iter().enumerate() {
        for subject in ["", "dave"] {
            let d = score(&mut client, "caravan-lgbm", subject, c).await;
            let p = provenance(&d);
            assert_eq!(p.tier, d.tier, "context {i}");
            assert_eq!(p.model_sha256, d.model.as_ref().unwrap().sha256);
            assert_eq!(p.signals_sha256.len(), 64);
            assert_eq!(p.policy_version, "candor-policy/4");
            assert_eq!(p.policy_sha256.len(), 64);
            assert!(
                !p.ledger_records.is_empty(),
                "the inline signals are evidence"
            );
            assert_eq!(p.subject_ref.is_empty(), subject.is_empty());
            assert_eq!(d.score.is_none(), d.tier == pb::Tier::Refused as i32);
            // When the person made the choices a TC string carries: the
            // day it was last updated.
            assert_eq!(p.tc_last_updated.is_some(), c.tc.is_some(), "context {i}");
            if let Some(t) = p.tc_last_updated {
                assert_eq!(t.seconds % 86_400, 0, "a TC string's day: {t:?}");
            }
        }
    }
    // ScoreBatch: every row's decision carries the same provenance.
    let batch = client
        .score_batch(pb::ScoreBatchRequest {
            subject_id: "erin".into(),
            context: Some(ctx("DE").tc("tcf-no-p3").context()),
            ..caravan_batch(3)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.decisions.len(), 3);
    for d in &batch.decisions {
        assert_eq!(tier(d), pb::Tier::Contextual);
        assert_eq!(d.provenance, batch.decisions[0].provenance);
    }
}

#[tokio::test]
async fn malformed_signals_are_invalid_arguments_naming_the_field() {
    let server = server().await;
    let mut client = server.scoring().await;
    let cases: Vec<(pb::RequestContext, &str)> = vec![
        (
            pb::RequestContext {
                jurisdiction_country: "DE".into(),
                tc_string: "CQ!".into(),
                ..Default::default()
            },
            "context.tc_string",
        ),
        (
            pb::RequestContext {
                jurisdiction_country: "US".into(),
                gpp_string: "DBABLA~CVV".into(),
                ..Default::default()
            },
            "context.gpp_string",
        ),
        (
            pb::RequestContext {
                jurisdiction_country: "germany".into(),
                ..Default::default()
            },
            "context.jurisdiction_country",
        ),
        // Reserved, not assigned: no country's law applies to "UK".
        (
            pb::RequestContext {
                jurisdiction_country: "UK".into(),
                ..Default::default()
            },
            "context.jurisdiction_country: \"UK\" is not an assigned ISO 3166-1 alpha-2 code such as \"DE\" or \"US\"; the United Kingdom is \"GB\"",
        ),
        (
            pb::RequestContext {
                jurisdiction_region: "CA".into(),
                ..Default::default()
            },
            "context.jurisdiction_region",
        ),
        (
            pb::RequestContext {
                jurisdiction_country: "US".into(),
                jurisdiction_region: "XX".into(),
                ..Default::default()
            },
            "context.jurisdiction_region",
        ),
        (
            pb::RequestContext {
                jurisdiction_country: "US".into(),
                age_status: 9,
                ..Default::default()
            },
            "context.age_status",
        ),
    ];
    for (context, field) in cases {
        let mut request = caravan_request();
        request.context = Some(context);
        let status = client.score(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
}

/// Purpose 2 (selecting any ad) is needed in every tier: consent to 1, 3
/// and 4 without it refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personalised_consent_without_purpose_2_is_refused() {
    let server = server().await;
    let mut scoring = server.scoring().await;
    let mut consent = consent_client(server.channel().await);
    let choose = |purposes: &[u32]| pb::RecordConsentRequest {
        subject_id: "kim".into(),
        purposes: purposes
            .iter()
            .map(|&p| pb::PurposeChoice {
                tcf_purpose: p,
                granted: true,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    consent.record_consent(choose(&[1, 3, 4])).await.unwrap();
    let d = score(&mut scoring, "caravan-lgbm", "kim", &ctx("AT")).await;
    assert_eq!(tier(&d), pb::Tier::Refused);
    assert!(fired(&d, "tcf.basic_ads_not_granted"));
    consent.record_consent(choose(&[2])).await.unwrap();
    let d = score(&mut scoring, "caravan-lgbm", "kim", &ctx("AT")).await;
    assert_eq!(tier(&d), pb::Tier::Personalised);
}

/// A consent dated a few minutes ahead (clock skew) never outranks a
/// withdrawal made after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_dated_consent_does_not_outrank_a_later_withdrawal() {
    let server = server().await;
    let mut scoring = server.scoring().await;
    let mut consent = consent_client(server.channel().await);
    let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(240);
    consent
        .record_consent(pb::RecordConsentRequest {
            subject_id: "lee".into(),
            purposes: (1..=4)
                .map(|p| pb::PurposeChoice {
                    tcf_purpose: p,
                    granted: true,
                    ..Default::default()
                })
                .collect(),
            collected_at: Some(ahead.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    consent
        .withdraw_consent(pb::WithdrawConsentRequest {
            subject_id: "lee".into(),
            tcf_purposes: vec![3],
            ..Default::default()
        })
        .await
        .unwrap();
    let d = score(&mut scoring, "caravan-lgbm", "lee", &ctx("AT")).await;
    assert_eq!(tier(&d), pb::Tier::Contextual);
    assert!(fired(&d, "tcf.personalised_ads_withdrawn"));
}

/// GPC from a known person is remembered: a later request without the
/// signal does not opt them back in (CCPA regulations, 11 CCR §7025). Only
/// an explicit choice does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_persons_gpc_outlives_the_request() {
    let server = server().await;
    let mut scoring = server.scoring().await;
    let mut consent = consent_client(server.channel().await);
    let with_gpc = Ctx {
        gpc: true,
        ..ctx("US")
    };
    let d = score(&mut scoring, "caravan-lgbm", "olga", &with_gpc).await;
    assert!(fired(&d, "us.gpc_opt_out") && masked(&d, ZIP_FEATURE));
    let later = score(&mut scoring, "caravan-lgbm", "olga", &ctx("US")).await;
    assert_eq!(tier(&later), pb::Tier::Contextual);
    assert!(
        fired(&later, "ledger.sale_sharing_opt_out"),
        "{:?}",
        provenance(&later).rules_fired
    );
    assert!(masked(&later, ZIP_FEATURE) && !masked(&later, OWN_FEATURE));
    // Someone else without GPC is not affected.
    let other = score(&mut scoring, "caravan-lgbm", "pia", &ctx("US")).await;
    assert_eq!(tier(&other), pb::Tier::Personalised);
    // Opting back in is an explicit choice.
    let opted_in = consent
        .record_consent(pb::RecordConsentRequest {
            subject_id: "olga".into(),
            purposes: vec![pb::PurposeChoice {
                tcf_purpose: 12,
                granted: true,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let back = score(&mut scoring, "caravan-lgbm", "olga", &ctx("US")).await;
    assert_eq!(tier(&back), pb::Tier::Personalised);
    // The decision cites the choice that lifted the remembered opt-out.
    let regranted = opted_in.record.unwrap();
    let twelve = provenance(&back)
        .purposes
        .iter()
        .find(|p| p.tcf_purpose == 12)
        .cloned()
        .expect("purpose 12 in the provenance");
    assert_eq!(
        (
            twelve.status.as_str(),
            twelve.source.as_str(),
            twelve.record_seq
        ),
        ("granted", "ledger", regranted.seq)
    );
    assert!(
        provenance(&back)
            .ledger_records
            .iter()
            .any(|r| r.seq == regranted.seq),
        "{:?}",
        provenance(&back).ledger_records
    );

    // The remembered opt-out is cited whatever else the ledger says: here
    // the person also withdrew purposes 1 to 11, whose records the other
    // purposes cite.
    score(&mut scoring, "caravan-lgbm", "quinn", &with_gpc).await;
    consent
        .withdraw_consent(pb::WithdrawConsentRequest {
            subject_id: "quinn".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let withdrawn = score(&mut scoring, "caravan-lgbm", "quinn", &ctx("US")).await;
    let p = provenance(&withdrawn);
    assert!(fired(&withdrawn, "ledger.sale_sharing_opt_out"));
    let twelve = p
        .purposes
        .iter()
        .find(|o| o.tcf_purpose == 12)
        .expect("12 cited");
    assert_eq!(
        (twelve.status.as_str(), twelve.source.as_str()),
        ("opted_out", "ledger")
    );
    assert!(
        p.ledger_records.iter().any(|r| r.seq == twelve.record_seq),
        "{:?}",
        p.ledger_records
    );
}

/// Withdrawing (or refusing) purpose 12 through the consent API opts the
/// person out of sale and sharing as an objection does: the very next US
/// request without a signal masks the cross-context features.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawing_or_refusing_sale_and_sharing_opts_out() {
    let server = server().await;
    let mut scoring = server.scoring().await;
    let mut consent = consent_client(server.channel().await);
    let d = score(&mut scoring, "caravan-lgbm", "uma", &ctx("US")).await;
    assert_eq!(tier(&d), pb::Tier::Personalised);
    consent
        .withdraw_consent(pb::WithdrawConsentRequest {
            subject_id: "uma".into(),
            tcf_purposes: vec![12],
            ..Default::default()
        })
        .await
        .unwrap();
    consent
        .record_consent(pb::RecordConsentRequest {
            subject_id: "vic".into(),
            purposes: vec![pb::PurposeChoice {
                tcf_purpose: 12,
                granted: false,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    for subject in ["uma", "vic"] {
        let d = score(&mut scoring, "caravan-lgbm", subject, &ctx("US")).await;
        assert_eq!(tier(&d), pb::Tier::Contextual, "{subject}");
        assert!(fired(&d, "ledger.sale_sharing_opt_out"), "{subject}");
        assert!(
            masked(&d, ZIP_FEATURE) && !masked(&d, OWN_FEATURE),
            "{subject}"
        );
        // The provenance cites the opt-out it rested on.
        let p = provenance(&d);
        let opted: Vec<_> = p
            .purposes
            .iter()
            .filter(|o| o.status == "opted_out")
            .collect();
        // Purposes 3 and 4, and the sale-or-sharing choice itself (12).
        assert_eq!(opted.len(), 3, "{subject}: {:?}", p.purposes);
        assert!(opted.iter().any(|o| o.tcf_purpose == 12), "{subject}");
        assert!(
            opted
                .iter()
                .all(|o| o.source == "ledger" && o.record_seq > 0),
            "{subject}: {:?}",
            p.purposes
        );
    }
}

/// An erasure keeps a person's opt-out in force: without it their next
/// request would be profiled again. Their consents go with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_outlives_the_persons_erasure() {
    let server = server().await;
    let mut scoring = server.scoring().await;
    let mut consent = consent_client(server.channel().await);
    consent
        .record_consent(pb::RecordConsentRequest {
            subject_id: "wes".into(),
            purposes: vec![pb::PurposeChoice {
                tcf_purpose: 1,
                granted: true,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    consent
        .withdraw_consent(pb::WithdrawConsentRequest {
            subject_id: "wes".into(),
            tcf_purposes: vec![12],
            ..Default::default()
        })
        .await
        .unwrap();
    let erased = consent
        .erase_subject(pb::EraseSubjectRequest {
            subject_id: "wes".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let kept: Vec<_> = erased
        .kept
        .iter()
        .map(|p| (p.tcf_purpose, p.status.as_str()))
        .collect();
    assert_eq!(kept, [(12, "withdrawn")]);
    let state = consent
        .get_consent(pb::GetConsentRequest {
            subject_id: "wes".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.purposes, erased.kept);
    let verified = consent
        .verify_ledger(pb::VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(verified.intact, "{:?}", verified.first_broken);

    let d = score(&mut scoring, "caravan-lgbm", "wes", &ctx("US")).await;
    assert_eq!(tier(&d), pb::Tier::Contextual);
    assert!(fired(&d, "ledger.sale_sharing_opt_out"));
}

/// The US Privacy section (uspv1) inside a GPP string: its sale opt-out is
/// honoured exactly as usnat's, and a malformed one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uspv1_section_is_applied_and_validated() {
    let server = server().await;
    let mut client = server.scoring().await;
    let usnat = policy_string("gpp-usnat-none");
    let (_, usnat) = usnat.split_once('~').unwrap();
    // Header: sections 6 (uspv1) and 7 (usnat).
    let with = |usp: &str| pb::RequestContext {
        jurisdiction_country: "US".into(),
        age_status: pb::AgeStatus::Adult as i32,
        gpp_string: format!("DBACTY~{usp}~{usnat}"),
        ..Default::default()
    };
    let mut request = caravan_request();
    request.subject_id = "uspv1".into();
    request.context = Some(with("1YYN"));
    let d = decide(&mut client, request.clone()).await;
    let opted_out = score(
        &mut client,
        "caravan-lgbm",
        "uspv1-b",
        &ctx("US").gpp("gpp-usnat-sale-opt-out"),
    )
    .await;
    assert_eq!(tier(&d), tier(&opted_out));
    assert_eq!(
        provenance(&d).rules_fired,
        provenance(&opted_out).rules_fired
    );
    assert_eq!(
        provenance(&d).masked_features,
        provenance(&opted_out).masked_features
    );
    assert!(fired(&d, "us.sale_sharing_targeting_opt_out") && masked(&d, ZIP_FEATURE));

    request.subject_id = "uspv1-c".into();
    request.context = Some(with("1YNN"));
    let d = decide(&mut client, request.clone()).await;
    assert!(
        !fired(&d, "us.sale_sharing_targeting_opt_out"),
        "{:?}",
        provenance(&d).rules_fired
    );

    for bad in ["1XYZ", "zz"] {
        request.context = Some(with(bad));
        let status = client.score(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
        assert!(
            status
                .message()
                .starts_with("context.gpp_string: section uspv1: "),
            "{bad}: {}",
            status.message()
        );
    }
}

/// A GPP string carrying only a state section (usva, id 9): its opt-out of
/// targeted advertising is honoured exactly as usnat's, without usnat, GPC
/// or uspv1 beside it; without an opt-out the request stays personalised;
/// a malformed one is refused naming the section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_section_alone_is_applied() {
    let server = server().await;
    let mut client = server.scoring().await;
    // Header "DBABRg": section 9 only. usva cores: version 1, notices given,
    // SaleOptOut 2, then TargetedAdvertisingOptOut 1 ("BVkAABA") or 2
    // ("BVoAABA"), nothing sensitive, no child, MSPA covered.
    let with = |usva: &str| pb::RequestContext {
        jurisdiction_country: "US".into(),
        jurisdiction_region: "VA".into(),
        age_status: pb::AgeStatus::Adult as i32,
        gpp_string: format!("DBABRg~{usva}"),
        ..Default::default()
    };
    let mut request = caravan_request();
    request.subject_id = "usva".into();
    request.context = Some(with("BVkAABA"));
    let d = decide(&mut client, request.clone()).await;
    assert_eq!(tier(&d), pb::Tier::Contextual);
    // The opt-out is also remembered for this known person, and the
    // record names both.
    assert_eq!(
        provenance(&d).rules_fired,
        [
            "us.sale_sharing_targeting_opt_out",
            "ledger.sale_sharing_opt_out"
        ]
    );
    assert!(masked(&d, ZIP_FEATURE) && !masked(&d, OWN_FEATURE));

    request.subject_id = "usva-b".into();
    request.context = Some(with("BVoAABA"));
    let d = decide(&mut client, request.clone()).await;
    assert_eq!(tier(&d), pb::Tier::Personalised);
    assert!(provenance(&d).rules_fired.is_empty());

    // The string ends after the first sensitive-data category.
    request.context = Some(with("BVk"));
    let status = client.score(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("context.gpp_string: section usva: ends at bit 18"),
        "{}",
        status.message()
    );
}

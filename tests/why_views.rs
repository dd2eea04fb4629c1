//! The consumer view of "why am I seeing this ad?": snapshots for the three
//! tiers on the bundled Caravan models in both bundled languages, and a
//! property test that reasons follow the attributions and never reveal what
//! they must not.

mod common;

use std::sync::LazyLock;

use candor::{
    consent::policy::{Provenance, Regime, Tier},
    decisions::{DecisionRow, ExplainedFeature, Explanation},
    grpc::{client::consumer_text, pb},
    inference::runtime,
    models::{ModelPackage, manifest::DataCategory},
    why::{self, Language, ModelFacts},
};
use common::*;
use proptest::prelude::*;

/// Dates change from run to run; the words must not. Replaces every
/// "29 Nov 2026"-style date with <date>.
fn redact(text: &str) -> String {
    text.lines().map(redact_line).collect::<Vec<_>>().join("\n")
}

fn redact_line(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let is_date = i + 2 < words.len()
            && words[i].parse::<u8>().is_ok()
            && words[i + 1].len() == 3
            && words[i + 2]
                .trim_end_matches(['.', ';', ','])
                .parse::<u16>()
                .is_ok();
        if is_date {
            out.push(format!("<date>{}", &words[i + 2][4..]));
            i += 3;
        } else {
            out.push(words[i].to_owned());
            i += 1;
        }
    }
    out.join(" ")
}

async fn consumer_views(model: &str, context: pb::RequestContext) -> (String, String) {
    let server = TestServer::start().await;
    let mut request = caravan_request();
    request.model = model_ref(model, "");
    request.context = Some(pb::RequestContext {
        placement_id: "news-article-sidebar".into(),
        campaign_id: "caravan-autumn".into(),
        ..context
    });
    request.explain = Some(pb::ExplainOptions {
        mode: pb::ExplainMode::Inline as i32,
        method: 0,
    });
    let d = server.score_one(request).await;
    let mut client =
        pb::explanation_service_client::ExplanationServiceClient::new(server.channel().await);
    let mut texts = Vec::new();
    // The second as a browser's Accept-Language passed on: the most
    // preferred language the view speaks.
    for (language, answered) in [("en", "en"), ("de-AT,de;q=0.9,nl;q=0.8", "nl")] {
        let r = client
            .get_explanation(pb::GetExplanationRequest {
                decision_id: d.decision_id.clone(),
                audience: pb::Audience::Consumer as i32,
                language: language.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let Some(pb::get_explanation_response::View::Consumer(v)) = r.view else {
            panic!("consumer view")
        };
        assert_eq!(v.language, answered);
        texts.push(redact(&format!(
            "basis: {}\n{}",
            v.basis,
            consumer_text(&v)
        )));
    }
    (texts.remove(0), texts.remove(0))
}

fn us_adult_ctx() -> pb::RequestContext {
    pb::RequestContext {
        jurisdiction_country: "US".into(),
        age_status: pb::AgeStatus::Adult as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personalised_lgbm() {
    let (en, nl) = consumer_views("caravan-lgbm", us_adult_ctx()).await;
    insta::assert_snapshot!("personalised_lgbm_en", en);
    insta::assert_snapshot!("personalised_lgbm_nl", nl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personalised_logreg() {
    let ctx = pb::RequestContext {
        jurisdiction_country: "DE".into(),
        tc_string: policy_string("tcf-all"),
        ..Default::default()
    };
    let (en, nl) = consumer_views("caravan-logreg", ctx).await;
    insta::assert_snapshot!("personalised_logreg_en", en);
    insta::assert_snapshot!("personalised_logreg_nl", nl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contextual_gpc_lgbm() {
    let (en, nl) = consumer_views(
        "caravan-lgbm",
        pb::RequestContext {
            gpc: true,
            ..us_adult_ctx()
        },
    )
    .await;
    insta::assert_snapshot!("contextual_gpc_lgbm_en", en);
    insta::assert_snapshot!("contextual_gpc_lgbm_nl", nl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contextual_tcf_lgbm() {
    let ctx = pb::RequestContext {
        jurisdiction_country: "DE".into(),
        tc_string: policy_string("tcf-no-p3"),
        ..Default::default()
    };
    let (en, nl) = consumer_views("caravan-lgbm", ctx).await;
    insta::assert_snapshot!("contextual_tcf_lgbm_en", en);
    insta::assert_snapshot!("contextual_tcf_lgbm_nl", nl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_lgbm() {
    let (en, nl) = consumer_views(
        "caravan-lgbm",
        pb::RequestContext {
            jurisdiction_country: "DE".into(),
            ..Default::default()
        },
    )
    .await;
    insta::assert_snapshot!("refused_lgbm_en", en);
    insta::assert_snapshot!("refused_lgbm_nl", nl);
}

/// A refused decision has no score: the engineer and support views leave
/// it out rather than show 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_decision_has_no_score_in_any_view() {
    let server = TestServer::start().await;
    let mut request = caravan_request();
    request.context = Some(pb::RequestContext {
        jurisdiction_country: "DE".into(),
        ..Default::default()
    });
    let d = server.score_one(request).await;
    assert_eq!(d.tier, pb::Tier::Refused as i32);
    let mut client =
        pb::explanation_service_client::ExplanationServiceClient::new(server.channel().await);
    for audience in [pb::Audience::Engineer, pb::Audience::Support] {
        let view = client
            .get_explanation(pb::GetExplanationRequest {
                decision_id: d.decision_id.clone(),
                audience: audience as i32,
                language: "en".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .view;
        let score = match view {
            Some(pb::get_explanation_response::View::Engineer(v)) => v.score,
            Some(pb::get_explanation_response::View::Support(v)) => v.score,
            other => panic!("{audience:?}: {other:?}"),
        };
        assert_eq!(score, None, "{audience:?}");
    }
    server.stop().await;
}

/// A minor's ad is decided on the context alone: the support view marks
/// the groups whose features the model saw a substitute for, so that an
/// agent does not read them as the person's profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_support_view_marks_what_was_masked() {
    let server = TestServer::start().await;
    let mut request = caravan_request();
    request.explain = Some(pb::ExplainOptions {
        mode: pb::ExplainMode::Inline as i32,
        method: 0,
    });
    request.context = Some(pb::RequestContext {
        jurisdiction_country: "US".into(),
        age_status: pb::AgeStatus::Minor as i32,
        ..Default::default()
    });
    let d = server.score_one(request).await;
    let masked = &d.provenance.as_ref().unwrap().masked_features;
    assert!(!masked.is_empty());
    let view =
        pb::explanation_service_client::ExplanationServiceClient::new(server.channel().await)
            .get_explanation(pb::GetExplanationRequest {
                decision_id: d.decision_id.clone(),
                audience: pb::Audience::Support as i32,
                language: "en".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .view;
    let Some(pb::get_explanation_response::View::Support(v)) = view else {
        panic!("{view:?}");
    };
    for g in &v.groups {
        let want: Vec<_> = g.features.iter().filter(|f| masked.contains(f)).collect();
        assert_eq!(
            g.masked_features.iter().collect::<Vec<_>>(),
            want,
            "{}",
            g.name
        );
    }
    assert!(v.groups.iter().any(|g| !g.masked_features.is_empty()));
    server.stop().await;
}

static PACKAGE: LazyLock<ModelPackage> = LazyLock::new(|| {
    runtime::init(&ort_lib()).unwrap();
    ModelPackage::load(&repo_root().join("models/caravan-lgbm/1.0.0"), 1).unwrap()
});

fn decision(contributions: &[f64], masked: &[bool], values: &[f64], tier: Tier) -> DecisionRow {
    let p = &*PACKAGE;
    let columns = p.schema.columns();
    DecisionRow {
        decision_id: "01a22580-0000-7000-8000-000000000000".into(),
        decided_at_ms: 1_795_000_000_000,
        request_id: "".into(),
        model_name: p.identity.name.clone(),
        model_version: p.identity.version.clone(),
        model_sha256: p.identity.sha256.clone(),
        subject_ref: Some("s".into()),
        placement_id: String::new(),
        campaign_id: "c".into(),
        ad_id: String::new(),
        tier,
        score: Some(0.1),
        provenance: std::sync::Arc::new(Provenance {
            jurisdiction: "US".into(),
            regime: Regime::Us,
            tier,
            purposes: vec![],
            rules: vec![],
            masked_features: columns
                .iter()
                .zip(masked)
                .filter(|(_, m)| **m)
                .map(|(c, _)| c.name.clone())
                .collect(),
            ledger_records: vec![],
            signals_hash: String::new(),
            policy_version: String::new(),
            policy_hash: String::new(),
            model_sha256: p.sha256.clone(),
            subject_ref: Some("s".into()),
            tc_last_updated_ms: None,
        }),
        explanation: Some(Explanation {
            method: "tree_shap_path_dependent".into(),
            method_version: String::new(),
            output_space: "log_odds".into(),
            base_value: 0.0,
            margin: contributions.iter().sum(),
            base_score: 0.5,
            residual: 0.0,
            ort_difference: 0.0,
            sample_pairs: 0,
            features: columns
                .iter()
                .enumerate()
                .map(|(i, c)| ExplainedFeature {
                    name: c.name.clone(),
                    value: values[i],
                    contribution: contributions[i],
                    standard_error: 0.0,
                    masked: masked[i],
                })
                .collect(),
            groups: vec![],
        }),
        inputs: None,
        explain_method: None,
        retain_until_ms: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn reasons_follow_the_attributions_and_reveal_nothing_they_must_not(
        contributions in prop::collection::vec(-1.0f64..1.0, 78),
        masked in prop::collection::vec(prop::bool::weighted(0.2), 78),
        background_row in 0usize..256,
        special in prop::collection::vec(prop::bool::weighted(0.15), 78),
        min_segment in prop::sample::select(vec![0u32, 50, 500, 2000]),
        contextual in any::<bool>(),
    ) {
        let p = &*PACKAGE;
        let values: Vec<f64> = p.background.row(background_row % p.background.len()).iter().map(|v| f64::from(*v)).collect();
        // Declare random features special-category proxies: they must vanish.
        let mut manifest = p.manifest.clone();
        for (f, s) in manifest.features.iter_mut().zip(&special) {
            if *s { f.proxy_for = Some(DataCategory::Religion); }
        }
        let tier = if contextual { Tier::Contextual } else { Tier::Personalised };
        let row = decision(&contributions, &masked, &values, tier);
        let facts = ModelFacts { manifest: &manifest, background: &p.background };
        for language in [Language::En, Language::Nl] {
            let view = why::consumer(&row, Some(facts), language, min_segment);
            prop_assert!((3..=5).contains(&view.reasons.len()), "{} reasons", view.reasons.len());
            // Several features may share a template; a reason stands for all
            // of them that may be told, and ranks by what they did together.
            let columns = p.schema.columns();
            let opening = match language {
                Language::En => "You may be seeing this ad because of",
                Language::Nl => "Je ziet deze advertentie mogelijk vanwege",
            };
            let sentence_of = |f: &candor::models::manifest::FeatureSpec| f.reason.get(language.tag()).map(|t| format!("{opening} {t}."));
            let push = |sentence: &str| -> Option<f64> {
                let members: Vec<f64> = manifest
                    .features
                    .iter()
                    .filter(|f| sentence_of(f).is_some_and(|t| sentence == t))
                    .filter(|f| !f.is_special_category())
                    .map(|f| columns.iter().position(|c| c.name == f.name).unwrap())
                    .filter(|&column| !masked[column])
                    .map(|column| contributions[column])
                    .collect();
                (!members.is_empty()).then(|| members.iter().sum())
            };
            let told: Vec<f64> = view.reasons.iter().filter_map(|r| push(&r.text)).collect();
            for (reason, push) in view.reasons.iter().filter_map(|r| Some((r, push(&r.text)?))) {
                prop_assert!(push > 0.0, "{:?} stands for features that together lowered the score ({push})", reason.text);
            }
            prop_assert!(told.windows(2).all(|w| w[0] >= w[1]), "reasons out of rank: {told:?}");
            if min_segment == 0 {
                // Nothing is too rare to tell: the told sentences are the
                // strongest of all.
                let mut all: Vec<f64> = manifest
                    .features
                    .iter()
                    .filter_map(sentence_of)
                    .collect::<std::collections::BTreeSet<_>>()
                    .iter()
                    .filter_map(|t| push(t))
                    .filter(|&s| s > 0.0)
                    .collect();
                all.sort_by(|a, b| b.total_cmp(a));
                prop_assert_eq!(&told[..], &all[..told.len()]);
            }
            for word in ["0.", "-0.", "weight", "religi", "godsdienst"] {
                prop_assert!(!view.reasons.iter().any(|r| r.text.contains(word)), "a reason mentions {word:?}");
            }
        }
    }
}

/// When what decided is something the view may not name (a sensitive
/// feature of a model whose purpose allows it), the view says that other
/// information counted, in its rank, instead of crediting what it may name.
#[test]
fn a_decision_made_by_withheld_information_says_so_without_naming_it() {
    let p = &*PACKAGE;
    let columns = p.schema.columns();
    let mut contributions = vec![-0.01; columns.len()];
    contributions[0] = 1.35;
    contributions[1] = 0.2;
    let values: Vec<f64> = p.background.row(0).iter().map(|v| f64::from(*v)).collect();
    let mut manifest = p.manifest.clone();
    let hidden = manifest
        .features
        .iter_mut()
        .find(|f| f.name == columns[0].name)
        .unwrap();
    hidden.proxy_for = Some(DataCategory::Health);
    let hidden_reason = hidden.reason["en"].clone();
    let row = decision(
        &contributions,
        &vec![false; columns.len()],
        &values,
        Tier::Personalised,
    );
    let facts = ModelFacts {
        manifest: &manifest,
        background: &p.background,
    };
    let view = why::consumer(&row, Some(facts), Language::En, 0);
    let texts: Vec<&str> = view.reasons.iter().map(|r| r.text.as_str()).collect();
    assert!(
        texts[0].starts_with("Other information about you also made this ad more likely"),
        "{texts:?}"
    );
    assert!(
        texts[1].contains(&*manifest.features[1].reason["en"]),
        "{texts:?}"
    );
    assert!(
        !texts.iter().any(|t| t.contains(&*hidden_reason)),
        "{texts:?}"
    );
    assert_eq!(
        view.main_parameters[0],
        "other information about you that we do not describe here"
    );
    assert!((3..=5).contains(&texts.len()), "{texts:?}");
}

/// The access export lists the features the policy kept from the model but,
/// like the consumer view, never names a sensitive one: it counts them.
#[test]
fn an_export_counts_masked_sensitive_features_without_naming_them() {
    let mut manifest = PACKAGE.manifest.clone();
    manifest.features[0].proxy_for = Some(DataCategory::Religion);
    let masked = vec![
        manifest.features[0].name.clone(),
        manifest.features[1].name.clone(),
    ];
    let (named, unnamed) = why::masked_for_person(&masked, Some(&manifest));
    assert_eq!(named, vec![manifest.features[1].name.clone()]);
    assert_eq!(unnamed, 1);
    // Without the model's manifest no name can be judged.
    assert_eq!(why::masked_for_person(&masked, None), (vec![], 2));
}

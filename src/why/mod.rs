//! "Why am I seeing this ad?": a recorded decision rendered for the person it
//! concerns, for customer support and for ML engineers.
//!
//! The consumer view follows the layered "About this ad" pages and DSA
//! Art. 26: whether the ad was profiling-based or contextual, the main
//! parameters, three to five second-person reasons hedged with "may",
//! rendered from the manifest's per-feature templates, a consent line and
//! the controls. It never shows a weight, never names a special-category or
//! sensitive feature, never uses a feature the policy masked, and never a
//! reason that describes fewer than `min_segment` people.

mod text;

use crate::{
    consent::{
        policy::{FeatureUse, Provenance, PurposeStatus, Regime, Tier},
        purposes,
    },
    decisions::{DecisionRow, ExplainedGroup},
    models::{
        ModelPackage,
        manifest::{FeatureSpec, FeatureType, Manifest, ReasonGroup},
        package::Rows,
    },
};
pub use text::{Language, based_on, special_category_term};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Consumer,
    Support,
    Engineer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub group: ReasonGroup,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub kind: &'static str,
    pub label: String,
    pub how: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerView {
    pub language: Language,
    pub headline: String,
    /// "profiling", "contextual" or "none".
    pub basis: &'static str,
    pub main_parameters: Vec<String>,
    pub reasons: Vec<Reason>,
    pub consent_line: String,
    pub controls: Vec<Control>,
}

/// A feature may become a consumer reason only if the person's own value
/// reached the model, it is not sensitive, and it does not single them out.
fn may_be_told(spec: &FeatureSpec, masked: bool) -> bool {
    !masked && !is_sensitive(spec) && spec.reason_group.is_some()
}

/// Never named to the person, whatever the purpose: special-category data
/// and precise geolocation, and their proxies.
fn is_sensitive(spec: &FeatureSpec) -> bool {
    spec.is_special_category() || spec.is_precise_geolocation()
}

/// The features the policy kept from a decision's model, as the person may
/// read them in their access export: the names that are not sensitive, and
/// how many others were kept back unnamed. Without the model's manifest no
/// name can be judged, so none is given.
pub fn masked_for_person(masked: &[String], manifest: Option<&Manifest>) -> (Vec<String>, usize) {
    let nameable = |name: &String| {
        manifest
            .and_then(|m| m.features.iter().find(|f| &f.name == name))
            .is_some_and(|spec| !is_sensitive(spec))
    };
    let named: Vec<String> = masked.iter().filter(|n| nameable(n)).cloned().collect();
    let unnamed = masked.len() - named.len();
    (named, unnamed)
}

/// What the consumer view needs of the model that made a decision: its
/// manifest (reason templates, categories) and its background sample (how
/// many people share a value).
#[derive(Debug, Clone, Copy)]
pub struct ModelFacts<'a> {
    pub manifest: &'a Manifest,
    pub background: &'a Rows,
}

impl<'a> ModelFacts<'a> {
    pub fn of(package: &'a ModelPackage) -> Self {
        Self {
            manifest: &package.manifest,
            background: &package.background,
        }
    }

    /// How many people in the model's population belong to the segment a
    /// reason about feature `spec` (column `column`) describes for the
    /// person's value: for a category (or a missing value), those with the
    /// same one; for a quantity, those whose value lies between the same two
    /// deciles, or equals it when more share it exactly (a reason names the
    /// feature, never the value, so it describes the person's tenth of the
    /// population at the finest). Counted in the background sample and
    /// scaled to the training population.
    fn segment_size(&self, spec: &FeatureSpec, column: usize, value: f64) -> f64 {
        let rows = self.background;
        let values: Vec<f64> = (0..rows.len())
            .map(|r| f64::from(rows.row(r)[column]))
            .collect();
        let shared = if value.is_nan() {
            values.iter().filter(|v| v.is_nan()).count()
        } else {
            let same = values.iter().filter(|&&v| v == value).count();
            let mut known: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
            if spec.kind == FeatureType::Categorical || known.is_empty() {
                same
            } else {
                known.sort_by(f64::total_cmp);
                let cut = |q: usize| known[q * (known.len() - 1) / 10];
                let q = (1..=10).find(|&q| value <= cut(q)).unwrap_or(10);
                // Bands are half-open, (low, high], but the first: when most
                // people share the lowest value, as with a rare 0/1 flag, the
                // top band is then the flag's holders, not everyone.
                let (low, high) = (cut(q - 1), cut(q));
                let within = known
                    .iter()
                    .filter(|&&v| (low < v || q == 1 && low <= v) && v <= high)
                    .count();
                same.max(within)
            }
        };
        let population = self
            .manifest
            .training
            .as_ref()
            .and_then(|t| t.train_rows)
            .unwrap_or(values.len() as u64) as f64;
        shared as f64 / values.len().max(1) as f64 * population
    }
}

/// One sentence of the consumer view and the features it stands for.
struct Sentence<'a> {
    text: String,
    /// The group of its strongest push.
    group: ReasonGroup,
    /// What its features did together.
    push: f64,
    strongest: f64,
    /// Those that moved the score: (spec, column, the person's value).
    members: Vec<(&'a FeatureSpec, usize, f64)>,
}

/// Renders the consumer view. `model` describes the model that made the
/// decision when it is still loaded (its manifest holds the templates).
pub fn consumer(
    row: &DecisionRow,
    model: Option<ModelFacts<'_>>,
    language: Language,
    min_segment: u32,
) -> ConsumerView {
    let p = &row.provenance;
    let manifest = model.map(|m| m.manifest);
    let spec = |name: &str| manifest.and_then(|m| m.features.iter().find(|f| f.name == name));
    let mut reasons: Vec<Reason> = Vec::new();
    // Influence per category the view may name, and `None` for what it may
    // not: left out, the main parameters would credit whatever may be
    // named with a decision that hidden information made.
    let mut categories: Vec<(Option<String>, f64)> = Vec::new();
    let mut profiled = false;
    let mut any_push = false;
    if let (Some(explanation), Some(model)) = (&row.explanation, model) {
        // A reason is a sentence, and several features may share one ("the
        // socio-economic profile of your neighbourhood"): it stands for all
        // of them, so it is told only when together they raised the score,
        // and ranks by what they did together. A feature that may not be
        // told (sensitive, or without a template) is weighed on its own; a
        // sentence about fewer than k people is weighed whole.
        let mut sentences: Vec<Sentence> = Vec::new();
        let mut withheld = 0.0f64;
        for (column, f) in explanation.features.iter().enumerate() {
            let Some(spec) = spec(&f.name) else { continue };
            if f.masked {
                // The model never saw the person's value.
                continue;
            }
            if FeatureUse::of(spec).profile {
                profiled = true;
            }
            // Where the information came from is part of what it is: a
            // person's own income is not their postcode's. Influence adds
            // up under the words the person reads.
            let told = may_be_told(spec, false);
            let named = told.then(|| text::category(language, spec.category, spec.source));
            match categories.iter_mut().find(|(c, _)| *c == named) {
                Some((_, total)) => *total += f.contribution.abs(),
                None => categories.push((named, f.contribution.abs())),
            }
            // A template missing in this language withholds the reason
            // rather than put another language into the view.
            let template = spec.reason.get(language.tag()).filter(|_| told);
            let Some(template) = template else {
                withheld = withheld.max(f.contribution);
                any_push |= f.contribution > 0.0;
                continue;
            };
            let text = text::because(language, template);
            let sentence = match sentences.iter_mut().position(|s| s.text == text) {
                Some(i) => &mut sentences[i],
                None => {
                    sentences.push(Sentence {
                        text,
                        group: spec.reason_group.expect("may_be_told checked it"),
                        push: 0.0,
                        strongest: f64::NEG_INFINITY,
                        members: Vec::new(),
                    });
                    sentences.last_mut().expect("just pushed")
                }
            };
            sentence.push += f.contribution;
            if f.contribution > sentence.strongest {
                sentence.strongest = f.contribution;
                sentence.group = spec.reason_group.expect("may_be_told checked it");
            }
            // A feature that moved the score is part of what the sentence
            // says about the person.
            if f.contribution != 0.0 {
                sentence.members.push((spec, column, f.value));
            }
        }
        sentences.retain(|s| s.push > 0.0);
        // What the view can say made the ad more likely: a sentence whose
        // features together raised the score, or what it withholds.
        any_push |= !sentences.is_empty();
        sentences.sort_by(|a, b| b.push.total_cmp(&a.push));
        let mut told: Vec<f64> = Vec::new();
        // In rank order, until three are told: a sentence below them could
        // not outrank them as the withheld reason either.
        for sentence in sentences {
            if told.len() == 3 {
                break;
            }
            let singles_out = sentence.members.iter().any(|&(spec, column, value)| {
                model.segment_size(spec, column, value) < f64::from(min_segment)
            });
            if singles_out {
                withheld = withheld.max(sentence.push);
            } else {
                told.push(sentence.push);
                reasons.push(Reason {
                    group: sentence.group,
                    text: sentence.text,
                });
            }
        }
        // The withheld reason takes its rank among the three told ones.
        if withheld > 0.0 {
            let rank = told.iter().take_while(|&&c| c >= withheld).count();
            if rank < 3 {
                reasons.insert(
                    rank,
                    Reason {
                        group: ReasonGroup::YourInfo,
                        text: text::withheld(language),
                    },
                );
                reasons.truncate(3);
            }
        }
        if profiled && !any_push {
            reasons.push(Reason {
                group: ReasonGroup::YourInfo,
                text: text::profile_against(language),
            });
        }
    } else if model.is_none() && row.tier != Tier::Refused {
        reasons.push(Reason {
            group: ReasonGroup::Context,
            text: text::model_retired(language),
        });
    }
    categories.sort_by(|a, b| b.1.total_cmp(&a.1));
    let basis = match row.tier {
        Tier::Refused => "none",
        // Without the attributions (or the retired model's manifest to read
        // them), the tier is the evidence.
        _ if profiled
            || ((model.is_none() || row.explanation.is_none())
                && row.tier == Tier::Personalised) =>
        {
            "profiling"
        }
        _ => "contextual",
    };
    if row.tier != Tier::Refused {
        // Without its detailed reasons, a profiling-based decision still
        // says that the person's profile was used.
        if basis == "profiling" && (row.explanation.is_none() || model.is_none()) {
            reasons.push(Reason {
                group: ReasonGroup::YourInfo,
                text: text::profiled(language),
            });
        }
        if !row.campaign_id.is_empty() || manifest.is_some() {
            reasons.push(Reason {
                group: ReasonGroup::AdvertiserChoice,
                text: text::advertiser(language, &row.campaign_id),
            });
        }
        reasons.push(Reason {
            group: ReasonGroup::Context,
            text: text::context(language, &row.placement_id),
        });
        if basis == "contextual" {
            reasons.push(Reason {
                group: ReasonGroup::Context,
                text: text::not_profiled(language),
            });
        }
    }
    reasons.truncate(5);
    ConsumerView {
        language,
        headline: text::headline(language, row.tier),
        basis,
        main_parameters: if row.tier == Tier::Refused {
            Vec::new()
        } else {
            categories
                .into_iter()
                .take(4)
                .map(|(c, _)| c.unwrap_or_else(|| text::withheld_parameter(language)))
                .chain(std::iter::once(text::placement_parameter(language)))
                .collect()
        },
        reasons,
        consent_line: consent_line(language, p, row.decided_at_ms),
        controls: controls(language, p, basis == "profiling"),
    }
}

/// What the person chose and what else kept information out, from the
/// rules that fired and the purposes' outcomes: when the ledger decided a
/// choice, the day it was recorded (a record id is a UUIDv7, which carries
/// it), and when a TC string did, the day it was last updated; then the day
/// the choices were checked.
fn consent_line(language: Language, p: &Provenance, decided_at_ms: i64) -> String {
    use crate::consent::policy::{PurposeOutcome, PurposeStatus};
    use text::{ConsentAddendum as Addendum, ConsentCase as Case};
    let fired = |rule: &str| p.fired(rule);
    let outcomes = |pick: &dyn Fn(&PurposeOutcome) -> bool| -> Vec<&PurposeOutcome> {
        p.purposes.iter().filter(|o| pick(o)).collect()
    };
    // The latest record among the outcomes that say what the line says.
    let recorded_on = |said: &[&PurposeOutcome]| {
        said.iter()
            .filter_map(|o| o.record.as_ref())
            .filter_map(|r| uuid::Uuid::parse_str(&r.record_id).ok()?.get_timestamp())
            .map(|t| t.to_unix())
            .max()
            .map(|(secs, nanos)| {
                text::date(language, secs as i64 * 1000 + i64::from(nanos / 1_000_000))
            })
    };
    let personalised = |o: &PurposeOutcome| [1, 3, 4].contains(&o.tcf_id);
    let (case, said) = if fired("gdpr.art21_objection") {
        (
            Case::Objected,
            outcomes(&|o| o.status == PurposeStatus::Objected && o.tcf_id == 0),
        )
    } else {
        match p.regime {
            Regime::Unknown => (Case::Unknown, Vec::new()),
            Regime::Tcf if fired("tcf.no_signal") => (Case::TcfNoSignal, Vec::new()),
            Regime::Tcf if fired("tcf.basic_ads_not_granted") => (Case::TcfNoAds, Vec::new()),
            Regime::Tcf => {
                let with = |status| outcomes(&|o| personalised(o) && o.status == status);
                if with(PurposeStatus::Granted).len() == 3 {
                    (Case::TcfAgreed, with(PurposeStatus::Granted))
                } else if !with(PurposeStatus::Objected).is_empty() {
                    (Case::TcfObjected, with(PurposeStatus::Objected))
                } else if !with(PurposeStatus::Withdrawn).is_empty() {
                    (Case::TcfWithdrawn, with(PurposeStatus::Withdrawn))
                } else {
                    (Case::TcfNotAgreed, Vec::new())
                }
            }
            Regime::Us => {
                let opted_out = outcomes(&|o| o.status == PurposeStatus::OptedOut);
                let off = outcomes(&|o| {
                    personalised(o)
                        && matches!(o.status, PurposeStatus::Withdrawn | PurposeStatus::Objected)
                });
                if fired("ledger.personalised_ads_withdrawn") && !off.is_empty() {
                    (Case::UsPersonalisedOff, off)
                } else if opted_out.is_empty() {
                    (Case::UsNotOptedOut, Vec::new())
                } else {
                    (Case::UsOptedOut, opted_out)
                }
            }
        }
    };
    // Choices a TC string carried were made the day it was last updated.
    let on = recorded_on(&said).or_else(|| {
        (p.regime == Regime::Tcf && said.iter().all(|o| o.record.is_none()))
            .then_some(p.tc_last_updated_ms)
            .flatten()
            .map(|ms| text::date(language, ms))
    });
    let mut line = text::consent(language, case, &p.jurisdiction, on.as_deref());
    if p.tier != Tier::Refused {
        let addenda = [
            (
                Addendum::Location,
                fired("tcf.special_feature_1_not_opted_in")
                    || fired("us.usnat_sensitive_data_no_consent")
                    || fired("us.usca_sensitive_data_opt_out"),
            ),
            (Addendum::Minor, p.protects_a_child()),
            (
                Addendum::SiteChoices,
                fired("consent_mode.ad_personalization_denied")
                    || fired("consent_mode.ad_user_data_denied"),
            ),
            (
                Addendum::SiteTerms,
                fired("us.mspa_service_provider_mode") || fired("us.opt_out_notice_missing"),
            ),
        ];
        for (addendum, applies) in addenda {
            if applies {
                line.push(' ');
                line.push_str(text::consent_addendum(language, addendum));
            }
        }
    }
    line.push(' ');
    line.push_str(&text::checked(
        language,
        &text::date(language, decided_at_ms),
    ));
    line
}

/// What the person can do about this decision, as their choices then
/// stood: no offer to turn off what was off, and an objection they made
/// (to direct marketing, or to one purpose such as profiling) is theirs to
/// withdraw; one to direct marketing is not theirs to make again.
/// `profiled`: information about the person decided the ad.
fn controls(language: Language, p: &Provenance, profiled: bool) -> Vec<Control> {
    let status = |id: u8| p.purposes.iter().find(|o| o.tcf_id == id).map(|o| o.status);
    let allowed = |id: u8| {
        matches!(
            status(id),
            Some(PurposeStatus::Granted | PurposeStatus::NotRequired)
        )
    };
    // The objection the control is about: to direct marketing (Art. 21(2)).
    let objected = status(purposes::DIRECT_MARKETING) == Some(PurposeStatus::Objected);
    let opted_out_of_sale = p.rules.iter().any(|r| {
        [
            "us.gpc_opt_out",
            "us.sale_sharing_targeting_opt_out",
            "ledger.sale_sharing_opt_out",
        ]
        .contains(&r.as_str())
    }) || status(purposes::SALE_OR_SHARING)
        == Some(PurposeStatus::OptedOut);
    let mut kinds = vec![("change_consent", "ConsentService.RecordConsent")];
    // Offered where the ad was personalised or information about the person
    // still decided it (a contextual tier under GPC keeps first-party
    // data), or a consent to it stands to be withdrawn: not where the
    // person's signals kept it contextual with nothing to withdraw, nor for
    // a minor, whose ads are never personalised (a consent in their signals
    // is changed through `change_consent`), nor after an objection to
    // direct marketing, which turned every ad off.
    let consented = [3, 4]
        .into_iter()
        .any(|id| status(id) == Some(PurposeStatus::Granted));
    let personalised = p.tier == Tier::Personalised && (allowed(3) || allowed(4));
    if (personalised || consented || profiled) && !objected && !p.protects_a_child() {
        kinds.push((
            "opt_out_personalisation",
            "ConsentService.WithdrawConsent (purposes 3 and 4)",
        ));
    }
    // A minor's data is never sold or shared without an opt-in
    // (CCPA § 1798.120(c)): there is nothing to opt out of.
    if p.regime == Regime::Us && !opted_out_of_sale && !p.protects_a_child() {
        kinds.push((
            "opt_out_sale_sharing",
            "Global Privacy Control, or ConsentService.WithdrawConsent",
        ));
    }
    kinds.extend([
        ("access_data", "ExplanationService.ExportSubjectData"),
        ("delete_data", "ConsentService.EraseSubject"),
    ]);
    if !objected {
        kinds.push(("object", "ConsentService.WithdrawConsent (kind OBJECTION)"));
    }
    if p.purposes
        .iter()
        .any(|o| o.status == PurposeStatus::Objected)
    {
        kinds.push((
            "withdraw_objection",
            "ConsentService.RecordConsent, with the person's own token",
        ));
    }
    kinds
        .into_iter()
        .map(|(kind, how)| Control {
            kind,
            label: text::control(language, kind),
            how,
        })
        .collect()
}

/// The tier in plain words for support staff, with the consumer view's
/// `basis`: a contextual tier masks only what was not allowed, so
/// information about the person may still have decided the ad.
pub fn tier_explained(tier: Tier, basis: &str, masked: usize) -> String {
    let features = |n: usize| if n == 1 { "feature" } else { "features" };
    match (tier, basis) {
        (Tier::Refused, _) => {
            "Refused: the person's choices or the rules allowed no ad to be chosen with this model; it did not run, and there is no score.".into()
        }
        (Tier::Personalised, _) => {
            "Personalised: every feature the model reads was used, as the person's choices allowed.".into()
        }
        (Tier::Contextual, "profiling") => format!(
            "Contextual tier, yet profiling-based: {masked} {} the person's choices or the rules did not allow were replaced by population averages (provenance.masked_features), and other information about the person still counted.",
            features(masked)
        ),
        (Tier::Contextual, _) => format!(
            "Contextual: the person's profile was not used; {masked} {} were replaced by population averages (provenance.masked_features), and only the context counted.",
            features(masked)
        ),
    }
}

/// A group's contribution with the manifest's description of it.
#[derive(Debug, Clone, PartialEq)]
pub struct DescribedGroup {
    pub group: ExplainedGroup,
    pub description: String,
    /// Its features the model saw a substitute for.
    pub masked: Vec<String>,
    /// Each of its features' own contribution, in the order of
    /// `group.features`: a group may sum against one of its features (a
    /// consumer reason told for that feature alone).
    pub contributions: Vec<f64>,
}

/// The grouped attributions, largest |contribution| first, described by the
/// manifest (a group's description, or a lone feature's).
pub fn grouped(row: &DecisionRow, manifest: Option<&Manifest>) -> Vec<DescribedGroup> {
    let Some(explanation) = &row.explanation else {
        return Vec::new();
    };
    let mut groups: Vec<DescribedGroup> = explanation
        .groups
        .iter()
        .map(|g| DescribedGroup {
            description: manifest
                .and_then(|m| {
                    m.groups
                        .iter()
                        .find(|mg| mg.name == g.name)
                        .map(|mg| mg.description.clone())
                        .or_else(|| {
                            m.features
                                .iter()
                                .find(|f| f.name == g.name)
                                .map(|f| f.description.clone())
                        })
                })
                .unwrap_or_default(),
            masked: g
                .features
                .iter()
                .filter(|name| {
                    explanation
                        .features
                        .iter()
                        .any(|f| f.masked && &f.name == *name)
                })
                .cloned()
                .collect(),
            contributions: g
                .features
                .iter()
                .map(|name| {
                    explanation
                        .features
                        .iter()
                        .find(|f| &f.name == name)
                        .map_or(0.0, |f| f.contribution)
                })
                .collect(),
            group: g.clone(),
        })
        .collect();
    groups.sort_by(|a, b| {
        b.group
            .contribution
            .abs()
            .total_cmp(&a.group.contribution.abs())
    });
    groups
}

/// The procedure and the principles applied to a person's data, in plain
/// language: what an access request must explain (GDPR Art. 15(1)(h), CJEU
/// C-203/22), without the model's internals. On an export page that
/// `more_follows`, it also says that this is only part of their data.
pub fn procedure(language: Language, more_follows: bool) -> String {
    let procedure = text::procedure(language);
    if more_follows {
        format!("{procedure} {}", text::more_follows(language))
    } else {
        procedure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::manifest::{DataCategory, DataSource};

    const MANIFEST: &str = crate::models::manifest::test_manifest!(
        r#"[training]
dataset = "t"
date = "2026-01-01"
script = "s.py"
train_rows = 1000
[[features]]
name = "spend"
position = 0
type = "float"
missing_allowed = true
description = "spend"
category = "first_party_purchase_history"
source = "first_party"
[[features]]
name = "colour"
position = 1
type = "categorical"
categories = [1, 2, 3]
description = "colour"
category = "device"
source = "first_party"
"#
    );

    /// The controls follow the person's choices as they stood: nothing to
    /// turn off that was off, and an objection to withdraw, not to make.
    #[test]
    fn the_controls_follow_the_persons_choices() {
        use crate::consent::policy::{PurposeOutcome, Source};
        let provenance = |statuses: [PurposeStatus; 3]| Provenance {
            jurisdiction: "DE".into(),
            regime: Regime::Tcf,
            tier: Tier::Personalised,
            purposes: [purposes::DIRECT_MARKETING, 3, 4]
                .into_iter()
                .zip(statuses)
                .map(|(tcf_id, status)| PurposeOutcome {
                    tcf_id,
                    dpv: String::new(),
                    status,
                    legal_basis: None,
                    source: Source::Ledger,
                    record: None,
                })
                .collect(),
            rules: vec![],
            masked_features: vec![],
            ledger_records: vec![],
            signals_hash: String::new(),
            policy_version: String::new(),
            policy_hash: String::new(),
            model_sha256: String::new(),
            subject_ref: None,
            tc_last_updated_ms: None,
        };
        let kinds_if = |p: &Provenance, profiled: bool| {
            controls(Language::En, p, profiled)
                .into_iter()
                .map(|c| c.kind)
                .collect::<Vec<_>>()
        };
        let kinds = |p: &Provenance| kinds_if(p, false);
        let granted = kinds(&provenance([PurposeStatus::Granted; 3]));
        assert!(granted.contains(&"opt_out_personalisation") && granted.contains(&"object"));
        let objected = kinds(&provenance([PurposeStatus::Objected; 3]));
        assert!(
            !objected.contains(&"opt_out_personalisation"),
            "{objected:?}"
        );
        assert!(!objected.contains(&"object"), "{objected:?}");
        assert!(objected.contains(&"withdraw_objection"), "{objected:?}");
        // An objection to profiling alone leaves direct marketing to
        // object to.
        use PurposeStatus::{Granted, Objected, Withdrawn};
        let profiling = kinds(&provenance([Granted, Objected, Objected]));
        assert!(profiling.contains(&"object"), "{profiling:?}");
        // ... and is the person's to withdraw.
        assert!(profiling.contains(&"withdraw_objection"), "{profiling:?}");
        assert!(!granted.contains(&"withdraw_objection"), "{granted:?}");
        // An objection to direct marketing alone turned personalised ads
        // off too.
        let marketing = kinds(&provenance([Objected, Granted, Granted]));
        assert!(
            !marketing.contains(&"opt_out_personalisation"),
            "{marketing:?}"
        );
        // In the US, sale or sharing is offered until the person opts out,
        // whatever their choice on personalised ads.
        let mut us = provenance([Granted, Withdrawn, Withdrawn]);
        us.regime = Regime::Us;
        assert!(kinds(&us).contains(&"opt_out_sale_sharing"));
        us.rules.push("us.gpc_opt_out".into());
        assert!(!kinds(&us).contains(&"opt_out_sale_sharing"));
        // Under GPC the tier is contextual, yet first-party data still
        // decided the ad: turning that off is offered.
        let mut gpc = provenance([PurposeStatus::NotRequired; 3]);
        gpc.regime = Regime::Us;
        gpc.tier = Tier::Contextual;
        gpc.rules.push("us.gpc_opt_out".into());
        assert!(!kinds(&gpc).contains(&"opt_out_personalisation"));
        assert!(kinds_if(&gpc, true).contains(&"opt_out_personalisation"));
        // A minor's ads are contextual whatever the signals allow: there is
        // no personalisation to turn off, even where their signals consent
        // to it.
        let mut minor = provenance([PurposeStatus::NotRequired; 3]);
        minor.regime = Regime::Us;
        minor.tier = Tier::Contextual;
        assert!(!kinds(&minor).contains(&"opt_out_personalisation"));
        // ... nor any sale or sharing of their data to opt out of.
        minor.rules.push("dsa.art28_minor".into());
        assert!(!kinds_if(&minor, true).contains(&"opt_out_personalisation"));
        assert!(!kinds(&minor).contains(&"opt_out_sale_sharing"));
        for rule in crate::consent::policy::CHILD_RULES {
            let mut consented = provenance([Granted; 3]);
            consented.tier = Tier::Contextual;
            consented.rules.push(rule.into());
            let offered = kinds(&consented);
            assert!(!offered.contains(&"opt_out_personalisation"), "{offered:?}");
            assert!(offered.contains(&"change_consent"), "{offered:?}");
        }
        assert_eq!(
            text::control(Language::Nl, "withdraw_objection"),
            "Je bezwaar intrekken"
        );
    }

    /// A person's own income is not their postcode's: the main parameters
    /// say where the information came from.
    #[test]
    fn a_parameter_says_whose_information_it_was() {
        use text::category;
        for (c, own, area) in [
            (
                DataCategory::Income,
                "your income",
                "income statistics for your postcode area",
            ),
            (
                DataCategory::Occupation,
                "your occupation",
                "occupation statistics for your postcode area",
            ),
        ] {
            assert_eq!(category(Language::En, c, DataSource::FirstParty), own);
            assert_eq!(
                category(Language::En, c, DataSource::Inferred),
                format!("an estimate of {own}")
            );
            assert_eq!(
                category(Language::En, c, DataSource::ZipCodeAggregate),
                area
            );
        }
        assert_eq!(
            category(Language::Nl, DataCategory::Income, DataSource::FirstParty),
            "je inkomen"
        );
    }

    /// A feature that stands in for a precise location is kept back as one:
    /// neither a reason nor a name in the access export.
    #[test]
    fn a_proxy_for_a_precise_location_is_never_named() {
        let mut manifest = Manifest::from_toml(MANIFEST).unwrap();
        manifest.features[1].reason_group = Some(ReasonGroup::Context);
        let named = |m: &Manifest| masked_for_person(&["colour".into()], Some(m));
        assert_eq!(named(&manifest), (vec!["colour".to_owned()], 0));
        assert!(may_be_told(&manifest.features[1], false));
        manifest.features[1].proxy_for = Some(DataCategory::PreciseGeolocation);
        assert!(!may_be_told(&manifest.features[1], false));
        assert_eq!(named(&manifest), (vec![], 1));
    }

    #[test]
    fn a_quantity_is_told_for_the_tenth_of_people_it_places_the_person_in() {
        let manifest = Manifest::from_toml(MANIFEST).unwrap();
        // 100 people: distinct spends 0..99 (one missing), colours 1 x 97, 2 x 3.
        let mut values = Vec::new();
        for i in 0..100 {
            let spend = if i == 99 { f32::NAN } else { i as f32 };
            values.extend([spend, if i < 97 { 1.0 } else { 2.0 }]);
        }
        let background = Rows { width: 2, values };
        let facts = ModelFacts {
            manifest: &manifest,
            background: &background,
        };
        let size = |feature: usize, value: f64| {
            facts.segment_size(&manifest.features[feature], feature, value)
        };
        // No one else spends exactly 42.5, yet a tenth of people spend about as much.
        let tenth = size(0, 42.5);
        assert!((90.0..=130.0).contains(&tenth), "{tenth}");
        // Beyond everyone in the sample: still the top tenth.
        assert!(size(0, 1e6) >= 90.0);
        assert!(size(0, -5.0) >= 90.0);
        // A missing value: those with a missing value (1 in 100 = 10 of 1000).
        assert_eq!(size(0, f64::NAN), 10.0);
        // A category is its own segment, however rare.
        assert_eq!(size(1, 2.0), 30.0);
        assert_eq!(size(1, 3.0), 0.0);
        assert_eq!(size(1, 1.0), 970.0);
    }

    /// A rare 0/1 flag declared as a number singles out its few holders,
    /// as it would declared as a category.
    #[test]
    fn a_rare_flag_is_as_small_a_segment_as_its_holders() {
        let manifest = Manifest::from_toml(MANIFEST).unwrap();
        // 100 people: 95 without the flag, 5 with it.
        let values = (0..100)
            .flat_map(|i| [if i < 95 { 0.0 } else { 1.0 }, 1.0])
            .collect();
        let background = Rows { width: 2, values };
        let facts = ModelFacts {
            manifest: &manifest,
            background: &background,
        };
        let size = |value: f64| facts.segment_size(&manifest.features[0], 0, value);
        assert_eq!(size(1.0), 50.0);
        assert_eq!(size(0.0), 950.0);
    }

    /// The consent line says what the person chose, when the ledger
    /// recorded it, and what else kept information out: never "did not
    /// agree" for someone who agreed, nor a place that is not one.
    #[test]
    fn the_consent_line_says_what_decided_and_when_it_was_recorded() {
        use crate::consent::{
            ledger::LedgerRef,
            policy::{PurposeOutcome, PurposeStatus, Source},
        };
        // 2026-03-01T00:00:00Z as a UUIDv7 record id.
        let march = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            1_772_323_200,
            0,
        ))
        .to_string();
        let outcome = |tcf_id: u8, status: PurposeStatus, recorded: bool| PurposeOutcome {
            tcf_id,
            dpv: String::new(),
            status,
            legal_basis: None,
            source: if recorded {
                Source::Ledger
            } else {
                Source::TcString
            },
            record: recorded.then(|| LedgerRef {
                seq: 1,
                record_id: march.clone(),
                hash: String::new(),
            }),
        };
        let line = |regime: Regime, tier: Tier, purposes: Vec<PurposeOutcome>, rules: &[&str]| {
            let mut row = crate::decisions::sample_row("d", Some("s"));
            let p = std::sync::Arc::make_mut(&mut row.provenance);
            (p.regime, p.tier, p.purposes) = (regime, tier, purposes);
            p.jurisdiction = if regime == Regime::Unknown { "" } else { "NL" }.into();
            p.rules = rules.iter().map(|r| (*r).to_owned()).collect();
            row.tier = tier;
            let en = consumer(&row, None, Language::En, 10).consent_line;
            let nl = consumer(&row, None, Language::Nl, 10).consent_line;
            assert!(!en.contains('?') && !nl.contains('?'), "{en} / {nl}");
            (en, nl)
        };
        use PurposeStatus::*;
        let agreed = |geo: bool| {
            let mut purposes: Vec<_> = [1, 2, 3, 4].map(|i| outcome(i, Granted, false)).into();
            purposes[3] = outcome(4, Granted, true);
            let rules: &[&str] = if geo {
                &["tcf.special_feature_1_not_opted_in"]
            } else {
                &[]
            };
            line(
                Regime::Tcf,
                if geo {
                    Tier::Contextual
                } else {
                    Tier::Personalised
                },
                purposes,
                rules,
            )
        };
        let (en, nl) = agreed(true);
        assert!(
            en.starts_with(
                "You agreed to personalised ads (IAB TCF purposes 1, 3 and 4) in NL on 1 Mar 2026."
            ),
            "{en}"
        );
        assert!(
            en.contains("You did not allow the use of your precise location, so it was not used."),
            "{en}"
        );
        assert!(
            nl.starts_with("Je gaf in NL op 1 mrt 2026 toestemming"),
            "{nl}"
        );
        assert!(!agreed(false).0.contains("location"));

        let (en, _) = line(
            Regime::Tcf,
            Tier::Contextual,
            [1, 3, 4].map(|i| outcome(i, Granted, false)).into(),
            &["dsa.art28_minor"],
        );
        assert!(en.starts_with("You agreed"), "{en}");
        assert!(
            en.contains("Because you are a minor, your profile was not used."),
            "{en}"
        );

        let (en, _) = line(
            Regime::Tcf,
            Tier::Contextual,
            vec![
                outcome(1, Granted, false),
                outcome(3, Withdrawn, true),
                outcome(4, Withdrawn, true),
            ],
            &["tcf.personalised_ads_withdrawn"],
        );
        assert!(
            en.starts_with("You withdrew your agreement to personalised ads in NL on 1 Mar 2026"),
            "{en}"
        );

        let (en, nl) = line(
            Regime::Tcf,
            Tier::Refused,
            vec![outcome(0, Objected, true), outcome(1, Granted, false)],
            &["gdpr.art21_objection"],
        );
        assert!(
            en.starts_with(
                "You objected to the use of your data for direct marketing on 1 Mar 2026"
            ),
            "{en}"
        );
        assert!(nl.starts_with("Je maakte op 1 mrt 2026 bezwaar"), "{nl}");

        let (en, _) = line(
            Regime::Unknown,
            Tier::Refused,
            Vec::new(),
            &["jurisdiction.unknown_refuse"],
        );
        assert!(
            en.starts_with("No privacy rules we apply could be confirmed"),
            "{en}"
        );
        let (en, _) = line(Regime::Tcf, Tier::Refused, Vec::new(), &["tcf.no_signal"]);
        assert!(
            en.starts_with("No consent choice of yours for NL reached us"),
            "{en}"
        );
        let (en, _) = line(
            Regime::Us,
            Tier::Contextual,
            vec![outcome(3, OptedOut, true)],
            &["us.sale_sharing_targeting_opt_out"],
        );
        assert!(en.starts_with("You opted out of the sale or sharing of your data or of targeted ads in NL on 1 Mar 2026, so information about you from other sources or other sites was not used."), "{en}");
        let (en, _) = line(
            Regime::Us,
            Tier::Contextual,
            vec![outcome(3, Withdrawn, true), outcome(4, Withdrawn, true)],
            &["ledger.personalised_ads_withdrawn"],
        );
        assert!(
            en.starts_with(
                "You turned off personalised ads in NL on 1 Mar 2026, so your profile was not used."
            ),
            "{en}"
        );
        let (en, _) = line(
            Regime::Us,
            Tier::Contextual,
            vec![outcome(3, NotRequired, false)],
            &["us.mspa_service_provider_mode"],
        );
        assert!(en.starts_with("You have not opted out"), "{en}");
        assert!(en.contains("Under this site's privacy terms, information about you from other sources was not used."), "{en}");
        for (en, nl) in [agreed(true), agreed(false)] {
            assert!(
                en.ends_with(&format!(
                    "Checked when the ad was chosen on {}.",
                    text::date(
                        Language::En,
                        crate::decisions::sample_batch("d", Some("s")).rows[0].decided_at_ms
                    )
                )),
                "{en}"
            );
            assert!(nl.contains("Gecontroleerd toen"), "{nl}");
        }
    }

    /// Support staff read a contextual tier for what it is: a masked
    /// feature does not mean the person's profile went unused.
    #[test]
    fn the_tier_is_explained_with_the_basis() {
        let profiled = tier_explained(Tier::Contextual, "profiling", 1);
        assert!(
            profiled.contains("yet profiling-based: 1 feature "),
            "{profiled}"
        );
        let contextual = tier_explained(Tier::Contextual, "contextual", 3);
        assert!(
            contextual.contains("profile was not used; 3 features"),
            "{contextual}"
        );
        assert!(tier_explained(Tier::Refused, "none", 0).contains("no score"));
    }

    /// A decision whose model is gone and which named no campaign still
    /// gets 3 reasons, and says its profile was used when it was.
    #[test]
    fn a_retired_models_decision_without_a_campaign_has_three_reasons() {
        for (tier, basis) in [
            (Tier::Personalised, "profiling"),
            (Tier::Contextual, "contextual"),
        ] {
            let mut row = crate::decisions::sample_row("d", Some("s"));
            row.tier = tier;
            for language in Language::ALL {
                let view = consumer(&row, None, language, 10);
                assert_eq!(view.basis, basis);
                assert_eq!(
                    view.reasons.len(),
                    3,
                    "{tier:?} {language:?}: {:?}",
                    view.reasons
                );
                let about_you = view.reasons.iter().any(|r| {
                    r.group == ReasonGroup::YourInfo && r.text == text::profiled(language)
                });
                assert_eq!(about_you, tier == Tier::Personalised);
            }
        }
    }

    #[test]
    fn the_procedure_says_when_more_of_the_export_follows() {
        for language in Language::ALL {
            let last = procedure(language, false);
            let more = procedure(language, true);
            assert!(more.starts_with(&last) && more.len() > last.len() + 50);
        }
        assert!(procedure(Language::En, true).ends_with("the next parts of this answer."));
    }
}

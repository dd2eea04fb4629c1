//! The consent policy: from a request's signals and the subject's ledger
//! state to a tier, the features the model may see, and the rules that
//! decided it.
//!
//! The rules, in the order they apply:
//! 1. Regime by jurisdiction: GDPR/TCF in the EEA, UK and Switzerland, GPP/GPC
//!    in the US; anywhere else the configured default, which refuses unless
//!    told otherwise.
//! 2. TCF: personalised advertising needs consent to purposes 1, 3 and 4;
//!    basic (contextual) advertising needs purpose 2 by consent or legitimate
//!    interest; no valid TC string means no processing. Precise geolocation
//!    needs special feature 1. When `context.tc_string` and the GPP string's
//!    tcfeuv2 section are both present, a basis (for our vendor, or for the
//!    purpose when no vendor id is configured) or special feature counts only
//!    if every string allows it: the stricter signal wins, and a rule says
//!    so when they disagree.
//! 3. US: a sale, sharing or targeted-advertising opt-out (usnat, usca, any
//!    state section such as usva, or the US Privacy section uspv1), or GPC
//!    (the request's flag or any section's GPC subsection), removes
//!    cross-context behavioural features. Every US section present applies,
//!    whichever state `jurisdiction_region` names, and any opt-out counts.
//!    Sensitive data (precise geolocation) must not be opted out under an
//!    opt-out state's section (usca, usut, usia), and needs consent in every
//!    section that requires it (usnat and the consent states' sections),
//!    unless only opt-out sections speak and one of them is for the
//!    person's state (or no region was given).
//! 4. A minor (DSA Art. 28), or a known child under any US section's child
//!    fields, is never profiled.
//! 5. Consent Mode v2: denied ad_personalization or ad_user_data removes the
//!    profile.
//! 6. The ledger: a withdrawal or objection recorded after a signal wins over
//!    it; an objection to direct marketing (GDPR Art. 21(2)) refuses outright.
//!
//! Special categories never reach this point: a package that feeds them to an
//! advertising purpose is refused at load.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Decoded, ModeFlag,
    gpp::{
        Geolocation, GppString, Tri, USCA_PRECISE_GEOLOCATION, USNAT_PRECISE_GEOLOCATION, UspFlag,
    },
    ledger::{LegalBasis, PurposeState, Status, valid_until},
    purposes::{self, DIRECT_MARKETING, SALE_OR_SHARING},
    tcf::{Bases, Basis, TcString},
};
use crate::models::manifest::{DataCategory, DataSource, FeatureSpec};

/// Changes whenever a rule changes meaning in a release: decisions carry
/// it, so two decisions with the same version were judged by the same
/// rules. Changes made before a version first ships belong to it.
pub const POLICY_VERSION: &str = "candor-policy/4";

/// EEA members, the UK and Switzerland: where GDPR (or its UK and Swiss
/// counterparts) and the TCF apply. Parts of the EU with ISO 3166-1 codes of
/// their own are listed too: France's outermost regions (Guadeloupe,
/// Martinique, French Guiana, Réunion, Mayotte, Saint-Martin) and Finland's
/// Åland, where GDPR applies as in the rest of the member state.
const TCF_COUNTRIES: [&str; 39] = [
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV",
    "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO", "GB", "CH",
    "GP", "MQ", "GF", "RE", "YT", "MF", "AX",
];

/// What to do where no known regime applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownJurisdiction {
    Refuse,
    Contextual,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Our IAB Global Vendor List id: vendor signals and publisher
    /// restrictions are read for it. Without one only purpose signals count.
    pub tcf_vendor_id: Option<u16>,
    pub unknown_jurisdiction: UnknownJurisdiction,
}

#[derive(get_size2::GetSize, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Regime {
    Tcf,
    Us,
    Unknown,
}

impl Regime {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcf => "gdpr_tcf",
            Self::Us => "us_gpp",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(get_size2::GetSize, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Personalised,
    Contextual,
    Refused,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Personalised => "personalised",
            Self::Contextual => "contextual",
            Self::Refused => "refused",
        }
    }
}

#[derive(get_size2::GetSize, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurposeStatus {
    Granted,
    NotGranted,
    Withdrawn,
    Objected,
    Expired,
    /// US: the person opted out.
    OptedOut,
    /// US: an opt-out regime, so processing needs no consent.
    NotRequired,
}

impl PurposeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::NotGranted => "not_granted",
            Self::Withdrawn => "withdrawn",
            Self::Objected => "objected",
            Self::Expired => "expired",
            Self::OptedOut => "opted_out",
            Self::NotRequired => "not_required",
        }
    }

    fn permits(self) -> bool {
        matches!(self, Self::Granted | Self::NotRequired)
    }
}

/// Where a purpose's status came from.
#[derive(get_size2::GetSize, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `context.tc_string`.
    TcString,
    /// The GPP string's tcfeuv2 section, with no `context.tc_string`.
    #[serde(rename = "gpp_tcfeuv2")]
    GppTcfEuV2,
    /// Both TC strings, read together: the stricter wins.
    #[serde(rename = "tc_string_and_gpp_tcfeuv2")]
    TcStringAndGpp,
    Ledger,
    UsSignals,
    None,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TcString => "tc_string",
            Self::GppTcfEuV2 => "gpp_tcfeuv2",
            Self::TcStringAndGpp => "tc_string_and_gpp_tcfeuv2",
            Self::Ledger => "ledger",
            Self::UsSignals => "us_signals",
            Self::None => "none",
        }
    }
}

#[derive(get_size2::GetSize, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurposeOutcome {
    pub tcf_id: u8,
    pub dpv: String,
    pub status: PurposeStatus,
    pub legal_basis: Option<LegalBasis>,
    pub source: Source,
    /// The ledger record that decided it, when the ledger did.
    pub record: Option<super::ledger::LedgerRef>,
}

/// The policy's verdict for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub regime: Regime,
    pub tier: Tier,
    pub purposes: Vec<PurposeOutcome>,
    /// Stable rule ids, in the order they fired.
    pub rules: Vec<&'static str>,
    /// Column positions the model must not see; they are replaced by their
    /// substitute, typical of the background sample (`Rows::substitutes`).
    pub masked: Vec<usize>,
}

/// How a feature may be used, read from its manifest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureUse {
    /// Data about the person (as opposed to the request's context), usable
    /// only for profiling-based advertising.
    pub profile: bool,
    /// Obtained outside the person's own dealings with the publisher
    /// (bought, inferred, or cross-site activity): what a US opt-out removes.
    pub cross_context: bool,
    pub precise_geolocation: bool,
}

impl FeatureUse {
    pub fn of(spec: &FeatureSpec) -> Self {
        use DataCategory::*;
        // A precise location describes the person, not the page: GDPR Art.
        // 4(4) counts analysing location or movements as profiling. So it
        // goes with the profile (no minor, refusal or objection leaves it
        // in), and needs its own opt-in besides.
        let contextual = matches!(spec.category, Contextual | Device | CoarseLocation)
            && !spec.is_precise_geolocation();
        Self {
            profile: !contextual,
            cross_context: !contextual
                && (matches!(
                    spec.source,
                    DataSource::ZipCodeAggregate | DataSource::Inferred
                ) || spec.category == BrowsingActivity),
            precise_geolocation: spec.is_precise_geolocation(),
        }
    }
}

/// Builds an evaluation: collects masks and rules, then settles the tier.
struct Verdict<'a> {
    features: &'a [FeatureSpec],
    masked: Vec<bool>,
    rules: Vec<&'static str>,
    refused: bool,
}

impl Verdict<'_> {
    /// Masks the features `pick` selects, and records `rule` if the model
    /// has any: also when an earlier rule masked them already, so that the
    /// record shows every protection that applied (a minor's among them).
    fn mask(&mut self, rule: &'static str, pick: impl Fn(FeatureUse) -> bool) {
        self.mask_features(rule, |spec| pick(FeatureUse::of(spec)));
    }

    /// [`Verdict::mask`], picking by the whole manifest entry.
    fn mask_features(&mut self, rule: &'static str, pick: impl Fn(&FeatureSpec) -> bool) {
        let mut fired = false;
        for (i, spec) in self.features.iter().enumerate() {
            if pick(spec) {
                self.masked[i] = true;
                fired = true;
            }
        }
        if fired && !self.rules.contains(&rule) {
            self.rules.push(rule);
        }
    }

    fn refuse(&mut self, rule: &'static str) {
        self.refused = true;
        self.rules.push(rule);
    }
}

pub struct Policy {
    settings: Settings,
    hash: String,
}

impl Policy {
    pub fn new(settings: Settings) -> Self {
        let canonical = serde_json::to_string(&(POLICY_VERSION, &settings, &TCF_COUNTRIES[..]))
            .expect("settings serialise");
        let hash = hex::encode(Sha256::digest(canonical.as_bytes()));
        Self { settings, hash }
    }

    pub fn version(&self) -> &'static str {
        POLICY_VERSION
    }

    /// SHA-256 of the policy version and its settings: two decisions with the
    /// same hash were judged by the same rules.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn regime(signals: &Decoded) -> Regime {
        match &signals.signals.jurisdiction {
            Some(j) if j.country == "US" => Regime::Us,
            Some(j) if TCF_COUNTRIES.contains(&j.country.as_str()) => Regime::Tcf,
            _ => Regime::Unknown,
        }
    }

    /// Decides what may be used for a model with these features.
    pub fn evaluate(
        &self,
        features: &[FeatureSpec],
        signals: &Decoded,
        ledger: &[PurposeState],
        now_ms: i64,
    ) -> Evaluation {
        let regime = Self::regime(signals);
        let mut v = Verdict {
            features,
            masked: vec![false; features.len()],
            rules: Vec::new(),
            refused: false,
        };
        let recorded = |id: u8| ledger.iter().find(|s| s.tcf_id == id);
        // An objection to direct marketing stands in every regime, and the
        // decision cites it: its outcome leads the purposes, so the record
        // is among the provenance's ledger records.
        let objection = recorded(DIRECT_MARKETING)
            .filter(|s| s.status == Status::Objected)
            .map(|s| {
                v.refuse("gdpr.art21_objection");
                PurposeOutcome {
                    tcf_id: DIRECT_MARKETING,
                    dpv: purposes::info(DIRECT_MARKETING)
                        .map_or("", |p| p.dpv)
                        .to_owned(),
                    status: PurposeStatus::Objected,
                    legal_basis: None,
                    source: Source::Ledger,
                    record: Some(s.record.clone()),
                }
            });
        let regime_purposes = match regime {
            Regime::Unknown => {
                match self.settings.unknown_jurisdiction {
                    UnknownJurisdiction::Refuse => v.refuse("jurisdiction.unknown_refuse"),
                    UnknownJurisdiction::Contextual => {
                        v.mask("jurisdiction.unknown_contextual", |f| f.profile)
                    }
                }
                Vec::new()
            }
            Regime::Tcf => self.tcf(&mut v, signals, &recorded, now_ms),
            Regime::Us => us(&mut v, signals, &recorded, now_ms),
        };
        let purposes: Vec<PurposeOutcome> = objection.into_iter().chain(regime_purposes).collect();
        let [minor, known] = CHILD_RULES;
        if signals.signals.age == super::AgeStatus::Minor {
            v.mask(minor, |f| f.profile);
        }
        if known_child(signals) {
            v.mask(known, |f| f.profile);
        }
        let mode = &signals.signals.consent_mode;
        if mode.ad_personalization == ModeFlag::Denied {
            v.mask("consent_mode.ad_personalization_denied", |f| f.profile);
        }
        if mode.ad_user_data == ModeFlag::Denied {
            v.mask("consent_mode.ad_user_data_denied", |f| f.profile);
        }
        let tier = if v.refused {
            Tier::Refused
        } else if v.masked.contains(&true) {
            Tier::Contextual
        } else {
            Tier::Personalised
        };
        Evaluation {
            regime,
            tier,
            purposes,
            rules: v.rules,
            masked: v
                .masked
                .iter()
                .enumerate()
                .filter(|(_, m)| **m)
                .map(|(i, _)| i)
                .collect(),
        }
    }

    fn tcf<'l>(
        &self,
        v: &mut Verdict<'_>,
        signals: &Decoded,
        recorded: &dyn Fn(u8) -> Option<&'l PurposeState>,
        now_ms: i64,
    ) -> Vec<PurposeOutcome> {
        let fresh = |t: &&TcString| now_ms <= valid_until(t.last_updated_ms());
        let strings = [
            signals.tcf.as_ref(),
            signals.gpp.as_ref().and_then(|g| g.tcfeuv2.as_ref()),
        ];
        if strings.iter().flatten().any(|t| !fresh(t)) {
            v.rules.push("tcf.stale_tc_string");
        }
        let tc = TcSignals::of(strings.map(|t| t.filter(fresh)));
        let vendor = self.settings.tcf_vendor_id;
        // Without our vendor id a TC string's purposes are read alone: the
        // record must not pass that off as a vendor's consent.
        if vendor.is_none() && tc.is_some() {
            v.rules.push("tcf.vendor_not_checked");
        }
        if tc.as_ref().is_some_and(|t| t.conflict(vendor)) {
            v.rules.push("tcf.conflicting_signals_stricter_applied");
        }
        let tc = tc.as_ref();
        let outcome = |id: u8| self.tcf_purpose(id, tc, recorded(id), now_ms);
        let purposes: Vec<PurposeOutcome> = [1, 2, 3, 4].into_iter().map(outcome).collect();
        if tc.is_none() && purposes.iter().all(|p| p.source == Source::None) {
            v.refuse("tcf.no_signal");
            return purposes;
        }
        let status = |id: u8| purposes.iter().find(|p| p.tcf_id == id).map(|p| p.status);
        let consented = |id: u8| {
            purposes.iter().any(|p| {
                p.tcf_id == id
                    && p.status == PurposeStatus::Granted
                    && p.legal_basis == Some(LegalBasis::Consent)
            })
        };
        let personalised = [1, 3, 4].into_iter().all(consented);
        if personalised {
            // A consent is specific (GDPR Art. 4(11)): one recorded for some
            // data categories covers those, and profiling (purposes 3 and
            // 4) uses no other.
            let limits: Vec<&[String]> = [3, 4]
                .into_iter()
                .filter(|id| {
                    purposes
                        .iter()
                        .any(|p| p.tcf_id == *id && p.source == Source::Ledger)
                })
                .filter_map(recorded)
                .map(|r| r.data_categories.as_slice())
                .filter(|c| !c.is_empty())
                .collect();
            if !limits.is_empty() {
                v.mask_features("ledger.consent_limited_to_categories", |spec| {
                    FeatureUse::of(spec).profile
                        && !limits
                            .iter()
                            .all(|covered| covered.iter().any(|c| c == spec.category.as_str()))
                });
            }
        } else {
            let withdrawn = [1, 3, 4].into_iter().any(|id| {
                matches!(
                    status(id),
                    Some(PurposeStatus::Withdrawn | PurposeStatus::Objected)
                )
            });
            let rule = if withdrawn {
                "tcf.personalised_ads_withdrawn"
            } else {
                "tcf.personalised_ads_not_granted"
            };
            v.mask(rule, |f| f.profile);
        }
        // Selecting any ad at all is purpose 2, personalised or not.
        if !status(2).is_some_and(PurposeStatus::permits) {
            v.refuse("tcf.basic_ads_not_granted");
        }
        if !tc.is_some_and(|t| t.special_feature(1)) {
            v.mask("tcf.special_feature_1_not_opted_in", |f| {
                f.precise_geolocation
            });
        }
        purposes
    }

    /// One purpose's status: the TC string's signal, unless the ledger holds
    /// a later record for it, which then wins. A record that grants cannot
    /// lift a publisher's restriction on this vendor ("not allowed", or
    /// "require consent" against a record on legitimate interest, and the
    /// reverse): that is the publisher's choice, which the person's consent
    /// does not change.
    ///
    /// Two records hold against any string, however dated:
    /// - an objection (GDPR Art. 21): once a person objects to direct
    ///   marketing, their data is no longer processed for it (Art. 21(3)).
    ///   A TC string records what a CMP holds, not that the objection was
    ///   lifted; only a later record in the ledger lifts it;
    /// - a withdrawal, against a string that offers only legitimate
    ///   interest: a withdrawn consent cannot be replaced by another basis
    ///   (EDPB Guidelines 05/2020 on consent, section 6), and a string's
    ///   legitimate-interest signal is the CMP's default, not the person's
    ///   new choice. A string's later consent is one, and lifts it.
    fn tcf_purpose(
        &self,
        id: u8,
        tc: Option<&TcSignals<'_>>,
        recorded: Option<&PurposeState>,
        now_ms: i64,
    ) -> PurposeOutcome {
        let dpv = purposes::info(id).map_or("", |p| p.dpv).to_owned();
        // TCF stamps LastUpdated at day precision (00:00 UTC). A ledger
        // record from the same day cannot be ordered against it, so the
        // more restrictive of the two counts.
        const DAY_MS: i64 = 24 * 3600 * 1000;
        let tc_basis = tc.map(|t| t.bases(self.settings.tcf_vendor_id, id).preferred());
        // A record that grants on a basis the publisher does not leave our
        // vendor cannot stand against the string.
        let restricted = |r: &PurposeState| {
            r.status_at(now_ms).permits()
                && tc.is_some_and(|t| {
                    !t.publisher_allows(self.settings.tcf_vendor_id, id, r.legal_basis)
                })
        };
        let ledger_wins = match (tc, recorded) {
            (_, None) => false,
            (_, Some(r)) if restricted(r) => false,
            (None, Some(_)) => true,
            (Some(_), Some(r)) if r.status_at(now_ms) == Status::Objected => true,
            (Some(_), Some(r))
                if r.status_at(now_ms) == Status::Withdrawn
                    && tc_basis.flatten() != Some(Basis::Consent) =>
            {
                true
            }
            (Some(t), Some(r)) => {
                // A string dated ahead (decoding allows a day of clock skew)
                // was made today at the latest: later than today's
                // withdrawal it cannot be shown to be.
                let updated = t.last_updated_ms().min(now_ms);
                let same_day = r.effective_at_ms.div_euclid(DAY_MS) == updated.div_euclid(DAY_MS);
                if same_day {
                    // The record wins when it denies, or when both grant.
                    !r.status_at(now_ms).permits() || tc_basis.flatten().is_some()
                } else {
                    r.effective_at_ms > updated
                }
            }
        };
        if let (true, Some(r)) = (ledger_wins, recorded) {
            let status = match r.status_at(now_ms) {
                Status::Given | Status::Renewed => PurposeStatus::Granted,
                Status::Withdrawn => PurposeStatus::Withdrawn,
                Status::Objected => PurposeStatus::Objected,
                Status::Expired => PurposeStatus::Expired,
                Status::Refused => PurposeStatus::NotGranted,
            };
            return PurposeOutcome {
                tcf_id: id,
                dpv,
                status,
                legal_basis: status.permits().then_some(r.legal_basis),
                source: Source::Ledger,
                record: Some(r.record.clone()),
            };
        }
        let (source, basis) = match (tc, tc_basis) {
            (Some(t), Some(basis)) => (t.source(), basis),
            _ => (Source::None, None),
        };
        PurposeOutcome {
            tcf_id: id,
            dpv,
            status: if basis.is_some() {
                PurposeStatus::Granted
            } else {
                PurposeStatus::NotGranted
            },
            legal_basis: basis.map(|b| match b {
                Basis::Consent => LegalBasis::Consent,
                Basis::LegitimateInterest => LegalBasis::LegitimateInterest,
            }),
            source,
            record: None,
        }
    }
}

/// The TC strings a TCF request carries, `context.tc_string` and the GPP
/// string's tcfeuv2 section, when fresh, read as one signal. Where they
/// disagree the stricter wins: a basis or special feature counts only if
/// every string allows it. The CMP may have updated one and not the other,
/// but neither string says which, and processing on a choice one of them
/// withholds could be processing without consent.
struct TcSignals<'a>([Option<&'a TcString>; 2]);

impl<'a> TcSignals<'a> {
    /// `None` when no string is left.
    fn of(strings: [Option<&'a TcString>; 2]) -> Option<Self> {
        strings.iter().any(Option::is_some).then_some(Self(strings))
    }

    /// Which field the strings came in.
    fn source(&self) -> Source {
        match self.0 {
            [Some(_), None] => Source::TcString,
            [None, Some(_)] => Source::GppTcfEuV2,
            _ => Source::TcStringAndGpp,
        }
    }

    fn strings(&self) -> impl Iterator<Item = &'a TcString> + '_ {
        self.0.iter().flatten().copied()
    }

    fn bases(&self, vendor: Option<u16>, purpose: u8) -> Bases {
        self.strings()
            .map(|t| t.bases(vendor, purpose))
            .reduce(Bases::and)
            .unwrap_or_default()
    }

    /// Whether the publisher's restrictions in both strings leave `vendor`
    /// the purpose on `basis`; without our vendor id none is read.
    fn publisher_allows(&self, vendor: Option<u16>, purpose: u8, basis: LegalBasis) -> bool {
        let Some(v) = vendor else { return true };
        self.strings().all(|t| {
            let allowed = t.publisher_allows(v, purpose);
            match basis {
                LegalBasis::Consent => allowed.consent,
                LegalBasis::LegitimateInterest => allowed.legitimate_interest,
            }
        })
    }

    fn special_feature(&self, id: u8) -> bool {
        self.strings().all(|t| t.special_feature(id))
    }

    /// The newest LastUpdated: the signal is as recent as its newest string,
    /// so a ledger record must be later than both to outrank it.
    fn last_updated_ms(&self) -> i64 {
        self.strings()
            .map(TcString::last_updated_ms)
            .max()
            .unwrap_or_default()
    }

    /// Whether the strings answer differently on what the policy reads: the
    /// basis for purposes 1-4, and special feature 1.
    fn conflict(&self, vendor: Option<u16>) -> bool {
        let answer = |t: &TcString| {
            (
                [1, 2, 3, 4].map(|id| t.bases(vendor, id).preferred()),
                t.special_feature(1),
            )
        };
        let mut answers = self.strings().map(answer);
        let first = answers.next();
        answers.any(|a| Some(a) != first)
    }
}

/// The request's US opt-outs: (GPC, a GPP sale/sharing/targeting opt-out).
/// Every US section present counts, whatever `jurisdiction_region` says: the
/// strictest wins, so an opt-out in any of them is honoured.
fn us_opt_outs(signals: &Decoded) -> (bool, bool) {
    let gpp = signals.gpp.as_ref();
    let usnat = gpp.and_then(|g| g.usnat.as_ref());
    let usca = gpp.and_then(|g| g.usca.as_ref());
    let uspv1 = gpp.and_then(|g| g.uspv1.as_ref());
    let states = gpp.map_or(&[][..], |g| g.states.as_slice());
    let gpc = signals.signals.gpc
        || usnat.is_some_and(|s| s.gpc == Some(true))
        || usca.is_some_and(|s| s.gpc == Some(true))
        || states.iter().any(|s| s.gpc == Some(true));
    let opted_out = usnat.is_some_and(|s| {
        [
            s.sale_opt_out,
            s.sharing_opt_out,
            s.targeted_advertising_opt_out,
        ]
        .contains(&Tri::One)
    }) || usca
        .is_some_and(|s| [s.sale_opt_out, s.sharing_opt_out].contains(&Tri::One))
        || uspv1.is_some_and(|s| s.opt_out_sale == UspFlag::Yes)
        || states.iter().any(|s| s.opted_out());
    (gpc, opted_out)
}

/// What the request's US sections say of the publisher rather than the
/// person, each a reason no cross-context data may be used:
/// - `us.mspa_service_provider_mode`: the transaction runs in the MSPA's
///   Service Provider Mode (MspaServiceProviderMode 1), in which a service
///   provider may not sell, share or target; also when a section claims
///   both modes, which the MSPA makes exclusive;
/// - `us.opt_out_notice_missing`: the notice of the right to opt out of a
///   sale, sharing or targeted advertising was not provided (2; the
///   opt-out then reads 0, "not applicable or no notice was provided", as
///   the MSPA specifications define it), or the person "did not opt out"
///   (2) of one whose notice reads 0 (in uspv1, a sale not opted out of,
///   N, under a notice of N or -): an opt-out right no one was told about
///   was never declined;
/// - `us.targeted_advertising_not_applicable`: the publisher declares that
///   it does not process personal data for targeted advertising (usnat's
///   and the states' TargetedAdvertisingOptOutNotice 0) or, in usca, that
///   it does not share it for cross-context behavioural advertising
///   (SharingOptOutNotice 0). Cross-context targeting would contradict it.
///
/// Sections 24 to 27 carry one MspaMode field whose values the gateway
/// cannot read with confidence; it is not acted on.
fn us_publisher_restrictions(signals: &Decoded) -> impl Iterator<Item = &'static str> {
    let (mut service_provider, mut untold, mut no_targeting) = (false, false, false);
    if let Some(gpp) = signals.gpp.as_ref() {
        // Each section's MSPA Service Provider Mode, its (opt-out, notice)
        // pairs, and the notice that covers targeting (the last pair's).
        let mut section = |mode: Tri, rights: &[(Tri, Tri)]| {
            service_provider |= mode == Tri::One;
            untold |= rights.iter().any(|&(opt_out, notice)| {
                notice == Tri::Two || (opt_out == Tri::Two && notice == Tri::NotApplicable)
            });
            no_targeting |= rights
                .last()
                .is_some_and(|&(_, notice)| notice == Tri::NotApplicable);
        };
        if let Some(s) = &gpp.usnat {
            section(
                s.mspa_service_provider_mode,
                &[
                    (s.sale_opt_out, s.sale_opt_out_notice),
                    (s.sharing_opt_out, s.sharing_opt_out_notice),
                    (
                        s.targeted_advertising_opt_out,
                        s.targeted_advertising_opt_out_notice,
                    ),
                ],
            );
        }
        if let Some(s) = &gpp.usca {
            section(
                s.mspa_service_provider_mode,
                &[
                    (s.sale_opt_out, s.sale_opt_out_notice),
                    (s.sharing_opt_out, s.sharing_opt_out_notice),
                ],
            );
        }
        for s in &gpp.states {
            let notice = |name: &str| {
                s.layout
                    .notices
                    .iter()
                    .position(|n| *n == name)
                    .map_or(Tri::NotApplicable, |i| s.notices[i])
            };
            section(
                s.mspa_service_provider_mode,
                &[
                    (s.sale_opt_out, notice("SaleOptOutNotice")),
                    (
                        s.targeted_advertising_opt_out,
                        notice("TargetedAdvertisingOptOutNotice"),
                    ),
                ],
            );
        }
        if let Some(s) = &gpp.uspv1 {
            untold |= s.opt_out_sale == UspFlag::No && s.notice != UspFlag::Yes;
        }
    }
    [
        service_provider.then_some("us.mspa_service_provider_mode"),
        untold.then_some("us.opt_out_notice_missing"),
        no_targeting.then_some("us.targeted_advertising_not_applicable"),
    ]
    .into_iter()
    .flatten()
}

/// One US section's answer on precise geolocation.
enum GeoAnswer {
    /// A section that requires consent: whether it was given.
    Consent(bool),
    /// A section that allows an opt-out: whether the person opted out,
    /// whether the section is for the request's state (or no region was
    /// given), and whether the notice of that right was provided. Only a
    /// told person's silence in their own state may stand in for consent:
    /// Utah (13-61-302(3)(a)), Iowa (715D.4(2)) and California (11 CCR
    /// 7014) require the notice before sensitive data is processed.
    OptOut {
        opted_out: bool,
        own_state: bool,
        told: bool,
    },
}

/// What the request's GPP sections say about precise geolocation, each read
/// by its own specification (see [`Geolocation`]).
fn geolocation_answers(gpp: Option<&GppString>, region: Option<&str>) -> Vec<GeoAnswer> {
    let Some(gpp) = gpp else {
        return Vec::new();
    };
    let own_state = |state: &str| region.is_none_or(|r| r == state);
    let at = |v: &[Tri], i: usize| v.get(i).copied();
    let mut answers = Vec::new();
    if let Some(s) = &gpp.usnat {
        let given = at(&s.sensitive_data_processing, USNAT_PRECISE_GEOLOCATION) == Some(Tri::Two);
        answers.push(GeoAnswer::Consent(given));
    }
    if let Some(s) = &gpp.usca {
        answers.push(GeoAnswer::OptOut {
            opted_out: at(&s.sensitive_data_processing, USCA_PRECISE_GEOLOCATION) == Some(Tri::One),
            own_state: own_state("CA"),
            told: s.sensitive_data_limit_use_notice == Tri::One,
        });
    }
    for s in &gpp.states {
        let value = |i| at(&s.sensitive_data_processing, i);
        match s.layout.geolocation {
            Geolocation::Absent => {}
            Geolocation::Consent(i) => answers.push(GeoAnswer::Consent(value(i) == Some(Tri::Two))),
            Geolocation::Unsettled => answers.push(GeoAnswer::Consent(false)),
            Geolocation::OptOut(i) => answers.push(GeoAnswer::OptOut {
                opted_out: value(i) == Some(Tri::One),
                own_state: own_state(s.layout.state),
                // The section's notice of its sensitive-data opt-out.
                told: s
                    .layout
                    .notices
                    .iter()
                    .zip(&s.notices)
                    .any(|(name, n)| name.starts_with("SensitiveData") && *n == Tri::One),
            }),
        }
    }
    answers
}

/// Whether a known person's request carries a US opt-out that the ledger
/// must remember, because it does not hold one yet.
pub fn opt_out_to_remember(signals: &Decoded, state: &[PurposeState], now_ms: i64) -> bool {
    let (gpc, opted_out) = us_opt_outs(signals);
    Policy::regime(signals) == Regime::Us
        && (gpc || opted_out)
        && !state
            .iter()
            .any(|s| s.tcf_id == SALE_OR_SHARING && opts_out(s.status_at(now_ms)))
}

/// Whether a recorded answer for purpose 12 (sale or sharing, an opt-out
/// right) says no: an objection, and as much a refusal or a withdrawal,
/// which is how a consent dialog or `WithdrawConsent` records it.
fn opts_out(status: Status) -> bool {
    matches!(
        status,
        Status::Objected | Status::Refused | Status::Withdrawn
    )
}

fn us<'l>(
    v: &mut Verdict<'_>,
    signals: &Decoded,
    recorded: &dyn Fn(u8) -> Option<&'l PurposeState>,
    now_ms: i64,
) -> Vec<PurposeOutcome> {
    let (gpc, opted_out) = us_opt_outs(signals);
    if gpc {
        v.mask("us.gpc_opt_out", |f| f.cross_context);
    }
    if opted_out {
        v.mask("us.sale_sharing_targeting_opt_out", |f| f.cross_context);
    }
    for rule in us_publisher_restrictions(signals) {
        v.mask(rule, |f| f.cross_context);
    }
    // A remembered opt-out (an earlier GPC, a withdrawal of purpose 12).
    let remembered = recorded(SALE_OR_SHARING).filter(|r| opts_out(r.status_at(now_ms)));
    if remembered.is_some() {
        v.mask("ledger.sale_sharing_opt_out", |f| f.cross_context);
    }
    // Precise geolocation is sensitive data. Where a section that requires
    // consent is present, every such section must give it (the strictest
    // wins). Where only opt-out sections (usca, usut, usia) speak, the
    // person's not opting out suffices, but only under a section for their
    // own state: Utah's opt-out regime does not lift Virginia's consent
    // requirement. With no answer at all there is no consent.
    let region = signals
        .signals
        .jurisdiction
        .as_ref()
        .and_then(|j| j.region.as_deref());
    let answers = geolocation_answers(signals.gpp.as_ref(), region);
    let consents: Vec<bool> = answers
        .iter()
        .filter_map(|a| match a {
            GeoAnswer::Consent(given) => Some(*given),
            GeoAnswer::OptOut { .. } => None,
        })
        .collect();
    let no_consent = if consents.is_empty() {
        !answers.iter().any(|a| {
            matches!(
                a,
                GeoAnswer::OptOut {
                    own_state: true,
                    told: true,
                    ..
                }
            )
        })
    } else {
        consents.contains(&false)
    };
    if no_consent {
        v.mask("us.usnat_sensitive_data_no_consent", |f| {
            f.precise_geolocation
        });
    }
    if answers.iter().any(|a| {
        matches!(
            a,
            GeoAnswer::OptOut {
                opted_out: true,
                ..
            }
        )
    }) {
        v.mask("us.usca_sensitive_data_opt_out", |f| f.precise_geolocation);
    }
    [3u8, 4]
        .into_iter()
        .map(|id| {
            let dpv = purposes::info(id).map_or("", |p| p.dpv).to_owned();
            match recorded(id).map(|r| (r, r.status_at(now_ms))) {
                // A refusal recorded in a consent dialog says no as much as
                // a withdrawal does.
                Some((r, status @ (Status::Withdrawn | Status::Objected | Status::Refused))) => {
                    v.mask("ledger.personalised_ads_withdrawn", |f| f.profile);
                    PurposeOutcome {
                        tcf_id: id,
                        dpv,
                        status: match status {
                            Status::Objected => PurposeStatus::Objected,
                            Status::Refused => PurposeStatus::NotGranted,
                            _ => PurposeStatus::Withdrawn,
                        },
                        legal_basis: None,
                        source: Source::Ledger,
                        record: Some(r.record.clone()),
                    }
                }
                _ => {
                    // The request's own signals first; else the ledger's
                    // opt-out, cited so the decision's provenance and the
                    // person's consent line show what it rested on.
                    let (status, source, record) = if gpc || opted_out {
                        (PurposeStatus::OptedOut, Source::UsSignals, None)
                    } else if let Some(r) = remembered {
                        (
                            PurposeStatus::OptedOut,
                            Source::Ledger,
                            Some(r.record.clone()),
                        )
                    } else {
                        (PurposeStatus::NotRequired, Source::UsSignals, None)
                    };
                    PurposeOutcome {
                        tcf_id: id,
                        dpv,
                        status,
                        legal_basis: None,
                        source,
                        record,
                    }
                }
            }
        })
        // The person's sale-or-sharing choice in the ledger is what the
        // decision rests on too, cited either way: a remembered opt-out
        // (which masked the cross-context features above), or a sale or
        // sharing they allowed after one, which shows why it no longer
        // holds.
        .chain(recorded(SALE_OR_SHARING).map(|r| {
            let status = r.status_at(now_ms);
            PurposeOutcome {
                tcf_id: SALE_OR_SHARING,
                dpv: purposes::info(SALE_OR_SHARING)
                    .map_or("", |p| p.dpv)
                    .to_owned(),
                status: match status {
                    s if opts_out(s) => PurposeStatus::OptedOut,
                    Status::Expired => PurposeStatus::Expired,
                    _ => PurposeStatus::Granted,
                },
                legal_basis: (!opts_out(status)).then_some(r.legal_basis),
                source: Source::Ledger,
                record: Some(r.record.clone()),
            }
        }))
        .collect()
}

/// A GPP child field other than "not applicable" means the person is a
/// known child (or, in the state sections with more than one field, a
/// known teenager): in every US section, 0 says the business does not
/// process a known child's data, and 1 or 2 answer for one it does.
fn known_child(signals: &Decoded) -> bool {
    let Some(gpp) = &signals.gpp else {
        return false;
    };
    let any = |fields: &[Tri]| fields.iter().any(|t| *t != Tri::NotApplicable);
    gpp.usnat
        .as_ref()
        .is_some_and(|s| any(&s.known_child_sensitive_data_consents))
        || gpp
            .usca
            .as_ref()
            .is_some_and(|s| any(&s.known_child_sensitive_data_consents))
        || gpp
            .states
            .iter()
            .any(|s| any(&s.known_child_sensitive_data_consents))
}

/// What a decision relied on, so it can be proven later: the regime, each
/// purpose's standing, the rules that fired, the masked features, the ledger
/// records and the signals' hash, the policy and the model.
#[derive(get_size2::GetSize, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// "DE", "US-CA", or empty when none was given.
    pub jurisdiction: String,
    pub regime: Regime,
    pub tier: Tier,
    pub purposes: Vec<PurposeOutcome>,
    pub rules: Vec<String>,
    pub masked_features: Vec<String>,
    pub ledger_records: Vec<super::ledger::LedgerRef>,
    pub signals_hash: String,
    pub policy_version: String,
    pub policy_hash: String,
    pub model_sha256: String,
    /// The subject's pseudonym; `None` for an anonymous request.
    pub subject_ref: Option<String>,
    /// When the person last made the TCF choices their TC string carries
    /// (its LastUpdated, a day under TCF v2.2): when they agreed, for the
    /// consent line. Absent without a TC string, and in records before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tc_last_updated_ms: Option<i64>,
}

/// The rules that keep a minor's, or a known child's, ads from their
/// profile, whatever consent their signals carry.
pub const CHILD_RULES: [&str; 2] = ["dsa.art28_minor", "gpp.known_child"];

impl Provenance {
    pub fn fired(&self, rule: &str) -> bool {
        self.rules.iter().any(|r| r == rule)
    }

    /// Whether the decision was made for a minor or a known child: no
    /// profile of theirs was used, and none could have been.
    pub fn protects_a_child(&self) -> bool {
        CHILD_RULES.iter().any(|rule| self.fired(rule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        consent::{
            Jurisdiction, Signals,
            gpp::{Geolocation, STATES, USCA, USNAT, USPV1},
            testing::{
                StateFields, Tc, VENDOR, gpp, state, usca, usca_with_limit_use_notice, usnat,
                usnat_with,
            },
        },
        models::manifest::FeatureType,
    };

    /// Decoding checks dates against the real clock, so the strings are
    /// dated by it too.
    fn now() -> i64 {
        crate::store::now_ms()
    }

    fn feature(name: &str, category: DataCategory, source: DataSource) -> FeatureSpec {
        FeatureSpec {
            name: name.into(),
            position: 0,
            kind: FeatureType::Float,
            categories: vec![],
            min: None,
            max: None,
            missing_allowed: false,
            description: name.into(),
            category,
            proxy_for: None,
            source,
            reason_group: None,
            reason: Default::default(),
        }
    }

    /// One feature of each class: contextual, first-party profile,
    /// cross-context profile, precise geolocation.
    fn features() -> Vec<FeatureSpec> {
        use {DataCategory as C, DataSource as S};
        vec![
            feature("page", C::Contextual, S::RequestContext),
            feature("purchases", C::FirstPartyPurchaseHistory, S::FirstParty),
            feature("zip", C::ZipCodeDemographics, S::ZipCodeAggregate),
            feature("geo", C::PreciseGeolocation, S::RequestContext),
        ]
    }

    fn judge(
        country: &str,
        region: Option<&str>,
        tc: Option<String>,
        gpp: Option<String>,
    ) -> Evaluation {
        judge_with(country, region, tc, gpp, &[])
    }

    /// As [`judge`], with the person's state in the ledger.
    fn judge_with(
        country: &str,
        region: Option<&str>,
        tc: Option<String>,
        gpp: Option<String>,
        ledger: &[PurposeState],
    ) -> Evaluation {
        judge_as(Some(VENDOR), country, region, tc, gpp, ledger)
    }

    /// As [`judge_with`], for a gateway with `vendor` as its TCF vendor id.
    fn judge_as(
        vendor: Option<u16>,
        country: &str,
        region: Option<&str>,
        tc: Option<String>,
        gpp: Option<String>,
        ledger: &[PurposeState],
    ) -> Evaluation {
        let signals = Signals {
            jurisdiction: Some(Jurisdiction {
                country: country.into(),
                region: region.map(Into::into),
            }),
            tc_string: tc,
            gpp_string: gpp,
            ..Signals::default()
        }
        .decode()
        .unwrap();
        Policy::new(Settings {
            tcf_vendor_id: vendor,
            unknown_jurisdiction: UnknownJurisdiction::Refuse,
        })
        .evaluate(&features(), &signals, ledger, now())
    }

    fn us(sections: &[(u16, &str)]) -> Evaluation {
        judge("US", None, None, Some(gpp(sections)))
    }

    /// A feature declared to stand in for a precise location (a block that
    /// pinpoints a home) is used as one: part of the profile, and masked
    /// without its own opt-in.
    #[test]
    fn a_proxy_for_a_precise_location_is_used_as_one() {
        let mut block = feature(
            "block",
            DataCategory::CoarseLocation,
            DataSource::FirstParty,
        );
        let coarse = FeatureUse::of(&block);
        assert!(!coarse.profile && !coarse.precise_geolocation);
        block.proxy_for = Some(DataCategory::PreciseGeolocation);
        let proxy = FeatureUse::of(&block);
        assert!(proxy.profile && proxy.precise_geolocation);
    }

    #[test]
    fn a_uspv1_sale_opt_out_is_honoured_as_usnats_is() {
        let (opted_out, not) = (usnat(1), usnat(2));
        let usnat_says = us(&[(USNAT, &opted_out)]);
        assert_eq!(usnat_says.tier, Tier::Contextual);
        assert_eq!(usnat_says.rules, ["us.sale_sharing_targeting_opt_out"]);
        for usp in ["1YYN", "1NYY", "1-Y-"] {
            let with_usp = us(&[(USPV1, usp), (USNAT, &not)]);
            assert_eq!(with_usp, usnat_says, "{usp} with usnat");
            let alone = us(&[(USPV1, usp)]);
            assert!(
                alone.rules.contains(&"us.sale_sharing_targeting_opt_out"),
                "{usp} alone: {:?}",
                alone.rules
            );
            assert!(alone.masked.contains(&2) && !alone.masked.contains(&1));
        }
        for usp in ["1YNN", "1YNY", "1---"] {
            let quiet = us(&[(USPV1, usp), (USNAT, &not)]);
            assert_eq!(
                (quiet.tier, quiet.rules.len()),
                (Tier::Personalised, 0),
                "{usp}"
            );
        }
        // No notice (N), or none known (-): not opting out declined nothing,
        // as in usnat.
        for usp in ["1NNY", "1NNN", "1-N-"] {
            let untold = us(&[(USPV1, usp), (USNAT, &not)]);
            assert_eq!(untold.rules, ["us.opt_out_notice_missing"], "{usp}");
            assert!(untold.masked.contains(&2), "{usp}");
        }
    }

    /// What the publisher's section says of itself restricts as an opt-out
    /// does: no cross-context data in Service Provider Mode, nor where the
    /// person "did not opt out" of something they were never told of.
    #[test]
    fn service_provider_mode_and_missing_notices_keep_cross_context_data_out() {
        let judged = |section: &str| us(&[(USNAT, section)]);
        let fine = judged(&usnat_with(1, 2, 0));
        assert_eq!((fine.tier, fine.rules.len()), (Tier::Personalised, 0));
        let provider = judged(&usnat_with(1, 2, 1));
        assert_eq!(provider.tier, Tier::Contextual);
        assert_eq!(provider.rules, ["us.mspa_service_provider_mode"]);
        assert!(provider.masked.contains(&2) && !provider.masked.contains(&1));
        // A notice not provided, whatever the opt-out reads (the MSPA
        // specifications have it read 0 then), or "did not opt out" under
        // a notice that is not applicable.
        // A notice of 0 also says no targeting happens, a rule of its own.
        for (notice, opt_out, rules) in [
            (2, 0, &["us.opt_out_notice_missing"][..]),
            (2, 2, &["us.opt_out_notice_missing"]),
            (
                0,
                2,
                &[
                    "us.opt_out_notice_missing",
                    "us.targeted_advertising_not_applicable",
                ],
            ),
        ] {
            let untold = judged(&usnat_with(notice, opt_out, 0));
            assert_eq!(untold.rules, rules, "{notice} {opt_out}");
            assert!(untold.masked.contains(&2), "{notice} {opt_out}");
        }
        // Nothing sold, shared or targeted, so nothing to be told; but then
        // no cross-context data either.
        let mut w = crate::consent::testing::BitWriter::default();
        // Version, notices, opt-outs, sensitive data (consent to category
        // 8, precise geolocation), child fields, PersonalDataConsents.
        w.int(1, 6)
            .int(0, 12)
            .int(0, 6)
            .int(0, 14)
            .int(2, 2)
            .int(0, 8);
        w.int(0, 4).int(0, 2);
        w.int(2, 2).int(0, 4);
        let untargeted = judged(&w.encode(6));
        assert_eq!(untargeted.rules, ["us.targeted_advertising_not_applicable"]);
        assert!(untargeted.masked.contains(&2) && !untargeted.masked.contains(&1));
    }

    #[test]
    fn a_uspv1_opt_out_is_remembered_for_a_known_person() {
        let decoded = |usp: &str| {
            Signals {
                jurisdiction: Some(Jurisdiction {
                    country: "US".into(),
                    region: Some("CA".into()),
                }),
                gpp_string: Some(gpp(&[(USPV1, usp)])),
                ..Signals::default()
            }
            .decode()
            .unwrap()
        };
        assert!(opt_out_to_remember(&decoded("1YYN"), &[], now()));
        assert!(!opt_out_to_remember(&decoded("1YNN"), &[], now()));
    }

    /// In the US, a refusal of profiling recorded in a consent dialog
    /// keeps the profile out as a withdrawal does, and is cited.
    #[test]
    fn a_us_refusal_in_the_ledger_keeps_the_profile_out() {
        let ledger: Vec<PurposeState> = [3, 4].map(|id| recorded_now(id, Status::Refused)).into();
        let e = judge_with(
            "US",
            Some("CA"),
            None,
            Some(gpp(&[(USNAT, &usnat(2))])),
            &ledger,
        );
        assert_eq!(e.rules, ["ledger.personalised_ads_withdrawn"], "{e:?}");
        assert!(e.masked.contains(&1), "{e:?}");
        for p in e.purposes.iter().filter(|p| [3, 4].contains(&p.tcf_id)) {
            assert_eq!(
                (p.status, p.source),
                (PurposeStatus::NotGranted, Source::Ledger)
            );
            assert!(p.record.is_some());
        }
    }

    fn tcf(tc: &Tc, section: &Tc) -> Evaluation {
        judge(
            "DE",
            None,
            Some(tc.encode()),
            Some(gpp(&[(crate::consent::gpp::TCFEUV2, &section.encode())])),
        )
    }

    const CONFLICT: &str = "tcf.conflicting_signals_stricter_applied";

    /// A minor's protection is on record even where another rule masked
    /// the profile first: the record shows every rule that applied.
    #[test]
    fn every_rule_that_applies_is_on_record() {
        let only_ads = Tc {
            purposes: vec![1, 2],
            ..Tc::granted(now())
        };
        let signals = Signals {
            jurisdiction: Some(Jurisdiction {
                country: "DE".into(),
                region: None,
            }),
            tc_string: Some(only_ads.encode()),
            age: crate::consent::AgeStatus::Minor,
            ..Signals::default()
        }
        .decode()
        .unwrap();
        let e = Policy::new(Settings {
            tcf_vendor_id: Some(VENDOR),
            unknown_jurisdiction: UnknownJurisdiction::Refuse,
        })
        .evaluate(&features(), &signals, &[], now());
        for rule in ["tcf.personalised_ads_not_granted", "dsa.art28_minor"] {
            assert!(e.rules.contains(&rule), "{rule}: {:?}", e.rules);
        }
        assert_eq!(e.tier, Tier::Contextual);
    }

    /// Without `consent.tcf_vendor_id`, a TC string's purposes count alone
    /// (vendor consent and publisher restrictions are not read), and every
    /// decision it makes says so.
    #[test]
    fn purposes_read_without_a_vendor_id_are_on_record_as_such() {
        let none_for_us = Tc {
            vendors: vec![1, 2],
            ..Tc::granted(now())
        }
        .encode();
        let de = |vendor| judge_as(vendor, "DE", None, Some(none_for_us.clone()), None, &[]);
        let unchecked = de(None);
        assert_eq!(unchecked.tier, Tier::Personalised);
        assert_eq!(unchecked.rules, ["tcf.vendor_not_checked"]);
        let checked = de(Some(VENDOR));
        assert_eq!(checked.tier, Tier::Contextual);
        assert!(!checked.rules.contains(&"tcf.vendor_not_checked"));
        // No TC string, no claim about one.
        let e = judge_as(None, "US", None, None, None, &[]);
        assert!(
            !e.rules.contains(&"tcf.vendor_not_checked"),
            "{:?}",
            e.rules
        );
    }

    /// GDPR applies in the parts of the EU with country codes of their own.
    #[test]
    fn the_eus_outermost_regions_are_under_the_tcf() {
        let tc = Tc::granted(now()).encode();
        for place in ["RE", "GP", "MQ", "GF", "YT", "MF", "AX", "FR"] {
            let e = judge(place, None, Some(tc.clone()), None);
            assert_eq!(
                (e.regime, e.tier),
                (Regime::Tcf, Tier::Personalised),
                "{place}"
            );
        }
        assert_eq!(judge("BR", None, Some(tc), None).regime, Regime::Unknown);
    }

    /// A ledger state for purpose `id`, recorded now.
    fn recorded_now(id: u8, status: Status) -> PurposeState {
        PurposeState {
            tcf_id: id,
            status,
            legal_basis: LegalBasis::Consent,
            effective_at_ms: now(),
            expires_at_ms: None,
            record: crate::consent::ledger::LedgerRef {
                seq: i64::from(id),
                record_id: format!("r{id}"),
                hash: "h".into(),
            },
            data_categories: Vec::new(),
        }
    }

    /// A TC string dated tomorrow (decoding allows a day of clock skew)
    /// does not outrank a withdrawal made today: it was made today at the
    /// latest, and on the same day the stricter of the two counts.
    #[test]
    fn a_string_dated_ahead_does_not_outrank_a_withdrawal_made_today() {
        const DAY_DS: u64 = 24 * 3600 * 10;
        let today = Tc::granted(now());
        let tomorrow = Tc {
            created_ds: today.created_ds + DAY_DS,
            last_updated_ds: today.last_updated_ds + DAY_DS,
            ..today.clone()
        };
        let ledger: Vec<PurposeState> = [3, 4].map(|id| recorded_now(id, Status::Withdrawn)).into();
        for tc in [&today, &tomorrow] {
            let e = judge_with("DE", None, Some(tc.encode()), None, &ledger);
            assert_eq!(e.tier, Tier::Contextual, "{e:?}");
            assert!(e.rules.contains(&"tcf.personalised_ads_withdrawn"), "{e:?}");
        }
    }

    /// A string dated after an objection does not lift it, and one dated
    /// after a withdrawal lifts it only with a consent: legitimate interest
    /// does not replace a withdrawn consent.
    #[test]
    fn a_later_string_lifts_a_withdrawal_only_by_consent_and_never_an_objection() {
        const DAY_MS: i64 = 24 * 3600 * 1000;
        let yesterday = |id, status| PurposeState {
            effective_at_ms: now() - DAY_MS,
            ..recorded_now(id, status)
        };
        let tc = Tc::granted(now());
        let judged = |ledger: &[PurposeState], tc: &Tc| {
            judge_with("DE", None, Some(tc.encode()), None, ledger)
        };
        // Purpose 2 on legitimate interest only, as a CMP's default.
        let li_only = Tc {
            purposes: vec![1, 3, 4],
            ..tc.clone()
        };
        let objected = judged(&[yesterday(2, Status::Objected)], &li_only);
        assert_eq!(objected.tier, Tier::Refused, "{objected:?}");
        let p2 = objected.purposes.iter().find(|p| p.tcf_id == 2).unwrap();
        assert_eq!(
            (p2.status, p2.source),
            (PurposeStatus::Objected, Source::Ledger)
        );
        assert_eq!(p2.record.as_ref().map(|r| r.seq), Some(2));
        // Not even a consent in the string lifts an objection.
        let objected = judged(&[yesterday(3, Status::Objected)], &tc);
        assert_eq!(objected.tier, Tier::Contextual, "{objected:?}");
        let withdrawn = judged(&[yesterday(2, Status::Withdrawn)], &li_only);
        assert_eq!(withdrawn.tier, Tier::Refused, "{withdrawn:?}");
        // A consent given in the CMP since is the person's new choice.
        let consented = judged(&[yesterday(3, Status::Withdrawn)], &tc);
        assert_eq!(consented.tier, Tier::Personalised, "{consented:?}");
    }

    /// A consent recorded for some data categories lets profiling use
    /// those only; one for every category (none named) limits nothing.
    #[test]
    fn a_consent_for_some_data_categories_covers_those_only() {
        let granted = |categories: &[&str]| -> Vec<PurposeState> {
            [1, 2, 3, 4]
                .map(|id| PurposeState {
                    data_categories: categories.iter().map(|c| (*c).to_owned()).collect(),
                    ..recorded_now(id, Status::Given)
                })
                .into()
        };
        let purchases = granted(&["first_party_purchase_history"]);
        let e = judge_with("DE", None, None, None, &purchases);
        // Without a TC string the location has no special-feature opt-in
        // either: both rules that keep it back are on record.
        assert_eq!(
            e.rules,
            [
                "ledger.consent_limited_to_categories",
                "tcf.special_feature_1_not_opted_in"
            ],
            "{e:?}"
        );
        // The zip-code demographics and the location are masked; the page
        // and the purchases are not.
        assert_eq!(e.masked, [2, 3], "{e:?}");
        assert_eq!(e.tier, Tier::Contextual);
        let all = judge_with("DE", None, None, None, &granted(&[]));
        assert!(
            !all.rules.contains(&"ledger.consent_limited_to_categories"),
            "{all:?}"
        );
        assert!(!all.masked.contains(&2), "{all:?}");
    }

    /// A purpose's source names the field its TC string came in.
    #[test]
    fn a_purposes_source_names_the_field_its_tc_string_came_in() {
        let tc = Tc::granted(now());
        let section = || Some(gpp(&[(crate::consent::gpp::TCFEUV2, &tc.encode())]));
        for (e, source) in [
            (judge("DE", None, Some(tc.encode()), None), Source::TcString),
            (judge("DE", None, None, section()), Source::GppTcfEuV2),
            (tcf(&tc, &tc), Source::TcStringAndGpp),
        ] {
            assert_eq!(e.tier, Tier::Personalised, "{e:?}");
            assert!(e.purposes.iter().all(|p| p.source == source), "{e:?}");
        }
    }

    /// Validity is 13 calendar months, a month's end clamped.
    #[test]
    fn consent_is_valid_for_thirteen_calendar_months() {
        let ms = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        for (from, until) in [
            ("2026-02-27T00:00:00Z", "2027-03-27T00:00:00Z"),
            ("2026-01-31T12:00:00Z", "2027-02-28T12:00:00Z"),
            ("2025-10-31T00:00:00Z", "2026-11-30T00:00:00Z"),
        ] {
            assert_eq!(valid_until(ms(from)), ms(until), "{from}");
        }
    }

    /// The person's consent, recorded after the string, wins over it, but
    /// not over the publisher's "not allowed" for this vendor.
    #[test]
    fn a_later_ledger_grant_does_not_lift_a_publishers_prohibition() {
        const DAY_DS: u64 = 24 * 3600 * 10;
        let today = Tc::granted(now());
        let yesterday = Tc {
            created_ds: today.created_ds - DAY_DS,
            last_updated_ds: today.last_updated_ds - DAY_DS,
            purposes: vec![1, 2],
            ..today
        };
        let ledger: Vec<PurposeState> = (1..=4).map(|id| recorded_now(id, Status::Given)).collect();
        let evaluate = |tc: &Tc| judge_with("DE", None, Some(tc.encode()), None, &ledger);
        let source = |e: &Evaluation, id: u8| {
            let p = e.purposes.iter().find(|p| p.tcf_id == id).unwrap();
            (p.status, p.source)
        };
        let lifted = evaluate(&yesterday);
        assert_eq!(lifted.tier, Tier::Personalised);
        assert_eq!(source(&lifted, 3), (PurposeStatus::Granted, Source::Ledger));
        let forbidden = evaluate(&Tc {
            restrictions: vec![(3, 0, vec![VENDOR]), (4, 0, vec![VENDOR])],
            ..yesterday.clone()
        });
        assert_eq!(forbidden.tier, Tier::Contextual);
        for id in [3, 4] {
            assert_eq!(
                source(&forbidden, id),
                (PurposeStatus::NotGranted, Source::TcString)
            );
        }
        assert_eq!(
            source(&forbidden, 1),
            (PurposeStatus::Granted, Source::Ledger)
        );
        // "Require consent" leaves no room for a record on legitimate
        // interest; the same record on consent stands.
        let consent_only = Tc {
            purposes: vec![1],
            restrictions: vec![(2, 1, vec![VENDOR])],
            ..yesterday.clone()
        }
        .encode();
        let mut on_li = ledger.clone();
        on_li[1].legal_basis = LegalBasis::LegitimateInterest;
        let kept = judge_with("DE", None, Some(consent_only.clone()), None, &on_li);
        assert_eq!(
            source(&kept, 2),
            (PurposeStatus::NotGranted, Source::TcString)
        );
        assert_eq!(kept.tier, Tier::Refused);
        let lifted = judge_with("DE", None, Some(consent_only), None, &ledger);
        assert_eq!(source(&lifted, 2), (PurposeStatus::Granted, Source::Ledger));
    }

    #[test]
    fn the_stricter_tcf_signal_wins_whichever_field_carries_it() {
        let all = Tc::granted(now());
        let agree = tcf(&all, &all);
        assert_eq!((agree.tier, agree.rules.len()), (Tier::Personalised, 0));
        let mut variants = Vec::new();
        for withheld in [1, 3, 4] {
            variants.push(Tc {
                purposes: (1..=10).filter(|p| *p != withheld).collect(),
                ..all.clone()
            });
        }
        // Our vendor without consent: the purposes alone would allow it.
        variants.push(Tc {
            vendors: vec![1, 2],
            ..all.clone()
        });
        for less in &variants {
            for e in [tcf(&all, less), tcf(less, &all)] {
                assert_eq!(e.tier, Tier::Contextual);
                assert_eq!(e.rules, [CONFLICT, "tcf.personalised_ads_not_granted"]);
                let p = |id: u8| e.purposes.iter().find(|p| p.tcf_id == id).unwrap();
                assert!(
                    [1, 3, 4]
                        .into_iter()
                        .any(|id| p(id).status == PurposeStatus::NotGranted)
                );
            }
        }
        // Special feature 1 withheld by either: geolocation is masked.
        let no_geo = Tc {
            special_features: vec![],
            ..all.clone()
        };
        for e in [tcf(&all, &no_geo), tcf(&no_geo, &all)] {
            assert_eq!(e.rules, [CONFLICT, "tcf.special_feature_1_not_opted_in"]);
            assert_eq!(e.masked, [3]);
        }
    }

    #[test]
    fn conflicting_tcf_signals_allow_only_a_basis_both_allow() {
        // Purpose 2 by consent only in one string and by legitimate interest
        // only in the other: neither basis is allowed by both.
        let consent = Tc {
            purposes: vec![2],
            li_purposes: vec![],
            ..Tc::granted(now())
        };
        let li = Tc {
            purposes: vec![],
            li_purposes: vec![2],
            ..Tc::granted(now())
        };
        let e = tcf(&consent, &li);
        assert_eq!(e.tier, Tier::Refused);
        assert!(e.rules.contains(&CONFLICT) && e.rules.contains(&"tcf.basic_ads_not_granted"));
        // Each alone permits it.
        for one in [&consent, &li] {
            let e = tcf(one, one);
            assert!(!e.rules.contains(&CONFLICT) && e.tier != Tier::Refused);
        }
    }

    #[test]
    fn a_stale_string_is_set_aside_and_the_fresh_one_decides() {
        let all = Tc::granted(now());
        let stale_day = all.last_updated_ds - 400 * 24 * 3600 * 10;
        let stale = Tc {
            created_ds: stale_day,
            last_updated_ds: stale_day,
            purposes: vec![],
            ..all.clone()
        };
        let e = tcf(&stale, &all);
        assert_eq!(e.tier, Tier::Personalised);
        assert_eq!(e.rules, ["tcf.stale_tc_string"]);
    }

    const OPT_OUT: &str = "us.sale_sharing_targeting_opt_out";
    const NO_GEO_CONSENT: &str = "us.usnat_sensitive_data_no_consent";
    const GEO_OPT_OUT: &str = "us.usca_sensitive_data_opt_out";

    fn state_only(id: u16, f: StateFields) -> Evaluation {
        us(&[(id, &state(id, f))])
    }

    #[test]
    fn a_state_sections_opt_outs_are_honoured_as_usnats_are() {
        let usnat_says = us(&[(USNAT, &usnat(1))]);
        for layout in &STATES {
            let what = layout.what;
            for f in [
                StateFields {
                    sale_opt_out: 1,
                    ..StateFields::default()
                },
                StateFields {
                    targeted_opt_out: 1,
                    ..StateFields::default()
                },
            ] {
                let e = state_only(layout.id, f);
                assert_eq!(e.tier, Tier::Contextual, "{what}");
                assert_eq!(e.rules.first(), Some(&OPT_OUT), "{what}: {:?}", e.rules);
                // The cross-context feature goes, the first-party one stays,
                // exactly as under usnat's opt-out.
                assert!(e.masked.contains(&2) && !e.masked.contains(&1), "{what}");
                let statuses =
                    |e: &Evaluation| e.purposes.iter().map(|p| p.status).collect::<Vec<_>>();
                assert_eq!(statuses(&e), statuses(&usnat_says), "{what}");
                // Any opt-out counts: usnat's "did not opt out" does not
                // outweigh the state section's opt-out.
                let both = us(&[(USNAT, &usnat(2)), (layout.id, &state(layout.id, f))]);
                assert!(both.rules.contains(&OPT_OUT), "{what}: {:?}", both.rules);
            }
            let quiet = state_only(layout.id, StateFields::default());
            assert!(
                !quiet.rules.contains(&OPT_OUT) && !quiet.masked.contains(&2),
                "{what}: {:?}",
                quiet.rules
            );
        }
    }

    #[test]
    fn a_state_sections_gpc_and_child_fields_count_as_usnats_do() {
        for layout in STATES.iter().filter(|l| l.gpc) {
            let with = |gpc| {
                state_only(
                    layout.id,
                    StateFields {
                        gpc: Some(gpc),
                        ..StateFields::default()
                    },
                )
            };
            assert!(
                with(true).rules.contains(&"us.gpc_opt_out"),
                "{}",
                layout.what
            );
            assert!(
                !with(false).rules.contains(&"us.gpc_opt_out"),
                "{}",
                layout.what
            );
        }
        // Maryland's section has no child field.
        for layout in STATES.iter().filter(|l| l.child_fields > 0) {
            for child in [1, 2] {
                let e = state_only(
                    layout.id,
                    StateFields {
                        child,
                        ..StateFields::default()
                    },
                );
                assert!(e.rules.contains(&"gpp.known_child"), "{}", layout.what);
                assert!(e.masked.contains(&1), "{}", layout.what);
            }
            let e = state_only(layout.id, StateFields::default());
            assert!(!e.rules.contains(&"gpp.known_child"), "{}", layout.what);
        }
    }

    #[test]
    fn precise_geolocation_is_read_by_each_sections_own_meaning() {
        let geo = |value: u64| StateFields {
            geolocation: value,
            ..StateFields::default()
        };
        let masked_geo = |e: &Evaluation| e.masked.contains(&3);
        for layout in &STATES {
            let what = layout.what;
            let (given, withheld) = (state_only(layout.id, geo(2)), state_only(layout.id, geo(1)));
            match layout.geolocation {
                // Consent states: 2 is consent, 1 and 0 are not.
                Geolocation::Consent(_) => {
                    assert!(!masked_geo(&given), "{what}: {:?}", given.rules);
                    assert!(withheld.rules.contains(&NO_GEO_CONSENT), "{what}");
                    let na = state_only(layout.id, geo(0));
                    assert!(na.rules.contains(&NO_GEO_CONSENT), "{what}");
                }
                // Opt-out states: 1 is an opt-out; 2 and 0 leave it usable.
                Geolocation::OptOut(_) => {
                    assert!(!masked_geo(&given), "{what}: {:?}", given.rules);
                    assert_eq!(withheld.rules, [GEO_OPT_OUT], "{what}");
                    assert!(!masked_geo(&state_only(layout.id, geo(0))), "{what}");
                }
                // Unread or absent: never a consent.
                Geolocation::Unsettled | Geolocation::Absent => {
                    for e in [&given, &withheld] {
                        assert_eq!(e.rules, [NO_GEO_CONSENT], "{what}");
                    }
                }
            }
        }
        // The strictest wins: usnat's consent (usnat(2) gives it) does not
        // outweigh Florida's refusal, nor Utah's opt-out.
        let with_usnat =
            |id: u16, value: u64| us(&[(USNAT, &usnat(2)), (id, &state(id, geo(value)))]);
        assert!(with_usnat(13, 1).rules.contains(&NO_GEO_CONSENT));
        assert!(!masked_geo(&with_usnat(13, 2)));
        assert!(with_usnat(11, 1).rules.contains(&GEO_OPT_OUT));
        assert!(!masked_geo(&with_usnat(11, 2)));
    }

    #[test]
    fn an_opt_out_states_silence_stands_in_for_consent_only_in_that_state() {
        let utah = state(11, StateFields::default());
        let california = usca();
        for (id, text, state_code) in [(11, &utah, "UT"), (USCA, &california, "CA")] {
            let at = |region: Option<&str>| judge("US", region, None, Some(gpp(&[(id, text)])));
            for region in [None, Some(state_code)] {
                assert!(at(region).rules.is_empty(), "{state_code} in {region:?}");
            }
            let elsewhere = at(Some("VA"));
            assert_eq!(elsewhere.rules, [NO_GEO_CONSENT], "{state_code} in VA");
            assert_eq!(elsewhere.masked, [3]);
        }
        // A consent state's consent holds whatever the region: it is the
        // person's own choice.
        let florida = state(
            13,
            StateFields {
                geolocation: 2,
                ..StateFields::default()
            },
        );
        let e = judge("US", Some("TX"), None, Some(gpp(&[(13, &florida)])));
        assert!(e.rules.is_empty(), "{:?}", e.rules);
        // Silence stands in only where the right was told (notice 1); not
        // provided (2) or not applicable (0), it is no consent.
        for notice in [0, 2] {
            let utah = state(
                11,
                StateFields {
                    sensitive_notice: notice,
                    ..StateFields::default()
                },
            );
            let california = usca_with_limit_use_notice(notice);
            for (id, text, state_code) in [(11, &utah, "UT"), (USCA, &california, "CA")] {
                let e = judge("US", Some(state_code), None, Some(gpp(&[(id, text)])));
                assert_eq!(e.rules, [NO_GEO_CONSENT], "{state_code}, notice {notice}");
                assert_eq!(e.masked, [3], "{state_code}, notice {notice}");
            }
        }
    }
}

//! The processing purposes the ledger and the policy speak about: the eleven
//! TCF v2.2 purposes, direct marketing (what a GDPR Art. 21 objection is
//! made against) and the US sale or sharing of personal data. Each carries the nearest W3C DPV purpose (several
//! TCF purposes share one, the TCF id tells them apart), so that records read
//! the same outside the TCF.

/// Purpose id 0 is not a TCF purpose: direct marketing as a whole, the
/// target of an Art. 21(2) objection.
pub const DIRECT_MARKETING: u8 = 0;

/// Purpose id 12 is not a TCF purpose either: the sale or sharing of
/// personal data under US state law. A Global Privacy Control signal from a
/// known person is remembered as an objection to it (CCPA regulations,
/// 11 CCR §7025: a later absence of the signal does not opt them back in).
pub const SALE_OR_SHARING: u8 = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurposeInfo {
    pub id: u8,
    pub name: &'static str,
    pub dpv: &'static str,
    /// Whether legitimate interest can ever be the basis (TCF policies).
    pub admits_legitimate_interest: bool,
}

const fn p(id: u8, name: &'static str, dpv: &'static str, li: bool) -> PurposeInfo {
    PurposeInfo {
        id,
        name,
        dpv,
        admits_legitimate_interest: li,
    }
}

pub const PURPOSES: [PurposeInfo; 13] = [
    p(
        DIRECT_MARKETING,
        "Direct marketing",
        "dpv:DirectMarketing",
        true,
    ),
    p(
        1,
        "Store and/or access information on a device",
        "dpv:ServiceProvision",
        false,
    ),
    p(
        2,
        "Use limited data to select advertising",
        "dpv:Advertising",
        true,
    ),
    p(
        3,
        "Create profiles for personalised advertising",
        "dpv:PersonalisedAdvertising",
        false,
    ),
    p(
        4,
        "Use profiles to select personalised advertising",
        "dpv:PersonalisedAdvertising",
        false,
    ),
    p(
        5,
        "Create profiles to personalise content",
        "dpv:ServicePersonalisation",
        false,
    ),
    p(
        6,
        "Use profiles to select personalised content",
        "dpv:ServicePersonalisation",
        false,
    ),
    p(
        7,
        "Measure advertising performance",
        "dpv:Advertising",
        true,
    ),
    p(
        8,
        "Measure content performance",
        "dpv:ServiceOptimisation",
        true,
    ),
    p(
        9,
        "Understand audiences through statistics or combinations of data from different sources",
        "dpv:ResearchAndDevelopment",
        true,
    ),
    p(
        10,
        "Develop and improve services",
        "dpv:ServiceOptimisation",
        true,
    ),
    p(
        11,
        "Use limited data to select content",
        "dpv:ServicePersonalisation",
        true,
    ),
    p(
        SALE_OR_SHARING,
        "Sale or sharing of personal data (US)",
        "dpv:SellDataToThirdParties",
        false,
    ),
];

/// The TCF purposes (1 to 11) that may rest on consent only, never on
/// legitimate interest: 1 since TCF v2.0, 3 to 6 since v2.2.
pub fn consent_only() -> impl Iterator<Item = u8> {
    PURPOSES
        .iter()
        .filter(|p| (1..=11).contains(&p.id) && !p.admits_legitimate_interest)
        .map(|p| p.id)
}

pub fn info(id: u8) -> Option<&'static PurposeInfo> {
    PURPOSES.iter().find(|p| p.id == id)
}

//! IAB Global Privacy Platform strings: the header, and the sections the
//! policy interprets (tcfeuv2, uspv1, usnat, usca and the other US state
//! sections, usva (9) to usri (27)).
//!
//! Each US section is read by its own specification: usnat's
//! SensitiveDataProcessing values mean consent (2) or its absence (1), while
//! usca's mean an opt-out (1). uspv1 is the US Privacy string carried as a
//! section: four characters, not bits, decoded as strictly as the others.
//!
//! The state sections after usca share one shape (Version, notices,
//! SaleOptOut, TargetedAdvertisingOptOut, SensitiveDataProcessing,
//! KnownChildSensitiveDataConsents, sometimes AdditionalDataProcessingConsent,
//! the MSPA fields, and for most a GPC subsection) but differ in which
//! notices they carry, how many sensitive-data categories and child fields
//! they have, where precise geolocation is and what a sensitive-data value
//! means. [`STATES`] holds one layout per section and [`StateSection`] is
//! decoded from it by one reader, so a section is a row of data, not a
//! function. The layouts follow the IAB's section specifications
//! (Global-Privacy-Platform, Sections/US-States/*), cross-checked against
//! the IAB's iabgpp-es encoders. The sections registered from usmd (24) on
//! put the MSPA fields first (MspaVersion, MspaCoveredTransaction, MspaMode)
//! and carry their SensitiveDataProcessing categories, or their GPC flag, in
//! the subsection after the core ([`Shape::MspaFirst`]).
//!
//! Sections the gateway does not apply (the Canadian TCF, and sections
//! registered after usri) are kept as their ids only: the core
//! specification leaves each section's encoding to its own specification,
//! and a reader "aware of where the discrete section is" may skip one it
//! does not implement. What the core specification does fix for every
//! section is checked: it is present, and each of its `.`-separated
//! subsections is non-empty URL-safe base64 (uspv1's characters are in that
//! alphabet too). Garbage there is refused as a malformed string rather than
//! passed over. The Canadian TCF's segments are checked further, as far as
//! its encoders agree: a corrupted header that relabels a US section as
//! it would otherwise drop that section's opt-outs unseen.
//!
//! The `iab_gpp` crate was evaluated and not used: version 0.1.2 panics on
//! overflowing Fibonacci codes in a header (debug builds) and wraps them
//! silently in release, accepts ranges that end before they start, and hides
//! MaxVendorId, which TCF validation needs.

use super::{
    SignalError,
    bits::{self, BitReader},
    tcf::TcString,
};

pub const TCFEUV2: u16 = 2;
pub const USPV1: u16 = 6;
pub const USNAT: u16 = 7;
pub const USCA: u16 = 8;
/// The Canadian TCF: checked, not applied.
const TCFCAV1: u16 = 5;

/// The answer to a US notice, opt-out or consent field (2 bits each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    NotApplicable,
    /// Notice: provided. Opt-out: opted out. Consent: no consent.
    One,
    /// Notice: not provided. Opt-out: did not opt out. Consent: consent.
    Two,
}

impl Tri {
    /// MspaCoveredTransaction has no "not applicable": 1 yes, 2 no.
    fn read_covered(r: &mut BitReader) -> Result<Self, SignalError> {
        match Self::read(r, "MspaCoveredTransaction")? {
            Self::NotApplicable => {
                Err(r.error("MspaCoveredTransaction is 0; it must be 1 (yes) or 2 (no)"))
            }
            t => Ok(t),
        }
    }

    fn read(r: &mut BitReader, field: &str) -> Result<Self, SignalError> {
        match r.u8(2, field)? {
            0 => Ok(Self::NotApplicable),
            1 => Ok(Self::One),
            2 => Ok(Self::Two),
            _ => Err(r.error(format!("{field} is 3, which is undefined"))),
        }
    }

    fn read_n(r: &mut BitReader, n: usize, field: &str) -> Result<Vec<Self>, SignalError> {
        (0..n)
            .map(|i| Self::read(r, &format!("{field}[{}]", i + 1)))
            .collect()
    }

    pub fn code(self) -> u8 {
        match self {
            Self::NotApplicable => 0,
            Self::One => 1,
            Self::Two => 2,
        }
    }
}

/// The US National section (id 7), version 1 or 2. Version 1 carries 12
/// sensitive-data categories and 2 child fields; version 2 carries 16 and 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsNat {
    pub version: u8,
    pub sharing_notice: Tri,
    pub sale_opt_out_notice: Tri,
    pub sharing_opt_out_notice: Tri,
    pub targeted_advertising_opt_out_notice: Tri,
    pub sensitive_data_processing_opt_out_notice: Tri,
    pub sensitive_data_limit_use_notice: Tri,
    pub sale_opt_out: Tri,
    pub sharing_opt_out: Tri,
    pub targeted_advertising_opt_out: Tri,
    /// 1 = no consent, 2 = consent, by category (index 0 = category 1).
    pub sensitive_data_processing: Vec<Tri>,
    pub known_child_sensitive_data_consents: Vec<Tri>,
    pub personal_data_consents: Tri,
    pub mspa_covered_transaction: Tri,
    pub mspa_opt_out_option_mode: Tri,
    pub mspa_service_provider_mode: Tri,
    pub gpc: Option<bool>,
}

/// The California section (id 8), version 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsCa {
    pub version: u8,
    pub sale_opt_out_notice: Tri,
    pub sharing_opt_out_notice: Tri,
    pub sensitive_data_limit_use_notice: Tri,
    pub sale_opt_out: Tri,
    pub sharing_opt_out: Tri,
    /// 1 = opted out, 2 = did not opt out, by category: identification
    /// documents, financial data, precise geolocation, origin/beliefs/union,
    /// mail/email/text, genetic, biometric, health, sex life.
    pub sensitive_data_processing: Vec<Tri>,
    pub known_child_sensitive_data_consents: Vec<Tri>,
    pub personal_data_consents: Tri,
    pub mspa_covered_transaction: Tri,
    pub mspa_opt_out_option_mode: Tri,
    pub mspa_service_provider_mode: Tri,
    pub gpc: Option<bool>,
}

/// How a state section's SensitiveDataProcessing category for precise
/// geolocation is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Geolocation {
    /// The section has no such category (Colorado's law does not count
    /// precise geolocation as sensitive data).
    Absent,
    /// Processing needs consent: 1 = no consent, 2 = consent, at this
    /// 0-based category index.
    Consent(usize),
    /// The person may opt out: 1 = opted out, 2 = did not, at this index.
    OptOut(usize),
    /// A consent category that cannot be read with confidence, so no value
    /// counts as consent (either reading could process sensitive data
    /// without it). Virginia's and Connecticut's version 1 specifications
    /// say 1 = consent and 2 = no consent, the opposite of every later state
    /// section and of usnat, while the IAB's own reviewers and the deployed
    /// readers (prebid-server) take 2 as consent. Delaware's version 1
    /// specification has been published with precise geolocation as
    /// category 8 (of 9) and, in another text of the same version, as
    /// category 9. Sections 24 to 27 are read this way too: the IAB's
    /// encoders give Indiana's, Kentucky's and Rhode Island's eight
    /// categories without naming them, and Maryland's section has none
    /// (its law forbids selling sensitive data and limits processing it to
    /// what is strictly necessary).
    Unsettled,
}

/// How a state section's fields are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Sections 9 to 23: Version, the notices, the opt-outs, the
    /// sensitive-data and child fields, the MSPA fields last, then an
    /// optional GPC subsection.
    VersionFirst,
    /// Sections 24 to 27: MspaVersion, MspaCoveredTransaction and MspaMode
    /// first, then the notices, the opt-outs, the child field and
    /// AdditionalDataProcessingConsent; after the core, an optional GPC
    /// subsection (`gpc`) or, where the layout has sensitive-data
    /// categories, an optional subsection of exactly those (no type field).
    MspaFirst,
}

/// The field layout of one US state section (version 1 of each).
#[derive(Debug, PartialEq, Eq)]
pub struct StateLayout {
    /// The GPP section id.
    pub id: u16,
    /// "section " and the client-side API prefix, e.g. "section usva": how
    /// errors name the section.
    pub what: &'static str,
    /// The state's ISO 3166-2 subdivision code, e.g. "VA".
    pub state: &'static str,
    /// The notice fields before SaleOptOut, in order.
    pub notices: &'static [&'static str],
    /// SensitiveDataProcessing categories.
    pub sensitive_categories: usize,
    pub geolocation: Geolocation,
    /// KnownChildSensitiveDataConsents fields (1 is an Int(2) in the
    /// specification, more an N-Bitfield).
    pub child_fields: usize,
    /// Whether AdditionalDataProcessingConsent follows the child fields.
    pub additional_consent: bool,
    /// Whether the specification defines a GPC subsection.
    pub gpc: bool,
    pub shape: Shape,
}

const SHARING: &[&str] = &[
    "SharingNotice",
    "SaleOptOutNotice",
    "TargetedAdvertisingOptOutNotice",
];
const PROCESSING: &[&str] = &[
    "ProcessingNotice",
    "SaleOptOutNotice",
    "TargetedAdvertisingOptOutNotice",
];

/// Every US state section after usca, by id. Sources: the IAB's
/// Sections/US-States/<state> specifications (ids, field order, lengths,
/// value meanings, GPC subsection), cross-checked against iabgpp-es's
/// `Us*CoreSegment` and `Us*GpcSegment` encoders. Colorado's GPC
/// subsection is the encoders' (and prebid-server's): the published
/// Colorado texts predate it, and refusing a GPC signal the IAB's own
/// library writes would drop an opt-out.
pub static STATES: [StateLayout; 19] = {
    use Geolocation::*;
    use Shape::*;
    // Positional, so that each section reads as one row of a table.
    #[allow(clippy::too_many_arguments)]
    const fn layout(
        id: u16,
        what: &'static str,
        state: &'static str,
        notices: &'static [&'static str],
        sensitive_categories: usize,
        geolocation: Geolocation,
        child_fields: usize,
        additional_consent: bool,
        gpc: bool,
        shape: Shape,
    ) -> StateLayout {
        StateLayout {
            id,
            what,
            state,
            notices,
            sensitive_categories,
            geolocation,
            child_fields,
            additional_consent,
            gpc,
            shape,
        }
    }
    [
        layout(
            9,
            "section usva",
            "VA",
            SHARING,
            8,
            Unsettled,
            1,
            false,
            false,
            VersionFirst,
        ),
        layout(
            10,
            "section usco",
            "CO",
            SHARING,
            7,
            Absent,
            1,
            false,
            true,
            VersionFirst,
        ),
        layout(
            11,
            "section usut",
            "UT",
            &[
                "SharingNotice",
                "SaleOptOutNotice",
                "TargetedAdvertisingOptOutNotice",
                "SensitiveDataProcessingOptOutNotice",
            ],
            8,
            OptOut(7),
            1,
            false,
            false,
            VersionFirst,
        ),
        layout(
            12,
            "section usct",
            "CT",
            SHARING,
            8,
            Unsettled,
            3,
            false,
            true,
            VersionFirst,
        ),
        layout(
            13,
            "section usfl",
            "FL",
            PROCESSING,
            8,
            Consent(7),
            3,
            true,
            false,
            VersionFirst,
        ),
        layout(
            14,
            "section usmt",
            "MT",
            SHARING,
            8,
            Consent(7),
            3,
            true,
            true,
            VersionFirst,
        ),
        layout(
            15,
            "section usor",
            "OR",
            PROCESSING,
            11,
            Consent(10),
            3,
            true,
            true,
            VersionFirst,
        ),
        layout(
            16,
            "section ustx",
            "TX",
            PROCESSING,
            8,
            Consent(7),
            1,
            true,
            true,
            VersionFirst,
        ),
        layout(
            17,
            "section usde",
            "DE",
            PROCESSING,
            9,
            Unsettled,
            5,
            true,
            true,
            VersionFirst,
        ),
        layout(
            18,
            "section usia",
            "IA",
            &[
                "ProcessingNotice",
                "SaleOptOutNotice",
                "TargetedAdvertisingOptOutNotice",
                "SensitiveDataOptOutNotice",
            ],
            8,
            OptOut(7),
            1,
            false,
            true,
            VersionFirst,
        ),
        layout(
            19,
            "section usne",
            "NE",
            PROCESSING,
            8,
            Consent(7),
            1,
            true,
            true,
            VersionFirst,
        ),
        layout(
            20,
            "section usnh",
            "NH",
            PROCESSING,
            8,
            Consent(7),
            3,
            true,
            true,
            VersionFirst,
        ),
        layout(
            21,
            "section usnj",
            "NJ",
            PROCESSING,
            10,
            Consent(7),
            5,
            true,
            true,
            VersionFirst,
        ),
        layout(
            22,
            "section ustn",
            "TN",
            PROCESSING,
            8,
            Consent(7),
            1,
            true,
            true,
            VersionFirst,
        ),
        layout(
            23,
            "section usmn",
            "MN",
            PROCESSING,
            8,
            Consent(7),
            1,
            true,
            true,
            VersionFirst,
        ),
        layout(
            24,
            "section usmd",
            "MD",
            PROCESSING,
            0,
            Unsettled,
            0,
            true,
            true,
            MspaFirst,
        ),
        layout(
            25,
            "section usin",
            "IN",
            PROCESSING,
            8,
            Unsettled,
            1,
            true,
            false,
            MspaFirst,
        ),
        layout(
            26,
            "section usky",
            "KY",
            PROCESSING,
            8,
            Unsettled,
            1,
            true,
            false,
            MspaFirst,
        ),
        layout(
            27,
            "section usri",
            "RI",
            PROCESSING,
            8,
            Unsettled,
            1,
            true,
            false,
            MspaFirst,
        ),
    ]
};

/// A decoded US state section: the fields every state section has, in its
/// layout's lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSection {
    pub layout: &'static StateLayout,
    pub version: u8,
    /// The layout's notices, in its order.
    pub notices: Vec<Tri>,
    pub sale_opt_out: Tri,
    pub targeted_advertising_opt_out: Tri,
    /// By category, index 0 = category 1; read through `layout.geolocation`.
    pub sensitive_data_processing: Vec<Tri>,
    pub known_child_sensitive_data_consents: Vec<Tri>,
    /// `None` where the layout has no such field.
    pub additional_data_processing_consent: Option<Tri>,
    pub mspa_covered_transaction: Tri,
    /// Sections 9 to 23 only; not applicable in the others.
    pub mspa_opt_out_option_mode: Tri,
    /// Sections 9 to 23 only; not applicable in the others.
    pub mspa_service_provider_mode: Tri,
    /// MspaMode, the one mode field of sections 24 to 27 (`None` before
    /// them). Kept as read; the policy does not act on MSPA modes.
    pub mspa_mode: Option<Tri>,
    pub gpc: Option<bool>,
}

impl StateSection {
    /// Opted out of the sale of personal data or of targeted advertising.
    pub fn opted_out(&self) -> bool {
        [self.sale_opt_out, self.targeted_advertising_opt_out].contains(&Tri::One)
    }
}

/// A US Privacy string flag: Y, N or - (not applicable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UspFlag {
    Yes,
    No,
    NotApplicable,
}

/// The US Privacy section (id 6), version 1: `1` then the notice, opt-out of
/// sale and LSPA-covered flags, e.g. `1YYN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsPrivacy {
    /// Explicit notice and the opportunity to opt out were given.
    pub notice: UspFlag,
    /// The person opted out of the sale of their personal information.
    pub opt_out_sale: UspFlag,
    /// The transaction is covered by the IAB Limited Service Provider
    /// Agreement.
    pub lspa_covered: UspFlag,
}

/// usca's SensitiveDataProcessing index (0-based) for precise geolocation.
pub const USCA_PRECISE_GEOLOCATION: usize = 2;
/// usnat's SensitiveDataProcessing index (0-based) for precise geolocation.
pub const USNAT_PRECISE_GEOLOCATION: usize = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GppString {
    pub section_ids: Vec<u16>,
    pub tcfeuv2: Option<TcString>,
    pub uspv1: Option<UsPrivacy>,
    pub usnat: Option<UsNat>,
    pub usca: Option<UsCa>,
    /// The state sections after usca, in the string's order.
    pub states: Vec<StateSection>,
}

impl GppString {
    pub fn decode(text: &str) -> Result<Self, SignalError> {
        let mut parts = text.split('~');
        let header = parts.next().unwrap_or_default();
        if header.is_empty() {
            return Err(SignalError::new("header: is empty"));
        }
        let section_ids = header_ids(BitReader::new(header, "header")?)?;
        let sections: Vec<&str> = parts.collect();
        if sections.len() != section_ids.len() {
            return Err(SignalError::new(format!(
                "header lists {} section(s) but the string carries {}",
                section_ids.len(),
                sections.len()
            )));
        }
        let mut gpp = Self {
            section_ids,
            tcfeuv2: None,
            uspv1: None,
            usnat: None,
            usca: None,
            states: Vec::new(),
        };
        for (&id, &text) in gpp.section_ids.iter().zip(&sections) {
            match id {
                TCFEUV2 => {
                    gpp.tcfeuv2 = Some(
                        TcString::decode(text)
                            .map_err(|e| SignalError::new(format!("section tcfeuv2: {e}")))?,
                    )
                }
                USPV1 => gpp.uspv1 = Some(uspv1(text)?),
                USNAT => gpp.usnat = Some(usnat(text)?),
                USCA => gpp.usca = Some(usca(text)?),
                TCFCAV1 => tcfcav1(text)?,
                _ => match STATES.iter().find(|l| l.id == id) {
                    Some(layout) => gpp.states.push(state(layout, text)?),
                    None => not_applied(id, text)?,
                },
            }
        }
        Ok(gpp)
    }
}

/// Type (6) = 3, Version (6) = 1, then the section ids as a Fibonacci range.
fn header_ids(mut r: BitReader) -> Result<Vec<u16>, SignalError> {
    let kind = r.u8(6, "Type")?;
    if kind != 3 {
        return Err(r.error(format!("Type is {kind}; a GPP header has type 3")));
    }
    let version = r.u8(6, "Version")?;
    if version != 1 {
        return Err(r.error(format!("Version is {version}; only GPP version 1 is known")));
    }
    let entries = r.u16(12, "SectionIds NumEntries")?;
    let mut ids: Vec<u16> = Vec::new();
    let mut last = 0u64;
    for _ in 0..entries {
        let is_range = r.bit()?;
        let start = last + r.fibonacci("SectionIds offset")?;
        let end = if is_range {
            start + r.fibonacci("SectionIds range count")?
        } else {
            start
        };
        // Section ids are 6-bit values in the registry; anything larger is
        // garbage, and bounding it keeps a hostile range from allocating.
        if end > 63 {
            return Err(r.error(format!("SectionIds names section {end}; ids stop at 63")));
        }
        ids.extend((start..=end).map(|id| id as u16));
        last = end;
    }
    r.finish()?;
    Ok(ids)
}

/// The US Privacy string: exactly `1`, then three of Y, N or -. The
/// specification lets "-" stand for "unknown" in the notice and LSPA
/// positions, but the opt-out of sale "may never be unknown": there it is
/// allowed only in `1---`, the publisher's statement that US privacy law does
/// not apply.
fn uspv1(text: &str) -> Result<UsPrivacy, SignalError> {
    let err = |message: String| SignalError::new(format!("section uspv1: {message}"));
    let &[version, notice, opt_out_sale, lspa] = text.as_bytes() else {
        return Err(err(format!(
            "{text:?} is {} characters long; a US Privacy string has 4 (version, notice, opt-out of sale, LSPA)",
            text.chars().count()
        )));
    };
    if version != b'1' {
        return Err(err(format!(
            "Version is {:?}; only US Privacy version 1 is known",
            char::from(version)
        )));
    }
    let flag = |c: u8, field: &str| match c {
        b'Y' => Ok(UspFlag::Yes),
        b'N' => Ok(UspFlag::No),
        b'-' => Ok(UspFlag::NotApplicable),
        _ => Err(err(format!(
            "{field} is {:?}; it must be Y, N or -",
            char::from(c)
        ))),
    };
    let usp = UsPrivacy {
        notice: flag(notice, "Notice")?,
        opt_out_sale: flag(opt_out_sale, "OptOutSale")?,
        lspa_covered: flag(lspa, "LspaCovered")?,
    };
    if usp.opt_out_sale == UspFlag::NotApplicable
        && (usp.notice, usp.lspa_covered) != (UspFlag::NotApplicable, UspFlag::NotApplicable)
    {
        return Err(err(format!(
            "OptOutSale is \"-\" in {text:?}; it may be \"-\" only in \"1---\" (US privacy law does not apply)"
        )));
    }
    Ok(usp)
}

/// The Canadian TCF's layout, checked as far as every encoder of it agrees
/// (the IAB's JavaScript and Java ones have changed the vendor fields'
/// encoding and the version over time), so that a one-bit change in the
/// header that relabels a US section as this one is refused rather than
/// drops the US section's opt-outs. Segments are told apart by their first
/// three bits: 000 the core (whose first six are its version), 001 the
/// disclosed vendors, 011 the publisher purposes.
fn tcfcav1(text: &str) -> Result<(), SignalError> {
    let mut core = false;
    for (n, sub) in text.split('.').enumerate() {
        let mut r = BitReader::new(sub, format!("section tcfcav1: subsection {}", n + 1))?;
        match r.u8(3, "SegmentType")? {
            0 if core => return Err(r.error("a second core segment")),
            0 => {
                core = true;
                let version = r.u8(3, "Version")?;
                if !(1..=2).contains(&version) {
                    return Err(r.error(format!(
                        "Version is {version}; the Canadian TCF section has versions 1 and 2"
                    )));
                }
                for (field, width) in [
                    ("Created", 36),
                    ("LastUpdated", 36),
                    ("CmpId", 12),
                    ("CmpVersion", 12),
                    ("ConsentScreen", 6),
                ] {
                    r.read(width, field)?;
                }
                r.letters("ConsentLanguage")?;
                for (field, width) in [
                    ("VendorListVersion", 12),
                    ("TcfPolicyVersion", 6),
                    ("UseNonStandardStacks", 1),
                    ("SpecialFeatureExpressConsent", 12),
                    ("PurposesExpressConsent", 24),
                    ("PurposesImpliedConsent", 24),
                ] {
                    r.read(width, field)?;
                }
                // Each vendor field starts with at least a 12-bit count or
                // a 16-bit MaxId, depending on the encoder.
                if r.remaining() < 24 {
                    return Err(r.error(format!(
                        "{} bits are left for VendorExpressConsent and VendorImpliedConsent, which take at least 24; the string is truncated",
                        r.remaining()
                    )));
                }
            }
            1 => {
                if r.remaining() < 12 {
                    return Err(r.error("DisclosedVendors is truncated"));
                }
            }
            3 => {
                r.read(24, "PubPurposesExpressConsent")?;
                r.read(24, "PubPurposesImpliedConsent")?;
                let custom = usize::from(r.u8(6, "NumCustomPurposes")?);
                r.read(custom, "CustomPurposesExpressConsent")?;
                r.read(custom, "CustomPurposesImpliedConsent")?;
                r.finish()?;
            }
            t => {
                return Err(r.error(format!(
                    "SegmentType is {t}; the section's segments are the core (000), 1 (disclosed vendors) and 3 (publisher purposes)"
                )));
            }
        }
    }
    if !core {
        return Err(SignalError::new(
            "section tcfcav1: the core segment is missing",
        ));
    }
    Ok(())
}

/// A section the gateway does not apply: only what the core specification
/// fixes for every section is checked (see the module documentation).
fn not_applied(id: u16, text: &str) -> Result<(), SignalError> {
    for (n, sub) in text.split('.').enumerate() {
        let err =
            |what: String| SignalError::new(format!("section {id}: subsection {}: {what}", n + 1));
        if sub.is_empty() {
            return Err(err("is empty".into()));
        }
        if let Some((i, c)) = sub
            .char_indices()
            .find(|&(_, c)| !u8::try_from(c).is_ok_and(bits::is_url_safe_base64))
        {
            return Err(err(format!(
                "character {} ({c:?}) is not URL-safe base64",
                i + 1
            )));
        }
    }
    Ok(())
}

/// Splits a US section into its core and an optional GPC subsection; a
/// section whose specification defines none (`gpc_defined` false) may have
/// nothing after its core.
fn core_and_gpc<'a>(
    text: &'a str,
    name: &'static str,
    gpc_defined: bool,
) -> Result<(&'a str, Option<bool>), SignalError> {
    let mut parts = text.split('.');
    let core = parts.next().unwrap_or_default();
    let mut gpc = None;
    for (i, sub) in parts.enumerate() {
        if !gpc_defined {
            return Err(SignalError::new(format!(
                "{name}: a subsection follows the core, but the section defines none (no GPC subsection)"
            )));
        }
        // Numbered as the section reads: the core is subsection 1.
        let mut r = BitReader::new(sub, format!("{name}: subsection {}", i + 2))?;
        match r.u8(2, "SubsectionType")? {
            1 if gpc.is_none() => gpc = Some(r.bit()?),
            1 => return Err(r.error("the GPC subsection appears twice")),
            t => {
                return Err(r.error(format!(
                    "SubsectionType is {t}; only 1 (GPC) may follow the core"
                )));
            }
        }
        r.finish()?;
    }
    Ok((core, gpc))
}

fn usnat(text: &str) -> Result<UsNat, SignalError> {
    let (core, gpc) = core_and_gpc(text, "section usnat", true)?;
    let mut r = BitReader::new(core, "section usnat")?;
    let version = r.u8(6, "Version")?;
    let (sensitive, children) = match version {
        1 => (12, 2),
        2 => (16, 3),
        v => return Err(r.error(format!("Version is {v}; usnat versions 1 and 2 are known"))),
    };
    let t = |r: &mut BitReader, f: &str| Tri::read(r, f);
    let section = UsNat {
        version,
        sharing_notice: t(&mut r, "SharingNotice")?,
        sale_opt_out_notice: t(&mut r, "SaleOptOutNotice")?,
        sharing_opt_out_notice: t(&mut r, "SharingOptOutNotice")?,
        targeted_advertising_opt_out_notice: t(&mut r, "TargetedAdvertisingOptOutNotice")?,
        sensitive_data_processing_opt_out_notice: t(&mut r, "SensitiveDataProcessingOptOutNotice")?,
        sensitive_data_limit_use_notice: t(&mut r, "SensitiveDataLimitUseNotice")?,
        sale_opt_out: t(&mut r, "SaleOptOut")?,
        sharing_opt_out: t(&mut r, "SharingOptOut")?,
        targeted_advertising_opt_out: t(&mut r, "TargetedAdvertisingOptOut")?,
        sensitive_data_processing: Tri::read_n(&mut r, sensitive, "SensitiveDataProcessing")?,
        known_child_sensitive_data_consents: Tri::read_n(
            &mut r,
            children,
            "KnownChildSensitiveDataConsents",
        )?,
        personal_data_consents: t(&mut r, "PersonalDataConsents")?,
        mspa_covered_transaction: Tri::read_covered(&mut r)?,
        mspa_opt_out_option_mode: t(&mut r, "MspaOptOutOptionMode")?,
        mspa_service_provider_mode: t(&mut r, "MspaServiceProviderMode")?,
        gpc,
    };
    r.finish()?;
    Ok(section)
}

fn usca(text: &str) -> Result<UsCa, SignalError> {
    let (core, gpc) = core_and_gpc(text, "section usca", true)?;
    let mut r = BitReader::new(core, "section usca")?;
    let version = r.u8(6, "Version")?;
    if version != 1 {
        return Err(r.error(format!("Version is {version}; usca version 1 is known")));
    }
    let t = |r: &mut BitReader, f: &str| Tri::read(r, f);
    let section = UsCa {
        version,
        sale_opt_out_notice: t(&mut r, "SaleOptOutNotice")?,
        sharing_opt_out_notice: t(&mut r, "SharingOptOutNotice")?,
        sensitive_data_limit_use_notice: t(&mut r, "SensitiveDataLimitUseNotice")?,
        sale_opt_out: t(&mut r, "SaleOptOut")?,
        sharing_opt_out: t(&mut r, "SharingOptOut")?,
        sensitive_data_processing: Tri::read_n(&mut r, 9, "SensitiveDataProcessing")?,
        known_child_sensitive_data_consents: Tri::read_n(
            &mut r,
            2,
            "KnownChildSensitiveDataConsents",
        )?,
        personal_data_consents: t(&mut r, "PersonalDataConsents")?,
        mspa_covered_transaction: Tri::read_covered(&mut r)?,
        mspa_opt_out_option_mode: t(&mut r, "MspaOptOutOptionMode")?,
        mspa_service_provider_mode: t(&mut r, "MspaServiceProviderMode")?,
        gpc,
    };
    r.finish()?;
    Ok(section)
}

/// A US state section, read by its layout: every layout has version 1 only,
/// and every 2-bit field is strict (3 is refused, MspaCoveredTransaction
/// must be 1 or 2), as usnat's are.
fn state(layout: &'static StateLayout, text: &str) -> Result<StateSection, SignalError> {
    let mspa_first = layout.shape == Shape::MspaFirst;
    // After the core: a GPC subsection where the section defines one, else
    // (sections 24 on) the sensitive-data categories, without a type field.
    let (core, gpc, sensitive) = if layout.gpc || !mspa_first {
        let (core, gpc) = core_and_gpc(text, layout.what, layout.gpc)?;
        (core, gpc, None)
    } else {
        let mut parts = text.splitn(2, '.');
        let core = parts.next().unwrap_or_default();
        let sensitive = parts.next();
        if sensitive.is_some() && layout.sensitive_categories == 0 {
            return Err(SignalError::new(format!(
                "{}: a subsection follows the core, but the section defines none",
                layout.what
            )));
        }
        (core, None, sensitive)
    };
    let mut r = BitReader::new(core, layout.what)?;
    let version_field = if mspa_first { "MspaVersion" } else { "Version" };
    let version = r.u8(6, version_field)?;
    if version != 1 {
        return Err(r.error(format!(
            "{version_field} is {version}; only version 1 of this section is known"
        )));
    }
    let mspa_lead = if mspa_first {
        Some((Tri::read_covered(&mut r)?, Tri::read(&mut r, "MspaMode")?))
    } else {
        None
    };
    let notices = layout
        .notices
        .iter()
        .map(|n| Tri::read(&mut r, n))
        .collect::<Result<_, _>>()?;
    let sale_opt_out = Tri::read(&mut r, "SaleOptOut")?;
    let targeted_advertising_opt_out = Tri::read(&mut r, "TargetedAdvertisingOptOut")?;
    let sensitive_data_processing = match (mspa_first, sensitive) {
        (false, _) => Tri::read_n(
            &mut r,
            layout.sensitive_categories,
            "SensitiveDataProcessing",
        )?,
        (true, Some(sub)) => {
            let mut categories = BitReader::new(sub, layout.what)?;
            let read = Tri::read_n(
                &mut categories,
                layout.sensitive_categories,
                "SensitiveDataProcessing",
            )?;
            categories.finish()?;
            read
        }
        (true, None) => Vec::new(),
    };
    let known_child_sensitive_data_consents = Tri::read_n(
        &mut r,
        layout.child_fields,
        "KnownChildSensitiveDataConsents",
    )?;
    let additional_data_processing_consent = layout
        .additional_consent
        .then(|| Tri::read(&mut r, "AdditionalDataProcessingConsent"))
        .transpose()?;
    let (covered, opt_out_option_mode, service_provider_mode, mspa_mode) = match mspa_lead {
        Some((covered, mode)) => (covered, Tri::NotApplicable, Tri::NotApplicable, Some(mode)),
        None => (
            Tri::read_covered(&mut r)?,
            Tri::read(&mut r, "MspaOptOutOptionMode")?,
            Tri::read(&mut r, "MspaServiceProviderMode")?,
            None,
        ),
    };
    r.finish()?;
    Ok(StateSection {
        layout,
        version,
        notices,
        sale_opt_out,
        targeted_advertising_opt_out,
        sensitive_data_processing,
        known_child_sensitive_data_consents,
        additional_data_processing_consent,
        mspa_covered_transaction: covered,
        mspa_opt_out_option_mode: opt_out_option_mode,
        mspa_service_provider_mode: service_provider_mode,
        mspa_mode,
        gpc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::testing::{
        StateFields, gpp, state as state_section, usnat as usnat_section,
    };

    fn refusal(text: &str) -> String {
        GppString::decode(text).unwrap_err().to_string()
    }

    /// A usnat body of version 2 labelled version 1 would read as version 1
    /// with bits to spare, among them a known child's signal: it is refused.
    #[test]
    fn a_section_labelled_with_another_version_is_refused() {
        let v2 = GppString::decode("DBABL~CVVqAAAAAQRA").unwrap();
        assert_eq!(v2.usnat.unwrap().version, 2);
        let e = refusal("DBABL~BVVqAAAAAQRA");
        assert!(e.starts_with("section usnat: bit "), "{e}");
        assert!(e.contains("is set after the last field"), "{e}");
        // A GPC subsection and a header with set bits after their fields.
        let e = refusal("DBABL~CVVqAAAAAQRA.YB");
        assert!(e.starts_with("section usnat: subsection 2: bit "), "{e}");
        let e = refusal("DBABLB~CVVqAAAAAQRA");
        assert!(e.starts_with("header: bit "), "{e}");
    }

    /// Sections 24 to 27 as the IAB's own encoder (@iabgpp/cmpapi 3.2.0)
    /// writes them.
    #[test]
    fn the_mspa_first_sections_read_as_the_iabs_encoder_writes_them() {
        let only = |text: &str| {
            let gpp = GppString::decode(text).unwrap();
            assert_eq!(gpp.states.len(), 1, "{text}");
            gpp.states.into_iter().next().unwrap()
        };
        // usmd: a sale opt-out, then the GPC subsection with GPC off and on.
        let md = only("DBABEYA~BQRA.QA");
        assert_eq!(md.layout.state, "MD");
        assert_eq!(
            (md.sale_opt_out, md.targeted_advertising_opt_out, md.gpc),
            (Tri::One, Tri::NotApplicable, Some(false))
        );
        assert!(md.opted_out());
        assert_eq!(md.mspa_covered_transaction, Tri::One);
        assert_eq!(only("DBABEYA~BQQA.YA").gpc, Some(true));
        // usky: a targeted-advertising opt-out, and its sensitive-data subsection.
        let ky = only("DBABCYA~BQEQ.AAA");
        assert_eq!(ky.layout.state, "KY");
        assert_eq!(ky.targeted_advertising_opt_out, Tri::One);
        assert_eq!(ky.sensitive_data_processing, vec![Tri::NotApplicable; 8]);
        assert_eq!(ky.known_child_sensitive_data_consents, [Tri::NotApplicable]);
        // usin: a known child.
        let child = only("DBABUYA~BQQE.AAA");
        assert_eq!(child.layout.state, "IN");
        assert_eq!(child.known_child_sensitive_data_consents, [Tri::One]);
        assert!(!child.opted_out());

        assert!(refusal("DBABUYA~BQQE.AAA.AAA").contains("section usin"));
        assert!(refusal("DBABEYA~BQRA.AAA").contains("SubsectionType is 0"));
        assert!(refusal("DBABEYA~CQRA").contains("MspaVersion is 2"));
    }

    #[test]
    fn uspv1_is_decoded() {
        let no = usnat_section(2);
        for (usp, notice, opt_out, lspa) in [
            ("1YYN", UspFlag::Yes, UspFlag::Yes, UspFlag::No),
            ("1NNY", UspFlag::No, UspFlag::No, UspFlag::Yes),
            (
                "1-Y-",
                UspFlag::NotApplicable,
                UspFlag::Yes,
                UspFlag::NotApplicable,
            ),
            (
                "1---",
                UspFlag::NotApplicable,
                UspFlag::NotApplicable,
                UspFlag::NotApplicable,
            ),
        ] {
            let g = GppString::decode(&gpp(&[(USPV1, usp), (USNAT, &no)])).unwrap();
            assert_eq!(
                g.uspv1,
                Some(UsPrivacy {
                    notice,
                    opt_out_sale: opt_out,
                    lspa_covered: lspa
                }),
                "{usp}"
            );
            assert!(g.usnat.is_some());
        }
    }

    #[test]
    fn malformed_uspv1_is_refused_naming_the_section() {
        for (usp, says) in [
            ("1XYZ", "Notice is 'X'"),
            ("1YXN", "OptOutSale is 'X'"),
            ("1YNZ", "LspaCovered is 'Z'"),
            ("1ynn", "Notice is 'y'"),
            ("2YNN", "Version is '2'"),
            ("zz", "2 characters long"),
            ("1YNNN", "5 characters long"),
            ("1Y-N", "may be \"-\" only in \"1---\""),
            ("1--N", "may be \"-\" only in \"1---\""),
        ] {
            let e = refusal(&gpp(&[(USPV1, usp), (USNAT, &usnat_section(2))]));
            assert!(
                e.starts_with("section uspv1: ") && e.contains(says),
                "{usp}: {e}"
            );
        }
        let e = refusal(&gpp(&[(USPV1, "")]));
        assert!(e.starts_with("section uspv1: "), "{e}");
    }

    #[test]
    fn sections_not_applied_must_still_be_well_formed() {
        // Section 30 is registered after usri: the gateway does not apply it.
        let no = usnat_section(2);
        for other in ["BVVqAA", "BVVqAA.QA"] {
            let g = GppString::decode(&gpp(&[(USNAT, &no), (30, other)])).unwrap();
            assert_eq!(g.section_ids, vec![USNAT, 30]);
        }
        for (other, says) in [
            ("!!", "section 30: subsection 1: character 1 ('!')"),
            ("BVV*qAA", "section 30: subsection 1: character 4 ('*')"),
            ("BVVqAA..QA", "section 30: subsection 2: is empty"),
            ("", "section 30: subsection 1: is empty"),
            (
                "BVVqAA.Q\u{e9}",
                "section 30: subsection 2: character 2 ('\u{e9}')",
            ),
        ] {
            let e = refusal(&gpp(&[(USNAT, &no), (30, other)]));
            assert!(e.starts_with(says), "{other:?}: {e}");
        }
    }

    /// Canadian TCF sections as the IAB's @iabgpp/cmpapi 3.2.0 encodes them
    /// (`GppModel` with tcfcav1 fields set): the core alone with an empty
    /// publisher purposes segment, and one with vendors, three custom
    /// purposes and disclosed vendors.
    const TCFCAV1_PLAIN: &str = "BQdWToAQdWToAAfAAAENAACAAAAAAAAAAAAAAAAAAA.YAAAAAAAAAA";
    const TCFCAV1_FULL: &str =
        "BQdWToAQdWToAAfAAAENAACAAf___gAAAA-hAJNZrTDVSNUDAgGBecAMayKjAAA.YAAAAAAAAdY.IF5wAvlVGA";

    #[test]
    fn the_canadian_tcf_is_checked_not_applied() {
        let no = usnat_section(2);
        for tcfca in [TCFCAV1_PLAIN, TCFCAV1_FULL, &TCFCAV1_PLAIN[..42]] {
            let g = GppString::decode(&gpp(&[(5, tcfca), (USNAT, &no)])).unwrap();
            assert_eq!(g.section_ids, vec![5, USNAT]);
        }
        // A usnat body and its GPC subsection relabelled as the Canadian
        // TCF, as one flipped header bit does (DBABLA to DBABDA): refused,
        // where passing it over would drop the person's opt-out.
        let gpc = GppString::decode("DBABLA~CVVqqqqqqgCA.YA").unwrap();
        assert_eq!(gpc.usnat.unwrap().gpc, Some(true));
        let e = refusal("DBABDA~CVVqqqqqqgCA.YA");
        assert!(
            e.starts_with("section tcfcav1: subsection 1: ends at bit 72"),
            "{e}"
        );
        let e = refusal("DBABDA~CVVaqqqqqgCA.QA");
        assert!(e.starts_with("section tcfcav1: subsection 1:"), "{e}");
        for (tcfca, says) in [
            ("BVVqAA", "section tcfcav1: subsection 1: ends at bit 36"),
            (
                &format!("{TCFCAV1_PLAIN}.QA") as &str,
                "section tcfcav1: subsection 3: SegmentType is 2",
            ),
            (
                "YAAAAAAAAAA",
                "section tcfcav1: the core segment is missing",
            ),
            (
                &format!("{}.{}", &TCFCAV1_PLAIN[..42], &TCFCAV1_PLAIN[..42]),
                "section tcfcav1: subsection 2: a second core segment",
            ),
            (
                &format!("D{}", &TCFCAV1_PLAIN[1..]),
                "section tcfcav1: subsection 1: Version is 3",
            ),
            (
                &TCFCAV1_PLAIN[..34],
                "section tcfcav1: subsection 1: 5 bits are left for VendorExpressConsent",
            ),
            (
                &format!("{}.YAAAAAAAAAB", &TCFCAV1_PLAIN[..42]),
                "section tcfcav1: subsection 2: bit 66 is set after the last field",
            ),
            (
                &format!("{}.YAAAAAAAAd", &TCFCAV1_PLAIN[..42]),
                "section tcfcav1: subsection 2: ends at bit 60 while reading CustomPurposesImpliedConsent",
            ),
        ] {
            let e = refusal(&gpp(&[(5, tcfca), (USNAT, &no)]));
            assert!(e.starts_with(says), "{tcfca:?}: {e}");
        }
    }

    fn one_state(id: u16, text: &str) -> StateSection {
        let mut g = GppString::decode(&gpp(&[(id, text)])).unwrap();
        assert_eq!(g.states.len(), 1, "{id}");
        g.states.remove(0)
    }

    #[test]
    fn every_state_section_is_decoded_by_its_layout() {
        let codes = |v: &[Tri]| v.iter().map(|t| t.code()).collect::<Vec<_>>();
        for layout in &STATES {
            let f = StateFields {
                sale_opt_out: 1,
                targeted_opt_out: 2,
                geolocation: 2,
                child: 1,
                gpc: layout.gpc.then_some(true),
                ..StateFields::default()
            };
            let s = one_state(layout.id, &state_section(layout.id, f));
            let what = layout.what;
            assert_eq!(s.layout, layout, "{what}");
            assert_eq!(s.version, 1, "{what}");
            assert_eq!(codes(&s.notices), vec![1; layout.notices.len()], "{what}");
            assert_eq!(
                (s.sale_opt_out, s.targeted_advertising_opt_out),
                (Tri::One, Tri::Two)
            );
            assert!(s.opted_out(), "{what}");
            let sensitive = codes(&s.sensitive_data_processing);
            assert_eq!(sensitive.len(), layout.sensitive_categories, "{what}");
            let geolocation = match layout.geolocation {
                Geolocation::Consent(i) | Geolocation::OptOut(i) => Some(i),
                Geolocation::Unsettled => Some(7),
                Geolocation::Absent => None,
            };
            for (i, v) in sensitive.iter().enumerate() {
                assert_eq!(
                    *v,
                    if Some(i) == geolocation { 2 } else { 0 },
                    "{what} [{i}]"
                );
            }
            assert_eq!(
                codes(&s.known_child_sensitive_data_consents),
                vec![1; layout.child_fields],
                "{what}"
            );
            assert_eq!(
                s.additional_data_processing_consent,
                layout.additional_consent.then_some(Tri::NotApplicable),
                "{what}"
            );
            assert_eq!(s.mspa_covered_transaction, Tri::One, "{what}");
            assert_eq!(s.gpc, layout.gpc.then_some(true), "{what}");
            // No opt-out: the section is decoded and says so.
            let quiet = one_state(layout.id, &state_section(layout.id, StateFields::default()));
            assert!(!quiet.opted_out(), "{what}");
        }
        // Every state section in one string, as the header lists them.
        let texts: Vec<(u16, String)> = STATES
            .iter()
            .map(|l| (l.id, state_section(l.id, StateFields::default())))
            .collect();
        let pairs: Vec<(u16, &str)> = texts.iter().map(|(id, t)| (*id, t.as_str())).collect();
        let g = GppString::decode(&gpp(&pairs)).unwrap();
        assert_eq!(
            g.states.iter().map(|s| s.layout.id).collect::<Vec<_>>(),
            (9..=27).collect::<Vec<u16>>()
        );
    }

    /// Strings from the IAB's iabgpp-es test suite
    /// (modules/cmpapi/test/encoder/section/UsVa.test.ts, UsUt.test.ts,
    /// UsCt.test.ts, UsTx.test.ts, UsNj.test.ts), each encoded there from
    /// the field values asserted here.
    #[test]
    fn state_strings_from_the_iab_reference_library() {
        let codes = |v: &[Tri]| v.iter().map(|t| t.code()).collect::<Vec<_>>();
        let ut = one_state(11, "BVVkklW");
        assert_eq!(codes(&ut.notices), [1, 1, 1, 1]);
        assert!(ut.opted_out());
        assert_eq!(
            codes(&ut.sensitive_data_processing),
            [2, 1, 0, 2, 1, 0, 2, 1]
        );
        assert_eq!(codes(&ut.known_child_sensitive_data_consents), [1]);
        assert_eq!(ut.mspa_service_provider_mode, Tri::Two);
        let ct = one_state(12, "BVWSSZFg.YA");
        assert_eq!(
            codes(&ct.sensitive_data_processing),
            [2, 1, 0, 2, 1, 0, 2, 1]
        );
        assert_eq!(codes(&ct.known_child_sensitive_data_consents), [2, 1, 0]);
        assert_eq!(
            (ct.mspa_opt_out_option_mode, ct.gpc),
            (Tri::One, Some(true))
        );
        // The library decodes this one, 3s and all; it is refused here.
        let e = refusal(&gpp(&[(12, "BbYbG22w")]));
        assert!(
            e.starts_with("section usct: TargetedAdvertisingOptOutNotice is 3"),
            "{e}"
        );
        let va = one_state(9, "BVWSSVY");
        assert_eq!(codes(&va.notices), [1, 1, 1]);
        assert_eq!(
            (va.sale_opt_out, va.targeted_advertising_opt_out),
            (Tri::One, Tri::One)
        );
        assert_eq!(
            codes(&va.sensitive_data_processing),
            [2, 1, 0, 2, 1, 0, 2, 1]
        );
        assert_eq!(codes(&va.known_child_sensitive_data_consents), [1]);
        assert_eq!(
            (
                va.mspa_covered_transaction,
                va.mspa_opt_out_option_mode,
                va.mspa_service_provider_mode,
                va.gpc
            ),
            (Tri::One, Tri::One, Tri::Two, None)
        );
        for (tx, gpc) in [("BVWSSVWA.YA", Some(true)), ("BVWSSVW", None)] {
            let tx = one_state(16, tx);
            assert_eq!(
                codes(&tx.sensitive_data_processing),
                [2, 1, 0, 2, 1, 0, 2, 1]
            );
            assert_eq!(codes(&tx.known_child_sensitive_data_consents), [1]);
            assert_eq!(tx.additional_data_processing_consent, Some(Tri::One));
            assert_eq!(tx.mspa_service_provider_mode, Tri::Two);
            assert_eq!(tx.gpc, gpc);
            assert!(tx.opted_out());
        }
        let nj = one_state(21, "BVWSSRklWA.YA");
        assert_eq!(
            codes(&nj.sensitive_data_processing),
            [2, 1, 0, 2, 1, 0, 2, 1, 0, 1]
        );
        assert_eq!(
            codes(&nj.known_child_sensitive_data_consents),
            [2, 1, 0, 2, 1]
        );
        assert_eq!(nj.additional_data_processing_consent, Some(Tri::One));
        assert_eq!(nj.gpc, Some(true));
    }

    #[test]
    fn malformed_state_sections_are_refused_naming_the_section_and_field() {
        let version_2 = state_section(
            9,
            StateFields {
                version: 2,
                ..StateFields::default()
            },
        );
        let sale_3 = state_section(
            14,
            StateFields {
                sale_opt_out: 3,
                ..StateFields::default()
            },
        );
        let child_3 = state_section(
            21,
            StateFields {
                child: 3,
                ..StateFields::default()
            },
        );
        let cases = [
            (
                9,
                version_2.as_str(),
                "section usva: Version is 2; only version 1 of this section is known",
            ),
            (
                14,
                sale_3.as_str(),
                "section usmt: SaleOptOut is 3, which is undefined",
            ),
            (
                21,
                child_3.as_str(),
                "section usnj: KnownChildSensitiveDataConsents[1] is 3",
            ),
            // usva's 40 bits cut to 18: the second sensitive category is missing.
            (
                9,
                "BVW",
                "section usva: ends at bit 18 while reading SensitiveDataProcessing[2]",
            ),
            // Virginia defines no GPC subsection.
            (
                9,
                "BVWSSVY.YA",
                "section usva: a subsection follows the core",
            ),
            (
                16,
                "BVWSSVW.oA",
                "section ustx: subsection 2: SubsectionType is 2",
            ),
            (
                16,
                "BVWSSVW.YA.YA",
                "section ustx: subsection 3: the GPC subsection appears twice",
            ),
            (16, "BVWSSVW.", "section ustx: subsection 2: is empty"),
            (23, "", "section usmn: is empty"),
            (10, "BV*", "section usco: character 3 ('*')"),
        ];
        for (id, text, says) in cases {
            let e = refusal(&gpp(&[(id, text)]));
            assert!(e.starts_with(says), "{id} {text:?}: {e}");
        }
        // MspaCoveredTransaction 0: usva "BVWSSVY" with its 35th and 36th
        // bits cleared (the second "V", 010101, becomes "U", 010100).
        let e = refusal(&gpp(&[(9, "BVWSSUY")]));
        assert!(
            e.contains("section usva: MspaCoveredTransaction is 0"),
            "{e}"
        );
    }
}

//! IAB Global Privacy Platform strings: the header, and the sections the
//! policy interprets (tcfeuv2, uspv1, usnat, usca).
//!
//! Each US section is read by its own specification: usnat's
//! SensitiveDataProcessing values mean consent (2) or its absence (1), while
//! usca's mean an opt-out (1). uspv1 is the US Privacy string carried as a
//! section: four characters, not bits, decoded as strictly as the others.
//!
//! Sections the gateway does not apply (the other state sections, such as
//! usva, id 9, and the Canadian TCF) are kept as their ids only: the core
//! specification leaves each section's encoding to its own specification,
//! and a reader "aware of where the discrete section is" may skip one it
//! does not implement. What the core specification does fix for every
//! section is checked: it is present, and each of its `.`-separated
//! subsections is non-empty URL-safe base64 (uspv1's characters are in that
//! alphabet too). Garbage there is refused as a malformed string rather than
//! passed over; the choices such a section holds are not applied (a
//! publisher following a state-specific approach must also send usnat, GPC
//! or uspv1 for the gateway to honour an opt-out).
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
                _ => not_applied(id, text)?,
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

/// Splits a US section into its core and an optional GPC subsection.
fn core_and_gpc<'a>(
    text: &'a str,
    name: &'static str,
) -> Result<(&'a str, Option<bool>), SignalError> {
    let mut parts = text.split('.');
    let core = parts.next().unwrap_or_default();
    let mut gpc = None;
    for sub in parts {
        let mut r = BitReader::new(sub, name)?;
        match r.u8(2, "SubsectionType")? {
            1 if gpc.is_none() => gpc = Some(r.bit()?),
            1 => return Err(r.error("the GPC subsection appears twice")),
            t => {
                return Err(r.error(format!(
                    "SubsectionType is {t}; only 1 (GPC) may follow the core"
                )));
            }
        }
    }
    Ok((core, gpc))
}

fn usnat(text: &str) -> Result<UsNat, SignalError> {
    let (core, gpc) = core_and_gpc(text, "section usnat")?;
    let mut r = BitReader::new(core, "section usnat")?;
    let version = r.u8(6, "Version")?;
    let (sensitive, children) = match version {
        1 => (12, 2),
        2 => (16, 3),
        v => return Err(r.error(format!("Version is {v}; usnat versions 1 and 2 are known"))),
    };
    let t = |r: &mut BitReader, f: &str| Tri::read(r, f);
    Ok(UsNat {
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
    })
}

fn usca(text: &str) -> Result<UsCa, SignalError> {
    let (core, gpc) = core_and_gpc(text, "section usca")?;
    let mut r = BitReader::new(core, "section usca")?;
    let version = r.u8(6, "Version")?;
    if version != 1 {
        return Err(r.error(format!("Version is {version}; usca version 1 is known")));
    }
    let t = |r: &mut BitReader, f: &str| Tri::read(r, f);
    Ok(UsCa {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::testing::{gpp, usnat as usnat_section};

    fn refusal(text: &str) -> String {
        GppString::decode(text).unwrap_err().to_string()
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
        let no = usnat_section(2);
        for usva in ["BVVqAA", "BVVqAA.QA"] {
            let g = GppString::decode(&gpp(&[(USNAT, &no), (9, usva)])).unwrap();
            assert_eq!(g.section_ids, vec![USNAT, 9]);
        }
        for (usva, says) in [
            ("!!", "section 9: subsection 1: character 1 ('!')"),
            ("BVV*qAA", "section 9: subsection 1: character 4 ('*')"),
            ("BVVqAA..QA", "section 9: subsection 2: is empty"),
            ("", "section 9: subsection 1: is empty"),
            (
                "BVVqAA.Q\u{e9}",
                "section 9: subsection 2: character 2 ('\u{e9}')",
            ),
        ] {
            let e = refusal(&gpp(&[(USNAT, &no), (9, usva)]));
            assert!(e.starts_with(says), "{usva:?}: {e}");
        }
    }
}

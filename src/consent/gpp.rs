//! IAB Global Privacy Platform strings: the header, and the sections the
//! policy interprets (tcfeuv2, usnat, usca).
//!
//! Each US section is read by its own specification: usnat's
//! SensitiveDataProcessing values mean consent (2) or its absence (1), while
//! usca's mean an opt-out (1). Sections the policy does not interpret are
//! kept as their ids only.
//!
//! The `iab_gpp` crate was evaluated and not used: version 0.1.2 panics on
//! overflowing Fibonacci codes in a header (debug builds) and wraps them
//! silently in release, accepts ranges that end before they start, and hides
//! MaxVendorId, which TCF validation needs.

use super::{SignalError, bits::BitReader, tcf::TcString};

pub const TCFEUV2: u16 = 2;
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

/// usca's SensitiveDataProcessing index (0-based) for precise geolocation.
pub const USCA_PRECISE_GEOLOCATION: usize = 2;
/// usnat's SensitiveDataProcessing index (0-based) for precise geolocation.
pub const USNAT_PRECISE_GEOLOCATION: usize = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GppString {
    pub section_ids: Vec<u16>,
    pub tcfeuv2: Option<TcString>,
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
                USNAT => gpp.usnat = Some(usnat(text)?),
                USCA => gpp.usca = Some(usca(text)?),
                _ => {}
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

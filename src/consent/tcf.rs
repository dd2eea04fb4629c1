//! IAB TCF v2.2/v2.3 TC strings: decoding, the specification's validity
//! rules, and a vendor's legal basis for a purpose.
//!
//! The decoder is strict where the specification and the TCF policies are:
//! version 2 only, service-specific only, policy version 4 or later, no
//! legitimate-interest signal for the consent-only purposes 3-6, vendor ranges
//! inside MaxVendorId, no undefined publisher restriction, no unknown or
//! repeated segment, and a DisclosedVendors segment on every string created
//! from 2026-02-28 (TCF v2.3).

use super::{SignalError, bits::BitReader};

/// Strings created at or after this instant (2026-02-28T00:00:00Z, in
/// deciseconds since the epoch) must disclose their vendors (TCF v2.3).
pub const DISCLOSED_VENDORS_REQUIRED_FROM_DS: u64 = 1_772_236_800 * 10;

/// The purposes that may only rest on consent, never on legitimate interest,
/// and whose LI bits therefore invalidate a string.
const CONSENT_ONLY_LI_FORBIDDEN: [u8; 4] = [3, 4, 5, 6];

/// A set of vendor ids with the MaxVendorId it was encoded against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VendorSet {
    pub max_vendor_id: u16,
    words: Vec<u64>,
}

impl VendorSet {
    fn with_max(max_vendor_id: u16) -> Self {
        Self {
            max_vendor_id,
            words: vec![0; usize::from(max_vendor_id) / 64 + 1],
        }
    }

    fn insert(&mut self, id: u16) {
        self.words[usize::from(id) / 64] |= 1 << (id % 64);
    }

    /// Sets `start..=end` a word at a time: a hostile string of thousands of
    /// full-width ranges costs microseconds, not a walk over every id.
    fn insert_range(&mut self, start: u16, end: u16) {
        let (start, end) = (usize::from(start), usize::from(end));
        for w in start / 64..=end / 64 {
            let lo = if w == start / 64 { start % 64 } else { 0 };
            let hi = if w == end / 64 { end % 64 } else { 63 };
            let bits = (u64::MAX >> (63 - (hi - lo))) << lo;
            self.words[w] |= bits;
        }
    }

    pub fn contains(&self, id: u16) -> bool {
        self.words
            .get(usize::from(id) / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// The ids in ascending order.
    pub fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        (1..=self.max_vendor_id).filter(|id| self.contains(*id))
    }
}

/// What a publisher demands of vendors for one purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictionType {
    NotAllowed,
    RequireConsent,
    RequireLegitimateInterest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherRestriction {
    pub purpose: u8,
    pub restriction: RestrictionType,
    pub vendors: Vec<(u16, u16)>,
}

impl PublisherRestriction {
    fn covers(&self, vendor: u16) -> bool {
        self.vendors.iter().any(|&(s, e)| (s..=e).contains(&vendor))
    }
}

/// The PublisherTC segment: the publisher's own purposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherTc {
    pub purpose_consents: u32,
    pub purpose_legitimate_interests: u32,
    pub num_custom_purposes: u8,
    pub custom_purpose_consents: u64,
    pub custom_purpose_legitimate_interests: u64,
}

/// A decoded, validated TC string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcString {
    pub version: u8,
    /// Deciseconds since the Unix epoch, as encoded.
    pub created_ds: u64,
    pub last_updated_ds: u64,
    pub cmp_id: u16,
    pub cmp_version: u16,
    pub consent_screen: u8,
    pub consent_language: String,
    pub vendor_list_version: u16,
    pub policy_version: u8,
    pub is_service_specific: bool,
    pub use_non_standard_texts: bool,
    /// Bit i-1 set = special feature i opted in.
    pub special_feature_opt_ins: u16,
    /// Bit i-1 set = purpose i.
    pub purpose_consents: u32,
    pub purpose_legitimate_interests: u32,
    pub purpose_one_treatment: bool,
    pub publisher_cc: String,
    pub vendor_consents: VendorSet,
    pub vendor_legitimate_interests: VendorSet,
    pub publisher_restrictions: Vec<PublisherRestriction>,
    pub disclosed_vendors: Option<VendorSet>,
    pub allowed_vendors: Option<VendorSet>,
    pub publisher_tc: Option<PublisherTc>,
}

/// The lawful basis a vendor may rely on for a purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    Consent,
    LegitimateInterest,
}

/// Whether purpose `id` (1-based) is set in a purpose bit mask.
pub fn has(mask: u32, id: u8) -> bool {
    (1..=24).contains(&id) && mask & (1 << (id - 1)) != 0
}

/// The ids set in a mask, ascending.
pub fn ids(mask: u64, width: u8) -> Vec<u8> {
    (1..=width).filter(|i| mask & (1 << (i - 1)) != 0).collect()
}

impl TcString {
    /// Decodes and validates a TC string. `what` names it in errors (e.g.
    /// "tc_string" or "gpp_string section tcfeuv2").
    pub fn decode(text: &str) -> Result<Self, SignalError> {
        let mut segments = text.split('.');
        let core = segments.next().unwrap_or_default();
        if core.is_empty() {
            return Err(SignalError::new("core segment: is empty"));
        }
        let mut tc = Self::core(BitReader::new(core, "core segment")?)?;
        let mut seen = [false; 4];
        for segment in segments {
            let mut r = BitReader::new(segment, "segment")?;
            let kind = r.u8(3, "SegmentType")?;
            match kind {
                1..=3 if seen[usize::from(kind)] => {
                    return Err(SignalError::new(format!(
                        "segment type {kind} ({}) appears twice",
                        segment_name(kind)
                    )));
                }
                1 => tc.disclosed_vendors = Some(vendor_set(&mut r, "DisclosedVendors")?),
                2 => tc.allowed_vendors = Some(vendor_set(&mut r, "AllowedVendors")?),
                3 => tc.publisher_tc = Some(publisher_tc(&mut r)?),
                _ => {
                    return Err(SignalError::new(format!(
                        "segment type {kind} is not a TCF v2 segment (1 DisclosedVendors, 2 AllowedVendors, 3 PublisherTC)"
                    )));
                }
            }
            seen[usize::from(kind)] = true;
        }
        if tc.created_ds >= DISCLOSED_VENDORS_REQUIRED_FROM_DS && tc.disclosed_vendors.is_none() {
            return Err(SignalError::new(
                "DisclosedVendors segment is missing; TCF v2.3 requires it on strings created from 2026-02-28",
            ));
        }
        Ok(tc)
    }

    fn core(mut r: BitReader) -> Result<Self, SignalError> {
        let version = r.u8(6, "Version")?;
        if version != 2 {
            return Err(r.error(format!(
                "Version is {version}; only TCF v2 strings are accepted"
            )));
        }
        let created_ds = r.read(36, "Created")?;
        let last_updated_ds = r.read(36, "LastUpdated")?;
        let cmp_id = r.u16(12, "CmpId")?;
        let cmp_version = r.u16(12, "CmpVersion")?;
        let consent_screen = r.u8(6, "ConsentScreen")?;
        let consent_language = r.letters("ConsentLanguage")?;
        let vendor_list_version = r.u16(12, "VendorListVersion")?;
        let policy_version = r.u8(6, "TcfPolicyVersion")?;
        if policy_version < 4 {
            return Err(r.error(format!(
                "TcfPolicyVersion is {policy_version}; TCF v2.2 and later require 4 or more"
            )));
        }
        let is_service_specific = r.bit()?;
        if !is_service_specific {
            return Err(
                r.error("IsServiceSpecific is 0; global consent is no longer valid in TCF v2.2")
            );
        }
        let use_non_standard_texts = r.bit()?;
        let special_feature_opt_ins = r.mask(12, "SpecialFeatureOptIns")? as u16;
        let purpose_consents = r.mask(24, "PurposesConsent")? as u32;
        let purpose_legitimate_interests = r.mask(24, "PurposesLITransparency")? as u32;
        if let Some(p) = CONSENT_ONLY_LI_FORBIDDEN
            .iter()
            .find(|p| has(purpose_legitimate_interests, **p))
        {
            return Err(r.error(format!(
                "PurposesLITransparency sets purpose {p}, which allows consent only"
            )));
        }
        let purpose_one_treatment = r.bit()?;
        let publisher_cc = r.letters("PublisherCC")?;
        let vendor_consents = vendor_set(&mut r, "vendor consent section")?;
        let vendor_legitimate_interests = vendor_set(&mut r, "vendor legitimate interest section")?;
        let publisher_restrictions = restrictions(&mut r)?;
        Ok(Self {
            version,
            created_ds,
            last_updated_ds,
            cmp_id,
            cmp_version,
            consent_screen,
            consent_language,
            vendor_list_version,
            policy_version,
            is_service_specific,
            use_non_standard_texts,
            special_feature_opt_ins,
            purpose_consents,
            purpose_legitimate_interests,
            purpose_one_treatment,
            publisher_cc,
            vendor_consents,
            vendor_legitimate_interests,
            publisher_restrictions,
            disclosed_vendors: None,
            allowed_vendors: None,
            publisher_tc: None,
        })
    }

    /// The basis `vendor` may rely on for `purpose`, after the publisher's
    /// restrictions; `None` when the string allows neither.
    ///
    /// A restriction is applied first; then consent needs both the purpose's
    /// and the vendor's consent bit, and legitimate interest both LI bits, on a
    /// purpose that admits LI at all.
    pub fn basis(&self, vendor: u16, purpose: u8) -> Option<Basis> {
        let restriction = self
            .publisher_restrictions
            .iter()
            .find(|r| r.purpose == purpose && r.covers(vendor))
            .map(|r| r.restriction);
        let consent = has(self.purpose_consents, purpose) && self.vendor_consents.contains(vendor);
        let li = purpose_admits_li(purpose)
            && has(self.purpose_legitimate_interests, purpose)
            && self.vendor_legitimate_interests.contains(vendor);
        match restriction {
            Some(RestrictionType::NotAllowed) => None,
            Some(RestrictionType::RequireConsent) => consent.then_some(Basis::Consent),
            Some(RestrictionType::RequireLegitimateInterest) => {
                li.then_some(Basis::LegitimateInterest)
            }
            None if consent => Some(Basis::Consent),
            None => li.then_some(Basis::LegitimateInterest),
        }
    }

    /// The basis for `purpose` from the purpose signals alone, for when no
    /// vendor id is configured.
    pub fn purpose_basis(&self, purpose: u8) -> Option<Basis> {
        if has(self.purpose_consents, purpose) {
            Some(Basis::Consent)
        } else if purpose_admits_li(purpose) && has(self.purpose_legitimate_interests, purpose) {
            Some(Basis::LegitimateInterest)
        } else {
            None
        }
    }

    pub fn special_feature(&self, id: u8) -> bool {
        (1..=12).contains(&id) && self.special_feature_opt_ins & (1 << (id - 1)) != 0
    }

    /// The string's dates against the clock: created no later than last
    /// updated, and not updated in the future (a day's slack, since CMPs
    /// round to the day). A future date would outrank every later
    /// withdrawal.
    pub fn check_dates(&self, now_ms: i64) -> Result<(), SignalError> {
        if self.created_ds > self.last_updated_ds {
            return Err(SignalError::new(
                "core segment: Created is later than LastUpdated",
            ));
        }
        if self.last_updated_ms() > now_ms + 24 * 3600 * 1000 {
            return Err(SignalError::new(
                "core segment: LastUpdated lies in the future",
            ));
        }
        Ok(())
    }

    /// LastUpdated in milliseconds since the Unix epoch.
    pub fn last_updated_ms(&self) -> i64 {
        (self.last_updated_ds * 100) as i64
    }
}

/// Purposes 2 and 7-11 admit legitimate interest; 1 and 3-6 consent only.
pub fn purpose_admits_li(purpose: u8) -> bool {
    matches!(purpose, 2 | 7..=11)
}

fn segment_name(kind: u8) -> &'static str {
    match kind {
        1 => "DisclosedVendors",
        2 => "AllowedVendors",
        _ => "PublisherTC",
    }
}

/// MaxVendorId, IsRangeEncoding, then a bitfield or range entries.
fn vendor_set(r: &mut BitReader, section: &str) -> Result<VendorSet, SignalError> {
    let max = r.u16(16, format_args!("{section} MaxVendorId"))?;
    let mut set = VendorSet::with_max(max);
    if r.bit()? {
        for (start, end) in ranges(r, section)? {
            if end > max {
                return Err(r.error(format!(
                    "{section} range {start}-{end} exceeds MaxVendorId {max}"
                )));
            }
            set.insert_range(start, end);
        }
    } else {
        if r.remaining() < usize::from(max) {
            return Err(r.error(format!(
                "{section} bitfield ends before MaxVendorId {max}; the string is truncated"
            )));
        }
        // 64 vendors per read; id 1 is the first bit.
        let mut id = 1u16;
        while id <= max {
            let width = usize::from(max - id + 1).min(64);
            let bits = r.read(width, section)?;
            for k in 0..width {
                if bits >> (width - 1 - k) & 1 == 1 {
                    set.insert(id + k as u16);
                }
            }
            id = id.saturating_add(width as u16);
            if width < 64 {
                break;
            }
        }
    }
    Ok(set)
}

/// NumEntries × {IsARange, StartOrOnlyVendorId, [EndVendorId]}.
fn ranges(r: &mut BitReader, section: &str) -> Result<Vec<(u16, u16)>, SignalError> {
    let n = r.u16(12, format_args!("{section} NumEntries"))?;
    let mut out = Vec::with_capacity(usize::from(n).min(r.remaining() / 17 + 1));
    for _ in 0..n {
        let is_range = r.bit()?;
        let start = r.u16(16, format_args!("{section} StartOrOnlyVendorId"))?;
        let end = if is_range {
            r.u16(16, format_args!("{section} EndVendorId"))?
        } else {
            start
        };
        if start == 0 {
            return Err(r.error(format!("{section} names vendor id 0; ids start at 1")));
        }
        if end < start {
            return Err(r.error(format!(
                "{section} range ends at {end} before it starts at {start}"
            )));
        }
        out.push((start, end));
    }
    Ok(out)
}

fn restrictions(r: &mut BitReader) -> Result<Vec<PublisherRestriction>, SignalError> {
    let n = r.u16(12, "NumPubRestrictions")?;
    let mut out = Vec::with_capacity(usize::from(n).min(r.remaining() / 20 + 1));
    for _ in 0..n {
        let purpose = r.u8(6, "PubRestriction PurposeId")?;
        if purpose == 0 {
            return Err(r.error("publisher restriction names purpose 0; purposes start at 1"));
        }
        let restriction = match r.u8(2, "RestrictionType")? {
            0 => RestrictionType::NotAllowed,
            1 => RestrictionType::RequireConsent,
            2 => RestrictionType::RequireLegitimateInterest,
            _ => {
                return Err(r.error(format!(
                    "publisher restriction on purpose {purpose} has RestrictionType 3, which is undefined"
                )));
            }
        };
        let vendors = ranges(r, "publisher restriction")?;
        out.push(PublisherRestriction {
            purpose,
            restriction,
            vendors,
        });
    }
    Ok(out)
}

fn publisher_tc(r: &mut BitReader) -> Result<PublisherTc, SignalError> {
    let purpose_consents = r.mask(24, "PubPurposesConsent")? as u32;
    let purpose_legitimate_interests = r.mask(24, "PubPurposesLITransparency")? as u32;
    let num_custom_purposes = r.u8(6, "NumCustomPurposes")?;
    let width = usize::from(num_custom_purposes);
    let custom_purpose_consents = r.mask(width, "CustomPurposesConsent")?;
    let custom_purpose_legitimate_interests = r.mask(width, "CustomPurposesLITransparency")?;
    Ok(PublisherTc {
        purpose_consents,
        purpose_legitimate_interests,
        num_custom_purposes,
        custom_purpose_consents,
        custom_purpose_legitimate_interests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_dates(created_ds: u64, last_updated_ds: u64) -> TcString {
        TcString {
            version: 2,
            created_ds,
            last_updated_ds,
            cmp_id: 1,
            cmp_version: 1,
            consent_screen: 1,
            consent_language: "EN".into(),
            vendor_list_version: 1,
            policy_version: 5,
            is_service_specific: true,
            use_non_standard_texts: false,
            special_feature_opt_ins: 0,
            purpose_consents: 0,
            purpose_legitimate_interests: 0,
            purpose_one_treatment: false,
            publisher_cc: "DE".into(),
            vendor_consents: VendorSet::default(),
            vendor_legitimate_interests: VendorSet::default(),
            publisher_restrictions: vec![],
            disclosed_vendors: None,
            allowed_vendors: None,
            publisher_tc: None,
        }
    }

    #[test]
    fn dates_in_the_future_or_out_of_order_are_refused() {
        let now_ms = 1_795_000_000_000i64;
        let day_ds = 24 * 3600 * 10;
        let now_ds = (now_ms / 100) as u64;
        assert!(
            with_dates(now_ds - day_ds, now_ds)
                .check_dates(now_ms)
                .is_ok()
        );
        let future = with_dates(now_ds, now_ds + 2 * day_ds).check_dates(now_ms);
        assert!(
            future
                .unwrap_err()
                .to_string()
                .contains("LastUpdated lies in the future")
        );
        let disorder = with_dates(now_ds, now_ds - day_ds).check_dates(now_ms);
        assert!(
            disorder
                .unwrap_err()
                .to_string()
                .contains("Created is later")
        );
    }

    #[test]
    fn ranges_set_whole_words() {
        let mut set = VendorSet::with_max(65535);
        set.insert_range(1, 65535);
        assert!(set.contains(1) && set.contains(64) && set.contains(65535));
        let mut set = VendorSet::with_max(200);
        set.insert_range(63, 129);
        assert!(!set.contains(62) && set.contains(63) && set.contains(129) && !set.contains(130));
        assert_eq!(set.ids().count(), 67);
    }
}

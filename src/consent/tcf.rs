//! IAB TCF v2.2/v2.3 TC strings: decoding, the specification's validity
//! rules, and a vendor's legal basis for a purpose.
//!
//! The decoder is strict where the specification and the TCF policies are:
//! version 2 only, service-specific only, a policy version the gateway knows
//! (4, TCF v2.2, or 5, TCF v2.3), no legitimate-interest signal for the
//! consent-only purposes 3-6, vendor ranges inside MaxVendorId, no undefined
//! publisher restriction, no unknown or repeated segment, and a
//! DisclosedVendors segment on every string created or last updated from
//! 2026-02-28 (TCF v2.3).
//!
//! Created and LastUpdated must be plausible: neither may lie before
//! 2020-01-01. The v2 format was published in August 2019, but its Global
//! Vendor List, which every string's VendorListVersion and TcfPolicyVersion
//! name, opened for registration only in January 2020, so no real v2 string
//! is older. An older Created is a forgery or a broken CMP, and accepting it
//! would let a string dodge the date-keyed rules. (Created later than
//! LastUpdated, or LastUpdated in the future, needs the clock and is refused
//! by [`TcString::check_dates`].)

use super::{SignalError, bits::BitReader};

/// Strings created or last updated at or after this instant
/// (2026-02-28T00:00:00Z, in deciseconds since the epoch) must disclose their
/// vendors (TCF v2.3).
pub const DISCLOSED_VENDORS_REQUIRED_FROM_DS: u64 = 1_772_236_800 * 10;

/// No TCF v2 string is dated before 2020-01-01T00:00:00Z (deciseconds): see
/// the module documentation.
pub const EARLIEST_PLAUSIBLE_DS: u64 = 1_577_836_800 * 10;

/// The TcfPolicyVersion values the gateway knows: 4 (TCF v2.2) and 5 (TCF
/// v2.3). Older ones are invalid since 30 September 2023; a newer one means
/// policies (purposes, their legal bases) this gateway does not implement.
pub const KNOWN_POLICY_VERSIONS: std::ops::RangeInclusive<u8> = 4..=5;

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

/// The lawful bases a TC string allows for one purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bases {
    pub consent: bool,
    pub legitimate_interest: bool,
}

impl Bases {
    /// What two signals allow together: only a basis both allow.
    pub fn and(self, other: Self) -> Self {
        Self {
            consent: self.consent && other.consent,
            legitimate_interest: self.legitimate_interest && other.legitimate_interest,
        }
    }

    /// The basis to rely on: consent where given, else legitimate interest.
    pub fn preferred(self) -> Option<Basis> {
        if self.consent {
            Some(Basis::Consent)
        } else {
            self.legitimate_interest
                .then_some(Basis::LegitimateInterest)
        }
    }
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
    /// Decodes and validates a TC string; the caller puts the request field
    /// in front of errors.
    pub fn decode(text: &str) -> Result<Self, SignalError> {
        let mut segments = text.split('.');
        let core = segments.next().unwrap_or_default();
        if core.is_empty() {
            return Err(SignalError::new("core segment: is empty"));
        }
        let mut tc = Self::core(BitReader::new(core, "core segment")?)?;
        let mut seen = [false; 4];
        for (n, segment) in segments.enumerate() {
            // Numbered as the string reads: the core is segment 1.
            let mut r = BitReader::new(segment, format!("segment {}", n + 2))?;
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
                        "segment {}: segment type {kind} is not a TCF v2 segment (1 DisclosedVendors, 2 AllowedVendors, 3 PublisherTC)",
                        n + 2
                    )));
                }
            }
            r.finish()?;
            seen[usize::from(kind)] = true;
        }
        // Keyed on the later date: a CMP that rewrites a string must make it
        // comply, whatever Created says (an old Created alone must not exempt
        // a string updated yesterday).
        if tc.created_ds.max(tc.last_updated_ds) >= DISCLOSED_VENDORS_REQUIRED_FROM_DS
            && tc.disclosed_vendors.is_none()
        {
            return Err(SignalError::new(
                "DisclosedVendors segment is missing; TCF v2.3 requires it on strings created or last updated from 2026-02-28",
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
        let created_ds = plausible_date(&mut r, "Created")?;
        let last_updated_ds = plausible_date(&mut r, "LastUpdated")?;
        let cmp_id = r.u16(12, "CmpId")?;
        // IAB assigns CMP ids from 2 (its own encoder refuses 0 and 1): a
        // string that names no CMP has no one accountable for its consent.
        if cmp_id < 2 {
            return Err(r.error(format!("CmpId is {cmp_id}; registered CMP ids start at 2")));
        }
        let cmp_version = r.u16(12, "CmpVersion")?;
        let consent_screen = r.u8(6, "ConsentScreen")?;
        let consent_language = r.letters("ConsentLanguage")?;
        let vendor_list_version = r.u16(12, "VendorListVersion")?;
        if vendor_list_version == 0 {
            return Err(r.error(
                "VendorListVersion is 0; Global Vendor List versions start at 1, so the consent names no list of vendors",
            ));
        }
        let policy_version = r.u8(6, "TcfPolicyVersion")?;
        if !KNOWN_POLICY_VERSIONS.contains(&policy_version) {
            return Err(r.error(format!(
                "TcfPolicyVersion is {policy_version}; the gateway knows 4 (TCF v2.2) and 5 (TCF v2.3)"
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
        if let Some(p) =
            super::purposes::consent_only().find(|&p| has(purpose_legitimate_interests, p))
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
        r.finish()?;
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

    /// The bases `vendor` may rely on for `purpose` after the publisher's
    /// restrictions, or, with no vendor, the bases the purpose signals alone
    /// allow.
    ///
    /// Consent needs both the purpose's and the vendor's consent bit, and
    /// legitimate interest both LI bits, on a purpose that admits LI at all.
    /// Every restriction on the purpose that covers the vendor then applies
    /// (the specification gives no order among them, so the strictest
    /// combination stands: "require consent" with "require legitimate
    /// interest" leaves neither). A vendor the string's DisclosedVendors
    /// segment leaves out was never shown to the person, so it has no basis
    /// at all (TCF v2.3).
    pub fn bases(&self, vendor: Option<u16>, purpose: u8) -> Bases {
        let li_purpose =
            purpose_admits_li(purpose) && has(self.purpose_legitimate_interests, purpose);
        let consent_purpose = has(self.purpose_consents, purpose);
        let Some(vendor) = vendor else {
            return Bases {
                consent: consent_purpose,
                legitimate_interest: li_purpose,
            };
        };
        if self
            .disclosed_vendors
            .as_ref()
            .is_some_and(|d| !d.contains(vendor))
        {
            return Bases::default();
        }
        let unrestricted = Bases {
            consent: consent_purpose && self.vendor_consents.contains(vendor),
            legitimate_interest: li_purpose && self.vendor_legitimate_interests.contains(vendor),
        };
        unrestricted.and(self.publisher_allows(vendor, purpose))
    }

    /// The bases the publisher's restrictions leave `vendor` for `purpose`,
    /// whatever the person chose: none under "not allowed", consent only
    /// under "require consent", legitimate interest only under "require
    /// legitimate interest". A basis recorded elsewhere (the ledger) needs
    /// this leave too: a restriction is the publisher's choice for this
    /// vendor, which the person's choice does not change.
    pub fn publisher_allows(&self, vendor: u16, purpose: u8) -> Bases {
        let any = Bases {
            consent: true,
            legitimate_interest: true,
        };
        self.publisher_restrictions
            .iter()
            .filter(|r| r.purpose == purpose && r.covers(vendor))
            .fold(any, |bases, r| match r.restriction {
                RestrictionType::NotAllowed => Bases::default(),
                RestrictionType::RequireConsent => Bases {
                    legitimate_interest: false,
                    ..bases
                },
                RestrictionType::RequireLegitimateInterest => Bases {
                    consent: false,
                    ..bases
                },
            })
    }

    pub fn special_feature(&self, id: u8) -> bool {
        (1..=12).contains(&id) && self.special_feature_opt_ins & (1 << (id - 1)) != 0
    }

    /// The string's dates against the clock: created no later than last
    /// updated, and not updated in the future (a day's slack, since CMPs
    /// round to the day). A future date would outrank every later
    /// withdrawal.
    pub fn check_dates(&self, now_ms: i64) -> Result<(), SignalError> {
        // Encoders stamp the two fields from separate clock reads, each
        // rounded to deciseconds: the IAB's own vectors carry a Created 0.1 s
        // after LastUpdated. A second's slack keeps such strings, and still
        // refuses real disorder.
        if self.created_ds > self.last_updated_ds + CLOCK_READS_DS {
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

/// How far Created may follow LastUpdated, in deciseconds (see
/// [`TcString::check_dates`]).
const CLOCK_READS_DS: u64 = 10;

/// Reads a 36-bit date field, refusing one before any TCF v2 string existed.
fn plausible_date(r: &mut BitReader, field: &str) -> Result<u64, SignalError> {
    let ds = r.read(36, field)?;
    if ds >= EARLIEST_PLAUSIBLE_DS {
        return Ok(ds);
    }
    let day = jiff::Timestamp::from_millisecond((ds * 100) as i64)
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default();
    Err(r.error(format!(
        "{field} is {day}, before any TCF v2 string existed (2020-01-01)"
    )))
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
        // Two clock reads a decisecond apart, as encoders stamp them.
        assert!(with_dates(now_ds, now_ds - 1).check_dates(now_ms).is_ok());
        let disorder = with_dates(now_ds, now_ds - day_ds).check_dates(now_ms);
        assert!(
            disorder
                .unwrap_err()
                .to_string()
                .contains("Created is later")
        );
    }

    use crate::consent::testing::{Tc, VENDOR};

    const NOW_MS: i64 = 1_795_000_000_000;
    const DAY_DS: u64 = 24 * 3600 * 10;

    /// Deciseconds of a UTC midnight.
    fn day(y: i16, m: i8, d: i8) -> u64 {
        let t: jiff::Timestamp = format!("{y:04}-{m:02}-{d:02}T00:00:00Z").parse().unwrap();
        t.as_second() as u64 * 10
    }

    fn refusal(tc: &Tc) -> String {
        TcString::decode(&tc.encode()).unwrap_err().to_string()
    }

    #[test]
    fn dates_before_tcf_v2_existed_are_refused_naming_the_field() {
        let today = Tc::granted(NOW_MS).last_updated_ds;
        for (created, day_text) in [(0, "1970-01-01"), (day(2019, 1, 1), "2019-01-01")] {
            // With and without DisclosedVendors: the date alone is the defect.
            for disclosed in [None, Some(vec![VENDOR])] {
                let tc = Tc {
                    created_ds: created,
                    disclosed,
                    ..Tc::granted(NOW_MS)
                };
                let e = refusal(&tc);
                assert!(
                    e.starts_with("core segment: Created is ")
                        && e.contains(day_text)
                        && e.contains("2020-01-01"),
                    "{e}"
                );
            }
        }
        let e = refusal(&Tc {
            created_ds: day(2019, 12, 31),
            last_updated_ds: day(2019, 12, 31),
            ..Tc::granted(NOW_MS)
        });
        assert!(e.contains("Created is 2019-12-31"), "{e}");
        let e = refusal(&Tc {
            created_ds: day(2020, 6, 1),
            last_updated_ds: day(2019, 12, 31),
            ..Tc::granted(NOW_MS)
        });
        assert!(
            e.starts_with("core segment: LastUpdated is 2019-12-31"),
            "{e}"
        );
        // The first plausible day, and today, decode.
        for created in [day(2020, 1, 1), today] {
            let tc = Tc {
                created_ds: created,
                ..Tc::granted(NOW_MS)
            };
            assert!(TcString::decode(&tc.encode()).is_ok());
        }
    }

    #[test]
    fn disclosed_vendors_are_required_by_last_updated_not_created() {
        let cutoff = DISCLOSED_VENDORS_REQUIRED_FROM_DS;
        let missing = |created_ds, last_updated_ds| Tc {
            created_ds,
            last_updated_ds,
            disclosed: None,
            ..Tc::granted(NOW_MS)
        };
        // Created long before the cut-off, updated after it: must comply.
        for created in [day(2020, 1, 1), day(2023, 5, 1), cutoff - DAY_DS] {
            for updated in [cutoff, cutoff + 30 * DAY_DS] {
                let e = refusal(&missing(created, updated));
                assert!(e.contains("DisclosedVendors segment is missing"), "{e}");
            }
        }
        // Entirely before the cut-off: the segment was optional.
        let before = missing(day(2025, 6, 1), cutoff - 1);
        assert!(TcString::decode(&before.encode()).is_ok());
        let with = Tc {
            created_ds: day(2023, 5, 1),
            ..Tc::granted(NOW_MS)
        };
        assert!(TcString::decode(&with.encode()).is_ok());
    }

    #[test]
    fn only_known_policy_versions_are_accepted() {
        for version in [0, 3, 6, 7, 63] {
            let e = refusal(&Tc {
                policy_version: version,
                ..Tc::granted(NOW_MS)
            });
            assert!(
                e.contains(&format!("TcfPolicyVersion is {version};")),
                "{e}"
            );
        }
        for version in KNOWN_POLICY_VERSIONS {
            let tc = Tc {
                policy_version: u64::from(version),
                ..Tc::granted(NOW_MS)
            };
            assert_eq!(
                TcString::decode(&tc.encode()).unwrap().policy_version,
                version
            );
        }
    }

    #[test]
    fn a_string_names_a_registered_cmp_and_a_vendor_list() {
        for cmp_id in [0, 1] {
            let e = refusal(&Tc {
                cmp_id,
                ..Tc::granted(NOW_MS)
            });
            assert!(e.contains(&format!("CmpId is {cmp_id};")), "{e}");
        }
        let tc = Tc {
            cmp_id: 2,
            ..Tc::granted(NOW_MS)
        };
        assert_eq!(TcString::decode(&tc.encode()).unwrap().cmp_id, 2);
        let e = refusal(&Tc {
            vendor_list_version: 0,
            ..Tc::granted(NOW_MS)
        });
        assert!(e.contains("VendorListVersion is 0"), "{e}");
    }

    #[test]
    fn consent_only_purposes_on_legitimate_interest_are_refused() {
        for purpose in [1, 3, 4, 5, 6] {
            let e = refusal(&Tc {
                li_purposes: vec![2, purpose],
                ..Tc::granted(NOW_MS)
            });
            assert!(
                e.contains(&format!("PurposesLITransparency sets purpose {purpose},")),
                "{e}"
            );
        }
    }

    /// Encoders pad with zero bits; a set bit after a segment's last field is
    /// content its layout does not define, and the string is refused.
    #[test]
    fn only_zero_padding_follows_a_segment() {
        let text = Tc::granted(NOW_MS).encode();
        let (core, disclosed) = text.split_once('.').unwrap();
        assert!(TcString::decode(&format!("{core}A.{disclosed}A")).is_ok());
        let e = TcString::decode(&format!("{core}_.{disclosed}"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("core segment: bit "), "{e}");
        assert!(e.contains("is set after the last field"), "{e}");
        let e = TcString::decode(&format!("{core}.{disclosed}B"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("segment 2: bit "), "{e}");
    }

    #[test]
    fn bases_follow_restrictions_and_combine_to_what_both_allow() {
        let tc = TcString::decode(
            &Tc {
                purposes: vec![1, 2],
                li_purposes: vec![2],
                vendors: vec![VENDOR],
                li_vendors: vec![],
                ..Tc::granted(NOW_MS)
            }
            .encode(),
        )
        .unwrap();
        let consent_only = Bases {
            consent: true,
            legitimate_interest: false,
        };
        assert_eq!(tc.bases(Some(VENDOR), 2), consent_only);
        assert_eq!(
            tc.bases(None, 2),
            Bases {
                consent: true,
                legitimate_interest: true
            }
        );
        assert_eq!(tc.bases(Some(VENDOR + 1), 2), Bases::default());
        let li_only = Bases {
            consent: false,
            legitimate_interest: true,
        };
        assert_eq!(consent_only.and(li_only), Bases::default());
        assert_eq!(consent_only.and(li_only).preferred(), None);
        assert_eq!(consent_only.preferred(), Some(Basis::Consent));
        assert_eq!(li_only.preferred(), Some(Basis::LegitimateInterest));
    }

    #[test]
    fn every_restriction_on_the_vendor_applies_and_an_undisclosed_vendor_has_no_basis() {
        let decode = |tc: Tc| TcString::decode(&tc.encode()).unwrap();
        let granted = Tc::granted(NOW_MS);
        let restricted = |restrictions: Vec<(u8, u8, Vec<u16>)>| {
            decode(Tc {
                restrictions,
                ..granted.clone()
            })
        };
        let (consent, li) = (
            Bases {
                consent: true,
                legitimate_interest: false,
            },
            Bases {
                consent: false,
                legitimate_interest: true,
            },
        );
        // "Not allowed" stands in whichever order it comes.
        for kinds in [[1, 0], [0, 1], [2, 0]] {
            let tc = restricted(kinds.iter().map(|&k| (2, k, vec![VENDOR])).collect());
            assert_eq!(tc.bases(Some(VENDOR), 2), Bases::default(), "{kinds:?}");
            assert_eq!(
                tc.publisher_allows(VENDOR, 2),
                Bases::default(),
                "{kinds:?}"
            );
        }
        let contradictory = restricted(vec![(2, 1, vec![VENDOR]), (2, 2, vec![VENDOR])]);
        assert_eq!(contradictory.bases(Some(VENDOR), 2), Bases::default());
        assert_eq!(contradictory.publisher_allows(VENDOR, 2), Bases::default());
        let require_consent = restricted(vec![(2, 1, vec![VENDOR])]);
        assert_eq!(require_consent.bases(Some(VENDOR), 2), consent);
        assert_eq!(require_consent.publisher_allows(VENDOR, 2), consent);
        let require_li = restricted(vec![(2, 2, vec![VENDOR])]);
        assert_eq!(require_li.bases(Some(VENDOR), 2), li);
        assert_eq!(require_li.publisher_allows(VENDOR, 2), li);
        // Restrictions on another vendor or purpose change nothing here.
        let elsewhere = restricted(vec![(2, 0, vec![VENDOR + 1]), (3, 0, vec![VENDOR])]);
        assert_eq!(
            elsewhere.bases(Some(VENDOR), 2),
            Bases {
                consent: true,
                legitimate_interest: true
            }
        );
        assert_eq!(elsewhere.publisher_allows(VENDOR, 3), Bases::default());
        assert_eq!(
            elsewhere.publisher_allows(VENDOR, 2),
            elsewhere.bases(Some(VENDOR), 2)
        );

        let undisclosed = decode(Tc {
            disclosed: Some(vec![VENDOR + 1]),
            ..granted.clone()
        });
        assert_eq!(undisclosed.bases(Some(VENDOR), 1), Bases::default());
        assert_eq!(undisclosed.bases(Some(VENDOR), 2), Bases::default());
        // The purpose signals themselves are untouched.
        assert!(undisclosed.bases(None, 1).consent);
    }

    #[test]
    fn errors_name_the_segment_and_the_character_as_written() {
        let core = Tc {
            disclosed: None,
            ..Tc::granted(NOW_MS)
        }
        .encode();
        let refusal = |text: &str| TcString::decode(text).unwrap_err().to_string();
        let e = refusal(&format!("{core}.A\n"));
        assert!(e.starts_with("segment 2: character 2 ('\\n')"), "{e}");
        let e = refusal(&format!("{core}é"));
        let position = core.chars().count() + 1;
        assert!(
            e.starts_with(&format!("core segment: character {position} ('é')")),
            "{e}"
        );
        // SegmentType 4 (100): a segment no TCF v2 string has.
        let e = refusal(&format!("{core}.gA"));
        assert!(
            e.starts_with("segment 2: segment type 4 is not a TCF v2 segment"),
            "{e}"
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

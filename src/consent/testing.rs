//! Encoders for the unit tests: TC strings and GPP strings built field by
//! field, so a test can vary exactly the field it is about (a date, a policy
//! version, one purpose) instead of relying on a fixed fixture.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Bits, most significant first, written as six-bit characters.
#[derive(Default)]
pub struct BitWriter(Vec<bool>);

impl BitWriter {
    pub fn int(&mut self, value: u64, width: usize) -> &mut Self {
        assert!(
            width == 64 || value < 1 << width,
            "{value} needs more than {width} bits"
        );
        self.0.extend((0..width).rev().map(|i| value >> i & 1 == 1));
        self
    }

    /// Ids 1..=width as a bitfield, id 1 first.
    pub fn ids(&mut self, ids: &[u16], width: u16) -> &mut Self {
        self.0.extend((1..=width).map(|i| ids.contains(&i)));
        self
    }

    /// A GPP Fibonacci code (Zeckendorf, smallest term first, then a 1).
    fn fibonacci(&mut self, n: u64) -> &mut Self {
        let mut fibs = vec![1u64, 2];
        while fibs[fibs.len() - 1] <= n {
            fibs.push(fibs[fibs.len() - 1] + fibs[fibs.len() - 2]);
        }
        let mut bits = vec![false; fibs.len()];
        let mut rest = n;
        for i in (0..fibs.len()).rev() {
            if fibs[i] <= rest {
                bits[i] = true;
                rest -= fibs[i];
            }
        }
        while bits.last() == Some(&false) {
            bits.pop();
        }
        self.0.extend(bits);
        self.0.push(true);
        self
    }

    /// Pads with zeros to a multiple of `pad` bits (8 for TCF, 6 for GPP).
    pub fn encode(&self, pad: usize) -> String {
        let mut bits = self.0.clone();
        while !bits.len().is_multiple_of(pad) || !bits.len().is_multiple_of(6) {
            bits.push(false);
        }
        bits.chunks(6)
            .map(|c| {
                let n = c.iter().fold(0usize, |n, b| n << 1 | usize::from(*b));
                char::from(ALPHABET[n])
            })
            .collect()
    }
}

const DAY_DS: u64 = 24 * 3600 * 10;

/// A TC string's fields, everything granted for vendor 755 by default and
/// dated today.
#[derive(Clone)]
pub struct Tc {
    pub cmp_id: u64,
    pub vendor_list_version: u64,
    pub created_ds: u64,
    pub last_updated_ds: u64,
    pub policy_version: u64,
    pub special_features: Vec<u16>,
    pub purposes: Vec<u16>,
    pub li_purposes: Vec<u16>,
    pub vendors: Vec<u16>,
    pub li_vendors: Vec<u16>,
    /// The DisclosedVendors segment's vendors; `None` leaves it out.
    pub disclosed: Option<Vec<u16>>,
    /// Publisher restrictions: purpose, RestrictionType, vendors.
    pub restrictions: Vec<(u8, u8, Vec<u16>)>,
}

pub const VENDOR: u16 = 755;

impl Tc {
    pub fn granted(now_ms: i64) -> Self {
        let today = (now_ms as u64 / 100) / DAY_DS * DAY_DS;
        Self {
            cmp_id: 300,
            vendor_list_version: 150,
            created_ds: today,
            last_updated_ds: today,
            policy_version: 5,
            special_features: vec![1],
            purposes: (1..=10).collect(),
            li_purposes: vec![2, 7],
            vendors: vec![VENDOR],
            li_vendors: vec![VENDOR],
            disclosed: Some(vec![VENDOR]),
            restrictions: Vec::new(),
        }
    }

    pub fn encode(&self) -> String {
        let mut w = BitWriter::default();
        w.int(2, 6)
            .int(self.created_ds, 36)
            .int(self.last_updated_ds, 36)
            .int(self.cmp_id, 12)
            .int(1, 12) // CmpVersion
            .int(1, 6) // ConsentScreen
            .int(4, 6) // "EN"
            .int(13, 6)
            .int(self.vendor_list_version, 12)
            .int(self.policy_version, 6)
            .int(1, 1) // IsServiceSpecific
            .int(0, 1) // UseNonStandardTexts
            .ids(&self.special_features, 12)
            .ids(&self.purposes, 24)
            .ids(&self.li_purposes, 24)
            .int(0, 1) // PurposeOneTreatment
            .int(3, 6) // "DE"
            .int(4, 6);
        vendors(&mut w, &self.vendors);
        vendors(&mut w, &self.li_vendors);
        w.int(self.restrictions.len() as u64, 12); // NumPubRestrictions
        for (purpose, kind, vendors) in &self.restrictions {
            w.int(u64::from(*purpose), 6)
                .int(u64::from(*kind), 2)
                .int(vendors.len() as u64, 12);
            for &v in vendors {
                // A single vendor, not a range.
                w.int(0, 1).int(u64::from(v), 16);
            }
        }
        let mut text = w.encode(8);
        if let Some(disclosed) = &self.disclosed {
            let mut w = BitWriter::default();
            w.int(1, 3);
            vendors(&mut w, disclosed);
            text = format!("{text}.{}", w.encode(8));
        }
        text
    }
}

/// MaxVendorId, then a bitfield.
fn vendors(w: &mut BitWriter, ids: &[u16]) {
    let max = ids.iter().copied().max().unwrap_or(0);
    w.int(u64::from(max), 16).int(0, 1).ids(ids, max);
}

/// A GPP string of `(section id, section text)` pairs, ids ascending.
pub fn gpp(sections: &[(u16, &str)]) -> String {
    let mut w = BitWriter::default();
    w.int(3, 6).int(1, 6).int(sections.len() as u64, 12);
    let mut last = 0;
    for (id, _) in sections {
        w.int(0, 1).fibonacci(u64::from(id - last));
        last = *id;
    }
    let mut text = w.encode(6);
    for (_, section) in sections {
        text = format!("{text}~{section}");
    }
    text
}

/// A usnat version 1 section: notices given, no opt-out but `sale_opt_out`
/// (1 = opted out, 2 = did not), consent to precise geolocation, no child.
pub fn usnat(sale_opt_out: u64) -> String {
    usnat_with(1, sale_opt_out, 0)
}

/// A usnat section whose six notices all read `notices`, with the sale
/// opt-out and MspaServiceProviderMode given; sharing and targeting not
/// opted out.
pub fn usnat_with(notices: u64, sale_opt_out: u64, service_provider_mode: u64) -> String {
    let mut w = BitWriter::default();
    w.int(1, 6);
    for _ in 0..6 {
        w.int(notices, 2);
    }
    w.int(sale_opt_out, 2).int(2, 2).int(2, 2);
    for category in 1..=12 {
        w.int(if category == 8 { 2 } else { 0 }, 2);
    }
    w.int(0, 4) // KnownChildSensitiveDataConsents
        .int(0, 2) // PersonalDataConsents
        .int(2, 2) // MspaCoveredTransaction
        .int(0, 2) // MspaOptOutOptionMode
        .int(service_provider_mode, 2);
    w.encode(6)
}

/// A usca section: notices given, nothing opted out, no sensitive data
/// processed, no child.
pub fn usca() -> String {
    usca_with_limit_use_notice(1)
}

/// [`usca`] with SensitiveDataLimitUseNotice `notice`.
pub fn usca_with_limit_use_notice(notice: u64) -> String {
    let mut w = BitWriter::default();
    w.int(1, 6);
    // SaleOptOutNotice, SharingOptOutNotice, SensitiveDataLimitUseNotice.
    w.int(1, 2).int(1, 2).int(notice, 2);
    w.int(2, 2)
        .int(2, 2) // SaleOptOut, SharingOptOut
        .int(0, 18) // SensitiveDataProcessing
        .int(0, 4) // KnownChildSensitiveDataConsents
        .int(0, 2) // PersonalDataConsents
        .int(2, 2) // MspaCoveredTransaction
        .int(0, 4); // MspaOptOutOptionMode, MspaServiceProviderMode
    w.encode(6)
}

/// The fields a state-section test varies; the rest are fixed: version 1,
/// every notice given, no sensitive category but precise geolocation
/// processed, no additional-processing consent asked, MSPA covered.
#[derive(Clone, Copy)]
pub struct StateFields {
    pub version: u64,
    pub sale_opt_out: u64,
    pub targeted_opt_out: u64,
    /// The precise-geolocation category's value, where the layout has one.
    pub geolocation: u64,
    /// Every KnownChildSensitiveDataConsents field.
    pub child: u64,
    /// The GPC subsection, if any.
    pub gpc: Option<bool>,
    /// The notice of the sensitive-data opt-out, where the layout has one.
    pub sensitive_notice: u64,
}

impl Default for StateFields {
    /// Notices given and nothing opted out.
    fn default() -> Self {
        Self {
            version: 1,
            sale_opt_out: 2,
            targeted_opt_out: 2,
            geolocation: 0,
            child: 0,
            gpc: None,
            sensitive_notice: 1,
        }
    }
}

/// A US state section by its layout in `gpp::STATES`, in its shape.
pub fn state(id: u16, f: StateFields) -> String {
    use super::gpp::{Geolocation, STATES, Shape};
    let layout = STATES.iter().find(|l| l.id == id).expect("a state section");
    let geolocation = match layout.geolocation {
        Geolocation::Consent(i) | Geolocation::OptOut(i) => Some(i),
        // Category 8 (Virginia's and Connecticut's, one of Delaware's).
        Geolocation::Unsettled => Some(7),
        Geolocation::Absent => None,
    };
    let mut sensitive = BitWriter::default();
    for i in 0..layout.sensitive_categories {
        sensitive.int(
            if Some(i) == geolocation {
                f.geolocation
            } else {
                0
            },
            2,
        );
    }
    let mspa_first = layout.shape == Shape::MspaFirst;
    let mut w = BitWriter::default();
    w.int(f.version, 6);
    if mspa_first {
        w.int(1, 2) // MspaCoveredTransaction
            .int(0, 2); // MspaMode
    }
    for name in layout.notices {
        w.int(
            if name.starts_with("SensitiveData") {
                f.sensitive_notice
            } else {
                1
            },
            2,
        );
    }
    w.int(f.sale_opt_out, 2).int(f.targeted_opt_out, 2);
    if !mspa_first {
        w.0.extend(sensitive.0.iter().copied());
    }
    for _ in 0..layout.child_fields {
        w.int(f.child, 2);
    }
    if layout.additional_consent {
        w.int(0, 2);
    }
    if !mspa_first {
        w.int(1, 2) // MspaCoveredTransaction
            .int(0, 4); // MspaOptOutOptionMode, MspaServiceProviderMode
    }
    let core = w.encode(6);
    match f.gpc {
        Some(gpc) => {
            let mut w = BitWriter::default();
            w.int(1, 2).int(u64::from(gpc), 1);
            format!("{core}.{}", w.encode(6))
        }
        None if mspa_first && layout.sensitive_categories > 0 => {
            format!("{core}.{}", sensitive.encode(6))
        }
        None => core,
    }
}

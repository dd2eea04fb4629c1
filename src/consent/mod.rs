//! Consent: the signals a scoring request carries, the ledger that proves
//! what a person agreed to, and the policy that turns both into a tier.
//!
//! Consent is evaluated before any feature reaches a model: the gateway
//! decodes the signals here, reads the subject's ledger state, and lets
//! [`policy::Policy`] decide which features may be used. The outcome, with
//! everything it relied on, becomes the decision's [`policy::Provenance`].

pub mod bits;
pub mod gpp;
pub mod ledger;
pub mod policy;
pub mod purposes;
pub mod service;
pub mod tcf;
#[cfg(test)]
mod testing;

use sha2::{Digest, Sha256};

use self::{gpp::GppString, tcf::TcString};

/// A consent signal that breaks its specification. The message starts with
/// the request field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignalError(String);

impl SignalError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    fn in_field(self, field: &str) -> Self {
        Self(format!("{field}: {}", self.0))
    }
}

/// Where the person is, as the publisher determined it.
/// ISO 3166-1 alpha-2: the officially assigned codes (249, as pycountry
/// 26.2.16 lists them). A code reserved but not assigned ("UK", "EL",
/// "EU") names no country whose law applies.
const COUNTRIES: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// ISO 3166-2:US: the 50 states, the District of Columbia and the outlying
/// areas.
const US_SUBDIVISIONS: [&str; 57] = [
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
    "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY",
    "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV",
    "WI", "WY", "DC", "AS", "GU", "MP", "PR", "UM", "VI",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jurisdiction {
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    /// ISO 3166-2 subdivision without the country, e.g. "CA"; US states only.
    pub region: Option<String>,
}

impl Jurisdiction {
    /// "DE", or "US-CA" with a region.
    pub fn code(&self) -> String {
        match &self.region {
            Some(r) => format!("{}-{r}", self.country),
            None => self.country.clone(),
        }
    }

    /// What to use instead of a code people reach for that ISO keeps
    /// reserved, to follow an error message; empty for any other.
    pub fn reserved_hint(&self) -> &'static str {
        match self.country.as_str() {
            "UK" => "; the United Kingdom is \"GB\"",
            "EL" => "; Greece is \"GR\"",
            "EU" => "; name the person's own country",
            _ => "",
        }
    }

    /// Checks the codes' shape; errors name the request field.
    pub fn check(&self) -> Result<(), SignalError> {
        if !COUNTRIES.contains(&self.country.as_str()) {
            return Err(SignalError::new(format!(
                "context.jurisdiction_country: {:?} is not an assigned ISO 3166-1 alpha-2 code such as \"DE\" or \"US\"{}",
                self.country,
                self.reserved_hint()
            )));
        }
        if let Some(r) = &self.region
            && (r.is_empty()
                || r.len() > 3
                || !r
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
        {
            return Err(SignalError::new(format!(
                "context.jurisdiction_region: {r:?} is not an ISO 3166-2 subdivision code such as \"CA\""
            )));
        }
        // US law is decided state by state: a region that is no state would
        // silently fall back to the national rules.
        if let Some(r) = &self.region
            && self.country == "US"
            && !US_SUBDIVISIONS.contains(&r.as_str())
        {
            return Err(SignalError::new(format!(
                "context.jurisdiction_region: {r:?} is not a US state, DC or a US territory (ISO 3166-2:US, e.g. \"CA\")"
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgeStatus {
    #[default]
    Unknown,
    Adult,
    Minor,
}

impl AgeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Adult => "adult",
            Self::Minor => "minor",
        }
    }
}

/// A Google Consent Mode v2 flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModeFlag {
    #[default]
    Unset,
    Granted,
    Denied,
}

impl ModeFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Granted => "granted",
            Self::Denied => "denied",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConsentMode {
    pub ad_storage: ModeFlag,
    pub ad_user_data: ModeFlag,
    pub ad_personalization: ModeFlag,
    pub analytics_storage: ModeFlag,
}

/// The consent signals that arrive on a scoring request, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signals {
    pub jurisdiction: Option<Jurisdiction>,
    pub age: AgeStatus,
    pub tc_string: Option<String>,
    pub gpp_string: Option<String>,
    /// The Global Privacy Control flag (`Sec-GPC: 1`); absent means no
    /// preference was expressed.
    pub gpc: bool,
    pub consent_mode: ConsentMode,
}

/// Signals after decoding and validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub signals: Signals,
    pub tcf: Option<TcString>,
    pub gpp: Option<GppString>,
    /// Lower-case hex SHA-256 of the signals' canonical form: what the
    /// decision's provenance cites and the ledger's evidence records hold.
    pub hash: String,
}

impl Decoded {
    /// When the person last made their TCF choices: the newest LastUpdated
    /// of the TC strings the request carried (in `tc_string`, or the GPP
    /// string's tcfeuv2 section).
    pub fn tc_last_updated_ms(&self) -> Option<i64> {
        [
            self.tcf.as_ref(),
            self.gpp.as_ref().and_then(|g| g.tcfeuv2.as_ref()),
        ]
        .into_iter()
        .flatten()
        .map(TcString::last_updated_ms)
        .max()
    }
}

impl Signals {
    /// Validates the jurisdiction and decodes the IAB strings. Errors name the
    /// request field (`context.tc_string`, ...).
    pub fn decode(self) -> Result<Decoded, SignalError> {
        if let Some(j) = &self.jurisdiction {
            j.check()?;
        }
        let tcf = self
            .tc_string
            .as_deref()
            .map(TcString::decode)
            .transpose()
            .map_err(|e| e.in_field("context.tc_string"))?;
        let gpp = self
            .gpp_string
            .as_deref()
            .map(GppString::decode)
            .transpose()
            .map_err(|e| e.in_field("context.gpp_string"))?;
        let now = crate::store::now_ms();
        if let Some(t) = &tcf {
            t.check_dates(now)
                .map_err(|e| e.in_field("context.tc_string"))?;
        }
        if let Some(t) = gpp.as_ref().and_then(|g| g.tcfeuv2.as_ref()) {
            t.check_dates(now)
                .map_err(|e| e.in_field("context.gpp_string: section tcfeuv2"))?;
        }
        let hash = self.canonical_hash();
        Ok(Decoded {
            signals: self,
            tcf,
            gpp,
            hash,
        })
    }

    /// SHA-256 over a length-prefixed rendering of every signal, so that no
    /// two different signal sets share a canonical form. Requests under the
    /// same signals follow one another (every anonymous request from one
    /// region, a person's page views), so a thread reuses the hash it made
    /// last when the signals are equal.
    fn canonical_hash(&self) -> String {
        thread_local! {
            static LAST: std::cell::RefCell<Option<(Signals, String)>> =
                const { std::cell::RefCell::new(None) };
        }
        LAST.with_borrow_mut(|last| {
            if let Some((signals, hash)) = last.as_ref()
                && signals == self
            {
                return hash.clone();
            }
            let hash = self.hash_canonical_form();
            *last = Some((self.clone(), hash.clone()));
            hash
        })
    }

    fn hash_canonical_form(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |name: &str, value: &str| {
            h.update(name.as_bytes());
            h.update((value.len() as u64).to_be_bytes());
            h.update(value.as_bytes());
        };
        let (country, region) = self.jurisdiction.as_ref().map_or(("", ""), |j| {
            (j.country.as_str(), j.region.as_deref().unwrap_or(""))
        });
        field("country", country);
        field("region", region);
        field("age", self.age.as_str());
        field("tc_string", self.tc_string.as_deref().unwrap_or(""));
        field("gpp_string", self.gpp_string.as_deref().unwrap_or(""));
        field("gpc", if self.gpc { "1" } else { "0" });
        let m = &self.consent_mode;
        field("ad_storage", m.ad_storage.as_str());
        field("ad_user_data", m.ad_user_data.as_str());
        field("ad_personalization", m.ad_personalization.as_str());
        field("analytics_storage", m.analytics_storage.as_str());
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::testing::{Tc, gpp, usnat};

    fn refusal(tc: Option<String>, gpp: Option<String>) -> String {
        Signals {
            tc_string: tc,
            gpp_string: gpp,
            ..Signals::default()
        }
        .decode()
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn refusals_name_the_request_field_and_the_part_at_fault() {
        let epoch = Tc {
            created_ds: 0,
            ..Tc::granted(crate::store::now_ms())
        };
        let e = refusal(Some(epoch.encode()), None);
        assert!(
            e.starts_with("context.tc_string: core segment: Created is 1970-01-01"),
            "{e}"
        );
        let e = refusal(None, Some(gpp(&[(gpp::TCFEUV2, &epoch.encode())])));
        assert!(
            e.starts_with("context.gpp_string: section tcfeuv2: core segment: Created"),
            "{e}"
        );
        let e = refusal(
            None,
            Some(gpp(&[(gpp::USPV1, "1XYZ"), (gpp::USNAT, &usnat(2))])),
        );
        assert!(
            e.starts_with("context.gpp_string: section uspv1: Notice is 'X'"),
            "{e}"
        );
        let e = refusal(None, Some(gpp(&[(gpp::USNAT, &usnat(2)), (30, "!!")])));
        assert!(e.starts_with("context.gpp_string: section 30: "), "{e}");
        let e = refusal(None, Some(gpp(&[(gpp::USNAT, &usnat(2)), (9, "BVW")])));
        assert!(
            e.starts_with(
                "context.gpp_string: section usva: ends at bit 18 while reading SensitiveDataProcessing[2]"
            ),
            "{e}"
        );
    }
}

//! The consent service in plain Rust: validates record, withdrawal and
//! erasure requests, pseudonymises the subject, and talks to the ledger.
//! Handlers in [`crate::grpc`] convert protobuf messages to these types.

use std::sync::Arc;

use super::{
    ledger::{
        Actor, BROWSER_SIGNAL, Collection, Draft, Erasure, LedgerError, LedgerRef, LegalBasis,
        Notice, PurposeEntry, PurposeState, RecordKind, Status, StoredRecord, Verification, now_ms,
    },
    purposes::{self, DIRECT_MARKETING},
};
use crate::{
    consent::ledger::Ledger,
    decisions::cache::ExplanationCache,
    error::Error,
    models::manifest::DataCategory,
    paging::{Page, PageRequest, Position, Scope},
};

/// How far in the future a `collected_at` may lie, for clock skew.
const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// A consent choice to record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRequest {
    pub subject_id: String,
    /// (TCF purpose id, basis, granted).
    pub purposes: Vec<(u32, LegalBasis, bool)>,
    /// "cmp_ui", "api", "browser_signal" or "offline".
    pub method: &'static str,
    pub collected_at_ms: Option<i64>,
    pub notice: Option<Notice>,
    pub jurisdiction: String,
    pub language: String,
    pub data_categories: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WithdrawRequest {
    pub subject_id: String,
    pub purposes: Vec<u32>,
    pub objection: bool,
    pub method: String,
}

pub struct Consents {
    ledger: Arc<Ledger>,
    controller: String,
    /// Withdrawal, objection and erasure drop the subject's cached
    /// explanations at once.
    cache: Arc<ExplanationCache>,
}

/// A subject id as every call takes it. Its length is bounded only where it
/// is written (Score, RecordConsent, WithdrawConsent: the gRPC conversion):
/// reads and erasure take any length, so that a person recorded under a
/// longer id before writes were bounded still reaches their data.
fn subject(id: &str) -> Result<&str, Error> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(
            "subject_id: is empty; name the person by the publisher's identifier".into(),
        ));
    }
    Ok(id)
}

/// Names the request field of a purpose whose standing objection kept an
/// ad system's record from changing it ([`LedgerError::ObjectionStands`]).
fn naming_purpose(e: LedgerError, field: &str, ids: &[u8]) -> Error {
    match e {
        LedgerError::ObjectionStands { tcf_id, .. } => {
            let at = ids
                .iter()
                .position(|&id| id == tcf_id)
                .map_or_else(|| field.to_owned(), |i| format!("{field}[{i}]"));
            Error::FailedPrecondition(format!("{at}: {e}"))
        }
        e => e.into(),
    }
}

fn tcf_purpose(field: String, id: u32) -> Result<u8, Error> {
    match u8::try_from(id) {
        Ok(id @ 1..=12) => Ok(id),
        _ => Err(Error::InvalidArgument(format!(
            "{field}: {id} is neither a TCF v2.2 purpose (1-11) nor 12 (US sale or sharing)"
        ))),
    }
}

impl Consents {
    pub fn new(ledger: Arc<Ledger>, controller: String, cache: Arc<ExplanationCache>) -> Self {
        Self {
            ledger,
            controller,
            cache,
        }
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn controller(&self) -> &str {
        &self.controller
    }

    /// The pseudonym of the publisher's `subject_id`, which must be given.
    pub fn subject_ref(&self, subject_id: &str) -> Result<String, Error> {
        Ok(self.ledger.pseudonymise(subject(subject_id)?))
    }

    /// Records a consent choice made `by` the caller.
    pub async fn record(
        &self,
        request: RecordRequest,
        by: Actor,
    ) -> Result<(LedgerRef, String), Error> {
        let subject_ref = self.subject_ref(&request.subject_id)?;
        if request.purposes.is_empty() {
            return Err(Error::InvalidArgument(
                "purposes: is empty; record at least one purpose".into(),
            ));
        }
        let mut entries = Vec::with_capacity(request.purposes.len());
        for (i, &(id, basis, granted)) in request.purposes.iter().enumerate() {
            let id = tcf_purpose(format!("purposes[{i}].tcf_purpose"), id)?;
            let info = purposes::info(id).expect("1-11 are known");
            if basis == LegalBasis::LegitimateInterest && !info.admits_legitimate_interest {
                return Err(Error::InvalidArgument(format!(
                    "purposes[{i}].legal_basis: purpose {id} ({}) allows consent only",
                    info.name
                )));
            }
            if entries.iter().any(|e: &PurposeEntry| e.tcf_id == id) {
                return Err(Error::InvalidArgument(format!(
                    "purposes[{i}].tcf_purpose: purpose {id} appears twice"
                )));
            }
            entries.push(PurposeEntry {
                tcf_id: id,
                dpv: info.dpv.to_owned(),
                legal_basis: basis,
                status: if granted {
                    Status::Given
                } else {
                    Status::Refused
                },
            });
        }
        let now = now_ms();
        let collected_at_ms = request.collected_at_ms.unwrap_or(now);
        if collected_at_ms > now + CLOCK_SKEW_MS {
            return Err(Error::InvalidArgument(
                "collected_at: lies in the future".into(),
            ));
        }
        // Within the allowed skew, a consent takes effect now at the latest:
        // a withdrawal made after this call must outrank it.
        let collected_at_ms = collected_at_ms.min(now);
        for (i, c) in request.data_categories.iter().enumerate() {
            if serde_json::from_value::<DataCategory>(serde_json::Value::String(c.clone())).is_err()
            {
                return Err(Error::InvalidArgument(format!(
                    "data_categories[{i}]: {c:?} is not a known data category"
                )));
            }
        }
        if !request.jurisdiction.is_empty() {
            let (country, region) = request
                .jurisdiction
                .split_once('-')
                .map_or((request.jurisdiction.as_str(), None), |(c, r)| (c, Some(r)));
            let jurisdiction = super::Jurisdiction {
                country: country.to_owned(),
                region: region.map(str::to_owned),
            };
            if jurisdiction.check().is_err() {
                return Err(Error::InvalidArgument(format!(
                    "jurisdiction: {:?} is not an ISO 3166 code such as \"DE\" or \"US-CA\"{}",
                    request.jurisdiction,
                    jurisdiction.reserved_hint()
                )));
            }
        }
        let draft = Draft {
            kind: RecordKind::Consent,
            subject_ref: Some(subject_ref.clone()),
            controller: self.controller.clone(),
            purposes: entries,
            data_categories: request.data_categories,
            collection: Collection {
                method: request.method.to_owned(),
                collected_at_ms,
                jurisdiction: request.jurisdiction,
                language: request.language,
                notice: request.notice,
            },
            withdrawal_method: "WithdrawConsent, or the publisher's privacy centre".into(),
            evidence: None,
            recorded_by: Some(by),
        };
        let ids: Vec<u8> = draft.purposes.iter().map(|p| p.tcf_id).collect();
        let reference = (self.ledger.append(vec![draft]).await)
            .map_err(|e| naming_purpose(e, "purposes", &ids))?
            .remove(0);
        Ok((reference, subject_ref))
    }

    /// Records a withdrawal or objection made `by` the caller.
    pub async fn withdraw(
        &self,
        request: WithdrawRequest,
        by: Actor,
    ) -> Result<(LedgerRef, String), Error> {
        let subject_ref = self.subject_ref(&request.subject_id)?;
        let ids: Vec<u8> = if request.purposes.is_empty() {
            if request.objection {
                vec![DIRECT_MARKETING]
            } else {
                (1..=11).collect()
            }
        } else {
            request
                .purposes
                .iter()
                .enumerate()
                .map(|(i, id)| tcf_purpose(format!("tcf_purposes[{i}]"), *id))
                .collect::<Result<_, _>>()?
        };
        // The purposes as the request named them, by position.
        let named: Vec<u8> = (request.purposes.iter())
            .map(|&id| u8::try_from(id).unwrap_or(0))
            .collect();
        let (kind, status) = if request.objection {
            (RecordKind::Objection, Status::Objected)
        } else {
            (RecordKind::Withdrawal, Status::Withdrawn)
        };
        let draft = Draft {
            kind,
            subject_ref: Some(subject_ref.clone()),
            controller: self.controller.clone(),
            purposes: ids
                .into_iter()
                .map(|id| PurposeEntry {
                    tcf_id: id,
                    dpv: purposes::info(id).map_or("", |p| p.dpv).to_owned(),
                    legal_basis: LegalBasis::Consent,
                    status,
                })
                .collect(),
            data_categories: Vec::new(),
            collection: Collection {
                method: "api".into(),
                collected_at_ms: now_ms(),
                jurisdiction: String::new(),
                language: String::new(),
                notice: None,
            },
            withdrawal_method: request.method,
            evidence: None,
            recorded_by: Some(by),
        };
        let reference = (self.ledger.append(vec![draft]).await)
            .map_err(|e| naming_purpose(e, "tcf_purposes", &named))?
            .remove(0);
        // Before the ledger answers, a new explanation could still be cached
        // from the old state; dropping the subject's entries after it, in a
        // task of its own, leaves none.
        let (cache, subject) = (self.cache.clone(), subject_ref.clone());
        let _ = tokio::spawn(async move { cache.invalidate_subject(&subject, false) }).await;
        Ok((reference, subject_ref))
    }

    /// Records a US opt-out of sale or sharing (GPC or a GPP opt-out) for a
    /// known subject, so that it holds when later requests lack the signal.
    pub async fn remember_opt_out(
        &self,
        subject_ref: &str,
        jurisdiction: String,
    ) -> Result<(), Error> {
        let draft = Draft {
            kind: RecordKind::Objection,
            subject_ref: Some(subject_ref.to_owned()),
            controller: self.controller.clone(),
            purposes: vec![PurposeEntry {
                tcf_id: purposes::SALE_OR_SHARING,
                dpv: purposes::info(purposes::SALE_OR_SHARING)
                    .map_or("", |p| p.dpv)
                    .to_owned(),
                legal_basis: LegalBasis::Consent,
                status: Status::Objected,
            }],
            data_categories: Vec::new(),
            collection: Collection {
                method: BROWSER_SIGNAL.into(),
                collected_at_ms: now_ms(),
                jurisdiction,
                language: String::new(),
                notice: None,
            },
            withdrawal_method: "RecordConsent granting purpose 12 opts back in".into(),
            evidence: None,
            recorded_by: None,
        };
        self.ledger.append(vec![draft]).await?;
        Ok(())
    }

    /// A subject's state per purpose by pseudonym, as scoring reads it: from
    /// memory, else read on a blocking thread, since every pooled
    /// connection may be busy (a long report) and the async workers must
    /// go on serving meanwhile.
    pub async fn state_of(&self, subject_ref: &str) -> Result<Arc<Vec<PurposeState>>, Error> {
        if let Some(state) = self.ledger.cached_state(subject_ref) {
            return Ok(state);
        }
        let (ledger, key) = (self.ledger.clone(), subject_ref.to_owned());
        blocking(move || ledger.state(&key)).await
    }

    pub async fn state(&self, subject_id: &str) -> Result<(String, Vec<PurposeState>), Error> {
        let subject_ref = self.subject_ref(subject_id)?;
        let ledger = self.ledger.clone();
        let key = subject_ref.clone();
        let state = blocking(move || ledger.state(&key)).await?;
        Ok((subject_ref, state.as_ref().clone()))
    }

    /// One page of the records about the subject, oldest first.
    pub async fn history(&self, page: &PageRequest) -> Result<Page<StoredRecord>, Error> {
        let subject_ref = self.subject_ref(&page.subject_id)?;
        let after_seq = self
            .ledger
            .page_tokens()
            .open(Scope::ConsentHistory, &subject_ref, &page.token)?
            .map(Position::ledger)
            .transpose()?
            .unwrap_or(0);
        let records = self
            .records_after(&subject_ref, after_seq, page.size + 1)
            .await?;
        Ok(Page::of(subject_ref, records, page.size))
    }

    /// Up to `limit` records about the subject after `after_seq`, oldest
    /// first.
    pub async fn records_after(
        &self,
        subject_ref: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, Error> {
        let ledger = self.ledger.clone();
        let key = subject_ref.to_owned();
        blocking(move || ledger.history(&key, after_seq, limit)).await
    }

    pub async fn verify(&self) -> Result<Verification, Error> {
        let ledger = self.ledger.clone();
        blocking(move || ledger.verify()).await
    }

    /// Erases a subject at the request of `by`.
    pub async fn erase(&self, subject_id: &str, by: Actor) -> Result<Erasure, Error> {
        let subject_ref = self.subject_ref(subject_id)?;
        // The cache refuses the subject from now on, even entries read before
        // the erasure commits; then the ledger and record forget them.
        self.cache.invalidate_subject(&subject_ref, true);
        let erasure = self.ledger.erase(&subject_ref, by).await?;
        self.cache.invalidate_subject(&subject_ref, true);
        Ok(erasure)
    }
}

/// Runs a ledger read off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("ledger read panicked: {e}")))?
        .map_err(Error::from)
}

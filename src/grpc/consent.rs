//! `candor.v1.ConsentService` handlers and their conversions.
//!
//! Whatever a consent request says is kept in the append-only ledger for
//! good, so every field of a request that writes is checked here, before
//! anything is written: free text has a length bound, and fields whose
//! format the proto documents (a notice's SHA-256 and URL, a BCP 47
//! language, a Timestamp) must have it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    auth,
    convert::{MAX_ID_BYTES, identifier, ms_timestamp, printable, text, time_ms},
    page,
    pb::{self, consent_service_server::ConsentService},
};
use crate::{
    consent::{
        ledger::{LegalBasis, Notice, PurposeState},
        purposes,
        service::{RecordRequest, WithdrawRequest},
    },
    error::Error,
    gateway::Gateway,
    paging::{PageRequest, Scope},
};

pub struct Consent {
    gateway: Arc<Gateway>,
}

impl Consent {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

/// The longest notice URL accepted: what browsers and CDNs reliably carry.
const MAX_URL_BYTES: usize = 2048;

/// The longest language tag accepted: RFC 5646 §4.4.1 asks every
/// implementation to handle 35 characters, enough for any tag of a
/// language, script, region and variant.
const MAX_LANGUAGE_BYTES: usize = 35;

/// An absolute http(s) URL of printable ASCII with a host, or nothing.
fn notice_url(value: String) -> Result<String, Error> {
    let value = text("notice.url", value, MAX_URL_BYTES, "a URL")?;
    let valid = value.is_empty()
        || value.bytes().all(|b| b.is_ascii_graphic())
            && value.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some_and(|h| !h.is_empty())
            });
    if !valid {
        return Err(Error::InvalidArgument(format!(
            "notice.url: {value:?} is not an absolute http or https URL"
        )));
    }
    Ok(value)
}

/// 64 lower-case hex digits, as the proto documents, or nothing.
fn notice_sha256(value: String) -> Result<String, Error> {
    let valid = value.is_empty()
        || value.len() == 64
            && value
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        return Err(Error::InvalidArgument(format!(
            "notice.sha256: {value:?} is not a SHA-256 in lower-case hex (64 characters 0-9, a-f)"
        )));
    }
    Ok(value)
}

/// A well-formed BCP 47 tag (RFC 5646 §2.1: subtags of one to eight letters
/// or digits joined by hyphens, the first of two to eight letters), or
/// nothing. Whether each subtag is registered is not checked: the tag
/// records what the notice said, and new subtags are registered every year.
fn language(value: String) -> Result<String, Error> {
    let value = text("language", value, MAX_LANGUAGE_BYTES, "a language tag")?;
    let mut subtags = value.split('-');
    let primary = subtags.next().unwrap_or_default();
    let valid = value.is_empty()
        || (2..=8).contains(&primary.len())
            && primary.bytes().all(|b| b.is_ascii_alphabetic())
            && subtags.all(|s| {
                (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
            });
    if !valid {
        return Err(Error::InvalidArgument(format!(
            "language: {value:?} is not a BCP 47 language tag such as \"en\", \"de\" or \"pt-BR\""
        )));
    }
    Ok(value)
}

/// Refuses the second of two equal entries of a repeated field: each would
/// be kept in the ledger, and a purpose or category counts once anyway.
fn once<T: Eq + std::hash::Hash + std::fmt::Debug>(field: &str, values: &[T]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        if !seen.insert(v) {
            return Err(Error::InvalidArgument(format!(
                "{field}[{i}]: {v:?} appears twice"
            )));
        }
    }
    Ok(())
}

impl TryFrom<pb::RecordConsentRequest> for RecordRequest {
    type Error = Error;

    fn try_from(r: pb::RecordConsentRequest) -> Result<Self, Error> {
        let purposes = r
            .purposes
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let basis = match pb::LegalBasis::try_from(p.legal_basis) {
                    Ok(pb::LegalBasis::Unspecified | pb::LegalBasis::Consent) => {
                        LegalBasis::Consent
                    }
                    Ok(pb::LegalBasis::LegitimateInterest) => LegalBasis::LegitimateInterest,
                    Err(_) => {
                        return Err(Error::InvalidArgument(format!(
                            "purposes[{i}].legal_basis: {} is not a known basis",
                            p.legal_basis
                        )));
                    }
                };
                Ok((p.tcf_purpose, basis, p.granted))
            })
            .collect::<Result<_, _>>()?;
        let method = match pb::CollectionMethod::try_from(r.method) {
            Ok(pb::CollectionMethod::Unspecified | pb::CollectionMethod::Api) => "api",
            Ok(pb::CollectionMethod::CmpUi) => "cmp_ui",
            Ok(pb::CollectionMethod::BrowserSignal) => "browser_signal",
            Ok(pb::CollectionMethod::Offline) => "offline",
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "method: {} is not a known collection method",
                    r.method
                )));
            }
        };
        let collected_at_ms = r
            .collected_at
            .map(|t| time_ms("collected_at", t))
            .transpose()?;
        let notice = r
            .notice
            .map(|n| {
                Ok::<_, Error>(Notice {
                    url: notice_url(n.url)?,
                    version: identifier("notice.version", n.version)?,
                    sha256: notice_sha256(n.sha256)?,
                })
            })
            .transpose()?;
        once("data_categories", &r.data_categories)?;
        Ok(Self {
            subject_id: identifier("subject_id", r.subject_id)?,
            purposes,
            method,
            collected_at_ms,
            notice,
            // Checked as a jurisdiction by the consent service, which
            // bounds its length too.
            jurisdiction: r.jurisdiction,
            language: language(r.language)?,
            data_categories: r.data_categories,
        })
    }
}

impl TryFrom<pb::WithdrawConsentRequest> for WithdrawRequest {
    type Error = Error;

    fn try_from(r: pb::WithdrawConsentRequest) -> Result<Self, Error> {
        let objection = match pb::WithdrawalKind::try_from(r.kind) {
            Ok(pb::WithdrawalKind::Unspecified | pb::WithdrawalKind::Withdrawal) => false,
            Ok(pb::WithdrawalKind::Objection) => true,
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "kind: {} is not a known withdrawal kind",
                    r.kind
                )));
            }
        };
        once("tcf_purposes", &r.tcf_purposes)?;
        Ok(Self {
            subject_id: identifier("subject_id", r.subject_id)?,
            purposes: r.tcf_purposes,
            objection,
            method: if r.method.is_empty() {
                "ConsentService.WithdrawConsent".into()
            } else {
                printable("method", r.method, MAX_ID_BYTES, "a description")?
            },
        })
    }
}

impl TryFrom<pb::GetConsentHistoryRequest> for PageRequest {
    type Error = Error;

    fn try_from(r: pb::GetConsentHistoryRequest) -> Result<Self, Error> {
        Ok(Self {
            // Not bounded: a read stores nothing, and a person recorded
            // under a longer id before writes were bounded must still
            // reach their data (as GetConsent and EraseSubject do).
            subject_id: r.subject_id,
            size: page::size("page_size", r.page_size, 1000)?,
            token: r.page_token,
        })
    }
}

/// `GetConsentHistoryResponse.records`' field number.
const RECORDS_FIELD: u32 = 2;

impl From<PurposeState> for pb::PurposeConsent {
    fn from(s: PurposeState) -> Self {
        let info = purposes::info(s.tcf_id);
        Self {
            tcf_purpose: u32::from(s.tcf_id),
            name: info.map_or("", |p| p.name).to_owned(),
            dpv: info.map_or("", |p| p.dpv).to_owned(),
            status: s
                .status_at(crate::consent::ledger::now_ms())
                .as_str()
                .to_owned(),
            legal_basis: s.legal_basis.as_str().to_owned(),
            effective_at: Some(ms_timestamp(s.effective_at_ms)),
            expires_at: s.expires_at_ms.map(ms_timestamp),
            record: Some((&s.record).into()),
        }
    }
}

#[tonic::async_trait]
impl ConsentService for Consent {
    async fn record_consent(
        &self,
        request: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<pb::RecordConsentResponse>, Status> {
        let record = request.get_ref().clone().try_into()?;
        let admitted =
            auth::for_subject(&self.gateway, &request, &request.get_ref().subject_id).await?;
        let (record, subject_ref) = self
            .gateway
            .consents()
            .record(record, admitted.caller.as_actor())
            .await?;
        Ok(Response::new(pb::RecordConsentResponse {
            record: Some((&record).into()),
            subject_ref,
        }))
    }

    async fn withdraw_consent(
        &self,
        request: Request<pb::WithdrawConsentRequest>,
    ) -> Result<Response<pb::WithdrawConsentResponse>, Status> {
        let withdrawal = request.get_ref().clone().try_into()?;
        let admitted =
            auth::for_subject(&self.gateway, &request, &request.get_ref().subject_id).await?;
        let (record, subject_ref) = self
            .gateway
            .consents()
            .withdraw(withdrawal, admitted.caller.as_actor())
            .await?;
        Ok(Response::new(pb::WithdrawConsentResponse {
            record: Some((&record).into()),
            subject_ref,
        }))
    }

    async fn get_consent(
        &self,
        request: Request<pb::GetConsentRequest>,
    ) -> Result<Response<pb::GetConsentResponse>, Status> {
        auth::for_subject(&self.gateway, &request, &request.get_ref().subject_id).await?;
        let (subject_ref, state) = self
            .gateway
            .consents()
            .state(&request.into_inner().subject_id)
            .await?;
        Ok(Response::new(pb::GetConsentResponse {
            subject_ref,
            purposes: state.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_consent_history(
        &self,
        request: Request<pb::GetConsentHistoryRequest>,
    ) -> Result<Response<pb::GetConsentHistoryResponse>, Status> {
        let page: PageRequest = request.get_ref().clone().try_into()?;
        auth::for_subject_page(
            &self.gateway,
            &request,
            &page.subject_id,
            Some((Scope::ConsentHistory, &page.token)),
        )
        .await?;
        let page = self.gateway.consents().history(&page).await?;
        let envelope = pb::GetConsentHistoryResponse {
            subject_ref: page.subject_ref.clone(),
            records: Vec::new(),
            next_page_token: page::longest_token(),
        };
        let (records, last) = page::fit(
            &page,
            &envelope,
            self.gateway.config().max_message_bytes,
            RECORDS_FIELD,
            |r| pb::LedgerEntry {
                record: Some((&r.reference).into()),
                kind: r.kind.as_str().to_owned(),
                recorded_at: Some(ms_timestamp(r.recorded_at_ms)),
                prev_sha256: r.prev_hash.clone(),
                content_sha256: r.content_hash.clone(),
                content_json: r.content.clone().unwrap_or_default(),
            },
            |r| Ok(r.position()),
        )?;
        Ok(Response::new(pb::GetConsentHistoryResponse {
            next_page_token: last.map_or_else(String::new, |at| {
                self.gateway
                    .page_tokens()
                    .issue(Scope::ConsentHistory, &page.subject_ref, at)
            }),
            subject_ref: page.subject_ref,
            records,
        }))
    }

    async fn verify_ledger(
        &self,
        _request: Request<pb::VerifyLedgerRequest>,
    ) -> Result<Response<pb::VerifyLedgerResponse>, Status> {
        let v = self.gateway.consents().verify().await?;
        Ok(Response::new(pb::VerifyLedgerResponse {
            intact: v.broken.is_none(),
            records_checked: v.records,
            head_sha256: v.head,
            first_broken: v.broken.map(|b| pb::BrokenLink {
                seq: b.seq,
                record_id: b.record_id,
                reason: b.reason,
            }),
        }))
    }

    async fn erase_subject(
        &self,
        request: Request<pb::EraseSubjectRequest>,
    ) -> Result<Response<pb::EraseSubjectResponse>, Status> {
        let admitted =
            auth::for_subject(&self.gateway, &request, &request.get_ref().subject_id).await?;
        let erasure = self
            .gateway
            .consents()
            .erase(&request.into_inner().subject_id, admitted.caller.as_actor())
            .await?;
        Ok(Response::new(pb::EraseSubjectResponse {
            records_erased: erasure.records_erased,
            decisions_erased: erasure.decisions_erased,
            tombstone: Some((&erasure.tombstone).into()),
            kept: erasure.kept.into_iter().map(Into::into).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_proto_documents_are_checked() {
        let ok = |r: Result<String, Error>| r.unwrap();
        for url in [
            "",
            "https://publisher.example/privacy?v=3#ads",
            "http://localhost:8080",
            "HTTPS://[::1]/privacy",
        ] {
            ok(notice_url(url.into()));
        }
        for tag in [
            "",
            "en",
            "de",
            "pt-BR",
            "zh-Hant-TW",
            "sr-Latn-RS",
            "de-CH-1996",
            "gsw",
        ] {
            ok(language(tag.into()));
        }
        ok(notice_sha256(String::new()));
        ok(notice_sha256("0123456789abcdef".repeat(4)));
        let cases: Vec<(Result<String, Error>, &str)> = vec![
            (notice_url("publisher.example/privacy".into()), "notice.url"),
            (notice_url("ftp://publisher.example".into()), "notice.url"),
            (notice_url("https://".into()), "notice.url"),
            (notice_url("https:///path".into()), "notice.url"),
            (notice_url("https://a b.example".into()), "notice.url"),
            (notice_url("https://@".into()), "notice.url"),
            (notice_url("https://:443/privacy".into()), "notice.url"),
            (
                notice_url(format!("https://x.example/{}", "a".repeat(2048))),
                "notice.url: 2066 bytes",
            ),
            (notice_sha256("AB".repeat(32)), "notice.sha256"),
            (notice_sha256("ab".repeat(31)), "notice.sha256"),
            (notice_sha256("ab".repeat(33)), "notice.sha256"),
            (notice_sha256("zz".repeat(32)), "notice.sha256"),
            (language("e".into()), "language"),
            (language("english please".into()), "language"),
            (language("en-".into()), "language"),
            (language("en--GB".into()), "language"),
            (language("12".into()), "language"),
            (language("en-abcdefghi".into()), "language"),
            (language("a".repeat(10_000)), "language: 10000 bytes"),
        ];
        for (result, field) in cases {
            match result {
                Err(Error::InvalidArgument(m)) => assert!(m.starts_with(field), "{field}: {m}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_entry_repeated_in_a_list_is_named_at_its_second_place() {
        once("tcf_purposes", &[1u32, 3, 4]).unwrap();
        let e = once("tcf_purposes", &[1u32, 3, 1]).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m == "tcf_purposes[2]: 1 appears twice"),
            "{e}"
        );
    }
}

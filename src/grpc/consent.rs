//! `candor.v1.ConsentService` handlers and their conversions.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tonic::{Request, Response, Status};

use super::{
    auth,
    convert::timestamp,
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
};

pub struct Consent {
    gateway: Arc<Gateway>,
}

impl Consent {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

fn ms_timestamp(ms: i64) -> prost_types::Timestamp {
    timestamp(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
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
            .map(|t| {
                SystemTime::try_from(t)
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .and_then(|d| i64::try_from(d.as_millis()).ok())
                    .ok_or_else(|| {
                        Error::InvalidArgument(
                            "collected_at: is not a valid time after 1970".into(),
                        )
                    })
            })
            .transpose()?;
        Ok(Self {
            subject_id: r.subject_id,
            purposes,
            method,
            collected_at_ms,
            notice: r.notice.map(|n| Notice {
                url: n.url,
                version: n.version,
                sha256: n.sha256,
            }),
            jurisdiction: r.jurisdiction,
            language: r.language,
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
        Ok(Self {
            subject_id: r.subject_id,
            purposes: r.tcf_purposes,
            objection,
            method: if r.method.is_empty() {
                "ConsentService.WithdrawConsent".into()
            } else {
                r.method
            },
        })
    }
}

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
        auth::for_subject(&self.gateway, &request, &request.get_ref().subject_id).await?;
        let (record, subject_ref) = self
            .gateway
            .consents()
            .record(request.into_inner().try_into()?)
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
        auth::for_subject(&self.gateway, &request, &request.get_ref().subject_id).await?;
        let (record, subject_ref) = self
            .gateway
            .consents()
            .withdraw(request.into_inner().try_into()?)
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
        auth::for_subject(&self.gateway, &request, &request.get_ref().subject_id).await?;
        let (subject_ref, records) = self
            .gateway
            .consents()
            .history(&request.into_inner().subject_id)
            .await?;
        Ok(Response::new(pb::GetConsentHistoryResponse {
            subject_ref,
            records: records
                .into_iter()
                .map(|r| pb::LedgerEntry {
                    record: Some((&r.reference).into()),
                    kind: r.kind.as_str().to_owned(),
                    recorded_at: Some(ms_timestamp(r.recorded_at_ms)),
                    prev_sha256: r.prev_hash,
                    content_sha256: r.content_hash,
                    content_json: r.content.unwrap_or_default(),
                })
                .collect(),
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
        auth::for_subject(&self.gateway, &request, &request.get_ref().subject_id).await?;
        let erasure = self
            .gateway
            .consents()
            .erase(&request.into_inner().subject_id)
            .await?;
        Ok(Response::new(pb::EraseSubjectResponse {
            records_erased: erasure.records_erased,
            tombstone: Some((&erasure.tombstone).into()),
        }))
    }
}

//! The consent ledger: an append-only, hash-chained record of every consent,
//! withdrawal, objection, inline signal and erasure, in an embedded SQLite
//! database (a real file in WAL mode).
//!
//! Each record's hash covers the previous record's hash, its own position and
//! id, and the SHA-256 of its canonical content, so editing, removing or
//! reordering any row breaks the chain at that row. Erasure (GDPR Art. 17)
//! removes a subject's content and pseudonym but keeps each row's hashes: the
//! tombstones still verify, and an erasure record says what was erased.
//!
//! Subjects are stored only as a keyed HMAC of the publisher's identifier.
//! Writes go through the database's writer thread (group commit, see
//! [`crate::store`]).

use std::{collections::HashMap, sync::Arc};

use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Decoded;
pub use crate::store::{StoreError as LedgerError, now_ms};
use crate::{
    config::Role,
    paging::{PageTokens, Position},
    store::{Job, Store},
};

/// The collection method of an opt-out remembered from a browser signal
/// (GPC, a GPP opt-out) that came with a Score.
pub(crate) const BROWSER_SIGNAL: &str = "browser_signal";

/// Consent must be re-confirmed after 13 months (TCF policies; EDPB
/// guidance): the instant 13 calendar months after `ms` (UTC), a month's
/// end clamped as calendars do (31 Jan + 1 month = 28 or 29 Feb).
pub fn valid_until(ms: i64) -> i64 {
    use jiff::{Timestamp, ToSpan, tz::TimeZone};
    Timestamp::from_millisecond(ms)
        .ok()
        .and_then(|t| {
            t.to_zoned_datetime(TimeZone::UTC)
                .checked_add(13.months())
                .ok()
        })
        .map_or(i64::MAX, |t| t.timestamp().as_millisecond())
}

/// The prev_hash of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const SCHEMA: &str = "candor.consent-record/1 (ISO/IEC TS 27560:2023, Kantara Consent Receipt 1.1)";
/// A record's place in the chain: what a decision's provenance cites.
#[derive(get_size2::GetSize, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRef {
    pub seq: i64,
    pub record_id: String,
    pub hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Consent,
    Withdrawal,
    Objection,
    Evidence,
    Erasure,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consent => "consent",
            Self::Withdrawal => "withdrawal",
            Self::Objection => "objection",
            Self::Evidence => "evidence",
            Self::Erasure => "erasure",
        }
    }
}

/// ISO/IEC TS 27560 consent status. Only `Given` and `Renewed` permit
/// processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Given,
    Renewed,
    Refused,
    Withdrawn,
    Objected,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Given => "given",
            Self::Renewed => "renewed",
            Self::Refused => "refused",
            Self::Withdrawn => "withdrawn",
            Self::Objected => "objected",
            Self::Expired => "expired",
        }
    }

    pub fn permits(self) -> bool {
        matches!(self, Self::Given | Self::Renewed)
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Given,
            Self::Renewed,
            Self::Refused,
            Self::Withdrawn,
            Self::Objected,
            Self::Expired,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// GDPR Art. 6(1) bases a record may rest on.
#[derive(get_size2::GetSize, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    /// Art. 6(1)(a).
    Consent,
    /// Art. 6(1)(f).
    LegitimateInterest,
}

impl LegalBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consent => "consent",
            Self::LegitimateInterest => "legitimate_interest",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Consent, Self::LegitimateInterest]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// One purpose in a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurposeEntry {
    /// TCF purpose id, or 0 for direct marketing as a whole.
    pub tcf_id: u8,
    pub dpv: String,
    pub legal_basis: LegalBasis,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub url: String,
    pub version: String,
    /// SHA-256 of the notice text the person saw.
    pub sha256: String,
}

/// How and where the choice was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collection {
    /// "cmp_ui", "api", "browser_signal", "offline" or "inline_signal".
    pub method: String,
    pub collected_at_ms: i64,
    pub jurisdiction: String,
    pub language: String,
    pub notice: Option<Notice>,
}

/// Who made a change through the consent service: a staff member or
/// service by the name its credential carries, the person themselves, or
/// the open development gateway. Kept in the record itself, so a change made
/// for a person is accounted for as a staff read is (GDPR Art. 5(2)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub name: String,
    pub role: String,
}

/// The signals a scoring request carried, kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub signals_hash: String,
    pub tc_string: Option<String>,
    pub gpp_string: Option<String>,
    pub gpc: bool,
    pub age_status: String,
    pub consent_mode: String,
}

/// A record's canonical content: the receipt. Serialised with serde_json in
/// field order, which is what its content hash covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub schema: String,
    pub record_id: String,
    pub kind: RecordKind,
    pub subject_ref: Option<String>,
    pub controller: String,
    pub purposes: Vec<PurposeEntry>,
    pub data_categories: Vec<String>,
    pub collection: Collection,
    pub expires_at_ms: Option<i64>,
    pub withdrawal_method: String,
    pub evidence: Option<Evidence>,
    /// For an erasure record: the sequence numbers whose content was removed.
    pub erased_seqs: Vec<i64>,
    /// Who asked for it, for records made through the consent service;
    /// absent in records of signals, and in records written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_by: Option<Actor>,
}

/// A record to append; the ledger assigns its id and place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub kind: RecordKind,
    pub subject_ref: Option<String>,
    pub controller: String,
    pub purposes: Vec<PurposeEntry>,
    pub data_categories: Vec<String>,
    pub collection: Collection,
    pub withdrawal_method: String,
    pub evidence: Option<Evidence>,
    pub recorded_by: Option<Actor>,
}

/// A subject's current state for one purpose: the latest record that
/// decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurposeState {
    pub tcf_id: u8,
    pub status: Status,
    pub legal_basis: LegalBasis,
    pub effective_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub record: LedgerRef,
    /// The data categories the deciding record covers (its receipt's
    /// `data_categories`); empty when it names none, or when its content
    /// is erased, which limits nothing.
    pub data_categories: Vec<String>,
}

impl PurposeState {
    /// The status at `now`: a consent past its validity has expired.
    pub fn status_at(&self, now_ms: i64) -> Status {
        match self.expires_at_ms {
            Some(t) if self.status.permits() && now_ms >= t => Status::Expired,
            _ => self.status,
        }
    }
}

/// One stored record, as history returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub reference: LedgerRef,
    pub kind: RecordKind,
    pub recorded_at_ms: i64,
    pub prev_hash: String,
    pub content_hash: String,
    /// The canonical content (the receipt as JSON); `None` once erased.
    pub content: Option<String>,
}

impl StoredRecord {
    /// The record's place in the order pages list ledger records in.
    pub fn position(&self) -> Position {
        Position::Ledger {
            after_seq: self.reference.seq,
        }
    }
}

/// The first place the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: i64,
    pub record_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub records: u64,
    pub head: String,
    pub broken: Option<BrokenLink>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub records_erased: u64,
    pub decisions_erased: u64,
    pub tombstone: LedgerRef,
    /// The person's refusals, withdrawals and objections, kept so that they
    /// go on holding.
    pub kept: Vec<PurposeState>,
}

/// How long a person's signals, once recorded, are cited without being
/// recorded again: within the store's memory of erasures.
const EVIDENCE_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// Bytes each of the ledger's two caches may hold ([`crate::memory`]):
/// 64 MiB keeps the state, and the evidence, of about 80,000 recent people.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The ledger record of the signals a scoring request carried.
fn evidence_draft(subject_ref: Option<&str>, signals: &Decoded, controller: &str) -> Draft {
    let s = &signals.signals;
    let m = &s.consent_mode;
    Draft {
        kind: RecordKind::Evidence,
        subject_ref: subject_ref.map(str::to_owned),
        controller: controller.to_owned(),
        purposes: Vec::new(),
        data_categories: Vec::new(),
        collection: Collection {
            method: "inline_signal".into(),
            collected_at_ms: now_ms(),
            jurisdiction: s
                .jurisdiction
                .as_ref()
                .map_or(String::new(), super::Jurisdiction::code),
            language: signals
                .tcf
                .as_ref()
                .map_or(String::new(), |t| t.consent_language.to_lowercase()),
            notice: None,
        },
        withdrawal_method: String::new(),
        evidence: Some(Evidence {
            signals_hash: signals.hash.clone(),
            tc_string: s.tc_string.clone(),
            gpp_string: s.gpp_string.clone(),
            gpc: s.gpc,
            age_status: s.age.as_str().to_owned(),
            consent_mode: format!(
                "ad_storage={},ad_user_data={},ad_personalization={},analytics_storage={}",
                m.ad_storage.as_str(),
                m.ad_user_data.as_str(),
                m.ad_personalization.as_str(),
                m.analytics_storage.as_str()
            ),
        }),
        recorded_by: None,
    }
}

pub struct Ledger {
    store: Arc<Store>,
    key: Vec<u8>,
    /// (subject_ref, signals hash) → the evidence record already holding
    /// those signals, so repeated requests do not grow the ledger. Requests
    /// that miss together (the ad slots of one page view, for one person)
    /// share one append: each would otherwise add its own record, and wait
    /// for its own commit. With the time it was recorded: an erasure since
    /// erased it, and the next request records its signals anew (rather
    /// than have every erasure scan this cache for the person's entries).
    evidence_seen: moka::future::Cache<(String, String), (LedgerRef, i64)>,
    /// Subject → current consent state, so that scoring reads no SQLite. A
    /// change refreshes the entry after its commit and before the changing
    /// call returns; a concurrent reader fills only an absent entry, so it
    /// can never put back a state older than the refresh.
    states: moka::sync::Cache<String, Arc<Vec<PurposeState>>>,
    /// Held by each refresh of `states` from its read to its insert: two
    /// changes committed back to back would otherwise race, and the later
    /// insert could put back the older read.
    refreshing: Arc<std::sync::Mutex<()>>,
    page_tokens: PageTokens,
}

fn read_state(conn: &Connection, subject_ref: &str) -> Result<Vec<PurposeState>, LedgerError> {
    {
        let mut stmt = conn.prepare_cached(
            "SELECT s.tcf_id, s.status, s.legal_basis, s.effective_at, s.expires_at,
                        s.record_seq, s.record_id, s.record_hash,
                        json_extract(l.content, '$.data_categories')
                 FROM consent_state s LEFT JOIN ledger l ON l.seq = s.record_seq
                 WHERE s.subject_ref = ?1 ORDER BY s.tcf_id",
        )?;
        let rows = stmt.query_map([subject_ref], |r| {
            Ok((
                r.get::<_, u8>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
                LedgerRef {
                    seq: r.get(5)?,
                    record_id: r.get(6)?,
                    hash: r.get(7)?,
                },
                r.get::<_, Option<String>>(8)?,
            ))
        })?;
        rows.map(|row| {
            // The deciding record's data categories, as SQLite reads them
            // out of its receipt: one record often decides several
            // purposes, and its receipt can hold two consent strings.
            let (tcf_id, status, basis, effective_at_ms, expires_at_ms, record, categories) = row?;
            let corrupt = |what: &str| LedgerError::Corrupt {
                record_id: record.record_id.clone(),
                message: format!("state holds an unknown {what}"),
            };
            let data_categories = match categories {
                Some(categories) => {
                    serde_json::from_str::<Vec<String>>(&categories).map_err(|e| {
                        LedgerError::Corrupt {
                            record_id: record.record_id.clone(),
                            message: format!("its receipt's data_categories do not read: {e}"),
                        }
                    })?
                }
                None => Vec::new(),
            };
            Ok(PurposeState {
                tcf_id,
                status: Status::parse(&status).ok_or_else(|| corrupt("status"))?,
                legal_basis: LegalBasis::parse(&basis).ok_or_else(|| corrupt("legal basis"))?,
                effective_at_ms,
                expires_at_ms,
                record,
                data_categories,
            })
        })
        .collect()
    }
}

/// See [`Ledger::pseudonymise`].
pub fn pseudonym(subject_key: &[u8], subject_id: &str) -> String {
    hex::encode(mac_with(subject_key, subject_id).finalize().into_bytes())
}

/// See [`Ledger::token_key`]; `subject_key` is the pseudonymisation key.
pub fn token_key(subject_key: &[u8]) -> Vec<u8> {
    derived_key(subject_key, "candor subject-token key v1")
}

/// A key for one use, derived from the subject key but never equal to it
/// nor to a pseudonym (callers see pseudonyms), nor to another use's key.
/// A pseudonym is the MAC of a subject id, which is UTF-8 text of the
/// caller's choosing: without the 0xFF prefix, which UTF-8 never holds, a
/// caller who sent the purpose as a subject id would be shown the key.
fn derived_key(subject_key: &[u8], purpose: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(subject_key).expect("HMAC takes any key length");
    mac.update(&[0xFF]);
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn mac_with(key: &[u8], message: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The chained hash of one row.
fn link_hash(
    prev: &str,
    seq: i64,
    record_id: &str,
    kind: &str,
    at_ms: i64,
    content_hash: &str,
) -> String {
    sha256_hex(format!("{prev}\n{seq}\n{record_id}\n{kind}\n{at_ms}\n{content_hash}").as_bytes())
}

pub(crate) const DDL: &str = "
CREATE TABLE IF NOT EXISTS ledger (
    seq           INTEGER PRIMARY KEY,
    record_id     TEXT NOT NULL UNIQUE,
    subject_ref   TEXT,
    kind          TEXT NOT NULL,
    recorded_at   INTEGER NOT NULL,
    content       TEXT,
    content_hash  TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_subject ON ledger(subject_ref, seq);
-- Evidence records still holding their content, oldest first: what the
-- retention purge takes (expire_evidence). A record leaves the index as
-- its content is removed.
CREATE INDEX IF NOT EXISTS ledger_evidence_held ON ledger(recorded_at)
WHERE kind = 'evidence' AND content IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS ledger_append_only BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'the consent ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_erasure_only BEFORE UPDATE ON ledger
WHEN NEW.seq IS NOT OLD.seq OR NEW.record_id IS NOT OLD.record_id OR NEW.kind IS NOT OLD.kind
  OR NEW.recorded_at IS NOT OLD.recorded_at OR NEW.content_hash IS NOT OLD.content_hash
  OR NEW.prev_hash IS NOT OLD.prev_hash OR NEW.hash IS NOT OLD.hash
  OR NEW.content IS NOT NULL OR NEW.subject_ref IS NOT NULL
BEGIN SELECT RAISE(ABORT, 'ledger rows change only by erasure'); END;
CREATE TABLE IF NOT EXISTS consent_state (
    subject_ref   TEXT NOT NULL,
    tcf_id        INTEGER NOT NULL,
    status        TEXT NOT NULL,
    legal_basis   TEXT NOT NULL,
    effective_at  INTEGER NOT NULL,
    expires_at    INTEGER,
    record_seq    INTEGER NOT NULL,
    record_id     TEXT NOT NULL,
    record_hash   TEXT NOT NULL,
    PRIMARY KEY (subject_ref, tcf_id)
) WITHOUT ROWID;
";

impl Ledger {
    /// The ledger in `store`, pseudonymising subjects with `key`.
    pub fn new(store: Arc<Store>, key: Vec<u8>) -> Self {
        Self {
            store,
            evidence_seen: moka::future::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(
                    |(subject, signals): &(String, String), (r, _): &(LedgerRef, i64)| {
                        crate::memory::weight(
                            std::mem::size_of::<((String, String), (LedgerRef, i64))>()
                                + subject.capacity()
                                + signals.capacity()
                                + r.record_id.capacity()
                                + r.hash.capacity(),
                        )
                    },
                )
                // Within the store's memory of erasures, by which a cited
                // record is known to be erased.
                .time_to_live(EVIDENCE_TTL)
                .build(),
            states: moka::sync::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|subject: &String, state: &Arc<Vec<PurposeState>>| {
                    // The Arc's allocation holds its counts and the Vec.
                    let shared =
                        2 * std::mem::size_of::<usize>() + std::mem::size_of::<Vec<PurposeState>>();
                    crate::memory::weight(
                        std::mem::size_of::<(String, Arc<Vec<PurposeState>>)>()
                            + subject.capacity()
                            + shared
                            + state.capacity() * std::mem::size_of::<PurposeState>()
                            + state
                                .iter()
                                .map(|s| {
                                    s.record.record_id.capacity()
                                        + s.record.hash.capacity()
                                        + s.data_categories.capacity()
                                            * std::mem::size_of::<String>()
                                        + s.data_categories
                                            .iter()
                                            .map(String::capacity)
                                            .sum::<usize>()
                                })
                                .sum::<usize>(),
                    )
                })
                .build(),
            refreshing: Arc::default(),
            page_tokens: PageTokens::new(derived_key(&key, "candor page-token key v1")),
            key,
        }
    }

    /// The key that signs consumer tokens: derived from the subject key but
    /// never equal to it, so a pseudonym (which callers see) can never
    /// serve as a token signature.
    pub fn token_key(&self) -> Vec<u8> {
        token_key(&self.key)
    }

    /// Tokens that carry a page's end to the next call, authenticated
    /// with a key derived from the subject key.
    pub fn page_tokens(&self) -> &PageTokens {
        &self.page_tokens
    }

    /// The pseudonymous subject reference: HMAC-SHA256 of the publisher's
    /// identifier under the configured key, in hex.
    pub fn pseudonymise(&self, subject_id: &str) -> String {
        pseudonym(&self.key, subject_id)
    }

    /// The records a decision cited, in chain order.
    pub fn records(&self, refs: &[LedgerRef]) -> Result<Vec<StoredRecord>, LedgerError> {
        self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, record_id, kind, recorded_at, prev_hash, content_hash, hash, content
                 FROM ledger WHERE seq = ?1",
            )?;
            let mut out = Vec::with_capacity(refs.len());
            for r in refs {
                if let Some(row) = stmt.query_map([r.seq], stored_record)?.next() {
                    out.push(row??);
                }
            }
            Ok(out)
        })
    }

    /// Appends records and returns once they are committed.
    pub async fn append(&self, drafts: Vec<Draft>) -> Result<Vec<LedgerRef>, LedgerError> {
        let mut changed: Vec<String> = drafts
            .iter()
            .filter(|d| d.kind != RecordKind::Evidence)
            .filter_map(|d| d.subject_ref.clone())
            .collect();
        changed.dedup();
        if changed.is_empty() {
            return self.store.submit(|tx| Job::Append(drafts, tx)).await;
        }
        // Commit and refresh in a task of their own: a caller that hangs up
        // mid-way must not leave the old state in memory.
        let (store, states, refreshing) = (
            self.store.clone(),
            self.states.clone(),
            self.refreshing.clone(),
        );
        tokio::spawn(async move {
            let refs = store.submit(|tx| Job::Append(drafts, tx)).await;
            // The read waits for a pooled connection: off the async workers.
            tokio::task::spawn_blocking(move || {
                let _refreshing = refreshing.lock().unwrap_or_else(|e| e.into_inner());
                for subject in changed {
                    match store.read(|conn| read_state(conn, &subject)) {
                        Ok(fresh) => states.insert(subject, Arc::new(fresh)),
                        // The next look-up reads SQLite instead.
                        Err(_) => states.invalidate(&subject),
                    }
                }
            })
            .await
            .map_err(|_| LedgerError::ShutDown)?;
            refs
        })
        .await
        .map_err(|_| LedgerError::ShutDown)?
    }

    /// Records the signals a scoring request carried, once per subject and
    /// signal set; later requests with the same signals cite that record.
    pub async fn evidence(
        &self,
        subject_ref: Option<&str>,
        signals: &Decoded,
        controller: &str,
    ) -> Result<LedgerRef, LedgerError> {
        let key = (
            subject_ref.unwrap_or_default().to_owned(),
            signals.hash.clone(),
        );
        let cite = || async {
            self.evidence_seen
                .try_get_with_by_ref(&key, async {
                    let draft = evidence_draft(subject_ref, signals, controller);
                    Ok((self.append(vec![draft]).await?.remove(0), now_ms()))
                })
                .await
                .map_err(|e: Arc<LedgerError>| (*e).clone())
        };
        let (cited, recorded_at) = cite().await?;
        if let Some(subject) = subject_ref
            && self.store.erasures().erased_since(subject, recorded_at)
        {
            self.evidence_seen.invalidate(&key).await;
            return Ok(cite().await?.0);
        }
        Ok(cited)
    }

    /// Removes a subject's content and pseudonym from every record, drops
    /// its consent state but for its refusals, withdrawals and objections,
    /// and appends an erasure record.
    pub async fn erase(&self, subject_ref: &str, by: Actor) -> Result<Erasure, LedgerError> {
        let (store, states, refreshing) = (
            self.store.clone(),
            self.states.clone(),
            self.refreshing.clone(),
        );
        let subject = subject_ref.to_owned();
        tokio::spawn(async move {
            // Until the state and evidence in memory are the erased ones, a
            // Score could still judge from the old and cite erased records:
            // all work for the subject is refused meanwhile, and afterwards
            // whatever was judged before this settles.
            store.erasures().fence(&subject);
            // A person with many decisions loses them in steps, each a short
            // transaction, so that other work commits in between; the last
            // step goes with the ledger's erasure.
            let mut erased = 0;
            let stepped = loop {
                match store
                    .submit(|tx| Job::EraseDecisions(subject.clone(), tx))
                    .await
                {
                    Ok(n) if n < crate::decisions::ERASED_AT_ONCE as u64 => break Ok(erased + n),
                    Ok(n) => erased += n,
                    Err(e) => break Err(e),
                }
            };
            let result = match stepped {
                Ok(stepped) => store
                    .submit(|tx| Job::Erase(subject.clone(), now_ms(), Some(by), tx))
                    .await
                    .map(|mut erasure| {
                        erasure.decisions_erased += stepped;
                        erasure
                    }),
                Err(e) => Err(e),
            };
            {
                let _refreshing = refreshing.lock().unwrap_or_else(|e| e.into_inner());
                match &result {
                    Ok(erasure) => states.insert(subject.clone(), Arc::new(erasure.kept.clone())),
                    Err(_) => states.invalidate(&subject),
                }
            }
            match &result {
                Ok(_) => store.erasures().settle(&subject, now_ms()),
                Err(_) => store.erasures().restore(&subject),
            }
            result
        })
        .await
        .map_err(|_| LedgerError::ShutDown)?
    }

    /// The subject's current state per purpose, if it is in memory.
    pub fn cached_state(&self, subject_ref: &str) -> Option<Arc<Vec<PurposeState>>> {
        self.states.get(subject_ref)
    }

    /// The subject's current state per purpose: from memory, or read once
    /// from SQLite (blocking while the pooled connections are all busy).
    pub fn state(&self, subject_ref: &str) -> Result<Arc<Vec<PurposeState>>, LedgerError> {
        if let Some(state) = self.states.get(subject_ref) {
            return Ok(state);
        }
        let read = Arc::new(self.read_state(subject_ref)?);
        Ok(self
            .states
            .entry_by_ref(subject_ref)
            .or_insert(read)
            .into_value())
    }

    fn read_state(&self, subject_ref: &str) -> Result<Vec<PurposeState>, LedgerError> {
        self.store.read(|conn| read_state(conn, subject_ref))
    }

    /// Up to `limit` records about the subject after `after_seq`, oldest
    /// first.
    pub fn history(
        &self,
        subject_ref: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, LedgerError> {
        self.store.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, record_id, kind, recorded_at, prev_hash, content_hash, hash, content
                 FROM ledger WHERE subject_ref = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows =
                stmt.query_map(params![subject_ref, after_seq, limit as i64], stored_record)?;
            rows.map(|r| r.map_err(LedgerError::from)?).collect()
        })
    }

    /// Recomputes the whole chain and names the first row that breaks it.
    pub fn verify(&self) -> Result<Verification, LedgerError> {
        self.store.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT seq, record_id, kind, recorded_at, prev_hash, content_hash, hash, content,
                        subject_ref
                 FROM ledger ORDER BY seq",
            )?;
            let mut rows = stmt.query([])?;
            let (mut expected_seq, mut prev, mut records) = (1i64, GENESIS.to_owned(), 0u64);
            let (mut removed, mut erased) = (Vec::new(), std::collections::HashSet::new());
            let mut expected = ExpectedState::default();
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let record_id: String = row.get(1)?;
                let kind: String = row.get(2)?;
                let at: i64 = row.get(3)?;
                let prev_hash: String = row.get(4)?;
                let content_hash: String = row.get(5)?;
                let hash: String = row.get(6)?;
                let content: Option<String> = row.get(7)?;
                let subject: Option<String> = row.get(8)?;
                let broken = |reason: String| {
                    Ok(Verification {
                        records,
                        head: prev.clone(),
                        broken: Some(BrokenLink {
                            seq,
                            record_id: record_id.clone(),
                            reason,
                        }),
                    })
                };
                if seq != expected_seq {
                    return broken(format!(
                        "sequence jumps from {} to {seq}: records are missing",
                        expected_seq - 1
                    ));
                }
                if prev_hash != prev {
                    return broken("prev_hash does not match the previous record's hash".into());
                }
                if let Some(content) = &content
                    && sha256_hex(content.as_bytes()) != content_hash
                {
                    return broken("content does not match its content_hash".into());
                }
                if link_hash(&prev, seq, &record_id, &kind, at, &content_hash) != hash {
                    return broken("hash does not match the record's fields".into());
                }
                match content.as_deref().map(serde_json::from_str::<Receipt>) {
                    None => removed.push((seq, record_id.clone())),
                    Some(Err(e)) => return broken(format!("content is not a receipt: {e}")),
                    Some(Ok(receipt)) => {
                        if receipt.kind.as_str() != kind || receipt.record_id != record_id {
                            return broken("content names another record or kind".into());
                        }
                        if subject.as_deref() != receipt.subject_ref.as_deref() {
                            return broken("subject_ref differs from the receipt's".into());
                        }
                        erased.extend(receipt.erased_seqs.iter().copied());
                        expected.apply(&receipt, seq, &hash);
                    }
                }
                prev = hash;
                expected_seq += 1;
                records += 1;
            }
            let head = prev;
            let at_head = |seq: i64, record_id: String, reason: String| Verification {
                records,
                head: head.clone(),
                broken: Some(BrokenLink {
                    seq,
                    record_id,
                    reason,
                }),
            };
            // Content may only vanish by erasure, which lists what it removed.
            if let Some((seq, id)) = removed.into_iter().find(|(seq, _)| !erased.contains(seq)) {
                return Ok(at_head(
                    seq,
                    id,
                    "content removed without an erasure record".into(),
                ));
            }
            // The table the policy reads must follow from the chain.
            if let Some((seq, id, reason)) = expected.differs_from(conn)? {
                return Ok(at_head(seq, id, reason));
            }
            Ok(Verification {
                records,
                head,
                broken: None,
            })
        })
    }
}

/// The per-purpose state the chain implies, rebuilt record by record with
/// the same rule the writer applies (a later or equal `effective_at` wins).
/// A purpose's implied state: status, basis, effective_at, seq and hash.
type Implied = (Status, LegalBasis, i64, i64, String);

#[derive(Default)]
struct ExpectedState {
    /// (subject, purpose) → what the chain implies for it.
    state: HashMap<(String, u8), Implied>,
}

impl ExpectedState {
    fn apply(&mut self, receipt: &Receipt, seq: i64, hash: &str) {
        let Some(subject) = &receipt.subject_ref else {
            return;
        };
        if !matches!(
            receipt.kind,
            RecordKind::Consent | RecordKind::Withdrawal | RecordKind::Objection
        ) {
            return;
        }
        let at = receipt.collection.collected_at_ms;
        for p in &receipt.purposes {
            let entry = (p.status, p.legal_basis, at, seq, hash.to_owned());
            match self.state.get(&(subject.clone(), p.tcf_id)) {
                Some(current) if at < current.2 => {}
                _ => {
                    self.state.insert((subject.clone(), p.tcf_id), entry);
                }
            }
        }
    }

    /// The first `consent_state` row that the chain does not imply, or the
    /// first implied state that is missing.
    fn differs_from(
        mut self,
        conn: &Connection,
    ) -> Result<Option<(i64, String, String)>, LedgerError> {
        let mut stmt = conn.prepare(
            "SELECT subject_ref, tcf_id, status, legal_basis, record_seq, record_id, record_hash
             FROM consent_state",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let subject: String = row.get(0)?;
            let tcf_id: u8 = row.get(1)?;
            let (status, basis): (String, String) = (row.get(2)?, row.get(3)?);
            let (seq, record_id, hash): (i64, String, String) =
                (row.get(4)?, row.get(5)?, row.get(6)?);
            let holds = self.state.remove(&(subject, tcf_id)).is_some_and(
                |(s, b, _, want_seq, want_hash)| {
                    s.as_str() == status
                        && b.as_str() == basis
                        && want_seq == seq
                        && want_hash == hash
                },
            );
            if !holds && !kept_at_erasure(conn, &status, seq, &record_id, &hash)? {
                return Ok(Some((
                    seq,
                    record_id,
                    format!("consent_state for purpose {tcf_id} does not follow from the chain"),
                )));
            }
        }
        Ok(self
            .state
            .into_values()
            .min_by_key(|e| e.3)
            .map(|(_, _, _, seq, _)| {
                (
                    seq,
                    String::new(),
                    "consent_state lacks a state the chain implies".into(),
                )
            }))
    }
}

/// Whether a state row is a refusal, withdrawal or objection kept when its
/// subject was erased ([`erase_subject`]): its record is in the chain, erased,
/// and of a kind that decides a purpose. Its content is gone, so the chain
/// can vouch for the record but no longer for whom it was.
fn kept_at_erasure(
    conn: &Connection,
    status: &str,
    seq: i64,
    record_id: &str,
    hash: &str,
) -> Result<bool, LedgerError> {
    if !matches!(
        Status::parse(status),
        Some(Status::Refused | Status::Withdrawn | Status::Objected)
    ) {
        return Ok(false);
    }
    let erased = conn
        .query_row(
            "SELECT 1 FROM ledger WHERE seq = ?1 AND record_id = ?2 AND hash = ?3
             AND content IS NULL AND subject_ref IS NULL
             AND kind IN ('consent', 'withdrawal', 'objection')",
            params![seq, record_id, hash],
            |_| Ok(()),
        )
        .optional()?;
    Ok(erased.is_some())
}

fn stored_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredRecord, LedgerError>> {
    let record_id: String = r.get(1)?;
    let kind: String = r.get(2)?;
    let Ok(kind) = serde_json::from_value::<RecordKind>(serde_json::Value::String(kind.clone()))
    else {
        return Ok(Err(LedgerError::Corrupt {
            record_id,
            message: format!("unknown record kind {kind:?}"),
        }));
    };
    Ok(Ok(StoredRecord {
        reference: LedgerRef {
            seq: r.get(0)?,
            record_id,
            hash: r.get(6)?,
        },
        kind,
        recorded_at_ms: r.get(3)?,
        prev_hash: r.get(4)?,
        content_hash: r.get(5)?,
        content: r.get(7)?,
    }))
}

/// An objection (GDPR Art. 21) the person made themselves, or through
/// support, to `tcf_id`, as the subject's state stands: the party that
/// profits from profiling cannot lift it. One an ad system relayed, by
/// `RecordConsent` or as a browser signal with a Score, it may lift the
/// same way; one whose author is unknown (erased content) stands.
fn standing_objection(
    tx: &Connection,
    subject_ref: &str,
    tcf_id: u8,
) -> Result<Option<LedgerError>, LedgerError> {
    let Some(LedgerRef { seq, record_id, .. }) = objection(tx, subject_ref, tcf_id)? else {
        return Ok(None);
    };
    let content: Option<String> = tx
        .prepare_cached("SELECT content FROM ledger WHERE seq = ?1")?
        .query_row([seq], |r| r.get(0))
        .optional()?
        .flatten();
    let receipt = content.and_then(|c| serde_json::from_str::<Receipt>(&c).ok());
    let author = match receipt {
        None => "an author whose record is erased".to_owned(),
        Some(Receipt {
            recorded_by: Some(by),
            ..
        }) if by.role == Role::Scorer.as_str() => return Ok(None),
        Some(Receipt {
            recorded_by: Some(by),
            ..
        }) if by.role == "subject" => "the person".to_owned(),
        Some(Receipt {
            recorded_by: Some(by),
            ..
        }) => by.role,
        Some(r) if r.collection.method == BROWSER_SIGNAL => return Ok(None),
        Some(_) => "an author the record does not name".to_owned(),
    };
    Ok(Some(LedgerError::ObjectionStands {
        tcf_id,
        record_id,
        author,
    }))
}

/// The record of the subject's objection to `tcf_id` in its state, if
/// the state is one.
fn objection(
    tx: &Connection,
    subject_ref: &str,
    tcf_id: u8,
) -> Result<Option<LedgerRef>, LedgerError> {
    Ok(tx
        .prepare_cached(
            "SELECT record_seq, record_id, record_hash FROM consent_state
             WHERE subject_ref = ?1 AND tcf_id = ?2 AND status = ?3",
        )?
        .query_row(
            params![subject_ref, tcf_id, Status::Objected.as_str()],
            |r| {
                Ok(LedgerRef {
                    seq: r.get(0)?,
                    record_id: r.get(1)?,
                    hash: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// An opt-out remembered from a browser signal adds nothing to an
/// objection already in the state, whoever made it; taking its place as
/// the purpose's record would make a person's own objection one an ad
/// system may lift. Such purposes are left out; when none is left, the
/// standing objection's record is the answer and nothing is appended.
/// Checked in the writer, as [`yield_to_objections`] is: the gateway
/// decides to remember from a state read before.
fn already_objected(
    tx: &Connection,
    subject_ref: &str,
    purposes: &mut Vec<PurposeEntry>,
) -> Result<Option<LedgerRef>, LedgerError> {
    let mut standing = None;
    let mut kept = Vec::with_capacity(purposes.len());
    for p in purposes.drain(..) {
        match objection(tx, subject_ref, p.tcf_id)? {
            Some(record) => {
                standing.get_or_insert(record);
            }
            None => kept.push(p),
        }
    }
    *purposes = kept;
    Ok(standing.filter(|_| purposes.is_empty()))
}

/// An ad system's record leaves the purposes under a standing objection
/// ([`standing_objection`]) as they are: a grant of one is refused, and a
/// refusal, withdrawal or objection of one is left out, since the
/// objection already holds, more strongly. A record left with no purpose
/// is refused. Checked here, in the writer's transaction, so that an
/// objection committed a moment before cannot be overwritten.
fn yield_to_objections(
    tx: &Connection,
    subject_ref: &str,
    purposes: &mut Vec<PurposeEntry>,
) -> Result<(), LedgerError> {
    let mut first_left_out = None;
    let mut kept = Vec::with_capacity(purposes.len());
    for p in purposes.drain(..) {
        match standing_objection(tx, subject_ref, p.tcf_id)? {
            None => kept.push(p),
            Some(objection) if p.status.permits() => return Err(objection),
            Some(objection) => {
                first_left_out.get_or_insert(objection);
            }
        }
    }
    match first_left_out {
        Some(objection) if kept.is_empty() => Err(objection),
        _ => {
            *purposes = kept;
            Ok(())
        }
    }
}

/// Appends one record at the head of the chain and moves the subject's
/// consent state forward.
pub(crate) fn append_one(
    tx: &Connection,
    head: &mut (i64, String),
    mut draft: Draft,
    erased_seqs: Vec<i64>,
) -> Result<LedgerRef, LedgerError> {
    if let Some(subject) = &draft.subject_ref {
        match &draft.recorded_by {
            Some(by) if by.role == Role::Scorer.as_str() => {
                yield_to_objections(tx, subject, &mut draft.purposes)?;
            }
            None if draft.collection.method == BROWSER_SIGNAL => {
                if let Some(standing) = already_objected(tx, subject, &mut draft.purposes)? {
                    return Ok(standing);
                }
            }
            _ => {}
        }
    }
    let seq = head.0 + 1;
    let record_id = Uuid::now_v7().to_string();
    let recorded_at = now_ms();
    let expires_at_ms = (draft.kind == RecordKind::Consent
        && draft.purposes.iter().any(|p| p.status.permits()))
    .then(|| valid_until(draft.collection.collected_at_ms));
    let receipt = Receipt {
        schema: SCHEMA.to_owned(),
        record_id: record_id.clone(),
        kind: draft.kind,
        subject_ref: draft.subject_ref.clone(),
        controller: draft.controller,
        purposes: draft.purposes,
        data_categories: draft.data_categories,
        collection: draft.collection,
        expires_at_ms,
        withdrawal_method: draft.withdrawal_method,
        evidence: draft.evidence,
        erased_seqs,
        recorded_by: draft.recorded_by,
    };
    let content = serde_json::to_string(&receipt).map_err(|e| LedgerError::Corrupt {
        record_id: record_id.clone(),
        message: e.to_string(),
    })?;
    let content_hash = sha256_hex(content.as_bytes());
    let kind = draft.kind.as_str();
    let hash = link_hash(&head.1, seq, &record_id, kind, recorded_at, &content_hash);
    tx.prepare_cached(
        "INSERT INTO ledger (seq, record_id, subject_ref, kind, recorded_at, content, content_hash, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![seq, record_id, draft.subject_ref, kind, recorded_at, content, content_hash, head.1, hash])?;
    let reference = LedgerRef {
        seq,
        record_id,
        hash: hash.clone(),
    };
    if let Some(subject) = &draft.subject_ref {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO consent_state (subject_ref, tcf_id, status, legal_basis, effective_at, expires_at, record_seq, record_id, record_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (subject_ref, tcf_id) DO UPDATE SET
               status = excluded.status, legal_basis = excluded.legal_basis,
               effective_at = excluded.effective_at, expires_at = excluded.expires_at,
               record_seq = excluded.record_seq, record_id = excluded.record_id, record_hash = excluded.record_hash
             WHERE excluded.effective_at >= consent_state.effective_at",
        )?;
        for p in &receipt.purposes {
            upsert.execute(params![
                subject,
                p.tcf_id,
                p.status.as_str(),
                p.legal_basis.as_str(),
                receipt.collection.collected_at_ms,
                expires_at_ms.filter(|_| p.status.permits()),
                seq,
                reference.record_id,
                hash
            ])?;
        }
    }
    *head = (seq, hash);
    Ok(reference)
}

/// Erases the subject's ledger content; `decisions_erased` is how many of
/// its decisions the same transaction removed.
pub(crate) fn erase_subject(
    tx: &Connection,
    head: &mut (i64, String),
    subject: &str,
    at_ms: i64,
    by: Option<Actor>,
    decisions_erased: u64,
) -> Result<Erasure, LedgerError> {
    let seqs = tx
        .prepare_cached("SELECT seq FROM ledger WHERE subject_ref = ?1 ORDER BY seq")?
        .query_map([subject], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    tx.execute(
        "UPDATE ledger SET content = NULL, subject_ref = NULL WHERE subject_ref = ?1",
        [subject],
    )?;
    // A refusal, withdrawal or objection outlives the erasure as a
    // suppression entry (the pseudonym, purpose, status and the link to the
    // record's hash, no content): without it the next request for the person
    // would profile them again (GDPR Art. 21(3), kept under Art. 17(3)(b)).
    tx.execute(
        "DELETE FROM consent_state WHERE subject_ref = ?1
         AND status NOT IN ('refused', 'withdrawn', 'objected')",
        [subject],
    )?;
    let kept = read_state(tx, subject)?;
    let records_erased = seqs.len() as u64;
    let draft = erasure_draft("api", at_ms, "GDPR Art. 17 erasure request", by);
    Ok(Erasure {
        records_erased,
        decisions_erased,
        tombstone: append_one(tx, head, draft, seqs)?,
        kept,
    })
}

/// The record of a removal of content: made at `at_ms` by `method`, for
/// the reason `why`, at the request of `by` if anybody asked.
fn erasure_draft(method: &str, at_ms: i64, why: &str, by: Option<Actor>) -> Draft {
    Draft {
        kind: RecordKind::Erasure,
        subject_ref: None,
        controller: String::new(),
        purposes: Vec::new(),
        data_categories: Vec::new(),
        collection: Collection {
            method: method.into(),
            collected_at_ms: at_ms,
            jurisdiction: String::new(),
            language: String::new(),
            notice: None,
        },
        withdrawal_method: why.into(),
        evidence: None,
        recorded_by: by,
    }
}

/// The most evidence records one retention purge empties: one erasure
/// record lists them all, and one transaction holds the writer.
pub(crate) const EXPIRED_AT_ONCE: usize = 10_000;

/// Removes the content and pseudonym of up to [`EXPIRED_AT_ONCE`] evidence
/// records made before `before_ms`, oldest first, and records the removal
/// as an erasure does: one record listing their sequence numbers, so that
/// the chain still verifies. Returns how many were emptied.
pub(crate) fn expire_evidence(
    tx: &Connection,
    head: &mut (i64, String),
    before_ms: i64,
    at_ms: i64,
) -> Result<u64, LedgerError> {
    let mut seqs = tx
        .prepare_cached(
            "SELECT seq FROM ledger WHERE kind = 'evidence' AND content IS NOT NULL
             AND recorded_at < ?1 ORDER BY recorded_at LIMIT ?2",
        )?
        .query_map(params![before_ms, EXPIRED_AT_ONCE as i64], |r| {
            r.get::<_, i64>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    if seqs.is_empty() {
        return Ok(0);
    }
    seqs.sort_unstable();
    let mut empty =
        tx.prepare_cached("UPDATE ledger SET content = NULL, subject_ref = NULL WHERE seq = ?1")?;
    for seq in &seqs {
        empty.execute([seq])?;
    }
    let expired = seqs.len() as u64;
    let draft = erasure_draft(
        "retention",
        at_ms,
        "retention: evidence no decision still kept can cite",
        None,
    );
    append_one(tx, head, draft, seqs)?;
    Ok(expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scorer may record consent for any subject id and is shown its
    /// pseudonym: no id may make that pseudonym a signing key.
    #[test]
    fn no_subject_id_has_a_derived_key_for_pseudonym() {
        let key = [7u8; 32];
        for purpose in ["candor subject-token key v1", "candor page-token key v1"] {
            let derived = derived_key(&key, purpose);
            assert_ne!(hex::encode(&derived), pseudonym(&key, purpose), "{purpose}");
            assert_ne!(derived, key.to_vec());
        }
        assert_eq!(
            token_key(&key),
            derived_key(&key, "candor subject-token key v1")
        );
        assert_ne!(
            derived_key(&key, "candor subject-token key v1"),
            derived_key(&key, "candor page-token key v1")
        );
    }
}

//! The consent ledger through `ConsentService`: records, history, the hash
//! chain under tampering, and erasure that leaves a verifiable chain.

mod common;

use candor::grpc::pb::{self, consent_service_client::ConsentServiceClient};
use common::*;
use tonic::{Code, transport::Channel};

async fn client(server: &TestServer) -> ConsentServiceClient<Channel> {
    ConsentServiceClient::new(server.channel().await)
}

async fn record(
    c: &mut ConsentServiceClient<Channel>,
    subject: &str,
    purposes: &[u32],
) -> pb::LedgerReference {
    c.record_consent(pb::RecordConsentRequest {
        subject_id: subject.into(),
        purposes: purposes
            .iter()
            .map(|&p| pb::PurposeChoice {
                tcf_purpose: p,
                granted: true,
                ..Default::default()
            })
            .collect(),
        method: pb::CollectionMethod::CmpUi as i32,
        jurisdiction: "DE".into(),
        language: "de".into(),
        data_categories: vec!["first_party_purchase_history".into()],
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .record
    .unwrap()
}

async fn verify(c: &mut ConsentServiceClient<Channel>) -> pb::VerifyLedgerResponse {
    c.verify_ledger(pb::VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_chain_and_read_back_as_state_and_history() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let first = record(&mut c, "alice", &[1, 3, 4]).await;
    let second = record(&mut c, "bob", &[1]).await;
    assert_eq!(second.seq, first.seq + 1);
    c.withdraw_consent(pb::WithdrawConsentRequest {
        subject_id: "alice".into(),
        tcf_purposes: vec![4],
        method: "privacy centre toggle".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let state = c
        .get_consent(pb::GetConsentRequest {
            subject_id: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let status: Vec<(u32, &str)> = state
        .purposes
        .iter()
        .map(|p| (p.tcf_purpose, p.status.as_str()))
        .collect();
    assert_eq!(status, vec![(1, "given"), (3, "given"), (4, "withdrawn")]);
    let p1 = &state.purposes[0];
    assert_eq!(p1.dpv, "dpv:ServiceProvision");
    // 13 calendar months: how many days that is depends on the day the
    // test runs (395 from 30 November 2026, 396 from 1 December).
    let instant = |t: prost_types::Timestamp| jiff::Timestamp::new(t.seconds, t.nanos).unwrap();
    let effective = instant(p1.effective_at.unwrap());
    let thirteen_months = effective
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .checked_add(jiff::ToSpan::months(13))
        .unwrap()
        .timestamp();
    assert_eq!(
        instant(p1.expires_at.unwrap()),
        thirteen_months,
        "consent is valid for 13 calendar months"
    );

    let history = c
        .get_consent_history(pb::GetConsentHistoryRequest {
            subject_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<&str> = history.records.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, vec!["consent", "withdrawal"]);
    let receipt: serde_json::Value =
        serde_json::from_str(&history.records[0].content_json).unwrap();
    assert_eq!(receipt["subject_ref"], history.subject_ref);
    assert_eq!(receipt["purposes"][1]["dpv"], "dpv:PersonalisedAdvertising");
    assert_eq!(receipt["collection"]["method"], "cmp_ui");
    assert!(
        receipt["schema"]
            .as_str()
            .unwrap()
            .contains("ISO/IEC TS 27560")
    );
    assert_eq!(
        history.records[1].prev_sha256, second.sha256,
        "each record chains to the one before"
    );

    let v = verify(&mut c).await;
    assert!(v.intact && v.first_broken.is_none());
    assert_eq!(v.records_checked, 3);
}

/// One consent RPC's request, for tables of bad input.
enum Call {
    Record(pb::RecordConsentRequest),
    Withdraw(pb::WithdrawConsentRequest),
    History(pb::GetConsentHistoryRequest),
}

impl Call {
    async fn send(self, c: &mut ConsentServiceClient<Channel>) -> Result<(), tonic::Status> {
        match self {
            Self::Record(r) => c.record_consent(r).await.map(drop),
            Self::Withdraw(r) => c.withdraw_consent(r).await.map(drop),
            Self::History(r) => c.get_consent_history(r).await.map(drop),
        }
    }
}

/// Every field of the consent RPCs is checked before anything reaches the
/// append-only ledger: free text has a bound, documented formats are held
/// to, and each refusal is INVALID_ARGUMENT naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_consent_requests_name_the_field() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let base = || pb::RecordConsentRequest {
        subject_id: "x".into(),
        purposes: vec![pb::PurposeChoice {
            tcf_purpose: 1,
            granted: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let notice = |url: &str, version: &str, sha256: &str| {
        Some(pb::Notice {
            url: url.into(),
            version: version.into(),
            sha256: sha256.into(),
        })
    };
    let at = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
    let record = |r: pb::RecordConsentRequest| Call::Record(r);
    let withdraw = |r: pb::WithdrawConsentRequest| {
        Call::Withdraw(pb::WithdrawConsentRequest {
            subject_id: if r.subject_id.is_empty() {
                "x".into()
            } else {
                r.subject_id
            },
            ..r
        })
    };
    let valid_sha = "ab".repeat(32);
    let cases: Vec<(Call, &str)> = vec![
        (
            record(pb::RecordConsentRequest {
                subject_id: String::new(),
                ..base()
            }),
            "subject_id",
        ),
        (
            record(pb::RecordConsentRequest {
                subject_id: "s".repeat(257),
                ..base()
            }),
            "subject_id: 257 bytes",
        ),
        (
            record(pb::RecordConsentRequest {
                purposes: vec![],
                ..base()
            }),
            "purposes",
        ),
        (
            record(pb::RecordConsentRequest {
                purposes: vec![pb::PurposeChoice {
                    tcf_purpose: 13,
                    ..Default::default()
                }],
                ..base()
            }),
            "purposes[0].tcf_purpose",
        ),
        (
            record(pb::RecordConsentRequest {
                purposes: vec![pb::PurposeChoice {
                    tcf_purpose: 3,
                    legal_basis: pb::LegalBasis::LegitimateInterest as i32,
                    granted: true,
                }],
                ..base()
            }),
            "purposes[0].legal_basis",
        ),
        (
            record(pb::RecordConsentRequest {
                data_categories: vec!["horoscope".into()],
                ..base()
            }),
            "data_categories[0]",
        ),
        (
            record(pb::RecordConsentRequest {
                data_categories: vec!["first_party_purchase_history".into(); 2],
                ..base()
            }),
            "data_categories[1]",
        ),
        (
            record(pb::RecordConsentRequest {
                jurisdiction: "Germany".into(),
                ..base()
            }),
            "jurisdiction",
        ),
        (
            record(pb::RecordConsentRequest {
                jurisdiction: "UK".into(),
                ..base()
            }),
            "jurisdiction: \"UK\" is not an ISO 3166 code such as \"DE\" or \"US-CA\"; the United Kingdom is \"GB\"",
        ),
        (
            record(pb::RecordConsentRequest {
                collected_at: at(4_000_000_000, 0),
                ..base()
            }),
            "collected_at",
        ),
        (
            record(pb::RecordConsentRequest {
                collected_at: at(1_700_000_000, 2_000_000_000),
                ..base()
            }),
            "collected_at.nanos",
        ),
        (
            record(pb::RecordConsentRequest {
                collected_at: at(1_700_000_000, -1),
                ..base()
            }),
            "collected_at.nanos",
        ),
        (
            record(pb::RecordConsentRequest {
                collected_at: at(-86_400, 0),
                ..base()
            }),
            "collected_at.seconds",
        ),
        (
            record(pb::RecordConsentRequest {
                notice: notice("", &"v".repeat(3_000_000), ""),
                ..base()
            }),
            "notice.version: 3000000 bytes",
        ),
        (
            record(pb::RecordConsentRequest {
                notice: notice("", "", "not hex"),
                ..base()
            }),
            "notice.sha256",
        ),
        (
            record(pb::RecordConsentRequest {
                notice: notice("", "", &valid_sha.to_uppercase()),
                ..base()
            }),
            "notice.sha256",
        ),
        (
            record(pb::RecordConsentRequest {
                notice: notice("javascript:alert(1)", "", ""),
                ..base()
            }),
            "notice.url",
        ),
        (
            record(pb::RecordConsentRequest {
                notice: notice(&format!("https://p.example/{}", "a".repeat(3000)), "", ""),
                ..base()
            }),
            "notice.url: 3018 bytes",
        ),
        (
            record(pb::RecordConsentRequest {
                language: "l".repeat(10_000),
                ..base()
            }),
            "language: 10000 bytes",
        ),
        (
            record(pb::RecordConsentRequest {
                language: "en_GB".into(),
                ..base()
            }),
            "language",
        ),
        (
            withdraw(pb::WithdrawConsentRequest {
                tcf_purposes: vec![0],
                ..Default::default()
            }),
            "tcf_purposes[0]",
        ),
        (
            withdraw(pb::WithdrawConsentRequest {
                tcf_purposes: vec![4, 12, 4],
                ..Default::default()
            }),
            "tcf_purposes[2]",
        ),
        (
            withdraw(pb::WithdrawConsentRequest {
                method: "m".repeat(3_000_000),
                ..Default::default()
            }),
            "method: 3000000 bytes",
        ),
        (
            withdraw(pb::WithdrawConsentRequest {
                method: "toggle\n\x1b[31m".into(),
                ..Default::default()
            }),
            "method: holds the control, line-breaking or invisible character U+000A",
        ),
        (
            withdraw(pb::WithdrawConsentRequest {
                method: "toggle\u{2028}second line".into(),
                ..Default::default()
            }),
            "method: holds the control, line-breaking or invisible character U+2028",
        ),
        (
            withdraw(pb::WithdrawConsentRequest {
                method: "   ".into(),
                ..Default::default()
            }),
            "method: holds only spaces",
        ),
        (
            withdraw(pb::WithdrawConsentRequest {
                subject_id: "s".repeat(300),
                ..Default::default()
            }),
            "subject_id: 300 bytes",
        ),
        (
            withdraw(pb::WithdrawConsentRequest {
                kind: 7,
                ..Default::default()
            }),
            "kind",
        ),
        (
            Call::History(pb::GetConsentHistoryRequest {
                subject_id: "x".into(),
                page_size: 1001,
                ..Default::default()
            }),
            "page_size",
        ),
        (
            Call::History(pb::GetConsentHistoryRequest {
                subject_id: "x".into(),
                page_token: "zz".into(),
                ..Default::default()
            }),
            "page_token",
        ),
    ];
    for (call, field) in cases {
        let status = call.send(&mut c).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{field}: {}",
            status.message()
        );
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let v = verify(&mut c).await;
    assert_eq!(v.records_checked, 0, "nothing bad reached the ledger");

    // What the checks let through: a full notice, a language with a
    // region, the last nanosecond of a second, and purpose 12 (US sale or
    // sharing), which the proto documents beside TCF's 1-11.
    c.record_consent(pb::RecordConsentRequest {
        notice: notice("https://publisher.example/privacy", "2026-10", &valid_sha),
        language: "pt-BR".into(),
        collected_at: at(1_767_000_000, 999_999_999),
        purposes: vec![pb::PurposeChoice {
            tcf_purpose: 12,
            granted: true,
            ..Default::default()
        }],
        ..base()
    })
    .await
    .unwrap();
    c.withdraw_consent(pb::WithdrawConsentRequest {
        subject_id: "x".into(),
        tcf_purposes: vec![3, 12],
        method: "privacy centre toggle".into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Writes take a subject id of at most 256 bytes, reads and erasure one of
/// any length: a person recorded under a longer id before writes were
/// bounded must still reach and erase their data (consent.proto).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_erasure_take_a_subject_id_of_any_length() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let long = "s".repeat(4096);
    let state = c
        .get_consent(pb::GetConsentRequest {
            subject_id: long.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(state.purposes.is_empty(), "{state:?}");
    let history = c
        .get_consent_history(pb::GetConsentHistoryRequest {
            subject_id: long.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(history.records.is_empty(), "{history:?}");
    let erased = c
        .erase_subject(pb::EraseSubjectRequest { subject_id: long })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.records_erased, 0);
    server.stop().await;
}

/// A person's ledger history comes in pages: each under the message limit
/// however large its records, each record once and oldest first, and a
/// record appended meanwhile comes on a later page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_history_comes_in_pages_that_fit() {
    use prost::Message;
    const LIMIT: usize = 16 * 1024;
    let server = TestServer::start_with(candor::Config {
        max_message_bytes: LIMIT,
        ..test_config()
    })
    .await;
    let mut c = client(&server).await;
    // Each receipt carries a long notice URL: a few kilobytes apiece.
    let mut recorded = Vec::new();
    for i in 0..20 {
        let reference = c
            .record_consent(pb::RecordConsentRequest {
                subject_id: "olga".into(),
                purposes: vec![pb::PurposeChoice {
                    tcf_purpose: 1 + i % 11,
                    granted: true,
                    ..Default::default()
                }],
                notice: Some(pb::Notice {
                    url: format!("https://publisher.example/{}", "n".repeat(2000)),
                    version: "v".repeat(256),
                    sha256: "ab".repeat(32),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .record
            .unwrap();
        recorded.push(reference.seq);
    }
    record(&mut c, "pavel", &[1]).await;

    let history = |token: String, page_size: u32| pb::GetConsentHistoryRequest {
        subject_id: "olga".into(),
        page_size,
        page_token: token,
    };
    let (mut seqs, mut pages, mut token) = (Vec::new(), 0, String::new());
    let mut appended = None;
    loop {
        let page = c
            .get_consent_history(history(token, 0))
            .await
            .unwrap()
            .into_inner();
        assert!(page.encoded_len() <= LIMIT, "{} bytes", page.encoded_len());
        assert!(!page.records.is_empty());
        seqs.extend(page.records.iter().map(|r| r.record.as_ref().unwrap().seq));
        pages += 1;
        if appended.is_none() {
            let withdrawn = c
                .withdraw_consent(pb::WithdrawConsentRequest {
                    subject_id: "olga".into(),
                    tcf_purposes: vec![4],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            appended = withdrawn.record.map(|r| r.seq);
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    recorded.extend(appended);
    assert!(pages > 2, "{pages} pages: the limit cut them by bytes");
    assert_eq!(seqs, recorded, "every record once, oldest first");

    // By count too, and the old call (no page fields) gets the first page.
    let first = c
        .get_consent_history(history(String::new(), 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.records.len(), 3);
    let second = c
        .get_consent_history(history(first.next_page_token.clone(), 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.records[0].record.as_ref().unwrap().seq, recorded[3]);

    // A token is good only for the person it was issued for.
    let status = c
        .get_consent_history(pb::GetConsentHistoryRequest {
            subject_id: "pavel".into(),
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("page_token: "),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_one_row_in_the_database_file_is_named_by_verify() {
    let config = test_config();
    let db = config.database.clone();
    let server = TestServer::start_with(config).await;
    let mut c = client(&server).await;
    for subject in ["a", "b", "c", "d"] {
        record(&mut c, subject, &[1, 2]).await;
    }
    let target = record(&mut c, "e", &[1]).await;
    record(&mut c, "f", &[1]).await;
    assert!(verify(&mut c).await.intact);

    // An attacker with the file: the append-only triggers stop a plain
    // UPDATE, so drop them first, then change consent to something else.
    let raw = rusqlite::Connection::open(&db).unwrap();
    let blocked = raw.execute(
        "UPDATE ledger SET content = replace(content, '\"given\"', '\"refused\"') WHERE seq = ?1",
        [target.seq],
    );
    assert!(blocked.is_err(), "the ledger refuses edits");
    raw.execute_batch("DROP TRIGGER ledger_erasure_only")
        .unwrap();
    raw.execute(
        "UPDATE ledger SET content = replace(content, '\"given\"', '\"refused\"') WHERE seq = ?1",
        [target.seq],
    )
    .unwrap();

    let v = verify(&mut c).await;
    assert!(!v.intact);
    let broken = v.first_broken.unwrap();
    assert_eq!(
        (broken.seq, broken.record_id.as_str()),
        (target.seq, target.record_id.as_str())
    );
    assert!(broken.reason.contains("content"), "{}", broken.reason);
    assert_eq!(v.records_checked, (target.seq - 1) as u64);

    // Rewriting the hashes to match only moves the break to the next link.
    let forged: String = raw
        .query_row(
            "SELECT content FROM ledger WHERE seq = ?1",
            [target.seq],
            |r| r.get(0),
        )
        .unwrap();
    let hash = sha256_hex(forged.as_bytes());
    raw.execute(
        "UPDATE ledger SET content_hash = ?1 WHERE seq = ?2",
        rusqlite::params![hash, target.seq],
    )
    .unwrap();
    let broken = verify(&mut c).await.first_broken.unwrap();
    assert_eq!(broken.seq, target.seq);
    assert!(
        broken.reason.contains("hash does not match"),
        "{}",
        broken.reason
    );
}

/// The ids of the ledger records of `kind` about `subject`.
async fn records_of(server: &TestServer, subject: &str, kind: &str) -> Vec<String> {
    client(server)
        .await
        .get_consent_history(pb::GetConsentHistoryRequest {
            subject_id: subject.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.record.as_ref().unwrap().record_id.clone())
        .collect()
}

/// Scores `request` 16 times at once, as the ad slots of one page view
/// ask for one person, and returns the ledger records each decision cited.
async fn score_at_once(server: &TestServer, request: &pb::ScoreRequest) -> Vec<Vec<String>> {
    let scoring = server.scoring().await;
    let slots: Vec<_> = (0..16)
        .map(|_| {
            let (mut scoring, request) = (scoring.clone(), request.clone());
            tokio::spawn(async move { scoring.score(request).await.unwrap().into_inner() })
        })
        .collect();
    let mut cited = Vec::new();
    for slot in slots {
        let provenance = slot.await.unwrap().decision.unwrap().provenance.unwrap();
        cited.push(
            provenance
                .ledger_records
                .iter()
                .map(|r| r.record_id.clone())
                .collect(),
        );
    }
    cited
}

/// Requests at once under the same signals share one evidence record, as
/// requests one after another do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_at_once_under_the_same_signals_share_one_evidence_record() {
    let server = TestServer::start().await;
    let mut request = caravan_request();
    request.subject_id = "page-view@example.com".into();
    let cited = score_at_once(&server, &request).await;
    let evidence = records_of(&server, &request.subject_id, "evidence").await;
    assert_eq!(evidence.len(), 1, "one record of the signals: {evidence:?}");
    assert!(cited.iter().all(|c| c.contains(&evidence[0])), "{cited:?}");
}

/// A person's signals recorded before their erasure are recorded anew by
/// their next request: no decision cites the erased record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_recorded_before_an_erasure_are_recorded_anew_after_it() {
    let server = TestServer::start().await;
    let mut request = caravan_request();
    request.subject_id = "back-after-erasure@example.com".into();
    let before = score_at_once(&server, &request).await;
    let erased = records_of(&server, &request.subject_id, "evidence").await;
    assert_eq!(erased.len(), 1, "{erased:?}");
    client(&server)
        .await
        .erase_subject(pb::EraseSubjectRequest {
            subject_id: request.subject_id.clone(),
        })
        .await
        .unwrap();
    let after = score_at_once(&server, &request).await;
    let evidence = records_of(&server, &request.subject_id, "evidence").await;
    assert_eq!(
        evidence.len(),
        1,
        "one record since the erasure: {evidence:?}"
    );
    assert_ne!(evidence, erased);
    assert!(before.iter().all(|c| c.contains(&erased[0])), "{before:?}");
    assert!(
        after
            .iter()
            .all(|c| c.contains(&evidence[0]) && !c.contains(&erased[0])),
        "{after:?}"
    );
}

/// A US opt-out (GPC) sent by requests at once is remembered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_sent_at_once_is_remembered_once() {
    let server = TestServer::start().await;
    let mut request = caravan_request();
    request.subject_id = "gpc-page-view@example.com".into();
    request.context.as_mut().unwrap().gpc = true;
    score_at_once(&server, &request).await;
    let objections = records_of(&server, &request.subject_id, "objection").await;
    assert_eq!(objections.len(), 1, "{objections:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_removes_the_subject_and_the_chain_still_verifies() {
    let config = test_config();
    let db = config.database.clone();
    let server = TestServer::start_with(config.clone()).await;
    let mut c = client(&server).await;
    record(&mut c, "alice@example.com", &[1, 3, 4]).await;
    record(&mut c, "bob@example.com", &[1]).await;
    // Inline signals on a Score are evidence for alice too.
    let mut scoring = server.scoring().await;
    let mut request = caravan_request();
    request.subject_id = "alice@example.com".into();
    scoring.score(request).await.unwrap();
    // A staff read before the erasure is on record under her pseudonym.
    let before = c
        .get_consent_history(pb::GetConsentHistoryRequest {
            subject_id: "alice@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let erased = c
        .erase_subject(pb::EraseSubjectRequest {
            subject_id: "alice@example.com".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        erased.records_erased, 2,
        "the consent and the evidence record"
    );
    let v = verify(&mut c).await;
    assert!(v.intact, "{:?}", v.first_broken);
    assert_eq!(v.records_checked, 4);
    let tombstone = erased.tombstone.unwrap();
    assert_eq!(v.head_sha256, tombstone.sha256);

    // Neither the raw identifier nor the erased pseudonym is left on disk;
    // the read log keeps the read, under the tombstone's id.
    drop(c);
    server.stop().await;
    let raw = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = raw
        .query_row(
            "SELECT count(*) FROM ledger WHERE subject_ref = ?1 OR content LIKE '%' || ?1 || '%'",
            [&before.subject_ref],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0);
    let reads: i64 = raw
        .query_row(
            "SELECT count(*) FROM staff_reads WHERE subject_ref = 'erased:' || ?1",
            [&tombstone.record_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reads, 1);
    raw.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    drop(raw);
    let bytes = std::fs::read(&db).unwrap();
    assert!(
        !bytes.windows(5).any(|w| w == b"alice"),
        "raw identifiers never reach the file"
    );
    let pseudonym = before.subject_ref.as_bytes();
    assert!(
        !bytes.windows(pseudonym.len()).any(|w| w == pseudonym),
        "secure_delete overwrites the erased content"
    );

    let server = TestServer::start_with(config).await;
    let mut c = client(&server).await;
    let history = c
        .get_consent_history(pb::GetConsentHistoryRequest {
            subject_id: "alice@example.com".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(history.records.is_empty());
    let state = c
        .get_consent(pb::GetConsentRequest {
            subject_id: "alice@example.com".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(state.purposes.is_empty());
    let bob = c
        .get_consent(pb::GetConsentRequest {
            subject_id: "bob@example.com".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob.purposes.len(), 1);
}

/// Verification also covers what the chain's hashes alone do not: the
/// per-purpose state the policy reads, and content removed outside an
/// erasure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_the_state_table_and_removed_content() {
    let config = test_config();
    let db = config.database.clone();
    let server = TestServer::start_with(config).await;
    let mut c = client(&server).await;
    record(&mut c, "nina", &[1, 3, 4]).await;
    let withdrawal = c
        .withdraw_consent(pb::WithdrawConsentRequest {
            subject_id: "nina".into(),
            tcf_purposes: vec![3],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap();
    assert!(verify(&mut c).await.intact);

    // Flip the withdrawn purpose back to "given" in the table the policy reads.
    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.execute(
        "UPDATE consent_state SET status = 'given' WHERE tcf_id = 3",
        [],
    )
    .unwrap();
    let broken = verify(&mut c)
        .await
        .first_broken
        .expect("the edit is found");
    assert_eq!(broken.seq, withdrawal.seq);
    assert!(broken.reason.contains("consent_state"), "{}", broken.reason);
    raw.execute(
        "UPDATE consent_state SET status = 'withdrawn' WHERE tcf_id = 3",
        [],
    )
    .unwrap();
    assert!(verify(&mut c).await.intact);

    // Remove the withdrawal's content the way only an erasure may.
    raw.execute(
        "UPDATE ledger SET content = NULL, subject_ref = NULL WHERE seq = ?1",
        [withdrawal.seq],
    )
    .unwrap();
    let broken = verify(&mut c)
        .await
        .first_broken
        .expect("the removal is found");
    assert_eq!(broken.seq, withdrawal.seq);
    assert!(
        broken.reason.contains("without an erasure"),
        "{}",
        broken.reason
    );
}

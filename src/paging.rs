//! Paging through a person's records: where a page ends, the opaque token
//! that carries that place to the next call, and how many items fit in a
//! page of bounded size.
//!
//! A page ends at a *position* in a stable order, not at an offset, so a
//! record appended meanwhile neither repeats nor hides an item: ledger
//! records are read oldest first by `seq`; decisions newest first by
//! `(decided_at, decision_id)` (UUIDv7 ids break ties in time order).
//!
//! A token is the position, the call and the person it was issued for,
//! authenticated with a key derived from the subject key. Tokens are not
//! secret (a position says no more than the page already did), but they
//! must not be forged: a token from another call, another person or
//! another gateway, or one edited by hand, is refused as `page_token`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::Error;

/// The call a token belongs to: a position in one call's order means
/// nothing in another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    ConsentHistory = 1,
    ListDecisions = 2,
    Export = 3,
}

/// Where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Ledger records read oldest first: the next page starts after `seq`.
    Ledger { after_seq: i64 },
    /// Decisions read newest first: the next page starts with the newest
    /// decision older than this one.
    Decision(DecisionPosition),
}

impl Position {
    fn tag(self) -> u8 {
        match self {
            Self::Ledger { .. } => b'L',
            Self::Decision(_) => b'D',
        }
    }

    /// The sequence number a ledger page ended at, for calls that page
    /// through ledger records only.
    pub fn ledger(self) -> Result<i64, Error> {
        match self {
            Self::Ledger { after_seq } => Ok(after_seq),
            Self::Decision(_) => Err(malformed()),
        }
    }

    /// The decision a page ended at, for calls that page through
    /// decisions only.
    pub fn decision(self) -> Result<DecisionPosition, Error> {
        match self {
            Self::Decision(at) => Ok(at),
            Self::Ledger { .. } => Err(malformed()),
        }
    }
}

fn malformed() -> Error {
    Error::InvalidArgument(
        "page_token: is not a page token of this call; send back a next_page_token exactly as it came"
            .into(),
    )
}

/// What a caller asks of one page of a person's items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The publisher's identifier of the person.
    pub subject_id: String,
    /// At most this many items (at least one).
    pub size: usize,
    /// Empty for the first page, else the previous page's token.
    pub token: String,
}

/// A decision's place in the newest-first order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionPosition {
    pub decided_at_ms: i64,
    pub id: Uuid,
}

impl DecisionPosition {
    /// Before every decision: where a newest-first read starts.
    pub const NEWEST: Self = Self {
        decided_at_ms: i64::MAX,
        id: Uuid::max(),
    };
}

/// Names the item at a position, for errors about it.
impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ledger { after_seq } => write!(f, "ledger record {after_seq}"),
            Self::Decision(at) => write!(f, "decision {}", at.id),
        }
    }
}

/// Token layout: version, scope, position kind, the position's fields,
/// then the MAC's first [`MAC_BYTES`] bytes; sent as lower-case hex.
const VERSION: u8 = 1;
const MAC_BYTES: usize = 16;

/// The longest token [`PageTokens::issue`] makes, in characters: one for a
/// decision position (two integers' worth more than a ledger one).
pub const MAX_TOKEN_LEN: usize = 2 * (3 + 8 + 16 + MAC_BYTES);

/// Issues and opens page tokens.
pub struct PageTokens {
    key: Vec<u8>,
}

impl PageTokens {
    /// `key` authenticates tokens; [`crate::consent::ledger::Ledger`]
    /// derives it from the subject key.
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    fn mac(&self, body: &[u8], subject_ref: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(body);
        // The subject is authenticated but not carried: a token names no
        // one, and one issued for another person does not verify.
        mac.update(subject_ref.as_bytes());
        mac
    }

    /// The token for the page after `at`, in `scope`, for `subject_ref`.
    pub fn issue(&self, scope: Scope, subject_ref: &str, at: Position) -> String {
        let mut body = vec![VERSION, scope as u8, at.tag()];
        match at {
            Position::Ledger { after_seq } => body.extend(after_seq.to_be_bytes()),
            Position::Decision(at) => {
                body.extend(at.decided_at_ms.to_be_bytes());
                body.extend(at.id.as_bytes());
            }
        }
        let mac = self.mac(&body, subject_ref).finalize().into_bytes();
        body.extend(&mac[..MAC_BYTES]);
        hex::encode(body)
    }

    /// Where `token` says the previous page ended; `None` for an empty
    /// token (the first page).
    pub fn open(
        &self,
        scope: Scope,
        subject_ref: &str,
        token: &str,
    ) -> Result<Option<Position>, Error> {
        if token.is_empty() {
            return Ok(None);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(malformed());
        }
        let bytes = hex::decode(token).map_err(|_| malformed())?;
        let Some(split) = bytes.len().checked_sub(MAC_BYTES) else {
            return Err(malformed());
        };
        let (body, tag) = bytes.split_at(split);
        let foreign = || {
            Error::InvalidArgument(
                "page_token: was not issued for this call and person (or by this gateway); start again without a page_token"
                    .into(),
            )
        };
        if self
            .mac(body, subject_ref)
            .verify_truncated_left(tag)
            .is_err()
        {
            return Err(foreign());
        }
        let number = |at: usize| {
            body.get(at..at + 8)
                .map(|b| i64::from_be_bytes(b.try_into().expect("eight bytes")))
        };
        // Authentic, so made by `issue`: only a token of an older layout or
        // of another call gets past the MAC and fails here.
        let position = match body {
            [VERSION, s, ..] if *s != scope as u8 => return Err(foreign()),
            [VERSION, _, b'L', rest @ ..] if rest.len() == 8 => {
                number(3).map(|after_seq| Position::Ledger { after_seq })
            }
            [VERSION, _, b'D', rest @ ..] if rest.len() == 24 => number(3).map(|decided_at_ms| {
                Position::Decision(DecisionPosition {
                    decided_at_ms,
                    id: Uuid::from_slice(&rest[8..]).expect("sixteen bytes"),
                })
            }),
            _ => None,
        };
        position.map(Some).ok_or_else(malformed)
    }
}

/// One page of a person's items, and whether more follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub subject_ref: String,
    pub items: Vec<T>,
    pub more: bool,
}

impl<T> Page<T> {
    /// A page of at most `size` from `items`, read with a limit of
    /// `size + 1` so that the one past the page tells whether more follow.
    pub fn of(subject_ref: String, mut items: Vec<T>, size: usize) -> Self {
        let more = items.len() > size;
        items.truncate(size);
        Self {
            subject_ref,
            items,
            more,
        }
    }
}

/// The bytes left for a page's items: a page never outgrows the message
/// that carries it, however large its items are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    room: usize,
}

impl Budget {
    pub fn new(room: usize) -> Self {
        Self { room }
    }

    /// Takes `size` bytes for the next item; false, taking nothing, when
    /// it does not fit.
    pub fn take(&mut self, size: usize) -> bool {
        match self.room.checked_sub(size) {
            Some(left) => {
                self.room = left;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> PageTokens {
        PageTokens::new(b"page key".to_vec())
    }

    fn decision() -> Position {
        Position::Decision(DecisionPosition {
            decided_at_ms: 1_767_000_000_000,
            id: Uuid::parse_str("0192f7c8-3d2e-7a6b-9c1d-2e3f4a5b6c7d").unwrap(),
        })
    }

    #[test]
    fn a_token_opens_to_the_position_it_was_issued_for() {
        let t = tokens();
        for (scope, at) in [
            (Scope::ConsentHistory, Position::Ledger { after_seq: 42 }),
            (Scope::ListDecisions, decision()),
            (Scope::Export, Position::Ledger { after_seq: 0 }),
            (Scope::Export, decision()),
        ] {
            let token = t.issue(scope, "subject", at);
            assert!(token.len() <= MAX_TOKEN_LEN, "{token}");
            assert_eq!(t.open(scope, "subject", &token).unwrap(), Some(at));
        }
        assert_eq!(t.issue(Scope::Export, "s", decision()).len(), MAX_TOKEN_LEN);
        assert_eq!(t.open(Scope::Export, "subject", "").unwrap(), None);
    }

    #[test]
    fn foreign_and_malformed_tokens_are_refused_naming_page_token() {
        let t = tokens();
        let token = t.issue(Scope::ListDecisions, "alice", decision());
        let mut edited = token.clone().into_bytes();
        edited[8] = if edited[8] == b'0' { b'1' } else { b'0' };
        let other_gateway = PageTokens::new(b"another key".to_vec()).issue(
            Scope::ListDecisions,
            "alice",
            decision(),
        );
        for (scope, subject, token) in [
            (Scope::ListDecisions, "bob", token.clone()),
            (Scope::Export, "alice", token.clone()),
            (
                Scope::ListDecisions,
                "alice",
                String::from_utf8(edited).unwrap(),
            ),
            (Scope::ListDecisions, "alice", other_gateway),
            (Scope::ListDecisions, "alice", "not a token".into()),
            (Scope::ListDecisions, "alice", "abcd".into()),
            (
                Scope::ListDecisions,
                "alice",
                token[..token.len() - 2].into(),
            ),
            (Scope::ListDecisions, "alice", format!("{token}00")),
            (Scope::ListDecisions, "alice", "0".repeat(10_000)),
        ] {
            let e = t.open(scope, subject, &token).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.starts_with("page_token: ")),
                "{token}: {e}"
            );
        }
    }

    #[test]
    fn a_page_reads_one_past_its_end_to_know_whether_more_follow() {
        let page = Page::of("s".into(), vec![1, 2, 3], 2);
        assert_eq!((page.items, page.more), (vec![1, 2], true));
        let page = Page::of("s".into(), vec![1, 2], 2);
        assert_eq!((page.items, page.more), (vec![1, 2], false));
    }

    #[test]
    fn a_budget_takes_whole_items_while_they_fit() {
        let mut budget = Budget::new(8);
        assert!(budget.take(4));
        assert!(!budget.take(5), "an item that does not fit takes nothing");
        assert!(budget.take(4));
        assert!(!budget.take(1));
        assert!(Budget::new(0).take(0));
        assert!(!Budget::new(8).take(usize::MAX));
    }
}

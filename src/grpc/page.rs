//! Paging at the edge: the page size a caller may ask for, and cutting a
//! page to the items whose messages fit in one response, so that a person
//! with many or large records still gets every page (tonic would otherwise
//! refuse the whole answer as OUT_OF_RANGE).

use prost::Message;

use crate::{
    error::Error,
    paging::{Budget, MAX_TOKEN_LEN, Page, Position},
};

/// The most items a page holds, whatever the caller asks: a page's reads
/// and conversions stay bounded even where its bytes would allow more.
const MAX_PAGE: u32 = 1000;

/// The page size asked for in `field`: `default` when 0.
pub(super) fn size(field: &str, asked: u32, default: u32) -> Result<usize, Error> {
    match asked {
        0 => Ok(default as usize),
        n if n <= MAX_PAGE => Ok(n as usize),
        n => Err(Error::InvalidArgument(format!(
            "{field}: {n} exceeds {MAX_PAGE}"
        ))),
    }
}

/// A token as long as any the gateway issues, to measure a response with.
pub(super) fn longest_token() -> String {
    "0".repeat(MAX_TOKEN_LEN)
}

/// The leading items of `page`, as messages of the repeated field `tag`,
/// that fit in `limit` bytes beside `envelope` (the response without its
/// items, measured with [`longest_token`]), and the position of the last
/// one when more follow. An item too large to travel even alone is
/// refused, naming it, rather than skipped.
pub(super) fn fit<T, M: Message>(
    page: &Page<T>,
    envelope: &impl Message,
    limit: usize,
    tag: u32,
    message: impl Fn(&T) -> M,
    position: impl Fn(&T) -> Result<Position, Error>,
) -> Result<(Vec<M>, Option<Position>), Error> {
    let room = limit.saturating_sub(envelope.encoded_len());
    let mut budget = Budget::new(room);
    let mut kept = Vec::with_capacity(page.items.len());
    for item in &page.items {
        let m = message(item);
        let size = prost::encoding::message::encoded_len(tag, &m);
        if !budget.take(size) {
            if kept.is_empty() {
                return Err(Error::TooLarge(format!(
                    "max_message_bytes: the next item ({}) alone is {size} bytes, more than the {room} bytes a page may hold; raise max_message_bytes to read it",
                    position(item)?
                )));
            }
            break;
        }
        kept.push(m);
    }
    let more = page.more || kept.len() < page.items.len();
    let last = match kept.len().checked_sub(1).map(|i| &page.items[i]) {
        Some(item) if more => Some(position(item)?),
        _ => None,
    };
    Ok((kept, last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::pb;

    fn entry(n: usize) -> pb::LedgerEntry {
        pb::LedgerEntry {
            content_json: "x".repeat(n),
            ..Default::default()
        }
    }

    fn page(sizes: &[usize], more: bool) -> Page<usize> {
        Page {
            subject_ref: "s".into(),
            items: sizes.to_vec(),
            more,
        }
    }

    fn at(n: &usize) -> Result<Position, Error> {
        Ok(Position::Ledger {
            after_seq: *n as i64,
        })
    }

    /// Whatever the items' sizes, the response that carries a page is
    /// never over the limit, and a cut page says where the next begins.
    #[test]
    fn a_page_is_cut_to_what_one_message_carries() {
        let limit = 1000;
        for sizes in [
            &[10, 20, 30][..],
            &[400, 400, 400, 1],
            &[800, 100],
            &[1; 300],
        ] {
            let envelope = pb::GetConsentHistoryResponse {
                subject_ref: "s".repeat(64),
                records: vec![],
                next_page_token: longest_token(),
            };
            let (records, last) =
                fit(&page(sizes, false), &envelope, limit, 2, |n| entry(*n), at).unwrap();
            assert!(!records.is_empty(), "{sizes:?}");
            let response = pb::GetConsentHistoryResponse {
                records: records.clone(),
                ..envelope
            };
            assert!(response.encoded_len() <= limit, "{sizes:?}");
            let cut = records.len() < sizes.len();
            assert_eq!(last, cut.then(|| at(&sizes[records.len() - 1]).unwrap()));
        }
    }

    #[test]
    fn the_last_position_is_given_only_when_more_follow() {
        let envelope = pb::GetConsentHistoryResponse::default();
        let (kept, last) =
            fit(&page(&[1, 2], false), &envelope, 1000, 2, |n| entry(*n), at).unwrap();
        assert_eq!((kept.len(), last), (2, None));
        let (_, last) = fit(&page(&[1, 2], true), &envelope, 1000, 2, |n| entry(*n), at).unwrap();
        assert_eq!(last, Some(Position::Ledger { after_seq: 2 }));
        let (kept, last) = fit(&page(&[], false), &envelope, 1000, 2, |n| entry(*n), at).unwrap();
        assert_eq!((kept.len(), last), (0, None));
    }

    #[test]
    fn an_item_that_cannot_travel_alone_is_named() {
        let envelope = pb::GetConsentHistoryResponse::default();
        let e = fit(&page(&[5000], false), &envelope, 1000, 2, |n| entry(*n), at).unwrap_err();
        assert!(
            matches!(&e, Error::TooLarge(m) if m.starts_with("max_message_bytes: ") && m.contains("ledger record 5000")),
            "{e}"
        );
    }

    #[test]
    fn page_sizes_default_and_are_bounded() {
        assert_eq!(size("page_size", 0, 1000).unwrap(), 1000);
        assert_eq!(size("limit", 0, 100).unwrap(), 100);
        assert_eq!(size("limit", 1000, 100).unwrap(), 1000);
        let e = size("page_size", 1001, 1000).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m == "page_size: 1001 exceeds 1000"),
            "{e}"
        );
    }
}

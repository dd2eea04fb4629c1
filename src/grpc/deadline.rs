//! A call's deadline, from its `grpc-timeout` header, read once by the
//! admission layer when the call arrives.
//!
//! The admission layer answers DEADLINE_EXCEEDED when it expires; handlers
//! stop work that can be cut short (inline attributions) at
//! [`Deadline::reply_by`], so that a partial answer still arrives in time.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use http::HeaderMap;

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// When the caller stops waiting for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    received: Instant,
    timeout: Duration,
}

impl Deadline {
    /// The deadline of a call `received` with `headers`, if it has one.
    ///
    /// The header is read as the gRPC specification writes it (one to
    /// eight ASCII digits, then the unit), and `received` is taken before
    /// tonic starts its own timer: ours never expires later, so the caller
    /// gets our DEADLINE_EXCEEDED, not tonic's CANCELLED. A header that is
    /// not a timeout is refused: tonic would ignore it, and the caller,
    /// believing it had set a deadline, would wait without one.
    pub fn from_headers(headers: &HeaderMap, received: Instant) -> Result<Option<Self>, String> {
        let Some(value) = headers.get(GRPC_TIMEOUT) else {
            return Ok(None);
        };
        let malformed = || {
            let shown: String = String::from_utf8_lossy(value.as_bytes())
                .chars()
                .take(32)
                .collect();
            format!(
                "{GRPC_TIMEOUT}: {shown:?} is not a gRPC timeout (1 to 8 digits, then H, M, S, m, u or n)"
            )
        };
        let value = value.to_str().map_err(|_| malformed())?;
        let (amount, unit) = value.split_at(value.len().checked_sub(1).ok_or_else(malformed)?);
        if amount.is_empty() || amount.len() > 8 || !amount.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let amount: u64 = amount.parse().map_err(|_| malformed())?;
        let timeout = match unit {
            "H" => Duration::from_secs(amount * 3600),
            "M" => Duration::from_secs(amount * 60),
            "S" => Duration::from_secs(amount),
            "m" => Duration::from_millis(amount),
            "u" => Duration::from_micros(amount),
            "n" => Duration::from_nanos(amount),
            _ => return Err(malformed()),
        };
        Ok(Some(Self { received, timeout }))
    }

    /// When the caller stops waiting.
    pub fn expires(&self) -> Instant {
        self.received + self.timeout
    }

    /// Resolves when the caller stops waiting. Each poll also reads the
    /// clock: tonic's timer for the same deadline can wake the call a
    /// moment before tokio fires this one (they may fall in different
    /// batches of expired timers), and the call must then still see its
    /// deadline passed, or tonic would answer first.
    pub async fn expired(self) {
        let expires = self.expires();
        let mut timer = std::pin::pin!(tokio::time::sleep_until(expires.into()));
        std::future::poll_fn(|cx| {
            if Instant::now() >= expires {
                return std::task::Poll::Ready(());
            }
            timer.as_mut().poll(cx)
        })
        .await
    }

    /// When the answer must leave to reach the caller before it stops
    /// waiting: a tenth of the timeout, at least 2 ms, is kept for the
    /// reply to travel.
    pub fn reply_by(&self) -> Instant {
        let margin = (self.timeout / 10).max(Duration::from_millis(2));
        self.received + self.timeout.saturating_sub(margin)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, value.parse().unwrap());
        Deadline::from_headers(&headers, Instant::now())
            .unwrap()
            .map(|d| d.timeout())
    }

    #[test]
    fn every_unit_of_the_grpc_spec_is_read() {
        let cases = [
            ("2H", Duration::from_secs(7200)),
            ("3M", Duration::from_secs(180)),
            ("4S", Duration::from_secs(4)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("1n", Duration::from_nanos(1)),
            ("99999999H", Duration::from_secs(99_999_999 * 3600)),
        ];
        for (value, want) in cases {
            assert_eq!(timeout(value), Some(want), "{value}");
        }
    }

    #[test]
    fn what_is_not_a_timeout_is_refused_by_name() {
        for value in [
            "",
            "m",
            "100",
            "100x",
            "123456789m",
            "-1m",
            "1.5S",
            "+5m",
            "2e2m",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(GRPC_TIMEOUT, value.parse().unwrap());
            let e = Deadline::from_headers(&headers, Instant::now()).unwrap_err();
            assert!(e.starts_with("grpc-timeout: "), "{value:?}: {e}");
        }
        assert_eq!(
            Deadline::from_headers(&HeaderMap::new(), Instant::now()),
            Ok(None)
        );
    }

    #[tokio::test]
    async fn a_deadline_expires_on_time_and_at_once_when_past() {
        let received = Instant::now();
        let timeout = Duration::from_millis(30);
        Deadline { received, timeout }.expired().await;
        assert!(received.elapsed() >= timeout);
        let past = Deadline {
            received: received - Duration::from_secs(1),
            timeout,
        };
        let mut expired = std::pin::pin!(past.expired());
        let waker = std::task::Waker::noop();
        let polled = expired
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        assert!(polled.is_ready(), "a past deadline needs no timer");
    }

    #[test]
    fn the_reply_leaves_a_tenth_of_the_timeout_early_and_at_least_2_ms() {
        let received = Instant::now();
        let at = |timeout| Deadline { received, timeout };
        let long = at(Duration::from_secs(1));
        assert_eq!(long.expires(), received + Duration::from_secs(1));
        assert_eq!(long.reply_by(), received + Duration::from_millis(900));
        assert_eq!(
            at(Duration::from_millis(10)).reply_by(),
            received + Duration::from_millis(8)
        );
        assert_eq!(at(Duration::from_millis(1)).reply_by(), received);
    }
}

//! Consumer tokens: short-lived JWTs (HS256) bound to one pseudonymous
//! subject, minted by `candor token issue` for the publisher's backend.
//!
//! The signing key is derived from the subject pseudonymisation key, never
//! equal to it, so a pseudonym (which callers see) cannot sign a token and
//! the gateway needs no second secret.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// Who minted the token and who may accept it.
const ISSUER: &str = "candor";
const AUDIENCE: &str = "candor:subject";
/// The longest a consumer token may live: a token in a browser is a bearer
/// credential, so it should expire before it can be worth stealing.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// How far ahead of this gateway's clock an issuer's may run.
const CLOCK_SKEW_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the subject token has expired")]
    Expired,
    #[error("the subject token's signature does not verify")]
    BadSignature,
    #[error("the subject token's lifetime must be 1 to {} s", MAX_TTL.as_secs())]
    TooLong,
    #[error("the subject token claims to be issued in the future")]
    NotYetIssued,
    #[error("the subject token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the subject token is malformed: {0}")]
    Malformed(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    /// The pseudonymous subject reference.
    sub: String,
    iat: u64,
    exp: u64,
    /// Not before: absent in the tokens this gateway issues, honoured when
    /// present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Tokens {
    pub fn new(key: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "aud", "iss"]);
        // Both ends use this gateway's clock.
        validation.leeway = 0;
        validation.validate_nbf = true;
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
        }
    }

    /// A token for `subject_ref`, issued at `issued_at` (seconds since the
    /// Unix epoch) and valid for `ttl`.
    pub fn issue(
        &self,
        subject_ref: &str,
        issued_at: u64,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        if ttl > MAX_TTL || ttl.is_zero() {
            return Err(TokenError::TooLong);
        }
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: subject_ref.into(),
            iat: issued_at,
            exp: issued_at + ttl.as_secs(),
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Malformed(e.to_string()))
    }

    /// The subject a token is bound to, if its signature, issuer, audience
    /// and lifetime all hold.
    pub fn verify(&self, token: &str) -> Result<String, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                // Never echo the token: the message names only the defect,
                // in words rather than the decoder's internals.
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                    TokenError::Malformed("it is not header.claims.signature in base64url".into())
                }
                // The header is decoded with the claims: say which failed.
                ErrorKind::Json(_) if jsonwebtoken::decode_header(token).is_err() => {
                    TokenError::Malformed(header_defect(token).into())
                }
                ErrorKind::Json(_)
                | ErrorKind::MissingRequiredClaim(_)
                | ErrorKind::InvalidClaimFormat(_) => {
                    TokenError::Malformed("its claims are not a subject token's".into())
                }
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    TokenError::Malformed("it was not issued by this gateway for subjects".into())
                }
                ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                    TokenError::Malformed("it is not signed with HS256".into())
                }
                _ => TokenError::Malformed("it does not verify".into()),
            })?;
        // RFC 7515 §4.1.11: extensions marked critical must be understood,
        // and this gateway understands none.
        if data.header.crit.is_some() {
            return Err(TokenError::Malformed(
                "its header names critical extensions this gateway does not understand".into(),
            ));
        }
        let Claims { sub, iat, exp, .. } = data.claims;
        // RFC 7519 §4.1.4: valid only while the current time is before
        // `exp` (the decoder also takes the second of `exp` itself).
        if exp <= now_secs() {
            return Err(TokenError::Expired);
        }
        // The lifetime cap holds only if `iat` is honest: a token may not
        // be dated ahead (it would live until then plus its TTL), nor end
        // before it starts.
        if iat > now_secs() + CLOCK_SKEW_SECS {
            return Err(TokenError::NotYetIssued);
        }
        if exp <= iat || exp - iat > MAX_TTL.as_secs() {
            return Err(TokenError::TooLong);
        }
        Ok(sub)
    }
}

/// Seconds since the Unix epoch.
/// What is wrong with a header the decoder does not take: an algorithm
/// other than HS256 (`none` among them), or no JWS header at all.
fn header_defect(token: &str) -> &'static str {
    use base64::Engine;
    let alg = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .and_then(|h| h.get("alg").cloned());
    match alg {
        Some(alg) if alg != "HS256" => "it is not signed with HS256",
        _ => "its header is not a signed JWT's",
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_token_names_its_subject_until_it_expires() {
        let tokens = Tokens::new(b"k");
        let now = now_secs();
        let fresh = tokens.issue("ref", now, HOUR).unwrap();
        assert_eq!(tokens.verify(&fresh).unwrap(), "ref");
        let stale = tokens.issue("ref", now - 2 * 3600, HOUR).unwrap();
        assert_eq!(tokens.verify(&stale), Err(TokenError::Expired));
    }

    #[test]
    fn another_key_or_an_edit_breaks_the_token() {
        let token = Tokens::new(b"k").issue("ref", now_secs(), HOUR).unwrap();
        assert_eq!(
            Tokens::new(b"other").verify(&token),
            Err(TokenError::BadSignature)
        );
        // Swap the payload for one naming someone else, keep the signature.
        let forged_payload = Tokens::new(b"k")
            .issue("someone-else", now_secs(), HOUR)
            .unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = forged_payload.split('.').nth(1).unwrap();
        assert_eq!(
            Tokens::new(b"k").verify(&parts.join(".")),
            Err(TokenError::BadSignature)
        );
        // An unsigned token says so, not that its claims are wrong.
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        assert_eq!(
            Tokens::new(b"k").verify(&unsigned),
            Err(TokenError::Malformed("it is not signed with HS256".into()))
        );
        for garbage in ["not.a.token", "abc", "e30.e30.@@", ""] {
            let e = Tokens::new(b"k").verify(garbage).unwrap_err();
            assert!(matches!(e, TokenError::Malformed(_)), "{garbage}: {e}");
            // Words, not the decoder's internals.
            assert!(!e.to_string().contains('('), "{garbage}: {e}");
        }
    }

    #[test]
    fn lifetimes_are_capped() {
        let tokens = Tokens::new(b"k");
        assert_eq!(
            tokens.issue("ref", now_secs(), MAX_TTL + HOUR),
            Err(TokenError::TooLong)
        );
        let zero = tokens.issue("ref", now_secs(), Duration::ZERO).unwrap_err();
        assert_eq!(
            zero.to_string(),
            "the subject token's lifetime must be 1 to 86400 s"
        );
        // Dated a year ahead, a one-hour token would live a year.
        let ahead = tokens
            .issue("ref", now_secs() + 365 * 86_400, HOUR)
            .unwrap();
        assert_eq!(tokens.verify(&ahead), Err(TokenError::NotYetIssued));
        // Minted by hand to end before it starts.
        let backwards = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "ref".into(),
            iat: now_secs() + 50,
            exp: now_secs() + 30,
            nbf: None,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &backwards, &tokens.encoding)
                .unwrap();
        assert_eq!(tokens.verify(&token), Err(TokenError::TooLong));
    }

    /// The JWT rules a key holder could bend: a token valid only later, one
    /// at its `exp` second, and one whose header demands an extension.
    #[test]
    fn not_before_the_expiry_second_and_critical_extensions_hold() {
        let tokens = Tokens::new(b"k");
        let now = now_secs();
        let sign = |header: &Header, iat: u64, exp: u64, nbf: Option<u64>| {
            let claims = Claims {
                iss: ISSUER.into(),
                aud: AUDIENCE.into(),
                sub: "ref".into(),
                iat,
                exp,
                nbf,
            };
            jsonwebtoken::encode(header, &claims, &tokens.encoding).unwrap()
        };
        let plain = Header::new(Algorithm::HS256);
        let later = sign(&plain, now, now + 3600, Some(now + 600));
        assert_eq!(tokens.verify(&later), Err(TokenError::NotYetValid));
        let started = sign(&plain, now, now + 3600, Some(now - 1));
        assert_eq!(tokens.verify(&started).unwrap(), "ref");
        let at_expiry = sign(&plain, now - 60, now, None);
        assert_eq!(tokens.verify(&at_expiry), Err(TokenError::Expired));
        let critical = Header {
            crit: Some(vec!["exp-ext".into()]),
            ..Header::new(Algorithm::HS256)
        };
        let demanding = sign(&critical, now, now + 3600, None);
        assert!(
            matches!(tokens.verify(&demanding), Err(TokenError::Malformed(m)) if m.contains("critical")),
            "{:?}",
            tokens.verify(&demanding)
        );
    }
}

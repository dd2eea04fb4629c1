//! Who is calling, and the record of what staff read.
//!
//! A caller is identified by a hashed API key or an mTLS client certificate
//! (staff and ad systems, each with a role), or by a consumer token bound to
//! one pseudonymous subject ([`tokens`]). With no staff credential
//! configured at all the gateway is open, which suits a development machine
//! on loopback only. Staff reads of a person's data are themselves recorded
//! ([`audit`]), because GDPR asks the controller to account for them; the
//! consent changes they make name them in the ledger record itself.
//!
//! What each caller may do is decided at the gRPC edge, by the one table in
//! `src/grpc/auth.rs`.

pub mod audit;
pub mod tokens;

use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use crate::config::Role;
use crate::{config::AccessConfig, consent::ledger::Actor};
use tokens::{TokenError, Tokens};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No staff credential is configured: every call is open (development
    /// only).
    Open,
    /// A staff member or service, by the name its credential carries.
    Staff { name: Arc<str>, role: Role },
    /// A consumer token's subject reference.
    Subject(String),
}

impl Caller {
    /// How the caller is named in the staff-read log and in logs.
    pub fn actor(&self) -> (&str, &str) {
        match self {
            Caller::Open => ("(open gateway)", "open"),
            Caller::Staff { name, role } => (name, role.as_str()),
            Caller::Subject(_) => ("(the subject)", "subject"),
        }
    }

    /// The caller as a consent record names who made a change.
    pub fn as_actor(&self) -> Actor {
        let (name, role) = self.actor();
        Actor {
            name: name.to_owned(),
            role: role.to_owned(),
        }
    }
}

/// Why a credential was not accepted. Messages never repeat the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error(
        "authorization: no credential; send `authorization: Bearer <API key or subject token>` or a client certificate"
    )]
    NoCredential,
    #[error("authorization: unknown API key")]
    UnknownKey,
    #[error("authorization: the API key {0:?} has expired")]
    ExpiredKey(String),
    #[error("authorization: the client certificate is not mapped to any role")]
    UnknownCertificate,
    #[error("authorization: {0}")]
    Token(#[from] TokenError),
}

pub struct Access {
    config: AccessConfig,
    tokens: Tokens,
}

impl Access {
    /// `token_key` signs consumer tokens.
    pub fn new(config: AccessConfig, token_key: &[u8]) -> Self {
        // Kept, since keys are meant to run out, but said: a gateway whose
        // keys have all expired refuses every staff call.
        let now = jiff::Timestamp::now();
        for key in &config.api_keys {
            if let Some(expires) = key.expires.filter(|&e| e <= now) {
                tracing::warn!(
                    key = %key.name,
                    %expires,
                    "access.api_keys: this key has expired and admits no call"
                );
            }
        }
        Self {
            config,
            tokens: Tokens::new(token_key),
        }
    }

    /// Open when no staff credential is configured at all.
    pub fn is_open(&self) -> bool {
        self.config.api_keys.is_empty() && self.config.clients.is_empty()
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The caller behind a bearer credential (an API key or a consumer
    /// token) or, failing that, a verified client certificate (DER).
    pub fn identify(
        &self,
        bearer: Option<&str>,
        client_cert: Option<&[u8]>,
    ) -> Result<Caller, AccessError> {
        if let Some(credential) = bearer {
            let digest = hex::encode(Sha256::digest(credential.as_bytes()));
            let key = self
                .config
                .api_keys
                .iter()
                .find(|k| k.sha256.eq_ignore_ascii_case(&digest));
            // A JWT is three base64url parts; an API key is an opaque word,
            // which may have dots of its own.
            let key = match key {
                Some(key) => key,
                None if credential.split('.').count() == 3 => {
                    return Ok(Caller::Subject(self.tokens.verify(credential)?));
                }
                None => return Err(AccessError::UnknownKey),
            };
            if key.expires.is_some_and(|at| at <= jiff::Timestamp::now()) {
                return Err(AccessError::ExpiredKey(key.name.clone()));
            }
            return Ok(Caller::Staff {
                name: key.name.as_str().into(),
                role: key.role,
            });
        }
        if let Some(der) = client_cert {
            let digest = hex::encode(Sha256::digest(der));
            return self
                .config
                .clients
                .iter()
                .find(|c| c.cert_sha256.eq_ignore_ascii_case(&digest))
                .map(|c| Caller::Staff {
                    name: c.name.as_str().into(),
                    role: c.role,
                })
                .ok_or(AccessError::UnknownCertificate);
        }
        if self.is_open() {
            Ok(Caller::Open)
        } else {
            Err(AccessError::NoCredential)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiKey, ClientCert};

    fn access() -> Access {
        let key = |name: &str, secret: &str, expires| ApiKey {
            name: name.into(),
            role: Role::Support,
            sha256: hex::encode(Sha256::digest(secret)),
            expires,
        };
        Access::new(
            AccessConfig {
                api_keys: vec![
                    key("alice", "a-secret", None),
                    key("old", "o-secret", Some(jiff::Timestamp::UNIX_EPOCH)),
                    key("dotted", "d.ot.ted", None),
                ],
                clients: vec![ClientCert {
                    name: "dsp".into(),
                    role: Role::Scorer,
                    cert_sha256: hex::encode(Sha256::digest(b"der")),
                }],
                ..AccessConfig::default()
            },
            b"token key",
        )
    }

    #[test]
    fn credentials_map_to_callers() {
        let a = access();
        assert_eq!(
            a.identify(Some("a-secret"), Some(b"der")).unwrap(),
            Caller::Staff {
                name: "alice".into(),
                role: Role::Support
            },
            "an explicit bearer credential wins over the connection's certificate"
        );
        assert_eq!(
            a.identify(None, Some(b"der")).unwrap(),
            Caller::Staff {
                name: "dsp".into(),
                role: Role::Scorer
            }
        );
        assert_eq!(
            a.identify(Some("o-secret"), None),
            Err(AccessError::ExpiredKey("old".into()))
        );
        assert_eq!(a.identify(Some("nope"), None), Err(AccessError::UnknownKey));
        // A key with two dots is a key, not a malformed token.
        assert_eq!(
            a.identify(Some("d.ot.ted"), None).unwrap(),
            Caller::Staff {
                name: "dotted".into(),
                role: Role::Support
            }
        );
        assert!(matches!(
            a.identify(Some("d.ot.ten"), None),
            Err(AccessError::Token(_))
        ));
        assert_eq!(
            a.identify(None, Some(b"other")),
            Err(AccessError::UnknownCertificate)
        );
        assert_eq!(a.identify(None, None), Err(AccessError::NoCredential));
        let token = a
            .tokens()
            .issue(
                "ref",
                tokens::now_secs(),
                std::time::Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(
            a.identify(Some(&token), None).unwrap(),
            Caller::Subject("ref".into())
        );
    }

    #[test]
    fn no_staff_credential_configured_means_open() {
        let open = Access::new(AccessConfig::default(), b"k");
        assert_eq!(open.identify(None, None).unwrap(), Caller::Open);
        assert_eq!(
            open.identify(Some("anything"), None),
            Err(AccessError::UnknownKey),
            "a presented credential is still checked"
        );
    }
}

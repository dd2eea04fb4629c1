//! Who is calling: a staff API key, a token bound to one subject, or, when
//! no API key is configured at all, an open development gateway.
//!
//! Credentials travel as `authorization: Bearer <key or token>`. API keys
//! are compared by their SHA-256, so the configuration never holds a key
//! itself. Which caller may do what is decided by each service's table.

use sha2::{Digest, Sha256};
use tonic::{Status, metadata::MetadataMap};

pub use crate::config::Role;
use crate::gateway::Gateway;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No API key is configured: every view is open (development only).
    Open,
    Staff(Role),
    /// A consumer token's subject reference.
    Subject(String),
}

pub fn caller(gateway: &Gateway, metadata: &MetadataMap) -> Result<Caller, Status> {
    let keys = &gateway.config().access.api_keys;
    let presented = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(credential) = presented else {
        return if keys.is_empty() {
            Ok(Caller::Open)
        } else {
            Err(Status::unauthenticated(
                "authorization: no credential; send `Bearer <API key or subject token>`",
            ))
        };
    };
    if credential.starts_with("cst_") {
        return gateway
            .consents()
            .ledger()
            .verify_token(credential)
            .map(Caller::Subject)
            .ok_or_else(|| {
                Status::unauthenticated("authorization: the subject token is invalid or expired")
            });
    }
    let digest = hex::encode(Sha256::digest(credential.as_bytes()));
    keys.iter()
        .find(|k| k.sha256 == digest)
        .map(|k| Caller::Staff(k.role))
        .ok_or_else(|| Status::unauthenticated("authorization: unknown API key"))
}

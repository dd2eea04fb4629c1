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

/// Who may call an RPC: these staff roles, and (when `own_subject`) a
/// subject token for the subject the call is about.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub roles: &'static [Role],
    pub own_subject: bool,
}

const fn rule(roles: &'static [Role], own_subject: bool) -> Rule {
    Rule { roles, own_subject }
}

/// The one table of who may do what. Ad systems (`scorer`) score and record
/// the consent their CMP collected; they never read a person's data back.
pub mod table {
    use super::{Role::*, Rule, rule};

    pub const SCORE: Rule = rule(&[Scorer, Admin], false);
    pub const MODELS: Rule = rule(&[Scorer, Support, Engineer, Admin], false);
    pub const WHAT_IF: Rule = rule(&[Engineer, Admin], false);
    pub const RECORD_CONSENT: Rule = rule(&[Scorer, Support, Admin], true);
    pub const WITHDRAW_CONSENT: Rule = rule(&[Scorer, Support, Admin], true);
    pub const READ_CONSENT: Rule = rule(&[Support, Admin], true);
    pub const VERIFY_LEDGER: Rule = rule(&[Support, Engineer, Admin], false);
    pub const ERASE_SUBJECT: Rule = rule(&[Support, Admin], true);
    pub const SUBJECT_DATA: Rule = rule(&[Support, Admin], true);
    pub const CONSUMER_VIEW: Rule = rule(&[Support, Engineer, Admin], true);
    pub const SUPPORT_VIEW: Rule = rule(&[Support, Admin], false);
    pub const ENGINEER_VIEW: Rule = rule(&[Engineer, Admin], false);
}

/// Admits `caller` under `rule` for a call about `subject_ref`, or names why
/// not.
pub fn check(caller: &Caller, rule: Rule, subject_ref: Option<&str>) -> Result<(), Status> {
    let admitted = match caller {
        Caller::Open => true,
        Caller::Staff(role) => rule.roles.contains(role),
        Caller::Subject(s) => rule.own_subject && subject_ref == Some(s.as_str()),
    };
    if admitted {
        Ok(())
    } else {
        Err(Status::permission_denied(match caller {
            Caller::Subject(_) => {
                "authorization: a subject token admits calls about its own subject only".to_owned()
            }
            _ => format!(
                "authorization: this call needs one of the roles {:?}",
                rule.roles
            ),
        }))
    }
}

/// The caller, admitted under `rule` for a call about `subject_ref`.
pub fn authorize(
    gateway: &Gateway,
    metadata: &MetadataMap,
    rule: Rule,
    subject_ref: Option<&str>,
) -> Result<Caller, Status> {
    let caller = caller(gateway, metadata)?;
    check(&caller, rule, subject_ref)?;
    Ok(caller)
}

/// The caller, admitted under `rule` for a call about the publisher's
/// `subject_id` (pseudonymised here, as a subject token names it).
pub fn authorize_for_subject(
    gateway: &Gateway,
    metadata: &MetadataMap,
    rule: Rule,
    subject_id: &str,
) -> Result<Caller, Status> {
    let subject_ref = gateway.consents().ledger().pseudonymise(subject_id);
    authorize(gateway, metadata, rule, Some(&subject_ref))
}

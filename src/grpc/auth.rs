//! What each caller may do: one table, [`RULES`], names every RPC the server
//! answers and the callers it admits. The admission layer
//! ([`super::admission`]) identifies the caller and checks this table before
//! any handler runs; an RPC missing from it is refused. Handlers then only
//! check what needs the request body: that a subject token is about its own
//! subject, and (for reads of a person's data by staff) that the read is put
//! on record with its reason before anything is returned.

use tonic::{Request, Status, metadata::MetadataMap};

use crate::{
    access::{Caller, audit::StaffRead},
    config::Role::{self, *},
    gateway::Gateway,
    paging::Scope,
    store::now_ms,
};

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Staff roles admitted.
    pub roles: &'static [Role],
    /// A consumer token is admitted for calls about its own subject.
    pub own_subject: bool,
    /// No credential needed (health checks).
    pub public: bool,
    /// The call reads a person's data: a staff caller must say why, and the
    /// read is recorded.
    pub staff_read: bool,
    /// The client streams its requests (server reflection answers each on
    /// an open stream): the call is admitted without waiting for the end of
    /// its request stream.
    pub streams_requests: bool,
    /// The call makes decisions, which are recorded as it goes: one it is
    /// refused after may already have made some.
    pub decides: bool,
}

const fn staff(roles: &'static [Role]) -> Rule {
    Rule {
        roles,
        own_subject: false,
        public: false,
        staff_read: false,
        streams_requests: false,
        decides: false,
    }
}

/// Scoring: a call that makes decisions.
const fn decisions(roles: &'static [Role]) -> Rule {
    Rule {
        decides: true,
        ..staff(roles)
    }
}

/// Also admits a consumer token for its own subject.
const fn staff_or_subject(roles: &'static [Role]) -> Rule {
    Rule {
        own_subject: true,
        ..staff(roles)
    }
}

/// A read of a person's data: staff must give a reason, and it is recorded.
const fn read_of_subject(roles: &'static [Role]) -> Rule {
    Rule {
        staff_read: true,
        ..staff_or_subject(roles)
    }
}

const PUBLIC: Rule = Rule {
    public: true,
    ..staff(&[])
};

const REFLECTION: Rule = Rule {
    streams_requests: true,
    ..staff(ALL_STAFF)
};

const ALL_STAFF: &[Role] = &[Scorer, Support, Engineer, Admin];

/// The one table. Ad systems (`scorer`) score and record the consent their
/// CMP collected; they read nothing of a person back but the consent
/// provenance each of their own decisions carries (the purposes and ledger
/// records it rested on). Support staff read
/// and act for a person; engineers see models and raw attributions.
pub const RULES: &[(&str, Rule)] = &[
    (
        "/candor.v1.ScoringService/Score",
        decisions(&[Scorer, Admin]),
    ),
    (
        "/candor.v1.ScoringService/ScoreBatch",
        decisions(&[Scorer, Admin]),
    ),
    ("/candor.v1.ModelService/ListModels", staff(ALL_STAFF)),
    ("/candor.v1.ModelService/DescribeModel", staff(ALL_STAFF)),
    (
        "/candor.v1.ExplainService/Explain",
        staff(&[Engineer, Admin]),
    ),
    (
        "/candor.v1.ExplainService/ExplainBatch",
        staff(&[Engineer, Admin]),
    ),
    (
        "/candor.v1.ConsentService/RecordConsent",
        staff_or_subject(&[Scorer, Support, Admin]),
    ),
    (
        "/candor.v1.ConsentService/WithdrawConsent",
        staff_or_subject(&[Scorer, Support, Admin]),
    ),
    (
        "/candor.v1.ConsentService/GetConsent",
        read_of_subject(&[Support, Admin]),
    ),
    (
        "/candor.v1.ConsentService/GetConsentHistory",
        read_of_subject(&[Support, Admin]),
    ),
    (
        "/candor.v1.ConsentService/VerifyLedger",
        staff(&[Support, Engineer, Admin]),
    ),
    (
        "/candor.v1.ConsentService/EraseSubject",
        staff_or_subject(&[Support, Admin]),
    ),
    // Which views each caller may see is refined by `audience` below.
    (
        "/candor.v1.ExplanationService/GetExplanation",
        read_of_subject(&[Support, Engineer, Admin]),
    ),
    (
        "/candor.v1.ExplanationService/ListDecisions",
        read_of_subject(&[Support, Admin]),
    ),
    (
        "/candor.v1.ExplanationService/ExportSubjectData",
        read_of_subject(&[Support, Admin]),
    ),
    // ML engineers deploy and watch models; admins too.
    (
        "/candor.v1.AdminService/ReloadModels",
        staff(&[Engineer, Admin]),
    ),
    (
        "/candor.v1.AdminService/LoadModel",
        staff(&[Engineer, Admin]),
    ),
    (
        "/candor.v1.AdminService/UnloadModel",
        staff(&[Engineer, Admin]),
    ),
    (
        "/candor.v1.AdminService/GetRollout",
        staff(&[Engineer, Admin]),
    ),
    (
        "/candor.v1.AdminService/SetRollout",
        staff(&[Engineer, Admin]),
    ),
    (
        "/candor.v1.AdminService/AttributionDrift",
        staff(&[Engineer, Admin]),
    ),
    // A decision's shadow outputs carry the person's feature values.
    (
        "/candor.v1.AdminService/GetShadowOutputs",
        Rule {
            staff_read: true,
            ..staff(&[Engineer, Admin])
        },
    ),
    (
        "/candor.v1.AdminService/FairnessReport",
        staff(&[Engineer, Admin]),
    ),
    // The Open Inference Protocol: inference is scoring; model readiness and
    // metadata name models, like the model listing; the server's liveness
    // and readiness are health checks.
    (
        "/inference.GRPCInferenceService/ModelInfer",
        decisions(&[Scorer, Admin]),
    ),
    (
        "/inference.GRPCInferenceService/ModelMetadata",
        staff(ALL_STAFF),
    ),
    (
        "/inference.GRPCInferenceService/ModelReady",
        staff(ALL_STAFF),
    ),
    (
        "/inference.GRPCInferenceService/ServerMetadata",
        staff(ALL_STAFF),
    ),
    ("/inference.GRPCInferenceService/ServerLive", PUBLIC),
    ("/inference.GRPCInferenceService/ServerReady", PUBLIC),
    ("/grpc.health.v1.Health/Check", PUBLIC),
    ("/grpc.health.v1.Health/Watch", PUBLIC),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        REFLECTION,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        REFLECTION,
    ),
];

/// `GetExplanation`'s views: the consumer view is for the person (or staff
/// helping them), the support view for support staff, the engineer view
/// for ML engineers.
pub mod audience {
    use super::*;
    pub const CONSUMER: Rule = read_of_subject(&[Support, Engineer, Admin]);
    /// Staff only: the person sees the consumer view, never these.
    pub const SUPPORT: Rule = Rule {
        own_subject: false,
        ..read_of_subject(&[Support, Admin])
    };
    pub const ENGINEER: Rule = Rule {
        own_subject: false,
        ..read_of_subject(&[Engineer, Admin])
    };
}

/// The rule for a gRPC path, if the server answers it.
pub fn rule_for(path: &str) -> Option<(&'static str, &'static Rule)> {
    RULES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(p, rule)| (*p, rule))
}

/// What the admission layer established about a call, for its handler.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub caller: Caller,
    pub rule: &'static Rule,
    pub rpc: &'static str,
    /// From the call's `grpc-timeout`, when it gave one.
    pub deadline: Option<super::deadline::Deadline>,
}

/// Admits `caller` under `rule`, or names why not. Calls about a subject
/// are checked again with [`check_subject`] once the subject is known.
pub fn check(caller: &Caller, rule: &Rule) -> Result<(), Status> {
    let admitted = rule.public
        || match caller {
            Caller::Open => true,
            Caller::Staff { role, .. } => rule.roles.contains(role),
            Caller::Subject(_) => rule.own_subject,
        };
    if admitted {
        return Ok(());
    }
    Err(Status::permission_denied(match caller {
        Caller::Subject(_) => "authorization: a subject token admits only calls about its own subject (its consent, decisions and explanations, and its erasure)".to_owned(),
        _ => format!(
            "authorization: this call needs one of the roles [{}]{}",
            rule.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
            if rule.own_subject {
                ", or the subject's own token"
            } else {
                ""
            }
        ),
    }))
}

/// Admits `caller` under `rule` for a call about `subject_ref` (`None`
/// when the call's object belongs to nobody, e.g. a contextual decision).
pub fn check_subject(
    caller: &Caller,
    rule: &Rule,
    subject_ref: Option<&str>,
) -> Result<(), Status> {
    check(caller, rule)?;
    if about_another_subject(caller, subject_ref) {
        return Err(Status::permission_denied(
            "authorization: a subject token admits calls about its own subject only",
        ));
    }
    Ok(())
}

/// Whether `caller` holds a subject token for someone other than
/// `subject_ref`; staff and open callers are bound to no subject.
pub fn about_another_subject(caller: &Caller, subject_ref: Option<&str>) -> bool {
    match caller {
        Caller::Subject(own) => subject_ref != Some(own.as_str()),
        _ => false,
    }
}

/// What the admission layer attached to `request`.
pub fn admitted<T>(request: &Request<T>) -> Result<Admitted, Status> {
    request
        .extensions()
        .get::<Admitted>()
        .cloned()
        .ok_or_else(|| Status::internal("the call bypassed the admission layer"))
}

/// Admits the call for the publisher's `subject_id` (pseudonymised here, as
/// a consumer token names it) and puts a staff read on record. Callers
/// convert the rest of their request first: a read refused as bad input is
/// not a read.
pub async fn for_subject<T>(
    gateway: &Gateway,
    request: &Request<T>,
    subject_id: &str,
) -> Result<Admitted, Status> {
    for_subject_page(gateway, request, subject_id, None).await
}

/// [`for_subject`] for a paged read: its `page_token` is checked before the
/// read goes on record, since a read refused as bad input is not a read.
pub async fn for_subject_page<T>(
    gateway: &Gateway,
    request: &Request<T>,
    subject_id: &str,
    page: Option<(Scope, &str)>,
) -> Result<Admitted, Status> {
    let admitted = admitted(request)?;
    // A malformed id is refused before anything goes on record.
    let subject_ref = gateway.consents().subject_ref(subject_id)?;
    if let Some((scope, token)) = page {
        gateway.page_tokens().open(scope, &subject_ref, token)?;
    }
    check_subject(&admitted.caller, admitted.rule, Some(&subject_ref))?;
    account(
        gateway,
        request.metadata(),
        &admitted,
        admitted.rule,
        &subject_ref,
    )
    .await?;
    Ok(admitted)
}

/// The header in which staff say why they read a person's data.
pub const REASON_HEADER: &str = "x-candor-reason";

/// Records a read of `subject_ref`'s data under `rule` by anyone but the
/// person themselves. Staff must give a reason; the open development
/// gateway records whatever it was given.
pub async fn account(
    gateway: &Gateway,
    metadata: &MetadataMap,
    admitted: &Admitted,
    rule: &Rule,
    subject_ref: &str,
) -> Result<(), Status> {
    let reason = read_reason(metadata, admitted, rule)?;
    record_read(gateway, metadata, admitted, reason, subject_ref).await
}

/// Records a read of `subject_ref`'s data with the reason [`read_reason`]
/// gave; nothing when it gave none (a read that is not recorded).
pub async fn record_read(
    gateway: &Gateway,
    metadata: &MetadataMap,
    admitted: &Admitted,
    reason: Option<String>,
    subject_ref: &str,
) -> Result<(), Status> {
    let Some(reason) = reason else {
        return Ok(());
    };
    let (actor, role) = admitted.caller.actor();
    gateway
        .record_staff_read(StaffRead {
            read_at_ms: now_ms(),
            actor: actor.to_owned(),
            role: role.to_owned(),
            rpc: admitted.rpc.to_owned(),
            subject_ref: subject_ref.to_owned(),
            reason,
            request_id: super::request_id(metadata),
        })
        .await?;
    Ok(())
}

/// The reason a read under `rule` is recorded with, or None when it is not
/// recorded (the person's own read). Handlers that must look a decision up
/// before they know whose it is check it first, so that a read refused for
/// want of a reason has computed and revealed nothing.
pub fn read_reason(
    metadata: &MetadataMap,
    admitted: &Admitted,
    rule: &Rule,
) -> Result<Option<String>, Status> {
    if !rule.staff_read || matches!(admitted.caller, Caller::Subject(_)) {
        return Ok(None);
    }
    // UTF-8, not only the ASCII gRPC metadata promises: a ticket names
    // people as they are spelt (a client sends "Müller" as its bytes).
    // The record keeps one reason: a second would be silently dropped.
    if metadata.get_all(REASON_HEADER).iter().nth(1).is_some() {
        return Err(Status::invalid_argument(format!(
            "{REASON_HEADER}: given twice; send one reason"
        )));
    }
    let reason = match metadata.get(REASON_HEADER) {
        Some(value) => std::str::from_utf8(value.as_bytes())
            .map_err(|_| Status::invalid_argument(format!("{REASON_HEADER}: is not UTF-8 text")))?
            .trim(),
        None => "",
    };
    if reason.len() > 500 {
        return Err(Status::invalid_argument(format!(
            "{REASON_HEADER}: at most 500 bytes"
        )));
    }
    // Kept for good in the read log, which is read as text.
    if reason.chars().any(crate::printable::unprintable) {
        return Err(Status::invalid_argument(format!(
            "{REASON_HEADER}: holds a control, line-breaking or invisible character; a reason is printable text"
        )));
    }
    if reason.is_empty() && matches!(admitted.caller, Caller::Staff { .. }) {
        return Err(Status::invalid_argument(format!(
            "{REASON_HEADER}: staff reads of a person's data must say why (e.g. the support ticket); the read is recorded"
        )));
    }
    Ok(Some(if reason.is_empty() {
        "(none given)".to_owned()
    } else {
        reason.to_owned()
    }))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Every method in the served descriptors has exactly one rule, and
    /// every rule names a served method: nothing is reachable by default.
    #[test]
    fn every_served_rpc_has_exactly_one_rule() {
        let mut served = Vec::new();
        for set in [
            super::super::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(set).unwrap();
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        served.push(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        served.sort();
        let mut ruled: Vec<String> = RULES.iter().map(|(p, _)| (*p).to_owned()).collect();
        ruled.sort();
        assert_eq!(served, ruled);
    }

    #[test]
    fn subject_tokens_reach_only_their_own_subject() {
        let me = Caller::Subject("me".into());
        let rule = &audience::CONSUMER;
        assert!(check_subject(&me, rule, Some("me")).is_ok());
        assert!(check_subject(&me, rule, Some("you")).is_err());
        assert!(check_subject(&me, rule, None).is_err());
        assert!(check(&me, &RULES[0].1).is_err(), "a token cannot score");
    }
}

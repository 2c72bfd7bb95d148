//! The one decision type: what was decided about a call, and what the connection must do.
//!
//! The decision stage (`Guard::begin`) turns every whole request into one `Decision`; the
//! connection carries out its `Action` and reports how that went (`Exit`); the finish
//! (`Guard::finish`) records the call from the two, once.

use bytes::{Bytes, BytesMut};

use super::reply::ListFilter;
use crate::decision::authz::{Object, Reason};
use crate::listener::identity::Identity;
use crate::upstream::Answer;
use crate::wire::codec::reply::AppErrorKind;
use crate::wire::codec::{MessageType, TopField};
use crate::wire::schema::fields::method_result::SUCCESS;
use crate::wire::schema::{StructDef, T};

/// A decided call.
#[derive(Debug)]
pub struct Decision {
    pub action: Action,
    /// What the audit line and the metrics say about the decision; built once.
    pub record: Record,
    /// What a call the metastore executed may have changed (cached facts dropped after it).
    pub invalidate: Invalidation,
}

/// What the connection does with a decided call.
#[derive(Debug)]
pub enum Action {
    /// Send `bytes` upstream and bring the reply back as `reply` says.
    Forward(Forward),
    /// Answer with this denial (the method's declared exception); nothing goes upstream; the
    /// connection stays open.
    Deny(String),
    /// Answer with a reply the proxy made (`set_ugi`); the connection's identity becomes
    /// `identity`.
    Answer { reply: BytesMut, identity: Identity },
    /// Answer with a reply the proxy made (an engine's question); nothing goes upstream.
    Reply(BytesMut),
    /// Answer with a `TApplicationException`; nothing goes upstream; `close`: the connection
    /// ends after it.
    Refuse {
        kind: AppErrorKind,
        message: String,
        close: bool,
    },
}

/// A call to send upstream.
#[derive(Debug)]
pub struct Forward {
    /// The whole message (the client's own bytes, or with fields set for the caller).
    pub bytes: Bytes,
    pub reply: ReplyCheck,
    pub session: Session,
    /// What the call does to the shared metadata cache (`decision::cacheable`).
    pub cache: crate::upstream::cache::CacheUse,
}

/// Whose identity the upstream session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// The caller's, set by the proxy (`set_ugi` sent before the call when it differs).
    Caller,
    /// The client's own: the proxy names nobody (authorization off).
    Client,
    /// The client's own, and this call is the client's `set_ugi`: sent again on a new upstream
    /// connection so the session keeps the client's name.
    ClientNamesItself,
}

/// What the connection does with a forwarded call's reply.
#[derive(Debug)]
pub enum ReplyCheck {
    /// Nothing: the reply streams through.
    Stream,
    /// A listing, filtered to what the user may see.
    Filter(ListFilter),
    /// A reply carrying a result (the object exists) is replaced by this denial.
    DenyIfFound(String),
    /// A read of a narrowed table: the reply shows only the narrowed table; a reply that is
    /// one object the caller may not read (or that cannot be narrowed) is replaced by the
    /// denial `message` (with the reason appended).
    Narrow {
        narrowed: std::sync::Arc<crate::decision::narrow::Narrowed>,
        message: String,
    },
}

/// Cached facts a call may change: dropped only after the metastore executed it.
#[derive(Debug, Default)]
pub struct Invalidation {
    pub grants: bool,
    pub objects: Vec<Object>,
    /// Tables the location index reads again (after any call that reached the metastore,
    /// whether or not its outcome is known).
    pub index: Vec<crate::decision::index::IndexChange>,
}

/// What a call was, for its audit line and its metrics.
#[derive(Debug)]
pub enum Record {
    /// Decided by the rules: always audited.
    Decided(Box<DecisionRecord>),
    /// Not a decision (a harmless call, or authorization off): audited with `audit.all_calls`.
    Passed,
    /// Answered by the proxy itself (`set_ugi`): audited with `audit.all_calls`.
    Local,
    /// Refused before any rule was asked: always audited, as a denial.
    Refused { why: Refused, detail: String },
    /// The request never arrived whole and readable: audited with `audit.all_calls`.
    Unread { kind: &'static str },
}

/// Why a call was refused before the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The connection did not authenticate as the listener requires.
    Unauthenticated,
    /// The metastore could read the request differently from hms-guard.
    UnreadableRequest,
    /// A `set_ugi` naming a user or group the names rule refuses.
    IdentityRefused,
    /// The caller's groups could not be read from their sources.
    GroupsUnavailable,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unauthenticated => "unauthenticated",
            Refused::UnreadableRequest => "unreadable_request",
            Refused::IdentityRefused => "identity_refused",
            Refused::GroupsUnavailable => "groups_unavailable",
        }
    }
}

/// What a decision came to, as audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny,
    /// Denied by the rules but forwarded anyway (`authz.mode = "shadow"`).
    ShadowDeny,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::ShadowDeny => "shadow_deny",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts of one decision, for audit and explain.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    pub outcome: Outcome,
    pub reason: Reason,
    pub operation: &'static str,
    pub db: Option<String>,
    pub table: Option<String>,
    pub location: Option<String>,
    pub required: String,
    pub matched: String,
    /// The storage check that decided (the first denial, else the last allowed), if any ran.
    pub storage: Option<crate::ops::audit::StorageAudit>,
    /// For an engine's question: who asked.
    pub client: Option<String>,
    /// For a narrowed read: the columns and partitions given.
    pub given: Option<String>,
}

/// How the connection carried out a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Forwarded; the reply (none for a oneway call) went back to the client. `withheld`: the
    /// reply was replaced by the denial (a table absent when decided existed).
    Forwarded {
        outcome: UpstreamOutcome,
        withheld: bool,
    },
    /// Forwarded, but the client went away before it had the whole reply.
    ClientGone { outcome: UpstreamOutcome },
    /// The metastore failed (unreachable, timed out, closed, answered out of turn): answered
    /// with an exception where nothing of the reply had reached the client.
    UpstreamFailed,
    /// Answered by the proxy with the denial or refusal (a oneway call: with nothing).
    Denied,
    /// Answered by the proxy with its own reply (`set_ugi`).
    Answered,
    /// The request did not arrive whole and readable (the connection closes).
    ClientFailed,
}

impl Exit {
    /// How the metastore side ended.
    pub fn upstream(self) -> UpstreamOutcome {
        match self {
            Exit::Forwarded { outcome, .. } | Exit::ClientGone { outcome } => outcome,
            Exit::UpstreamFailed => UpstreamOutcome::TransportError,
            Exit::Denied | Exit::Answered | Exit::ClientFailed => UpstreamOutcome::NotSent,
        }
    }

    /// The `decision` label of `hms_guard_requests_total`.
    pub fn label(self, record: &Record) -> &'static str {
        match (self, record) {
            (Exit::UpstreamFailed | Exit::ClientFailed, _) => "error",
            (
                _,
                Record::Refused {
                    why: Refused::UnreadableRequest,
                    ..
                },
            ) => "error",
            (Exit::Denied, _) => "deny",
            (Exit::Answered, _) => "local",
            (Exit::Forwarded { .. } | Exit::ClientGone { .. }, _) => "pass",
        }
    }
}

/// How the metastore side of a call ended: the metastore's own answer where it gave one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// A REPLY carrying the result (field 0), or the empty result of a void method.
    Ok,
    /// A REPLY carrying one of the method's declared exceptions.
    Exception(DeclaredException),
    /// A REPLY with nothing set for a method that returns a value (the client reports a
    /// missing result).
    NoResult,
    /// An EXCEPTION message: a `TApplicationException` (unknown method, internal error…).
    ApplicationException,
    /// No reply is expected (a oneway call that was sent).
    NoReply,
    /// The metastore went away, timed out, or answered something else before the whole
    /// reply arrived: whether it executed the call is unknown.
    TransportError,
    /// Nothing was sent: denied, or answered by the proxy.
    NotSent,
}

/// The declared exception a reply carried: the result field that was set and, where the
/// method's schema declares it for the configured metastore version(s), its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclaredException {
    pub field: i16,
    /// `MetaException`, `NoSuchObjectException`…; `None`: a field no recorded version
    /// declares for the method.
    pub name: Option<&'static str>,
}

impl UpstreamOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamOutcome::Ok => "ok",
            UpstreamOutcome::Exception(_) => "exception",
            UpstreamOutcome::NoResult => "no_result",
            UpstreamOutcome::ApplicationException => "application_exception",
            UpstreamOutcome::NoReply => "no_reply",
            UpstreamOutcome::TransportError => "transport_error",
            UpstreamOutcome::NotSent => "not_sent",
        }
    }

    /// The exception's type, for the audit line (`undeclared` for a field the method does
    /// not declare).
    pub fn exception(self) -> Option<&'static str> {
        match self {
            UpstreamOutcome::Exception(e) => Some(e.name.unwrap_or("undeclared")),
            _ => None,
        }
    }

    /// Whether the metastore answered (or, oneway, took) the call: it may have changed
    /// something, so cached facts are dropped afterwards.
    pub fn reached_metastore(self) -> bool {
        !matches!(
            self,
            UpstreamOutcome::TransportError | UpstreamOutcome::NotSent
        )
    }

    /// The outcome a reply's beginning tells, for `method` on a metastore of `versions`. A
    /// few comparisons on bytes already walked; the method's schema is looked up only when the
    /// reply is not a plain result. `None` (no answer seen): a oneway call's `NoReply`, else a
    /// transport error.
    pub fn of_answer(
        answer: Option<Answer>,
        method: &str,
        versions: u8,
        oneway: bool,
    ) -> UpstreamOutcome {
        let Some(answer) = answer else {
            return if oneway {
                UpstreamOutcome::NoReply
            } else {
                UpstreamOutcome::TransportError
            };
        };
        if answer.kind != MessageType::Reply {
            return UpstreamOutcome::ApplicationException;
        }
        let result = || crate::wire::schema::method(method).map(|m| m.result);
        match answer.first {
            Some(TopField::Id(SUCCESS)) => UpstreamOutcome::Ok,
            Some(TopField::Id(field)) => UpstreamOutcome::Exception(DeclaredException {
                field,
                name: result().and_then(|r| exception_name(r, field, versions)),
            }),
            // An empty result: a void method's success; a missing result otherwise.
            Some(TopField::Stop) => match result() {
                Some(r) if r.field(SUCCESS).is_some() => UpstreamOutcome::NoResult,
                _ => UpstreamOutcome::Ok,
            },
            None => UpstreamOutcome::TransportError,
        }
    }
}

/// The type of result field `field` as the configured versions declare it (the first
/// alternative when they differ).
fn exception_name(result: &StructDef, field: i16, versions: u8) -> Option<&'static str> {
    let def = result.field(field)?;
    let mut types = def.types_in(versions).map(|(t, _)| t).chain(def.ty.iter());
    types.find_map(|t| match t {
        T::Struct(s) => Some(s.name),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::schema::types::{ALL_VERSIONS, V2_3};

    fn reply(first: Option<TopField>) -> Option<Answer> {
        Some(Answer {
            kind: MessageType::Reply,
            first,
        })
    }

    #[test]
    fn a_replys_first_field_names_the_outcome() {
        let of = |a, m: &str| UpstreamOutcome::of_answer(a, m, V2_3, false);
        assert_eq!(
            of(reply(Some(TopField::Id(0))), "get_table"),
            UpstreamOutcome::Ok
        );
        // drop_table is void: an empty result is its success.
        assert_eq!(
            of(reply(Some(TopField::Stop)), "drop_table"),
            UpstreamOutcome::Ok
        );
        assert_eq!(
            of(reply(Some(TopField::Stop)), "get_table"),
            UpstreamOutcome::NoResult
        );
        let e = of(reply(Some(TopField::Id(2))), "get_table");
        assert_eq!(e.as_str(), "exception");
        assert_eq!(e.exception(), Some("NoSuchObjectException"));
        let e = of(reply(Some(TopField::Id(1))), "create_table");
        assert_eq!(e.exception(), Some("AlreadyExistsException"));
        assert_eq!(
            of(reply(Some(TopField::Id(9))), "get_table").exception(),
            Some("undeclared")
        );
        let app = Some(Answer {
            kind: MessageType::Exception,
            first: Some(TopField::Id(1)),
        });
        assert_eq!(of(app, "get_table"), UpstreamOutcome::ApplicationException);
        // A method the schema does not know: any exception field is undeclared.
        let e = UpstreamOutcome::of_answer(
            reply(Some(TopField::Id(1))),
            "no_such_method",
            ALL_VERSIONS,
            false,
        );
        assert_eq!(e.exception(), Some("undeclared"));
        assert_eq!(
            of(reply(None), "get_table"),
            UpstreamOutcome::TransportError
        );
        assert_eq!(of(None, "get_table"), UpstreamOutcome::TransportError);
        assert_eq!(
            UpstreamOutcome::of_answer(None, "get_table", V2_3, true),
            UpstreamOutcome::NoReply
        );
    }

    #[test]
    fn only_calls_that_reached_the_metastore_may_change_its_state() {
        assert!(UpstreamOutcome::Ok.reached_metastore());
        assert!(UpstreamOutcome::ApplicationException.reached_metastore());
        assert!(UpstreamOutcome::NoReply.reached_metastore());
        assert!(!UpstreamOutcome::TransportError.reached_metastore());
        assert!(!UpstreamOutcome::NotSent.reached_metastore());
    }

    #[test]
    fn each_exit_has_one_request_label() {
        let ok = Exit::Forwarded {
            outcome: UpstreamOutcome::Ok,
            withheld: false,
        };
        assert_eq!(ok.label(&Record::Passed), "pass");
        assert_eq!(Exit::Denied.label(&Record::Passed), "deny");
        assert_eq!(Exit::Answered.label(&Record::Local), "local");
        assert_eq!(Exit::UpstreamFailed.label(&Record::Passed), "error");
        let unreadable = Record::Refused {
            why: Refused::UnreadableRequest,
            detail: String::new(),
        };
        assert_eq!(Exit::Denied.label(&unreadable), "error");
        assert_eq!(
            Exit::UpstreamFailed.upstream(),
            UpstreamOutcome::TransportError
        );
        assert_eq!(Exit::Denied.upstream(), UpstreamOutcome::NotSent);
    }
}

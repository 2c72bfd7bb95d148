//! The policy stage's beginning and end, around one call.
//!
//! `Guard::begin` decides a call and says what the connection does with it (`Action`): send
//! these bytes upstream (the client's own, or with the caller set as owner or lock holder)
//! and treat the reply so, or answer with this denial. `Guard::reply` turns a reply that must
//! be checked (a listing to filter, a read of a table that was absent) into the bytes the
//! client gets. `Guard::finish` ends every call the same way, whatever happened in between:
//! the audit line, then cache invalidation — only after a call the metastore executed.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::filter::{empty_list_reply, parse_list_reply};
use super::{
    keep_listed, listed_object, visible_by_grants, Checked, DecisionRecord, Guard, ListFilter,
    Outcome, ReplyCheck, Rewrite, Verdict, MAX_LISTING_OWNER_LOOKUPS,
};
use crate::audit::{Audit, AuditEvent};
use crate::codec::reply::{application_exception, declared_exception, AppErrorKind};
use crate::codec::value::Value;
use crate::codec::{MessageHeader, MessageType, ScanError, TopField};
use crate::identity::Identity;
use crate::router::{ListShape, Method};
use crate::schema::{StructDef, T};
use crate::transport::Transport;
use crate::upstream::Answer;

/// One call as the policy stage sees it.
pub struct Call<'a> {
    pub identity: &'a Identity,
    pub entry: Option<&'static Method>,
    pub header: &'a MessageHeader,
    /// The arguments as the metastore reads them.
    pub args: &'a Value,
    /// The whole message as the client sent it (frame prefix included when framed).
    pub bytes: Bytes,
    pub transport: Transport,
}

/// What the connection does with a decided call.
#[derive(Debug)]
pub enum Action {
    /// Send `bytes` upstream; the reply streams back unless `check` says otherwise.
    Forward { bytes: Bytes, check: ReplyCheck },
    /// Answer with this denial (in the protocol); nothing goes upstream.
    Deny(String),
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
    /// reply is not a plain result.
    pub fn of_answer(answer: Answer, method: &str, versions: u8) -> UpstreamOutcome {
        if answer.kind != MessageType::Reply {
            return UpstreamOutcome::ApplicationException;
        }
        let result = || crate::schema::method(method).map(|m| m.result);
        match answer.first {
            Some(TopField::Id(0)) => UpstreamOutcome::Ok,
            Some(TopField::Id(field)) => UpstreamOutcome::Exception(DeclaredException {
                field,
                name: result().and_then(|r| exception_name(r, field, versions)),
            }),
            // An empty result: a void method's success; a missing result otherwise.
            Some(TopField::Stop) => match result() {
                Some(r) if r.field(0).is_some() => UpstreamOutcome::NoResult,
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

/// A decided call: what to do, and what `finish` needs afterwards.
pub struct Decided {
    pub action: Action,
    /// `None`: a call that was not decided (harmless, or authorization off).
    decision: Option<DecisionRecord>,
    invalidate_grants: bool,
    invalidate_objects: Vec<crate::authz::Object>,
    started: Instant,
}

impl Decided {
    /// The decision's record, if the call was decided.
    pub fn decision(&self) -> Option<&DecisionRecord> {
        self.decision.as_ref()
    }

    /// The metastore's reply was withheld and the caller got the denial (a table absent when
    /// the call was decided existed when the metastore read it): audited as the denial it was.
    pub fn withheld(&mut self) {
        if let Some(d) = self.decision.as_mut() {
            d.outcome = Outcome::Deny;
            d.reason = crate::authz::Reason::MissingPrivilege;
            d.matched = format!(
                "{}; the table existed when the metastore read the call: its reply was withheld",
                d.matched
            );
        }
    }
}

/// What the client gets for a checked reply.
#[derive(Debug)]
pub struct Replied {
    pub bytes: BytesMut,
    /// The metastore's reply was replaced by the denial (`Decided::withheld`).
    pub withheld: bool,
}

/// Who made a call, and which, for its audit line.
pub struct Caller<'a> {
    pub method: &'a str,
    pub connection_id: u64,
    pub peer: SocketAddr,
    pub identity: &'a Identity,
}

impl Guard {
    /// Decides one call (everything but `set_ugi`, which the identity stage answers).
    /// `audit_failing` is the audit stage's state: while it cannot write and
    /// `audit.on_failure = "deny"`, every decided call is denied.
    pub async fn begin(&self, call: Call<'_>, audit_failing: bool) -> Decided {
        let started = Instant::now();
        let Checked {
            verdict,
            rewrite,
            mut decision,
            invalidate_grants,
            invalidate_objects,
            ..
        } = self
            .check(call.identity, call.entry, call.header, call.args)
            .await;
        let method = &call.header.name;
        let deny = |decision: &mut Option<DecisionRecord>, matched: &str, why: String| {
            if let Some(d) = decision.as_mut() {
                d.outcome = Outcome::Deny;
                d.matched = matched.to_string();
            }
            Action::Deny(why)
        };
        let action = if audit_failing && decision.is_some() {
            deny(
                &mut decision,
                "the audit log cannot be written (audit.on_failure = \"deny\")",
                format!(
                    "hms-guard: permission denied: user {} may not call {method}: the audit log cannot be written, so decided calls are refused",
                    call.identity
                ),
            )
        } else {
            match verdict {
                Verdict::Deny(message) => Action::Deny(message),
                Verdict::Forward => match rewrite {
                    None => Action::Forward {
                        bytes: call.bytes,
                        check: ReplyCheck::None,
                    },
                    Some(rw) => match rewritten(call.transport, &call.bytes, &rw, self.max_depth) {
                        Ok(bytes) => Action::Forward {
                            bytes,
                            check: ReplyCheck::None,
                        },
                        // Fail closed: the call does not go upstream with another owner.
                        Err(e) => {
                            let why = format!(
                                "hms-guard: permission denied: user {} may not call {method}: the call could not be set to act for the caller ({e})",
                                call.identity
                            );
                            deny(&mut decision, &why.clone(), why)
                        }
                    },
                },
                Verdict::ForwardIfAbsent(message) => Action::Forward {
                    bytes: call.bytes,
                    check: ReplyCheck::DenyIfFound(message),
                },
                Verdict::Filter(f) => Action::Forward {
                    bytes: call.bytes,
                    check: ReplyCheck::Filter(f),
                },
            }
        };
        Decided {
            action,
            decision,
            invalidate_grants,
            invalidate_objects,
            started,
        }
    }

    /// What the client gets for a whole `reply` to a call forwarded with `check`: a listing
    /// filtered to what the caller may see; a read of a table that was absent when decided,
    /// withheld (replaced by the denial) if it found the table after all. `Err`: the reply
    /// could not be read.
    pub async fn reply(
        &self,
        check: &ReplyCheck,
        transport: Transport,
        entry: Option<&'static Method>,
        header: &MessageHeader,
        reply: BytesMut,
    ) -> Result<Replied, ScanError> {
        let passed = |bytes| Replied {
            bytes,
            withheld: false,
        };
        match check {
            ReplyCheck::None => Ok(passed(reply)),
            ReplyCheck::DenyIfFound(message) => {
                let found = crate::codec::reply::carries_result(
                    transport.protocol,
                    unframed(transport, &reply),
                    self.max_depth,
                );
                if !found {
                    return Ok(passed(reply));
                }
                tracing::warn!(method = %header.name, "a table absent when decided exists: its reply is withheld");
                Ok(Replied {
                    bytes: denial(transport, entry, header, message),
                    withheld: true,
                })
            }
            ReplyCheck::Filter(f) => Ok(passed(self.filter(f, transport, header, reply).await?)),
        }
    }

    /// A listing reply filtered to what the caller may see (walked once; head and tail copied
    /// as bytes).
    async fn filter(
        &self,
        f: &ListFilter,
        transport: Transport,
        header: &MessageHeader,
        reply: BytesMut,
    ) -> Result<BytesMut, ScanError> {
        let listed = parse_list_reply(
            transport.protocol,
            unframed(transport, &reply),
            f.shape.list_path(),
            self.max_depth,
        )?;
        let Some(listed) = listed else {
            // Not a list (an exception: "no such database"…). For a database the caller may
            // not see, the answer an existing one with nothing visible in it gives.
            if self.hides_database(f).await {
                tracing::debug!(method = %header.name, db = %f.db, "a listing of a database hidden from the caller failed: answered as empty");
                let empty = empty_list_reply(
                    transport.protocol,
                    &header.name,
                    header.seqid,
                    f.shape.list_path(),
                    f.shape.element(),
                );
                return Ok(frame(transport, empty));
            }
            return Ok(reply);
        };
        // Names without a grant may be the caller's own tables or databases: their owners are
        // looked up (cached, bounded) before the reply is filtered.
        let mut unseen = Vec::new();
        if !matches!(f.shape, ListShape::Tables | ListShape::TablesInResult) {
            unseen = listed
                .values()
                .filter_map(|v| listed_object(f, v))
                .filter(|o| !visible_by_grants(f, &self.policy, o))
                .take(MAX_LISTING_OWNER_LOOKUPS)
                .collect();
        }
        let owned = self.owned_among(f, unseen).await;
        let filtered = listed.keep(|v| keep_listed(f, &self.policy, v, &owned));
        tracing::debug!(
            kept = filtered.kept,
            dropped = filtered.dropped,
            "listing filtered"
        );
        Ok(frame(transport, filtered.reply))
    }

    /// Ends a call: writes its audit line (decided calls, and every call with
    /// `audit.all_calls`), then — only if the metastore executed it — drops the cached facts
    /// it may have changed. A denied or failed call never evicts anything.
    pub async fn finish(
        &self,
        decided: Decided,
        outcome: UpstreamOutcome,
        caller: &Caller<'_>,
        audit: &Audit,
    ) {
        if decided.decision.is_some() || audit.all_calls() {
            let ev = audit_event(&decided, outcome, caller);
            if let Err(e) = audit.record(ev).await {
                tracing::warn!(error = %e, "audit event not queued");
            }
        }
        if outcome.reached_metastore() {
            if decided.invalidate_grants {
                self.facts.invalidate_grants();
            }
            for obj in &decided.invalidate_objects {
                self.facts.invalidate_object(obj);
            }
        }
    }
}

/// The audit line of a call.
fn audit_event(decided: &Decided, outcome: UpstreamOutcome, caller: &Caller<'_>) -> AuditEvent {
    let mut ev = AuditEvent::now().identity(caller.identity);
    ev.connection_id = caller.connection_id;
    ev.client_addr = caller.peer.to_string();
    ev.method = caller.method.to_string();
    ev.upstream_outcome = Some(outcome.as_str().into());
    ev.upstream_exception = outcome.exception().map(str::to_string);
    ev.latency_us = decided.started.elapsed().as_micros() as u64;
    match &decided.decision {
        Some(d) => {
            ev.operation = d.operation.into();
            ev.database = d.db.clone();
            ev.table = d.table.clone();
            ev.location = d.location.clone();
            ev.decision = d.outcome.as_str().into();
            ev.reason = d.reason.as_str().into();
            ev.required_privilege = Some(d.required.clone());
            ev.matched = Some(d.matched.clone());
            ev.storage = d.storage.clone();
        }
        None => {
            ev.operation = "pass_through".into();
            ev.decision = "pass".into();
            ev.reason = "harmless".into();
        }
    }
    ev
}

/// A denial in the protocol: the method's declared `MetaException` at its field id, else a
/// `TApplicationException`.
pub fn denial(
    transport: Transport,
    entry: Option<&'static Method>,
    header: &MessageHeader,
    message: &str,
) -> BytesMut {
    let (method, seqid) = (header.name.as_str(), header.seqid);
    match entry.and_then(|m| m.meta_exception) {
        Some(field) => declared_exception(
            transport.protocol,
            transport.framed,
            method,
            seqid,
            field,
            message,
        ),
        None => application_exception(
            transport.protocol,
            transport.framed,
            method,
            seqid,
            AppErrorKind::Unknown,
            message,
        ),
    }
}

/// The request with the rewrite's fields set (every other byte as the client wrote it),
/// framed as it came.
fn rewritten(
    transport: Transport,
    bytes: &[u8],
    rw: &Rewrite,
    depth: usize,
) -> Result<Bytes, crate::codec::splice::SpliceError> {
    use crate::codec::splice::set_field;
    let mut out = BytesMut::from(unframed(transport, bytes));
    for f in &rw.fields {
        if let Some(b) = set_field(
            transport.protocol,
            &out,
            &f.path,
            &f.value,
            f.if_absent,
            depth,
        )? {
            out = b;
        }
    }
    Ok(frame(transport, out).freeze())
}

/// A whole message, with the 4-byte length prefix when the transport is framed.
pub fn frame(transport: Transport, message: BytesMut) -> BytesMut {
    if !transport.framed {
        return message;
    }
    let mut framed = BytesMut::with_capacity(message.len() + 4);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}

/// The message without its frame prefix.
pub fn unframed(transport: Transport, bytes: &[u8]) -> &[u8] {
    if transport.framed {
        &bytes[4..]
    } else {
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::types::{ALL_VERSIONS, V2_3};

    fn reply(first: Option<TopField>) -> Answer {
        Answer {
            kind: MessageType::Reply,
            first,
        }
    }

    #[test]
    fn a_replys_first_field_names_the_outcome() {
        let of = |a, m: &str| UpstreamOutcome::of_answer(a, m, V2_3);
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
        let app = Answer {
            kind: MessageType::Exception,
            first: Some(TopField::Id(1)),
        };
        assert_eq!(of(app, "get_table"), UpstreamOutcome::ApplicationException);
        // A method the schema does not know: any exception field is undeclared.
        let e = UpstreamOutcome::of_answer(
            reply(Some(TopField::Id(1))),
            "no_such_method",
            ALL_VERSIONS,
        );
        assert_eq!(e.exception(), Some("undeclared"));
        assert_eq!(
            of(reply(None), "get_table"),
            UpstreamOutcome::TransportError
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
}

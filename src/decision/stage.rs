//! The decision stage's beginning and end, around one call.
//!
//! `Guard::begin` turns a whole request into its `Decision`: refused (the connection did not
//! authenticate; the metastore could read the request differently), answered (`set_ugi`), or
//! decided by the rules (`Guard::decide`). `Guard::finish` ends every call the same way,
//! whatever happened in between: the request metric and its duration, the audit line (where
//! the call is audited), then cache invalidation — only after a call the metastore executed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::outcome::{Exit, Invalidation, Record, Refused};
use super::{Action, Call, Decision, Guard};
use crate::config::AuthzMode;
use crate::listener::identity::Identity;
use crate::ops::audit::{Audit, AuditEvent};
use crate::ops::metrics::{KindLabels, MethodLabels, RequestLabels};
use crate::settings::Settings;
use crate::wire::codec::reply::AppErrorKind;
use crate::wire::codec::value::Value;
use crate::wire::codec::MessageHeader;
use crate::wire::framing::unframed;
use crate::wire::router::{method_label, Method, Rule};
use crate::wire::schema::{self, Reject};
use crate::wire::transport::Transport;

/// A whole request as the connection read it.
pub struct Request<'a> {
    pub identity: &'a Identity,
    /// Set: the connection did not authenticate as the listener requires; the call is refused
    /// with this.
    pub refusal: Option<&'a str>,
    /// Set: the caller's groups could not be read (`[identity.groups]`, `on_error = "deny"`);
    /// every call but `set_ugi` is refused with this.
    pub groups_refusal: Option<&'a str>,
    pub entry: Option<&'static Method>,
    pub header: &'a MessageHeader,
    /// The whole message as the client sent it (frame prefix included when framed).
    pub bytes: Bytes,
    pub transport: Transport,
}

/// Who made a call, and which, for its audit line.
pub struct Caller<'a> {
    pub method: &'a str,
    pub connection_id: u64,
    pub peer: SocketAddr,
    pub identity: &'a Identity,
}

/// A call at its end: what was decided and how the connection carried it out.
pub struct CallEnd<'a> {
    pub caller: Caller<'a>,
    pub entry: Option<&'static Method>,
    pub record: Record,
    pub invalidate: Invalidation,
    pub exit: Exit,
    /// When the whole request had arrived.
    pub started: Instant,
    /// The metastore's time, for a call it answered.
    pub upstream_time: Option<Duration>,
}

impl Guard {
    /// The decision of one whole request. `audit_failing`: see `Guard::decide`.
    pub async fn begin(
        &self,
        request: Request<'_>,
        settings: &Settings,
        audit_failing: bool,
    ) -> Decision {
        if let Some(message) = request.refusal {
            // Every call gets the same answer (a client that ignores a failed set_ugi, as
            // Hive's does, then shows it on its next call); nothing reaches the metastore.
            return refusal(
                Refused::Unauthenticated,
                message,
                AppErrorKind::Unknown,
                false,
            );
        }
        // With authorization off the proxy is a pure pass-through: nothing is read.
        let args = if self.mode == AuthzMode::Off {
            Value::Struct(Vec::new())
        } else {
            match self.read_args(&request, settings) {
                Ok(args) => args,
                Err(rejected) => return self.unreadable(&request, rejected),
            }
        };
        if self.mode != AuthzMode::Off && request.entry.is_some_and(|m| m.rule == Rule::SetUgi) {
            return set_ugi(&request, settings, &args);
        }
        if let Some(message) = request.groups_refusal {
            tracing::warn!(method = %request.header.name, user = %request.identity.user, "{message}");
            return refusal(
                Refused::GroupsUnavailable,
                message,
                AppErrorKind::Unknown,
                false,
            );
        }
        if self.mode == AuthzMode::Off && request.entry.is_some_and(|m| m.rule == Rule::Question) {
            // Never forwarded (no metastore has the method): with authorization off, every
            // question is allowed, as every call is.
            return Decision {
                action: Action::Reply(crate::wire::answer::answered(
                    request.transport,
                    request.header,
                    "allowed: authorization is off (authz.mode = \"off\")",
                )),
                record: Record::Passed,
                invalidate: Invalidation::default(),
            };
        }
        let call = Call {
            identity: request.identity,
            entry: request.entry,
            header: request.header,
            args: &args,
            bytes: request.bytes,
            transport: request.transport,
        };
        let mut decision = self.decide(call, audit_failing).await;
        // The shared metadata cache follows calls whose arguments were read (not with
        // authorization off: a pure pass-through reads nothing).
        if let (Action::Forward(f), Some(cache), false) = (
            &mut decision.action,
            &settings.cache,
            self.mode == AuthzMode::Off,
        ) {
            let user = cache.per_user.then_some(request.identity.user.as_str());
            f.cache = super::cacheable::cache_use(request.entry, &args, || {
                crate::upstream::cache::key(request.transport, request.header, &f.bytes, user)
            });
        }
        decision
    }

    /// The arguments, read once, as the metastore will read them.
    fn read_args(&self, request: &Request<'_>, settings: &Settings) -> Result<Value, Reject> {
        let build = request.entry.is_none_or(|m| m.rule != Rule::Harmless);
        let msg = unframed(request.transport, &request.bytes);
        let protocol = request.transport.protocol;
        schema::read_request(protocol, msg, settings.limits.read, build).map(|call| call.args)
    }

    /// A request the schema-exact reader refused: answered with PROTOCOL_ERROR, counted, and
    /// the connection closed; nothing of it is forwarded.
    fn unreadable(&self, request: &Request<'_>, rejected: Reject) -> Decision {
        let kind = rejected.kind.as_str();
        self.metrics
            .rejected_requests
            .get_or_create(&KindLabels { kind })
            .inc();
        let method = &request.header.name;
        tracing::warn!(method = %method, user = %request.identity.user, kind, "refused a request the metastore could read differently: {rejected}");
        let message = format!("hms-guard: refused {method}: {rejected}; the connection is closed");
        refusal(
            Refused::UnreadableRequest,
            &message,
            AppErrorKind::ProtocolError,
            true,
        )
    }

    /// Ends a call: counts it (`requests_total` by how it ended, and its duration), writes its
    /// audit line (decided and refused calls, and every call with `audit.all_calls`), then —
    /// only if the metastore executed it — drops the cached facts it may have changed. A
    /// denied or failed call never evicts anything.
    pub async fn finish(&self, audit: &Audit, end: CallEnd<'_>) {
        let method = method_label(end.entry);
        let m = &self.metrics;
        let decision = end.exit.label(&end.record);
        m.requests
            .get_or_create(&RequestLabels { method, decision })
            .inc();
        let labels = MethodLabels { method };
        m.request_duration
            .get_or_create(&labels)
            .observe(end.started.elapsed().as_secs_f64());
        if let Some(t) = end.upstream_time {
            m.upstream_duration
                .get_or_create(&labels)
                .observe(t.as_secs_f64());
        }
        let always = matches!(end.record, Record::Decided(_) | Record::Refused { .. });
        if always || audit.all_calls() {
            if let Err(e) = audit.record(audit_event(&end)).await {
                tracing::warn!(error = %e, "audit event not queued");
            }
        }
        if end.exit.upstream().reached_metastore() {
            if end.invalidate.grants {
                self.facts.invalidate_grants();
            }
            for obj in &end.invalidate.objects {
                self.facts.invalidate_object(obj);
            }
        }
        // Then (the caches first: the client may already be sending its next call on another
        // connection) the index learns what the metastore did, even when the reply was lost:
        // the table is read again, and what the metastore has is what counts.
        if end.exit.upstream() != super::UpstreamOutcome::NotSent {
            for change in &end.invalidate.index {
                let _ = self.index.apply(change).await;
            }
        }
    }
}

/// A call refused before any rule.
fn refusal(why: Refused, message: &str, kind: AppErrorKind, close: bool) -> Decision {
    Decision {
        action: Action::Refuse {
            kind,
            message: message.to_string(),
            close,
        },
        record: Record::Refused {
            why,
            detail: message.to_string(),
        },
        invalidate: Invalidation::default(),
    }
}

/// `set_ugi`, answered by the identity stage: the connection's new identity and the reply the
/// metastore would give; a name the names rule refuses is denied.
fn set_ugi(request: &Request<'_>, settings: &Settings, args: &Value) -> Decision {
    let answered = crate::listener::identity::set_ugi(
        &settings.identity,
        request.identity,
        request.transport,
        request.header,
        args,
    );
    match answered {
        Ok((identity, reply)) => Decision {
            action: Action::Answer { reply, identity },
            record: Record::Local,
            invalidate: Invalidation::default(),
        },
        Err(refused) => {
            let message = format!("hms-guard: set_ugi refused: {refused}");
            Decision {
                action: Action::Deny(message.clone()),
                record: Record::Refused {
                    why: Refused::IdentityRefused,
                    detail: message,
                },
                invalidate: Invalidation::default(),
            }
        }
    }
}

/// The audit line of a call.
fn audit_event(end: &CallEnd<'_>) -> AuditEvent {
    let caller = &end.caller;
    let mut ev = AuditEvent::now().identity(caller.identity);
    ev.connection_id = caller.connection_id;
    ev.client_addr = caller.peer.to_string();
    ev.method = caller.method.to_string();
    let upstream = end.exit.upstream();
    ev.upstream_outcome = Some(upstream.as_str().into());
    ev.upstream_exception = upstream.exception().map(str::to_string);
    ev.latency_us = end.started.elapsed().as_micros() as u64;
    match &end.record {
        Record::Decided(d) => {
            ev.operation = d.operation.into();
            ev.database = d.db.clone();
            ev.table = d.table.clone();
            ev.location = d.location.clone();
            ev.decision = d.outcome.as_str().into();
            ev.reason = d.reason.as_str().into();
            ev.required_privilege = Some(d.required.clone());
            ev.matched = Some(d.matched.clone());
            ev.storage = d.storage.clone();
            ev.client = d.client.clone();
            ev.given = d.given.clone();
            if let Exit::Forwarded { withheld: true, .. } = end.exit {
                // A table absent when decided existed when the metastore read the call: its
                // reply was replaced by the denial, audited as the denial it was.
                ev.decision = super::Outcome::Deny.as_str().into();
                ev.reason = crate::decision::authz::Reason::MissingPrivilege
                    .as_str()
                    .into();
                ev.matched = Some(format!(
                    "{}; the table existed when the metastore read the call: its reply was withheld",
                    d.matched
                ));
            }
        }
        Record::Passed => {
            ev.operation = "pass_through".into();
            ev.decision = "pass".into();
            ev.reason = "harmless".into();
        }
        Record::Local => {
            ev.operation = "set_ugi".into();
            ev.decision = "local".into();
            ev.reason = "answered_by_proxy".into();
        }
        Record::Refused { why, detail } => {
            ev.operation = "refused".into();
            ev.decision = super::Outcome::Deny.as_str().into();
            ev.reason = why.as_str().into();
            ev.matched = Some(detail.clone());
        }
        Record::Unread { kind } => {
            ev.operation = "unread".into();
            ev.decision = "error".into();
            ev.reason = (*kind).into();
        }
    }
    ev
}

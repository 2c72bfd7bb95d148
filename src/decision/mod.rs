//! The decision stage: every whole request becomes one `Decision` (`outcome.rs`) — what
//! the connection does with it and what its record says.
//!
//! `Guard::begin` (stage.rs) answers what needs no rule first: a connection that did not
//! authenticate, a request the metastore could read differently, `set_ugi`. `Guard::decide`
//! then classifies the call (`classify`), gathers the caller's grants and the facts the
//! operation names (`gather`), authorizes it (`authz::authorize`, pure), applies the narrowing
//! rules (`narrowing`: a caller who may read part of a table gets one narrowed table,
//! `narrow`), applies the existence
//! rules (`existence`), and concludes in the configured mode: forward (with fields set for the
//! caller, `rewrite`), forward and check the reply (`reply`), or deny. `Guard::finish`
//! (stage.rs) ends every call the same way.

pub mod authz;
pub mod cache;
pub mod cacheable;
pub mod classify;
mod existence;
pub mod facts;
pub mod filter;
mod gather;
pub mod index;
pub mod narrow;
mod narrowing;
pub mod outcome;
pub mod question;
pub mod reply;
pub mod rewrite;
pub mod stage;
pub mod storage;
pub mod views;

use std::sync::Arc;

use bytes::Bytes;

use crate::config::AuthzMode;
use crate::decision::authz::{
    authorize, AlterKind, Facts, Grants, Object, Operation, Policy, Reason, Verdict,
};
use crate::decision::facts::{ClientConfig, FactsSource, FactsStore, MetaClient, MetaSource};
use crate::decision::storage::StorageGuard;
use crate::listener::identity::Identity;
use crate::ops::metrics::{DecisionLabels, Metrics, QuestionLabels};
use crate::settings::AuthzSettings;
use crate::upstream::Upstreams;
use crate::wire::codec::value::Value;
use crate::wire::codec::MessageHeader;
use crate::wire::router::{Method, Rule};
use crate::wire::transport::Transport;

use classify::{classify, Classified, ClassifyError};
pub use outcome::{
    Action, Decision, DecisionRecord, DeclaredException, Exit, Forward, Invalidation, Outcome,
    Record, Refused, ReplyCheck, Session, UpstreamOutcome,
};
pub use reply::ListFilter;
pub use stage::{CallEnd, Caller, Request};

/// One call as the rules see it.
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

/// What the rules concluded about a call, before the mode and the wire make it a `Decision`.
struct Ruling {
    verdict: Verdict,
    operation: &'static str,
    /// The operation that decided (the first denied, else the last), for the record.
    classified: Option<Classified>,
    storage: Option<crate::ops::audit::StorageAudit>,
    /// Allowed only because the table does not exist: the reply is withheld if it does.
    absent: bool,
    filter: Option<ListFilter>,
    /// The caller holds the admin role (or is an admin user): its choices of owner and user
    /// stand.
    admin: bool,
    /// Objects whose cached facts the call may change.
    objects: Vec<Object>,
    /// What the location index reads again once the metastore executed the call.
    index: Vec<index::IndexChange>,
    /// A read of a table the caller may read only part of: the narrowed table it gets.
    narrowed: Option<Arc<narrow::Narrowed>>,
    /// Fields set in the request before it goes upstream (a narrowed caller's statistics,
    /// recorded on the real table), and the note for the record.
    rewrite: Option<(rewrite::Rewrite, String)>,
    /// The proxy's own answer to an allowed call (a narrowed partition count), not forwarded.
    answer: Option<bytes::BytesMut>,
}

impl Ruling {
    /// A call the proxy could not classify: denied, saying why.
    fn unclassified(e: ClassifyError) -> Ruling {
        let reason = match e {
            ClassifyError::Facts(_) => Reason::FactsUnavailable,
            _ => Reason::MissingPrivilege,
        };
        Ruling {
            verdict: Verdict {
                allow: false,
                reason,
                required: "a readable call".into(),
                matched: format!("the proxy could not decide: {e}"),
            },
            operation: "unclassified",
            classified: None,
            storage: None,
            absent: false,
            filter: None,
            admin: false,
            objects: Vec::new(),
            index: Vec::new(),
            narrowed: None,
            rewrite: None,
            answer: None,
        }
    }
}

/// The policy stage, shared by every connection.
pub struct Guard {
    pub mode: AuthzMode,
    pub policy: Policy,
    pub facts: FactsStore,
    pub filter_listings: bool,
    pub max_depth: usize,
    pub metrics: Arc<Metrics>,
    /// Dual-IAM storage checks of location-bearing DDL.
    pub storage: StorageGuard,
    /// External tables' and partitions' locations need only read access.
    pub read_only_external: bool,
    /// Every table's and outside partition's location: a location another object claims
    /// needs its privileges (`index`, docs/STORAGE.md "Locations are exclusive").
    pub index: Arc<index::LocationIndex>,
}

/// What the location index reads again after the metastore executed an operation.
fn index_changes(c: &Classified) -> Vec<index::IndexChange> {
    use index::IndexChange;
    let table = |o: &Object, partitions: bool| match o {
        Object::Table(db, t) => Some(IndexChange::Table {
            db: db.clone(),
            table: t.clone(),
            partitions,
        }),
        _ => None,
    };
    match &c.op {
        Operation::CreateTable { table: t } => table(t, false).into_iter().collect(),
        Operation::AlterTable { table: t, changes } => {
            let renamed_into = changes.iter().find_map(|k| match k {
                AlterKind::Rename { new_db } => Some(new_db.clone()),
                _ => None,
            });
            match renamed_into {
                // The old name is gone; the new one is among its database's tables.
                Some(db) => table(t, true)
                    .into_iter()
                    .chain([IndexChange::Database { db }])
                    .collect(),
                None => table(t, false).into_iter().collect(),
            }
        }
        Operation::DropTable { table: t } => table(t, true).into_iter().collect(),
        Operation::OwnerOfAll(ts) => ts.iter().filter_map(|t| table(t, true)).collect(),
        Operation::AddPartitions {
            table: Object::Table(db, t),
        }
        | Operation::AlterPartitions {
            table: Object::Table(db, t),
            ..
        } if !c.storage.is_empty() => vec![IndexChange::Partitions {
            db: db.clone(),
            table: t.clone(),
            locations: c.storage.iter().map(|n| n.location.clone()).collect(),
        }],
        Operation::DropDatabase {
            db: Object::Database(db),
        } => vec![IndexChange::Database { db: db.clone() }],
        _ => Vec::new(),
    }
}

/// Objects whose cached facts (owner, location, existence) a successful call may change.
/// Reads change nothing: evicting after a read would send every warm decision upstream.
fn changed_objects(op: &Operation) -> Vec<Object> {
    match op {
        // A rename creates a table the call does not name; a database drop cascades.
        Operation::AlterTable { changes, .. }
            if changes
                .iter()
                .any(|k| matches!(k, crate::decision::authz::AlterKind::Rename { .. })) =>
        {
            vec![Object::Global]
        }
        Operation::DropDatabase { .. } => vec![Object::Global],
        Operation::CreateTable { table }
        | Operation::DropTable { table }
        | Operation::AlterTable { table, .. } => vec![table.clone()],
        Operation::CreateDatabase { db } | Operation::AlterDatabase { db, .. } => {
            vec![db.clone()]
        }
        _ => Vec::new(),
    }
}

fn needs_grants(op: &Operation) -> bool {
    !matches!(op, Operation::Harmless | Operation::Unknown(_))
}

impl Guard {
    /// The policy stage of the authorization settings: its own pooled metastore client for facts.
    /// `max_depth`: how deep replies are read (`limits.max_depth`); `read_only_external`:
    /// `storage.read_only_external`.
    pub fn new(
        a: &AuthzSettings,
        max_depth: usize,
        read_only_external: bool,
        upstreams: Upstreams,
        metrics: Arc<Metrics>,
        storage: StorageGuard,
    ) -> Guard {
        let config = |max_idle| ClientConfig {
            service_user: a.service_user.clone(),
            timeout: a.facts_timeout,
            max_reply_bytes: a.facts_max_reply_bytes,
            max_idle,
        };
        let client = MetaClient::new(upstreams.clone(), config(8));
        let source = Box::new(MetaSource::new(client, metrics.clone()));
        // The index reads the catalog on its own connections (one build at a time).
        let catalog =
            index::MetaCatalog::new(MetaClient::new(upstreams, config(2)), metrics.clone());
        Guard::with_source(
            a,
            max_depth,
            read_only_external,
            source,
            metrics,
            storage,
            Some(Arc::new(catalog)),
        )
    }

    /// The policy stage with its facts from `source` (tests script it) and its location index
    /// read from `catalog` (`None`: an index that starts ready and empty and learns the tables
    /// the calls create). One index per guard: only it reports the index's state.
    pub fn with_source(
        a: &AuthzSettings,
        max_depth: usize,
        read_only_external: bool,
        source: Box<dyn FactsSource>,
        metrics: Arc<Metrics>,
        storage: StorageGuard,
        catalog: Option<Arc<dyn index::Catalog>>,
    ) -> Guard {
        // With authorization off the proxy is a pure pass-through: nothing is read.
        let mut settings = a.index.clone();
        settings.enabled &= a.mode != AuthzMode::Off;
        let index = match catalog {
            Some(c) => index::LocationIndex::start(settings, c, metrics.clone()),
            None => index::LocationIndex::without_catalog(settings, metrics.clone()),
        };
        Guard {
            mode: a.mode,
            policy: Policy {
                admin_role: a.admin_role.clone(),
                admin_users: a.admin_users.clone(),
                allow_tokens: a.allow_tokens,
                allow_unknown_methods: a.allow_unknown_methods,
            },
            facts: FactsStore::new(source, a.cache_ttl, a.max_principals, metrics.clone()),
            filter_listings: a.filter_listings,
            max_depth,
            index,
            metrics,
            storage,
            read_only_external,
        }
    }

    /// Decides one call on its arguments as the metastore reads them (everything but what
    /// `begin` answers first: refusals, unreadable requests, `set_ugi`). `audit_failing`: the
    /// audit stage cannot write and `audit.on_failure = "deny"`, so every decided call is
    /// denied.
    pub async fn decide(&self, call: Call<'_>, audit_failing: bool) -> Decision {
        let rule = call.entry.map(|m| m.rule);
        let invalidate = Invalidation {
            grants: call.entry.is_some_and(|m| m.changes_grants),
            ..Invalidation::default()
        };
        if self.mode == AuthzMode::Off || rule == Some(Rule::Harmless) {
            return Decision {
                action: Action::Forward(Forward {
                    session: self.session_of(&call.header.name),
                    bytes: call.bytes,
                    reply: ReplyCheck::Stream,
                    cache: Default::default(),
                }),
                record: Record::Passed,
                invalidate,
            };
        }
        let ruling = self.rule_on(&call).await;
        self.conclude(call, ruling, invalidate, audit_failing)
    }

    /// The upstream session a forwarded call runs in: the caller's, named by the proxy; with
    /// authorization off, the client's own (its `set_ugi` kept to be sent again).
    fn session_of(&self, method: &str) -> Session {
        match self.mode {
            AuthzMode::Off if method == "set_ugi" => Session::ClientNamesItself,
            AuthzMode::Off => Session::Client,
            _ => Session::Caller,
        }
    }

    /// The largest request a connection without an identity may send: bounded while
    /// authorization is on (`limits.max_anonymous_request_bytes`), not with it off.
    pub fn anonymous_request_limit(&self, configured: u64) -> Option<u64> {
        (self.mode != AuthzMode::Off).then_some(configured)
    }

    /// What the rules say of a call: classified, its facts gathered, authorized; then the
    /// existence rules (what a denial may reveal) applied.
    async fn rule_on(&self, call: &Call<'_>) -> Ruling {
        let classified = match call.entry.map(|m| m.rule) {
            None => Ok(vec![Classified::of(Operation::Unknown(
                call.header.name.clone(),
            ))]),
            Some(rule) => classify(&rule, call.args, &self.facts).await,
        };
        match classified {
            Ok(ops) => self.decide_all(call, ops).await,
            Err(e) => Ruling::unclassified(e),
        }
    }

    /// Decides every operation of a call (a batch may touch several tables): all must pass.
    async fn decide_all(&self, call: &Call<'_>, ops: Vec<Classified>) -> Ruling {
        let identity = call.identity;
        let grants = if ops.iter().any(|c| needs_grants(&c.op)) && !identity.is_anonymous() {
            match self.facts.grants(identity).await {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!(error = %e, user = %identity.user, "grant facts unavailable");
                    None
                }
            }
        } else {
            None
        };
        let admin = grants
            .as_deref()
            .is_some_and(|g| self.policy.is_admin(identity, g));
        let objects = ops.iter().flat_map(|c| changed_objects(&c.op)).collect();
        let index = ops.iter().flat_map(index_changes).collect();
        let mut last = None;
        for c in ops {
            let (d, storage) = self.decide_one(identity, &c, grants.as_deref()).await;
            let allow = d.allow;
            last = Some((d, storage, c));
            if !allow {
                break;
            }
        }
        let (d, storage, c) = last.expect("classify yields at least one operation");
        let mut ruling = Ruling {
            verdict: d,
            operation: c.op.class(),
            storage,
            absent: false,
            filter: None,
            admin,
            objects,
            index,
            classified: None,
            narrowed: None,
            rewrite: None,
            answer: None,
        };
        if let (Some(g), false) = (&grants, admin) {
            self.narrow(call, g, &c.op, &mut ruling).await;
        }
        if let Some(g) = &grants {
            self.existence(identity, g, &c.op, &mut ruling).await;
            ruling.filter = self.listing_filter(call, &c.op, g, &ruling);
        }
        ruling.classified = Some(c);
        ruling
    }

    /// The existence rules, on a denied operation. An alter is judged on its changes against
    /// the current table; refused to a caller who holds nothing on the table (or its database),
    /// it is judged as for a table that does not exist, so the refusal reveals nothing of the
    /// table or that it exists. A denied read of one table that does not exist, by a caller who
    /// may act in its database, is answered by the metastore ("not found"), so that creating a
    /// table one may create starts as engines expect; strangers are denied, and learn nothing
    /// about which names exist.
    async fn existence(
        &self,
        identity: &Identity,
        grants: &Arc<Grants>,
        op: &Operation,
        ruling: &mut Ruling,
    ) {
        if ruling.verdict.allow {
            return;
        }
        match op {
            Operation::AlterTable { table, changes }
                if changes.as_slice() != [AlterKind::Other]
                    && self
                        .hides_table(identity, grants, ruling.admin, table)
                        .await =>
            {
                let blind = Operation::AlterTable {
                    table: table.clone(),
                    changes: vec![AlterKind::Other],
                };
                let facts = Facts {
                    grants: Some(grants),
                    ..Facts::default()
                };
                ruling.verdict = authorize(identity, &blind, &facts, &self.policy);
                ruling.storage = None;
            }
            Operation::ReadTables(tables) => {
                let [table] = tables.as_slice() else {
                    return;
                };
                if self
                    .may_see_absent(identity, grants, ruling.admin, table)
                    .await
                {
                    ruling.absent = true;
                    ruling.verdict = Verdict::allow(
                        Reason::Absent,
                        ruling.verdict.required.clone(),
                        format!("{table} does not exist and the user may act in its database: the metastore answers"),
                    );
                }
            }
            _ => {}
        }
    }

    /// How an allowed listing's reply is filtered (admins and `authz.filter_listings = false`:
    /// not at all), by where its method keeps the list.
    fn listing_filter(
        &self,
        call: &Call<'_>,
        op: &Operation,
        grants: &Arc<Grants>,
        ruling: &Ruling,
    ) -> Option<ListFilter> {
        let Some(Rule::Listing { shape, .. }) = call.entry.map(|m| m.rule) else {
            return None;
        };
        let db = match op {
            Operation::ListTables { db } => db.clone(),
            Operation::ListDatabases => String::new(),
            _ => return None,
        };
        let d = &ruling.verdict;
        (d.allow && self.filter_listings && d.reason != Reason::Admin).then(|| ListFilter {
            shape,
            db,
            identity: call.identity.clone(),
            grants: grants.clone(),
        })
    }

    /// The decision of a ruling in the configured mode: what the connection does, and the
    /// record, built once. Shadow mode changes nothing on the wire (no denial, no filtered
    /// listing, nothing set for the caller).
    fn conclude(
        &self,
        call: Call<'_>,
        mut ruling: Ruling,
        mut invalidate: Invalidation,
        audit_failing: bool,
    ) -> Decision {
        let method = &call.header.name;
        let d = &ruling.verdict;
        let (mut outcome, forward) = outcome(d.allow, self.mode);
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                decision: outcome.as_str(),
                reason: d.reason.as_str(),
            })
            .inc();
        let enforce = self.mode == AuthzMode::Enforce;
        let filter = ruling.filter.take();
        let given = ruling.narrowed.as_ref().map(|n| n.given().to_string());
        let mut matched = d.matched.clone();
        let asked = ruling.classified.as_ref().and_then(|c| c.asked.as_ref());
        let message = match asked {
            Some(a) => d.message_for(call.identity, &a.doing),
            None => d.message(call.identity, method),
        };
        let question = call.entry.is_some_and(|m| m.rule == Rule::Question);
        if let Some(a) = asked {
            self.metrics
                .questions
                .get_or_create(&QuestionLabels {
                    client: question::client_label(&a.client),
                    operation: ruling.operation,
                    decision: outcome.as_str(),
                })
                .inc();
        }
        let forward_as = |bytes, reply| {
            Action::Forward(Forward {
                bytes,
                reply,
                session: Session::Caller,
                cache: Default::default(),
            })
        };
        let action = if audit_failing {
            outcome = Outcome::Deny;
            matched = "the audit log cannot be written (audit.on_failure = \"deny\")".into();
            Action::Deny(format!(
                "hms-guard: permission denied: user {} may not call {method}: the audit log cannot be written, so decided calls are refused",
                call.identity
            ))
        } else if !forward || question && asked.is_none() {
            // A question is never forwarded: one that was not read as a question is denied.
            Action::Deny(message)
        } else if question {
            Action::Reply(crate::wire::answer::answered(
                call.transport,
                call.header,
                &format!("{}: {matched}", outcome.as_str()),
            ))
        } else if let (Some(answer), true) = (ruling.answer.take(), enforce) {
            Action::Reply(answer)
        } else if let (Some(n), true) = (ruling.narrowed.take().filter(|n| !n.is_whole()), enforce)
        {
            forward_as(
                call.bytes,
                ReplyCheck::Narrow {
                    narrowed: n,
                    message,
                },
            )
        } else if ruling.absent && enforce {
            forward_as(call.bytes, ReplyCheck::DenyIfFound(message))
        } else if let (Some(f), true) = (filter, enforce) {
            forward_as(call.bytes, ReplyCheck::Filter(f))
        } else {
            match self.set_for_caller(&call, &ruling, outcome) {
                Ok(None) => forward_as(call.bytes, ReplyCheck::Stream),
                Ok(Some((bytes, note))) => {
                    matched = format!("{matched}; {note}");
                    forward_as(bytes, ReplyCheck::Stream)
                }
                // Fail closed: the call does not go upstream with another owner.
                Err(e) => {
                    let why = format!(
                        "hms-guard: permission denied: user {} may not call {method}: the call could not be set to act for the caller ({e})",
                        call.identity
                    );
                    outcome = Outcome::Deny;
                    matched = why.clone();
                    Action::Deny(why)
                }
            }
        };
        invalidate.objects = ruling.objects;
        invalidate.index = ruling.index;
        let c = ruling.classified.as_ref();
        let record = Record::Decided(Box::new(DecisionRecord {
            outcome,
            reason: ruling.verdict.reason,
            operation: ruling.operation,
            db: c.and_then(|c| c.db.clone()),
            table: c.and_then(|c| c.table.clone()),
            location: c.and_then(|c| c.location.clone()),
            required: ruling.verdict.required,
            matched,
            storage: ruling.storage,
            client: c.and_then(|c| c.asked.as_ref()).map(|a| a.client.clone()),
            given,
        }));
        Decision {
            action,
            record,
            invalidate,
        }
    }

    /// The call's bytes with the fields an allowed call of a non-admin caller gets set
    /// (`rewrite::rewrite_for`) and the note for the record; `None`: nothing to set.
    fn set_for_caller(
        &self,
        call: &Call<'_>,
        ruling: &Ruling,
        outcome: Outcome,
    ) -> Result<Option<(Bytes, String)>, crate::wire::codec::splice::SpliceError> {
        let Some(rule) = call.entry.map(|m| m.rule) else {
            return Ok(None);
        };
        if self.mode != AuthzMode::Enforce || outcome != Outcome::Allow || ruling.admin {
            return Ok(None);
        }
        let user = &call.identity.user;
        let mut rw = rewrite::rewrite_for(&rule, call.args, user);
        let mut note = (!rw.fields.is_empty()).then(|| rewrite::rewrite_note(&rule, user));
        if let Some((more, why)) = &ruling.rewrite {
            rw.fields.extend(more.fields.iter().cloned());
            note = Some(match note {
                Some(n) => format!("{n}; {why}"),
                None => why.clone(),
            });
        }
        let Some(note) = note else {
            return Ok(None);
        };
        let bytes = rewrite::rewritten(call.transport, &call.bytes, &rw, self.max_depth)?;
        Ok(Some((bytes, note)))
    }
}

/// The audited outcome of a decision in a mode, and whether the call is forwarded: shadow mode
/// records a denial as `shadow_deny` and forwards anyway.
pub fn outcome(allow: bool, mode: AuthzMode) -> (Outcome, bool) {
    match (allow, mode) {
        (true, _) => (Outcome::Allow, true),
        (false, AuthzMode::Shadow) => (Outcome::ShadowDeny, true),
        (false, _) => (Outcome::Deny, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_mode_records_denials_and_forwards() {
        assert_eq!(outcome(true, AuthzMode::Enforce), (Outcome::Allow, true));
        assert_eq!(outcome(false, AuthzMode::Enforce), (Outcome::Deny, false));
        assert_eq!(outcome(true, AuthzMode::Shadow), (Outcome::Allow, true));
        assert_eq!(
            outcome(false, AuthzMode::Shadow),
            (Outcome::ShadowDeny, true)
        );
    }

    #[test]
    fn only_changes_evict_cached_objects() {
        let t = Object::table("d", "t");
        assert!(changed_objects(&Operation::ReadTables(vec![t.clone()])).is_empty());
        assert!(changed_objects(&Operation::AddPartitions { table: t.clone() }).is_empty());
        assert_eq!(
            changed_objects(&Operation::DropTable { table: t.clone() }),
            vec![t.clone()]
        );
        assert_eq!(
            changed_objects(&Operation::AlterTable {
                table: t.clone(),
                changes: vec![crate::decision::authz::AlterKind::Rename { new_db: "e".into() }]
            }),
            vec![Object::Global]
        );
        assert_eq!(
            changed_objects(&Operation::DropDatabase {
                db: Object::database("d")
            }),
            vec![Object::Global]
        );
    }
}

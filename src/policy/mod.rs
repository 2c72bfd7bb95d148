//! The policy stage: classify a call, gather facts, authorize, and turn the decision into a
//! verdict for the connection (forward, forward-and-filter, or answer in the protocol).

pub mod args;
pub mod classify;
pub mod filter;
pub mod stage;

use std::sync::Arc;

use crate::audit::StorageAudit;
use crate::authz::{
    authorize, readable, visible, AlterKind, Decision, Facts, Grants, Object, Operation, Policy,
    Reason, StorageFact,
};
use crate::codec::value::Value;
use crate::codec::MessageHeader;
use crate::config::AuthzMode;
use crate::facts::{ClientConfig, FactsSource, FactsStore, MetaClient, MetaSource};
use crate::identity::Identity;
use crate::metrics::{DecisionLabels, Metrics};
use crate::router::{ListShape, Method, Rule, EACH};
use crate::settings::AuthzSettings;
use crate::storage::{StorageAction, StorageGuard};
use crate::upstream::Upstreams;

use classify::{classify, Classified, ClassifyError};
pub use stage::{Action, Call, Caller, Decided, DeclaredException, UpstreamOutcome};

/// What the connection does with a call.
#[derive(Debug)]
pub enum Verdict {
    /// Forward the original bytes; stream the reply back unchanged.
    Forward,
    /// Forward, then filter the listing reply to what the user may see.
    Filter(ListFilter),
    /// Do not forward: answer with a permission error carrying this message.
    Deny(String),
    /// A read of a table that does not exist, by a caller who may act in its database: forward
    /// so the metastore answers "not found" itself; should the table exist by the time the
    /// metastore reads the call, its reply is replaced by this denial.
    ForwardIfAbsent(String),
}

/// What the connection checks in a forwarded call's reply.
#[derive(Debug)]
pub enum ReplyCheck {
    /// Nothing: the reply streams through.
    None,
    /// A listing, filtered to what the user may see.
    Filter(ListFilter),
    /// A reply carrying a result (the object exists) is replaced by this denial.
    DenyIfFound(String),
}

/// How to filter one listing reply.
#[derive(Debug, Clone)]
pub struct ListFilter {
    pub shape: ListShape,
    /// Database of a `Names` listing.
    pub db: String,
    pub identity: Identity,
    pub grants: Arc<Grants>,
}

/// Changes the proxy makes to an allowed call before it goes upstream, each one field set in
/// place (docs/AUTHORIZATION.md): an object a user creates is owned by that user, and a lock
/// or transaction is taken in the caller's name, whatever the client wrote.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewrite {
    pub fields: Vec<FieldSet>,
}

/// One field to set: where (field ids from the args struct inward), to what, and whether to
/// add it when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSet {
    pub path: Vec<i16>,
    pub value: crate::codec::splice::NewValue,
    pub if_absent: crate::codec::splice::IfAbsent,
}

/// A decided call: the verdict, and what the audit line needs.
#[derive(Debug)]
pub struct Checked {
    pub verdict: Verdict,
    /// Fields set before the call is forwarded.
    pub rewrite: Option<Rewrite>,
    /// The caller holds the admin role (or is an admin user): its choices of owner and user
    /// stand.
    pub caller_is_admin: bool,
    /// `None`: a harmless call (not a decision).
    pub decision: Option<DecisionRecord>,
    /// After the call succeeds: drop cached grants / these objects.
    pub invalidate_grants: bool,
    pub invalidate_objects: Vec<Object>,
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
    pub storage: Option<crate::audit::StorageAudit>,
}

/// `Table` fields: 3 owner (string), 18 ownerType (PrincipalType, Hive 3+).
const TABLE_OWNER: i16 = 3;
const TABLE_OWNER_TYPE: i16 = 18;
/// `PrincipalType.USER`.
const PRINCIPAL_USER: i32 = 1;

/// The fields an allowed call of a non-admin caller gets set: a created table's owner (added
/// when absent) and owner type (set to USER where sent); the user a lock or a transaction is
/// taken for, where it names someone other than the caller.
fn rewrite_for(rule: &Rule, args: &Value, user: &str) -> Rewrite {
    use crate::codec::splice::{IfAbsent, NewValue};
    let mut fields = Vec::new();
    let mut set_user = |path: &[i16]| {
        if args::strings_at(args, path).iter().any(|u| u != user) {
            fields.push(FieldSet {
                path: path.to_vec(),
                value: NewValue::String(user.as_bytes().to_vec()),
                if_absent: IfAbsent::Leave,
            });
        }
    };
    match *rule {
        Rule::Lock { user: path, .. } => set_user(path),
        Rule::Txn {
            user: Some(path), ..
        } => set_user(path),
        Rule::CreateTable { table } | Rule::AddIndex { table, .. } => {
            let at = |id: i16| table.iter().copied().chain([id]).collect::<Vec<_>>();
            fields.push(FieldSet {
                path: at(TABLE_OWNER),
                value: NewValue::String(user.as_bytes().to_vec()),
                if_absent: IfAbsent::Add,
            });
            fields.push(FieldSet {
                path: at(TABLE_OWNER_TYPE),
                value: NewValue::I32(PRINCIPAL_USER),
                if_absent: IfAbsent::Leave,
            });
        }
        // A grant (a revoke's grantor is not read by the metastore).
        Rule::GrantPrivileges { bag, kind } if classify::is_revoke(kind, args) == Ok(false) => {
            let at = |id: i16| {
                let tail = [GRANTS_OF_BAG, EACH, GRANT_INFO, id];
                bag.iter().copied().chain(tail).collect::<Vec<_>>()
            };
            fields.extend(grantor_fields(at(GRANTOR), at(GRANTOR_TYPE), user));
        }
        Rule::GrantRole {
            grantor: Some((name, kind)),
            ..
        } => fields.extend(grantor_fields(name.to_vec(), kind.to_vec(), user)),
        _ => {}
    }
    Rewrite { fields }
}

/// `PrivilegeBag`: 1 privileges (a list of `HiveObjectPrivilege`, whose 4 is its
/// `PrivilegeGrantInfo`: 3 grantor, 4 grantorType).
const GRANTS_OF_BAG: i16 = 1;
const GRANT_INFO: i16 = 4;
const GRANTOR: i16 = 3;
const GRANTOR_TYPE: i16 = 4;

/// A grant's grantor set to the caller, a USER (both added where absent).
fn grantor_fields(name: Vec<i16>, kind: Vec<i16>, user: &str) -> [FieldSet; 2] {
    use crate::codec::splice::{IfAbsent, NewValue};
    [
        FieldSet {
            path: name,
            value: NewValue::String(user.as_bytes().to_vec()),
            if_absent: IfAbsent::Add,
        },
        FieldSet {
            path: kind,
            value: NewValue::I32(PRINCIPAL_USER),
            if_absent: IfAbsent::Add,
        },
    ]
}

fn rewrite_note(rule: &Rule, user: &str) -> String {
    match rule {
        Rule::CreateTable { .. } => format!("the table's owner is set to {user}"),
        Rule::AddIndex { .. } => format!("the index table's owner is set to {user}"),
        Rule::GrantPrivileges { .. } | Rule::GrantRole { .. } => {
            format!("the grantor is set to {user}")
        }
        _ => format!("taken in the caller's name ({user})"),
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
}

/// Objects whose owner can decide the operation.
fn owner_objects(op: &Operation) -> Vec<Object> {
    match op {
        Operation::ReadTables(t) | Operation::OwnerOfAll(t) => t.clone(),
        Operation::CreateTable {
            table: Object::Table(db, _),
        } => vec![Object::Database(db.clone())],
        Operation::AlterTable { table, changes } => {
            let mut v = vec![table.clone()];
            for kind in changes {
                if let crate::authz::AlterKind::Rename { new_db } = kind {
                    v.push(Object::database(new_db));
                }
            }
            v
        }
        Operation::DropTable { table }
        | Operation::TruncateTable { table }
        | Operation::AddPartitions { table }
        | Operation::AlterPartitions { table, .. }
        | Operation::DropPartitions { table } => vec![table.clone()],
        Operation::AlterDatabase { db, .. }
        | Operation::DropDatabase { db }
        | Operation::ReadDatabase { db } => vec![db.clone()],
        Operation::Lock { items, .. } => items.iter().map(|(o, _)| o.clone()).collect(),
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
                .any(|k| matches!(k, crate::authz::AlterKind::Rename { .. })) =>
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
        let client = MetaClient::new(
            upstreams,
            ClientConfig {
                service_user: a.service_user.clone(),
                timeout: a.facts_timeout,
                max_reply_bytes: a.facts_max_reply_bytes,
                max_idle: 8,
            },
        );
        let source = Box::new(MetaSource::new(client, metrics.clone()));
        Guard::with_source(a, max_depth, read_only_external, source, metrics, storage)
    }

    /// The policy stage with its facts from `source` (tests script it).
    pub fn with_source(
        a: &AuthzSettings,
        max_depth: usize,
        read_only_external: bool,
        source: Box<dyn FactsSource>,
        metrics: Arc<Metrics>,
        storage: StorageGuard,
    ) -> Guard {
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
            metrics,
            storage,
            read_only_external,
        }
    }

    /// Decides one call (everything but `set_ugi`, which the connection answers) on its args
    /// as the metastore reads them.
    pub async fn check(
        &self,
        identity: &Identity,
        method: Option<&'static Method>,
        header: &MessageHeader,
        args: &Value,
    ) -> Checked {
        let rule = method.map(|m| m.rule);
        if self.mode == AuthzMode::Off || rule == Some(Rule::Harmless) {
            return Checked {
                verdict: Verdict::Forward,
                rewrite: None,
                caller_is_admin: false,
                decision: None,
                invalidate_grants: method.is_some_and(|m| m.changes_grants),
                invalidate_objects: Vec::new(),
            };
        }
        let classified = match rule {
            None => Ok(vec![Classified::of(Operation::Unknown(
                header.name.clone(),
            ))]),
            Some(rule) => classify(&rule, args, &self.facts).await,
        };
        // A listing's reply is filtered according to where its method keeps the list.
        let shape = match rule {
            Some(Rule::Listing { shape, .. }) => Some(shape),
            _ => None,
        };
        let mut checked = match classified {
            Ok(ops) => self.decide_all(identity, &header.name, ops, shape).await,
            Err(e) => self.failed(identity, &header.name, e),
        };
        checked.invalidate_grants = method.is_some_and(|m| m.changes_grants);
        if let (Verdict::Forward, Some(rule), Some(d)) =
            (&checked.verdict, rule, checked.decision.as_mut())
        {
            if self.mode == AuthzMode::Enforce
                && d.outcome == Outcome::Allow
                && !checked.caller_is_admin
            {
                let rw = rewrite_for(&rule, args, &identity.user);
                if !rw.fields.is_empty() {
                    d.matched = format!("{}; {}", d.matched, rewrite_note(&rule, &identity.user));
                    checked.rewrite = Some(rw);
                }
            }
        }
        checked
    }

    fn failed(&self, identity: &Identity, method: &str, e: ClassifyError) -> Checked {
        let reason = match e {
            ClassifyError::Facts(_) => Reason::FactsUnavailable,
            _ => Reason::MissingPrivilege,
        };
        let d = Decision {
            allow: false,
            reason,
            required: "a readable call".into(),
            matched: format!("the proxy could not decide: {e}"),
        };
        let record = self.record(&d, "unclassified", None);
        self.verdict_of(identity, method, d, record, None)
    }

    fn record(
        &self,
        d: &Decision,
        operation: &'static str,
        c: Option<&Classified>,
    ) -> DecisionRecord {
        DecisionRecord {
            outcome: if d.allow {
                Outcome::Allow
            } else {
                Outcome::Deny
            },
            reason: d.reason,
            operation,
            db: c.and_then(|c| c.db.clone()),
            table: c.and_then(|c| c.table.clone()),
            location: c.and_then(|c| c.location.clone()),
            required: d.required.clone(),
            matched: d.matched.clone(),
            storage: None,
        }
    }

    /// Decides every operation of a call (a batch may touch several tables): all must pass.
    async fn decide_all(
        &self,
        identity: &Identity,
        method: &str,
        ops: Vec<Classified>,
        shape: Option<ListShape>,
    ) -> Checked {
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
        let mut last = None;
        for c in &ops {
            let (d, storage) = self.decide_one(identity, c, grants.as_deref()).await;
            let mut record = self.record(&d, c.op.class(), Some(c));
            record.storage = storage;
            let allow = d.allow;
            last = Some((d, record, c));
            if !allow {
                break;
            }
        }
        let (mut d, mut record, c) = last.expect("classify yields at least one operation");
        // Existence: an alter is judged on its changes against the current table; refused to a
        // caller who holds nothing on the table (or its database), it is judged as for a table
        // that does not exist, so the refusal reveals nothing of the table or that it exists.
        if let (Operation::AlterTable { table, changes }, Some(g), false) =
            (&c.op, &grants, d.allow)
        {
            if changes.as_slice() != [AlterKind::Other]
                && self.hides_table(identity, g, table).await
            {
                let blind = Operation::AlterTable {
                    table: table.clone(),
                    changes: vec![AlterKind::Other],
                };
                let facts = Facts {
                    grants: Some(g),
                    ..Facts::default()
                };
                d = authorize(identity, &blind, &facts, &self.policy);
                record = self.record(&d, c.op.class(), Some(c));
            }
        }
        // Existence: a denied read of one table that does not exist, by a caller who may act
        // in its database, is answered by the metastore ("not found"), so that creating a
        // table one may create starts as engines expect; strangers are denied, and learn
        // nothing about which names exist.
        let mut absent = false;
        if let (Operation::ReadTables(tables), Some(g), false) = (&c.op, &grants, d.allow) {
            if let [table] = tables.as_slice() {
                if self.may_see_absent(identity, g, table).await {
                    absent = true;
                    d = Decision::allow(
                        Reason::Absent,
                        d.required.clone(),
                        format!("{table} does not exist and the user may act in its database: the metastore answers"),
                    );
                    record = self.record(&d, c.op.class(), Some(c));
                }
            }
        }
        let filter = match (&c.op, &grants, shape) {
            (Operation::ListTables { .. } | Operation::ListDatabases, Some(g), Some(shape))
                if d.allow && self.filter_listings && d.reason != Reason::Admin =>
            {
                Some(ListFilter {
                    shape,
                    db: match &c.op {
                        Operation::ListTables { db } => db.clone(),
                        _ => String::new(),
                    },
                    identity: identity.clone(),
                    grants: g.clone(),
                })
            }
            _ => None,
        };
        let denial = d.message(identity, method);
        let mut checked = self.verdict_of(identity, method, d, record, filter);
        if absent && self.mode == AuthzMode::Enforce {
            checked.verdict = Verdict::ForwardIfAbsent(denial);
        }
        checked.invalidate_objects = ops.iter().flat_map(|c| changed_objects(&c.op)).collect();
        checked.caller_is_admin = grants
            .as_deref()
            .is_some_and(|g| self.policy.is_admin(identity, g));
        checked
    }

    async fn decide_one(
        &self,
        identity: &Identity,
        c: &Classified,
        grants: Option<&Grants>,
    ) -> (Decision, Option<StorageAudit>) {
        let op = &c.op;
        let mut facts = Facts {
            grants,
            ..Facts::default()
        };
        let mut d = authorize(identity, op, &facts, &self.policy);
        if !d.allow && grants.is_some() {
            let objects = owner_objects(op);
            let held = match op {
                Operation::Txn { held, .. } | Operation::Lock { held, .. } => held.as_slice(),
                _ => &[],
            };
            for &h in held {
                match self.facts.holder(h).await {
                    Ok(holder) => {
                        facts.holders.insert(h, holder);
                    }
                    Err(e) => {
                        let d = Decision {
                            allow: false,
                            reason: Reason::FactsUnavailable,
                            required: d.required,
                            matched: format!("who holds {h} could not be read: {e}"),
                        };
                        return (d, None);
                    }
                }
            }
            if !held.is_empty() && objects.is_empty() {
                d = authorize(identity, op, &facts, &self.policy);
            }
            if let Operation::RevokePrivileges(items) = op {
                if let Err(e) = self.gather_recorded(items, &mut facts).await {
                    return (e, None);
                }
                d = authorize(identity, op, &facts, &self.policy);
            }
            if !objects.is_empty() {
                for obj in objects {
                    match self.facts.object(&obj).await {
                        Ok(Some(f)) => {
                            if let Some(o) = f.owner {
                                facts.owners.insert(obj, o);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            let d = Decision {
                                allow: false,
                                reason: Reason::FactsUnavailable,
                                required: d.required,
                                matched: format!("the owner of {obj} could not be read: {e}"),
                            };
                            return (d, None);
                        }
                    }
                }
                d = authorize(identity, op, &facts, &self.policy);
            }
        }
        // Storage facts only for calls the grants allow: a denied call costs no AWS call.
        let has_places = !c.storage.is_empty() || !c.default_places.is_empty();
        if !d.allow || !has_places || !self.storage.enabled() {
            return (d, None);
        }
        let audit = self.storage_facts(identity, c, &mut facts).await;
        (authorize(identity, op, &facts, &self.policy), audit)
    }

    /// The storage facts of a call the grants allow: each default place it fills is listed
    /// with the proxy's own identity (a place already in use is checked like an explicit
    /// location; a failed listing denies), then every location to check is checked (read,
    /// and write unless only read is needed). Stops at the first denial.
    async fn storage_facts(
        &self,
        identity: &Identity,
        c: &Classified,
        facts: &mut Facts<'_>,
    ) -> Option<StorageAudit> {
        let mut needs: Vec<&classify::StorageNeed> = Vec::new();
        for place in &c.default_places {
            match self.storage.occupancy(&place.location).await {
                crate::storage::Occupancy::Empty => {}
                // In use, or not S3 (nothing to list): the ordinary check.
                crate::storage::Occupancy::Occupied | crate::storage::Occupancy::NotS3 => {
                    needs.push(place)
                }
                crate::storage::Occupancy::Unavailable(why) => {
                    facts.storage.push(StorageFact {
                        location: place.location.clone(),
                        // What the place would need if it is in use.
                        action: if place.write { "write" } else { "read" },
                        allow: false,
                        unavailable: true,
                        reason: format!(
                            "storage check unavailable: user {}, default place {}: whether anything is stored there could not be learned: {why}",
                            identity.user, place.location
                        ),
                    });
                    return None;
                }
            }
        }
        needs.extend(c.storage.iter());
        let mut audit = None;
        'needs: for need in needs {
            // Read, and write unless the location is only read (external data, with
            // `storage.read_only_external`): a user must not point a table the compute role
            // writes to at a place the user's own role cannot write.
            let actions: &[StorageAction] = if need.write || !self.read_only_external {
                &[StorageAction::Read, StorageAction::Write]
            } else {
                &[StorageAction::Read]
            };
            for &action in actions {
                let s = self
                    .storage
                    .check(&identity.user, &identity.groups, &need.location, action)
                    .await;
                audit = Some(StorageAudit {
                    role_chain: s.role_chain.clone(),
                    action: s.action.to_string(),
                    cached: s.cached,
                    outcome: s.outcome.as_str().to_string(),
                });
                facts.storage.push(StorageFact {
                    location: need.location.clone(),
                    action: s.action,
                    allow: s.allow,
                    unavailable: s.outcome == crate::storage::StorageOutcome::Unavailable,
                    reason: s.reason,
                });
                if !s.allow {
                    break 'needs;
                }
            }
        }
        audit
    }

    /// The grants the metastore records for each principal and object a revoke names, read
    /// fresh (never cached: a revoke is decided on the metastore's state now).
    async fn gather_recorded(
        &self,
        items: &[crate::authz::RevokeItem],
        facts: &mut Facts<'_>,
    ) -> Result<(), Decision> {
        for it in items {
            let key = (it.principal.clone(), it.target.clone());
            if facts.recorded.contains_key(&key) {
                continue;
            }
            match self.facts.recorded_grants(&key.0, &key.1).await {
                Ok(recorded) => {
                    facts.recorded.insert(key, recorded);
                }
                Err(e) => {
                    return Err(Decision {
                        allow: false,
                        reason: Reason::FactsUnavailable,
                        required: format!(
                            "{} on {} granted by the user",
                            it.privilege.as_str(),
                            it.target
                        ),
                        matched: format!(
                            "the grants recorded for {} on {} could not be read: {e}",
                            it.principal, it.target
                        ),
                    })
                }
            }
        }
        Ok(())
    }

    /// The verdict of a decision in the configured mode (counted).
    fn verdict_of(
        &self,
        identity: &Identity,
        method: &str,
        d: Decision,
        mut record: DecisionRecord,
        filter: Option<ListFilter>,
    ) -> Checked {
        let (outcome, forward) = outcome(d.allow, self.mode);
        record.outcome = outcome;
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                decision: record.outcome.as_str(),
                reason: d.reason.as_str(),
            })
            .inc();
        // Shadow mode changes nothing on the wire: no denial, no filtered listing.
        let verdict = match (forward, filter) {
            (false, _) => Verdict::Deny(d.message(identity, method)),
            (true, Some(f)) if self.mode == AuthzMode::Enforce => Verdict::Filter(f),
            (true, _) => Verdict::Forward,
        };
        Checked {
            verdict,
            rewrite: None,
            caller_is_admin: false,
            decision: Some(record),
            invalidate_grants: false,
            invalidate_objects: Vec::new(),
        }
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

/// The object a listed element names: a table (`Names`: a table name in `f.db`; `Metas`,
/// `Tables`: a struct) or a database (`DbNames`: a name; `Databases`: a struct).
pub fn listed_object(f: &ListFilter, element: &crate::codec::value::Value) -> Option<Object> {
    use crate::codec::value::Value;
    let s = |id| element.field(id).and_then(Value::as_str);
    let (db, table) = match f.shape {
        ListShape::Names => (Some(f.db.as_str()), element.as_str()),
        ListShape::Metas => (s(1), s(2)),
        ListShape::Tables | ListShape::TablesInResult => (s(2), s(1)),
        ListShape::DbNames => return element.as_str().map(Object::database),
        ListShape::Databases => return s(1).map(Object::database),
    };
    Some(Object::table(db?, table?))
}

/// Whether a listed element is visible by grants alone (no ownership).
pub fn visible_by_grants(f: &ListFilter, policy: &Policy, obj: &Object) -> bool {
    match obj {
        Object::Database(db) => crate::authz::database_visible(&f.identity, &f.grants, policy, db),
        _ => visible(&f.identity, &f.grants, policy, obj),
    }
}

/// Whether a listed element stays: whole tables for their owner or SELECT; names of tables
/// and databases for a privilege on (in) them or their ownership (`owned`: objects of the
/// listing the caller owns, looked up by `Guard::owned_among`).
pub fn keep_listed(
    f: &ListFilter,
    policy: &Policy,
    element: &crate::codec::value::Value,
    owned: &std::collections::HashSet<Object>,
) -> bool {
    use crate::codec::value::Value;
    let Some(obj) = listed_object(f, element) else {
        return false;
    };
    match f.shape {
        // Whole tables: their owner, or SELECT (what reading the table alone needs).
        ListShape::Tables | ListShape::TablesInResult => {
            element.field(3).and_then(Value::as_str) == Some(f.identity.user.as_str())
                || readable(&f.identity, &f.grants, policy, &obj)
        }
        _ => visible_by_grants(f, policy, &obj) || owned.contains(&obj),
    }
}

/// Owner lookups one listing may make (tables listed without a grant): beyond it, such tables
/// are left out of the reply.
pub const MAX_LISTING_OWNER_LOOKUPS: usize = 1000;

impl Guard {
    /// Whether `table` does not exist and the caller may act in its database (holds any
    /// privilege on or in it, or owns it). Any failed lookup says no.
    async fn may_see_absent(&self, identity: &Identity, grants: &Grants, table: &Object) -> bool {
        let Object::Table(db, _) = table else {
            return false;
        };
        if !matches!(self.facts.object(table).await, Ok(None)) {
            return false;
        }
        // Not `database_visible`: `default` is visible to all, but only those who hold
        // something in it (or own it) learn which names it lacks.
        self.policy.is_admin(identity, grants)
            || grants.holds_in_database(db)
            || matches!(self.facts.object(&Object::database(db)).await,
                Ok(Some(f)) if f.owner.as_ref().is_some_and(|o| crate::authz::owner_matches(identity, grants, o)))
    }

    /// Whether `table` is hidden from the caller: not an admin, holding nothing on the table or
    /// its database, not its owner (a failed lookup counts as not owning it).
    async fn hides_table(&self, identity: &Identity, grants: &Grants, table: &Object) -> bool {
        let Object::Table(db, _) = table else {
            return false;
        };
        if self.policy.is_admin(identity, grants)
            || grants.any_on(table)
            || grants.any_on(&Object::database(db))
        {
            return false;
        }
        !matches!(self.facts.object(table).await, Ok(Some(f))
            if f.owner.as_ref().is_some_and(|o| crate::authz::owner_matches(identity, grants, o)))
    }

    /// Whether a listing names one database (not a pattern) that the caller may not see: not
    /// `default`, not an admin, holding nothing on or in it, not its owner (a failed lookup
    /// counts as not owning it). Its failures are then answered as an empty listing, so that
    /// a missing database and an existing one with nothing visible answer alike.
    pub async fn hides_database(&self, f: &ListFilter) -> bool {
        let named = !matches!(
            f.shape,
            ListShape::Metas | ListShape::DbNames | ListShape::Databases
        );
        if !named || f.db.is_empty() || f.db == "*" {
            return false;
        }
        if crate::authz::database_visible(&f.identity, &f.grants, &self.policy, &f.db) {
            return false;
        }
        let owner = self.facts.object(&Object::database(&f.db)).await;
        !matches!(owner, Ok(Some(facts)) if facts.owner.as_ref()
            .is_some_and(|o| crate::authz::owner_matches(&f.identity, &f.grants, o)))
    }

    /// The tables among `tables` the caller owns (owner facts, cached; a failed lookup counts
    /// as not owned: the table is left out).
    pub async fn owned_among(
        &self,
        f: &ListFilter,
        tables: Vec<Object>,
    ) -> std::collections::HashSet<Object> {
        let mut owned = std::collections::HashSet::new();
        for t in tables.into_iter().take(MAX_LISTING_OWNER_LOOKUPS) {
            if let Ok(Some(facts)) = self.facts.object(&t).await {
                if facts
                    .owner
                    .as_ref()
                    .is_some_and(|o| crate::authz::owner_matches(&f.identity, &f.grants, o))
                {
                    owned.insert(t);
                }
            }
        }
        owned
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
                changes: vec![crate::authz::AlterKind::Rename { new_db: "e".into() }]
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

//! The privilege table (docs/AUTHORIZATION.md) on the grants: one function per family of
//! operations, each judging with the same few rules — admin, ownership, a privilege, the
//! grant or admin option. `authorize` then adds the storage checks.

use super::*;

/// Decides `op` on the caller's grants alone (the storage checks come after).
pub(super) fn authorize_grants(
    identity: &Identity,
    op: &Operation,
    facts: &Facts<'_>,
    policy: &Policy,
) -> Verdict {
    if let Some(d) = before_grants(identity, op, policy) {
        return d;
    }
    let Some(grants) = facts.grants else {
        return Verdict::deny(
            Reason::FactsUnavailable,
            "grant facts",
            "the user's grants could not be read from the metastore",
        );
    };
    let j = Judge {
        identity,
        grants,
        facts,
        policy,
        admin: policy.is_admin(identity, grants),
    };
    match op {
        Operation::Harmless | Operation::Unknown(_) => unreachable!("decided before the grants"),
        Operation::ReadTables(_)
        | Operation::ListTables { .. }
        | Operation::ListDatabases
        | Operation::ReadDatabase { .. } => j.read(op),
        Operation::CreateTable { .. }
        | Operation::AlterTable { .. }
        | Operation::DropTable { .. }
        | Operation::TruncateTable { .. }
        | Operation::WriteData { .. }
        | Operation::AddPartitions { .. }
        | Operation::AlterPartitions { .. }
        | Operation::DropPartitions { .. }
        | Operation::OwnerOfAll(_) => j.table(op),
        Operation::CreateDatabase { .. } => j.admin_only("creating a database"),
        Operation::AlterDatabase { db, owner_change } => {
            if *owner_change {
                j.admin_only("changing a database's owner")
            } else {
                j.owner_only(db, "altering it")
            }
        }
        Operation::DropDatabase { db } => j.owner_only(db, "dropping it"),
        Operation::GrantRole { .. }
        | Operation::GrantPrivileges(_)
        | Operation::RevokePrivileges(_)
        | Operation::CarriedGrants { .. }
        | Operation::ReadGrants { .. } => j.grant(op),
        Operation::Txn { .. } | Operation::Lock { .. } => j.txn(op),
        Operation::DataPath { write } => Verdict::allow(
            Reason::Path,
            if *write {
                "write access"
            } else {
                "read access"
            },
            "no grant governs files outside tables: the user's own storage role decides",
        ),
        Operation::AdminOnly(what) => j.admin_only(what),
        Operation::Tokens => {
            if !policy.allow_tokens {
                Verdict::deny(
                    Reason::TokensDisabled,
                    "authz.allow_tokens = true and the admin role",
                    "delegation tokens and master keys are disabled",
                )
            } else {
                j.admin_only("delegation tokens and master keys")
            }
        }
    }
}

/// The decisions made before the grants are looked at: harmless calls, unknown methods,
/// anonymous callers.
fn before_grants(identity: &Identity, op: &Operation, policy: &Policy) -> Option<Verdict> {
    if let Operation::Harmless = op {
        return Some(Verdict::allow(
            Reason::Harmless,
            "nothing",
            "session or harmless call",
        ));
    }
    if let Operation::Unknown(name) = op {
        return Some(if policy.allow_unknown_methods {
            Verdict::allow(
                Reason::UnknownMethod,
                "nothing",
                "authz.unknown_methods = \"allow\"",
            )
        } else {
            Verdict::deny(
                Reason::UnknownMethod,
                format!("a known method ({name} is not in the method table)"),
                "unknown methods are denied (authz.unknown_methods = \"deny\")",
            )
        });
    }
    if identity.is_anonymous() {
        return Some(Verdict::deny(
            Reason::Anonymous,
            "an identity",
            "no set_ugi was received on this connection, and anonymous callers are denied: \
             the client must name its user with set_ugi (Spark: HADOOP_USER_NAME; pyiceberg: \
             the catalog property ugi = \"user:\"), or connect through a pinned sidecar \
             (identity.mode = \"pinned\")",
        ));
    }
    None
}

/// One decision's caller: who it is, what it holds, and whether it is admin.
struct Judge<'a> {
    identity: &'a Identity,
    grants: &'a Grants,
    facts: &'a Facts<'a>,
    policy: &'a Policy,
    admin: bool,
}

/// The rules every family judges with.
impl Judge<'_> {
    /// What made the caller admin.
    fn admin_match(&self) -> String {
        if self.policy.admin_users.contains(&self.identity.user) {
            "user listed in authz.admin_users".to_string()
        } else {
            format!("role:{} (admin role)", self.policy.admin_role)
        }
    }

    fn is_owner(&self, obj: &Object) -> bool {
        self.facts
            .owners
            .get(obj)
            .is_some_and(|o| owner_matches(self.identity, self.grants, o))
    }

    /// Owner or a privilege (table rules); admin always passes.
    fn owner_or(&self, obj: &Object, privs: &[Privilege]) -> Verdict {
        let required = format!(
            "{} on {obj} (or ownership)",
            privs
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        );
        if self.admin {
            return Verdict::allow(Reason::Admin, required, self.admin_match());
        }
        if self.is_owner(obj) {
            return Verdict::allow(Reason::Owner, required, format!("owner of {obj}"));
        }
        for p in privs {
            if let Some(h) = self.grants.find(obj, *p, false) {
                return Verdict::allow(
                    Reason::Grant,
                    required,
                    format!("{} {} on {obj}", h.via, h.privilege.as_str()),
                );
            }
        }
        Verdict::deny(
            Reason::MissingPrivilege,
            required,
            format!("no grant to the user, its groups or its roles gives it on {obj}"),
        )
    }

    fn owner_only(&self, obj: &Object, what: &str) -> Verdict {
        let required = format!("ownership of {obj} ({what})");
        if self.admin {
            return Verdict::allow(Reason::Admin, required, self.admin_match());
        }
        if self.is_owner(obj) {
            return Verdict::allow(Reason::Owner, required, format!("owner of {obj}"));
        }
        Verdict::deny(
            Reason::MissingPrivilege,
            required,
            format!("the user does not own {obj}"),
        )
    }

    fn admin_only(&self, what: &str) -> Verdict {
        let required = format!("the admin role ({what})");
        if self.admin {
            Verdict::allow(Reason::Admin, required, self.admin_match())
        } else {
            Verdict::deny(
                Reason::AdminRequired,
                required,
                format!("the user does not hold role {}", self.policy.admin_role),
            )
        }
    }

    fn create_in(&self, db: &Object) -> Verdict {
        let required = format!("CREATE on {db} (or its ownership)");
        if self.admin {
            return Verdict::allow(Reason::Admin, required, self.admin_match());
        }
        if self.is_owner(db) {
            return Verdict::allow(Reason::Owner, required, format!("owner of {db}"));
        }
        if let Some(h) = self.grants.find(db, Privilege::Create, false) {
            return Verdict::allow(
                Reason::Grant,
                required,
                format!("{} {} on {db}", h.via, h.privilege.as_str()),
            );
        }
        Verdict::deny(
            Reason::MissingPrivilege,
            required,
            format!("no CREATE grant on {db} and not its owner"),
        )
    }

    /// Each check in turn until one denies: the first denial, else the last allow (`none`
    /// when there is nothing to check).
    fn all(&self, none: Verdict, checks: impl IntoIterator<Item = Verdict>) -> Verdict {
        let mut last = none;
        for d in checks {
            last = d;
            if !last.allow {
                return last;
            }
        }
        last
    }
}

/// The families of operations.
impl Judge<'_> {
    /// Reads of tables and databases, and listings (allowed, their replies filtered).
    fn read(&self, op: &Operation) -> Verdict {
        let filtered = |required: String, filter: &str| {
            if self.admin {
                Verdict::allow(Reason::Admin, required, self.admin_match())
            } else {
                Verdict::allow(Reason::Filtered, required, filter)
            }
        };
        match op {
            Operation::ReadTables(tables) => self.all(
                Verdict::allow(Reason::Harmless, "nothing", "no table named"),
                tables
                    .iter()
                    .map(|t| self.owner_or(t, &[Privilege::Select])),
            ),
            // The listing itself is allowed; its reply is filtered per table (see `visible`).
            Operation::ListTables { db } => filtered(
                format!("any privilege on each listed table of database {db}"),
                "reply filtered to tables the user holds a privilege on",
            ),
            Operation::ListDatabases => filtered(
                "any privilege in each listed database (or its ownership)".into(),
                "reply filtered to databases the user holds a privilege in or owns",
            ),
            Operation::ReadDatabase { db } => self.read_database(db),
            _ => unreachable!("authorize_grants passes only reads"),
        }
    }

    /// One database's metadata: admin, its owner, a privilege in it; `default` for everyone.
    fn read_database(&self, db: &Object) -> Verdict {
        let name = match db {
            Object::Database(d) => d.as_str(),
            _ => "",
        };
        let required = format!("any privilege in {db} (or its ownership)");
        if self.admin {
            Verdict::allow(Reason::Admin, required, self.admin_match())
        } else if self.is_owner(db) {
            Verdict::allow(Reason::Owner, required, format!("owner of {db}"))
        } else if database_visible(self.identity, self.grants, self.policy, name) {
            Verdict::allow(
                Reason::Grant,
                required,
                if name == DEFAULT_DATABASE {
                    "the default database is visible to everyone".to_string()
                } else {
                    format!("a privilege in {db}")
                },
            )
        } else {
            Verdict::deny(
                Reason::MissingPrivilege,
                required,
                format!("no grant in {db} to the user, its groups or its roles, and not its owner"),
            )
        }
    }

    /// Table DDL and writes: create, alter, drop, truncate, partitions, ownership of all.
    fn table(&self, op: &Operation) -> Verdict {
        match op {
            Operation::CreateTable { table } => match table {
                Object::Table(db, _) => self.create_in(&Object::Database(db.clone())),
                other => self.create_in(other),
            },
            Operation::AlterTable { table, changes } => self.all(
                self.admin_only("an alter that changes nothing"),
                // Every change must pass; the first that does not decides.
                changes.iter().map(|kind| self.alter(table, kind)),
            ),
            Operation::DropTable { table } => self.owner_or(table, &[Privilege::Drop]),
            Operation::TruncateTable { table } => self.owner_or(table, &[Privilege::Delete]),
            // Each privilege the write needs (INSERT OVERWRITE: INSERT and DELETE).
            Operation::WriteData { table, privileges } => self.all(
                self.admin_only("a write that needs no privilege"),
                privileges.iter().map(|p| self.owner_or(table, &[*p])),
            ),
            Operation::AddPartitions { table } => self.owner_or(table, &[Privilege::Insert]),
            Operation::AlterPartitions { table, stats_only } => {
                if *stats_only {
                    self.owner_or(table, &[Privilege::Insert, Privilege::Alter])
                } else {
                    self.owner_or(table, &[Privilege::Alter])
                }
            }
            Operation::DropPartitions { table } => self.owner_or(table, &[Privilege::Delete]),
            Operation::OwnerOfAll(tables) => self.all(
                self.admin_only("no table named"),
                tables
                    .iter()
                    .map(|t| self.owner_only(t, "every table the call touches")),
            ),
            _ => unreachable!("authorize_grants passes only table operations"),
        }
    }

    /// One change of an `alter_table*`.
    fn alter(&self, table: &Object, kind: &AlterKind) -> Verdict {
        match kind {
            AlterKind::StatsOnly | AlterKind::Commit => {
                self.owner_or(table, &[Privilege::Insert, Privilege::Alter])
            }
            AlterKind::Location | AlterKind::Other => self.owner_or(table, &[Privilege::Alter]),
            AlterKind::Owner => self.admin_only("changing a table's owner"),
            AlterKind::Rename { new_db } => {
                let own = self.owner_only(table, "renaming it");
                if !own.allow {
                    return own;
                }
                let target = self.create_in(&Object::database(new_db));
                if !target.allow {
                    return target;
                }
                own
            }
        }
    }

    /// Grants: of roles, of privileges, revokes, a created table's grants, reading grants.
    fn grant(&self, op: &Operation) -> Verdict {
        match op {
            Operation::GrantRole { role } => self.grant_role(role),
            Operation::GrantPrivileges(items) => {
                let none = self.admin_only("granting");
                if self.admin || items.is_empty() {
                    return none;
                }
                self.all(
                    none,
                    items.iter().map(|(obj, p)| self.grant_option(obj, *p)),
                )
            }
            Operation::RevokePrivileges(items) => {
                if self.admin {
                    return self.admin_only("revoking others' grants");
                }
                revoke_by_grantor(self.identity, items, self.facts)
            }
            Operation::CarriedGrants { table, grants } => {
                if self.admin {
                    return self.admin_only("a created table's grants to others");
                }
                carried_by_caller(self.identity, table, grants)
            }
            Operation::ReadGrants { principal, groups } => {
                self.read_grants(principal.as_ref(), groups)
            }
            _ => unreachable!("authorize_grants passes only grant operations"),
        }
    }

    fn grant_role(&self, role: &str) -> Verdict {
        let required = format!("the admin role or WITH ADMIN OPTION on role {role}");
        if self.admin {
            Verdict::allow(Reason::Admin, required, self.admin_match())
        } else if self.grants.role_admin.contains(role) {
            Verdict::allow(
                Reason::AdminOption,
                required,
                format!("role:{role} held WITH ADMIN OPTION"),
            )
        } else {
            Verdict::deny(
                Reason::AdminRequired,
                required,
                format!("the user is not admin and does not hold role {role} WITH ADMIN OPTION"),
            )
        }
    }

    /// Granting `p` on `obj`: the caller holds it WITH GRANT OPTION.
    fn grant_option(&self, obj: &Object, p: Privilege) -> Verdict {
        let required = format!(
            "{} on {obj} WITH GRANT OPTION (or the admin role)",
            p.as_str()
        );
        match self.grants.find(obj, p, true) {
            Some(h) => Verdict::allow(
                Reason::GrantOption,
                required,
                format!(
                    "{} {} WITH GRANT OPTION on {obj}",
                    h.via,
                    h.privilege.as_str()
                ),
            ),
            None => Verdict::deny(
                Reason::MissingPrivilege,
                required,
                format!("the user holds no grant option for it on {obj}"),
            ),
        }
    }

    /// Reading grants: one's own, or admin; every group named must be the caller's.
    fn read_grants(&self, principal: Option<&Principal>, groups: &[String]) -> Verdict {
        let identity = self.identity;
        let own = match principal {
            None => false,
            Some(p) => match p.kind {
                PrincipalKind::User => same_principal(&p.name, &identity.user),
                PrincipalKind::Group => identity.groups.contains(&p.name),
                PrincipalKind::Role => self.grants.roles.contains(&p.name),
            },
        };
        if let Some(g) = groups.iter().find(|g| !identity.groups.contains(g)) {
            if !self.admin {
                return Verdict::deny(
                    Reason::AdminRequired,
                    "the admin role to read other principals' grants",
                    format!("group {g} is not one of the caller's groups"),
                );
            }
        }
        if own {
            Verdict::allow(Reason::OwnGrants, "nothing", "reading one's own grants")
        } else {
            self.admin_only("reading other principals' grants")
        }
    }

    /// Transactions and locks. The user a lock or transaction names is set to the caller
    /// before forwarding (the policy stage rewrites it; an admin's choice stands): not a
    /// reason to deny.
    fn txn(&self, op: &Operation) -> Verdict {
        let (identity, facts) = (self.identity, self.facts);
        match op {
            Operation::Txn { held, .. } => held_by_caller(identity, self.admin, held, facts)
                .unwrap_or_else(|| {
                    Verdict::allow(
                        Reason::Harmless,
                        "an identity",
                        if held.is_empty() {
                            "transaction calls need an identity only".to_string()
                        } else {
                            format!("{} held by the caller", list_held(held))
                        },
                    )
                }),
            Operation::Lock { items, held, .. } => {
                if let Some(d) = held_by_caller(identity, self.admin, held, facts) {
                    return d;
                }
                self.all(
                    Verdict::allow(Reason::Harmless, "nothing", "no object locked"),
                    items.iter().map(|(obj, kind)| self.lock(obj, *kind)),
                )
            }
            _ => unreachable!("authorize_grants passes only transactions and locks"),
        }
    }

    /// One object a lock request locks.
    fn lock(&self, obj: &Object, kind: LockKind) -> Verdict {
        match (obj, kind) {
            (Object::Table(..), LockKind::Read) => self.owner_or(obj, &[Privilege::Select]),
            (Object::Table(..), LockKind::Write) => self.owner_or(
                obj,
                &[Privilege::Insert, Privilege::Update, Privilege::Delete],
            ),
            // A shared lock on a database: any caller with an identity (engines take
            // one for every query in it); an exclusive one: its owner.
            (_, LockKind::Read) => Verdict::allow(
                Reason::Harmless,
                format!("a shared lock on {obj}"),
                "shared database locks need an identity only",
            ),
            (_, LockKind::Write) => self.owner_only(obj, "an exclusive lock on it"),
        }
    }
}

/// A denial unless every transaction and lock in `held` is the caller's (the admin acts on
/// anyone's). A finished transaction passes: the metastore answers it itself.
fn held_by_caller(
    identity: &Identity,
    admin: bool,
    held: &[TxnRef],
    facts: &Facts<'_>,
) -> Option<Verdict> {
    if admin {
        return None;
    }
    let required = || format!("{} opened by user {}", list_held(held), identity.user);
    for h in held {
        let deny = |matched: String| Some(Verdict::deny(Reason::NotHolder, required(), matched));
        match facts.holders.get(h) {
            Some(Holder::User(u)) if *u == identity.user => {}
            Some(Holder::Finished) => {}
            Some(Holder::User(_)) => return deny(format!("{h} belongs to another user")),
            Some(Holder::Absent) => {
                return deny(match h {
                    TxnRef::Txn(_) => format!("{h} does not exist"),
                    TxnRef::Lock(_) => {
                        format!("{h} is not held (released, timed out, or never taken)")
                    }
                })
            }
            None => return deny(format!("who holds {h} is not known")),
        }
    }
    None
}

fn list_held(held: &[TxnRef]) -> String {
    match held {
        [one] => one.to_string(),
        _ => format!("{} transactions and locks", held.len()),
    }
}

/// Grants a table a user (not admin) creates carries: only to the user itself, granted by the
/// user (as Hive's automatic owner grants are written); a grant to anyone else would be a grant
/// without the grant option, and another grantor a grant in someone else's name.
fn carried_by_caller(
    identity: &Identity,
    table: &Object,
    grants: &[(Principal, RecordedGrant)],
) -> Verdict {
    let required = format!("grants on {table} to the user itself, by the user (or the admin role)");
    for (to, g) in grants {
        if to.kind != PrincipalKind::User || to.name != identity.user {
            return Verdict::deny(
                Reason::MissingPrivilege,
                required,
                format!(
                    "the new table carries a grant of {} to {to}: grants to others need the grant option",
                    g.privilege
                ),
            );
        }
        if g.grantor.as_deref() != Some(identity.user.as_str())
            || g.grantor_kind != Some(PrincipalKind::User)
        {
            return Verdict::deny(
                Reason::NotGrantor,
                required,
                format!(
                    "the new table carries a grant of {} naming grantor {} {}, not the user",
                    g.privilege,
                    g.grantor_kind.map_or("unknown", |k| k.as_str()),
                    g.grantor.as_deref().unwrap_or("(none)")
                ),
            );
        }
    }
    Verdict::allow(
        Reason::OwnGrants,
        required,
        "the new table's grants are the user's own, to itself",
    )
}

/// A revoke by a user who is not admin: every grant it takes away must be recorded at the
/// metastore with the user as its grantor (grantor type USER), as Hive's SQL-standard
/// authorization allows; the metastore's own revoke matches grants without looking at the
/// grantor, so a revoke that matches anyone else's grant is refused whole.
fn revoke_by_grantor(identity: &Identity, items: &[RevokeItem], facts: &Facts<'_>) -> Verdict {
    let mut last = Verdict::deny(Reason::MissingPrivilege, "a privilege", "nothing to revoke");
    for it in items {
        let required = format!(
            "{} on {} granted to {} by user {} (or the admin role)",
            it.privilege.as_str(),
            it.target,
            it.principal,
            identity.user
        );
        let Some(recorded) = facts
            .recorded
            .get(&(it.principal.clone(), it.target.clone()))
        else {
            return Verdict::deny(
                Reason::FactsUnavailable,
                required,
                format!("the grants recorded for {} are not known", it.principal),
            );
        };
        let matching: Vec<&RecordedGrant> =
            recorded.iter().filter(|g| g.holds(it.privilege)).collect();
        if matching.is_empty() {
            return Verdict::deny(
                Reason::MissingPrivilege,
                required,
                format!(
                    "the metastore records no grant of {} to {} on {}",
                    it.privilege.as_str(),
                    it.principal,
                    it.target
                ),
            );
        }
        let by_caller = |g: &&RecordedGrant| {
            g.grantor.as_deref() == Some(identity.user.as_str())
                && g.grantor_kind == Some(PrincipalKind::User)
        };
        if let Some(other) = matching.iter().find(|g| !by_caller(g)) {
            return Verdict::deny(
                Reason::NotGrantor,
                required,
                format!(
                    "it was granted by {} {}, not by the user",
                    other.grantor_kind.map_or("unknown", |k| k.as_str()),
                    other.grantor.as_deref().unwrap_or("(none)")
                ),
            );
        }
        last = Verdict::allow(
            Reason::Grantor,
            required,
            format!(
                "{} on {} was granted to {} by the user",
                it.privilege.as_str(),
                it.target,
                it.principal
            ),
        );
    }
    last
}

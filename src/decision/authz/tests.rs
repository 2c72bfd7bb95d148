//! authorize() against each row of docs/AUTHORIZATION.md, the privilege table, allow and deny.

use super::*;
use crate::listener::identity::{Identity, IdentitySource};

fn user(name: &str, groups: &[&str]) -> Identity {
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    Identity::new(name, &groups, IdentitySource::SetUgi)
}

fn role(name: &str) -> Principal {
    Principal {
        kind: PrincipalKind::Role,
        name: name.into(),
    }
}

fn principal(kind: PrincipalKind, name: &str) -> Principal {
    Principal {
        kind,
        name: name.into(),
    }
}

fn t(name: &str) -> Object {
    Object::table("demo_database", name)
}

fn db() -> Object {
    Object::database("demo_database")
}

/// The seed's grants: roles sales, marketing, finance; john→finance, david→sales, mary→marketing.
fn seed() -> HashMap<Principal, PrincipalFacts> {
    use Privilege::*;
    let mut m = HashMap::new();
    let privs = |v: &[(&str, Privilege)]| PrincipalFacts {
        roles: vec![],
        privileges: v.iter().map(|(n, p)| (t(n), *p, false)).collect(),
        parts: vec![],
    };
    m.insert(
        role("sales"),
        privs(&[
            ("customer", Select),
            ("customer", Insert),
            ("store_sales", Select),
            ("store_sales", Insert),
            ("promotion", Select),
        ]),
    );
    m.insert(
        role("finance"),
        privs(&[
            ("customer", Select),
            ("store_sales", Select),
            ("promotion", Select),
        ]),
    );
    m.insert(
        role("marketing"),
        privs(&[
            ("customer", Select),
            ("store_sales", Select),
            ("promotion", Select),
            ("promotion", Insert),
        ]),
    );
    m.insert(role("public"), PrincipalFacts::default());
    m.insert(role("admin"), PrincipalFacts::default());
    let member = |r: &str| PrincipalFacts {
        roles: vec![(r.into(), false)],
        privileges: vec![],
        parts: vec![],
    };
    m.insert(principal(PrincipalKind::User, "john"), member("finance"));
    m.insert(principal(PrincipalKind::User, "david"), member("sales"));
    m.insert(principal(PrincipalKind::User, "mary"), member("marketing"));
    m.insert(
        principal(PrincipalKind::User, "nobody"),
        PrincipalFacts::default(),
    );
    m.insert(principal(PrincipalKind::User, "root"), member("admin"));
    m
}

fn grants_of(id: &Identity, facts: &HashMap<Principal, PrincipalFacts>) -> Grants {
    assemble(id, facts).unwrap()
}

fn decide(id: &Identity, op: Operation, owners: &[(Object, &str)]) -> Verdict {
    decide_with(id, op, owners, &seed())
}

fn decide_with(
    id: &Identity,
    op: Operation,
    owners: &[(Object, &str)],
    facts: &HashMap<Principal, PrincipalFacts>,
) -> Verdict {
    let g = grants_of(id, facts);
    let f = Facts {
        grants: Some(&g),
        owners: owners
            .iter()
            .map(|(o, n)| {
                (
                    o.clone(),
                    Owner {
                        name: n.to_string(),
                        kind: PrincipalKind::User,
                    },
                )
            })
            .collect(),
        storage: Vec::new(),
        holders: Default::default(),
        recorded: Default::default(),
        ..Default::default()
    };
    authorize(id, &op, &f, &Policy::default())
}

#[test]
fn table_reads_need_select() {
    let read = |n: &str| Operation::ReadTables(vec![t(n)]);
    let mary = user("mary", &[]);
    let d = decide(&mary, read("promotion"), &[]);
    assert!(d.allow);
    assert_eq!(d.reason, Reason::Grant);
    assert_eq!(
        d.matched,
        "role:marketing SELECT on table demo_database.promotion"
    );
    let nobody = user("nobody", &[]);
    let d = decide(&nobody, read("customer"), &[]);
    assert!(!d.allow);
    assert_eq!(d.reason, Reason::MissingPrivilege);
    let msg = d.message(&nobody, "get_table");
    for part in [
        "nobody",
        "SELECT",
        "table demo_database.customer",
        "get_table",
        "no grant",
    ] {
        assert!(msg.contains(part), "{msg}");
    }
    // Owner and admin pass without grants.
    assert!(decide(&nobody, read("customer"), &[(t("customer"), "nobody")]).allow);
    let d = decide(&user("root", &[]), read("customer"), &[]);
    assert_eq!((d.allow, d.reason), (true, Reason::Admin));
    // Several tables: every one needs SELECT.
    let both = Operation::ReadTables(vec![t("promotion"), t("secret")]);
    assert!(!decide(&mary, both, &[]).allow);
}

#[test]
fn insert_via_stats_only_alter() {
    let stats = |n: &str| Operation::AlterTable {
        table: t(n),
        changes: vec![AlterKind::StatsOnly],
    };
    let mary = user("mary", &[]);
    assert!(decide(&mary, stats("promotion"), &[]).allow);
    assert!(!decide(&mary, stats("customer"), &[]).allow);
    let john = user("john", &[]);
    for n in ["customer", "store_sales", "promotion"] {
        assert!(!decide(&john, stats(n), &[]).allow, "john inserts nothing");
        assert!(decide(&john, Operation::ReadTables(vec![t(n)]), &[]).allow);
    }
    assert!(
        decide(
            &mary,
            Operation::AddPartitions {
                table: t("promotion")
            },
            &[]
        )
        .allow
    );
    assert!(
        !decide(
            &mary,
            Operation::AddPartitions {
                table: t("customer")
            },
            &[]
        )
        .allow
    );
}

#[test]
fn alter_table_kinds() {
    let mary = user("mary", &[]);
    let alter = |kind| Operation::AlterTable {
        table: t("promotion"),
        changes: vec![kind],
    };
    let several = |changes: Vec<AlterKind>| Operation::AlterTable {
        table: t("promotion"),
        changes,
    };
    // A table format's commit is a data write: INSERT suffices (marketing holds it).
    assert!(decide(&mary, alter(AlterKind::Commit), &[]).allow);
    // Every change is judged: the owner may rename and relocate, but not also give the
    // table away; INSERT covers a commit, not a schema change with it.
    let own = [(t("promotion"), "mary")];
    let in_place = || AlterKind::Rename {
        new_db: "grants_db".into(),
    };
    assert!(
        !decide(&mary, several(vec![in_place(), AlterKind::Owner]), &own).allow,
        "a rename that also changes the owner needs the admin"
    );
    assert!(
        !decide(
            &mary,
            several(vec![AlterKind::Commit, AlterKind::Other]),
            &[]
        )
        .allow
    );
    // Marketing has SELECT+INSERT, not ALTER: schema or location changes are denied…
    assert!(!decide(&mary, alter(AlterKind::Other), &[]).allow);
    assert!(!decide(&mary, alter(AlterKind::Location), &[]).allow);
    // …unless mary owns the table.
    let own = [(t("promotion"), "mary")];
    assert!(decide(&mary, alter(AlterKind::Other), &own).allow);
    assert!(decide(&mary, alter(AlterKind::Location), &own).allow);
    // Owner change: admin only, even for the owner.
    assert!(!decide(&mary, alter(AlterKind::Owner), &own).allow);
    assert!(decide(&user("root", &[]), alter(AlterKind::Owner), &[]).allow);
    // Rename: owner + create rule on the target database.
    let rename = alter(AlterKind::Rename {
        new_db: "other".into(),
    });
    let d = decide(&mary, rename.clone(), &own);
    assert!(!d.allow);
    assert!(d.required.contains("CREATE on database other"), "{d:?}");
    let d = decide(
        &mary,
        rename,
        &[
            (t("promotion"), "mary"),
            (Object::database("other"), "mary"),
        ],
    );
    assert!(d.allow, "{d:?}");
}

#[test]
fn create_drop_truncate_partitions() {
    let mary = user("mary", &[]);
    let create = Operation::CreateTable { table: t("new") };
    assert!(!decide(&mary, create.clone(), &[]).allow);
    assert!(
        decide(&mary, create.clone(), &[(db(), "mary")]).allow,
        "database owner"
    );
    let mut facts = seed();
    facts
        .get_mut(&role("marketing"))
        .unwrap()
        .privileges
        .push((db(), Privilege::Create, false));
    assert!(
        decide_with(&mary, create, &[], &facts).allow,
        "CREATE on the database"
    );
    for n in ["customer", "store_sales", "promotion"] {
        for op in [
            Operation::DropTable { table: t(n) },
            Operation::TruncateTable { table: t(n) },
            Operation::DropPartitions { table: t(n) },
        ] {
            for u in ["mary", "john", "david", "nobody"] {
                assert!(!decide(&user(u, &[]), op.clone(), &[]).allow, "{u} {op:?}");
            }
            assert!(decide(&user("root", &[]), op, &[]).allow);
        }
    }
    let mut facts = seed();
    facts
        .get_mut(&role("sales"))
        .unwrap()
        .privileges
        .push((t("customer"), Privilege::All, false));
    let david = user("david", &[]);
    assert!(
        decide_with(
            &david,
            Operation::DropTable {
                table: t("customer")
            },
            &[],
            &facts
        )
        .allow
    );
    assert!(
        decide_with(
            &david,
            Operation::TruncateTable {
                table: t("customer")
            },
            &[],
            &facts
        )
        .allow
    );
    let stats = Operation::AlterPartitions {
        table: t("customer"),
        stats_only: true,
    };
    assert!(decide(&david, stats, &[]).allow);
    let other = Operation::AlterPartitions {
        table: t("customer"),
        stats_only: false,
    };
    assert!(!decide(&david, other, &[]).allow);
}

#[test]
fn exchange_and_constraints_need_every_owner() {
    let op = Operation::OwnerOfAll(vec![t("a"), t("b")]);
    let mary = user("mary", &[]);
    assert!(!decide(&mary, op.clone(), &[(t("a"), "mary")]).allow);
    assert!(decide(&mary, op, &[(t("a"), "mary"), (t("b"), "mary")]).allow);
}

#[test]
fn database_ddl() {
    let mary = user("mary", &[]);
    let root = user("root", &[]);
    assert!(!decide(&mary, Operation::CreateDatabase { db: db() }, &[]).allow);
    assert!(decide(&root, Operation::CreateDatabase { db: db() }, &[]).allow);
    let own = [(db(), "mary")];
    assert!(decide(&mary, Operation::DropDatabase { db: db() }, &own).allow);
    assert!(!decide(&mary, Operation::DropDatabase { db: db() }, &[]).allow);
    let alter = |owner_change| Operation::AlterDatabase {
        db: db(),
        owner_change,
    };
    assert!(decide(&mary, alter(false), &own).allow);
    assert!(!decide(&mary, alter(true), &own).allow);
}

#[test]
fn nested_and_group_granted_roles() {
    let mut facts = seed();
    // analysts (group) → role team → role finance (nested).
    facts.insert(
        principal(PrincipalKind::Group, "analysts"),
        PrincipalFacts {
            roles: vec![("team".into(), false)],
            privileges: vec![],
            parts: vec![],
        },
    );
    facts.insert(
        role("team"),
        PrincipalFacts {
            roles: vec![("finance".into(), false)],
            privileges: vec![],
            parts: vec![],
        },
    );
    let eve = user("eve", &["analysts"]);
    facts.insert(
        principal(PrincipalKind::User, "eve"),
        PrincipalFacts::default(),
    );
    let d = decide_with(
        &eve,
        Operation::ReadTables(vec![t("customer")]),
        &[],
        &facts,
    );
    assert!(d.allow);
    assert_eq!(
        d.matched,
        "role:finance SELECT on table demo_database.customer"
    );
    // Without the group, nothing.
    let eve_alone = user("eve", &[]);
    assert!(
        !decide_with(
            &eve_alone,
            Operation::ReadTables(vec![t("customer")]),
            &[],
            &facts
        )
        .allow
    );
    // A missing principal is reported so the gatherer can fetch it.
    let mut partial = facts.clone();
    partial.remove(&role("team"));
    assert_eq!(assemble(&eve, &partial), Err(role("team")));
    // Role cycles terminate.
    facts
        .get_mut(&role("finance"))
        .unwrap()
        .roles
        .push(("team".into(), false));
    assert!(assemble(&eve, &facts).unwrap().roles.contains("team"));
}

#[test]
fn role_and_grant_administration() {
    let mary = user("mary", &[]);
    let root = user("root", &[]);
    let grant_role = Operation::GrantRole {
        role: "finance".into(),
    };
    assert!(
        !decide(&mary, grant_role.clone(), &[]).allow,
        "no self-service roles"
    );
    assert!(decide(&root, grant_role.clone(), &[]).allow);
    let mut facts = seed();
    facts
        .get_mut(&principal(PrincipalKind::User, "mary"))
        .unwrap()
        .roles
        .push(("finance".into(), true));
    let d = decide_with(&mary, grant_role, &[], &facts);
    assert_eq!((d.allow, d.reason), (true, Reason::AdminOption));
    // Privileges: grant option required, holding the privilege is not enough.
    let grant = Operation::GrantPrivileges(vec![(t("promotion"), Privilege::Select)]);
    assert!(!decide(&mary, grant.clone(), &[]).allow);
    assert!(decide(&root, grant.clone(), &[]).allow);
    let mut facts = seed();
    facts.get_mut(&role("marketing")).unwrap().privileges.push((
        t("promotion"),
        Privilege::Select,
        true,
    ));
    assert!(decide_with(&mary, grant, &[], &facts).allow);
    let both = Operation::GrantPrivileges(vec![
        (t("promotion"), Privilege::Select),
        (t("customer"), Privilege::Select),
    ]);
    assert!(!decide_with(&mary, both, &[], &facts).allow);
    // Role DDL is admin only.
    assert!(!decide(&mary, Operation::AdminOnly("creating a role"), &[]).allow);
    // Reading grants: one's own, or admin.
    let own = Operation::ReadGrants {
        principal: Some(principal(PrincipalKind::User, "mary")),
        groups: Vec::new(),
    };
    assert_eq!(decide(&mary, own, &[]).reason, Reason::OwnGrants);
    let own_role = Operation::ReadGrants {
        principal: Some(role("marketing")),
        groups: Vec::new(),
    };
    assert!(decide(&mary, own_role, &[]).allow);
    let other = Operation::ReadGrants {
        principal: Some(principal(PrincipalKind::User, "john")),
        groups: Vec::new(),
    };
    assert!(!decide(&mary, other.clone(), &[]).allow);
    assert!(decide(&root, other, &[]).allow);
    // get_privilege_set names groups too: each must be one hms-guard knows for the caller.
    let with_groups = |g: &[&str]| Operation::ReadGrants {
        principal: Some(principal(PrincipalKind::User, "mary")),
        groups: g.iter().map(|s| s.to_string()).collect(),
    };
    let analyst = user("mary", &["analysts"]);
    let mut with_group = seed();
    with_group.insert(
        principal(PrincipalKind::Group, "analysts"),
        PrincipalFacts {
            roles: vec![],
            privileges: vec![],
            parts: vec![],
        },
    );
    assert!(decide_with(&analyst, with_groups(&["analysts"]), &[], &with_group).allow);
    let d = decide_with(
        &analyst,
        with_groups(&["analysts", "finance"]),
        &[],
        &with_group,
    );
    assert!(!d.allow);
    assert!(d.matched.contains("group finance"), "{}", d.matched);
    assert!(decide(&root, with_groups(&["finance"]), &[]).allow);
}

#[test]
fn listings_are_filtered_per_table() {
    let policy = Policy::default();
    let facts = seed();
    let nobody = user("nobody", &[]);
    let g = grants_of(&nobody, &facts);
    for n in ["customer", "store_sales", "promotion"] {
        assert!(!visible(&nobody, &g, &policy, &t(n)));
    }
    let mary = user("mary", &[]);
    let g = grants_of(&mary, &facts);
    assert!(visible(&mary, &g, &policy, &t("customer")));
    assert!(!visible(&mary, &g, &policy, &t("other")));
    // Whole tables need SELECT: mary holds SELECT on customer; a writer holding only INSERT
    // sees the name, not the table.
    assert!(readable(&mary, &g, &policy, &t("customer")));
    let mut only_insert = facts.clone();
    only_insert.insert(
        principal(PrincipalKind::User, "writer"),
        PrincipalFacts {
            roles: vec![],
            privileges: vec![(t("customer"), Privilege::Insert, false)],
            parts: vec![],
        },
    );
    let writer = user("writer", &[]);
    let gw = grants_of(&writer, &only_insert);
    assert!(visible(&writer, &gw, &policy, &t("customer")));
    assert!(!readable(&writer, &gw, &policy, &t("customer")));
    let root = user("root", &[]);
    assert!(visible(
        &root,
        &grants_of(&root, &facts),
        &policy,
        &t("other")
    ));
    let d = decide(
        &mary,
        Operation::ListTables {
            db: "demo_database".into(),
        },
        &[],
    );
    assert_eq!((d.allow, d.reason), (true, Reason::Filtered));
}

#[test]
fn anonymous_tokens_unknown_and_missing_facts() {
    let anon = Identity::anonymous();
    let f = Facts::default();
    let p = Policy::default();
    let d = authorize(&anon, &Operation::ReadTables(vec![t("customer")]), &f, &p);
    assert_eq!((d.allow, d.reason), (false, Reason::Anonymous));
    assert!(authorize(&anon, &Operation::Harmless, &f, &p).allow);
    let mary = user("mary", &[]);
    let d = authorize(&mary, &Operation::ReadTables(vec![t("customer")]), &f, &p);
    assert_eq!(
        (d.allow, d.reason),
        (false, Reason::FactsUnavailable),
        "fail closed"
    );
    let d = authorize(&mary, &Operation::Unknown("frobnicate".into()), &f, &p);
    assert_eq!((d.allow, d.reason), (false, Reason::UnknownMethod));
    let allow_unknown = Policy {
        allow_unknown_methods: true,
        ..Policy::default()
    };
    assert!(
        authorize(
            &mary,
            &Operation::Unknown("frobnicate".into()),
            &f,
            &allow_unknown
        )
        .allow
    );
    let root = user("root", &[]);
    let facts = seed();
    let g = grants_of(&root, &facts);
    let fr = Facts {
        grants: Some(&g),
        owners: HashMap::new(),
        storage: Vec::new(),
        holders: Default::default(),
        recorded: Default::default(),
        ..Default::default()
    };
    let d = authorize(&root, &Operation::Tokens, &fr, &p);
    assert_eq!(
        (d.allow, d.reason),
        (false, Reason::TokensDisabled),
        "tokens off even for admin"
    );
    let tokens_on = Policy {
        allow_tokens: true,
        ..Policy::default()
    };
    assert!(authorize(&root, &Operation::Tokens, &fr, &tokens_on).allow);
    // admin_users bootstrap.
    let boot = Policy {
        admin_users: vec!["mary".into()],
        ..Policy::default()
    };
    let gm = grants_of(&mary, &facts);
    let fm = Facts {
        grants: Some(&gm),
        owners: HashMap::new(),
        storage: Vec::new(),
        holders: Default::default(),
        recorded: Default::default(),
        ..Default::default()
    };
    assert!(authorize(&mary, &Operation::AdminOnly("x"), &fm, &boot).allow);
}

#[test]
fn owner_may_be_a_role_or_group() {
    let mary = user("mary", &["staff"]);
    let mut facts = seed();
    facts.insert(
        principal(PrincipalKind::Group, "staff"),
        PrincipalFacts::default(),
    );
    let g = grants_of(&mary, &facts);
    let read = Operation::ReadTables(vec![t("x")]);
    for (kind, name, ok) in [
        (PrincipalKind::Role, "marketing", true),
        (PrincipalKind::Role, "finance", false),
        (PrincipalKind::Group, "staff", true),
        (PrincipalKind::Group, "other", false),
        (PrincipalKind::User, "mary", true),
    ] {
        let mut f = Facts {
            grants: Some(&g),
            owners: HashMap::new(),
            storage: Vec::new(),
            holders: Default::default(),
            recorded: Default::default(),
            ..Default::default()
        };
        f.owners.insert(
            t("x"),
            Owner {
                name: name.into(),
                kind,
            },
        );
        assert_eq!(
            authorize(&mary, &read, &f, &Policy::default()).allow,
            ok,
            "{kind:?} {name}"
        );
    }
}

#[test]
fn storage_facts_deny_after_grants_allow() {
    let admin = user("root", &[]);
    let p = Policy {
        admin_users: vec!["root".into()],
        ..Policy::default()
    };
    let g = Grants::default();
    let op = Operation::CreateTable { table: t("x") };
    let fact = |allow: bool, unavailable: bool| StorageFact {
        location: "s3a://datalake/datawarehouse/y".into(),
        action: "read",
        allow,
        unavailable,
        reason: "role arn:aws:iam::123:role/default may not read".into(),
    };
    let mut f = Facts {
        grants: Some(&g),
        owners: HashMap::new(),
        storage: vec![fact(true, false)],
        holders: Default::default(),
        recorded: Default::default(),
        ..Default::default()
    };
    assert!(
        authorize(&admin, &op, &f, &p).allow,
        "grants and storage allow"
    );
    f.storage.push(fact(false, false));
    let d = authorize(&admin, &op, &f, &p);
    assert!(!d.allow);
    assert_eq!(d.reason, Reason::StorageDenied);
    assert!(d
        .required
        .contains("read access to s3a://datalake/datawarehouse/y"));
    assert!(d.matched.contains("may not read"));
    f.storage = vec![fact(false, true)];
    assert_eq!(
        authorize(&admin, &op, &f, &p).reason,
        Reason::StorageUnavailable
    );
    // Grants deny first: the storage facts do not turn a denial into anything else.
    let nobody = user("nobody", &[]);
    f.storage = vec![fact(true, false)];
    let d = authorize(&nobody, &op, &f, &p);
    assert!(!d.allow && d.reason == Reason::MissingPrivilege);
}

// Long: every lock type and level, and every transaction case, read best side by side.
#[test]
fn locks_fit_their_type_and_transactions_need_an_identity() {
    let lock = |who: &str, items: Vec<(Object, LockKind)>| Operation::Lock {
        claimed_user: who.into(),
        items,
        held: Vec::new(),
    };
    let mary = user("mary", &[]);
    // mary: SELECT on customer, SELECT and INSERT on promotion.
    assert!(
        decide(
            &mary,
            lock("mary", vec![(t("customer"), LockKind::Read)]),
            &[]
        )
        .allow
    );
    let d = decide(
        &mary,
        lock("mary", vec![(t("customer"), LockKind::Write)]),
        &[],
    );
    assert!(!d.allow);
    assert!(d.required.contains("INSERT"), "{}", d.required);
    assert!(
        decide(
            &mary,
            lock("mary", vec![(t("promotion"), LockKind::Write)]),
            &[]
        )
        .allow
    );
    assert!(
        !decide(
            &mary,
            lock("mary", vec![(t("secret"), LockKind::Read)]),
            &[]
        )
        .allow
    );
    // Every component must pass.
    let both = vec![
        (t("promotion"), LockKind::Write),
        (t("customer"), LockKind::Write),
    ];
    assert!(!decide(&mary, lock("mary", both), &[]).allow);
    // Database locks: shared for anyone identified, exclusive for the owner.
    assert!(decide(&mary, lock("mary", vec![(db(), LockKind::Read)]), &[]).allow);
    assert!(!decide(&mary, lock("mary", vec![(db(), LockKind::Write)]), &[]).allow);
    assert!(
        decide(
            &mary,
            lock("mary", vec![(db(), LockKind::Write)]),
            &[(db(), "mary")]
        )
        .allow
    );
    // A lock or a transaction naming another user is not denied: the policy stage sets the
    // user to the caller before forwarding (tests/e2e/test_transactions.py).
    assert!(
        decide(
            &mary,
            lock("john", vec![(t("customer"), LockKind::Read)]),
            &[]
        )
        .allow
    );
    let open = |u: Option<&str>| Operation::Txn {
        claimed_user: u.map(str::to_string),
        held: Vec::new(),
    };
    assert!(decide(&mary, open(Some("mary")), &[]).allow);
    assert!(decide(&mary, open(Some("admin")), &[]).allow);
    assert!(decide(&mary, open(None), &[]).allow);
    // No identity: denied.
    let anon = Identity::anonymous();
    let f = Facts {
        grants: None,
        owners: Default::default(),
        storage: Vec::new(),
        holders: Default::default(),
        recorded: Default::default(),
        ..Default::default()
    };
    let d = authorize(&anon, &open(None), &f, &Policy::default());
    assert_eq!((d.allow, d.reason), (false, Reason::Anonymous));
}

#[test]
fn ownership_through_public_is_nobodys() {
    let mary = user("mary", &[]);
    let g = grants_of(&mary, &seed());
    let default_db = Object::database("default");
    let f = Facts {
        grants: Some(&g),
        owners: [(
            default_db.clone(),
            Owner {
                name: "public".into(),
                kind: PrincipalKind::Role,
            },
        )]
        .into_iter()
        .collect(),
        storage: Vec::new(),
        holders: Default::default(),
        recorded: Default::default(),
        ..Default::default()
    };
    for op in [
        Operation::DropDatabase {
            db: default_db.clone(),
        },
        Operation::AlterDatabase {
            db: default_db.clone(),
            owner_change: false,
        },
    ] {
        let d = authorize(&mary, &op, &f, &Policy::default());
        assert!(!d.allow, "{op:?}: {}", d.matched);
    }
}

#[test]
fn transactions_and_locks_are_their_holders_alone() {
    let g = |id: &Identity| grants_of(id, &seed());
    let holders: HashMap<TxnRef, Holder> = [
        (TxnRef::Txn(1), Holder::User("mary".into())),
        (TxnRef::Txn(2), Holder::User("john".into())),
        (TxnRef::Txn(3), Holder::Finished),
        (TxnRef::Txn(9), Holder::Absent),
        (TxnRef::Lock(5), Holder::User("mary".into())),
        (TxnRef::Lock(6), Holder::User("john".into())),
        (TxnRef::Lock(7), Holder::Absent),
    ]
    .into_iter()
    .collect();
    let run = |who: &Identity, held: Vec<TxnRef>, holders: &HashMap<TxnRef, Holder>| {
        let grants = g(who);
        let f = Facts {
            grants: Some(&grants),
            holders: holders.clone(),
            ..Facts::default()
        };
        let op = Operation::Txn {
            claimed_user: None,
            held,
        };
        authorize(who, &op, &f, &Policy::default())
    };
    let mary = user("mary", &[]);
    for ok in [
        vec![TxnRef::Txn(1)],
        vec![TxnRef::Lock(5)],
        vec![TxnRef::Txn(1), TxnRef::Lock(5)],
        // A finished transaction: the metastore answers it itself.
        vec![TxnRef::Txn(3)],
    ] {
        assert!(run(&mary, ok.clone(), &holders).allow, "{ok:?}");
    }
    for (bad, why) in [
        (
            vec![TxnRef::Txn(2)],
            "transaction 2 belongs to another user",
        ),
        (
            vec![TxnRef::Txn(1), TxnRef::Lock(6)],
            "lock 6 belongs to another user",
        ),
        (vec![TxnRef::Txn(9)], "transaction 9 does not exist"),
        (vec![TxnRef::Lock(7)], "lock 7 is not held"),
        (vec![TxnRef::Txn(4)], "who holds transaction 4 is not known"),
    ] {
        let d = run(&mary, bad.clone(), &holders);
        assert_eq!((d.allow, d.reason), (false, Reason::NotHolder), "{bad:?}");
        assert!(d.matched.contains(why), "{bad:?}: {}", d.matched);
        assert!(d.required.contains("opened by user mary"), "{}", d.required);
    }
    // The admin acts on anyone's.
    let root = user("root", &[]);
    assert!(run(&root, vec![TxnRef::Txn(2), TxnRef::Lock(6)], &holders).allow);
    // A lock inside another user's transaction.
    let grants = g(&mary);
    let f = Facts {
        grants: Some(&grants),
        holders: holders.clone(),
        ..Facts::default()
    };
    let op = |txn| Operation::Lock {
        claimed_user: "mary".into(),
        items: vec![(t("customer"), LockKind::Read)],
        held: vec![TxnRef::Txn(txn)],
    };
    assert!(authorize(&mary, &op(1), &f, &Policy::default()).allow);
    let d = authorize(&mary, &op(2), &f, &Policy::default());
    assert_eq!((d.allow, d.reason), (false, Reason::NotHolder));
}

#[test]
fn databases_are_visible_to_those_with_a_privilege_in_them() {
    let policy = Policy::default();
    let facts = seed();
    let mary = user("mary", &[]);
    let g = grants_of(&mary, &facts);
    // mary's role holds privileges on tables of the seed database.
    let Object::Table(seed_db, _) = t("customer") else {
        unreachable!()
    };
    assert!(database_visible(&mary, &g, &policy, &seed_db));
    assert!(database_visible(&mary, &g, &policy, "default"));
    assert!(!database_visible(&mary, &g, &policy, "hr"));
    let nobody = user("nobody", &[]);
    let gn = grants_of(&nobody, &facts);
    assert!(!database_visible(&nobody, &gn, &policy, &seed_db));
    let read = |db: &str| Operation::ReadDatabase {
        db: Object::database(db),
    };
    assert!(decide(&mary, read(&seed_db), &[]).allow);
    let d = decide(&mary, read("hr"), &[]);
    assert_eq!((d.allow, d.reason), (false, Reason::MissingPrivilege));
    assert!(d.required.contains("database hr"), "{}", d.required);
    // Its owner and the admin see it.
    assert!(decide(&mary, read("hr"), &[(Object::database("hr"), "mary")]).allow);
    assert!(decide(&user("root", &[]), read("hr"), &[]).allow);
    assert!(decide(&nobody, read("default"), &[]).allow);
}

#[test]
fn role_and_principal_names_compare_exactly() {
    // A role `ADMIN` is another role at the metastore: holding it makes nobody admin.
    let mut facts = seed();
    facts.insert(role("ADMIN"), PrincipalFacts::default());
    facts.insert(
        principal(PrincipalKind::User, "eve"),
        PrincipalFacts {
            roles: vec![("ADMIN".into(), true)],
            privileges: vec![],
            parts: vec![],
        },
    );
    let eve = user("eve", &[]);
    let g = grants_of(&eve, &facts);
    let policy = Policy::default();
    assert!(!policy.is_admin(&eve, &g), "role ADMIN is not role admin");
    assert!(g.roles.contains("ADMIN"), "the role keeps its spelling");
    let d = decide_with(
        &eve,
        Operation::CreateDatabase {
            db: Object::database("x"),
        },
        &[],
        &facts,
    );
    assert!(!d.allow, "{d:?}");
    // WITH ADMIN OPTION on `ADMIN` does not extend to `admin`.
    let grant = |r: &str| Operation::GrantRole { role: r.into() };
    assert!(!decide_with(&eve, grant("admin"), &[], &facts).allow);
    assert!(decide_with(&eve, grant("ADMIN"), &[], &facts).allow);
    // The admin role itself still makes its holders admin.
    let root = user("root", &[]);
    assert!(policy.is_admin(&root, &grants_of(&root, &seed())));
    // admin_users compare exactly: `root ` and `Root` are other users.
    let p = Policy {
        admin_users: vec!["boss".into()],
        ..Policy::default()
    };
    let none = Grants::default();
    assert!(p.is_admin(&user("boss", &[]), &none));
    for other in ["boss ", "Boss", " boss", "boss\u{a0}"] {
        assert!(!p.is_admin(&user(other, &[]), &none), "{other:?}");
    }
    // Owners compare exactly: a table owned by `mary` is not `mary `'s nor `Mary`'s.
    for (who, ok) in [("mary", true), ("mary ", false), ("Mary", false)] {
        let id = user(who, &[]);
        let d = decide_with(
            &id,
            Operation::DropTable { table: t("x") },
            &[(t("x"), "mary")],
            &seed_with(who),
        );
        assert_eq!(d.allow, ok, "{who:?}: {d:?}");
    }
    // A table owned by role `MARKETING` is not owned by the holders of `marketing`.
    let mary = user("mary", &[]);
    let g = grants_of(&mary, &seed());
    let mut f = Facts {
        grants: Some(&g),
        ..Facts::default()
    };
    f.owners.insert(
        t("x"),
        Owner {
            name: "MARKETING".into(),
            kind: PrincipalKind::Role,
        },
    );
    let read = Operation::ReadTables(vec![t("x")]);
    assert!(!authorize(&mary, &read, &f, &Policy::default()).allow);
}

/// The seed, with `who` known as a user holding nothing.
fn seed_with(who: &str) -> HashMap<Principal, PrincipalFacts> {
    let mut facts = seed();
    facts
        .entry(principal(PrincipalKind::User, who))
        .or_default();
    facts
}

/// A revoke of `p` from `to` on table demo_database.`table`, as a grant call names it.
fn revoke_of(to: Principal, table: &str, p: Privilege) -> RevokeItem {
    RevokeItem {
        principal: to,
        target: GrantTarget {
            kind: 3,
            db: Some("demo_database".into()),
            name: Some(table.into()),
            part_values: None,
            column: None,
        },
        privilege: p,
    }
}

fn recorded(privilege: &str, grantor: &str, kind: PrincipalKind) -> RecordedGrant {
    RecordedGrant {
        privilege: privilege.into(),
        grantor: Some(grantor.into()),
        grantor_kind: Some(kind),
    }
}

/// Decides a revoke with the grants the metastore records for each item's principal and object.
fn decide_revoke(
    id: &Identity,
    items: Vec<RevokeItem>,
    records: &[(&RevokeItem, Vec<RecordedGrant>)],
) -> Verdict {
    let g = grants_of(id, &seed());
    let f = Facts {
        grants: Some(&g),
        recorded: records
            .iter()
            .map(|(it, r)| ((it.principal.clone(), it.target.clone()), r.clone()))
            .collect(),
        ..Facts::default()
    };
    authorize(
        id,
        &Operation::RevokePrivileges(items),
        &f,
        &Policy::default(),
    )
}

#[test]
fn a_revoke_is_the_recorded_grantors_or_the_admins() {
    use PrincipalKind::{Role, User};
    let mary = user("mary", &[]);
    let root = user("root", &[]);
    let item = revoke_of(principal(User, "john"), "promotion", Privilege::Select);
    // The admin granted it: mary (even WITH GRANT OPTION) may not take it away.
    let by_admin = vec![recorded("SELECT", "admin", User)];
    let d = decide_revoke(&mary, vec![item.clone()], &[(&item, by_admin.clone())]);
    assert_eq!((d.allow, d.reason), (false, Reason::NotGrantor), "{d:?}");
    assert!(d.matched.contains("granted by user admin"), "{}", d.matched);
    assert!(d
        .required
        .contains("SELECT on table demo_database.promotion granted to user:john by user mary"));
    // ... the admin may.
    let d = decide_revoke(&root, vec![item.clone()], &[(&item, by_admin)]);
    assert_eq!((d.allow, d.reason), (true, Reason::Admin));
    // Mary granted it: she may revoke it (privilege names compared as the metastore stores them,
    // one per record, case aside).
    let by_mary = vec![recorded("select", "mary", User)];
    let d = decide_revoke(&mary, vec![item.clone()], &[(&item, by_mary)]);
    assert_eq!((d.allow, d.reason), (true, Reason::Grantor), "{d:?}");
    // A grantor named mary but of another principal type (a role mary) is not the user mary.
    let by_role = vec![recorded("SELECT", "mary", Role)];
    let d = decide_revoke(&mary, vec![item.clone()], &[(&item, by_role)]);
    assert_eq!(d.reason, Reason::NotGrantor);
    // The metastore's revoke takes every matching record whoever granted it: one of another
    // grantor refuses the whole call; one of another privilege does not matter.
    let mixed = vec![
        recorded("SELECT", "mary", User),
        recorded("SELECT", "admin", User),
    ];
    assert!(!decide_revoke(&mary, vec![item.clone()], &[(&item, mixed)]).allow);
    let other_privilege = vec![
        recorded("SELECT", "mary", User),
        recorded("INSERT", "admin", User),
    ];
    assert!(decide_revoke(&mary, vec![item.clone()], &[(&item, other_privilege)]).allow);
    // Nothing recorded: nothing of the user's to revoke.
    let d = decide_revoke(&mary, vec![item.clone()], &[(&item, vec![])]);
    assert_eq!((d.allow, d.reason), (false, Reason::MissingPrivilege));
    // Not read: denied, never assumed.
    let d = decide_revoke(&mary, vec![item.clone()], &[]);
    assert_eq!((d.allow, d.reason), (false, Reason::FactsUnavailable));
    // Every item must be the user's: the second, granted by the admin, refuses the call.
    let second = revoke_of(principal(User, "john"), "customer", Privilege::Select);
    let d = decide_revoke(
        &mary,
        vec![item.clone(), second.clone()],
        &[
            (&item, vec![recorded("SELECT", "mary", User)]),
            (&second, vec![recorded("SELECT", "admin", User)]),
        ],
    );
    assert_eq!(d.reason, Reason::NotGrantor);
    // A grant with no grantor recorded is nobody's to revoke but the admin's.
    let none = vec![RecordedGrant {
        privilege: "SELECT".into(),
        grantor: None,
        grantor_kind: None,
    }];
    assert!(!decide_revoke(&mary, vec![item.clone()], &[(&item, none)]).allow);
    // A revoke naming nothing is refused.
    assert!(!decide_revoke(&mary, vec![], &[]).allow);
}

#[test]
fn grant_targets_name_what_they_are() {
    let mut t = GrantTarget {
        kind: 5,
        db: Some("d".into()),
        name: Some("t".into()),
        part_values: None,
        column: Some("c".into()),
    };
    assert_eq!(t.to_string(), "column c of table d.t");
    t.part_values = Some(vec!["2024".into(), "01".into()]);
    assert_eq!(
        t.to_string(),
        "column c of partition [2024/01] of table d.t"
    );
    t.kind = 2;
    assert_eq!(t.to_string(), "database d");
}

#[test]
fn a_created_tables_grants_are_the_creators_own() {
    use PrincipalKind::{Role, User};
    let mary = user("mary", &[]);
    let root = user("root", &[]);
    let carried = |to: Principal, grantor: &str, kind: PrincipalKind| Operation::CarriedGrants {
        table: t("new"),
        grants: vec![(to, recorded("SELECT", grantor, kind))],
    };
    // Hive's automatic owner grants: to the creator, by the creator.
    let own = carried(principal(User, "mary"), "mary", User);
    assert_eq!(decide(&mary, own, &[]).reason, Reason::OwnGrants);
    // To someone else: a grant without the grant option.
    let d = decide(&mary, carried(principal(User, "john"), "mary", User), &[]);
    assert_eq!((d.allow, d.reason), (false, Reason::MissingPrivilege));
    assert!(d.matched.contains("user:john"), "{}", d.matched);
    assert!(!decide(&mary, carried(role("sales"), "mary", User), &[]).allow);
    // In someone else's name (or a role's): refused.
    let d = decide(&mary, carried(principal(User, "mary"), "admin", User), &[]);
    assert_eq!((d.allow, d.reason), (false, Reason::NotGrantor));
    assert!(!decide(&mary, carried(principal(User, "mary"), "mary", Role), &[]).allow);
    // The admin's choice stands.
    let d = decide(&root, carried(principal(User, "john"), "admin", User), &[]);
    assert_eq!((d.allow, d.reason), (true, Reason::Admin));
}

#[test]
fn a_location_another_table_claims_needs_its_privileges() {
    // mary (marketing): SELECT on customer, no DROP anywhere; owns nothing.
    let mary = user("mary", &[]);
    let g = grants_of(&mary, &seed());
    let op = Operation::CreateTable { table: t("mine") };
    let over = |table: &str, writes: bool, owner: &str| OverlapFact {
        location: "s3a://lake/shared/x".into(),
        relation: "at",
        table: t(table),
        what: format!("table demo_database.{table}"),
        other_location: "s3a://lake/shared/x/".into(),
        owner: Some(Owner {
            name: owner.into(),
            kind: PrincipalKind::User,
        }),
        writes,
    };
    let p = Policy::default();
    let facts = |o: Vec<OverlapFact>| Facts {
        grants: Some(&g),
        overlaps: o,
        ..Default::default()
    };
    // Database CREATE is needed first: mary owns nothing, so give her the database.
    let mut owners = HashMap::new();
    owners.insert(
        db(),
        Owner {
            name: "mary".into(),
            kind: PrincipalKind::User,
        },
    );
    let with = |o: Vec<OverlapFact>| {
        let mut f = facts(o);
        f.owners = owners.clone();
        authorize(&mary, &op, &f, &p)
    };
    assert!(with(vec![]).allow, "no overlap: the database owner creates");
    // Read-only over a table she may SELECT: allowed.
    assert!(with(vec![over("customer", false, "admin")]).allow);
    // Read-only over one she may not: denied, naming the other table and the reason.
    let d = with(vec![over("store_sales_secret", false, "admin")]);
    assert!(!d.allow);
    assert_eq!(d.reason, Reason::Overlap);
    assert_eq!(d.reason.as_str(), "overlap");
    assert!(d
        .required
        .contains("SELECT on table demo_database.store_sales_secret"));
    assert!(
        d.matched.contains("the same place as s3a://lake/shared/x"),
        "{}",
        d.matched
    );
    // Writing over a table she may only SELECT: ownership or DROP needed.
    let d = with(vec![over("customer", true, "admin")]);
    assert!(
        !d.allow
            && d.required
                .contains("ownership of table demo_database.customer or DROP")
    );
    // Her own table: ownership suffices either way.
    assert!(with(vec![over("other", true, "mary")]).allow);
    // More overlaps than reported, or an index that cannot answer: denied.
    let mut f = facts(vec![]);
    f.owners = owners.clone();
    f.overlaps_truncated = true;
    assert_eq!(authorize(&mary, &op, &f, &p).reason, Reason::Overlap);
    f.overlaps_truncated = false;
    f.index_unavailable = Some("the location index is still being built".into());
    let d = authorize(&mary, &op, &f, &p);
    assert!(!d.allow && d.reason == Reason::IndexUnavailable);
    assert!(d.matched.contains("still being built"));
    // An admin holds every privilege.
    let root = user("root", &[]);
    let rg = grants_of(&root, &seed());
    let f = Facts {
        grants: Some(&rg),
        overlaps: vec![over("store_sales_secret", true, "admin")],
        index_unavailable: None,
        ..Default::default()
    };
    let admin = Policy {
        admin_users: vec!["root".into()],
        ..Policy::default()
    };
    assert!(authorize(&root, &op, &f, &admin).allow);
}

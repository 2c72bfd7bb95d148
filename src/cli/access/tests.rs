use super::*;

fn role(n: &str) -> Principal {
    Principal {
        kind: PrincipalKind::Role,
        name: n.into(),
    }
}

fn user(n: &str) -> Principal {
    Principal {
        kind: PrincipalKind::User,
        name: n.into(),
    }
}

fn group(n: &str) -> Principal {
    Principal {
        kind: PrincipalKind::Group,
        name: n.into(),
    }
}

fn members(rows: &[(&str, Vec<Principal>)]) -> Members {
    rows.iter()
        .map(|(r, m)| (r.to_string(), m.clone()))
        .collect()
}

fn chains(v: &[Vec<Principal>]) -> Vec<String> {
    v.iter()
        .map(|c| {
            c.iter()
                .map(Principal::to_string)
                .collect::<Vec<_>>()
                .join(" <- ")
        })
        .collect()
}

#[test]
fn reach_follows_roles_of_roles_with_each_chain() {
    let m = members(&[
        ("finance", vec![role("analysts"), user("zoe")]),
        ("analysts", vec![user("john"), group("staff")]),
    ]);
    let got = reach(&role("finance"), &m, MAX_DEPTH).unwrap();
    assert_eq!(
        chains(&got),
        [
            "role:finance",
            "role:finance <- user:zoe",
            "role:finance <- role:analysts",
            "role:finance <- role:analysts <- user:john",
            "role:finance <- role:analysts <- group:staff",
        ]
    );
}

#[test]
fn reach_ends_cycles_and_keeps_the_shortest_chain() {
    // r1 granted to r2, r2 granted to r1 (a cycle), and u reached both directly and through r2.
    let m = members(&[
        ("r1", vec![role("r2"), user("u")]),
        ("r2", vec![role("r1"), user("u"), user("v")]),
    ]);
    let got = chains(&reach(&role("r1"), &m, MAX_DEPTH).unwrap());
    assert_eq!(
        got,
        [
            "role:r1",
            "role:r1 <- user:u",
            "role:r1 <- role:r2",
            "role:r1 <- role:r2 <- user:v",
        ]
    );
}

#[test]
fn reach_refuses_chains_deeper_than_the_bound() {
    // r0 <- r1 <- … <- r5 <- user deep.
    let mut rows: Vec<(String, Vec<Principal>)> = (0..5)
        .map(|i| (format!("r{i}"), vec![role(&format!("r{}", i + 1))]))
        .collect();
    rows.push(("r5".into(), vec![user("deep")]));
    let m: Members = rows.into_iter().collect();
    assert_eq!(reach(&role("r0"), &m, 6).unwrap().len(), 7);
    let e = reach(&role("r0"), &m, 5).unwrap_err();
    assert!(
        e.contains("user deep") && e.contains("more than 5 roles"),
        "{e}"
    );
    // A depth that passes the bound only through a cycle is no error.
    let cyclic = members(&[("a", vec![role("b")]), ("b", vec![role("a")])]);
    assert_eq!(reach(&role("a"), &cyclic, 1).unwrap().len(), 2);
}

#[test]
fn reach_does_not_expand_public_users_or_groups_and_fails_on_unread_roles() {
    let m = members(&[("public", vec![user("listed")])]);
    assert_eq!(reach(&role("public"), &m, MAX_DEPTH).unwrap().len(), 1);
    assert_eq!(
        chains(&reach(&user("u"), &Members::new(), MAX_DEPTH).unwrap()),
        ["user:u"]
    );
    assert_eq!(
        chains(&reach(&group("g"), &Members::new(), MAX_DEPTH).unwrap()),
        ["group:g"]
    );
    let e = reach(&role("unread"), &Members::new(), MAX_DEPTH).unwrap_err();
    assert!(e.contains("role unread were not read"), "{e}");
}

fn raw(p: Principal, privilege: Privilege, kind: i64, column: Option<&str>, go: bool) -> RawGrant {
    RawGrant {
        principal: p,
        privilege,
        grant_option: go,
        target: GrantTarget {
            kind,
            db: (kind != meta::GLOBAL).then(|| "demo".to_string()),
            name: (kind >= meta::TABLE).then(|| "customer".to_string()),
            part_values: (kind == meta::PARTITION).then(|| vec!["eu".to_string()]),
            column: column.map(str::to_string),
        },
    }
}

fn facts() -> TableFacts {
    TableFacts {
        db: "demo".into(),
        table: "customer".into(),
        owner: Some(Owner {
            name: "owners".into(),
            kind: PrincipalKind::Role,
        }),
        db_owner: Some(Owner {
            name: "public".into(),
            kind: PrincipalKind::Role,
        }),
        grants: vec![
            raw(role("finance"), Privilege::Select, meta::TABLE, None, true),
            raw(group("staff"), Privilege::Insert, meta::TABLE, None, false),
            raw(
                user("cole"),
                Privilege::Select,
                meta::COLUMN,
                Some("name"),
                false,
            ),
            raw(
                user("cole"),
                Privilege::Update,
                meta::COLUMN,
                Some("ssn"),
                false,
            ),
            raw(user("pia"), Privilege::Select, meta::PARTITION, None, false),
            raw(user("dan"), Privilege::Create, meta::DATABASE, None, false),
            raw(user("dan"), Privilege::Select, meta::DATABASE, None, false),
            raw(user("gil"), Privilege::All, meta::GLOBAL, None, false),
            raw(
                role("public"),
                Privilege::Select,
                meta::COLUMN,
                Some("id"),
                false,
            ),
        ],
        views: vec![ViewPart {
            view: "demo.names".into(),
            gives: "part of the table through the view: columns id, name of every partition".into(),
            grants: vec![raw(
                user("vic"),
                Privilege::Select,
                meta::TABLE,
                None,
                false,
            )],
        }],
        admin_role: "admin".into(),
        admin_users: vec!["root".into()],
        members: members(&[
            ("admin", vec![role("ops")]),
            ("ops", vec![user("ada")]),
            ("owners", vec![user("olga")]),
            ("finance", vec![role("analysts")]),
            ("analysts", vec![user("john")]),
            ("public", vec![]),
        ]),
        notes: vec![],
    }
}

fn row(h: &Holding) -> String {
    format!(
        "{} {} {} [{}] {}{}",
        h.principal,
        h.privilege,
        h.how.as_str(),
        h.on,
        chain_text(&h.chain),
        if h.grant_option { " +grant" } else { "" }
    )
}

#[test]
fn table_holders_lists_grants_owners_admins_and_parts_in_a_stable_order() {
    let review = table_holders(&facts()).unwrap();
    let rows: Vec<String> = review.holders.iter().map(row).collect();
    assert_eq!(
        rows,
        [
            "user:ada ALL admin [table demo.customer] role:admin <- role:ops <- user:ada",
            "user:cole SELECT partial [column name of table demo.customer] direct",
            "user:cole UPDATE partial [column ssn of table demo.customer] direct",
            "user:dan SELECT database [database demo] direct",
            "user:dan CREATE database [database demo] direct",
            "user:gil ALL not_counted [the metastore] direct",
            "user:john SELECT grant [table demo.customer] role:finance <- role:analysts <- user:john +grant",
            "user:olga ALL owner [table demo.customer] role:owners <- user:olga",
            "user:pia SELECT partial [partition [eu] of table demo.customer] direct",
            "user:root ALL admin [table demo.customer] direct",
            "user:vic SELECT partial [view demo.names] direct",
            "group:staff INSERT grant [table demo.customer] direct",
            "role:admin ALL admin [table demo.customer] direct",
            "role:analysts SELECT grant [table demo.customer] role:finance <- role:analysts +grant",
            "role:finance SELECT grant [table demo.customer] direct +grant",
            "role:ops ALL admin [table demo.customer] role:admin <- role:ops",
            "role:owners ALL owner [table demo.customer] direct",
            "role:public SELECT partial [column id of table demo.customer] direct",
        ]
    );
    let gives = |name: &str, p: &str| {
        review
            .holders
            .iter()
            .find(|h| h.principal.name == name && h.privilege == p)
            .unwrap()
            .gives
            .clone()
    };
    assert!(gives("cole", "SELECT").contains("narrowed"));
    assert!(gives("cole", "UPDATE").starts_with("nothing"));
    assert!(gives("dan", "CREATE").starts_with("creating tables"));
    assert!(gives("dan", "SELECT").starts_with("shows database demo"));
    assert!(gives("gil", "ALL").starts_with("nothing"));
    assert!(gives("vic", "SELECT").contains("columns id, name"));
    assert!(gives("public", "SELECT").starts_with("every user holds role public; part of"));
    // The database owned by `public` gives nobody anything, and says so.
    assert_eq!(review.database_owner.unwrap().name, "public");
    assert!(
        review.notes[0].contains("owned by role public"),
        "{:?}",
        review.notes
    );
}

#[test]
fn table_holders_fails_rather_than_list_part() {
    let mut f = facts();
    f.members.remove("analysts");
    let e = table_holders(&f).unwrap_err();
    assert!(e.contains("analysts"), "{e}");
}

#[test]
fn sort_holdings_orders_and_drops_duplicates() {
    let h = |kind: &'static str, name: &str, p: &str, how| Holding {
        principal: Who {
            kind,
            name: name.into(),
        },
        privilege: p.into(),
        on: "table d.t".into(),
        how,
        grant_option: false,
        chain: vec![],
        gives: String::new(),
    };
    let mut rows = vec![
        h("role", "a", "SELECT", How::Grant),
        h("user", "b", "DROP", How::Grant),
        h("group", "a", "SELECT", How::Grant),
        h("user", "b", "SELECT", How::Owner),
        h("user", "b", "SELECT", How::Admin),
        h("user", "a", "INSERT", How::Grant),
        h("user", "a", "INSERT", How::Grant),
    ];
    sort_holdings(&mut rows);
    let got: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {} {}", r.principal, r.privilege, r.how.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            "user:a INSERT grant",
            "user:b SELECT admin",
            "user:b SELECT owner",
            "user:b DROP grant",
            "group:a SELECT grant",
            "role:a SELECT grant",
        ]
    );
}

#[test]
fn the_table_json_shape_is_as_documented() {
    let review = table_holders(&facts()).unwrap();
    let v = serde_json::to_value(&review).unwrap();
    let keys =
        |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(
        keys(&v),
        ["table", "owner", "database_owner", "holders", "notes"]
    );
    assert_eq!(v["table"], "demo.customer");
    assert_eq!(
        v["owner"],
        serde_json::json!({"type": "role", "name": "owners"})
    );
    let john = v["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["principal"]["name"] == "john")
        .unwrap();
    assert_eq!(
        john,
        &serde_json::json!({
            "principal": {"type": "user", "name": "john"},
            "privilege": "SELECT",
            "on": "table demo.customer",
            "how": "grant",
            "grant_option": true,
            "chain": [
                {"type": "role", "name": "finance"},
                {"type": "role", "name": "analysts"},
                {"type": "user", "name": "john"}
            ],
            "gives": ""
        })
    );
}

#[test]
fn the_user_json_shape_is_as_documented() {
    let review = UserReview {
        user: "mary".into(),
        groups: vec!["staff".into()],
        groups_from: "--group",
        roles: vec!["public".into()],
        admin: false,
        databases: vec!["demo".into()],
        access: vec![Access {
            database: "demo".into(),
            table: Some("customer".into()),
            privilege: "SELECT",
            allowed: true,
            reason: "narrowed",
            matched:
                "SELECT on column name of table demo.customer: columns name of every partition"
                    .into(),
            given: Some("columns name of every partition".into()),
        }],
        notes: vec![],
    };
    assert_eq!(
        serde_json::to_value(&review).unwrap(),
        serde_json::json!({
            "user": "mary",
            "groups": ["staff"],
            "groups_from": "--group",
            "roles": ["public"],
            "admin": false,
            "databases": ["demo"],
            "access": [{
                "database": "demo",
                "table": "customer",
                "privilege": "SELECT",
                "allowed": true,
                "reason": "narrowed",
                "matched": "SELECT on column name of table demo.customer: columns name of every partition",
                "given": "columns name of every partition"
            }],
            "notes": []
        })
    );
    let text = review.to_string();
    assert!(
        text.contains("demo.customer  SELECT     narrowed  SELECT on column name"),
        "{text}"
    );
    // A part of a table the user may not read is shown as refused, saying why.
    let mut refused = review.clone();
    refused.access[0].allowed = false;
    refused.access[0].reason = "not_narrowable";
    refused.access[0].matched = "the parts do not make one narrowed table".into();
    let text = refused.to_string();
    assert!(
        text.contains("demo.customer  SELECT refused  not_narrowable  the parts do not"),
        "{text}"
    );
}

#[test]
fn text_columns_are_aligned_and_an_empty_review_says_so() {
    let out = columns(&[
        vec!["A".into(), "BB".into(), "last".into()],
        vec!["longer".into(), "x".into(), "y".into()],
    ]);
    assert_eq!(out, "A       BB  last\nlonger  x   y\n");
    let review = TableReview {
        table: "d.t".into(),
        owner: None,
        database_owner: None,
        holders: vec![],
        notes: vec![],
    };
    let text = review.to_string();
    assert!(text.contains("owner:          none recorded"), "{text}");
    assert!(
        text.contains("nobody holds a privilege on the table"),
        "{text}"
    );
}

#[test]
fn split_table_wants_db_dot_table() {
    assert_eq!(
        split_table("Demo.Customer").unwrap(),
        ("demo".into(), "customer".into())
    );
    for bad in ["customer", ".t", "d.", "a.b.c"] {
        assert!(split_table(bad).is_err(), "{bad}");
    }
}

/// Each privilege is decided by the rule a live call needing it is judged by: the same
/// `authorize` the proxy runs, on the same grants.
#[test]
fn each_privilege_is_decided_by_the_proxys_rule() {
    let t = Object::table("demo", "customer");
    let mut grants = Grants::default();
    grants.roles.insert("public".into());
    grants.objects.insert(
        t.clone(),
        vec![crate::decision::authz::Held {
            privilege: Privilege::Insert,
            grant_option: false,
            via: role("writers"),
        }],
    );
    let identity = Identity::new("w", &[], IdentitySource::SetUgi);
    let facts = Facts {
        grants: Some(&grants),
        ..Facts::default()
    };
    let policy = crate::decision::authz::Policy::default();
    let decided: Vec<(&str, bool, String)> = TABLE_PRIVILEGES
        .iter()
        .map(|p| {
            let v = authorize(&identity, &operation_for(*p, &t), &facts, &policy);
            (p.as_str(), v.allow, v.matched)
        })
        .collect();
    let allowed: Vec<&str> = decided.iter().filter(|d| d.1).map(|d| d.0).collect();
    assert_eq!(allowed, ["INSERT"]);
    assert_eq!(decided[1].2, "role:writers INSERT on table demo.customer");
    // An owner holds every table privilege, as owner.
    let mut owned = Facts {
        grants: Some(&grants),
        ..Facts::default()
    };
    owned.owners.insert(
        t.clone(),
        Owner {
            name: "w".into(),
            kind: PrincipalKind::User,
        },
    );
    for p in TABLE_PRIVILEGES {
        let v = authorize(&identity, &operation_for(p, &t), &owned, &policy);
        assert!(v.allow, "{p:?}");
        assert_eq!(v.matched, "owner of table demo.customer", "{p:?}");
    }
}

fn settings(toml: &str) -> Settings {
    let base = "[upstream]\nuris = [\"thrift://127.0.0.1:9083\"]\n";
    Settings::resolve(crate::config::Config::parse(&format!("{base}{toml}")).unwrap()).unwrap()
}

#[tokio::test]
async fn proxy_groups_are_the_groups_the_proxy_gives() {
    let s = settings("[identity.groups]\nmary = [\"staff\", \"etl\"]\n");
    assert_eq!(proxy_groups(&s, "mary").await.unwrap(), ["etl", "staff"]);
    assert!(proxy_groups(&s, "bob").await.unwrap().is_empty());
    let pinned = settings(
        "[identity]\nmode = \"pinned\"\npinned_user = \"spark\"\npinned_groups = [\"jobs\"]\n",
    );
    assert_eq!(proxy_groups(&pinned, "spark").await.unwrap(), ["jobs"]);
    assert!(proxy_groups(&pinned, "other").await.unwrap().is_empty());
}

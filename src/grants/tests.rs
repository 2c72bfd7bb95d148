use super::grammar::{parse_script, parse_statement};
use super::plan::{diff, partition_name_values, Change, State};
use super::session::{partition_values, Effect};
use super::state::{ObjectRef, PrivilegeRow};
use super::statement::{ObjectSpec, PrivilegeSpec, RoleChoice, Statement};
use crate::decision::authz::{Principal, PrincipalKind, Privilege};

fn st(s: &str) -> Statement {
    parse_statement(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .statement
}

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

fn table(t: &str) -> ObjectSpec {
    ObjectSpec::Table {
        db: None,
        table: t.into(),
        partition: vec![],
        columns: vec![],
    }
}

fn privs(p: &[Privilege]) -> Vec<PrivilegeSpec> {
    p.iter()
        .map(|p| PrivilegeSpec {
            privilege: *p,
            columns: vec![],
        })
        .collect()
}

/// The set-up page of the demo, as an administrator writes it: keywords in any case,
/// comments, several statements on a line.
const PAGE: &str = "
-- roles of the shop
Set role admin; Use demo_database;
Create role sales; CREATE ROLE marketing;
/* the grants */
Grant select, insert on customer to role sales;
GRANT role finance to USER john;
";

#[test]
fn the_page_reads_statement_by_statement() {
    let all = parse_script(PAGE).unwrap();
    let got: Vec<&Statement> = all.iter().map(|l| &l.statement).collect();
    assert_eq!(
        got,
        [
            &Statement::SetRole(RoleChoice::Named("admin".into())),
            &Statement::Use("demo_database".into()),
            &Statement::CreateRole("sales".into()),
            &Statement::CreateRole("marketing".into()),
            &Statement::Grant {
                privileges: privs(&[Privilege::Select, Privilege::Insert]),
                object: table("customer"),
                principals: vec![role("sales")],
                grant_option: false,
            },
            &Statement::GrantRole {
                roles: vec!["finance".into()],
                principals: vec![user("john")],
                admin_option: false,
            },
        ]
    );
    assert_eq!(all[0].line, 3);
    assert_eq!(all[5].line, 7);
    assert_eq!(
        all[4].text,
        "Grant select, insert on customer to role sales"
    );
}

#[test]
fn every_form_reads() {
    assert_eq!(
        st("GRANT SELECT (a, B) ON TABLE db.T PARTITION (region='eu', y=2024) TO USER `ann.lee`, GROUP etl WITH GRANT OPTION"),
        Statement::Grant {
            privileges: vec![PrivilegeSpec {
                privilege: Privilege::Select,
                columns: vec!["a".into(), "b".into()],
            }],
            object: ObjectSpec::Table {
                db: Some("db".into()),
                table: "t".into(),
                partition: vec![("region".into(), "eu".into()), ("y".into(), "2024".into())],
                columns: vec![],
            },
            principals: vec![
                user("ann.lee"),
                Principal {
                    kind: PrincipalKind::Group,
                    name: "etl".into()
                }
            ],
            grant_option: true,
        }
    );
    assert_eq!(
        st("revoke grant option for all on database Sales from role R1"),
        Statement::Revoke {
            grant_option_for: true,
            privileges: privs(&[Privilege::All]),
            object: ObjectSpec::Database("sales".into()),
            principals: vec![role("r1")],
        }
    );
    assert_eq!(
        st("GRANT ALL TO USER admin2"),
        Statement::Grant {
            privileges: privs(&[Privilege::All]),
            object: ObjectSpec::Global,
            principals: vec![user("admin2")],
            grant_option: false,
        }
    );
    assert_eq!(
        st("grant r1, r2 to role r3 with admin option"),
        Statement::GrantRole {
            roles: vec!["r1".into(), "r2".into()],
            principals: vec![role("r3")],
            admin_option: true,
        }
    );
    assert_eq!(
        st("REVOKE ADMIN OPTION FOR ROLE r1 FROM USER u"),
        Statement::RevokeRole {
            admin_option_for: true,
            roles: vec!["r1".into()],
            principals: vec![user("u")],
        }
    );
    assert_eq!(st("show roles"), Statement::ShowRoles);
    assert_eq!(st("SHOW CURRENT ROLES"), Statement::ShowCurrentRoles);
    assert_eq!(
        st("show role grant group etl"),
        Statement::ShowRoleGrant(Principal {
            kind: PrincipalKind::Group,
            name: "etl".into()
        })
    );
    assert_eq!(
        st("SHOW PRINCIPALS Sales"),
        Statement::ShowPrincipals("sales".into())
    );
    assert_eq!(
        st("SHOW GRANT USER john ON ALL"),
        Statement::ShowGrant {
            principal: Some(user("john")),
            object: None
        }
    );
    assert_eq!(
        st("SHOW GRANT ON TABLE d.t (c)"),
        Statement::ShowGrant {
            principal: None,
            object: Some(ObjectSpec::Table {
                db: Some("d".into()),
                table: "t".into(),
                partition: vec![],
                columns: vec!["c".into()],
            })
        }
    );
    assert_eq!(st("set role NONE"), Statement::SetRole(RoleChoice::None));
    assert_eq!(st("SET ROLE ALL;"), Statement::SetRole(RoleChoice::All));
    assert_eq!(
        st("drop role `We``ird`"),
        Statement::DropRole("we`ird".into())
    );
}

#[test]
fn errors_point_at_the_statement_and_the_token() {
    let e = parse_script("use d;\n\nGrant select on customer too role sales;").unwrap_err();
    assert_eq!((e.line, e.column, e.statement_line), (3, 26, 3));
    assert_eq!(e.found, "`too`");
    assert!(e.expected.iter().any(|x| x == "`TO`"), "{e}");
    let text = e.to_string();
    assert!(text.contains("line 3, column 26"), "{text}");
    assert!(
        text.contains("Grant select on customer too role sales;\n"),
        "{text}"
    );

    // The principal's kind must be said.
    let e = parse_script("GRANT SELECT ON t TO sales").unwrap_err();
    assert_eq!(e.found, "`sales`");
    assert!(e.to_string().contains("USER, GROUP or ROLE"), "{e}");
    // A privilege hms-guard does not know.
    // (read as a role grant: a word that is no privilege names a role)
    let e = parse_script("GRANT SHOW_DATABASE ON DATABASE d TO USER u").unwrap_err();
    assert_eq!(
        (e.found.as_str(), e.expected.as_slice()),
        ("`ON`", &["`TO`".to_string()][..]),
        "{e}"
    );
    // Two statements without `;`.
    let e = parse_script("CREATE ROLE a CREATE ROLE b").unwrap_err();
    assert_eq!((e.found.as_str(), e.column), ("`CREATE`", 15));
    // An unclosed backquote, an unknown statement, an unclosed comment.
    assert!(parse_script("DROP ROLE `x").is_err());
    let e = parse_script("SELECT 1").unwrap_err();
    assert!(e.to_string().contains("SET ROLE, USE"), "{e}");
    assert!(parse_script("/* never closed").is_err());
    // Keywords are names only in backquotes.
    assert!(parse_script("CREATE ROLE select").is_err());
    assert_eq!(
        st("CREATE ROLE `select`"),
        Statement::CreateRole("select".into())
    );
}

#[test]
fn empty_scripts_and_stray_semicolons_are_nothing() {
    assert_eq!(parse_script("").unwrap(), vec![]);
    assert_eq!(parse_script(" ;; -- c\n/* x */").unwrap(), vec![]);
}

#[test]
fn partition_specs_take_the_key_order_and_every_key() {
    let keys = vec!["region".to_string(), "y".to_string()];
    let spec = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        partition_values(&keys, &spec(&[("y", "2024"), ("region", "eu")])).unwrap(),
        ["eu", "2024"]
    );
    assert!(partition_values(&keys, &spec(&[("y", "2024")])).is_err());
    assert!(partition_values(&keys, &spec(&[("z", "1"), ("y", "1"), ("region", "x")])).is_err());
    assert!(partition_values(&[], &spec(&[("y", "1")])).is_err());
    assert_eq!(
        partition_name_values("region=e%2Fu/y=2024"),
        ["e/u", "2024"]
    );
    assert_eq!(partition_name_values("k=%C3%A9%zz"), ["é%zz"]);
}

fn row(t: &str, p: Principal, privilege: &str, option: bool) -> PrivilegeRow {
    PrivilegeRow {
        object: ObjectRef::table("d", t),
        principal: p,
        privilege: privilege.into(),
        grant_option: option,
        grantor: "admin".into(),
        grantor_kind: Some(PrincipalKind::User),
        create_time: 0,
    }
}

fn state(rows: &[PrivilegeRow], roles: &[&str]) -> State {
    State {
        roles: roles.iter().map(|r| r.to_string()).collect(),
        members: Default::default(),
        grants: rows.iter().map(|r| (r.key(), r.clone())).collect(),
    }
}

#[test]
fn a_plan_adds_what_is_missing_and_keeps_what_holds() {
    let current = state(&[row("c", role("sales"), "SELECT", false)], &["sales"]);
    let effects = vec![
        Effect::CreateRole("sales".into()),
        Effect::Grant(row("c", role("sales"), "SELECT", false)),
        Effect::Grant(row("c", role("sales"), "INSERT", false)),
    ];
    let mut desired = current.clone();
    let ins = row("c", role("sales"), "INSERT", false);
    desired.grants.insert(ins.key(), ins.clone());
    let plan = diff(&current, &desired, &effects);
    assert_eq!(plan.changes, vec![Change::Grant(vec![ins])]);
    assert_eq!(
        plan.unchanged,
        [
            "CREATE ROLE sales",
            "GRANT SELECT ON TABLE d.c TO ROLE sales"
        ]
    );
    assert!(plan
        .render()
        .ends_with("Plan: 1 to add, 0 to change, 0 to remove, 2 unchanged.\n"));
    // Applied, nothing is left to do.
    let again = diff(&desired, &desired, &effects);
    assert!(again.changes.is_empty());
}

#[test]
fn a_plan_removes_what_is_gone_and_folds_a_dropped_roles_rows() {
    let sel = row("c", role("old"), "SELECT", false);
    let other = row("c", user("ann"), "SELECT", true);
    let current = state(&[sel.clone(), other.clone()], &["old"]);
    let mut desired = state(&[], &[]);
    let mut o = other.clone();
    o.grant_option = false;
    desired.grants.insert(o.key(), o);
    let plan = diff(&current, &desired, &[]);
    assert_eq!(
        plan.changes,
        vec![
            Change::RevokeOption(vec![other]),
            Change::DropRole {
                role: "old".into(),
                grants: 1,
                members: 0
            }
        ]
    );
    let text = plan.render();
    assert!(
        text.contains("~ REVOKE GRANT OPTION FOR SELECT ON TABLE d.c FROM USER ann\n"),
        "{text}"
    );
    assert!(
        text.contains("- DROP ROLE old (with its 1 grant(s)"),
        "{text}"
    );
}

#[test]
fn statements_print_back_as_they_read() {
    // What an export writes reads back to the same rows.
    let mut r = row("c", user("a b"), "SELECT", true);
    r.object.kind = super::state::ObjectKind::Partition;
    r.object.partition = vec!["e'u".into()];
    r.object.keys = vec!["region".into()];
    let text = super::state::grant_text(&[&r]);
    assert_eq!(
        text,
        "GRANT SELECT ON TABLE d.c PARTITION (region = 'e\\'u') TO USER `a b` WITH GRANT OPTION"
    );
    match st(&text) {
        Statement::Grant {
            object: ObjectSpec::Table { partition, .. },
            principals,
            grant_option: true,
            ..
        } => {
            assert_eq!(partition, vec![("region".to_string(), "e'u".to_string())]);
            assert_eq!(principals, vec![user("a b")]);
        }
        other => panic!("{other:?}"),
    }
}

/// Random edits of statements (characters the grammar gives meaning to): reading never
/// panics, every error points inside the text, and what reads is read the same again.
#[test]
fn random_edits_never_panic_and_errors_point_inside() {
    let corpus = [
        PAGE,
        "GRANT SELECT (a, b), INSERT ON TABLE d.t PARTITION (k = 'v\\'x', n = -1) TO USER `u``v`, ROLE r WITH GRANT OPTION;",
        "REVOKE ADMIN OPTION FOR ROLE a, b FROM GROUP g; SHOW GRANT USER u ON ALL; /* c */ SHOW ROLE GRANT ROLE r",
        "revoke grant option for all on database d from role r -- tail",
    ];
    let alphabet: Vec<char> = "`'\"(),.;=-/* \n\tabgrostuGRANTONTOROLEUSER0123456789\\é"
        .chars()
        .collect();
    let mut rng = crate::testutil::Rng::new(0x9e37_79b9_7f4a_7c15);
    for i in 0..5_000 {
        let text = rng.edit(corpus[i % corpus.len()], &alphabet);
        match parse_script(&text) {
            Ok(all) => {
                for s in &all {
                    assert!(
                        s.line >= 1 && s.line <= text.lines().count().max(1),
                        "{text}"
                    );
                    assert_eq!(
                        parse_statement(&s.text).map(|l| l.statement),
                        Ok(s.statement.clone()),
                        "{text}"
                    );
                }
            }
            Err(e) => {
                let line = text.lines().nth(e.line - 1).unwrap_or_default();
                assert!(e.column <= line.chars().count() + 1, "{text}: {e:?}");
                assert!(e.statement_line <= e.line, "{text}: {e:?}");
            }
        }
    }
}

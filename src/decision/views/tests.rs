//! The view analysis on a corpus of view texts as Hive and Spark write them, with the decision
//! for each.

use super::*;

fn hive(text: &str) -> Result<Shape, Refusal> {
    analyze(&ViewText::HiveExpanded { text, db: "demo" })
}

fn spark(text: &str, columns: &[&str]) -> Result<Shape, Refusal> {
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    analyze(&ViewText::Spark {
        text,
        catalog: "spark_catalog",
        db: "demo",
        columns: &columns,
    })
}

fn cols(s: &Shape) -> Vec<Vec<&str>> {
    s.branches
        .iter()
        .map(|b| b.columns.iter().map(String::as_str).collect())
        .collect()
}

fn text(v: &str) -> Literal {
    Literal::Text(v.into())
}

#[test]
fn hive_expanded_projections_qualify() {
    // What Hive 2.3 stores for `CREATE VIEW customer_public AS SELECT id, name FROM customer`.
    let s = hive("SELECT `customer`.`id`, `customer`.`name` FROM `demo`.`customer`").unwrap();
    assert_eq!(s.branches.len(), 1);
    let b = &s.branches[0];
    assert_eq!((b.db.as_str(), b.table.as_str()), ("demo", "customer"));
    assert_eq!(b.columns, ["id", "name"]);
    assert_eq!(b.filter, None);
    // Aliases, upper case, an alias for the table, parentheses, comments, a repeated column.
    let s = hive(
        "-- the public view\nSELECT `c`.`ID` AS `key`, (`c`.`Name`) `n`, c.id /* again */ \
         FROM `Demo`.`Customer` `c` ORDER BY `c`.`id`",
    )
    .unwrap();
    assert_eq!(cols(&s), [["id", "name"]]);
    assert_eq!(s.branches[0].table, "customer");
}

#[test]
fn partition_filters_are_kept_as_written() {
    let s = hive(
        "SELECT `sales`.`id`, `sales`.`amount` FROM `demo`.`sales` \
         WHERE `sales`.`region` = 'eu' AND (`sales`.`ds` >= '2026-01-01' OR `sales`.`ds` IN ('x', 'y'))",
    )
    .unwrap();
    let f = s.branches[0].filter.clone().unwrap();
    assert_eq!(f.columns(), ["region", "ds"]);
    let Pred::And(a, _) = &f else { panic!("{f:?}") };
    assert_eq!(
        **a,
        Pred::Cmp {
            column: "region".into(),
            op: CmpOp::Eq,
            value: text("eu")
        }
    );
    // A literal on the left is turned round; NOT and NOT IN stay what they are.
    let s = hive("SELECT id FROM sales WHERE 2026 <= year AND NOT (region NOT IN ('us'))").unwrap();
    let Some(Pred::And(a, b)) = &s.branches[0].filter else {
        panic!()
    };
    assert_eq!(
        **a,
        Pred::Cmp {
            column: "year".into(),
            op: CmpOp::GtEq,
            value: Literal::Number("2026".into())
        }
    );
    assert!(matches!(&**b, Pred::Not(inner) if matches!(&**inner, Pred::In { negated: true, .. })));
}

#[test]
fn union_all_gives_one_branch_each() {
    let s = hive(
        "SELECT `a`.`id` FROM `demo`.`a` WHERE `a`.`p` = '1' \
         UNION ALL SELECT `b`.`id` FROM `other`.`b`",
    )
    .unwrap();
    assert_eq!(s.branches.len(), 2);
    assert_eq!(s.branches[1].db, "other");
    let e = hive("SELECT id FROM a UNION SELECT id FROM b").unwrap_err();
    assert!(e.construct.contains("UNION"), "{e}");
}

#[test]
fn spark_text_resolves_in_its_namespace_and_star_means_the_recorded_columns() {
    let s = spark("select * from customer", &["id", "name"]).unwrap();
    assert_eq!(cols(&s), [["id", "name"]]);
    assert_eq!(s.branches[0].db, "demo");
    let s = spark(
        "SELECT c.* FROM spark_catalog.demo.customer c",
        &["id", "Name"],
    )
    .unwrap();
    assert_eq!(cols(&s), [["id", "name"]]);
    // Hive's expanded text never holds a * (Hive expands it): one that does is not trusted.
    let e = hive("SELECT * FROM `demo`.`customer`").unwrap_err();
    assert_eq!(e.construct, "SELECT *");
}

#[test]
fn everything_else_is_refused_naming_the_construct() {
    let cases = [
        ("SELECT a.id, b.x FROM a JOIN b ON a.id = b.id", "a JOIN"),
        (
            "SELECT region, count(*) FROM sales GROUP BY region",
            "GROUP BY",
        ),
        ("SELECT DISTINCT region FROM sales", "DISTINCT"),
        ("SELECT upper(name) FROM customer", "upper(name)"),
        ("SELECT id + 1 FROM customer", "id + 1"),
        (
            "SELECT id FROM customer WHERE salary > 10 + 1",
            "salary > 10 + 1",
        ),
        ("SELECT id FROM customer WHERE name LIKE 'a%'", "LIKE"),
        (
            "SELECT id FROM customer WHERE id IN (SELECT id FROM other)",
            "IN (SELECT",
        ),
        ("SELECT id FROM (SELECT id FROM customer) t", "a subquery"),
        (
            "WITH t AS (SELECT id FROM customer) SELECT id FROM t",
            "WITH",
        ),
        ("SELECT id FROM customer LIMIT 10", "LIMIT"),
        (
            "SELECT id FROM customer LATERAL VIEW explode(tags) t AS tag",
            "LATERAL VIEW",
        ),
        ("SELECT id FROM customer TABLESAMPLE (10 PERCENT)", ""),
        ("SELECT id FROM customer WHERE name = 'it\\'s'", "backslash"),
        (
            "SELECT id FROM customer WHERE name = 'a\\' OR region = 'us'",
            "backslash",
        ),
        (
            "SELECT id FROM customer WHERE name = 'semi;colon'",
            "name =",
        ),
        (
            "SELECT id FROM customer WHERE region = other_column",
            "region = other_column",
        ),
        ("SELECT x.id FROM customer c", "x.id"),
        ("SELECT 1", "without FROM"),
        ("SELECT id FROM a, b", "several tables"),
        ("DROP TABLE customer", "exactly one query"),
        (
            "SELECT id FROM customer; SELECT id FROM other",
            "exactly one query",
        ),
        ("SELECT id FROM", "could not be parsed"),
    ];
    for (text, construct) in cases {
        let e = hive(text).expect_err(text);
        assert!(
            e.construct.contains(construct) || e.to_string().contains(construct),
            "{text}: {e}"
        );
        assert!(!e.why.is_empty());
    }
}

#[test]
fn hostile_texts_are_bounded() {
    let deep = format!(
        "SELECT id FROM t WHERE {}p = '1'{}",
        "(".repeat(500),
        ")".repeat(500)
    );
    assert!(hive(&deep).is_err());
    let long = format!(
        "SELECT id FROM t WHERE p IN ({})",
        vec!["'x'"; 20_000].join(",")
    );
    let e = hive(&long).unwrap_err();
    assert!(e.construct.contains("bytes"), "{e}");
    let many = vec!["SELECT id FROM t"; 100].join(" UNION ALL ");
    assert!(hive(&many).is_err());
}

/// Random edits of the corpus (characters SQL gives meaning to): the analysis never panics,
/// and whatever qualifies names only lowercase columns of one table per branch.
#[test]
fn random_edits_never_panic_and_qualify_only_plain_shapes() {
    let corpus = [
        "SELECT `customer`.`id`, `customer`.`name` FROM `demo`.`customer`",
        "SELECT id FROM sales WHERE region = 'eu' AND ds IN ('a', 'b') UNION ALL SELECT id FROM s2",
        "SELECT c.* FROM spark_catalog.demo.customer c WHERE NOT (p <> 1)",
    ];
    let alphabet: Vec<char> =
        "`'\"()*,.;=<>!-+/ \n\tabcpxyzSELECTFROMWHEREUNIONALLJOIN0123456789\\"
            .chars()
            .collect();
    let mut rng = crate::testutil::Rng::new(0x9e37_79b9_7f4a_7c15);
    for i in 0..5_000 {
        let text = rng.edit(corpus[i % corpus.len()], &alphabet);
        for shape in [hive(&text), spark(&text, &["id", "name"])]
            .into_iter()
            .flatten()
        {
            for b in &shape.branches {
                let filtered = b.filter.as_ref().map(Pred::columns).unwrap_or_default();
                for c in b.columns.iter().chain(&filtered) {
                    assert_eq!(c, &c.to_lowercase(), "{text}");
                }
                assert!(!b.table.is_empty(), "{text}");
            }
        }
    }
}

use std::collections::BTreeSet;

use super::reply::{narrow_reply, narrowable, partition_values, NarrowError, NARROWABLE};
use super::*;
use crate::decision::authz::Privilege;
use crate::wire::codec::reader::Reader;
use crate::wire::codec::value::{read_value, Value};
use crate::wire::codec::writer::Writer;
use crate::wire::codec::{MessageType, Protocol, Ty};

const PARQUET: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";
const TEXT: &str = "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe";

fn shape(columns: &[&str], keys: &[&str], format: Format) -> TableShape {
    TableShape {
        table: Object::table("demo", "customer"),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        keys: keys
            .iter()
            .map(|k| (k.to_string(), "string".to_string()))
            .collect(),
        format,
        layout_columns: Vec::new(),
        view: None,
        view_text: String::new(),
        owner: None,
    }
}

fn cols(c: &[&str]) -> Option<BTreeSet<String>> {
    Some(c.iter().map(|c| c.to_string()).collect())
}

fn eu() -> Rows {
    Rows::Where(vec![RowRule::Filter(Pred::Cmp {
        column: "region".into(),
        op: CmpOp::Eq,
        value: Literal::Text("eu".into()),
    })])
}

fn part(columns: Option<BTreeSet<String>>, rows: Rows, from: &str) -> Part {
    Part {
        columns,
        rows,
        from: from.into(),
    }
}

#[test]
fn parts_combine_only_into_one_narrowed_table() {
    let s = shape(
        &["id", "name", "salary", "ssn"],
        &["region"],
        Format::ByName,
    );
    // The same columns everywhere: the partitions add up.
    let n = combine(
        &s,
        &[
            part(cols(&["id", "name"]), eu(), "a"),
            part(
                cols(&["id", "name"]),
                Rows::Where(vec![RowRule::Values(vec!["us".into()])]),
                "b",
            ),
        ],
    )
    .unwrap();
    assert_eq!(n.shown, ["id", "name"]);
    assert!(n.rows.allows(&s.keys, &["us".into()]) && n.rows.allows(&s.keys, &["eu".into()]));
    assert!(!n.rows.allows(&s.keys, &["apac".into()]));
    // The same partitions: the columns add up.
    let n = combine(
        &s,
        &[
            part(cols(&["id"]), Rows::All, "a"),
            part(cols(&["name"]), Rows::All, "b"),
        ],
    )
    .unwrap();
    assert_eq!(n.shown, ["id", "name"]);
    assert_eq!(
        n.hidden,
        BTreeSet::from(["salary".to_string(), "ssn".to_string()])
    );
    // One containing the other.
    let n = combine(
        &s,
        &[
            part(cols(&["id", "name"]), Rows::All, "a"),
            part(cols(&["id"]), eu(), "b"),
        ],
    )
    .unwrap();
    assert_eq!(
        (n.shown.as_slice(), &n.rows),
        (
            ["id".to_string(), "name".to_string()].as_slice(),
            &Rows::All
        )
    );
    // `name` everywhere and `salary` in the EU only: together, US salaries would show.
    let e = combine(
        &s,
        &[
            part(cols(&["name"]), Rows::All, "grant one"),
            part(cols(&["salary"]), eu(), "view two"),
        ],
    )
    .unwrap_err();
    assert!(
        e.0.contains("grant one gives column name of every partition"),
        "{e}"
    );
    assert!(
        e.0.contains("view two gives column salary of partitions where region = 'eu'"),
        "{e}"
    );
}

#[test]
fn formats_decide_which_columns_can_hide() {
    let by_pos = shape(&["id", "name", "ssn"], &[], Format::Positional(TEXT.into()));
    assert!(combine(&by_pos, &[part(cols(&["id", "name"]), Rows::All, "g")]).is_ok());
    let e = combine(&by_pos, &[part(cols(&["id", "ssn"]), Rows::All, "g")]).unwrap_err();
    assert!(
        e.0.contains("read by position") && e.0.contains("name"),
        "{e}"
    );
    for (format, says) in [
        (Format::OwnFiles("iceberg".into()), "iceberg table"),
        (Format::AvroUrl, "avro.schema.url"),
        (
            Format::Unknown("com.example.Serde".into()),
            "com.example.Serde",
        ),
    ] {
        let s = shape(&["id", "ssn"], &[], format);
        let e = combine(&s, &[part(cols(&["id"]), Rows::All, "g")]).unwrap_err();
        assert!(e.0.contains(says), "{e}");
        // Nothing hidden: the whole table, whatever the format.
        assert!(combine(&s, &[part(None, Rows::All, "g")])
            .unwrap()
            .is_whole());
    }
    let mut bucketed = shape(&["id", "ssn"], &[], Format::ByName);
    bucketed.layout_columns = vec!["ssn".into()];
    assert!(combine(&bucketed, &[part(cols(&["id"]), Rows::All, "g")]).is_err());
}

#[test]
fn formats_are_read_from_serde_provider_and_parameters() {
    let none = |_: &str| None;
    assert_eq!(format_of(PARQUET, "", &none), Format::ByName);
    assert_eq!(format_of(TEXT, "", &none), Format::Positional(TEXT.into()));
    assert_eq!(format_of("x.Y", "", &none), Format::Unknown("x.Y".into()));
    let iceberg = |k: &str| (k == "table_type").then_some("ICEBERG");
    assert_eq!(
        format_of(TEXT, "", &iceberg),
        Format::OwnFiles("iceberg".into())
    );
    let delta = |k: &str| (k == "spark.sql.sources.provider").then_some("DELTA");
    assert_eq!(
        format_of(TEXT, "", &delta),
        Format::OwnFiles("delta".into())
    );
    let csv = |k: &str| (k == "spark.sql.sources.provider").then_some("csv");
    assert!(matches!(format_of(TEXT, "", &csv), Format::Positional(_)));
    let parquet = |k: &str| (k == "spark.sql.sources.provider").then_some("parquet");
    assert_eq!(format_of(TEXT, "", &parquet), Format::ByName);
    let avro_url = |k: &str| (k == "avro.schema.url").then_some("s3://x/s.avsc");
    assert_eq!(
        format_of(
            "org.apache.hadoop.hive.serde2.avro.AvroSerDe",
            "",
            &avro_url
        ),
        Format::AvroUrl
    );
}

#[test]
fn partition_filters_are_three_valued_and_exact() {
    let keys = vec![
        ("region".to_string(), "string".to_string()),
        ("y".to_string(), "int".to_string()),
    ];
    let cmp = |column: &str, op, value| Pred::Cmp {
        column: column.into(),
        op,
        value,
    };
    let rows = |p| Rows::Where(vec![RowRule::Filter(p)]);
    let v = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
    let eu = cmp("region", CmpOp::Eq, Literal::Text("eu".into()));
    assert!(rows(eu.clone()).allows(&keys, &v("eu", "1")));
    assert!(!rows(eu.clone()).allows(&keys, &v("EU", "1")));
    let recent = cmp("y", CmpOp::GtEq, Literal::Number("2020".into()));
    assert!(rows(recent.clone()).allows(&keys, &v("x", "2021")));
    assert!(!rows(recent.clone()).allows(&keys, &v("x", "abc")));
    // A text literal against an int key, or NULL: unknown, and NOT of unknown stays unknown.
    let odd = cmp("y", CmpOp::Eq, Literal::Text("1".into()));
    assert!(!rows(Pred::Not(Box::new(odd))).allows(&keys, &v("x", "1")));
    let not_eu = Pred::Not(Box::new(eu.clone()));
    assert!(!rows(not_eu.clone()).allows(&keys, &v("__HIVE_DEFAULT_PARTITION__", "1")));
    assert!(rows(not_eu).allows(&keys, &v("us", "1")));
    let both = Pred::And(Box::new(eu), Box::new(recent));
    assert!(rows(both.clone()).allows(&keys, &v("eu", "2020")));
    assert!(!rows(both).allows(&keys, &v("eu", "2019")));
}

#[test]
fn views_must_show_partition_columns_and_filter_only_on_them() {
    let s = shape(&["id", "name", "ssn"], &["region"], Format::ByName);
    let v = Object::table("demo", "v");
    let branch = |columns: &[&str], filter| views::Branch {
        db: "demo".into(),
        table: "customer".into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        filter,
    };
    let p = part_of_view(&v, &branch(&["id", "name", "region"], None), &s).unwrap();
    assert_eq!(p.columns, cols(&["id", "name"]));
    let e = part_of_view(&v, &branch(&["id", "name"], None), &s).unwrap_err();
    assert!(e.0.contains("leaves out partition column region"), "{e}");
    let by_name = Pred::Cmp {
        column: "name".into(),
        op: CmpOp::Eq,
        value: Literal::Text("x".into()),
    };
    let e = part_of_view(&v, &branch(&["id", "region"], Some(by_name)), &s).unwrap_err();
    assert!(
        e.0.contains("column name, which is not a partition column"),
        "{e}"
    );
}

#[test]
fn grants_on_parts_give_their_parts() {
    let g = PartGrant {
        table: Object::table("demo", "customer"),
        partition: None,
        column: Some("name".into()),
        privilege: Privilege::Select,
    };
    assert_eq!(part_of_grant(&g).columns, cols(&["name"]));
    assert_eq!(part_of_grant(&g).rows, Rows::All);
    let g = PartGrant {
        partition: Some(vec!["eu".into()]),
        column: None,
        ..g
    };
    assert_eq!(part_of_grant(&g).columns, None);
    assert_eq!(
        part_of_grant(&g).rows,
        Rows::Where(vec![RowRule::Values(vec!["eu".into()])])
    );
}

#[test]
fn partition_names_are_unescaped_and_must_name_the_keys() {
    let keys = vec![
        ("region".to_string(), "string".to_string()),
        ("d".to_string(), "string".to_string()),
    ];
    assert_eq!(
        partition_values("region=eu/d=2024-01-01%3A00", &keys),
        Some(vec!["eu".into(), "2024-01-01:00".into()])
    );
    assert_eq!(partition_values("region=eu", &keys), None);
    assert_eq!(partition_values("d=eu/region=x", &keys), None);
    assert_eq!(partition_values("region=eu/d=%zz", &keys), None);
}

#[test]
fn the_narrowable_list_is_sorted_and_names_read_methods() {
    assert!(NARROWABLE.windows(2).all(|w| w[0] < w[1]));
    for m in NARROWABLE {
        assert!(crate::wire::schema::method(m).is_some(), "{m}");
    }
    assert!(narrowable("get_table") && !narrowable("get_aggr_stats_for"));
}

// --- replies, on the wire -------------------------------------------------------------

fn narrowed(hidden: &[&str], rows: Rows) -> Narrowed {
    Narrowed {
        table: Object::table("demo", "customer"),
        shown: vec!["id".into(), "name".into()],
        hidden: hidden.iter().map(|c| c.to_string()).collect(),
        keys: vec![("region".into(), "string".into())],
        rows,
        from: vec!["test".into()],
        record: Given::default(),
    }
}

fn field_schema(w: &mut Writer, name: &str) {
    w.struct_begin();
    w.field(Ty::String, 1).string(name.as_bytes());
    w.field(Ty::String, 2).string(b"string");
    w.struct_end();
}

fn storage(w: &mut Writer, columns: &[&str]) {
    w.struct_begin();
    w.field(Ty::List, 1).list_begin(Ty::Struct, columns.len());
    for c in columns {
        field_schema(w, c);
    }
    w.field(Ty::String, 2).string(b"s3://b/customer");
    w.field_bool(5, false);
    w.field(Ty::Struct, 7).struct_begin();
    w.field(Ty::String, 2).string(PARQUET.as_bytes());
    w.struct_end();
    w.struct_end();
}

fn params(w: &mut Writer, entries: &[(&str, &str)]) {
    w.map_begin(Ty::String, Ty::String, entries.len());
    for (k, v) in entries {
        w.string(k.as_bytes()).string(v.as_bytes());
    }
}

fn table_reply(protocol: Protocol) -> Vec<u8> {
    let mut w = Writer::new(protocol);
    w.message("get_table", MessageType::Reply, 7).struct_begin();
    w.field(Ty::Struct, 0).struct_begin();
    w.field(Ty::String, 1).string(b"customer");
    w.field(Ty::String, 2).string(b"demo");
    w.field(Ty::I32, 4).i32(1700000000);
    w.field(Ty::Struct, 7);
    storage(&mut w, &["id", "name", "ssn"]);
    w.field(Ty::List, 8).list_begin(Ty::Struct, 1);
    field_schema(&mut w, "region");
    w.field(Ty::Map, 9);
    let schema = r#"{"type":"struct","fields":[{"name":"id","type":"long","nullable":true,"metadata":{}},{"name":"ssn","type":"string","nullable":true,"metadata":{}}]}"#;
    params(
        &mut w,
        &[("EXTERNAL", "TRUE"), ("spark.sql.sources.schema", schema)],
    );
    w.field(Ty::String, 12).string(b"EXTERNAL_TABLE");
    w.struct_end().struct_end();
    w.finish(false).to_vec()
}

fn success(protocol: Protocol, reply: &[u8]) -> Value {
    let mut r = Reader::new(protocol, reply, 64);
    r.message_begin().unwrap();
    let v = read_value(&mut r, Ty::Struct, None).unwrap();
    v.field(0).unwrap().clone()
}

#[test]
fn a_narrowed_table_loses_its_hidden_columns_everywhere() {
    for protocol in [Protocol::Binary, Protocol::Compact] {
        let reply = table_reply(protocol);
        let out = narrow_reply(
            protocol,
            &reply,
            "get_table",
            &narrowed(&["ssn"], Rows::All),
            64,
        )
        .unwrap();
        let t = success(protocol, &out);
        let names: Vec<&str> = t
            .path(&[7, 1])
            .unwrap()
            .as_list()
            .iter()
            .map(|f| f.field(1).unwrap().as_str().unwrap())
            .collect();
        assert_eq!(names, ["id", "name"], "{protocol:?}");
        assert_eq!(
            t.field(8).unwrap().as_list().len(),
            1,
            "partition keys stay"
        );
        assert_eq!(t.field(4), Some(&Value::Int(1700000000)));
        assert_eq!(t.path(&[7, 5]), Some(&Value::Bool(false)));
        let schema = t
            .field(9)
            .unwrap()
            .map_get("spark.sql.sources.schema")
            .unwrap()
            .as_str()
            .unwrap();
        assert!(
            schema.contains("\"id\"") && !schema.contains("ssn"),
            "{schema}"
        );
        assert_eq!(t.field(12).unwrap().as_str(), Some("EXTERNAL_TABLE"));
        // Nothing of the hidden column is left anywhere in the bytes.
        assert!(!out.windows(3).any(|w| w == b"ssn"), "{protocol:?}");
        // Nothing hidden: the same value (not necessarily the same bytes).
        let same =
            narrow_reply(protocol, &reply, "get_table", &narrowed(&[], Rows::All), 64).unwrap();
        assert_eq!(success(protocol, &same), success(protocol, &reply));
    }
}

fn partitions_reply(protocol: Protocol, method: &str, regions: &[&str]) -> Vec<u8> {
    let mut w = Writer::new(protocol);
    w.message(method, MessageType::Reply, 1).struct_begin();
    w.field(Ty::List, 0).list_begin(Ty::Struct, regions.len());
    for r in regions {
        w.struct_begin();
        w.field(Ty::List, 1)
            .list_begin(Ty::String, 1)
            .string(r.as_bytes());
        w.field(Ty::String, 2).string(b"demo");
        w.field(Ty::Struct, 6);
        storage(&mut w, &["id", "name", "ssn"]);
        w.field(Ty::Map, 7);
        params(
            &mut w,
            &[
                ("numRows", "3"),
                (
                    "COLUMN_STATS_ACCURATE",
                    r#"{"COLUMN_STATS":{"id":"true","ssn":"true"}}"#,
                ),
            ],
        );
        w.struct_end();
    }
    w.struct_end();
    w.finish(false).to_vec()
}

#[test]
fn partitions_the_caller_may_not_read_leave_the_reply() {
    let only_eu = narrowed(&["ssn"], eu_rows());
    for protocol in [Protocol::Binary, Protocol::Compact] {
        let reply = partitions_reply(protocol, "get_partitions", &["eu", "us", "eu"]);
        let out = narrow_reply(protocol, &reply, "get_partitions", &only_eu, 64).unwrap();
        let parts = success(protocol, &out);
        assert_eq!(parts.as_list().len(), 2);
        for p in parts.as_list() {
            assert_eq!(p.field(1).unwrap().as_list()[0].as_str(), Some("eu"));
            assert_eq!(p.path(&[6, 1]).unwrap().as_list().len(), 2);
        }
        assert!(!out.windows(3).any(|w| w == b"ssn"));
        // One partition the caller may not read: the whole reply is withheld.
        let one = partitions_reply(protocol, "get_partition", &["us"]);
        let mut w = Writer::new(protocol);
        w.message("get_partition", MessageType::Reply, 1)
            .struct_begin();
        let single = {
            let v = success(protocol, &one);
            v.as_list()[0].clone()
        };
        w.field(Ty::Struct, 0).value(&single);
        w.struct_end();
        let single_reply = w.finish(false);
        assert!(matches!(
            narrow_reply(protocol, &single_reply, "get_partition", &only_eu, 64),
            Err(NarrowError::Withheld)
        ));
    }
}

fn eu_rows() -> Rows {
    Rows::Where(vec![RowRule::Values(vec!["eu".into()])])
}

#[test]
fn partition_names_and_fields_are_filtered() {
    for protocol in [Protocol::Binary, Protocol::Compact] {
        let mut w = Writer::new(protocol);
        w.message("get_partition_names", MessageType::Reply, 1)
            .struct_begin();
        w.field(Ty::List, 0).list_begin(Ty::String, 3);
        w.string(b"region=eu")
            .string(b"region=us")
            .string(b"region=e%75");
        w.struct_end();
        let out = narrow_reply(
            protocol,
            &w.finish(false),
            "get_partition_names",
            &narrowed(&[], eu_rows()),
            64,
        )
        .unwrap();
        let listed = success(protocol, &out);
        let names: Vec<&str> = listed.as_list().iter().filter_map(Value::as_str).collect();
        assert_eq!(names, ["region=eu", "region=e%75"]);

        let mut w = Writer::new(protocol);
        w.message("get_schema", MessageType::Reply, 1)
            .struct_begin();
        w.field(Ty::List, 0).list_begin(Ty::Struct, 4);
        for c in ["id", "SSN", "name", "region"] {
            field_schema(&mut w, c);
        }
        w.struct_end();
        let out = narrow_reply(
            protocol,
            &w.finish(false),
            "get_schema",
            &narrowed(&["ssn"], Rows::All),
            64,
        )
        .unwrap();
        assert_eq!(success(protocol, &out).as_list().len(), 3);
    }
}

#[test]
fn a_field_the_schema_does_not_know_refuses_the_reply() {
    let protocol = Protocol::Binary;
    let mut w = Writer::new(protocol);
    w.message("get_table", MessageType::Reply, 1).struct_begin();
    w.field(Ty::Struct, 0).struct_begin();
    w.field(Ty::String, 999).string(b"ssn");
    w.struct_end().struct_end();
    let e = narrow_reply(
        protocol,
        &w.finish(false),
        "get_table",
        &narrowed(&["ssn"], Rows::All),
        64,
    )
    .unwrap_err();
    assert!(matches!(e, NarrowError::Unknown(_)), "{e}");
}

/// Random edits of replies (bytes flipped, inserted, removed): the walk never panics, and a
/// reply it narrows is one whole message again.
#[test]
fn random_edits_of_replies_never_panic() {
    let mut rng = crate::testutil::Rng::new(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next();
    let n = narrowed(&["ssn"], eu_rows());
    let mut narrowed_ok = 0;
    for i in 0..6_000 {
        let protocol = if i % 2 == 0 {
            Protocol::Binary
        } else {
            Protocol::Compact
        };
        let (method, mut bytes) = match i % 3 {
            0 => ("get_table", table_reply(protocol)),
            _ => (
                "get_partitions",
                partitions_reply(protocol, "get_partitions", &["eu", "us"]),
            ),
        };
        for _ in 0..(1 + next() % 3) {
            let at = (next() as usize) % (bytes.len() + 1);
            match next() % 3 {
                0 if at < bytes.len() => bytes[at] ^= 1 << (next() % 8),
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, next() as u8),
            }
        }
        if let Ok(out) = narrow_reply(protocol, &bytes, method, &n, 64) {
            let mut r = Reader::new(protocol, &out, 64);
            if matches!(r.message_begin(), Ok(h) if h.kind == MessageType::Reply) {
                narrowed_ok += 1;
                let back = read_value(&mut r, Ty::Struct, None);
                assert!(
                    back.is_ok(),
                    "{method} {protocol:?}: a narrowed reply that does not read back: {back:?}\nin  {bytes:?}\nout {:?}", &out[..]
                );
            }
        }
    }
    assert!(
        narrowed_ok > 100,
        "only {narrowed_ok} edited replies were narrowed"
    );
}

#[test]
fn a_view_read_through_another_view_is_refused() {
    // v2 reads view v1: a caller of v2 asking for v1 gets no narrowed v1.
    let mut v1 = shape(&["id", "name"], &[], Format::Unknown("no serde".into()));
    v1.view = Some(Ok(views::Shape {
        branches: Vec::new(),
    }));
    let e = combine(
        &v1,
        &[part(cols(&["id"]), Rows::All, "SELECT on view demo.v2")],
    )
    .unwrap_err();
    assert!(
        e.0.contains("is a view") && e.0.contains("not views of views"),
        "{e}"
    );
}

#[test]
fn constraints_of_hidden_columns_leave_the_reply() {
    for protocol in [Protocol::Binary, Protocol::Compact] {
        let mut w = Writer::new(protocol);
        w.message("get_primary_keys", MessageType::Reply, 3)
            .struct_begin();
        w.field(Ty::Struct, 0).struct_begin();
        w.field(Ty::List, 1).list_begin(Ty::Struct, 2);
        for (i, c) in ["id", "SSN"].iter().enumerate() {
            w.struct_begin();
            w.field(Ty::String, 1).string(b"demo");
            w.field(Ty::String, 2).string(b"customer");
            w.field(Ty::String, 3).string(c.as_bytes());
            w.field(Ty::I32, 4).i32(i as i32 + 1);
            w.field_bool(6, true);
            w.struct_end();
        }
        w.struct_end().struct_end();
        let out = narrow_reply(
            protocol,
            &w.finish(false),
            "get_primary_keys",
            &narrowed(&["ssn"], Rows::All),
            64,
        )
        .unwrap();
        let keys = success(protocol, &out);
        let names: Vec<&str> = keys
            .field(1)
            .unwrap()
            .as_list()
            .iter()
            .filter_map(|k| k.field(3)?.as_str())
            .collect();
        assert_eq!(names, ["id"], "{protocol:?}");
        assert_eq!(
            keys.path(&[1]).unwrap().as_list()[0].field(6),
            Some(&Value::Bool(true))
        );
    }
}

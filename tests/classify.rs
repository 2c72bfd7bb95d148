//! How the policy reads a call (no sockets): argument extraction by path, listing splices, the
//! alter_table diff, and classification — the objects, locations and storage needs a call names
//! (location-bearing DDL, Hive 4 request methods, drops, indexes, grants, Iceberg commits).

mod common;

use common::{CALL, EXCEPTION, REPLY, W};
use hms_guard::decision::authz::AlterKind;
use hms_guard::decision::classify::alter_changes;
use hms_guard::decision::filter::filter_list_reply;
use hms_guard::wire::codec::path::{strings_at, values_at};
use hms_guard::wire::codec::value::{read_value, Value};
use hms_guard::wire::codec::Protocol;
use hms_guard::wire::codec::{reader::Reader, Ty};
use hms_guard::wire::router::EACH;
use hms_guard::wire::schema::{read_request, ReadLimits};

const LIMITS: ReadLimits = ReadLimits {
    versions: hms_guard::wire::schema::types::ALL_VERSIONS,
    max_depth: 64,
    max_name_bytes: 1024,
};

const BOTH: [Protocol; 2] = [Protocol::Binary, Protocol::Compact];

fn names_reply(p: Protocol, names: &[&str], extra_field: bool) -> Vec<u8> {
    let mut w = W::new(p);
    w.message("get_tables", REPLY, 3).begin_struct();
    w.field(15, 0).list(11, names.len() as i32);
    for n in names {
        w.string(n.as_bytes());
    }
    if extra_field {
        w.field(11, 9).string(b"a field from a newer metastore");
    }
    w.end_struct();
    w.bytes()
}

#[test]
fn listing_splice_keeps_chosen_names_and_other_fields() {
    for p in BOTH {
        let reply = names_reply(p, &["customer", "secret", "promotion", "x"], true);
        let out = filter_list_reply(p, &reply, &[], 64, |v| {
            v.as_str() != Some("secret") && v.as_str() != Some("x")
        })
        .unwrap()
        .unwrap();
        assert_eq!((out.kept, out.dropped), (2, 2));
        let want = names_reply(p, &["customer", "promotion"], true);
        assert_eq!(
            out.reply.to_vec(),
            want,
            "{p}: same bytes as a reply that only held those"
        );
        // Keeping everything reproduces the original exactly.
        let all = filter_list_reply(p, &reply, &[], 64, |_| true)
            .unwrap()
            .unwrap();
        assert_eq!(all.reply.to_vec(), reply);
        // An exception reply passes untouched.
        let mut w = W::new(p);
        w.message("get_tables", REPLY, 3)
            .begin_struct()
            .field(12, 1)
            .begin_struct();
        w.field(11, 1)
            .string(b"no such db")
            .end_struct()
            .end_struct();
        assert!(filter_list_reply(p, &w.bytes(), &[], 64, |_| false)
            .unwrap()
            .is_none());
        let mut w = W::new(p);
        w.message("get_tables", EXCEPTION, 3)
            .begin_struct()
            .field(11, 1)
            .string(b"boom")
            .end_struct();
        assert!(filter_list_reply(p, &w.bytes(), &[], 64, |_| false)
            .unwrap()
            .is_none());
    }
}

/// `list<Table>`-like elements with unknown fields: kept elements are copied byte for byte.
#[test]
fn listing_splice_of_structs_preserves_unknown_fields() {
    for p in BOTH {
        let table = |w: &mut W, name: &str| {
            w.begin_struct();
            w.field(11, 1)
                .string(name.as_bytes())
                .field(11, 2)
                .string(b"db");
            w.field(11, 3)
                .string(b"owner")
                .field(13, 77)
                .map(11, 11, 1)
                .string(b"k")
                .string(b"v");
            w.bool_field(78, true);
            w.end_struct();
        };
        let build = |names: &[&str], wrapped: bool| {
            let mut w = W::new(p);
            w.message("get_table_objects_by_name_req", REPLY, 1)
                .begin_struct();
            if wrapped {
                w.field(12, 0)
                    .begin_struct()
                    .field(15, 1)
                    .list(12, names.len() as i32);
            } else {
                w.field(15, 0).list(12, names.len() as i32);
            }
            for n in names {
                table(&mut w, n);
            }
            if wrapped {
                w.field(11, 5).string(b"trailing").end_struct();
            }
            w.end_struct();
            w.bytes()
        };
        for wrapped in [false, true] {
            let reply = build(&["a", "b", "c"], wrapped);
            let path: &[i16] = if wrapped { &[1] } else { &[] };
            let out = filter_list_reply(p, &reply, path, 64, |v| {
                v.field(1).and_then(Value::as_str) != Some("b")
            })
            .unwrap()
            .unwrap();
            assert_eq!(
                out.reply.to_vec(),
                build(&["a", "c"], wrapped),
                "{p} wrapped={wrapped}"
            );
        }
    }
}

#[test]
fn values_by_path_with_each() {
    for p in BOTH {
        // add_partitions(1: list<Partition{2: dbName, 3: tableName}>)
        let mut w = W::new(p);
        w.message("add_partitions", CALL, 1)
            .begin_struct()
            .field(15, 1)
            .list(12, 3);
        for (d, t) in [("db1", "t1"), ("db1", "t2"), ("db2", "t1")] {
            w.begin_struct().field(15, 1).list(11, 1).string(b"2024");
            w.field(11, 2)
                .string(d.as_bytes())
                .field(11, 3)
                .string(t.as_bytes())
                .end_struct();
        }
        w.end_struct();
        let msg = w.bytes();
        let args = read_request(p, &msg, LIMITS, true).expect("valid").args;
        assert_eq!(strings_at(&args, &[1, EACH, 2]), ["db1", "db1", "db2"]);
        assert_eq!(strings_at(&args, &[1, EACH, 3]), ["t1", "t2", "t1"]);
        assert!(strings_at(&args, &[2]).is_empty(), "absent field");
        assert!(values_at(&args, &[1, EACH, 9]).is_empty());
        // Truncated args are refused, not a silent "nothing found".
        assert!(read_request(p, &msg[..msg.len() - 4], LIMITS, true).is_err());
    }
}

fn table(params: &[(&str, &str)], location: &str, owner: &str, name: &str, comment: &str) -> Value {
    let mut w = W::binary();
    w.begin_struct();
    w.field(11, 1)
        .string(name.as_bytes())
        .field(11, 2)
        .string(b"demo");
    w.field(11, 3).string(owner.as_bytes()).field(8, 4).i32(1);
    w.field(12, 7)
        .begin_struct()
        .field(11, 2)
        .string(location.as_bytes())
        .end_struct();
    w.field(13, 9).map(11, 11, params.len() as i32 + 1);
    w.string(b"comment").string(comment.as_bytes());
    for (k, v) in params {
        w.string(k.as_bytes()).string(v.as_bytes());
    }
    w.end_struct();
    let bytes = w.bytes();
    let mut r = Reader::new(Protocol::Binary, &bytes, 64);
    read_value(&mut r, Ty::Struct, None).unwrap()
}

#[test]
fn alter_table_diff() {
    let loc = "s3a://datalake/datawarehouse/t";
    let cur = table(
        &[("numRows", "1"), ("totalSize", "10")],
        loc,
        "mary",
        "t",
        "c",
    );
    let stats = table(
        &[
            ("spark.sql.statistics.numRows", "5"),
            ("totalSize", "99"),
            ("numRows", "5"),
        ],
        loc,
        "mary",
        "t",
        "c",
    );
    assert_eq!(
        alter_changes("demo", "t", &cur, &stats),
        [AlterKind::StatsOnly]
    );
    // Map order does not matter.
    let reordered = table(
        &[("totalSize", "10"), ("numRows", "1")],
        loc,
        "mary",
        "t",
        "c",
    );
    assert_eq!(
        alter_changes("demo", "t", &cur, &reordered),
        [AlterKind::StatsOnly]
    );
    let other = table(&[("numRows", "1")], loc, "mary", "t", "a new comment");
    assert_eq!(alter_changes("demo", "t", &cur, &other), [AlterKind::Other]);
    let moved = table(&[], "s3a://datalake/defloc/x", "mary", "t", "c");
    assert_eq!(
        alter_changes("demo", "t", &cur, &moved),
        [AlterKind::Location]
    );
    let owner = table(&[], loc, "john", "t", "c");
    assert_eq!(alter_changes("demo", "t", &cur, &owner), [AlterKind::Owner]);
    let renamed = table(&[], loc, "mary", "t2", "c");
    assert_eq!(
        alter_changes("demo", "t", &cur, &renamed),
        [AlterKind::Rename {
            new_db: "demo".into()
        }]
    );
    assert_eq!(
        alter_changes("DEMO", "T", &cur, &stats),
        [AlterKind::StatsOnly],
        "names fold case"
    );
    // Everything one call changes is listed: renamed, given away, moved and re-commented.
    let all = table(&[], "s3a://datalake/defloc/x", "john", "t2", "new");
    assert_eq!(
        alter_changes("demo", "t", &cur, &all),
        [
            AlterKind::Rename {
                new_db: "demo".into()
            },
            AlterKind::Owner,
            AlterKind::Location,
            AlterKind::Other
        ]
    );
}

/// A facts store whose metastore cannot be reached (port 1): any lookup fails.
fn unreachable_facts() -> hms_guard::decision::facts::FactsStore {
    use hms_guard::config::ThriftUri;
    use hms_guard::decision::facts::{ClientConfig, FactsStore, MetaClient, MetaSource};
    use std::time::Duration;
    let t = Duration::from_millis(200);
    let up = hms_guard::upstream::Upstreams::new(
        vec![ThriftUri::parse("thrift://127.0.0.1:1").unwrap()],
        hms_guard::upstream::Timeouts {
            connect: t,
            write: t,
            read: t,
        },
    );
    let client = MetaClient::new(
        up,
        ClientConfig {
            service_user: "hms-guard".into(),
            timeout: Duration::from_millis(500),
            max_reply_bytes: 1 << 20,
            max_idle: 1,
        },
    );
    let metrics = std::sync::Arc::new(hms_guard::ops::metrics::Metrics::new());
    FactsStore::new(
        Box::new(MetaSource::new(client, metrics.clone())),
        Duration::from_secs(30),
        64,
        metrics,
    )
}

/// The args of a call as the connection hands them to the policy: written, then read back
/// schema-exact.
fn call_with(method: &str, args: Value) -> Value {
    use hms_guard::wire::codec::writer::Writer;
    use hms_guard::wire::codec::MessageType;
    let mut w = Writer::new(Protocol::Binary);
    w.message(method, MessageType::Call, 7).value(&args);
    let msg = w.finish(false).to_vec();
    read_request(Protocol::Binary, &msg, LIMITS, true)
        .expect("schema-valid call")
        .args
}

fn s(v: &str) -> Value {
    Value::Bytes(v.as_bytes().to_vec())
}

#[tokio::test]
async fn storage_needs_of_location_bearing_ddl() {
    use hms_guard::decision::classify::{classify, StorageNeed};
    use hms_guard::wire::router::route;
    let facts = unreachable_facts();
    let rule = route("create_table", hms_guard::wire::schema::types::ALL_VERSIONS)
        .unwrap()
        .rule;
    let table = |loc: &str, ty: &str| {
        let mut sd = vec![];
        if !loc.is_empty() {
            sd.push((2, s(loc)));
        }
        // The metastore judges "external" by the parameter EXTERNAL=TRUE, not the type.
        let params = if ty == "EXTERNAL_TABLE" {
            Value::Map(vec![(s("EXTERNAL"), s("TRUE"))])
        } else {
            Value::Map(vec![])
        };
        Value::Struct(vec![
            (1, s("t")),
            (2, s("d")),
            (7, Value::Struct(sd)),
            (9, params),
            (12, s(ty)),
        ])
    };
    // External table with a location: the user's role must read it.
    let msg = call_with(
        "create_table",
        Value::Struct(vec![(1, table("s3a://b/x/", "EXTERNAL_TABLE"))]),
    );
    let c = classify(&rule, &msg, &facts).await.unwrap();
    assert_eq!(
        c[0].storage,
        vec![StorageNeed {
            location: "s3a://b/x/".into(),
            write: false
        }]
    );
    // A location ending in the table's name may be its default place under the database:
    // that needs the database's location; the metastore is unreachable, so it fails closed
    // (managed or external). Another name needs no lookup: it is an explicit location.
    for ty in ["MANAGED_TABLE", "EXTERNAL_TABLE"] {
        let msg = call_with(
            "create_table",
            Value::Struct(vec![(1, table("s3://b/d.db/T/", ty))]),
        );
        assert!(classify(&rule, &msg, &facts).await.is_err(), "{ty}");
    }
    let msg = call_with(
        "create_table",
        Value::Struct(vec![(1, table("s3://b/y", "MANAGED_TABLE"))]),
    );
    assert_eq!(
        classify(&rule, &msg, &facts).await.unwrap()[0].storage,
        vec![StorageNeed {
            location: "s3://b/y".into(),
            write: true
        }]
    );
    // A Spark data-source table: a placeholder sd location, the data at the serde `path`.
    let spark_table = Value::Struct(vec![
        (1, s("t")),
        (2, s("d")),
        (
            7,
            Value::Struct(vec![
                (2, s("s3a://b/d.db/t-__PLACEHOLDER__")),
                (
                    7,
                    Value::Struct(vec![(
                        3,
                        Value::Map(vec![(s("path"), s("s3a://b/elsewhere/data"))]),
                    )]),
                ),
            ]),
        ),
        (12, s("EXTERNAL_TABLE")),
    ]);
    // The type says external, the parameter does not: the metastore stores it as a managed
    // table and a drop deletes its data, so the location needs write access.
    let msg = call_with(
        "create_table",
        Value::Struct(vec![(1, spark_table.without(&[]))]),
    );
    assert_eq!(
        classify(&rule, &msg, &facts).await.unwrap()[0].storage,
        vec![StorageNeed {
            location: "s3a://b/elsewhere/data".into(),
            write: true
        }]
    );
    let spark_table = match spark_table {
        Value::Struct(mut f) => {
            f.push((9, Value::Map(vec![(s("EXTERNAL"), s("true"))])));
            f.sort_by_key(|(id, _)| *id);
            Value::Struct(f)
        }
        _ => unreachable!(),
    };
    let msg = call_with("create_table", Value::Struct(vec![(1, spark_table)]));
    let c = classify(&rule, &msg, &facts).await.unwrap();
    assert_eq!(
        c[0].storage,
        vec![StorageNeed {
            location: "s3a://b/elsewhere/data".into(),
            write: false
        }]
    );
    // No location: the table goes to its default place, which must be new to be exempt; that
    // needs the database's location, and unreachable facts fail closed.
    let msg = call_with(
        "create_table",
        Value::Struct(vec![(1, table("", "MANAGED_TABLE"))]),
    );
    assert!(classify(&rule, &msg, &facts).await.is_err());
    // A view has no place (the metastore makes no directory for a VIRTUAL_VIEW): no lookup.
    let msg = call_with(
        "create_table",
        Value::Struct(vec![(1, table("", "VIRTUAL_VIEW"))]),
    );
    let c = classify(&rule, &msg, &facts).await.unwrap();
    assert!(c[0].storage.is_empty() && c[0].default_places.is_empty());
    // A partition with a location needs the table's location: unreachable facts fail closed.
    let part = Value::Struct(vec![
        (1, Value::List(vec![s("1")])),
        (2, s("d")),
        (3, s("t")),
        (6, Value::Struct(vec![(2, s("s3a://elsewhere/p"))])),
    ]);
    let rule = route(
        "add_partition",
        hms_guard::wire::schema::types::ALL_VERSIONS,
    )
    .unwrap()
    .rule;
    let msg = call_with("add_partition", Value::Struct(vec![(1, part.clone())]));
    assert!(classify(&rule, &msg, &facts).await.is_err());
    // Without a location, an added partition needs no fact lookup.
    let bare = Value::Struct(vec![
        (1, Value::List(vec![s("1")])),
        (2, s("d")),
        (3, s("t")),
    ]);
    let msg = call_with("add_partition", Value::Struct(vec![(1, bare)]));
    let c = classify(&rule, &msg, &facts).await.unwrap();
    assert!(c[0].storage.is_empty());
}

#[test]
fn locations_under_a_table() {
    use hms_guard::decision::storage::location_is_under as under;
    assert!(under("s3a://bkt/t/ds=1", "s3a://bkt/t"));
    assert!(under("s3a://bkt/t/ds=1/", "s3a://bkt/t/"));
    assert!(under("s3a://bkt/t", "s3a://bkt/t/"));
    assert!(!under("s3a://bkt/t2/ds=1", "s3a://bkt/t"));
    assert!(!under("s3a://bkt/other", "s3a://bkt/t"));
    assert!(!under("s3a://bkt/t", ""));
    // A partition location that climbs out of its table is outside it (and checked).
    assert!(!under("s3a://bkt/t/../secret", "s3a://bkt/t"));
}

#[test]
fn an_alter_is_checked_for_every_new_location_whatever_else_it_changes() {
    use hms_guard::decision::classify::{alter_storage_needs, StorageNeed};
    let table = |name: &str, loc: &str| {
        Value::Struct(vec![
            (1, s(name)),
            (2, s("d")),
            (7, Value::Struct(vec![(2, s(loc))])),
            (12, s("MANAGED_TABLE")),
        ])
    };
    let current = table("t", "s3a://b/d.db/t");
    // A rename that also relocates: the rename rule and the new location both apply.
    let renamed_and_moved = table("t2", "s3a://b/warehouse/secret");
    assert!(matches!(
        alter_changes("d", "t", &current, &renamed_and_moved)[..],
        [AlterKind::Rename { .. }, AlterKind::Location]
    ));
    assert_eq!(
        alter_storage_needs(Some(&current), &renamed_and_moved),
        vec![StorageNeed {
            location: "s3a://b/warehouse/secret".into(),
            write: true
        }]
    );
    // Only renamed: no new location.
    assert!(alter_storage_needs(Some(&current), &table("t2", "s3a://b/d.db/t")).is_empty());
}

#[test]
fn table_format_and_serde_locations_are_locations() {
    use hms_guard::decision::classify::{alter_storage_needs, table_locations};
    let iceberg = |meta: &str| {
        Value::Struct(vec![
            (1, s("t")),
            (2, s("d")),
            (7, Value::Struct(vec![(2, s("s3a://lake/d.db/t"))])),
            (
                9,
                Value::Map(vec![
                    (s("table_type"), s("ICEBERG")),
                    (s("metadata_location"), s(meta)),
                ]),
            ),
            (12, s("EXTERNAL_TABLE")),
        ])
    };
    // A commit under the table's own location: nothing new to check.
    let own = iceberg("s3a://lake/d.db/t/metadata/00001.metadata.json");
    assert_eq!(table_locations(&own), ["s3a://lake/d.db/t"]);
    let next = iceberg("s3a://lake/d.db/t/metadata/00002.metadata.json");
    assert!(alter_storage_needs(Some(&own), &next).is_empty());
    // Pointed at another table's metadata, or at a local file: checked.
    let foreign = iceberg("s3a://lake/secret.db/s/metadata/00009.metadata.json");
    assert_eq!(
        alter_storage_needs(Some(&own), &foreign)[0].location,
        "s3a://lake/secret.db/s/metadata/00009.metadata.json"
    );
    let local = iceberg("file:///etc/passwd");
    assert_eq!(table_locations(&local)[1], "file:///etc/passwd");
    assert_eq!(
        alter_changes("d", "t", &own, &foreign),
        [AlterKind::Location]
    );
    // A commit under the table's own location is a data write (INSERT), not a location
    // change; with another change it is that change (ALTER covers the commit).
    assert_eq!(alter_changes("d", "t", &own, &next), [AlterKind::Commit]);
    let mut with_schema = next.clone();
    if let Value::Struct(f) = &mut with_schema {
        f.push((10, s("a view text")));
    }
    assert_eq!(
        alter_changes("d", "t", &own, &with_schema),
        [AlterKind::Other]
    );
    // Spark's data-source path, in any case.
    let spark = Value::Struct(vec![(
        7,
        Value::Struct(vec![(
            7,
            Value::Struct(vec![(3, Value::Map(vec![(s("PATH"), s("s3a://lake/x"))]))]),
        )]),
    )]);
    assert_eq!(table_locations(&spark), ["s3a://lake/x"]);
    // Hudi's and Delta's Flink paths and Flink's prefixed options, in any case; a change of
    // one of them under the table is an ALTER, not a commit (only Iceberg's pointers are).
    let with_param = |k: &str, v: &str| {
        Value::Struct(vec![
            (1, s("t")),
            (2, s("d")),
            (7, Value::Struct(vec![(2, s("s3a://lake/d.db/t"))])),
            (9, Value::Map(vec![(s(k), s(v))])),
        ])
    };
    for key in ["path", "Hoodie.Base.Path", "table-path", "FLINK.TABLE-PATH"] {
        let t = with_param(key, "s3a://lake/secret/x");
        assert_eq!(
            table_locations(&t),
            ["s3a://lake/d.db/t", "s3a://lake/secret/x"],
            "{key}"
        );
        let inside = with_param(key, "s3a://lake/d.db/t/sub");
        let inside2 = with_param(key, "s3a://lake/d.db/t/other");
        assert_eq!(
            alter_changes("d", "t", &inside, &inside2),
            [AlterKind::Other],
            "{key}"
        );
    }
}

#[test]
fn shared_descriptor_partitions_lie_at_the_joined_strings() {
    use hms_guard::decision::classify::shared_sd_locations;
    let spec = |base: Option<&str>, rels: &[Option<&str>]| {
        let mut f = vec![(
            1,
            Value::List(
                rels.iter()
                    .map(|r| Value::Struct(r.map(|r| (4, s(r))).into_iter().collect()))
                    .collect(),
            ),
        )];
        if let Some(b) = base {
            f.push((2, Value::Struct(vec![(2, s(b))])));
        }
        Value::Struct(f)
    };
    assert_eq!(
        shared_sd_locations(&[spec(
            Some("s3a://b/temp"),
            &[Some("orary/x"), Some("/ds=1"), None]
        )]),
        [
            "s3a://b/temporary/x",
            "s3a://b/temp/ds=1",
            "s3a://b/tempnull"
        ]
    );
    assert_eq!(
        shared_sd_locations(&[spec(None, &[Some("/x")])]),
        ["null/x"]
    );
}

/// The request-struct methods of Hive 3 and 4 are decided by their real rules, on the names
/// at the field ids the metastore's IDL gives them (not admin-only fallbacks).
#[tokio::test]
async fn hive4_request_methods_classify_to_the_objects_they_name() {
    use hms_guard::decision::authz::{Object, Operation};
    use hms_guard::decision::classify::classify;
    use hms_guard::wire::router::{route, Rule};
    let facts = unreachable_facts();
    let t = Object::table("sales", "orders");
    // (method, its request struct with the names at the 4.x field ids, expected operation)
    let cases: Vec<(&str, Value, Operation)> = vec![
        (
            "drop_table_req",
            Value::Struct(vec![(2, s("Sales ")), (3, s("ORDERS"))]),
            Operation::DropTable { table: t.clone() },
        ),
        (
            "get_partitions_req",
            Value::Struct(vec![(2, s("sales")), (3, s("orders"))]),
            Operation::ReadTables(vec![t.clone()]),
        ),
        (
            "get_partition_names_req",
            Value::Struct(vec![(1, s("sales")), (2, s("orders"))]),
            Operation::ReadTables(vec![t.clone()]),
        ),
        (
            "drop_partition_req",
            Value::Struct(vec![(2, s("sales")), (3, s("orders"))]),
            Operation::DropPartitions { table: t.clone() },
        ),
        (
            "append_partition_req",
            Value::Struct(vec![(2, s("sales")), (3, s("orders"))]),
            Operation::AddPartitions { table: t.clone() },
        ),
    ];
    for (method, req, want) in cases {
        let m = route(method, hms_guard::wire::schema::types::ALL_VERSIONS).unwrap();
        assert!(!matches!(m.rule, Rule::AdminOnly(_)), "{method}");
        let def = hms_guard::wire::schema::method(method).unwrap();
        // Fill the request's other required fields with values of their declared type.
        let hms_guard::wire::schema::T::Struct(req_def) = def.args.fields[0].ty[0] else {
            panic!("{method}: takes a request struct")
        };
        let req = fill_required(req_def, req);
        let msg = call_with(method, Value::Struct(vec![(1, req)]));
        let c = classify(&m.rule, &msg, &facts).await.unwrap();
        assert_eq!(c[0].op, want, "{method}");
    }
}

/// `base` plus a value for every required field of `def` it lacks (strings "x", numbers 0,
/// empty containers, structs filled the same way).
fn fill_required(def: &'static hms_guard::wire::schema::StructDef, base: Value) -> Value {
    use hms_guard::wire::schema::T;
    let Value::Struct(mut fields) = base else {
        panic!("a struct")
    };
    fn of(t: &T) -> Value {
        match t {
            T::Bool => Value::Bool(false),
            T::Double => Value::Double(0.0),
            // The value writer writes integers as i64: a request needing another width
            // fails the schema read in `call_with`, loudly.
            T::Byte | T::I16 | T::I32 | T::Enum(_) | T::I64 => Value::Int(0),
            T::String | T::Binary => s("x"),
            T::Struct(d) => fill_required(d, Value::Struct(vec![])),
            T::List(_) | T::Set(_) => Value::List(vec![]),
            T::Map(_, _) => Value::Map(vec![]),
        }
    }
    for f in def.fields.iter().filter(|f| f.required_in != 0) {
        if !fields.iter().any(|(id, _)| *id == f.id) {
            fields.push((f.id, of(&f.ty[f.ty.len() - 1])));
        }
    }
    fields.sort_by_key(|(id, _)| *id);
    Value::Struct(fields)
}

/// What a later drop deletes is judged as the metastore judges it (Hive 2.3, measured: the
/// parameter EXTERNAL, compared without case, decides; the table type does not), and turning
/// an external table into one whose drop deletes data is a location change of every location
/// it keeps.
#[test]
fn a_drop_deletes_what_the_metastore_says_it_deletes() {
    use hms_guard::decision::classify::{alter_storage_needs, deletes_on_drop, StorageNeed};
    let table = |ty: &str, params: &[(&str, &str)]| {
        Value::Struct(vec![
            (1, s("t")),
            (2, s("d")),
            (7, Value::Struct(vec![(2, s("s3a://b/protected/t"))])),
            (
                9,
                Value::Map(params.iter().map(|(k, v)| (s(k), s(v))).collect()),
            ),
            (12, s(ty)),
        ])
    };
    assert!(deletes_on_drop(&table("EXTERNAL_TABLE", &[])));
    assert!(deletes_on_drop(&table(
        "MANAGED_TABLE",
        &[("EXTERNAL", "FALSE")]
    )));
    assert!(!deletes_on_drop(&table(
        "MANAGED_TABLE",
        &[("EXTERNAL", "TRUE")]
    )));
    assert!(!deletes_on_drop(&table(
        "EXTERNAL_TABLE",
        &[("EXTERNAL", "true")]
    )));
    assert!(deletes_on_drop(&table(
        "EXTERNAL_TABLE",
        &[("EXTERNAL", "TRUE"), ("external.table.purge", "TRUE")]
    )));
    let external = table("EXTERNAL_TABLE", &[("EXTERNAL", "TRUE")]);
    let managed = table("MANAGED_TABLE", &[("EXTERNAL", "FALSE")]);
    assert_eq!(
        alter_storage_needs(Some(&external), &managed),
        [StorageNeed {
            location: "s3a://b/protected/t".into(),
            write: true
        }]
    );
    assert!(alter_changes("d", "t", &external, &managed).contains(&AlterKind::Location));
    // The other way round deletes less: nothing new to check.
    assert!(alter_storage_needs(Some(&managed), &external).is_empty());
}

#[test]
fn every_place_a_table_or_database_names_is_a_location() {
    use hms_guard::decision::classify::{database_locations, table_locations};
    let with_params = |params: &[(&str, &str)]| {
        Value::Struct(vec![
            (7, Value::Struct(vec![(2, s("s3a://lake/d.db/t"))])),
            (
                9,
                Value::Map(params.iter().map(|(k, v)| (s(k), s(v))).collect()),
            ),
        ])
    };
    // Paimon's location kept in the properties, a Flink generic table's path.
    assert_eq!(
        table_locations(&with_params(&[("paimon_location", "s3a://lake/other/p")])),
        ["s3a://lake/d.db/t", "s3a://lake/other/p"]
    );
    assert_eq!(
        table_locations(&with_params(&[("flink.path", "s3a://lake/other/f")])),
        ["s3a://lake/d.db/t", "s3a://lake/other/f"]
    );
    // Iceberg's writer paths, copied into the parameters by its catalogs.
    for key in [
        "write.data.path",
        "write.metadata.path",
        "write.object-storage.path",
        "write.folder-storage.path",
    ] {
        assert_eq!(
            table_locations(&with_params(&[(key, "s3a://lake/other/w")])),
            ["s3a://lake/d.db/t", "s3a://lake/other/w"],
            "{key}"
        );
        // Under the table's own location: nothing of its own to check.
        assert_eq!(
            table_locations(&with_params(&[(key, "s3a://lake/d.db/t/data")])),
            ["s3a://lake/d.db/t"],
            "{key}"
        );
    }
    // Keys are compared without case (a check too many rather than one missed).
    assert_eq!(
        table_locations(&with_params(&[("FLINK.PATH", "s3a://lake/other/f")])),
        ["s3a://lake/d.db/t", "s3a://lake/other/f"]
    );
    // A database's location and its managed-table location (Hive 4).
    let db = Value::Struct(vec![
        (1, s("d")),
        (3, s("s3a://lake/d.db")),
        (10, s("s3a://lake/managed/d.db")),
    ]);
    assert_eq!(
        database_locations(&db),
        ["s3a://lake/d.db", "s3a://lake/managed/d.db"]
    );
}

#[tokio::test]
async fn an_index_is_the_create_of_the_table_it_carries_and_names() {
    use hms_guard::decision::authz::{Object, Operation};
    use hms_guard::decision::classify::{classify, qualified_index_table, StorageNeed};
    use hms_guard::wire::router::route;
    let facts = unreachable_facts();
    let rule = route(
        "add_index",
        hms_guard::wire::schema::types::V2_3 | hms_guard::wire::schema::types::FB303,
    )
    .unwrap()
    .rule;
    let index = |idx_table: &str, sd_loc: Option<&str>| {
        let mut f = vec![
            (1, s("i")),
            (2, s("compact")),
            (3, s("d")),
            (4, s("base")),
            (7, s(idx_table)),
        ];
        if let Some(l) = sd_loc {
            f.push((8, Value::Struct(vec![(2, s(l))])));
        }
        Value::Struct(f)
    };
    let table = |db: &str, name: &str, loc: &str| {
        Value::Struct(vec![
            (1, s(name)),
            (2, s(db)),
            (3, s("admin")),
            (7, Value::Struct(vec![(2, s(loc))])),
        ])
    };
    // The base table's ownership, then the index table's create with its location checked
    // (read and write: a drop of the index deletes it).
    let msg = call_with(
        "add_index",
        Value::Struct(vec![
            (1, index("d__base_i__", None)),
            (2, table("d", "d__base_i__", "s3://victim/data")),
        ]),
    );
    let c = classify(&rule, &msg, &facts).await.unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(
        c[0].op,
        Operation::OwnerOfAll(vec![Object::table("d", "base")])
    );
    assert_eq!(
        c[1].op,
        Operation::CreateTable {
            table: Object::table("d", "d__base_i__")
        }
    );
    assert_eq!(
        c[1].storage,
        vec![StorageNeed {
            location: "s3://victim/data".into(),
            write: true
        }]
    );
    // The index's own descriptor is a location too, where it is not the table's.
    let msg = call_with(
        "add_index",
        Value::Struct(vec![
            (1, index("x", Some("s3://victim/other"))),
            (2, table("d", "x", "s3://victim/data")),
        ]),
    );
    let c = classify(&rule, &msg, &facts).await.unwrap();
    let locs: Vec<_> = c[1].storage.iter().map(|n| n.location.as_str()).collect();
    assert_eq!(locs, ["s3://victim/data", "s3://victim/other"]);
    // A dotted index table name lies in another database: the create is judged there.
    let msg = call_with(
        "add_index",
        Value::Struct(vec![
            (1, index("Other.X", None)),
            (2, table("other", "x", "s3://b/o")),
        ]),
    );
    let c = classify(&rule, &msg, &facts).await.unwrap();
    assert_eq!(
        c[1].op,
        Operation::CreateTable {
            table: Object::table("other", "x")
        }
    );
    // The table carried must be the table the index names; and there must be one.
    let msg = call_with(
        "add_index",
        Value::Struct(vec![
            (1, index("x", None)),
            (2, table("other", "x", "s3://b/o")),
        ]),
    );
    assert!(classify(&rule, &msg, &facts).await.is_err());
    let msg = call_with("add_index", Value::Struct(vec![(1, index("x", None))]));
    assert!(classify(&rule, &msg, &facts).await.is_err());
    // A drop needs the recorded index (its table): unreachable facts fail closed.
    let rule = route(
        "drop_index_by_name",
        hms_guard::wire::schema::types::ALL_VERSIONS,
    )
    .unwrap()
    .rule;
    let msg = call_with(
        "drop_index_by_name",
        Value::Struct(vec![
            (1, s("d")),
            (2, s("base")),
            (3, s("i")),
            (4, Value::Bool(true)),
        ]),
    );
    assert!(classify(&rule, &msg, &facts).await.is_err());
    // Names as the metastore qualifies them.
    let q = |db, n| qualified_index_table(db, n);
    assert_eq!(q("d", "t"), ("d".into(), "t".into()));
    assert_eq!(q("d", "o.t"), ("o".into(), "t".into()));
    assert_eq!(q("d", "o.t.u"), ("o".into(), "t".into()));
    assert_eq!(q("d", "t."), ("d".into(), "t.".into()));
    assert_eq!(q("d", ".t"), ("".into(), "t".into()));
}

#[tokio::test]
async fn a_grant_request_says_whether_it_revokes() {
    use hms_guard::decision::authz::{Operation, PrincipalKind, Privilege};
    use hms_guard::decision::classify::classify;
    use hms_guard::wire::router::route;
    let facts = unreachable_facts();
    let rule = route(
        "grant_revoke_privileges",
        hms_guard::wire::schema::types::ALL_VERSIONS,
    )
    .unwrap()
    .rule;
    // GrantRevokePrivilegeRequest(1 requestType, 2 PrivilegeBag(1 list<HiveObjectPrivilege>)).
    let request_in = |ty: Option<i32>, catalog: Option<&str>| {
        let mut w = W::new(Protocol::Binary);
        w.message("grant_revoke_privileges", CALL, 4).begin_struct();
        w.field(12, 1).begin_struct();
        if let Some(t) = ty {
            w.field(8, 1).i32(t);
        }
        w.field(12, 2).begin_struct();
        w.field(15, 1).list(12, 1).begin_struct();
        w.field(12, 1).begin_struct();
        w.field(8, 1).i32(3);
        w.field(11, 2).string(b"d");
        w.field(11, 3).string(b"t");
        if let Some(c) = catalog {
            w.field(11, 6).string(c.as_bytes());
        }
        w.end_struct();
        w.field(11, 2).string(b"john");
        w.field(8, 3).i32(1);
        w.field(12, 4).begin_struct();
        w.field(11, 1).string(b"SELECT");
        w.field(11, 3).string(b"admin");
        w.end_struct();
        w.end_struct().end_struct().end_struct().end_struct();
        read_request(Protocol::Binary, &w.bytes(), LIMITS, true)
            .expect("schema-valid call")
            .args
    };
    let request = |ty: Option<i32>| request_in(ty, None);
    let c = classify(&rule, &request(Some(1)), &facts).await.unwrap();
    assert!(matches!(c[0].op, Operation::GrantPrivileges(_)));
    let c = classify(&rule, &request(Some(2)), &facts).await.unwrap();
    match &c[0].op {
        Operation::RevokePrivileges(items) => {
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].principal.kind, PrincipalKind::User);
            assert_eq!(items[0].principal.name, "john");
            assert_eq!(items[0].privilege, Privilege::Select);
            assert_eq!(items[0].target.to_string(), "table d.t");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        (c[0].db.as_deref(), c[0].table.as_deref()),
        (Some("d"), Some("t"))
    );
    // No request type: the metastore refuses it, and so does the proxy.
    assert!(classify(&rule, &request(None), &facts).await.is_err());
    // A revoke in another catalog (Hive 3+) is not judged on the default catalog's grants.
    assert!(classify(&rule, &request_in(Some(2), Some("other")), &facts)
        .await
        .is_err());
    assert!(classify(&rule, &request_in(Some(2), Some("hive")), &facts)
        .await
        .is_ok());
}

#[test]
fn iceberg_commits_are_recognised_on_every_scheme_with_their_mirrors() {
    use hms_guard::decision::classify::table_locations;
    let ice = |loc: &str, params: &[(&str, &str)]| {
        Value::Struct(vec![
            (1, s("t")),
            (2, s("d")),
            (7, Value::Struct(vec![(2, s(loc))])),
            (
                9,
                Value::Map(params.iter().map(|(k, v)| (s(k), s(v))).collect()),
            ),
            (12, s("EXTERNAL_TABLE")),
        ])
    };
    for (table, meta) in [
        (
            "file:/lab/warehouse/d.db/t",
            "file:/lab/warehouse/d.db/t/metadata",
        ),
        (
            "file:/lab/warehouse/d.db/t",
            "file:///lab/warehouse/d.db/t/metadata",
        ),
        (
            "hdfs://NN:8020/w/d.db/t",
            "hdfs://nn:8020/w/d.db/t/metadata",
        ),
        ("gs://lake/d.db/t", "gs://lake/d.db/t/metadata"),
        ("s3a://lake/d.db/t/", "s3://lake/d.db/t/metadata"),
        (
            "abfss://c@acct.dfs.core.windows.net/t",
            "abfss://c@ACCT.dfs.core.windows.net/t/m",
        ),
    ] {
        let before = ice(
            table,
            &[
                ("table_type", "ICEBERG"),
                ("metadata_location", &format!("{meta}/00001.metadata.json")),
                ("snapshot-count", "1"),
                ("numRows", "3"),
            ],
        );
        let commit = ice(
            table,
            &[
                ("table_type", "ICEBERG"),
                ("metadata_location", &format!("{meta}/00002.metadata.json")),
                (
                    "previous_metadata_location",
                    &format!("{meta}/00001.metadata.json"),
                ),
                ("snapshot-count", "2"),
                ("current-snapshot-id", "42"),
                ("current-snapshot-summary", "{\"added-records\":\"1\"}"),
                ("current-snapshot-timestamp-ms", "1"),
                ("current-schema", "{}"),
                ("uuid", "u"),
                ("numRows", "4"),
            ],
        );
        assert_eq!(table_locations(&before), [table], "{table}");
        assert_eq!(
            alter_changes("d", "t", &before, &commit),
            [AlterKind::Commit],
            "{table}"
        );
        // Turning the table into another kind is no commit.
        let retyped = ice(
            table,
            &[
                ("table_type", "HIVE"),
                ("metadata_location", &format!("{meta}/00002.metadata.json")),
            ],
        );
        assert_eq!(
            alter_changes("d", "t", &before, &retyped),
            [AlterKind::Other],
            "{table}"
        );
    }
    // A metadata file that climbs out of the table, or a local file under an S3 table: a
    // location of its own.
    let s3 = |meta: &str| ice("s3a://lake/d.db/t", &[("metadata_location", meta)]);
    for meta in ["s3a://lake/d.db/t/../u/m.json", "file:/lake/d.db/t/m.json"] {
        assert_eq!(
            alter_changes("d", "t", &s3("s3a://lake/d.db/t/m.json"), &s3(meta)),
            [AlterKind::Location],
            "{meta}"
        );
    }
}

#[test]
fn a_databases_managed_place_is_a_fact() {
    use hms_guard::decision::facts::database_facts;
    let db = Value::Struct(vec![
        (1, s("d")),
        (3, s("s3a://lake/ext/d.db")),
        (10, s("s3a://lake/managed/d.db")),
    ]);
    let f = database_facts(&db);
    assert_eq!(f.location.as_deref(), Some("s3a://lake/ext/d.db"));
    assert_eq!(
        f.managed_location.as_deref(),
        Some("s3a://lake/managed/d.db")
    );
    let plain = database_facts(&Value::Struct(vec![(3, s("file:/w/d.db")), (10, s(""))]));
    assert_eq!(plain.managed_location, None);
}

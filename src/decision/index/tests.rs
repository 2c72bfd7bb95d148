//! The location index: at/under/above on segment boundaries, canonical forms, partitions
//! outside their table, bounds, and the build from a scripted catalog in batches.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::decision::authz::PrincipalKind;

fn rec(db: &str, t: &str, loc: &str, external: bool) -> TableRecord {
    TableRecord {
        db: db.into(),
        table: t.into(),
        locations: vec![loc.into()],
        external,
        deletes_data: !external,
        owner: Some(Owner {
            name: "alice".into(),
            kind: PrincipalKind::User,
        }),
        partitioned: false,
    }
}

fn part(values: &[&str], loc: &str) -> PartitionRecord {
    PartitionRecord {
        values: values.iter().map(|v| v.to_string()).collect(),
        location: loc.into(),
    }
}

fn settings() -> IndexSettings {
    IndexSettings {
        enabled: true,
        ..IndexSettings::default()
    }
}

fn index_with(s: IndexSettings) -> Arc<LocationIndex> {
    LocationIndex::without_catalog(s, Arc::new(Metrics::new()))
}

fn none(_: &Claim) -> bool {
    false
}

/// (relation, "db.table") of what a query finds, sorted.
fn found(i: &LocationIndex, loc: &str) -> Vec<(&'static str, String)> {
    let mut v: Vec<_> = i
        .find(loc, &none)
        .found
        .into_iter()
        .map(|f| {
            (
                f.relation.as_str(),
                format!("{}.{}", f.claim.db, f.claim.table),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn at_under_and_above_on_segment_boundaries() {
    let i = index_with(settings());
    i.put(&rec("d", "t1", "s3a://lake/shared/t1", true), &[]);
    i.put(&rec("d", "t10", "s3a://lake/shared/t10", false), &[]);
    i.put(&rec("d", "deep", "s3a://lake/shared/t1/x/y", true), &[]);
    assert_eq!(i.entries(), 3);
    assert_eq!(
        found(&i, "s3a://lake/shared/t1"),
        vec![("at", "d.t1".into()), ("under", "d.deep".into())],
        "t1 is not t10"
    );
    assert_eq!(
        found(&i, "s3a://lake/shared"),
        vec![
            ("under", "d.deep".into()),
            ("under", "d.t1".into()),
            ("under", "d.t10".into())
        ]
    );
    assert_eq!(
        found(&i, "s3a://lake/shared/t1/x"),
        vec![("above", "d.t1".into()), ("under", "d.deep".into())]
    );
    assert!(
        found(&i, "s3a://lake/shared/t").is_empty(),
        "a name prefix is not a parent"
    );
    assert!(found(&i, "s3a://lake/shared/t100").is_empty());
    assert!(
        found(&i, "s3a://other/shared/t1").is_empty(),
        "another bucket"
    );
    assert!(found(&i, "hdfs://nn/shared/t1").is_empty(), "another store");
}

#[test]
fn locations_compare_in_canonical_form() {
    let i = index_with(settings());
    i.put(&rec("d", "t", "s3a://lake/w/t/", true), &[]);
    for same in ["s3://lake/w/t", "S3N://lake/w/t/", "s3a://lake/w/t"] {
        assert_eq!(found(&i, same), vec![("at", "d.t".into())], "{same}");
    }
    assert_eq!(found(&i, "s3://lake/w"), vec![("under", "d.t".into())]);
    assert_eq!(found(&i, "s3://lake/"), vec![("under", "d.t".into())]);
    // A location that does not canonicalise equals only itself.
    i.put(&rec("d", "odd", "s3a://lake/a/../b", true), &[]);
    assert_eq!(found(&i, "s3a://lake/a/../b"), vec![("at", "d.odd".into())]);
    assert!(found(&i, "s3a://lake/a").is_empty());
}

#[test]
fn partitions_count_only_outside_their_table() {
    let i = index_with(settings());
    let mut t = rec("d", "p", "s3a://lake/p", false);
    t.partitioned = true;
    i.put(
        &t,
        &[
            part(&["1"], "s3a://lake/p/k=1"),
            part(&["2"], "s3://lake/p/k=2/"),
            part(&["3"], "s3a://lake/elsewhere/k=3"),
        ],
    );
    assert_eq!(i.entries(), 2, "the table and the one partition outside it");
    let f = i.find("s3a://lake/elsewhere", &none);
    assert_eq!(f.found.len(), 1);
    assert_eq!(f.found[0].relation, Relation::Under);
    assert_eq!(f.found[0].claim.describe(), "partition [3] of table d.p");
    // Recording the table again replaces what it claimed.
    i.put(&t, &[]);
    assert_eq!(i.entries(), 1);
    assert!(i.find("s3a://lake/elsewhere", &none).found.is_empty());
}

#[test]
fn own_claims_and_shared_prefixes_are_left_out() {
    let s = IndexSettings {
        shared_prefixes: vec!["s3a://lake/staging".into()],
        ..settings()
    };
    let i = index_with(s);
    i.put(&rec("d", "a", "s3a://lake/w/a", true), &[]);
    i.put(&rec("d", "s", "s3://lake/staging/s", true), &[]);
    let own = |c: &Claim| &*c.table == "a";
    assert!(i.find("s3a://lake/w/a", &own).found.is_empty());
    assert_eq!(i.find("s3a://lake/w/a", &none).found.len(), 1);
    // Under a shared prefix: nothing is an overlap.
    assert!(i.is_shared("s3a://lake/staging/s/x"));
    assert!(i.find("s3a://lake/staging/s", &none).found.is_empty());
    // Above it: the shared area's claims are left out, the others count.
    assert_eq!(found(&i, "s3a://lake"), vec![("under", "d.a".into())]);
}

#[test]
fn names_are_lower_case_and_drops_forget() {
    let i = index_with(settings());
    let meta = |db: &str, t: &str, loc: &str| {
        use crate::wire::codec::value::Value as V;
        let s = |x: &str| V::Bytes(x.as_bytes().to_vec());
        V::Struct(vec![
            (1, s(t)),
            (2, s(db)),
            (3, s("bob")),
            (7, V::Struct(vec![(2, s(loc))])),
            (9, V::Map(vec![(s("EXTERNAL"), s("TRUE"))])),
        ])
    };
    let r = TableRecord::of(&meta("Sales", "Orders", "s3a://lake/o")).unwrap();
    assert_eq!((r.db.as_str(), r.table.as_str()), ("sales", "orders"));
    assert!(r.external && !r.deletes_data);
    i.put(&r, &[]);
    i.put(
        &TableRecord::of(&meta("sales", "x", "s3a://lake/x")).unwrap(),
        &[],
    );
    i.put(
        &TableRecord::of(&meta("hr", "y", "s3a://lake/y")).unwrap(),
        &[],
    );
    assert_eq!(i.entries(), 3);
    i.drop_table("SALES", "ORDERS");
    assert_eq!(i.entries(), 2);
    i.drop_database("Sales");
    assert_eq!(i.entries(), 1);
    assert_eq!(found(&i, "s3a://lake/y"), vec![("at", "hr.y".into())]);
}

#[test]
fn max_entries_marks_the_index_incomplete() {
    let i = index_with(IndexSettings {
        max_entries: 2,
        ..settings()
    });
    i.put(&rec("d", "a", "s3a://lake/a", true), &[]);
    i.put(&rec("d", "b", "s3a://lake/b", true), &[]);
    assert_eq!(i.state(), IndexState::Ready);
    i.put(&rec("d", "c", "s3a://lake/c", true), &[]);
    assert_eq!(i.entries(), 2, "never past the bound");
    assert!(matches!(i.state(), IndexState::Incomplete(ref w) if w.contains("max_entries = 2")));
}

#[test]
fn queries_are_bounded() {
    let i = index_with(settings());
    for n in 0..(MAX_FOUND + 5) {
        i.put(
            &rec("d", &format!("t{n}"), &format!("s3a://lake/w/t{n}"), true),
            &[],
        );
    }
    let f = i.find("s3a://lake/w", &none);
    assert_eq!(f.found.len(), MAX_FOUND);
    assert!(f.truncated);
}

/// A metastore of `dbs` × `tables` tables (every third partitioned, one partition inside and
/// one outside), counting the calls each method gets.
struct Scripted {
    dbs: usize,
    tables: usize,
    batch_calls: AtomicUsize,
    partition_calls: AtomicUsize,
    fail: bool,
}

impl Scripted {
    fn table(db: &str, name: &str) -> Value {
        use crate::wire::codec::value::Value as V;
        let s = |x: &str| V::Bytes(x.as_bytes().to_vec());
        let n: usize = name[1..].parse().unwrap();
        let keys = if n.is_multiple_of(3) {
            V::List(vec![V::Struct(vec![(1, s("k"))])])
        } else {
            V::List(vec![])
        };
        V::Struct(vec![
            (1, s(name)),
            (2, s(db)),
            (3, s("alice")),
            (
                7,
                V::Struct(vec![(2, s(&format!("s3a://lake/{db}/{name}")))]),
            ),
            (8, keys),
        ])
    }
}

impl Catalog for Scripted {
    fn databases(&self) -> crate::decision::facts::source::Fact<'_, Vec<String>> {
        let v = (0..self.dbs).map(|d| format!("db{d}")).collect();
        let fail = self.fail;
        Box::pin(async move {
            if fail {
                return Err(FactsError::Upstream {
                    method: "get_all_databases".into(),
                    message: "down".into(),
                });
            }
            Ok(v)
        })
    }
    fn table_names<'a>(
        &'a self,
        _: &'a str,
    ) -> crate::decision::facts::source::Fact<'a, Vec<String>> {
        let v = (0..self.tables).map(|t| format!("t{t}")).collect();
        Box::pin(async move { Ok(v) })
    }
    fn tables<'a>(
        &'a self,
        db: &'a str,
        names: &'a [String],
    ) -> crate::decision::facts::source::Fact<'a, Vec<Value>> {
        self.batch_calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(names.iter().map(|n| Scripted::table(db, n)).collect()) })
    }
    fn table<'a>(
        &'a self,
        db: &'a str,
        name: &'a str,
    ) -> crate::decision::facts::source::Fact<'a, Option<Value>> {
        Box::pin(async move { Ok(Some(Scripted::table(db, name))) })
    }
    fn partition_names<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
    ) -> crate::decision::facts::source::Fact<'a, Vec<String>> {
        Box::pin(async { Ok(vec!["k=in".to_string(), "k=out".to_string()]) })
    }
    fn partitions<'a>(
        &'a self,
        db: &'a str,
        table: &'a str,
        names: &'a [String],
    ) -> crate::decision::facts::source::Fact<'a, Vec<Value>> {
        use crate::wire::codec::value::Value as V;
        self.partition_calls.fetch_add(1, Ordering::SeqCst);
        let s = |x: &str| V::Bytes(x.as_bytes().to_vec());
        let v = names
            .iter()
            .map(|n| {
                let value = &n[2..];
                let loc = if value == "in" {
                    format!("s3a://lake/{db}/{table}/k=in")
                } else {
                    format!("s3a://outside/{db}/{table}/k=out")
                };
                V::Struct(vec![
                    (1, V::List(vec![s(value)])),
                    (6, V::Struct(vec![(2, s(&loc))])),
                ])
            })
            .collect();
        Box::pin(async move { Ok(v) })
    }
}

fn scripted(dbs: usize, tables: usize, fail: bool) -> Arc<Scripted> {
    Arc::new(Scripted {
        dbs,
        tables,
        batch_calls: AtomicUsize::new(0),
        partition_calls: AtomicUsize::new(0),
        fail,
    })
}

#[tokio::test]
async fn the_build_reads_the_catalog_in_batches() {
    let cat = scripted(2, 250, false);
    let s = IndexSettings {
        table_batch: 100,
        partition_batch: 1,
        build_wait: Duration::from_secs(5),
        ..settings()
    };
    let metrics = Arc::new(Metrics::new());
    let i = LocationIndex::start(s, cat.clone(), metrics.clone());
    let skip = |_: &Claim| false;
    // A call naming a location waits for the first build.
    let Lookup::Found(f) = i.lookup("s3a://lake/db1/t7", &skip).await else {
        panic!("the index did not become ready");
    };
    assert_eq!(f.found.len(), 1);
    assert_eq!(i.state(), IndexState::Ready);
    // 2 databases × 250 tables in batches of 100: 3 calls each.
    assert_eq!(cat.batch_calls.load(Ordering::SeqCst), 6);
    // 84 partitioned tables per database, 2 partitions each, one per call.
    assert_eq!(cat.partition_calls.load(Ordering::SeqCst), 2 * 84 * 2);
    // Every table, and one partition outside each partitioned table.
    assert_eq!(i.entries(), 2 * 250 + 2 * 84);
    let out = i.find("s3a://outside/db0", &none);
    assert_eq!(out.found.len(), 64);
    assert!(out.truncated);
    let text = metrics.encode();
    assert!(
        text.contains("hms_guard_index_state{state=\"ready\"} 1"),
        "{text}"
    );
    assert!(text.contains("hms_guard_index_build_tables 500"), "{text}");
    assert!(text.contains("hms_guard_index_entries 668"), "{text}");
    assert!(
        text.contains("hms_guard_index_builds_total{outcome=\"ok\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_failed_first_build_refuses_calls_naming_a_location() {
    let i = LocationIndex::start(
        IndexSettings {
            build_wait: Duration::from_secs(5),
            ..settings()
        },
        scripted(1, 1, true),
        Arc::new(Metrics::new()),
    );
    let skip = |_: &Claim| false;
    match i.lookup("s3a://lake/x", &skip).await {
        Lookup::Unavailable(why) => assert!(why.contains("its build failed"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_build_that_does_not_finish_in_time_refuses() {
    // A catalog that never answers: the call waits build_wait, then is refused.
    struct Stuck;
    impl Catalog for Stuck {
        fn databases(&self) -> crate::decision::facts::source::Fact<'_, Vec<String>> {
            Box::pin(std::future::pending())
        }
        fn table_names<'a>(
            &'a self,
            _: &'a str,
        ) -> crate::decision::facts::source::Fact<'a, Vec<String>> {
            Box::pin(std::future::pending())
        }
        fn tables<'a>(
            &'a self,
            _: &'a str,
            _: &'a [String],
        ) -> crate::decision::facts::source::Fact<'a, Vec<Value>> {
            Box::pin(std::future::pending())
        }
        fn table<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> crate::decision::facts::source::Fact<'a, Option<Value>> {
            Box::pin(std::future::pending())
        }
        fn partition_names<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> crate::decision::facts::source::Fact<'a, Vec<String>> {
            Box::pin(std::future::pending())
        }
        fn partitions<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a [String],
        ) -> crate::decision::facts::source::Fact<'a, Vec<Value>> {
            Box::pin(std::future::pending())
        }
    }
    let i = LocationIndex::start(
        IndexSettings {
            build_wait: Duration::from_millis(50),
            ..settings()
        },
        Arc::new(Stuck),
        Arc::new(Metrics::new()),
    );
    let skip = |_: &Claim| false;
    match i.lookup("s3a://lake/x", &skip).await {
        Lookup::Unavailable(why) => assert!(why.contains("still being built"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The index off: nothing is looked up.
    let off = LocationIndex::start(
        IndexSettings {
            enabled: false,
            ..settings()
        },
        Arc::new(Stuck),
        Arc::new(Metrics::new()),
    );
    assert_eq!(off.lookup("s3a://lake/x", &skip).await, Lookup::Off);
}

#[tokio::test]
async fn changes_are_read_back_and_partitions_added_through_the_proxy_count() {
    let cat = scripted(1, 3, false);
    let i = LocationIndex::start(settings(), cat, Arc::new(Metrics::new()));
    i.rebuild().await.unwrap();
    assert_eq!(i.entries(), 3 + 1);
    i.apply(&IndexChange::Partitions {
        db: "db0".into(),
        table: "t1".into(),
        locations: vec!["s3a://else/p".into()],
    })
    .await
    .unwrap();
    let f = i.find("s3a://else/p", &none);
    assert_eq!(f.found[0].claim.describe(), "a partition of table db0.t1");
    // Read back without its partitions: the partition claims stay.
    i.apply(&IndexChange::Table {
        db: "db0".into(),
        table: "t1".into(),
        partitions: false,
    })
    .await
    .unwrap();
    assert_eq!(i.find("s3a://else/p", &none).found.len(), 1);
    i.drop_table("db0", "t1");
    assert!(i.find("s3a://else/p", &none).found.is_empty());
}

/// Memory per entry, measured as the process's resident growth while one index takes
/// 200,000 tables (Linux). Run alone for a clean number:
/// `cargo test --lib index::tests::memory_per_entry -- --nocapture --test-threads=1`.
#[test]
fn memory_per_entry() {
    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }
    const N: usize = 200_000;
    let i = index_with(settings());
    let before = rss();
    let started = Instant::now();
    for n in 0..N {
        i.put(
            &rec(
                &format!("db{}", n % 50),
                &format!("table_{n:07}"),
                &format!("s3a://datalake-prod/warehouse/db{}.db/table_{n:07}", n % 50),
                n % 2 == 0,
            ),
            &[],
        );
    }
    let took = started.elapsed();
    let after = rss();
    assert_eq!(i.entries(), N);
    let per = (after.saturating_sub(before)) / N;
    println!(
        "location index: {N} tables, {} bytes per entry ({} MiB per 100,000 tables), inserted in {} ms",
        per,
        per * 100_000 / (1 << 20),
        took.as_millis()
    );
    assert!(per < 1024, "{per} bytes per entry");
    let started = Instant::now();
    for n in 0..10_000 {
        let _ = i.find(
            &format!("s3a://datalake-prod/warehouse/db{}.db/table_{n:07}", n % 50),
            &none,
        );
    }
    println!("10,000 lookups in {} ms", started.elapsed().as_millis());
}

#[tokio::test]
async fn with_the_log_followed_the_first_build_waits_for_the_followers_start() {
    let cat = scripted(1, 10, false);
    let s = IndexSettings {
        follow_log: true,
        build_wait: Duration::from_millis(200),
        ..settings()
    };
    let i = LocationIndex::start(s, cat.clone(), Arc::new(Metrics::new()));
    let skip = |_: &Claim| false;
    // Not started: a change made now could fall between the build and the log's start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cat.batch_calls.load(Ordering::SeqCst), 0);
    assert!(matches!(
        i.lookup("s3a://lake/db0/t1", &skip).await,
        Lookup::Unavailable(_)
    ));
    i.log_followed();
    let mut ready = false;
    for _ in 0..100 {
        if i.state() == IndexState::Ready {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "the build did not start once the log was followed");
    assert!(matches!(
        i.lookup("s3a://lake/db0/t1", &skip).await,
        Lookup::Found(f) if f.found.len() == 1
    ));
}

#[tokio::test]
async fn a_lookup_waits_for_table_ddl_in_flight_and_refuses_past_the_wait() {
    let s = IndexSettings {
        build_wait: Duration::from_millis(300),
        ..settings()
    };
    let i = LocationIndex::without_catalog(s, Arc::new(Metrics::new()));
    let skip = |_: &Claim| false;
    // Another connection's create, forwarded; the index learns it in that call's finish.
    let changing = i.changing().await;
    let (i2, started) = (i.clone(), std::time::Instant::now());
    let looked = tokio::spawn(async move {
        let r = i2.lookup("s3a://lake/db/new", &|_: &Claim| false).await;
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    i.put(&rec("db", "new", "s3a://lake/db/new", true), &[]);
    drop(changing);
    let (r, waited) = looked.await.unwrap();
    assert!(waited >= Duration::from_millis(90), "{waited:?}");
    assert!(matches!(r, Lookup::Found(f) if f.found.len() == 1));
    // A change that never ends: refused after the wait, saying why.
    let _stuck = i.changing().await;
    let Lookup::Unavailable(why) = i.lookup("s3a://lake/db/other", &skip).await else {
        panic!("answered while a change was in flight");
    };
    assert!(why.contains("still being recorded"), "{why}");
}

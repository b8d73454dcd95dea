//! Per-statement metrics (feature `metrics`): exact counts per label, read from a
//! recording exporter.
//!
//! Each test installs its own `DebuggingRecorder` as the thread's local recorder and runs
//! on a current-thread runtime, so every statement it makes (and every task a fan-out
//! would spawn) is polled on the test's own thread and recorded there: tests running at
//! the same time on other threads never see each other's metrics, and no global recorder
//! is installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::NotSet, EntityTrait, Set};
use std::collections::BTreeMap;
use tenancy_sea::{METRIC_DURATION, METRIC_ERRORS, METRIC_STATEMENTS, Tenancy, TenantDb};
use tenancy_tests::entities::*;
use tenancy_tests::{Backend, Flavor, TestDb, hash_sharded, run, shard_dbs};

/// A series: its labels, sorted by name.
type Labels = Vec<(String, String)>;

/// What one snapshot holds: the counters and how many latencies each histogram got, per
/// metric name and series.
#[derive(Debug, Default)]
struct Recorded {
    counters: BTreeMap<(String, Labels), u64>,
    timings: BTreeMap<(String, Labels), usize>,
}

impl Recorded {
    /// Takes (and drains) what `snapshotter` recorded since its last snapshot.
    fn take(snapshotter: &Snapshotter) -> Recorded {
        let mut recorded = Recorded::default();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let name = (key.name().to_owned(), labels);
            match value {
                DebugValue::Counter(n) if n > 0 => {
                    *recorded.counters.entry(name).or_default() += n;
                }
                DebugValue::Histogram(values) if !values.is_empty() => {
                    assert!(values.iter().all(|v| v.0 >= 0.0), "a negative latency");
                    *recorded.timings.entry(name).or_default() += values.len();
                }
                _ => {}
            }
        }
        recorded
    }

    /// The counter `metric` of every series, as `{labels: count}`.
    fn counter(&self, metric: &str) -> BTreeMap<Labels, u64> {
        self.counters
            .iter()
            .filter(|((name, _), _)| name == metric)
            .map(|((_, labels), n)| (labels.clone(), *n))
            .collect()
    }

    /// Every series of the statements counter has a latency for each statement, and
    /// nothing else was timed.
    fn assert_timed(&self) {
        let statements = self.counter(METRIC_STATEMENTS);
        let timed: BTreeMap<Labels, u64> = self
            .timings
            .iter()
            .filter(|((name, _), _)| name == METRIC_DURATION)
            .map(|((_, labels), n)| (labels.clone(), *n as u64))
            .collect();
        assert_eq!(timed, statements, "one latency per statement, per series");
    }
}

/// The labels of a series: `base` (isolation, placement, shard) and the rest.
fn labels(base: [(&str, &str); 3], rest: &[(&str, &str)]) -> Labels {
    let mut labels: Labels = base
        .iter()
        .chain(rest)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    labels
}

const SHARED: [(&str, &str); 3] = [
    ("isolation", "row_level"),
    ("placement", "shared"),
    ("shard", "default"),
];

async fn add_customer(db: &TenantDb<i64>, name: &str) -> customer::Model {
    db.insert(customer::ActiveModel {
        id: NotSet,
        name: Set(name.to_owned()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// N statements of tenant A and M of tenant B: counted per operation, all under the same
/// isolation, placement and shard, with no tenant label (not opted in).
#[tokio::test]
async fn statements_are_counted_per_operation_without_a_tenant_label() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    run(Backend::Sqlite, Flavor::RowLevel, async |db: &TestDb| {
        let tenancy: Tenancy<i64> = Tenancy::builder(db.conn.clone()).build().unwrap();
        let a = tenancy.tenant(1).await.unwrap();
        let b = tenancy.tenant(2).await.unwrap();
        for n in 0..3 {
            add_customer(&a, &format!("a{n}")).await;
        }
        assert_eq!(a.find::<customer::Entity>().all().await.unwrap().len(), 3);
        assert!(a.find::<customer::Entity>().one().await.unwrap().is_some());
        add_customer(&b, "b0").await;
        assert_eq!(b.find::<customer::Entity>().count().await.unwrap(), 1);
        b.delete_many::<customer::Entity>().exec().await.unwrap();

        let recorded = Recorded::take(&snapshotter);
        let op = |op| labels(SHARED, &[("operation", op)]);
        assert_eq!(
            recorded.counter(METRIC_STATEMENTS),
            BTreeMap::from([
                (op("insert"), 4),
                (op("select"), 2),
                (op("count"), 1),
                (op("delete_many"), 1),
            ])
        );
        assert!(recorded.counter(METRIC_ERRORS).is_empty(), "{recorded:?}");
        recorded.assert_timed();
        let tenant_labelled = recorded
            .counters
            .keys()
            .chain(recorded.timings.keys())
            .any(|(_, labels)| labels.iter().any(|(k, _)| k == "tenant"));
        assert!(!tenant_labelled, "a tenant label without opting in");
    })
    .await;
}

/// With `.metrics_tenant_label(true)`, the same statements are counted per tenant.
#[tokio::test]
async fn the_tenant_label_is_there_when_opted_in() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    run(Backend::Sqlite, Flavor::RowLevel, async |db: &TestDb| {
        let tenancy: Tenancy<i64> = Tenancy::builder(db.conn.clone())
            .metrics_tenant_label(true)
            .build()
            .unwrap();
        let a = tenancy.tenant(7).await.unwrap();
        let b = tenancy.tenant(8).await.unwrap();
        for n in 0..5 {
            add_customer(&a, &format!("a{n}")).await;
        }
        for n in 0..2 {
            add_customer(&b, &format!("b{n}")).await;
        }
        b.find::<customer::Entity>().all().await.unwrap();

        let recorded = Recorded::take(&snapshotter);
        let of = |tenant, op| labels(SHARED, &[("operation", op), ("tenant", tenant)]);
        assert_eq!(
            recorded.counter(METRIC_STATEMENTS),
            BTreeMap::from([
                (of("7", "insert"), 5),
                (of("8", "insert"), 2),
                (of("8", "select"), 1),
            ])
        );
        recorded.assert_timed();
    })
    .await;
}

/// Errors are counted with their kind, next to the statement: a unique violation from the
/// database, a row of another tenant refused by the handle, and a raw fragment refused
/// before it ran.
#[tokio::test]
async fn errors_are_counted_with_their_kind() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    run(Backend::Sqlite, Flavor::RowLevel, async |db: &TestDb| {
        let tenancy: Tenancy<i64> = Tenancy::builder(db.conn.clone()).build().unwrap();
        let a = tenancy.tenant(1).await.unwrap();
        let first = add_customer(&a, "a").await;
        let duplicate = a
            .insert(customer::ActiveModel {
                id: Set(first.id),
                name: Set("again".to_owned()),
                ..Default::default()
            })
            .await;
        assert!(duplicate.is_err());
        let foreign = a
            .insert(customer::ActiveModel {
                tenant_id: Set(2),
                name: Set("not mine".to_owned()),
                ..Default::default()
            })
            .await;
        assert!(matches!(
            foreign,
            Err(tenancy_sea::Error::TenantMismatch { .. })
        ));
        let raw = a
            .find::<customer::Entity>()
            .filter(Expr::cust("1 = 1) OR (1 = 1"))
            .all()
            .await;
        assert!(raw.is_err(), "a raw fragment must be refused");
        let raw_delete = a
            .delete_many::<customer::Entity>()
            .filter(Expr::cust("1 = 1) OR (1 = 1"))
            .exec()
            .await;
        assert!(raw_delete.is_err(), "a raw fragment must be refused");
        assert_eq!(a.find::<customer::Entity>().count().await.unwrap(), 1);

        let recorded = Recorded::take(&snapshotter);
        let op = |op| labels(SHARED, &[("operation", op)]);
        let failed = |op, kind| labels(SHARED, &[("kind", kind), ("operation", op)]);
        assert_eq!(
            recorded.counter(METRIC_STATEMENTS),
            BTreeMap::from([
                (op("insert"), 3),
                (op("select"), 1),
                (op("delete_many"), 1),
                (op("count"), 1),
            ])
        );
        let raw_kind = match raw {
            Err(tenancy_sea::Error::RawFragment { .. }) => "raw_fragment",
            Err(tenancy_sea::Error::UnscopedSubquery) => "unscoped_subquery",
            other => panic!("unexpected: {other:?}"),
        };
        assert_eq!(
            recorded.counter(METRIC_ERRORS),
            BTreeMap::from([
                (failed("insert", "unique_violation"), 1),
                (failed("insert", "tenant_mismatch"), 1),
                (failed("select", raw_kind), 1),
                (failed("delete_many", raw_kind), 1),
            ])
        );
        recorded.assert_timed();
    })
    .await;
}

/// A transaction's statements are counted once each: not again at commit, and its begin
/// and commit are not statements of their own.
#[tokio::test]
async fn a_transactions_statements_are_counted_once_each() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    run(Backend::Sqlite, Flavor::RowLevel, async |db: &TestDb| {
        let tenancy: Tenancy<i64> = Tenancy::builder(db.conn.clone()).build().unwrap();
        let a = tenancy.tenant(3).await.unwrap();
        a.transaction(async |txn| {
            for n in 0..4 {
                txn.insert(customer::ActiveModel {
                    name: Set(format!("t{n}")),
                    ..Default::default()
                })
                .await?;
            }
            assert_eq!(txn.find::<customer::Entity>().count().await?, 4);
            Ok(())
        })
        .await
        .unwrap();
        let recorded = Recorded::take(&snapshotter);
        let op = |op| labels(SHARED, &[("operation", op)]);
        assert_eq!(
            recorded.counter(METRIC_STATEMENTS),
            BTreeMap::from([(op("insert"), 4), (op("count"), 1)])
        );
        recorded.assert_timed();
    })
    .await;
}

/// Sharded statements are labelled with their shard: a tenant's own, and each shard of an
/// unscoped fan-out once.
#[tokio::test]
async fn sharded_statements_carry_their_shard() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let Some(dbs) = shard_dbs(&[Backend::Sqlite, Backend::Sqlite]).await else {
        panic!("SQLite shards are always available");
    };
    let outcome = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let (tenancy, _) = hash_sharded(&dbs);
        // Tenants 1 and 2 live on shard_1, 3 to 7 on shard_0.
        for tenant in [1, 2, 3] {
            let db = tenancy.tenant(tenant).await.unwrap();
            add_customer(&db, &format!("c{tenant}")).await;
        }
        let across = tenancy.unscoped_across_shards().unwrap();
        assert_eq!(
            across.find::<customer::Entity>().all().await.unwrap().len(),
            3
        );
        assert_eq!(across.find::<customer::Entity>().count().await.unwrap(), 3);

        let recorded = Recorded::take(&snapshotter);
        let on = |shard, op| {
            labels(
                [
                    ("isolation", "row_level"),
                    ("placement", "sharded"),
                    ("shard", shard),
                ],
                &[("operation", op)],
            )
        };
        assert_eq!(
            recorded.counter(METRIC_STATEMENTS),
            BTreeMap::from([
                (on("shard_1", "insert"), 2),
                (on("shard_0", "insert"), 1),
                (on("shard_0", "scatter"), 1),
                (on("shard_1", "scatter"), 1),
                (on("shard_0", "scatter_count"), 1),
                (on("shard_1", "scatter_count"), 1),
            ])
        );
        recorded.assert_timed();
    }))
    .await;
    for db in dbs {
        db.drop_db().await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// PostgreSQL, two shards that each enforce row-level security: every statement runs in a
/// unit that first sets the tenant (`set_config`), which is not counted; the statement is,
/// once, on its shard, and a unique violation keeps its kind.
#[tokio::test]
async fn postgres_sharded_rls_statements_are_counted_on_their_shard() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    run(
        Backend::Postgres,
        Flavor::ShardedRls,
        async |db: &TestDb| {
            let tenancy = db.tenancy::<i64>();
            let on_1 = tenancy.tenant(1).await.unwrap();
            let on_0 = tenancy.tenant(3).await.unwrap();
            assert_eq!(on_1.shard().unwrap().as_str(), "shard_1");
            assert_eq!(on_0.shard().unwrap().as_str(), "shard_0");
            let first = add_customer(&on_1, "one").await;
            add_customer(&on_1, "two").await;
            add_customer(&on_0, "three").await;
            assert_eq!(
                on_1.find::<customer::Entity>().all().await.unwrap().len(),
                2
            );
            on_1.transaction(async |txn| {
                txn.find::<customer::Entity>().count().await?;
                txn.find::<customer::Entity>().count().await?;
                Ok(())
            })
            .await
            .unwrap();
            let duplicate = on_1
                .insert(customer::ActiveModel {
                    id: Set(first.id),
                    name: Set("again".to_owned()),
                    ..Default::default()
                })
                .await;
            assert!(duplicate.is_err());
            let _ = customer::Entity::find(); // the plain SeaORM query is not counted: not run

            let recorded = Recorded::take(&snapshotter);
            let on = |shard, op| {
                labels(
                    [
                        ("isolation", "row_level_security"),
                        ("placement", "sharded"),
                        ("shard", shard),
                    ],
                    &[("operation", op)],
                )
            };
            assert_eq!(
                recorded.counter(METRIC_STATEMENTS),
                BTreeMap::from([
                    (on("shard_1", "insert"), 3),
                    (on("shard_0", "insert"), 1),
                    (on("shard_1", "select"), 1),
                    (on("shard_1", "count"), 2),
                ])
            );
            let mut failed = on("shard_1", "insert");
            failed.push(("kind".to_owned(), "unique_violation".to_owned()));
            failed.sort();
            assert_eq!(
                recorded.counter(METRIC_ERRORS),
                BTreeMap::from([(failed, 1)])
            );
            recorded.assert_timed();
        },
    )
    .await;
}

/// No statement escapes the metrics: every unit of work a handle or a fan-out runs
/// (`on_conn!`, `on_target!`) is run through a traced statement (`.traced(..)`) before
/// the function it is in ends (the next function starts).
#[test]
fn every_unit_of_work_is_traced() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tenancy-sea/src");
    let mut files = Vec::new();
    let mut dirs = vec![src];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut units = 0;
    let mut untraced = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") || code.starts_with("macro_rules!") {
                continue;
            }
            if code.contains("on_conn!(") || code.contains("on_target!(") {
                units += 1;
                let starts_fn = |l: &&str| {
                    let l = l.trim_start();
                    [
                        "fn ",
                        "async fn ",
                        "pub fn ",
                        "pub async fn ",
                        "pub(crate) fn ",
                    ]
                    .iter()
                    .chain(&["pub(crate) async fn ", "pub(super) fn "])
                    .any(|start| l.starts_with(start))
                };
                let rest = &lines[n..];
                let end = rest.iter().position(starts_fn).unwrap_or(rest.len());
                if !rest[..end].iter().any(|l| l.contains(".traced(")) {
                    untraced.push(format!("{}:{}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        units > 20,
        "found only {units} units of work: is the path right?"
    );
    assert!(
        untraced.is_empty(),
        "units of work not traced: {untraced:?}"
    );
}

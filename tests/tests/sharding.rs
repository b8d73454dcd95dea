//! Sharding with the tenant as the shard key: routed handles, rows physically on their
//! tenant's shard, mixed-backend topologies, and scatter-gather equal to one database
//! holding every row (a property test against a single-database oracle).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use tenancy_sea::{Error, HashRouter, ShardId, ShardRouter, Tenancy, Topology};
use tenancy_tests::entities::*;
use tenancy_tests::{Backend, TestDb, customer_with_orders, hash_sharded, shard_dbs};

async fn place(tenancy: &Tenancy<i64>, tenants: i64, orders_each: i64) {
    for tenant in 1..=tenants {
        let orders = (0..orders_each).map(|i| (None, tenant * 100 + i));
        customer_with_orders(tenancy, tenant, None, orders).await;
    }
}

async fn rows_stay_on_their_shard(backends: &[Backend]) {
    let Some(dbs) = shard_dbs(backends).await else {
        return;
    };
    let (tenancy, router) = hash_sharded(&dbs);
    place(&tenancy, 30, 3).await;

    for (i, db) in dbs.iter().enumerate() {
        let stored = order::Entity::find().all(&db.conn).await.unwrap();
        assert!(!stored.is_empty(), "shard {i} got no tenant");
        for row in stored {
            assert_eq!(
                router.route(&row.tenant_id).unwrap().as_str(),
                format!("shard_{i}"),
                "tenant {} stored on the wrong shard",
                row.tenant_id
            );
        }
    }
    for tenant in 1..=30 {
        let db = tenancy.tenant(tenant).await.unwrap();
        assert_eq!(db.shard(), Some(&router.route(&tenant).unwrap()));
        let mine = db.find::<order::Entity>().all().await.unwrap();
        assert_eq!(mine.len(), 3);
        assert!(mine.iter().all(|o| o.tenant_id == tenant));
    }

    let across = tenancy.unscoped_across_shards().unwrap();
    assert_eq!(across.find::<order::Entity>().count().await.unwrap(), 90);
    let top = across
        .find::<order::Entity>()
        .order_by_desc(order::Column::TotalCents)
        .limit(4)
        .all()
        .await
        .unwrap();
    assert_eq!(
        top.iter().map(|o| o.total_cents).collect::<Vec<_>>(),
        [3002, 3001, 3000, 2902]
    );
    // Aggregates combined over shards: SUM of (300 t + 3) for t in 1..=30, MIN, MAX.
    let total = across.find::<order::Entity>();
    assert_eq!(total.sum(order::Column::TotalCents).await.unwrap(), 139_590);
    let min: Option<i64> = across
        .find::<order::Entity>()
        .min(order::Column::TotalCents)
        .await
        .unwrap();
    let max: Option<i64> = across
        .find::<order::Entity>()
        .filter(order::Column::Tenant.lte(10))
        .max(order::Column::TotalCents)
        .await
        .unwrap();
    assert_eq!((min, max), (Some(100), Some(1002)));
    let none: Option<i64> = across
        .find::<order::Entity>()
        .filter(order::Column::TotalCents.lt(0))
        .max(order::Column::TotalCents)
        .await
        .unwrap();
    assert_eq!(none, None);
    // AVG weighs every row once: 139,590 over 90 rows, though the shards hold different
    // numbers of rows; no matching row is None, as in SQL.
    let avg = across
        .find::<order::Entity>()
        .avg(order::Column::TotalCents);
    assert_eq!(avg.await.unwrap(), Some(139_590.0 / 90.0));
    let avg_none = across
        .find::<order::Entity>()
        .filter(order::Column::TotalCents.lt(0))
        .avg(order::Column::TotalCents);
    assert_eq!(avg_none.await.unwrap(), None);
    // A sum or mean of a text column would be cut to an integer: refused before any shard.
    let text = across
        .find::<customer::Entity>()
        .avg(customer::Column::Name);
    assert!(matches!(text.await, Err(Error::Config(m)) if m.contains("integer column")));

    // GROUP BY across shards: customer ids come from each shard's own sequence, so most
    // groups span shards. The expected groups are counted from every shard's rows.
    let mut want: std::collections::BTreeMap<i64, (u64, i64, i64, i64)> = Default::default();
    for db in &dbs {
        for o in order::Entity::find().all(&db.conn).await.unwrap() {
            let g = want
                .entry(o.customer_id)
                .or_insert((0, 0, i64::MAX, i64::MIN));
            *g = (
                g.0 + 1,
                g.1 + o.total_cents,
                Ord::min(g.2, o.total_cents),
                Ord::max(g.3, o.total_cents),
            );
        }
    }
    assert!(
        want.len() > 1 && want.len() < 30,
        "groups span shards: {}",
        want.len()
    );
    let grouped = || {
        across
            .find::<order::Entity>()
            .group_by(order::Column::CustomerId)
    };
    let counts: Vec<(i64, u64)> = grouped().count().await.unwrap();
    let sums: Vec<(i64, i64)> = grouped().sum(order::Column::TotalCents).await.unwrap();
    let mins: Vec<(i64, Option<i64>)> = grouped().min(order::Column::TotalCents).await.unwrap();
    let maxs: Vec<(i64, Option<i64>)> = grouped().max(order::Column::TotalCents).await.unwrap();
    let avgs: Vec<(i64, Option<f64>)> = grouped().avg(order::Column::TotalCents).await.unwrap();
    let keys: Vec<i64> = grouped().keys().await.unwrap();
    assert_eq!(keys, want.keys().copied().collect::<Vec<_>>());
    let expect = |f: fn(&(u64, i64, i64, i64)) -> i64| {
        want.iter().map(|(k, g)| (*k, f(g))).collect::<Vec<_>>()
    };
    assert_eq!(
        counts,
        want.iter().map(|(k, g)| (*k, g.0)).collect::<Vec<_>>()
    );
    assert_eq!(sums, expect(|g| g.1));
    assert_eq!(
        mins,
        expect(|g| g.2)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        maxs,
        expect(|g| g.3)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect::<Vec<_>>()
    );
    #[allow(clippy::cast_precision_loss)]
    let mean = |g: &(u64, i64, i64, i64)| Some(g.1 as f64 / g.0 as f64);
    assert_eq!(
        avgs,
        want.iter().map(|(k, g)| (*k, mean(g))).collect::<Vec<_>>()
    );
    // NULL: every customer has no plan, so one NULL group, and per tenant no value.
    let by_plan = across
        .find::<customer::Entity>()
        .group_by(customer::Column::PlanId);
    assert_eq!(by_plan.count::<Option<i64>>().await.unwrap(), [(None, 30)]);
    let by_tenant = || {
        across
            .find::<customer::Entity>()
            .group_by(customer::Column::TenantId)
    };
    let plan_max: Vec<(i64, Option<i64>)> =
        by_tenant().max(customer::Column::PlanId).await.unwrap();
    let plan_avg: Vec<(i64, Option<f64>)> =
        by_tenant().avg(customer::Column::PlanId).await.unwrap();
    assert_eq!(plan_max, (1..=30).map(|t| (t, None)).collect::<Vec<_>>());
    assert_eq!(plan_avg, (1..=30).map(|t| (t, None)).collect::<Vec<_>>());
    for db in dbs {
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sqlite_shards() {
    rows_stay_on_their_shard(&[Backend::Sqlite, Backend::Sqlite, Backend::Sqlite]).await;
}

/// With the application's spawner, each shard's query is a task of its own; the merged
/// result is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_fan_out_merges_the_same() {
    let Some(dbs) = shard_dbs(&[Backend::Sqlite, Backend::Sqlite, Backend::Sqlite]).await else {
        return;
    };
    let (tenancy, _) = hash_sharded(&dbs);
    place(&tenancy, 20, 2).await;
    let ids: Vec<ShardId> = (0..dbs.len())
        .map(|i| ShardId::new(format!("shard_{i}")))
        .collect();
    let spawned = Topology::new(
        HashRouter::new(ids.clone()),
        ids.into_iter().zip(dbs.iter().map(|db| db.conn.clone())),
    )
    .unwrap()
    .with_spawner(|future| {
        tokio::spawn(future);
    });
    let spawned: Tenancy<i64> = Tenancy::builder(dbs[0].conn.clone())
        .sharded(spawned)
        .build()
        .unwrap();
    async fn query(tenancy: &Tenancy<i64>) -> Vec<order::Model> {
        tenancy
            .unscoped_across_shards()
            .unwrap()
            .find::<order::Entity>()
            .order_by_desc(order::Column::TotalCents)
            .order_by_asc(order::Column::Tenant)
            .order_by_asc(order::Column::Id)
            .offset(3)
            .limit(15)
            .all()
            .await
            .unwrap()
    }
    let (plain, with_tasks) = (query(&tenancy).await, query(&spawned).await);
    assert_eq!(plain.len(), 15);
    assert_eq!(plain, with_tasks);
    for db in dbs {
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_postgres_shards() {
    rows_stay_on_their_shard(&[Backend::Postgres; 4]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_postgres_mariadb_sqlite_shards() {
    rows_stay_on_their_shard(&[Backend::Postgres, Backend::MySql, Backend::Sqlite]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_shard_is_an_error_naming_it() {
    let Some(dbs) = shard_dbs(&[Backend::Sqlite, Backend::Sqlite]).await else {
        return;
    };
    let (tenancy, _) = hash_sharded(&dbs);
    place(&tenancy, 6, 1).await;
    dbs[1].conn.close_by_ref().await.unwrap();
    let err = tenancy
        .unscoped_across_shards()
        .unwrap()
        .find::<order::Entity>()
        .all()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Shard { shard, .. } if shard == "shard_1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("shard_1"));
    for db in dbs {
        db.drop_db().await;
    }
}

/// With `shard` failing or silent, a fan-out of `across` under `timeout`: `all()` fails
/// naming it within 3x the timeout, and the opt-in `all_or_partial()` returns the other
/// shards' `rows` with `shard` as the only one missing. Returns the error of `all()`.
async fn missing_shard_is_named(
    across: &tenancy_sea::AcrossShards,
    timeout: std::time::Duration,
    shard: &str,
    rows: usize,
) -> Error {
    let started = std::time::Instant::now();
    let err = across
        .find::<order::Entity>()
        .timeout(timeout)
        .all()
        .await
        .unwrap_err();
    assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
    match &err {
        Error::Shard { shard: named, .. } | Error::ShardTimeout { shard: named, .. } => {
            assert_eq!(named, shard);
        }
        other => panic!("expected shard {shard} to be named, got {other:?}"),
    }
    let partial = across
        .find::<order::Entity>()
        .timeout(timeout)
        .all_or_partial()
        .await
        .unwrap();
    assert!(!partial.is_complete());
    assert_eq!(partial.missing.len(), 1);
    assert_eq!(partial.missing[0].0.as_str(), shard);
    assert_eq!(partial.rows.len(), rows);
    err
}

/// A SQLite shard whose file is made unreadable mid-test (its bytes overwritten, since
/// file modes do not stop root): the fan-out fails with the shard's name, within the
/// timeout, and the opt-in partial result has every other shard's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_sqlite_shard_is_named() {
    let Some(dbs) = shard_dbs(&[Backend::Sqlite, Backend::Sqlite, Backend::Sqlite]).await else {
        return;
    };
    let (tenancy, router) = hash_sharded(&dbs);
    place(&tenancy, 9, 2).await;
    let path = dbs[2].sqlite_path().unwrap();
    let size = std::fs::metadata(path).unwrap().len();
    std::fs::write(path, vec![0xA5u8; usize::try_from(size).unwrap()]).unwrap();
    let timeout = std::time::Duration::from_millis(500);
    let across = tenancy.unscoped_across_shards().unwrap();
    let elsewhere = (1..=9)
        .filter(|t: &i64| router.route(t).unwrap().as_str() != "shard_2")
        .count();
    missing_shard_is_named(&across, timeout, "shard_2", elsewhere * 2).await;
    for db in dbs {
        db.drop_db().await;
    }
}

#[tokio::test]
async fn a_router_needs_every_shard_it_names() {
    let db = TestDb::with_schema(Backend::Sqlite).await.unwrap();
    let router = HashRouter::new(["a", "b"]);
    let err = Topology::new(router, [(ShardId::new("a"), db.conn.clone())]).unwrap_err();
    assert!(err.to_string().contains("shard b"), "{err}");
    db.drop_db().await;
}

#[derive(Clone, Debug)]
struct Query {
    min_total: i64,
    descending: bool,
    limit: Option<u64>,
    offset: u64,
}

/// Scatter-gather over 3 SQLite shards equals the same query on one database holding
/// every row: ORDER BY (total, then id, both ways), LIMIT, OFFSET, filters, COUNT, SUM,
/// MIN, MAX and AVG, and the same aggregates GROUP BY a column shared across shards.
#[test]
fn scatter_gather_equals_one_database() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (dbs, oracle) = rt.block_on(async {
        (
            shard_dbs(&[Backend::Sqlite, Backend::Sqlite, Backend::Sqlite])
                .await
                .unwrap(),
            TestDb::with_schema(Backend::Sqlite).await.unwrap(),
        )
    });
    let (tenancy, _) = hash_sharded(&dbs);
    let rows = prop::collection::vec((1..=12i64, 0..50i64), 0..60);
    let query = (
        0..50i64,
        any::<bool>(),
        prop::option::of(0..20u64),
        0..10u64,
    )
        .prop_map(|(min_total, descending, limit, offset)| Query {
            min_total,
            descending,
            limit,
            offset,
        });
    let config = Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let result = TestRunner::new(config).run(&(rows, query), |(rows, query)| {
        rt.block_on(async {
            for db in dbs.iter().chain([&oracle]) {
                for sql in [
                    "DELETE FROM orders",
                    "DELETE FROM customers",
                    // One customer on every shard for the orders to point at.
                    "INSERT INTO customers (id, tenant_id, name) VALUES (1, 0, 'c')",
                ] {
                    db.conn.execute_unprepared(sql).await.unwrap();
                }
            }
            for (n, (tenant, total)) in rows.iter().enumerate() {
                let row = order::ActiveModel {
                    id: Set(n as i64 + 1),
                    customer_id: Set(1),
                    total_cents: Set(*total),
                    ..Default::default()
                };
                // The sharded side through the tenant's routed handle; the oracle holds all.
                let db = tenancy.tenant(*tenant).await.unwrap();
                db.insert(row.clone()).await.unwrap();
                let mut oracle_row = row;
                oracle_row.tenant_id = Set(*tenant);
                order::Entity::insert(oracle_row)
                    .exec(&oracle.conn)
                    .await
                    .unwrap();
            }

            let across = tenancy.unscoped_across_shards().unwrap();
            let mut sharded = across
                .find::<order::Entity>()
                .filter(order::Column::TotalCents.gte(query.min_total))
                .offset(query.offset);
            let mut single =
                order::Entity::find().filter(order::Column::TotalCents.gte(query.min_total));
            if query.offset > 0 {
                single = single.offset(query.offset);
            }
            if query.descending {
                sharded = sharded
                    .order_by_desc(order::Column::TotalCents)
                    .order_by_desc(order::Column::Id);
                single = single
                    .order_by_desc(order::Column::TotalCents)
                    .order_by_desc(order::Column::Id);
            } else {
                sharded = sharded
                    .order_by_asc(order::Column::TotalCents)
                    .order_by_asc(order::Column::Id);
                single = single
                    .order_by_asc(order::Column::TotalCents)
                    .order_by_asc(order::Column::Id);
            }
            if let Some(limit) = query.limit {
                sharded = sharded.limit(limit);
                single = single.limit(limit);
            } else if query.offset > 0 {
                // SQLite needs a LIMIT to take an OFFSET.
                single = single.limit(u64::MAX >> 1);
            }
            let got: Vec<(i64, i64)> = sharded
                .all()
                .await
                .unwrap()
                .iter()
                .map(|o| (o.id, o.tenant_id))
                .collect();
            let want: Vec<(i64, i64)> = single
                .all(&oracle.conn)
                .await
                .unwrap()
                .iter()
                .map(|o| (o.id, o.tenant_id))
                .collect();
            assert_eq!(got, want, "{query:?}");
            let count = across
                .find::<order::Entity>()
                .filter(order::Column::TotalCents.gte(query.min_total))
                .count()
                .await
                .unwrap();
            let matching: Vec<i64> = rows
                .iter()
                .map(|(_, t)| *t)
                .filter(|t| *t >= query.min_total)
                .collect();
            assert_eq!(count as usize, matching.len());
            let filtered = || {
                across
                    .find::<order::Entity>()
                    .filter(order::Column::TotalCents.gte(query.min_total))
            };
            assert_eq!(
                filtered().sum(order::Column::TotalCents).await.unwrap(),
                matching.iter().sum::<i64>()
            );
            let max: Option<i64> = filtered().max(order::Column::TotalCents).await.unwrap();
            let min: Option<i64> = filtered().min(order::Column::TotalCents).await.unwrap();
            assert_eq!(max, matching.iter().copied().max());
            assert_eq!(min, matching.iter().copied().min());
            let avg = filtered().avg(order::Column::TotalCents).await.unwrap();
            let oracle_avg: Option<f64> = order::Entity::find()
                .filter(order::Column::TotalCents.gte(query.min_total))
                .select_only()
                .column_as(Expr::col(order::Column::TotalCents).avg(), "avg")
                .into_tuple()
                .one(&oracle.conn)
                .await
                .unwrap()
                .flatten();
            match (avg, oracle_avg) {
                (Some(got), Some(want)) => assert!((got - want).abs() < 1e-9, "avg {got} {want}"),
                (got, want) => assert_eq!(got, want, "avg"),
            }
            // GROUP BY the total, which tenants on every shard share, against the oracle's.
            let grouped = || filtered().group_by(order::Column::TotalCents);
            let want: Vec<(i64, i64, i64, i64, i64, f64)> = order::Entity::find()
                .filter(order::Column::TotalCents.gte(query.min_total))
                .select_only()
                .column(order::Column::TotalCents)
                .column_as(Expr::col(sea_orm::sea_query::Asterisk).count(), "n")
                .column_as(Expr::col(order::Column::Id).sum(), "s")
                .column_as(Expr::col(order::Column::Id).min(), "lo")
                .column_as(Expr::col(order::Column::Id).max(), "hi")
                .column_as(Expr::col(order::Column::Id).avg(), "mean")
                .group_by(order::Column::TotalCents)
                .order_by_asc(order::Column::TotalCents)
                .into_tuple()
                .all(&oracle.conn)
                .await
                .unwrap();
            let keys: Vec<i64> = grouped().keys().await.unwrap();
            assert_eq!(keys, want.iter().map(|w| w.0).collect::<Vec<_>>(), "keys");
            let counts: Vec<(i64, u64)> = grouped().count().await.unwrap();
            let n = want.iter().map(|w| (w.0, u64::try_from(w.1).unwrap()));
            assert_eq!(counts, n.collect::<Vec<_>>(), "count");
            let sums: Vec<(i64, i64)> = grouped().sum(order::Column::Id).await.unwrap();
            assert_eq!(
                sums,
                want.iter().map(|w| (w.0, w.2)).collect::<Vec<_>>(),
                "sum"
            );
            let lo: Vec<(i64, Option<i64>)> = grouped().min(order::Column::Id).await.unwrap();
            assert_eq!(
                lo,
                want.iter().map(|w| (w.0, Some(w.3))).collect::<Vec<_>>(),
                "min"
            );
            let hi: Vec<(i64, Option<i64>)> = grouped().max(order::Column::Id).await.unwrap();
            assert_eq!(
                hi,
                want.iter().map(|w| (w.0, Some(w.4))).collect::<Vec<_>>(),
                "max"
            );
            let means: Vec<(i64, Option<f64>)> = grouped().avg(order::Column::Id).await.unwrap();
            assert_eq!(means.len(), want.len());
            for ((key, got), w) in means.iter().zip(&want) {
                assert_eq!(*key, w.0);
                assert!((got.unwrap() - w.5).abs() < 1e-9, "avg {got:?} {}", w.5);
            }
        });
        Ok(())
    });
    rt.block_on(async {
        for db in dbs {
            db.drop_db().await;
        }
        oracle.drop_db().await;
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// A slow shard (a table locked by another transaction) and a shard whose connections are
/// refused: each is a typed error naming it within the timeout, and the opt-in returns
/// the other shards' rows with the list of the missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_refusing_shards_are_named_within_the_timeout() {
    let Some(dbs) = shard_dbs(&[Backend::Postgres, Backend::Postgres, Backend::Postgres]).await
    else {
        return;
    };
    let (tenancy, router) = hash_sharded(&dbs);
    place(&tenancy, 12, 2).await;
    let timeout = std::time::Duration::from_millis(500);
    let on = |shard: &str| {
        (1..=12i64)
            .filter(|t| router.route(t).unwrap().as_str() == shard)
            .count()
            * 2
    };

    // shard_1 is slow: another transaction holds its table.
    let blocker = sea_orm::TransactionTrait::begin(&dbs[1].conn)
        .await
        .unwrap();
    blocker
        .execute_unprepared("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let across = tenancy.unscoped_across_shards().unwrap();
    let err =
        missing_shard_is_named(&across, timeout, "shard_1", on("shard_0") + on("shard_2")).await;
    assert!(matches!(err, Error::ShardTimeout { .. }), "{err:?}");
    blocker.rollback().await.unwrap();

    // shard_2 refuses connections: its sessions are ended and new ones are not allowed.
    let name = url::Url::parse(dbs[2].url.as_deref().unwrap())
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    for sql in [
        format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    ] {
        dbs[0].conn.execute_unprepared(&sql).await.unwrap();
    }
    let started = std::time::Instant::now();
    let err = across
        .find::<order::Entity>()
        .timeout(timeout)
        .count()
        .await
        .unwrap_err();
    assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
    assert!(
        matches!(&err, Error::ShardTimeout { shard, .. } | Error::Shard { shard, .. } if shard == "shard_2"),
        "{err:?}"
    );
    for db in dbs {
        db.drop_db().await;
    }
}

/// A directory kept in a catalog database: placements survive a restart (a fresh router
/// loads them), a change goes to the catalog and the router's cache together, and an
/// unplaced tenant is an error, never a guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_in_a_catalog() {
    use std::sync::Arc;
    use tenancy_sea::{DirectoryRouter, RoutingError, catalog::Directory};

    let Some(dbs) = shard_dbs(&[Backend::Sqlite, Backend::Sqlite]).await else {
        return;
    };
    let catalog_db = TestDb::create(Backend::Sqlite).await.unwrap();
    let router = Arc::new(DirectoryRouter::new(["shard_0", "shard_1"]));
    let catalog = Directory::new(catalog_db.conn.clone(), router.clone());
    catalog.install().await.unwrap();
    let topology = |router: Arc<DirectoryRouter<i64>>| {
        Topology::new(
            router,
            [
                (ShardId::new("shard_0"), dbs[0].conn.clone()),
                (ShardId::new("shard_1"), dbs[1].conn.clone()),
            ],
        )
        .unwrap()
    };
    let tenancy: Tenancy<i64> = Tenancy::builder(catalog_db.conn.clone())
        .sharded(topology(router.clone()))
        .build()
        .unwrap();

    catalog.assign(&1i64, "shard_1").await.unwrap();
    catalog.assign(&2i64, "shard_0").await.unwrap();
    let err = catalog.assign(&3i64, "shard_9").await.unwrap_err();
    assert!(
        matches!(err, Error::Routing(RoutingError::UnknownShard(_))),
        "{err:?}"
    );
    assert!(matches!(
        tenancy.tenant(3).await,
        Err(Error::Routing(RoutingError::Unassigned))
    ));
    customer_with_orders(&tenancy, 1, None, [(None, 1)]).await;
    assert_eq!(
        order::Entity::find().all(&dbs[1].conn).await.unwrap().len(),
        1
    );

    // Move tenant 1: the catalog and the cache change together.
    catalog.assign(&1i64, "shard_0").await.unwrap();
    let moved = tenancy.tenant(1).await.unwrap();
    assert_eq!(moved.shard().map(ShardId::as_str), Some("shard_0"));

    // After a restart, a fresh router loads the same placements from the catalog.
    let fresh = Arc::new(DirectoryRouter::new(["shard_0", "shard_1"]));
    assert_eq!(
        catalog
            .for_router(fresh.clone())
            .load()
            .await
            .unwrap()
            .loaded,
        2
    );
    assert_eq!(fresh.route(&1i64).unwrap().as_str(), "shard_0");
    assert_eq!(fresh.route(&2i64).unwrap().as_str(), "shard_0");
    catalog
        .for_router(fresh.clone())
        .remove(&2i64)
        .await
        .unwrap();
    assert!(fresh.route(&2i64).is_err());
    let again = Arc::new(DirectoryRouter::new(["shard_0", "shard_1"]));
    assert_eq!(
        catalog
            .for_router(again.clone())
            .load()
            .await
            .unwrap()
            .loaded,
        1
    );

    // A directory of tenants does not place `#[shard_key]` values: without a key router
    // a key-sharded write is a configuration error, not a guess.
    let keyless = tenancy
        .tenant(2)
        .await
        .unwrap()
        .insert(event::ActiveModel {
            id: Set(9),
            device_id: Set(2),
            reading: Set(0),
            ..Default::default()
        })
        .await;
    assert!(matches!(keyless, Err(Error::Config(_))), "{keyless:?}");

    // Key ranges in a directory of their own (`devices`), for the key router: rows of a
    // `#[shard_key]` entity placed by ranges of their key, kept in the catalog and read
    // back at start. Tenant 2's entry (on shard_0) and device 2 are independent.
    let keys = Arc::new(DirectoryRouter::<i64>::new(["shard_0", "shard_1"]));
    let devices = Directory::named(catalog_db.conn.clone(), "devices", keys.clone()).unwrap();
    devices.assign_range(0, "shard_0").await.unwrap();
    devices.assign_range(1_000, "shard_1").await.unwrap();
    let tenancy: Tenancy<i64> = Tenancy::builder(catalog_db.conn.clone())
        .sharded(
            topology(router.clone())
                .with_key_router(keys.clone())
                .unwrap(),
        )
        .build()
        .unwrap();
    let acme = tenancy.tenant(2).await.unwrap();
    for (id, device) in [(1, 5), (2, 999), (3, 1_000), (4, 70_000)] {
        acme.insert(event::ActiveModel {
            id: Set(id),
            device_id: Set(device),
            reading: Set(0),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let on = |db: &TestDb| {
        let conn = db.conn.clone();
        async move {
            let mut ids: Vec<i64> = event::Entity::find()
                .all(&conn)
                .await
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect();
            ids.sort_unstable();
            ids
        }
    };
    assert_eq!(on(&dbs[0]).await, [1, 2]);
    assert_eq!(on(&dbs[1]).await, [3, 4]);
    let below = acme
        .insert(event::ActiveModel {
            id: Set(5),
            device_id: Set(-1),
            reading: Set(0),
            ..Default::default()
        })
        .await;
    assert!(matches!(
        below,
        Err(Error::Routing(RoutingError::Unassigned))
    ));
    // Moving tenant 2 moves none of its devices.
    catalog.assign(&2i64, "shard_1").await.unwrap();
    assert_eq!(keys.route(&2i64).unwrap().as_str(), "shard_0");
    let restarted = Arc::new(DirectoryRouter::new(["shard_0", "shard_1"]));
    assert_eq!(
        devices
            .for_router(restarted.clone())
            .load()
            .await
            .unwrap()
            .loaded,
        2
    );
    assert_eq!(restarted.route(&70_000i64).unwrap().as_str(), "shard_1");
    devices
        .for_router(restarted.clone())
        .remove_range(1_000)
        .await
        .unwrap();
    assert_eq!(restarted.route(&70_000i64).unwrap().as_str(), "shard_0");
    let tenants_again = Arc::new(DirectoryRouter::new(["shard_0", "shard_1"]));
    assert_eq!(
        catalog
            .for_router(tenants_again.clone())
            .load()
            .await
            .unwrap()
            .loaded,
        2
    );
    assert!(
        tenants_again.route(&70_000i64).is_err(),
        "device ranges stay out of tenants'"
    );

    drop(tenancy);
    catalog_db.drop_db().await;
    for db in dbs {
        db.drop_db().await;
    }
}

/// A sum wider than `i64` is an error on every backend, never a wrap or a cap (MariaDB
/// caps a cast to a 64-bit integer without an error), and the mean of the same rows is
/// still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sums_wider_than_i64_are_errors() {
    let Some(dbs) = shard_dbs(&[Backend::Postgres, Backend::MySql]).await else {
        return;
    };
    let (tenancy, _) = hash_sharded(&dbs);
    let big = i64::MAX / 2 + 1;
    for tenant in 1..=6 {
        customer_with_orders(&tenancy, tenant, None, [(None, big), (None, big)]).await;
    }
    let across = tenancy.unscoped_across_shards().unwrap();
    let sum = across
        .find::<order::Entity>()
        .sum(order::Column::TotalCents);
    assert!(matches!(sum.await, Err(Error::SumOverflow { .. })));
    let per_tenant = across
        .find::<order::Entity>()
        .group_by(order::Column::Tenant)
        .sum::<i64>(order::Column::TotalCents);
    assert!(matches!(per_tenant.await, Err(Error::SumOverflow { .. })));
    #[allow(clippy::cast_precision_loss)]
    let mean = big as f64;
    let avg = across
        .find::<order::Entity>()
        .avg(order::Column::TotalCents);
    assert_eq!(avg.await.unwrap(), Some(mean));
    for db in dbs {
        db.drop_db().await;
    }
}

/// When a shard's part of a fan-out passes its deadline, its statement is cancelled on the
/// server (PostgreSQL's cancel request, MariaDB's `KILL QUERY`): no connection stays
/// waiting on the slow shard, so its pool (two connections here) serves the next
/// statement at once, even after three timed-out fan-outs and with the lock still held.
async fn a_shard_timeout_cancels_the_statement_on_the_server(backend: Backend) {
    use sea_orm::{Database, Statement};
    use std::time::{Duration, Instant};
    let Some(dbs) = shard_dbs(&[backend, backend]).await else {
        return;
    };
    let ids = [ShardId::new("shard_0"), ShardId::new("shard_1")];
    let router = HashRouter::new(ids.clone());
    let mut options = tenancy_tests::pool(dbs[1].url.clone().unwrap());
    options.max_connections(2);
    let small = Database::connect(options).await.unwrap();
    let topology = Topology::new(
        router,
        [
            (ids[0].clone(), dbs[0].conn.clone()),
            (ids[1].clone(), small.clone()),
        ],
    )
    .unwrap();
    let tenancy = Tenancy::<i64>::builder(dbs[0].conn.clone())
        .sharded(topology)
        .build()
        .unwrap();
    place(&tenancy, 6, 1).await;

    // shard_1's table is held by another session.
    let holder = Database::connect(tenancy_tests::pool(dbs[1].url.clone().unwrap()))
        .await
        .unwrap();
    let lock = match backend {
        Backend::Postgres => "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE",
        _ => "LOCK TABLES orders WRITE",
    };
    holder.execute_unprepared(lock).await.unwrap();
    let across = tenancy.unscoped_across_shards().unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let err = across
            .find::<order::Entity>()
            .timeout(Duration::from_millis(300))
            .all()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::ShardTimeout { shard, .. } if shard == "shard_1"),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    // Nothing of ours waits on the lock any more, and the pool answers at once.
    let name = url::Url::parse(dbs[1].url.as_deref().unwrap())
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let waiting = match backend {
        Backend::Postgres => format!(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{name}' \
             AND wait_event_type = 'Lock'"
        ),
        _ => format!(
            "SELECT count(*) AS n FROM information_schema.PROCESSLIST WHERE DB = '{name}' \
             AND STATE LIKE '%lock%'"
        ),
    };
    let mut n = 1;
    for _ in 0..20 {
        let row = dbs[0]
            .conn
            .query_one_raw(Statement::from_string(
                dbs[0].conn.get_database_backend(),
                waiting.clone(),
            ))
            .await
            .unwrap()
            .unwrap();
        n = row.try_get::<i64>("", "n").unwrap();
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(n, 0, "statements still wait on the lock");
    let started = Instant::now();
    small
        .query_one_raw(Statement::from_string(
            small.get_database_backend(),
            "SELECT 1",
        ))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let unlock = match backend {
        Backend::Postgres => "ROLLBACK",
        _ => "UNLOCK TABLES",
    };
    holder.execute_unprepared(unlock).await.unwrap();
    holder.close().await.unwrap();
    small.close().await.unwrap();
    drop(tenancy);
    for db in dbs {
        db.drop_db().await;
    }
}

mod cancel {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_shard_timeout_cancels_the_statement_on_the_server(tenancy_tests::Backend::Postgres)
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mysql() {
        super::a_shard_timeout_cancels_the_statement_on_the_server(tenancy_tests::Backend::MySql)
            .await
    }
}

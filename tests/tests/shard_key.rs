//! Entities sharded by a `#[shard_key]` of their own: writes go to the shard of the key
//! they carry (insert_many split per shard), reads by key go to one shard, an IN list to
//! the shards it names, and a tenant's reads on every shard are asked for explicitly. The
//! same calls work unchanged under every single-database strategy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use tenancy_sea::{Error, ShardRouter};
use tenancy_tests::entities::{event, plan};
use tenancy_tests::{Backend, Flavor, Provisioned, TestDb, TestTenancy, hash_sharded, shard_dbs};

fn reading(id: i64, device: i64, value: i64) -> event::ActiveModel {
    event::ActiveModel {
        id: Set(id),
        device_id: Set(device),
        reading: Set(value),
        ..Default::default()
    }
}

/// What holds under every strategy, sharded or not.
async fn key_sharded_rows(tenancy: &TestTenancy<i64>) {
    let acme = tenancy.provisioned(1).await.unwrap();
    let globex = tenancy.provisioned(2).await.unwrap();

    // Single inserts and a batch spread over several devices (so, when sharded, shards).
    acme.insert(reading(1, 10, 100)).await.unwrap();
    let batch: Vec<_> = (2..=40).map(|i| reading(i, 10 + i % 8, i * 10)).collect();
    assert_eq!(acme.insert_many(batch).await.unwrap(), 39);
    globex.insert(reading(1_000, 10, 7)).await.unwrap();

    // A write whose key is unknown is refused, never broadcast.
    let keyless = event::ActiveModel {
        id: Set(41),
        reading: Set(1),
        ..Default::default()
    };
    match acme.insert(keyless.clone()).await {
        Err(Error::ShardKeyMissing { table, column }) => {
            assert_eq!((table, column.as_str()), ("events", "device_id"));
        }
        other => panic!("expected ShardKeyMissing, got {other:?}"),
    }
    let mixed = vec![reading(42, 11, 1), keyless];
    assert!(matches!(
        acme.insert_many(mixed).await,
        Err(Error::ShardKeyMissing { .. })
    ));
    // A batch with one bad row writes nothing, on any shard.
    let duplicate = vec![reading(43, 12, 1), reading(44, 13, 1), reading(1, 10, 1)];
    assert!(acme.insert_many(duplicate).await.is_err());
    let all = acme.across_shards().find::<event::Entity>().count().await;
    assert_eq!(all.unwrap(), 40, "a failed batch left rows behind");

    // By key: one shard, this tenant's rows with that key only.
    let device_10 = acme.by_key::<event::Entity>(10).unwrap();
    let rows = device_10.find().all().await.unwrap();
    assert_eq!(rows.len(), 1 + 5); // id 1, and 8, 16, 24, 32, 40
    assert!(rows.iter().all(|r| r.tenant_id == 1 && r.device_id == 10));
    let one = device_10.find_by_id(8).one().await.unwrap().unwrap();
    assert_eq!(one.reading, 80);
    assert!(device_10.find_by_id(9).one().await.unwrap().is_none());
    let other_tenant = globex.by_key::<event::Entity>(10).unwrap();
    assert_eq!(other_tenant.find().count().await.unwrap(), 1);
    assert!(other_tenant.find_by_id(1).one().await.unwrap().is_none());

    // An IN list: the rows of exactly those keys, merged in order.
    let listed = acme
        .by_keys::<event::Entity>([11, 12, 99])
        .unwrap()
        .order_by_asc(event::Column::Id)
        .all()
        .await
        .unwrap();
    let ids: Vec<i64> = listed.iter().map(|r| r.id).collect();
    assert_eq!(ids, [2, 9, 10, 17, 18, 25, 26, 33, 34]);

    // Explicitly on every shard: this tenant's rows, merged, limited.
    let top = acme
        .across_shards()
        .find::<event::Entity>()
        .order_by_desc(event::Column::Reading)
        .order_by_asc(event::Column::Id)
        .limit(3)
        .all()
        .await
        .unwrap();
    assert_eq!(
        top.iter().map(|r| r.reading).collect::<Vec<_>>(),
        [400, 390, 380]
    );
    let sum = acme.across_shards().find::<event::Entity>();
    assert_eq!(
        sum.sum(event::Column::Reading).await.unwrap(),
        100 + (2..=40).sum::<i64>() * 10
    );

    // Update and delete of one row go to its key's shard.
    let mut row = one.into_active_model();
    row.reading = Set(81);
    assert_eq!(acme.update(row).await.unwrap().reading, 81);
    // A changed key would leave the row on its old shard: it is looked for under the new
    // key, so nothing changes.
    let mut moved = device_10
        .find_by_id(16)
        .one()
        .await
        .unwrap()
        .unwrap()
        .into_active_model();
    moved.device_id = Set(11);
    moved.reading = Set(0);
    assert!(matches!(
        acme.update(moved).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        device_10
            .find_by_id(16)
            .one()
            .await
            .unwrap()
            .unwrap()
            .reading,
        160
    );

    // Many rows by key; the key column itself cannot be set.
    let changed = device_10
        .update_many()
        .col_expr(event::Column::Reading, sea_orm::sea_query::Expr::value(5))
        .filter(event::Column::Id.gte(24))
        .exec()
        .await
        .unwrap();
    assert_eq!(changed.rows_affected, 3);
    assert!(matches!(
        device_10
            .update_many()
            .col_expr(event::Column::DeviceId, sea_orm::sea_query::Expr::value(3))
            .exec()
            .await,
        Err(Error::ShardKeyWrite { .. })
    ));
    assert_eq!(
        globex
            .by_key::<event::Entity>(10)
            .unwrap()
            .find()
            .one()
            .await
            .unwrap()
            .unwrap()
            .reading,
        7
    );

    assert_eq!(device_10.delete_by_id(40).await.unwrap().rows_affected, 1);
    assert_eq!(
        other_tenant.delete_by_id(32).await.unwrap().rows_affected,
        0
    );
    let deleted = acme
        .by_key::<event::Entity>(11)
        .unwrap()
        .delete_many()
        .exec()
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected, 4);
    let gone = acme.delete(reading(2, 12, 0)).await.unwrap();
    assert_eq!(gone.rows_affected, 1);
    let left = acme.across_shards().find::<event::Entity>().count().await;
    assert_eq!(left.unwrap(), 40 - 1 - 4 - 1);
    assert_eq!(
        globex
            .across_shards()
            .find::<event::Entity>()
            .count()
            .await
            .unwrap(),
        1
    );

    // Upserts route by key too.
    acme.upsert(reading(1, 10, 555))
        .update_columns([event::Column::Reading])
        .exec()
        .await
        .unwrap();
    assert_eq!(
        device_10
            .find_by_id(1)
            .one()
            .await
            .unwrap()
            .unwrap()
            .reading,
        555
    );
}

tenancy_tests::backend_tests!(same_calls_on_one_database);

async fn same_calls_on_one_database(db: &TestDb) {
    if db.flavor == Flavor::ShardedSchema {
        // A tenant's tables live in its schema on its one shard: rows routed by a key of
        // their own would land where the tenant has no schema. Refused, typed, before
        // anything is sent, on every path.
        let tenancy = db.tenancy::<i64>();
        let acme = tenancy.provisioned(1).await.unwrap();
        let refused = |error: Error| {
            assert!(
                matches!(&error, Error::Config(m) if m.contains("`#[shard_key]`")),
                "{error:?}"
            )
        };
        refused(acme.insert(reading(1, 10, 100)).await.unwrap_err());
        match acme.by_keys::<event::Entity>([10]) {
            Ok(_) => panic!("a by-keys read under schema per tenant on shards was made"),
            Err(error) => refused(error),
        }
        refused(
            acme.across_shards()
                .find::<event::Entity>()
                .all()
                .await
                .unwrap_err(),
        );
        assert!(tenancy.everyone::<event::Entity>().await.is_empty());
        return;
    }
    key_sharded_rows(&db.tenancy()).await;
}

async fn on_shards(backends: &[Backend]) {
    let Some(dbs) = shard_dbs(backends).await else {
        return;
    };
    let (tenancy, router) = hash_sharded(&dbs);
    key_sharded_rows(&tenancy).await;

    // Every row is on the shard of its key, whatever its tenant's shard.
    let mut shards_used = 0;
    for (i, db) in dbs.iter().enumerate() {
        let stored = event::Entity::find().all(&db.conn).await.unwrap();
        shards_used += usize::from(!stored.is_empty());
        for row in stored {
            assert_eq!(
                router.route(&row.device_id).unwrap().as_str(),
                format!("shard_{i}")
            );
        }
    }
    assert!(
        shards_used > 1,
        "one tenant's rows should spread over the shards"
    );

    // An IN list asks only the shards its keys route to.
    let acme = tenancy.tenant(1).await.unwrap();
    let select = acme.by_keys::<event::Entity>([10]).unwrap();
    assert_eq!(select.shards(), [router.route(&10i64).unwrap()]);

    // A transaction stays on its shard: a row of a key on another shard is refused
    // before anything is written.
    let home = acme.shard().unwrap().clone();
    let away = (0..)
        .find(|k: &i64| router.route(k).unwrap() != home)
        .unwrap();
    let here = (0..)
        .find(|k: &i64| router.route(k).unwrap() == home)
        .unwrap();
    let txn = acme.begin().await.unwrap();
    txn.insert(reading(500, here, 1)).await.unwrap();
    match txn.insert(reading(501, away, 1)).await {
        Err(Error::CrossShard {
            table,
            shard,
            transaction_shard,
        }) => {
            assert_eq!(table, "events");
            assert_eq!(shard, router.route(&away).unwrap().as_str());
            assert_eq!(transaction_shard, home.as_str());
        }
        other => panic!("expected CrossShard, got {other:?}"),
    }
    assert!(matches!(
        txn.by_key::<event::Entity>(away),
        Err(Error::CrossShard { .. })
    ));
    assert_eq!(
        txn.by_key::<event::Entity>(here)
            .unwrap()
            .find_by_id(500)
            .count()
            .await
            .unwrap(),
        1
    );
    txn.rollback().await.unwrap();
    let stored = event::Entity::find_by_id(500)
        .one(&dbs[0].conn)
        .await
        .unwrap();
    assert!(stored.is_none());

    // A row away from the tenant's own shard is updated there, through its model.
    let inserted = acme.insert(reading(502, away, 1)).await.unwrap();
    let mut am: event::ActiveModel = inserted.into();
    am.reading = Set(2);
    acme.update(am).await.unwrap();
    let away_rows = acme.by_key::<event::Entity>(away).unwrap();
    assert_eq!(away_rows.shard(), Some(&router.route(&away).unwrap()));
    assert_eq!(
        away_rows
            .find_by_id(502)
            .one()
            .await
            .unwrap()
            .unwrap()
            .reading,
        2
    );

    for db in dbs {
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sqlite_shards() {
    on_shards(&[Backend::Sqlite; 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_postgres_shards() {
    on_shards(&[Backend::Postgres; 4]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_postgres_mariadb_sqlite_shards() {
    on_shards(&[Backend::Postgres, Backend::MySql, Backend::Sqlite]).await;
}

/// Global tables: written to every shard (or to none), read by tenant handles from their
/// own shard.
async fn global_copies(backends: &[Backend]) {
    let Some(dbs) = shard_dbs(backends).await else {
        return;
    };
    let (tenancy, _) = hash_sharded(&dbs);
    let globals = tenancy.globals();
    let plans = (1..=3).map(|id| plan::ActiveModel {
        id: Set(id),
        name: Set(format!("plan {id}")),
        price_cents: Set(id * 1000),
    });
    assert_eq!(globals.insert_many(plans).await.unwrap(), 3);
    // Every shard holds the same rows, and each tenant reads them on its own shard.
    for db in &dbs {
        assert_eq!(plan::Entity::find().count(&db.conn).await.unwrap(), 3);
    }
    for tenant in 1..=8 {
        let db = tenancy.tenant(tenant).await.unwrap();
        assert_eq!(db.find::<plan::Entity>().count().await.unwrap(), 3);
    }
    let cheaper = plan::Entity::update_many()
        .col_expr(
            plan::Column::PriceCents,
            Expr::col(plan::Column::PriceCents).sub(1),
        )
        .filter(plan::Column::Id.gte(2));
    assert_eq!(globals.update_many(cheaper).await.unwrap(), 2);
    for db in &dbs {
        let prices: Vec<i64> = plan::Entity::find()
            .order_by_asc(plan::Column::Id)
            .all(&db.conn)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.price_cents)
            .collect();
        assert_eq!(prices, [1000, 1999, 2999]);
    }

    // Without its primary key a row would be numbered differently on each shard.
    let unnumbered = plan::ActiveModel {
        name: Set("x".into()),
        price_cents: Set(1),
        ..Default::default()
    };
    assert!(matches!(
        globals.insert(unnumbered).await,
        Err(Error::Config(_))
    ));

    // A shard whose copy has diverged: nothing is committed anywhere.
    plan::Entity::delete_by_id(3)
        .exec(&dbs[1].conn)
        .await
        .unwrap();
    let drop_expensive = plan::Entity::delete_many().filter(plan::Column::PriceCents.gt(1500));
    match globals.delete_many(drop_expensive).await {
        Err(Error::GlobalDiverged { table, counts }) => {
            assert_eq!(table, "plans");
            assert_eq!(counts.len(), dbs.len());
        }
        other => panic!("expected GlobalDiverged, got {other:?}"),
    }
    assert_eq!(plan::Entity::find().count(&dbs[0].conn).await.unwrap(), 3);
    // A write that fails on one shard (a duplicate key there) is committed on none.
    let dup = plan::ActiveModel {
        id: Set(3),
        name: Set("again".into()),
        price_cents: Set(1),
    };
    assert!(matches!(
        globals.insert(dup).await,
        Err(Error::Shard { .. })
    ));
    assert_eq!(plan::Entity::find().count(&dbs[1].conn).await.unwrap(), 2);
    for db in dbs {
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_tables_on_three_sqlite_shards() {
    global_copies(&[Backend::Sqlite; 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_tables_on_mixed_shards() {
    global_copies(&[Backend::Postgres, Backend::MySql, Backend::Sqlite]).await;
}

#[derive(Clone, Debug)]
struct KeyQuery {
    tenant: i64,
    keys: Vec<i64>,
    min_reading: i64,
    descending: bool,
    limit: Option<u64>,
    offset: u64,
}

/// Rows of a key-sharded entity written through tenant handles (`insert_many` split per
/// shard) over 3 SQLite shards read back like one database holding every row: by one key,
/// by an IN list, and across every shard, with filters, ORDER BY both ways, LIMIT, OFFSET
/// and COUNT.
#[test]
fn key_sharded_reads_equal_one_database() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use sea_orm::{ConnectionTrait, QuerySelect, Select};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (dbs, oracle) = rt.block_on(async {
        (
            shard_dbs(&[Backend::Sqlite; 3]).await.unwrap(),
            TestDb::with_schema(Backend::Sqlite).await.unwrap(),
        )
    });
    let (tenancy, _) = hash_sharded(&dbs);
    let rows = prop::collection::vec((1..=3i64, 0..20i64, 0..40i64), 0..80);
    let query = (
        1..=3i64,
        prop::collection::vec(0..20i64, 0..4),
        0..40i64,
        any::<bool>(),
        prop::option::of(0..15u64),
        0..6u64,
    )
        .prop_map(
            |(tenant, keys, min_reading, descending, limit, offset)| KeyQuery {
                tenant,
                keys,
                min_reading,
                descending,
                limit,
                offset,
            },
        );
    let config = Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let result = TestRunner::new(config).run(&(rows, query), |(rows, q)| {
        rt.block_on(async {
            for db in dbs.iter().chain([&oracle]) {
                db.conn
                    .execute_unprepared("DELETE FROM events")
                    .await
                    .unwrap();
            }
            for tenant in 1..=3 {
                let mine: Vec<event::ActiveModel> = rows
                    .iter()
                    .enumerate()
                    .filter(|(_, (t, _, _))| *t == tenant)
                    .map(|(n, (_, device, value))| reading(n as i64 + 1, *device, *value))
                    .collect();
                let db = tenancy.tenant(tenant).await.unwrap();
                db.insert_many(mine).await.unwrap();
            }
            let all: Vec<event::ActiveModel> = rows
                .iter()
                .enumerate()
                .map(|(n, (tenant, device, value))| {
                    let mut row = reading(n as i64 + 1, *device, *value);
                    row.tenant_id = Set(*tenant);
                    row
                })
                .collect();
            if !all.is_empty() {
                event::Entity::insert_many(all)
                    .exec_without_returning(&oracle.conn)
                    .await
                    .unwrap();
            }

            // The oracle's answer to a select of the tenant's rows plus `condition`.
            let oracle_ids = |condition: sea_orm::Condition| {
                let mut select: Select<event::Entity> = event::Entity::find()
                    .filter(event::Column::TenantId.eq(q.tenant))
                    .filter(event::Column::Reading.gte(q.min_reading))
                    .filter(condition);
                select = if q.descending {
                    select
                        .order_by_desc(event::Column::Reading)
                        .order_by_desc(event::Column::Id)
                } else {
                    select
                        .order_by_asc(event::Column::Reading)
                        .order_by_asc(event::Column::Id)
                };
                // SQLite needs a LIMIT to take an OFFSET.
                select = select
                    .offset(q.offset)
                    .limit(q.limit.unwrap_or(u64::MAX >> 1));
                let conn = oracle.conn.clone();
                async move {
                    select
                        .all(&conn)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|r| r.id)
                        .collect::<Vec<_>>()
                }
            };
            let shape = |select: tenancy_sea::ShardedSelect<event::Entity>| {
                let mut select = select
                    .filter(event::Column::Reading.gte(q.min_reading))
                    .offset(q.offset);
                select = if q.descending {
                    select
                        .order_by_desc(event::Column::Reading)
                        .order_by_desc(event::Column::Id)
                } else {
                    select
                        .order_by_asc(event::Column::Reading)
                        .order_by_asc(event::Column::Id)
                };
                match q.limit {
                    Some(limit) => select.limit(limit),
                    None => select,
                }
            };
            let ids = |rows: Vec<event::Model>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
            let db = tenancy.tenant(q.tenant).await.unwrap();

            let listed = shape(db.by_keys::<event::Entity>(q.keys.clone()).unwrap());
            let want = oracle_ids(event::Column::DeviceId.is_in(q.keys.clone()).into()).await;
            assert_eq!(ids(listed.all().await.unwrap()), want, "by_keys {q:?}");

            let everywhere = shape(db.across_shards().find::<event::Entity>());
            let want = oracle_ids(sea_orm::Condition::all()).await;
            assert_eq!(ids(everywhere.all().await.unwrap()), want, "across {q:?}");
            let counted = db
                .across_shards()
                .find::<event::Entity>()
                .filter(event::Column::Reading.gte(q.min_reading))
                .count()
                .await
                .unwrap();
            let matching = rows
                .iter()
                .filter(|(t, _, v)| *t == q.tenant && *v >= q.min_reading)
                .count();
            assert_eq!(counted as usize, matching, "count {q:?}");

            if let Some(key) = q.keys.first() {
                let one = db
                    .by_key::<event::Entity>(*key)
                    .unwrap()
                    .find()
                    .filter(event::Column::Reading.gte(q.min_reading))
                    .order_by_asc(event::Column::Id)
                    .all()
                    .await
                    .unwrap();
                let mut want: Vec<i64> = rows
                    .iter()
                    .enumerate()
                    .filter(|(_, (t, d, v))| *t == q.tenant && d == key && *v >= q.min_reading)
                    .map(|(n, _)| n as i64 + 1)
                    .collect();
                want.sort_unstable();
                assert_eq!(ids(one), want, "by_key {q:?}");
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

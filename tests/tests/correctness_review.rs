//! One regression test per finding of the correctness review: answers that were wrong and
//! operations that lost data or stopped a fleet, each tried again on every backend where
//! it applies, against a single database holding every row (the oracle).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::prelude::{Date, DateTime, DateTimeUtc, Decimal};
use sea_orm::sea_query::{Expr, NullOrdering};
use sea_orm::{DatabaseConnection, DbBackend, EntityTrait, Order, QueryOrder, QuerySelect, Set};
use tenancy_sea::Tenancy;
use tenancy_tests::{Backend, TestDb, hash_sharded, raw, shard_dbs};

/// A table with a column of every type a merge orders by.
mod measure {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "measures")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        #[tenant_id]
        pub tenant_id: i64,
        pub label: String,
        pub small: i16,
        pub rank: Option<i64>,
        #[sea_orm(column_type = "Decimal(Some((16, 4)))")]
        pub amount: Decimal,
        pub day: Date,
        pub at_time: Time,
        pub at: DateTime,
        pub at_utc: DateTimeUtc,
        pub at_tz: DateTimeWithTimeZone,
        pub blob: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

const ROWS: i64 = 60;

/// Labels that a case- and accent-insensitive collation, or a locale's, orders apart from
/// byte order.
const LABELS: [&str; 12] = [
    "apple", "Apple", "ápple", "banana", "Zebra", "zebra", "éclair", "a b", "a\tb", "MÜNCHEN",
    "münchen", "Ärger",
];

fn row(id: i64) -> measure::ActiveModel {
    use chrono::{Duration as ChronoDuration, FixedOffset};
    let base = chrono_base();
    let offset = FixedOffset::east_opt(((id % 5) as i32 - 2) * 3600).unwrap();
    measure::ActiveModel {
        id: Set(id),
        tenant_id: Set(id % 10 + 1),
        label: Set(LABELS[(id * 7 % 12) as usize].to_owned()),
        small: Set(((id * 37) % 23 - 11) as i16),
        rank: Set((id % 4 != 0).then_some((id * 13) % 17)),
        amount: Set(Decimal::new((id * 7919) % 1000 - 500, 2)),
        day: Set(base.date() + ChronoDuration::days((id * 11) % 40)),
        at_time: Set(base.time() + ChronoDuration::seconds((id * 97) % 5000)),
        at: Set(base + ChronoDuration::seconds((id * 7) % 50 * 600)),
        at_utc: Set((base + ChronoDuration::minutes((id * 29) % 300)).and_utc()),
        at_tz: Set({
            let utc: DateTimeUtc = (base + ChronoDuration::minutes((id * 31) % 400)).and_utc();
            utc.with_timezone(&offset)
        }),
        blob: Set(vec![(id * 5 % 7) as u8, (id % 3) as u8]),
    }
}

fn chrono_base() -> DateTime {
    Date::from_ymd_opt(2024, 3, 1)
        .unwrap()
        .and_hms_opt(8, 0, 0)
        .unwrap()
}

async fn create(conn: &DatabaseConnection, backend: Backend) {
    conn.get_schema_builder()
        .register(measure::Entity)
        .apply(conn)
        .await
        .unwrap();
    if backend == Backend::Postgres {
        // A locale's collation on the text column, as on many production servers.
        raw(
            conn,
            r#"ALTER TABLE measures ALTER COLUMN label TYPE varchar COLLATE "en-US-x-icu""#,
        )
        .await;
    }
}

/// Three shards and an oracle of `backend`, with the same rows.
async fn setup(backend: Backend) -> Option<(Vec<TestDb>, TestDb, Tenancy<i64>)> {
    let dbs = shard_dbs(&[backend, backend, backend]).await?;
    let oracle = TestDb::create(backend).await?;
    for db in dbs.iter().chain([&oracle]) {
        create(&db.conn, backend).await;
    }
    let (tenancy, _) = hash_sharded(&dbs);
    for id in 1..=ROWS {
        let db = tenancy.tenant(id % 10 + 1).await.unwrap();
        db.insert(row(id)).await.unwrap();
        measure::Entity::insert(row(id))
            .exec_without_returning(&oracle.conn)
            .await
            .unwrap();
    }
    Some((dbs, oracle, tenancy.into_inner()))
}

/// The oracle's ids ordered by `col` as the library defines the merge's order: text byte
/// for byte, NULL first in ascending order; ties by id.
async fn oracle_ids(
    oracle: &DatabaseConnection,
    col: measure::Column,
    order: Order,
    offset: u64,
    limit: u64,
) -> Vec<i64> {
    let backend = oracle.get_database_backend();
    let mut select = measure::Entity::find();
    let column = Expr::col((measure::Entity, col));
    let expr = if matches!(col, measure::Column::Label) {
        match backend {
            DbBackend::Postgres => Expr::cust_with_expr(r#"$1 COLLATE "C""#, column),
            DbBackend::MySql => {
                Expr::cust_with_expr("CAST(CONVERT(? USING utf8mb4) AS BINARY)", column)
            }
            _ => Expr::cust_with_expr("? COLLATE BINARY", column),
        }
    } else {
        column
    };
    let nulls = if matches!(order, Order::Desc) {
        NullOrdering::Last
    } else {
        NullOrdering::First
    };
    if backend == DbBackend::Postgres {
        QuerySelect::query(&mut select).order_by_expr_with_nulls(expr, order, nulls);
    } else {
        QuerySelect::query(&mut select).order_by_expr(expr, order);
    }
    select
        .order_by_asc(measure::Column::Id)
        .offset(offset)
        .limit(limit)
        .all(oracle)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect()
}

async fn merged_ids(
    tenancy: &Tenancy<i64>,
    col: measure::Column,
    order: Order,
    offset: u64,
    limit: u64,
) -> Vec<i64> {
    let across = tenancy.unscoped_across_shards().unwrap();
    across
        .find::<measure::Entity>()
        .order_by(col, order)
        .order_by_asc(measure::Column::Id)
        .offset(offset)
        .limit(limit)
        .all()
        .await
        .unwrap_or_else(|e| panic!("{col:?}: {e}"))
        .into_iter()
        .map(|m| m.id)
        .collect()
}

async fn finish(dbs: Vec<TestDb>, oracle: TestDb) {
    for db in dbs {
        db.drop_db().await;
    }
    oracle.drop_db().await;
}

/// Item 1: ORDER BY text with LIMIT/OFFSET returns the oracle's rows, under a locale's
/// collation on PostgreSQL and MariaDB's case- and accent-insensitive default.
async fn scatter_order_by_text_returns_the_right_rows(backend: Backend) {
    let Some((dbs, oracle, tenancy)) = setup(backend).await else {
        return;
    };
    for order in [Order::Asc, Order::Desc] {
        for offset in [0, 5, 17, 40, 55] {
            assert_eq!(
                merged_ids(&tenancy, measure::Column::Label, order.clone(), offset, 10).await,
                oracle_ids(
                    &oracle.conn,
                    measure::Column::Label,
                    order.clone(),
                    offset,
                    10
                )
                .await,
                "label {order:?} offset {offset}"
            );
        }
    }
    finish(dbs, oracle).await;
}

/// Item 2: ORDER BY every type SeaORM maps (small integers, nullable integers, decimals,
/// dates, times, timestamps with and without a time zone, bytes) merges like the oracle.
async fn scatter_order_by_every_type(backend: Backend) {
    let Some((dbs, oracle, tenancy)) = setup(backend).await else {
        return;
    };
    use measure::Column::*;
    for col in [Small, Rank, Amount, Day, AtTime, At, AtUtc, AtTz, Blob] {
        if backend == Backend::Sqlite && matches!(col, AtTz) {
            // SQLite keeps a timestamp with a time zone as text and orders it as text; the
            // merge orders by the instant (see the sharding chapter), so mixed offsets
            // differ there by design.
            continue;
        }
        for order in [Order::Asc, Order::Desc] {
            for offset in [0, 7, 33] {
                assert_eq!(
                    merged_ids(&tenancy, col, order.clone(), offset, 9).await,
                    oracle_ids(&oracle.conn, col, order.clone(), offset, 9).await,
                    "{col:?} {order:?} offset {offset}"
                );
            }
        }
    }
    finish(dbs, oracle).await;
}

/// Item 4: `count` honours limit and offset, through a tenant's handle and across shards,
/// as SeaORM's `count` does.
async fn count_means_one_thing(backend: Backend) {
    let Some((dbs, oracle, tenancy)) = setup(backend).await else {
        return;
    };
    let across = tenancy.unscoped_across_shards().unwrap();
    let cases: [(u64, Option<u64>, u64); 6] = [
        (0, None, 60),
        (0, Some(3), 3),
        (58, Some(3), 2),
        (60, Some(3), 0),
        (100, None, 0),
        (10, None, 50),
    ];
    for (offset, limit, expected) in cases {
        let mut select = across.find::<measure::Entity>().offset(offset);
        if let Some(limit) = limit {
            select = select.limit(limit);
        }
        assert_eq!(
            select.count().await.unwrap(),
            expected,
            "offset {offset} limit {limit:?}"
        );
        // SeaORM writes `OFFSET` without `LIMIT`, which only PostgreSQL accepts: the
        // oracle is asked with a limit.
        let Some(limit) = limit else {
            continue;
        };
        let oracle_select = measure::Entity::find().offset(offset).limit(limit);
        assert_eq!(
            sea_orm::PaginatorTrait::count(oracle_select, &oracle.conn)
                .await
                .unwrap(),
            expected
        );
    }
    // A tenant's handle means the same.
    let db = tenancy.tenant(3).await.unwrap();
    let all = db.find::<measure::Entity>().count().await.unwrap();
    assert_eq!(all, 6);
    assert_eq!(
        db.find::<measure::Entity>().limit(4).count().await.unwrap(),
        4
    );
    assert_eq!(
        db.find::<measure::Entity>()
            .offset(4)
            .limit(4)
            .count()
            .await
            .unwrap(),
        2
    );
    finish(dbs, oracle).await;
}

tenancy_tests::on_every_backend!(
    scatter_order_by_text_returns_the_right_rows,
    scatter_order_by_every_type,
    count_means_one_thing
);

/// A table whose `doc` column the databases order by a rule of their own (JSON).
mod document {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "documents")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[tenant_id]
        pub tenant_id: i64,
        #[sea_orm(column_type = "Json")]
        pub doc: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// An order the merge cannot reproduce is a typed error before anything runs.
#[tokio::test]
async fn merge_refuses_orders_it_cannot_reproduce() {
    let Some(dbs) = shard_dbs(&[Backend::Sqlite, Backend::Sqlite]).await else {
        return;
    };
    let (tenancy, _) = hash_sharded(&dbs);
    let err = tenancy
        .unscoped_across_shards()
        .unwrap()
        .find::<document::Entity>()
        .order_by_asc(document::Column::Doc)
        .all()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, tenancy_sea::Error::Unmergeable { column, .. } if column == "doc"),
        "{err:?}"
    );
    for db in dbs {
        db.drop_db().await;
    }
}

//! Database-enforced isolation: PostgreSQL row-level security refusing raw SQL and enforcing
//! connection alternating tenants, many tasks over few connections, and configuration
//! that cannot work.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::{ConnectionTrait, Database, DbBackend, Set, Statement, TransactionTrait};
use std::sync::Arc;
use tenancy_sea::{Error, Tenancy};
use tenancy_tests::checks::{self, tenants_seen};
use tenancy_tests::entities::*;
use tenancy_tests::{Backend, Flavor, RLS_SETTING, TestDb};

fn select_tenants(backend: DbBackend) -> Statement {
    Statement::from_string(backend, "SELECT tenant_id FROM orders")
}

async fn seed(tenancy: &Tenancy<i64>, tenants: impl IntoIterator<Item = i64>, per_tenant: i64) {
    for tenant in tenants {
        let db = tenancy.tenant(tenant).await.unwrap();
        let c = db
            .insert(customer::ActiveModel {
                name: Set(format!("c{tenant}")),
                ..Default::default()
            })
            .await
            .unwrap();
        db.insert_many((0..per_tenant).map(|i| order::ActiveModel {
            customer_id: Set(c.id),
            total_cents: Set(i),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
}

/// Under row-level security the handle refuses raw SQL (a raw `set_config` could switch
/// the tenant the policies read), and the database itself enforces the policies on the
/// application role: a unit set up for tenant 1 cannot write tenant 2's rows, and a
/// session without the setting sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_refuses_raw_sql_and_the_database_enforces() {
    let Some(test) = TestDb::for_flavor(Backend::Postgres, Flavor::Rls).await else {
        return;
    };
    let tenancy = test.tenancy::<i64>();
    seed(&tenancy, [1, 2], 3).await;
    let a = tenancy.tenant(1).await.unwrap();
    assert_eq!(tenants_seen(&a).await, [1, 1, 1]);
    let err = a
        .query_all_raw(select_tenants(DbBackend::Postgres))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RawSqlNotIsolated { .. }), "{err:?}");

    // The policies, seen from the application role itself within a unit set up for
    // tenant 1 exactly as the handle sets it up.
    let app = test.app.clone().unwrap();
    let txn = app.begin().await.unwrap();
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT set_config($1, '1', true)",
        [RLS_SETTING.into()],
    ))
    .await
    .unwrap();
    let seen = txn
        .query_all_raw(select_tenants(DbBackend::Postgres))
        .await
        .unwrap();
    assert_eq!(seen.len(), 3);
    let err = txn
        .execute_raw(Statement::from_string(
            DbBackend::Postgres,
            "UPDATE orders SET tenant_id = 2",
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    txn.rollback().await.unwrap();

    // The application role without the setting sees nothing at all: fail closed.
    let rows = app
        .query_all_raw(select_tenants(DbBackend::Postgres))
        .await
        .unwrap();
    assert!(rows.is_empty());
    // And the setting never survives into the pool: the handle only ever sets it
    // transaction-locally.
    let row = app
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT current_setting('{RLS_SETTING}', true) AS s"),
        ))
        .await
        .unwrap()
        .unwrap();
    let setting: Option<String> = row.try_get("", "s").unwrap();
    assert!(setting.unwrap_or_default().is_empty());
    test.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_sql_needs_database_isolation() {
    let test = TestDb::for_flavor(Backend::Sqlite, Flavor::RowLevel)
        .await
        .unwrap();
    let a = test.tenancy::<i64>().tenant(1).await.unwrap();
    let err = a
        .query_all_raw(select_tenants(DbBackend::Sqlite))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RawSqlNotIsolated { .. }), "{err:?}");
    test.drop_db().await;
}

/// With a pool of exactly one connection, alternate tenants 10,000 times and read through the
/// handle, which the policies filter too: no row of the other tenant, ever, and no row
/// missing (a leaked setting would hide them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_one_connection_alternating_tenants_10000_times() {
    let Some(mut test) = TestDb::for_flavor(Backend::Postgres, Flavor::Rls).await else {
        return;
    };
    seed(&test.tenancy::<i64>(), [1, 2], 2).await;
    let role = test.create_app_role().await;
    let single = test.connect_as(&role, 1).await;
    let tenancy: Tenancy<i64> = Tenancy::builder(single)
        .row_level_security(RLS_SETTING)
        .build()
        .unwrap();
    let handles = [
        tenancy.tenant(1).await.unwrap(),
        tenancy.tenant(2).await.unwrap(),
    ];
    assert_eq!(checks::alternate(&handles, 10_000, 2).await, 0);
    test.drop_db().await;
}

/// 64 concurrent tasks over 16 tenants on a pool of 8 connections, each checking every row
/// it reads and that none is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_64_tasks_16_tenants_pool_of_8() {
    let Some(mut test) = TestDb::for_flavor(Backend::Postgres, Flavor::Rls).await else {
        return;
    };
    seed(&test.tenancy::<i64>(), 1..=16, 3).await;
    let role = test.create_app_role().await;
    let pool = test.connect_as(&role, 8).await;
    let tenancy = Arc::new(
        Tenancy::<i64>::builder(pool)
            .row_level_security(RLS_SETTING)
            .build()
            .unwrap(),
    );
    assert_eq!(checks::concurrent(tenancy, 64, 16, 50, 3).await, 0);
    test.drop_db().await;
}

#[tokio::test]
async fn configuration_that_cannot_work_is_refused() {
    let sqlite = Database::connect("sqlite::memory:").await.unwrap();
    let err = Tenancy::<i64>::builder(sqlite.clone())
        .row_level_security(RLS_SETTING)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("needs PostgreSQL"), "{err}");
    let err = Tenancy::<i64>::builder(sqlite)
        .schema_per_tenant("tenant_")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("needs PostgreSQL"), "{err}");

    let Some(test) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    for bad in [
        "tenant_id",
        "a.b.c",
        "x'; DROP TABLE orders; --.y",
        "Tenancy.Tenant",
    ] {
        let result = Tenancy::<i64>::builder(test.conn.clone())
            .row_level_security(bad)
            .build();
        assert!(result.is_err(), "{bad:?} was accepted");
    }
    for bad in ["Tenant_", "t-", "\"; DROP SCHEMA public; --"] {
        let result = Tenancy::<i64>::builder(test.conn.clone())
            .schema_per_tenant(bad)
            .build();
        assert!(
            matches!(result, Err(Error::InvalidIdentifier(_))),
            "{bad:?}: {result:?}"
        );
    }
    test.drop_db().await;
}

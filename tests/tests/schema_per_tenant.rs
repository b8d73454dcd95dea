//! Schema per tenant on PostgreSQL: provisioning, isolation (also of raw SQL), hostile ids,
//! a pool of one connection alternating tenants, concurrency, and fleet migrations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use futures_util::TryStreamExt;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, Set, Statement};
use std::sync::Arc;
use tenancy_sea::{Error, HandleConnection, Tenancy, TenantDb};
use tenancy_tests::checks::{self, tenants_seen};
use tenancy_tests::entities::*;
use tenancy_tests::migration::{Migrator, MigratorV2};
use tenancy_tests::{Backend, Flavor, TestDb, raw};

const PREFIX: &str = "tenant_";

/// A fresh PostgreSQL database with the global `plans` table in `public`.
async fn database() -> Option<TestDb> {
    let db = TestDb::create(Backend::Postgres).await?;
    db.conn
        .get_schema_builder()
        .register(plan::Entity)
        .apply(&db.conn)
        .await
        .unwrap();
    Some(db)
}

fn schema_tenancy<T: tenancy_sea::SqlTenantId>(conn: DatabaseConnection) -> Tenancy<T> {
    Tenancy::builder(conn)
        .schema_per_tenant(PREFIX)
        .build()
        .unwrap()
}

async fn shop<C: HandleConnection>(db: &TenantDb<i64, C>, orders: i64) -> customer::Model {
    let c = db
        .insert(customer::ActiveModel {
            name: Set(format!("c{}", db.tenant_id())),
            ..Default::default()
        })
        .await
        .unwrap();
    db.insert_many((1..=orders).map(|i| order::ActiveModel {
        customer_id: Set(c.id),
        total_cents: Set(i * 100),
        ..Default::default()
    }))
    .await
    .unwrap();
    c
}

async fn count_in_schema(conn: &DatabaseConnection, schema: &str, table: &str) -> i64 {
    conn.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        format!("SELECT count(*) AS n FROM \"{schema}\".\"{table}\""),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get("", "n")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_per_tenant_end_to_end() {
    let Some(test) = database().await else { return };
    let tenancy = schema_tenancy::<i64>(test.conn.clone());
    tenancy.create_tenant_schema::<Migrator>(1).await.unwrap();
    tenancy.create_tenant_schema::<Migrator>(2).await.unwrap();
    assert_eq!(tenancy.tenant_schemas().await.unwrap(), [1, 2]);
    assert_eq!(tenancy.tenant_schema(&1).unwrap().as_str(), "tenant_1");

    // Creating an existing tenant fails and changes nothing.
    let err = tenancy
        .create_tenant_schema::<Migrator>(1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");

    let a = tenancy.tenant(1).await.unwrap();
    let b = tenancy.tenant(2).await.unwrap();
    let ca = shop(&a, 3).await;
    shop(&b, 2).await;

    // Each tenant's rows are in its own schema, and each handle reads only there; raw SQL
    // through the handle too.
    assert_eq!(count_in_schema(&test.conn, "tenant_1", "orders").await, 3);
    assert_eq!(count_in_schema(&test.conn, "tenant_2", "orders").await, 2);
    assert_eq!(a.find::<order::Entity>().count().await.unwrap(), 3);
    assert_eq!(tenants_seen(&a).await, [1, 1, 1]);
    assert_eq!(tenants_seen(&b).await, [2, 2]);

    // The same calls as under row level: filters, relations, loaders, pages, streams.
    let big = a
        .find::<order::Entity>()
        .filter(order::Column::TotalCents.gte(200))
        .order_by_asc(order::Column::TotalCents)
        .all()
        .await
        .unwrap();
    assert_eq!(
        big.iter().map(|o| o.total_cents).collect::<Vec<_>>(),
        [200, 300]
    );
    let with = a
        .find::<customer::Entity>()
        .find_with_related::<order::Entity>()
        .all()
        .await
        .unwrap();
    assert_eq!(with.len(), 1);
    assert_eq!(with[0].1.len(), 3);
    let loaded = a.load_one::<customer::Entity, _>(&big).await.unwrap();
    assert!(loaded.iter().all(|c| c.as_ref() == Some(&ca)));
    let mut pages = a
        .find::<order::Entity>()
        .order_by_asc(order::Column::Id)
        .paginate(2);
    assert_eq!(pages.num_pages().await.unwrap(), 2);
    assert_eq!(pages.fetch_and_next().await.unwrap().unwrap().len(), 2);
    let streamed: Vec<order::Model> = b
        .find::<order::Entity>()
        .stream()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed.len(), 2);

    // Writes: update, upsert, delete, all in the tenant's schema.
    let first = big[0].clone();
    let mut am: order::ActiveModel = first.into();
    am.total_cents = Set(250);
    assert_eq!(a.update(am).await.unwrap().total_cents, 250);
    a.upsert(account::ActiveModel {
        email: Set("ada@example.com".into()),
        visits: Set(1),
        ..Default::default()
    })
    .on_conflict([account::Column::Email])
    .update_columns([account::Column::Visits])
    .exec()
    .await
    .unwrap();
    // The same e-mail in another tenant's schema is no conflict at all.
    b.upsert(account::ActiveModel {
        email: Set("ada@example.com".into()),
        visits: Set(5),
        ..Default::default()
    })
    .exec()
    .await
    .unwrap();
    assert_eq!(count_in_schema(&test.conn, "tenant_1", "accounts").await, 1);
    assert_eq!(count_in_schema(&test.conn, "tenant_2", "accounts").await, 1);
    let deleted = b.delete_many::<order::Entity>().exec().await.unwrap();
    assert_eq!(deleted.rows_affected, 2);
    assert_eq!(count_in_schema(&test.conn, "tenant_1", "orders").await, 3);

    // A transaction rolls back within the tenant's schema.
    let txn = a.begin().await.unwrap();
    shop(&txn, 0).await;
    txn.rollback().await.unwrap();
    assert_eq!(
        count_in_schema(&test.conn, "tenant_1", "customers").await,
        1
    );

    // Global tables resolve to `public`.
    raw(
        &test.conn,
        "INSERT INTO public.plans (name, price_cents) VALUES ('pro', 900)",
    )
    .await;
    assert_eq!(a.find::<plan::Entity>().all().await.unwrap().len(), 1);

    // Dropping a tenant drops its schema; its handle then fails closed, with a typed error.
    tenancy.drop_tenant_schema(2).await.unwrap();
    assert_eq!(tenancy.tenant_schemas().await.unwrap(), [1]);
    assert!(matches!(
        b.find::<order::Entity>().all().await,
        Err(Error::UnknownTenant { tenant }) if tenant == "2"
    ));
    tenancy.drop_tenant_schema(2).await.unwrap();
    test.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tenant_ids_never_reach_ddl() {
    let Some(test) = database().await else { return };
    let tenancy = schema_tenancy::<String>(test.conn.clone());
    let schemas_before = schema_count(&test.conn).await;
    for hostile in [
        "x\"; DROP SCHEMA public; --",
        "acme-inc",
        "Acme",
        &"a".repeat(60),
    ] {
        let err = tenancy.tenant(hostile).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidIdentifier(_)),
            "{hostile:?}: {err:?}"
        );
        let err = tenancy
            .create_tenant_schema::<Migrator>(hostile)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidIdentifier(_)),
            "{hostile:?}: {err:?}"
        );
        let err = tenancy.drop_tenant_schema(hostile).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidIdentifier(_)),
            "{hostile:?}: {err:?}"
        );
    }
    assert_eq!(schema_count(&test.conn).await, schemas_before);
    tenancy
        .create_tenant_schema::<Migrator>("acme")
        .await
        .unwrap();
    assert_eq!(tenancy.tenant_schemas().await.unwrap(), ["acme".to_owned()]);
    test.drop_db().await;
}

async fn schema_count(conn: &DatabaseConnection) -> i64 {
    conn.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT count(*) AS n FROM pg_namespace",
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get("", "n")
    .unwrap()
}

/// Tenants `1..=tenants`, each with its schema and a shop of `orders` orders.
async fn provision_shops(test: &TestDb, tenants: i64, orders: i64) {
    let admin = schema_tenancy::<i64>(test.conn.clone());
    for tenant in 1..=tenants {
        admin
            .create_tenant_schema::<Migrator>(tenant)
            .await
            .unwrap();
        shop(&admin.tenant(tenant).await.unwrap(), orders).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_alternating_schemas_10000_times() {
    let Some(test) = database().await else { return };
    provision_shops(&test, 2, 2).await;
    let single = test.connect_as("postgres", 1).await;
    let tenancy = schema_tenancy::<i64>(single);
    let handles = [
        tenancy.tenant(1).await.unwrap(),
        tenancy.tenant(2).await.unwrap(),
    ];
    assert_eq!(checks::alternate(&handles, 10_000, 2).await, 0);
    test.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_64_tasks_16_tenants_pool_of_8() {
    let Some(test) = database().await else { return };
    provision_shops(&test, 16, 3).await;
    let pool = test.connect_as("postgres", 8).await;
    let tenancy = Arc::new(schema_tenancy::<i64>(pool));
    assert_eq!(checks::concurrent(tenancy, 64, 16, 50, 3).await, 0);
    test.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_migration_reports_failures_and_resumes() {
    let Some(test) = database().await else { return };
    let tenancy = schema_tenancy::<i64>(test.conn.clone());
    for tenant in 1..=20 {
        tenancy
            .create_tenant_schema::<Migrator>(tenant)
            .await
            .unwrap();
    }
    // Tenant 13 has a hand-made object in the way of the second migration.
    raw(
        &test.conn,
        "CREATE INDEX orders_total_cents ON tenant_13.customers (name)",
    )
    .await;

    let mut steps = Vec::new();
    let report = tenancy
        .migrate_all::<MigratorV2>(4, |p| steps.push((p.done, p.total, p.error.is_some())))
        .await
        .unwrap();
    assert_eq!(report.migrated.len(), 19);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, 13);
    assert!(!report.is_success());
    assert_eq!(steps.len(), 20);
    assert_eq!(steps.last().map(|s| (s.0, s.1)), Some((20, 20)));
    assert_eq!(steps.iter().filter(|s| s.2).count(), 1);

    // Every other tenant has the index; tenant 13 rolled back to where it was.
    let indexed = test
        .conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'orders_total_cents' \
             AND tablename = 'orders'",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(indexed, 19);

    // Fix the tenant and run again: it resumes; the others have nothing to do.
    raw(&test.conn, "DROP INDEX tenant_13.orders_total_cents").await;
    let report = tenancy.migrate_all::<MigratorV2>(4, |_| {}).await.unwrap();
    assert!(report.is_success(), "{:?}", report.failed);
    assert_eq!(report.migrated.len(), 20);
    let again = tenancy.migrate_all::<MigratorV2>(4, |_| {}).await.unwrap();
    assert!(again.is_success());
    test.drop_db().await;
}

#[tokio::test]
async fn schema_operations_need_the_schema_strategy() {
    let Some(test) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let row_level = Tenancy::<i64>::builder(test.conn.clone()).build().unwrap();
    let err = row_level
        .create_tenant_schema::<Migrator>(1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(row_level.tenant_schemas().await.is_err());
    test.drop_db().await;
}

/// Tenants at two migration versions under load, on one shared pool: half the tenants'
/// `customers.name` is `varchar(200)`, the other half's is not. Every read and write of
/// every tenant works, because statements of schemas of different shapes are never
/// prepared as one; without the shape (`schema_version_table(None)`) the same load fails
/// with PostgreSQL's "cached plan must not change result type".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_at_two_migration_versions_under_load() {
    use tenancy_tests::migration::WideNamesMigrator;
    let Some(test) = TestDb::for_flavor(Backend::Postgres, Flavor::Schema).await else {
        return;
    };
    // A pool of two connections, so that every connection serves every tenant.
    let mut options = tenancy_tests::pool(test.url.clone().unwrap());
    options.max_connections(2);
    let pool = sea_orm::Database::connect(options).await.unwrap();
    let tenancy = std::sync::Arc::new(
        Tenancy::<i64>::builder(pool.clone())
            .schema_per_tenant(tenancy_tests::SCHEMA_PREFIX)
            .build()
            .unwrap(),
    );
    for tenant in 1..=6 {
        tenancy
            .create_tenant_schema::<Migrator>(tenant)
            .await
            .unwrap();
    }
    // Halfway through a fleet migration: the even tenants are at the next version.
    for tenant in [2, 4, 6] {
        tenancy
            .migrate_tenant::<WideNamesMigrator>(&tenant)
            .await
            .unwrap();
    }
    let load = |tenancy: std::sync::Arc<Tenancy<i64>>| async move {
        let tasks: Vec<_> = (0..12)
            .map(|task| {
                let tenancy = tenancy.clone();
                tokio::spawn(async move {
                    for round in 0..30 {
                        let tenant = (task + round) % 6 + 1;
                        let db = tenancy.tenant(tenant).await?;
                        db.insert(customer::ActiveModel {
                            name: Set(format!("c{tenant}")),
                            ..Default::default()
                        })
                        .await?;
                        let mine = db.find::<customer::Entity>().all().await?;
                        assert!(mine.iter().all(|c| c.tenant_id == tenant));
                        let txn = db.begin().await?;
                        txn.find::<customer::Entity>().one().await?;
                        txn.commit().await?;
                    }
                    Ok::<(), Error>(())
                })
            })
            .collect();
        let mut failures = Vec::new();
        for task in tasks {
            if let Err(error) = task.await.unwrap() {
                failures.push(error.to_string());
            }
        }
        failures
    };
    let failures = load(tenancy.clone()).await;
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        failures.first()
    );

    // The finding, shown: without the shape the shared statements break.
    let unshaped = std::sync::Arc::new(
        Tenancy::<i64>::builder(pool.clone())
            .schema_per_tenant(tenancy_tests::SCHEMA_PREFIX)
            .schema_version_table(None)
            .build()
            .unwrap(),
    );
    let failures = load(unshaped).await;
    assert!(
        failures
            .iter()
            .any(|f| f.contains("cached plan must not change result type")),
        "{failures:?}"
    );
    pool.close().await.unwrap();
    drop(tenancy);
    test.drop_db().await;
}

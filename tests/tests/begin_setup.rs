//! Units of work attacked: on PostgreSQL and MySQL/MariaDB, where the library begins them
//! itself (on PostgreSQL under row-level security and schema per tenant without a shape,
//! with the set-up in the same round trip as `BEGIN`), and on SQLite, where SeaORM does.
//! Units that fail, are dropped or are cancelled at every step leave no transaction and
//! no setting on the connection; a schema migrated by another process is read at its new
//! shape; a schema dropped under a handle is an unknown tenant and the connection stays
//! usable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Set, Statement, TransactionTrait,
};
use std::future::Future;
use std::task::Context;
use std::time::Duration;
use tenancy_sea::{Error, Tenancy, TenantDb};
use tenancy_tests::entities::*;
use tenancy_tests::migration::{Migrator, WideNamesMigrator};
use tenancy_tests::{
    Backend, Flavor, Provisioned, RLS_SETTING, SCHEMA_PREFIX, TestDb, customer_named,
    customer_names, customer_with_orders,
};

/// The one connection of `pool` is outside any transaction and carries no tenant setting
/// and the default `search_path`: nothing of a unit reached it.
async fn assert_clean(pool: &DatabaseConnection, after: &str) {
    if pool.get_database_backend() == DbBackend::Sqlite {
        // SQLite refuses a `BEGIN` inside a transaction: a transaction left open on the
        // connection would make this one fail.
        let begun = pool.execute_unprepared("BEGIN").await;
        assert!(
            begun.is_ok(),
            "{after}: a transaction was left open on the connection: {begun:?}"
        );
        pool.execute_unprepared("ROLLBACK").await.unwrap();
        return;
    }
    if pool.get_database_backend() == DbBackend::MySql {
        let row = pool
            .query_one_raw(Statement::from_string(
                DbBackend::MySql,
                "SELECT CAST(@@in_transaction AS SIGNED) AS open",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.try_get::<i64>("", "open").unwrap(),
            0,
            "{after}: a transaction was left open on the connection"
        );
        return;
    }
    // `SAVEPOINT` outside a transaction block is an error: a transaction left open on the
    // connection would accept it.
    let savepoint = pool.execute_unprepared("SAVEPOINT probe").await;
    assert!(
        savepoint.is_err(),
        "{after}: a transaction was left open on the connection"
    );
    let row = pool
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT coalesce(current_setting('{RLS_SETTING}', true), '') AS tenant, \
                 current_setting('search_path') AS path"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "tenant").unwrap(), "", "{after}");
    assert_eq!(
        row.try_get::<String>("", "path").unwrap(),
        "\"$user\", public",
        "{after}"
    );
}

/// Polls `future` `polls` times, letting the server answer in between, then drops it: a
/// task cancelled at that point. Whether it finished first.
async fn cancel_after<F: Future>(future: F, polls: usize) -> bool {
    let mut future = std::pin::pin!(future);
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..polls {
        if future.as_mut().poll(&mut cx).is_ready() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    false
}

/// Every way a unit can end other than by commit, on a pool of one connection: a
/// statement that fails inside the unit, a transaction and a savepoint dropped, and units
/// cancelled after each of their first 12 polls (in the middle of `BEGIN`, of the
/// statement, of the commit). After each, the connection carries no transaction and no
/// setting, and each tenant still reads all of its own rows and no other's.
async fn units_that_do_not_commit_leave_nothing(
    pool: &DatabaseConnection,
    a: &TenantDb<i64>,
    b: &TenantDb<i64>,
) {
    let seen = |db: &TenantDb<i64>| {
        let db = db.clone();
        async move {
            let mut tenants: Vec<i64> = db
                .find::<order::Entity>()
                .all()
                .await
                .unwrap()
                .into_iter()
                .map(|o| o.tenant_id)
                .collect();
            tenants.sort_unstable();
            tenants
        }
    };
    let (mine, theirs) = (seen(a).await, seen(b).await);
    assert!(!mine.is_empty() && !theirs.is_empty());

    // A statement that fails inside the unit: an order whose id is taken.
    let taken = a.find::<order::Entity>().one().await.unwrap().unwrap();
    let err = a
        .insert(order::ActiveModel {
            id: Set(taken.id),
            customer_id: Set(taken.customer_id),
            total_cents: Set(1),
            ..Default::default()
        })
        .await;
    assert!(err.is_err(), "{err:?}");
    assert_clean(pool, "a failed insert").await;

    // A transaction dropped after a read, without commit.
    let txn = a.begin().await.unwrap();
    assert_eq!(
        txn.find::<order::Entity>().all().await.unwrap().len(),
        mine.len()
    );
    drop(txn);
    assert_clean(pool, "a dropped transaction").await;

    // A savepoint dropped inside a transaction that commits.
    let txn = a.begin().await.unwrap();
    let nested = txn.begin().await.unwrap();
    nested.find::<order::Entity>().all().await.unwrap();
    drop(nested);
    assert_eq!(
        txn.find::<order::Entity>().all().await.unwrap().len(),
        mine.len()
    );
    txn.commit().await.unwrap();
    assert_clean(pool, "a dropped savepoint").await;

    for polls in 1..=12 {
        let _ = cancel_after(a.find::<order::Entity>().all(), polls).await;
        assert_clean(pool, &format!("a read cancelled after {polls} polls")).await;
        let _ = cancel_after(
            async {
                let txn = a.begin().await?;
                txn.find::<order::Entity>().all().await?;
                txn.commit().await
            },
            polls,
        )
        .await;
        assert_clean(
            pool,
            &format!("a transaction cancelled after {polls} polls"),
        )
        .await;
        assert_eq!(seen(b).await, theirs, "after {polls} polls");
        assert_eq!(seen(a).await, mine, "after {polls} polls");
    }
}

/// The same on MySQL/MariaDB under row level, where a `BEGIN` cancelled half-way used to
/// leave the pool's one connection inside an open transaction (`@@in_transaction` 1 after
/// 3 polls): the next borrower's writes joined a transaction nobody would commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_units_that_do_not_commit_leave_nothing_on_the_connection() {
    let Some(test) = TestDb::for_flavor(Backend::MySql, Flavor::RowLevel).await else {
        return;
    };
    row_level_units_leave_nothing(one_connection(&test).await).await;
    test.drop_db().await;
}

/// [`units_that_do_not_commit_leave_nothing`] under row level on `single`, a pool of one
/// connection on a database of the tenant tables, with two tenants' rows; closes it.
async fn row_level_units_leave_nothing(single: DatabaseConnection) {
    let tenancy = Tenancy::<i64>::builder(single.clone()).build().unwrap();
    customer_with_orders(&tenancy, 1, None, [(None, 10), (None, 11)]).await;
    customer_with_orders(&tenancy, 2, None, [(None, 20)]).await;
    let (a, b) = (
        tenancy.tenant(1).await.unwrap(),
        tenancy.tenant(2).await.unwrap(),
    );
    units_that_do_not_commit_leave_nothing(&single, &a, &b).await;
    drop((a, b, tenancy));
    single.close().await.unwrap();
}

/// The same on SQLite, whose units go through SeaORM's transactions (the library begins
/// no transaction of its own there: closing a connection could lose an in-memory
/// database): a unit cancelled at any step leaves its one connection outside any
/// transaction, and each tenant's rows as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_units_that_do_not_commit_leave_nothing_on_the_connection() {
    let test = TestDb::for_flavor(Backend::Sqlite, Flavor::RowLevel)
        .await
        .expect("SQLite needs no server");
    let path = test
        .sqlite_path()
        .expect("a SQLite file")
        .display()
        .to_string();
    let mut options = tenancy_tests::pool(format!("sqlite://{path}"));
    options.max_connections(1);
    row_level_units_leave_nothing(Database::connect(options).await.unwrap()).await;
    test.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rls_units_that_do_not_commit_leave_nothing_on_the_connection() {
    let Some(mut test) = TestDb::for_flavor(Backend::Postgres, Flavor::Rls).await else {
        return;
    };
    let seeding = test.tenancy::<i64>();
    customer_with_orders(&seeding, 1, None, [(None, 10), (None, 11)]).await;
    customer_with_orders(&seeding, 2, None, [(None, 20)]).await;
    let role = test.create_app_role().await;
    let single = test.connect_as(&role, 1).await;
    let tenancy = Tenancy::<i64>::builder(single.clone())
        .row_level_security(RLS_SETTING)
        .build()
        .unwrap();
    let (a, b) = (
        tenancy.tenant(1).await.unwrap(),
        tenancy.tenant(2).await.unwrap(),
    );
    units_that_do_not_commit_leave_nothing(&single, &a, &b).await;
    drop((a, b, tenancy));
    single.close().await.unwrap();
    test.drop_db().await;
}

/// Schema per tenant on `pool`, reading each schema's shape or not.
fn by_schema(pool: DatabaseConnection, shaped: bool) -> Tenancy<i64> {
    let builder = Tenancy::<i64>::builder(pool).schema_per_tenant(SCHEMA_PREFIX);
    let builder = if shaped {
        builder
    } else {
        builder.schema_version_table(None)
    };
    builder.build().unwrap()
}

/// A pool of one connection on `test`'s database.
async fn one_connection(test: &TestDb) -> DatabaseConnection {
    let mut options = tenancy_tests::pool(test.url.clone().unwrap());
    options.max_connections(1);
    Database::connect(options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_units_that_do_not_commit_leave_nothing_on_the_connection() {
    let Some(test) = TestDb::for_flavor(Backend::Postgres, Flavor::Schema).await else {
        return;
    };
    let single = one_connection(&test).await;
    let tenancy = by_schema(single.clone(), true);
    for tenant in [1, 2] {
        tenancy
            .create_tenant_schema::<Migrator>(tenant)
            .await
            .unwrap();
        customer_with_orders(&tenancy, tenant, None, [(None, tenant * 10)]).await;
    }
    let (a, b) = (
        tenancy.tenant(1).await.unwrap(),
        tenancy.tenant(2).await.unwrap(),
    );
    units_that_do_not_commit_leave_nothing(&single, &a, &b).await;
    // Without a shape the set-up travels with `BEGIN`.
    let unshaped = by_schema(single.clone(), false);
    let (c, d) = (
        unshaped.tenant(1).await.unwrap(),
        unshaped.tenant(2).await.unwrap(),
    );
    units_that_do_not_commit_leave_nothing(&single, &c, &d).await;
    drop((a, b, c, d, tenancy, unshaped));
    single.close().await.unwrap();
    test.drop_db().await;
}

/// Another process migrates a tenant's schema after this one read its shape, and this
/// process's one connection holds statements prepared for the old shape: the next unit
/// reads the new shape in its set-up, and its statements are prepared afresh (reusing the
/// old ones would fail with "cached plan must not change result type").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_migrated_by_another_process_is_read_at_its_new_shape() {
    let Some(test) = TestDb::for_flavor(Backend::Postgres, Flavor::Schema).await else {
        return;
    };
    let single = one_connection(&test).await;
    let ours = by_schema(single.clone(), true);
    let theirs = by_schema(test.conn.clone(), true);
    ours.create_tenant_schema::<Migrator>(1).await.unwrap();
    let db = ours.tenant(1).await.unwrap();
    db.insert(customer_named("short")).await.unwrap();
    for _ in 0..3 {
        assert_eq!(db.find::<customer::Entity>().all().await.unwrap().len(), 1);
    }
    theirs
        .migrate_tenant::<WideNamesMigrator>(&1)
        .await
        .unwrap();
    let long = "w".repeat(150);
    db.insert(customer_named(&long)).await.unwrap();
    let names = customer_names(&db).await;
    assert_eq!(names.len(), 2);
    assert!(names.contains(&long));
    let txn = db.begin().await.unwrap();
    assert_eq!(txn.find::<customer::Entity>().all().await.unwrap().len(), 2);
    txn.commit().await.unwrap();
    drop((db, ours, theirs));
    single.close().await.unwrap();
    test.drop_db().await;
}

/// A tenant schema dropped after its shape was read, and one that never existed (with and
/// without shapes): each unit is [`Error::UnknownTenant`], and the one connection is
/// left clean and serves the other tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_schema_is_an_unknown_tenant_and_the_connection_stays_usable() {
    let Some(test) = TestDb::for_flavor(Backend::Postgres, Flavor::Schema).await else {
        return;
    };
    let single = one_connection(&test).await;
    let shaped = by_schema(single.clone(), true);
    let unshaped = by_schema(single.clone(), false);
    for tenant in [1, 2] {
        shaped
            .create_tenant_schema::<Migrator>(tenant)
            .await
            .unwrap();
        customer_with_orders(&shaped, tenant, None, [(None, 1)]).await;
    }
    let doomed = shaped.tenant(2).await.unwrap();
    doomed.find::<order::Entity>().all().await.unwrap();
    shaped.drop_tenant_schema(2).await.unwrap();
    let survivor = shaped.tenant(1).await.unwrap();
    for (tenancy, what) in [(&shaped, "shaped"), (&unshaped, "unshaped")] {
        for tenant in [2, 99] {
            let db = tenancy.tenant(tenant).await.unwrap();
            for _ in 0..2 {
                let err = db.find::<order::Entity>().all().await.unwrap_err();
                assert!(
                    matches!(&err, Error::UnknownTenant { tenant: t } if *t == tenant.to_string()),
                    "{what} {tenant}: {err:?}"
                );
                let err = db.begin().await.unwrap_err();
                assert!(
                    matches!(err, Error::UnknownTenant { .. }),
                    "{what}: {err:?}"
                );
                assert_clean(&single, &format!("{what} tenant {tenant}")).await;
            }
        }
    }
    let err = doomed.find::<order::Entity>().all().await.unwrap_err();
    assert!(matches!(err, Error::UnknownTenant { .. }), "{err:?}");
    assert_eq!(
        survivor.find::<order::Entity>().all().await.unwrap().len(),
        1
    );
    drop((doomed, survivor, shaped, unshaped));
    single.close().await.unwrap();
    test.drop_db().await;
}

/// Savepoints, attacked under each PostgreSQL isolation and on MySQL/MariaDB: a savepoint dropped while a
/// stream of its transaction holds the connection is still rolled back, and the
/// transaction's own work still commits; a commit with a savepoint open commits both, and
/// the savepoint then runs nothing; savepoints begun and cancelled at every poll leave the
/// transaction and its set-up intact (one of them, for certain, while its insert waits on
/// a lock); a savepoint begun after a failed statement fails on PostgreSQL, and ending
/// the transaction still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_end_only_themselves() {
    use futures_util::StreamExt;
    for (backend, flavor) in [
        (Backend::Postgres, Flavor::RowLevel),
        (Backend::Postgres, Flavor::Rls),
        (Backend::Postgres, Flavor::Schema),
        (Backend::MySql, Flavor::RowLevel),
    ] {
        let Some(test) = TestDb::for_flavor(backend, flavor).await else {
            return;
        };
        let tenancy = test.tenancy::<i64>();
        let db = tenancy.provisioned(1).await.unwrap();

        // Dropped while a stream holds the connection.
        let txn = db.begin().await.unwrap();
        txn.insert(customer_named("kept")).await.unwrap();
        let savepoint = txn.begin().await.unwrap();
        savepoint.insert(customer_named("dropped")).await.unwrap();
        let mut rows = txn.find::<customer::Entity>().stream().await.unwrap();
        assert!(rows.next().await.is_some());
        drop(savepoint);
        drop(rows);
        txn.commit().await.unwrap();
        assert_eq!(customer_names(&db).await, ["kept"], "{flavor:?}");

        // A commit with a savepoint open commits both; the savepoint then runs nothing.
        let txn = db.begin().await.unwrap();
        let savepoint = txn.begin().await.unwrap();
        savepoint.insert(customer_named("inner")).await.unwrap();
        txn.commit().await.unwrap();
        assert!(
            savepoint.insert(customer_named("late")).await.is_err(),
            "{flavor:?}"
        );
        assert!(savepoint.commit().await.is_err(), "{flavor:?}");
        assert_eq!(customer_names(&db).await, ["inner", "kept"], "{flavor:?}");

        // Statements cancelled in flight, on PostgreSQL only: sqlx's MySQL driver does not
        // resynchronize a connection whose statement was given up half-way (the next
        // statement of the transaction fails with a protocol error, and the connection is
        // closed when it goes back to the pool, as `mysql_units_...` shows).
        let mut cancelled = 0;
        if backend == Backend::Postgres {
            // Savepoints cancelled at every poll: the transaction and its set-up stand. A
            // savepoint's row is there when it finished, and may be when its release was on
            // its way when cancelled (as with any commit cancelled in flight); never when
            // the savepoint was cancelled before its release was sent.
            let mut finished = 0;
            for polls in 1..=6 {
                let txn = db.begin().await.unwrap();
                let done = cancel_after(
                    async {
                        let savepoint = txn.begin().await?;
                        savepoint.insert(customer_named("cancelled")).await?;
                        savepoint.commit().await
                    },
                    polls,
                )
                .await;
                finished += usize::from(done);
                txn.insert(customer_named(&format!("after {polls}")))
                    .await
                    .unwrap();
                txn.commit().await.unwrap();
            }
            let names = customer_names(&db).await;
            let count = |name: &str| names.iter().filter(|n| *n == name).count();
            cancelled = count("cancelled");
            assert!(
                (finished..=6).contains(&cancelled),
                "{flavor:?}: {finished} finished: {names:?}"
            );
            assert_eq!(names.len(), 8 + cancelled, "{flavor:?}: {names:?}");
            assert_eq!(count("late"), 0, "{flavor:?}: {names:?}");

            // Cancelled for certain: the savepoint's insert waits on a lock another session
            // holds, and is given up while it waits; its row never lands, the transaction's
            // does.
            let table = match flavor {
                Flavor::Schema => format!("{SCHEMA_PREFIX}1.customers"),
                _ => "customers".to_owned(),
            };
            let blocker = test.conn.begin().await.unwrap();
            let (lock, unlock) = match backend {
                Backend::MySql => (format!("LOCK TABLES {table} WRITE"), "UNLOCK TABLES"),
                _ => (format!("LOCK TABLE {table} IN EXCLUSIVE MODE"), "SELECT 1"),
            };
            blocker.execute_unprepared(&lock).await.unwrap();
            let txn = db.begin().await.unwrap();
            let done = cancel_after(
                async {
                    let savepoint = txn.begin().await?;
                    savepoint.insert(customer_named("blocked")).await?;
                    savepoint.commit().await
                },
                10,
            )
            .await;
            assert!(!done, "{flavor:?}: the insert did not wait for the lock");
            blocker.execute_unprepared(unlock).await.unwrap();
            blocker.rollback().await.unwrap();
            txn.insert(customer_named("after the lock")).await.unwrap();
            txn.commit().await.unwrap();
            let names = customer_names(&db).await;
            assert!(
                !names.iter().any(|n| n == "blocked"),
                "{flavor:?}: {names:?}"
            );
            assert!(
                names.iter().any(|n| n == "after the lock"),
                "{flavor:?}: {names:?}"
            );
        }

        // After a failed statement a PostgreSQL transaction is aborted: a savepoint fails
        // (MySQL goes on), and the rollback still ends it.
        let txn = db.begin().await.unwrap();
        let taken = txn.find::<customer::Entity>().one().await.unwrap().unwrap();
        let mut again = customer_named("again");
        again.id = Set(taken.id);
        assert!(txn.insert(again).await.is_err());
        let savepoint = txn.begin().await;
        assert_eq!(
            savepoint.is_err(),
            backend == Backend::Postgres,
            "{flavor:?}"
        );
        drop(savepoint);
        txn.rollback().await.unwrap();
        // The rows so far (on PostgreSQL six after the cancelled savepoints, those that
        // landed, and the one after the lock), nothing of the rolled-back unit.
        let expected = match backend {
            Backend::Postgres => 9 + cancelled,
            _ => 2,
        };
        assert_eq!(customer_names(&db).await.len(), expected, "{flavor:?}");
        drop((db, tenancy));
        test.drop_db().await;
    }
}

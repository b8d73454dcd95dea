//! Tenant schemas' shape markers, attacked: a unit confirms the shape it guessed by
//! locking the marker of it in its `BEGIN`, so it waits for a migration of its schema, and
//! a migration waits for it; tenants of different shapes on one connection never share a
//! prepared statement; a schema changed outside the library loses its marker and is read
//! the long way until a fleet migration marks it again; a schema from before markers
//! works the long way and is marked by the next migration; two processes migrating one
//! schema at once both succeed; in a fleet half migrated, each tenant's guess misses at
//! most once, not on every unit; a fleet migration that fails half-way, or whose process is
//! killed half-way, leaves every schema as it was.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait,
};
use std::time::Duration;
use tenancy_sea::{METRIC_SHAPE_MISSES, METRIC_SHAPE_READS, Tenancy, TenantDb};
use tenancy_tests::entities::*;
use tenancy_tests::migration::{
    BrokenWideNamesMigrator, Migrator, STALL_SQL, StallingMigrator, WideNamesMigrator,
};
use tenancy_tests::{Backend, Flavor, SCHEMA_PREFIX, TestDb, customer_named, customer_names};

/// The markers `schema` holds.
async fn markers(conn: &DatabaseConnection, schema: &str) -> Vec<String> {
    conn.query_all_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT c.relname::text AS name FROM pg_class c JOIN pg_namespace n \
         ON n.oid = c.relnamespace WHERE n.nspname = $1 \
         AND c.relname LIKE 'tenancy\\_shape\\_%' ORDER BY 1",
        [schema.into()],
    ))
    .await
    .unwrap()
    .iter()
    .map(|row| row.try_get::<String>("", "name").unwrap())
    .collect()
}

/// The marker `schema`'s shape should have, computed from its migrations table.
async fn expected_marker(conn: &DatabaseConnection, schema: &str) -> String {
    conn.query_one_raw(Statement::from_string(
        DbBackend::Postgres,
        format!(
            "SELECT 'tenancy_shape_' || lpad(to_hex(hashtext(coalesce(max(version), ''))), \
             8, '0') AS name FROM \"{schema}\".seaql_migrations"
        ),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get("", "name")
    .unwrap()
}

/// A pool of one connection on `test`'s database, and schema per tenant on it, reading
/// shapes (the default).
async fn one_connection(test: &TestDb) -> (DatabaseConnection, Tenancy<i64>) {
    let mut options = tenancy_tests::pool(test.url.clone().unwrap());
    options.max_connections(1);
    let pool = Database::connect(options).await.unwrap();
    let tenancy = Tenancy::<i64>::builder(pool.clone())
        .schema_per_tenant(SCHEMA_PREFIX)
        .build()
        .unwrap();
    (pool, tenancy)
}

/// [`one_connection`], with a schema provisioned for each of `tenants`.
async fn provisioned(test: &TestDb, tenants: &[i64]) -> (DatabaseConnection, Tenancy<i64>) {
    let (pool, tenancy) = one_connection(test).await;
    for tenant in tenants {
        tenancy
            .create_tenant_schema::<Migrator>(*tenant)
            .await
            .unwrap();
    }
    (pool, tenancy)
}

/// [`provisioned`] with tenants 1 and 2, their handles, and a customer each ("one",
/// "two").
async fn two_tenants(
    test: &TestDb,
) -> (
    DatabaseConnection,
    Tenancy<i64>,
    TenantDb<i64>,
    TenantDb<i64>,
) {
    let (pool, tenancy) = provisioned(test, &[1, 2]).await;
    let (one, two) = (
        tenancy.tenant(1).await.unwrap(),
        tenancy.tenant(2).await.unwrap(),
    );
    one.insert(customer_named("one")).await.unwrap();
    two.insert(customer_named("two")).await.unwrap();
    (pool, tenancy, one, two)
}

/// Every tenant schema migrated with `M` by another process, which must succeed.
async fn migrated_elsewhere<M: sea_orm_migration::MigratorTrait>(test: &TestDb) {
    let report = other_process(test)
        .migrate_all::<M>(2, |_| {})
        .await
        .unwrap();
    assert!(report.is_success(), "{:?}", report.failed);
}

/// Schema per tenant on `test`'s own pool: another process.
fn other_process(test: &TestDb) -> Tenancy<i64> {
    Tenancy::<i64>::builder(test.conn.clone())
        .schema_per_tenant(SCHEMA_PREFIX)
        .build()
        .unwrap()
}

/// A provisioned schema holds one marker, of its shape; once a unit has read that shape,
/// the next units lock the marker in their `BEGIN`: while another session holds it
/// exclusively, a unit waits, and goes on with the right rows once it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_confirms_its_shape_by_locking_its_marker() {
    let Some(test) = TestDb::for_flavor(Backend::Postgres, Flavor::Schema).await else {
        return;
    };
    let (pool, tenancy) = provisioned(&test, &[1]).await;
    let marker = expected_marker(&test.conn, "tenant_1").await;
    assert_eq!(
        markers(&test.conn, "tenant_1").await,
        std::slice::from_ref(&marker)
    );
    let db = tenancy.tenant(1).await.unwrap();
    db.insert(customer_named("first")).await.unwrap();
    assert_eq!(customer_names(&db).await, ["first"]);

    let locker = test.conn.begin().await.unwrap();
    locker
        .execute_unprepared(&format!(
            "LOCK TABLE tenant_1.\"{marker}\" IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    let reader = tokio::spawn({
        let db = db.clone();
        async move { customer_names(&db).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !reader.is_finished(),
        "a unit read its rows while its schema's marker was locked: it did not lock it"
    );
    locker.rollback().await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the unit waits only for the marker")
        .unwrap();
    assert_eq!(read, ["first"]);
    drop((db, tenancy));
    pool.close().await.unwrap();
    test.drop_db().await;
}

/// Another process migrates tenant 1 while a unit of it is open here: the migration waits
/// for the unit (no deadlock, though the unit read the table the migration alters), the
/// unit commits, the migration then commits, and tenant 1's schema holds the marker of
/// its new shape only. On this process's one connection, units of tenant 1 (new shape)
/// and tenant 2 (old) then alternate: each reads its own rows at its own shape, and a
/// name only the new shape can hold is written to tenant 1 and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waits_for_open_units_and_shapes_never_share_statements() {
    let Some(test) = TestDb::for_flavor(Backend::Postgres, Flavor::Schema).await else {
        return;
    };
    let (pool, tenancy, one, two) = two_tenants(&test).await;
    let old = markers(&test.conn, "tenant_1").await;

    let txn = one.begin().await.unwrap();
    assert_eq!(txn.find::<customer::Entity>().all().await.unwrap().len(), 1);
    let theirs = other_process(&test);
    let migration = tokio::spawn(async move {
        theirs
            .migrate_tenant::<WideNamesMigrator>(&1)
            .await
            .map_err(|e| e.to_string())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !migration.is_finished(),
        "the migration changed tenant 1's tables under an open unit"
    );
    txn.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), migration)
        .await
        .expect("the migration goes on once the unit ends")
        .unwrap()
        .unwrap();
    let new = markers(&test.conn, "tenant_1").await;
    assert_eq!(new, [expected_marker(&test.conn, "tenant_1").await]);
    assert_ne!(new, old);
    assert_eq!(markers(&test.conn, "tenant_2").await, old);

    let long = "w".repeat(150);
    one.insert(customer_named(&long)).await.unwrap();
    for round in 0..10 {
        assert_eq!(
            customer_names(&one).await,
            ["one".to_owned(), long.clone()],
            "round {round}"
        );
        assert_eq!(customer_names(&two).await, ["two"], "round {round}");
        let txn = two.begin().await.unwrap();
        assert_eq!(txn.find::<customer::Entity>().all().await.unwrap().len(), 1);
        txn.commit().await.unwrap();
    }
    drop((one, two, tenancy));
    pool.close().await.unwrap();
    test.drop_db().await;
}

/// A schema migrated outside the library (its table altered and its migrations table
/// written by hand, on another connection) loses its marker to the trigger: this
/// process's units, whose connection holds statements prepared for the old shape, read
/// the new shape the long way and use statements of the new one. The next fleet migration,
/// with nothing to run, marks the schema again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_changed_outside_the_library_is_read_the_long_way_until_marked() {
    let Some(test) = TestDb::for_flavor(Backend::Postgres, Flavor::Schema).await else {
        return;
    };
    let (pool, tenancy) = provisioned(&test, &[1]).await;
    let db = tenancy.tenant(1).await.unwrap();
    db.insert(customer_named("short")).await.unwrap();
    for _ in 0..3 {
        assert_eq!(customer_names(&db).await, ["short"]);
    }
    test.conn
        .execute_unprepared(
            "BEGIN; ALTER TABLE tenant_1.customers ALTER COLUMN name TYPE varchar(200); \
             INSERT INTO tenant_1.seaql_migrations (version, applied_at) \
             VALUES ('m0003_wide_customer_names', 0); COMMIT",
        )
        .await
        .unwrap();
    assert!(markers(&test.conn, "tenant_1").await.is_empty());
    let long = "w".repeat(150);
    db.insert(customer_named(&long)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            customer_names(&db).await,
            ["short".to_owned(), long.clone()]
        );
    }
    migrated_elsewhere::<WideNamesMigrator>(&test).await;
    assert_eq!(
        markers(&test.conn, "tenant_1").await,
        [expected_marker(&test.conn, "tenant_1").await]
    );
    for _ in 0..3 {
        assert_eq!(
            customer_names(&db).await,
            ["short".to_owned(), long.clone()]
        );
    }
    drop((db, tenancy));
    pool.close().await.unwrap();
    test.drop_db().await;
}

/// A schema from before markers (its marker, trigger and function dropped) next to a
/// marked one: both tenants' units read their own rows, interleaved on one connection;
/// the next fleet migration, with nothing to run, gives the old schema its marker and
/// trigger, and its units still read their own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_before_markers_works_and_is_marked_by_the_next_migration() {
    let Some(test) = TestDb::for_flavor(Backend::Postgres, Flavor::Schema).await else {
        return;
    };
    let (pool, tenancy) = provisioned(&test, &[1, 2]).await;
    let marker = expected_marker(&test.conn, "tenant_2").await;
    test.conn
        .execute_unprepared(&format!(
            "DROP TRIGGER tenancy_shape_changed ON tenant_2.seaql_migrations; \
             DROP FUNCTION tenant_2.tenancy_shape_changed(); DROP VIEW tenant_2.\"{marker}\""
        ))
        .await
        .unwrap();
    let (one, two) = (
        tenancy.tenant(1).await.unwrap(),
        tenancy.tenant(2).await.unwrap(),
    );
    one.insert(customer_named("one")).await.unwrap();
    two.insert(customer_named("two")).await.unwrap();
    for _ in 0..5 {
        assert_eq!(customer_names(&one).await, ["one"]);
        assert_eq!(customer_names(&two).await, ["two"]);
    }
    migrated_elsewhere::<Migrator>(&test).await;
    assert_eq!(markers(&test.conn, "tenant_2").await, [marker]);
    let trigger = Statement::from_string(
        DbBackend::Postgres,
        "SELECT count(*) AS n FROM pg_trigger \
         WHERE tgrelid = 'tenant_2.seaql_migrations'::regclass \
         AND tgname = 'tenancy_shape_changed'",
    );
    assert_eq!(count(&test.conn, trigger).await, 1);
    for _ in 0..5 {
        assert_eq!(customer_names(&one).await, ["one"]);
        assert_eq!(customer_names(&two).await, ["two"]);
    }
    drop((one, two, tenancy));
    pool.close().await.unwrap();
    test.drop_db().await;
}

/// Two processes migrate the same tenant at once: one waits for the other at the marker,
/// then finds nothing pending; both succeed, and the schema holds the marker of its new
/// shape only, which this process's units then confirm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_migrating_one_schema_both_succeed() {
    let Some(test) = TestDb::for_flavor(Backend::Postgres, Flavor::Schema).await else {
        return;
    };
    let (pool, tenancy) = provisioned(&test, &[1]).await;
    let db = tenancy.tenant(1).await.unwrap();
    db.insert(customer_named("before")).await.unwrap();
    let (first, second) = (other_process(&test), {
        let mut options = tenancy_tests::pool(test.url.clone().unwrap());
        options.max_connections(2);
        Tenancy::<i64>::builder(Database::connect(options).await.unwrap())
            .schema_per_tenant(SCHEMA_PREFIX)
            .build()
            .unwrap()
    });
    let (a, b) = tokio::join!(
        first.migrate_tenant::<WideNamesMigrator>(&1),
        second.migrate_tenant::<WideNamesMigrator>(&1)
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(
        markers(&test.conn, "tenant_1").await,
        [expected_marker(&test.conn, "tenant_1").await]
    );
    let long = "w".repeat(150);
    db.insert(customer_named(&long)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            customer_names(&db).await,
            ["before".to_owned(), long.clone()]
        );
    }
    drop((db, tenancy, first, second));
    pool.close().await.unwrap();
    test.drop_db().await;
}

/// Set in the child process of the test below: the URL of the database whose fleet it
/// migrates until it is killed.
const CHILD_URL: &str = "TENANCY_TEST_STALLED_MIGRATION_URL";

/// What a migration changes in a schema.
#[derive(Debug, PartialEq)]
struct SchemaState {
    /// The markers it holds.
    markers: Vec<String>,
    /// The marker its migrations table calls for.
    expected: String,
    /// The type of `customers.name`.
    name_type: String,
}

/// The state of tenant 1's and tenant 2's schemas.
async fn fleet_state(conn: &DatabaseConnection) -> [SchemaState; 2] {
    [
        schema_state(conn, "tenant_1").await,
        schema_state(conn, "tenant_2").await,
    ]
}

/// What a migration changes in `schema`.
async fn schema_state(conn: &DatabaseConnection, schema: &str) -> SchemaState {
    let name_type = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT format_type(atttypid, atttypmod) AS t FROM pg_attribute \
             WHERE attrelid = format('%I.customers', $1::text)::regclass AND attname = 'name'",
            [schema.into()],
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "t")
        .unwrap();
    SchemaState {
        markers: markers(conn, schema).await,
        expected: expected_marker(conn, schema).await,
        name_type,
    }
}

/// The `n` of a `SELECT count(*) AS n ...`.
async fn count(conn: &DatabaseConnection, statement: Statement) -> i64 {
    conn.query_one_raw(statement)
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap()
}

/// The server processes that run the stalled migration's statement, counted.
fn stalled() -> Statement {
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND query = $1",
        [STALL_SQL.into()],
    )
}

/// The sessions waiting for a lock on tenant 1's shape marker, counted: units whose
/// `BEGIN` is held by the half-done migration that dropped the marker.
fn waiting_on_marker() -> Statement {
    Statement::from_string(
        DbBackend::Postgres,
        "SELECT count(*) AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE NOT l.granted AND c.relnamespace = 'tenant_1'::regnamespace \
         AND c.relname LIKE 'tenancy\\_shape\\_%'",
    )
}

/// Polls `statement`'s count every 50 ms until `done` holds, for up to `seconds` (then
/// fails, saying `what` was expected); fails at once if `child` has exited.
async fn until(
    conn: &DatabaseConnection,
    statement: Statement,
    done: impl Fn(i64) -> bool,
    seconds: u64,
    what: &str,
    mut child: Option<&mut Child>,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let n = count(conn, statement.clone()).await;
        if done(n) {
            return;
        }
        if let Some(Ok(Some(status))) = child.as_mut().map(|child| child.0.try_wait()) {
            panic!("the migrating process exited ({status}) instead of stalling");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} expected within {seconds} s, {n} found"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process, killed (SIGKILL) and reaped when dropped, also when the test fails.
/// Its stdin is a pipe it watches: if this process dies first, the child exits too.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fleet migration that fails half-way in every schema (its last migration errs after
/// a column's type was changed and the old marker dropped), then one run by another
/// process that is killed (SIGKILL) while it holds both schemas in that state: each time
/// both schemas keep their old shape, marker and column type, the tenants' rows and units
/// work (a unit that waited on the killed migration's lock goes on with its rows), and the
/// next migration completes and marks the new shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_migration_failed_or_killed_half_way_leaves_schemas_as_they_were() {
    if let Ok(url) = std::env::var(CHILD_URL) {
        // The child: stalls half-way in each schema, and is killed there; it exits if
        // its parent dies first (its stdin, a pipe from the parent, closes).
        std::thread::spawn(|| {
            let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
            std::process::exit(1);
        });
        let pool = Database::connect(url.as_str()).await.unwrap();
        let tenancy = Tenancy::<i64>::builder(pool)
            .schema_per_tenant(SCHEMA_PREFIX)
            .build()
            .unwrap();
        let report = tenancy.migrate_all::<StallingMigrator>(2, |_| {}).await;
        panic!("the stalling migration ended instead of being killed: {report:?}");
    }
    let Some(test) = TestDb::for_flavor(Backend::Postgres, Flavor::Schema).await else {
        return;
    };
    let (pool, tenancy, one, two) = two_tenants(&test).await;
    let before = fleet_state(&test.conn).await;
    assert_eq!(before[0].markers, std::slice::from_ref(&before[0].expected));
    let long = "w".repeat(150);

    // A migration that fails half-way, in both schemas.
    let report = other_process(&test)
        .migrate_all::<BrokenWideNamesMigrator>(2, |_| {})
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 2, "both schemas' migrations fail");
    assert_eq!(
        fleet_state(&test.conn).await,
        before,
        "a half-done migration changed a schema"
    );
    assert_eq!(customer_names(&one).await, ["one"]);
    assert_eq!(customer_names(&two).await, ["two"]);

    // A process killed half-way, in both schemas.
    let mut child = Child(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_fleet_migration_failed_or_killed_half_way_leaves_schemas_as_they_were",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_URL, test.url.clone().unwrap())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let both = |n| n == 2;
    until(
        &test.conn,
        stalled(),
        both,
        60,
        "2 stalled migrations",
        Some(&mut child),
    )
    .await;
    let reader = tokio::spawn({
        let one = one.clone();
        async move { customer_names(&one).await }
    });
    let some = |n| n > 0;
    let waiting = "a unit waiting on tenant 1's marker while its migration is half-way";
    until(&test.conn, waiting_on_marker(), some, 10, waiting, None).await;
    assert!(
        !reader.is_finished(),
        "a unit read tenant 1 while its migration was half-way"
    );
    let _ = child.0.kill();
    let _ = child.0.wait();
    let none = |n| n == 0;
    until(
        &test.conn,
        stalled(),
        none,
        30,
        "no stalled migration",
        None,
    )
    .await;
    let read = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the unit goes on once the killed migration is rolled back")
        .unwrap();
    assert_eq!(read, ["one"]);
    assert_eq!(
        fleet_state(&test.conn).await,
        before,
        "a half-done migration changed a schema"
    );
    assert_eq!(customer_names(&two).await, ["two"]);

    // The next migration completes.
    migrated_elsewhere::<WideNamesMigrator>(&test).await;
    for (after, before) in fleet_state(&test.conn).await.iter().zip(&before) {
        assert_eq!(after.markers, std::slice::from_ref(&after.expected));
        assert_ne!(after.expected, before.expected);
        assert_eq!(after.name_type, "character varying(200)");
        assert_ne!(after.name_type, before.name_type);
    }
    one.insert(customer_named(&long)).await.unwrap();
    assert_eq!(customer_names(&one).await, ["one".to_owned(), long]);
    assert_eq!(customer_names(&two).await, ["two"]);
    drop((one, two, tenancy));
    pool.close().await.unwrap();
    test.drop_db().await;
}

/// Half a fleet migrated (tenants 1 and 2 at the new shape, 3 and 4 at the old), units of
/// the four alternating on one connection: each tenant's guess misses at most once, in
/// its first unit; then every unit confirms its own schema's shape in its `BEGIN` (no
/// miss, no read of the shape the long way) and reads its own rows (a process guessing
/// one shape for all would miss on every other unit).
#[tokio::test(flavor = "current_thread")]
async fn a_half_migrated_fleet_misses_once_a_tenant_not_once_a_unit() {
    // The library's own counters, on this thread (the runtime's one thread).
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut counted = std::collections::BTreeMap::<String, u64>::new();
    let mut count = |name: &str| {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            if let metrics_util::debugging::DebugValue::Counter(n) = value {
                *counted.entry(key.key().name().to_owned()).or_default() += n;
            }
        }
        counted.get(name).copied().unwrap_or(0)
    };
    let Some(test) = TestDb::for_flavor(Backend::Postgres, Flavor::Schema).await else {
        return;
    };
    let (pool, tenancy) = provisioned(&test, &[1, 2, 3, 4]).await;
    let theirs = other_process(&test);
    for tenant in [1, 2] {
        theirs
            .migrate_tenant::<WideNamesMigrator>(&tenant)
            .await
            .unwrap();
    }
    let mut tenants = Vec::new();
    for tenant in [1, 3, 2, 4] {
        let db = tenancy.tenant(tenant).await.unwrap();
        db.insert(customer_named(&format!("c{tenant}")))
            .await
            .unwrap();
        tenants.push((tenant, db));
    }
    let (misses, reads) = (count(METRIC_SHAPE_MISSES), count(METRIC_SHAPE_READS));
    assert!(
        (1..=4).contains(&misses),
        "{misses} guesses missed in the first unit of each of 4 tenants of 2 shapes"
    );
    assert!(
        reads > misses,
        "the first unit read its shape with no guess to miss"
    );
    for round in 0..10 {
        for (tenant, db) in &tenants {
            assert_eq!(
                customer_names(db).await,
                [format!("c{tenant}")],
                "round {round}"
            );
        }
    }
    assert_eq!(
        count(METRIC_SHAPE_MISSES),
        misses,
        "a tenant missed again once read"
    );
    assert_eq!(
        count(METRIC_SHAPE_READS),
        reads,
        "a tenant's shape was read again once guessed"
    );
    drop((tenants, tenancy));
    pool.close().await.unwrap();
    test.drop_db().await;
}

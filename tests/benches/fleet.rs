//! How fleet migrations grow with the fleet, schema per tenant on PostgreSQL: at each size
//! (100, 1,000 and 5,000 tenant schemas of 5 tables with an index each), provisioning and
//! migrating every tenant against the floor, the same DDL as one plain SQL script through
//! `psql` into a fresh database, measured in the same run at the same size; then a re-run
//! of `migrate_all` with nothing to migrate. Printed: one row per size, with the time per
//! tenant of each, so that a growth shows as a per-tenant time that rises with the size;
//! and what the server did in each provisioning phase (WAL, checkpoints, buffers backends
//! wrote) with the time of the first and the last fifth of the tenants provisioned, so
//! that a cost that grows with the schemas already there shows within one run.
//!
//! ```text
//! cargo bench -p tenancy-tests --bench fleet                 # 100, 1,000 and 5,000 tenants
//! cargo bench -p tenancy-tests --bench fleet -- --quick      # 20 and 100 tenants
//! FLEET_SIZES=100,1000 cargo bench -p tenancy-tests --bench fleet
//! cargo test -p tenancy-tests --bench fleet -- --quick       # CI: checks counts, not times
//! ```
//!
//! The framework's pool has its connections open before the timing starts, so that their
//! opening (a fixed cost) does not inflate the time per tenant at the small sizes; the
//! listing of the tenant schemas that `migrate_all` starts with is timed with it.
//!
//! The floor's script runs each statement in a transaction of its own (11 commits per
//! tenant), as a plain script does; with `FLEET_FLOOR_TXN` set it wraps each tenant's DDL
//! in `BEGIN`/`COMMIT` (one commit per tenant, as the framework), a tighter floor where
//! commits are slow.
//!
//! `FLEET_SIZES` (comma-separated tenant counts) overrides the sizes in every mode. Without
//! `--bench` (a debug build, as CI runs it) the `--quick` sizes run and the bench asserts
//! what it can without timing: every tenant provisioned and migrated, and the framework's
//! databases holding exactly the floor's tables and indexes plus one `seaql_migrations`
//! table per schema.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs
)]

use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use sea_orm_migration::prelude::*;
use std::process::Command;
use std::time::{Duration, Instant};
use tenancy_sea::Tenancy;
use tenancy_tests::{Backend, TestDb};

const TABLES: usize = 5;
/// `TABLES`, as a count of rows.
const TABLES_I64: i64 = 5;
const FULL_SIZES: [i64; 3] = [100, 1_000, 5_000];
const QUICK_SIZES: [i64; 2] = [20, 100];
/// Tenants provisioned at once, and migrated at once by `migrate_all`.
const PROVISION_PARALLELISM: usize = 4;
const MIGRATE_PARALLELISM: usize = 8;

fn table_ddl(k: usize) -> [String; 2] {
    [
        format!(
            "CREATE TABLE t{k} (id BIGSERIAL PRIMARY KEY, tenant_id BIGINT NOT NULL, body TEXT NOT NULL)"
        ),
        format!("CREATE INDEX t{k}_tenant ON t{k} (tenant_id)"),
    ]
}

struct BenchMigrator;

impl MigratorTrait for BenchMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(FiveTables)]
    }
}

struct FiveTables;

impl MigrationName for FiveTables {
    fn name(&self) -> &str {
        "m0001_five_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for FiveTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for k in 1..=TABLES {
            for sql in table_ddl(k) {
                db.execute_unprepared(&sql).await?;
            }
        }
        Ok(())
    }
}

/// The sizes of this run: `FLEET_SIZES`, else the full or the quick ones.
fn sizes(full: bool) -> Vec<i64> {
    match std::env::var("FLEET_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .replace('_', "")
                    .parse()
                    .expect("FLEET_SIZES: 100,1000")
            })
            .collect(),
        Err(_) if full => FULL_SIZES.to_vec(),
        Err(_) => QUICK_SIZES.to_vec(),
    }
}

async fn count(conn: &DatabaseConnection, sql: &str) -> i64 {
    conn.query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap()
}

/// Tables and indexes in the tenant schemas of `conn`'s database.
async fn tenant_objects(conn: &DatabaseConnection) -> (i64, i64) {
    (
        count(
            conn,
            r"SELECT count(*) FROM pg_tables WHERE schemaname LIKE 'tenant\_%'",
        )
        .await,
        count(
            conn,
            r"SELECT count(*) FROM pg_indexes WHERE schemaname LIKE 'tenant\_%'",
        )
        .await,
    )
}

/// Opens `n` connections of `conn`'s pool (each held a moment, all at once), so that no
/// timed phase pays for opening them: a fixed cost that would show at small sizes as a
/// higher time per tenant.
async fn open_connections(conn: &DatabaseConnection, n: usize) {
    let held = (0..n).map(|_| conn.execute_unprepared("SELECT pg_sleep(0.05)"));
    for result in futures_util::future::join_all(held).await {
        result.unwrap();
    }
}

/// A checkpoint, so that each timed phase starts with no dirty pages of the one before.
async fn checkpoint(conn: &DatabaseConnection) {
    conn.execute_unprepared("CHECKPOINT").await.unwrap();
}

/// What the server did in a phase: WAL written, checkpoints (requested, when the WAL
/// outgrows `max_wal_size`, or timed), and buffers written by backends themselves (a
/// page evicted to make room, when `shared_buffers` holds no clean one).
#[derive(Clone, Copy, Default)]
struct ServerWork {
    wal_bytes: i64,
    checkpoints: i64,
    backend_writes: i64,
}

impl ServerWork {
    /// The server's counters now.
    async fn now(conn: &DatabaseConnection) -> ServerWork {
        let row = conn
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS wal, \
                 checkpoints_timed + checkpoints_req AS checkpoints, \
                 buffers_backend AS writes FROM pg_stat_bgwriter",
            ))
            .await
            .unwrap()
            .unwrap();
        ServerWork {
            wal_bytes: row.try_get("", "wal").unwrap(),
            checkpoints: row.try_get("", "checkpoints").unwrap(),
            backend_writes: row.try_get("", "writes").unwrap(),
        }
    }

    /// What happened since `before`.
    async fn since(conn: &DatabaseConnection, before: ServerWork) -> ServerWork {
        let now = ServerWork::now(conn).await;
        ServerWork {
            wal_bytes: now.wal_bytes - before.wal_bytes,
            checkpoints: now.checkpoints - before.checkpoints,
            backend_writes: now.backend_writes - before.backend_writes,
        }
    }
}

/// The floor at `tenants`: the DDL as one script through `psql`, into a fresh database;
/// each statement its own transaction, or with `per_tenant_txn` each tenant's.
async fn floor(tenants: i64, per_tenant_txn: bool) -> (Duration, ServerWork) {
    let db = TestDb::create(Backend::Postgres)
        .await
        .expect("TENANCY_PG_URL or the local server");
    let mut script = String::new();
    for i in 1..=tenants {
        if per_tenant_txn {
            script.push_str("BEGIN;\n");
        }
        script.push_str(&format!(
            "CREATE SCHEMA tenant_{i};\nSET search_path = tenant_{i};\n"
        ));
        for k in 1..=TABLES {
            for sql in table_ddl(k) {
                script.push_str(&sql);
                script.push_str(";\n");
            }
        }
        if per_tenant_txn {
            script.push_str("COMMIT;\n");
        }
    }
    let path = std::env::temp_dir().join(format!(
        "tenancy-fleet-{}-{tenants}.sql",
        std::process::id()
    ));
    std::fs::write(&path, script).unwrap();
    checkpoint(&db.conn).await;
    let before = ServerWork::now(&db.conn).await;
    let start = Instant::now();
    let status = Command::new("psql")
        .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&path)
        .arg(db.url.as_deref().unwrap())
        .status();
    let elapsed = start.elapsed();
    let work = ServerWork::since(&db.conn, before).await;
    std::fs::remove_file(&path).unwrap();
    assert!(status.expect("psql on PATH").success());
    let objects = tenant_objects(&db.conn).await;
    let per_tenant = TABLES_I64;
    assert_eq!(objects, (tenants * per_tenant, tenants * per_tenant * 2));
    db.drop_db().await;
    (elapsed, work)
}

/// One size's results: tenants, the floor and what the server did in it, the framework.
type Row = (i64, (Duration, ServerWork), Framework);

/// The framework at `tenants`.
struct Framework {
    provisioned: Duration,
    /// Provisioning the first fifth of the tenants, and the last.
    fifths: (Duration, Duration),
    /// What the server did while provisioning.
    work: ServerWork,
    noop: Duration,
    /// `tenant_schemas()` alone: the one catalog query `migrate_all` starts with.
    listing: Duration,
}

async fn framework(tenants: i64) -> Framework {
    let db = TestDb::create(Backend::Postgres).await.unwrap();
    let tenancy: Tenancy<i64> = Tenancy::builder(db.conn.clone())
        .schema_per_tenant("tenant_")
        .build()
        .unwrap();
    // Provision every tenant: schema + migrator, one transaction each.
    open_connections(&db.conn, MIGRATE_PARALLELISM).await;
    checkpoint(&db.conn).await;
    let before = ServerWork::now(&db.conn).await;
    let start = Instant::now();
    let done: Vec<(bool, Duration)> = futures_util::stream::iter(1..=tenants)
        .map(|i| {
            let tenancy = &tenancy;
            async move { tenancy.create_tenant_schema::<BenchMigrator>(i).await }
        })
        .buffer_unordered(PROVISION_PARALLELISM)
        .map(|r| (r.is_err(), start.elapsed()))
        .collect()
        .await;
    let provisioned = start.elapsed();
    let failures = done.iter().filter(|(failed, _)| *failed).count();
    // The first fifth of the tenants and the last: how provisioning a tenant grows with
    // the schemas already there, within one run.
    let fifth = done.len() / 5;
    let first_fifth = done[fifth - 1].1;
    let last_fifth = provisioned - done[done.len() - fifth - 1].1;
    let work = ServerWork::since(&db.conn, before).await;
    assert_eq!(failures, 0);

    let start = Instant::now();
    let listed = tenancy.tenant_schemas().await.unwrap();
    let listing = start.elapsed();
    assert_eq!(listed.len() as i64, tenants);

    // Re-run with nothing to migrate.
    checkpoint(&db.conn).await;
    let start = Instant::now();
    let report = tenancy
        .migrate_all::<BenchMigrator>(MIGRATE_PARALLELISM, |_| {})
        .await
        .unwrap();
    let noop = start.elapsed();
    assert!(report.is_success());
    assert_eq!(report.migrated.len() as i64, tenants);

    // The floor's tables and indexes, plus `seaql_migrations` (and its key) per schema.
    let per_tenant = TABLES_I64;
    let objects = tenant_objects(&db.conn).await;
    assert_eq!(
        objects,
        (tenants * (per_tenant + 1), tenants * (per_tenant * 2 + 1))
    );
    drop(tenancy);
    db.drop_db().await;
    Framework {
        provisioned,
        fifths: (first_fifth, last_fifth),
        work,
        noop,
        listing,
    }
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes = sizes(measuring && !quick);
    let per_tenant_txn = std::env::var_os("FLEET_FLOOR_TXN").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    rt.block_on(async {
        for (n, &tenants) in sizes.iter().enumerate() {
            // The side that runs first alternates from size to size.
            let (floor, ours) = if n % 2 == 0 {
                let floor = floor(tenants, per_tenant_txn).await;
                (floor, framework(tenants).await)
            } else {
                let ours = framework(tenants).await;
                (floor(tenants, per_tenant_txn).await, ours)
            };
            rows.push((tenants, floor, ours));
        }
    });

    let ms_per = |d: Duration, n: i64| d.as_secs_f64() * 1000.0 / n as f64;
    println!(
        "Floor: the DDL as one `psql` script, {}. Framework: `create_tenant_schema` {PROVISION_PARALLELISM} at a time, then `migrate_all` with nothing to do, {MIGRATE_PARALLELISM} at a time.",
        if per_tenant_txn {
            "one transaction per tenant"
        } else {
            "one transaction per statement"
        }
    );
    println!();
    println!(
        "| tenants | psql floor | floor per tenant | provision + migrate | per tenant | ratio to floor | no-op re-run | no-op per tenant |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (tenants, (floor, _), ours) in &rows {
        println!(
            "| {tenants} | {:.2} s | {:.2} ms | {:.2} s | {:.2} ms | {:.2} | {:.2} s | {:.3} ms |",
            floor.as_secs_f64(),
            ms_per(*floor, *tenants),
            ours.provisioned.as_secs_f64(),
            ms_per(ours.provisioned, *tenants),
            ours.provisioned.as_secs_f64() / floor.as_secs_f64(),
            ours.noop.as_secs_f64(),
            ms_per(ours.noop, *tenants),
        );
    }
    println!();
    println!(
        "What the server did, per tenant (WAL, buffers written by backends) and in all (checkpoints during the phase; each phase starts after a `CHECKPOINT`):"
    );
    println!();
    println!(
        "| tenants | floor: WAL per tenant | checkpoints | backend writes per tenant | provisioning: WAL per tenant | checkpoints | backend writes per tenant | first fifth per tenant | last fifth per tenant |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (tenants, (_, floor), ours) in &rows {
        let kib = |bytes: i64| bytes as f64 / 1024.0 / *tenants as f64;
        let per = |writes: i64| writes as f64 / *tenants as f64;
        let fifth = *tenants / 5;
        println!(
            "| {tenants} | {:.0} KiB | {} | {:.1} | {:.0} KiB | {} | {:.1} | {:.2} ms | {:.2} ms |",
            kib(floor.wal_bytes),
            floor.checkpoints,
            per(floor.backend_writes),
            kib(ours.work.wal_bytes),
            ours.work.checkpoints,
            per(ours.work.backend_writes),
            ms_per(ours.fifths.0, fifth),
            ms_per(ours.fifths.1, fifth),
        );
    }
    println!();
    // Growth: the largest per-tenant time over the smallest, across sizes.
    let spread = |f: &dyn Fn(&Row) -> f64| {
        let values: Vec<f64> = rows.iter().map(f).collect();
        values.iter().copied().fold(f64::MIN, f64::max)
            / values.iter().copied().fold(f64::MAX, f64::min)
    };
    println!(
        "Per tenant, slowest size / fastest size: floor {:.2}, provision + migrate {:.2}, no-op re-run {:.2}.",
        spread(&|(n, floor, _)| ms_per(floor.0, *n)),
        spread(&|(n, _, ours)| ms_per(ours.provisioned, *n)),
        spread(&|(n, _, ours)| ms_per(ours.noop, *n)),
    );
    let listings: Vec<String> = rows
        .iter()
        .map(|(n, _, ours)| format!("{n}: {:.1} ms", ours.listing.as_secs_f64() * 1000.0))
        .collect();
    println!(
        "Listing the tenant schemas (`tenant_schemas`, once per `migrate_all`): {}.",
        listings.join(", ")
    );
}

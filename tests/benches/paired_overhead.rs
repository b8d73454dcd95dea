//! The scoped path's overhead as a ratio, measured in interleaved rounds so that drift
//! (other processes, CPU frequency, cache state) hits both sides alike.
//!
//! Each round runs a batch of the hand-written SeaORM query and a batch of the same query
//! through a tenant handle, alternating which goes first; the reported ratio is the median
//! of the per-round ratios, with the 10th-90th percentile range of rounds.
//!
//! ```text
//! cargo bench -p tenancy-tests --bench paired_overhead
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use sea_orm::{ConnectionTrait, Database};
use std::time::{Duration, Instant};
use tenancy_tests::{Backend, TestDb, create_schema};

#[path = "support/fixture.rs"]
mod fixture;
use fixture::{
    Fixture, fixture, pk_scoped, pk_seaorm, select_scoped, select_seaorm, string_pk_scoped,
    string_pk_seaorm,
};
use sea_orm::{DatabaseConnection, DbBackend, Statement};
use tenancy_sea::{Tenancy, TenantDb, TenantRegistry, catalog::TenantDatabases};
use tenancy_tests::Flavor;

const ROUNDS: usize = 101;
const BATCH: usize = 100;

async fn time_batch<F, Fut>(mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    for _ in 0..BATCH {
        f().await;
    }
    start.elapsed()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn measure(label: &str, f: &Fixture, query: &str) {
    measure_with(label, query, |scoped| run(f, query, scoped)).await
}

async fn measure_with<R, Fut>(label: &str, query: &str, run: R)
where
    R: Fn(bool) -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let mut ratios = Vec::with_capacity(ROUNDS);
    let mut base_us = Vec::with_capacity(ROUNDS);
    let mut scoped_us = Vec::with_capacity(ROUNDS);
    // Warm up both paths.
    for _ in 0..2 {
        run(false).await;
        run(true).await;
    }
    for round in 0..ROUNDS {
        let (base, scoped) = if round % 2 == 0 {
            let b = run(false).await;
            (b, run(true).await)
        } else {
            let s = run(true).await;
            (run(false).await, s)
        };
        ratios.push(scoped.as_secs_f64() / base.as_secs_f64());
        base_us.push(base.as_secs_f64() * 1e6 / BATCH as f64);
        scoped_us.push(scoped.as_secs_f64() * 1e6 / BATCH as f64);
    }
    for v in [&mut ratios, &mut base_us, &mut scoped_us] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "| {query} | {label} | {:.1} | {:.1} | {:.3} | {:.3}–{:.3} |",
        percentile(&base_us, 0.5),
        percentile(&scoped_us, 0.5),
        percentile(&ratios, 0.5),
        percentile(&ratios, 0.1),
        percentile(&ratios, 0.9),
    );
}

async fn run(f: &Fixture, query: &str, scoped: bool) -> Duration {
    match (query, scoped) {
        ("pk_lookup", false) => time_batch(|| pk_seaorm(f)).await,
        ("pk_lookup", true) => time_batch(|| pk_scoped(f)).await,
        ("string_pk_lookup", false) => time_batch(|| string_pk_seaorm(f)).await,
        ("string_pk_lookup", true) => time_batch(|| string_pk_scoped(f)).await,
        (_, false) => time_batch(|| select_seaorm(f)).await,
        (_, true) => time_batch(|| select_scoped(f)).await,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a plain `cargo test --benches` run passes nothing
    // and must stay quick, so it only checks the fixture.
    let measuring = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = Database::connect("sqlite::memory:").await.unwrap();
        create_schema(&conn).await;
        let sqlite = fixture(conn).await;
        let url = std::env::var("TENANCY_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let pg_db = TestDb::create_on_server(Backend::Postgres, &url).await;
        create_schema(&pg_db.conn).await;
        let pg = fixture(pg_db.conn.clone()).await;
        pg.conn.execute_unprepared("ANALYZE").await.unwrap();

        if measuring {
            println!(
                "| query | backend | SeaORM by hand (µs, median) | scoped handle (µs, median) | ratio (median of {ROUNDS} rounds) | ratio, 10th–90th pct |"
            );
            println!("|---|---|---:|---:|---:|---:|");
            for query in ["pk_lookup", "select_100", "string_pk_lookup"] {
                measure("sqlite", &sqlite, query).await;
                measure("postgres", &pg, query).await;
            }
        } else {
            pk_scoped(&sqlite).await;
            select_scoped(&pg).await;
            string_pk_scoped(&pg).await;
        }
        pg_db.drop_db().await;

        // Raw SQL under a PostgreSQL database per tenant: the same statement on the
        // tenant database's own pool, and through the handle, which runs it in a
        // transaction under a savepoint and resets the session after.
        let fleet = TestDb::for_flavor(Backend::Postgres, Flavor::Database)
            .await
            .unwrap();
        // Raw SQL is confined only for a role that cannot step past its database.
        let role = fleet.create_dba_role().await;
        let tenancy = Tenancy::<i64>::builder(fleet.conn.clone())
            .database_per_tenant(TenantDatabases::new(fleet.conn.clone()))
            .database_template(fleet.template_as(&role))
            .build()
            .unwrap();
        tenancy
            .create_tenant_database::<tenancy_tests::migration::DatabaseMigrator>(1)
            .await
            .unwrap();
        let handle = tenancy.tenant(1).await.unwrap();
        let url = TenantRegistry::<i64>::url(&TenantDatabases::new(fleet.conn.clone()), &1)
            .await
            .unwrap()
            .unwrap();
        let direct = Database::connect(url).await.unwrap();
        if measuring {
            measure_with("postgres", "raw_select_1", |scoped| {
                let (direct, handle) = (&direct, &handle);
                async move { time_batch(|| raw_select(direct, handle, scoped)).await }
            })
            .await;
        } else {
            raw_select(&direct, &handle, true).await;
        }
        direct.close().await.unwrap();
        drop(handle);
        drop_fleet(tenancy).await;
        fleet.drop_db().await;
    });
}

async fn raw_select(direct: &DatabaseConnection, handle: &TenantDb<i64>, scoped: bool) {
    let statement = Statement::from_string(DbBackend::Postgres, "SELECT 1 AS one");
    let rows = if scoped {
        handle.query_all_raw(statement).await.unwrap()
    } else {
        direct.query_all_raw(statement).await.unwrap()
    };
    assert_eq!(rows.len(), 1);
}

async fn drop_fleet(tenancy: Tenancy<i64>) {
    for tenant in tenancy.tenant_databases().await.unwrap() {
        tenancy.drop_tenant_database(tenant).await.unwrap();
    }
}

//! The cost of the scoped path: the same query through a tenant handle and hand-written
//! with SeaORM (the same tenant filter), on the same connection, in the same run.
//!
//! ```text
//! cargo bench -p tenancy-tests --bench scoped_overhead
//! python3 scripts/bench-report.py      # medians and ratios as a markdown table
//! ```
//!
//! PostgreSQL runs against `TENANCY_PG_URL` (default: the local server's `test` database)
//! in a database of its own, dropped at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sea_orm::{ConnectionTrait, Database};
use tenancy_tests::{Backend, TestDb, create_schema};

#[path = "support/fixture.rs"]
mod fixture;
use fixture::{
    Fixture, fixture, pk_scoped, pk_seaorm, select_scoped, select_seaorm, string_pk_scoped,
    string_pk_seaorm,
};

fn bench_backend(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, f: &Fixture) {
    let mut group = c.benchmark_group(format!("pk_lookup/{name}"));
    group.bench_function(BenchmarkId::from_parameter("seaorm"), |b| {
        b.to_async(rt).iter(|| pk_seaorm(f))
    });
    group.bench_function(BenchmarkId::from_parameter("scoped"), |b| {
        b.to_async(rt).iter(|| pk_scoped(f))
    });
    group.finish();

    let mut group = c.benchmark_group(format!("select_100/{name}"));
    group.bench_function(BenchmarkId::from_parameter("seaorm"), |b| {
        b.to_async(rt).iter(|| select_seaorm(f))
    });
    group.bench_function(BenchmarkId::from_parameter("scoped"), |b| {
        b.to_async(rt).iter(|| select_scoped(f))
    });
    group.finish();

    let mut group = c.benchmark_group(format!("string_pk_lookup/{name}"));
    group.bench_function(BenchmarkId::from_parameter("seaorm"), |b| {
        b.to_async(rt).iter(|| string_pk_seaorm(f))
    });
    group.bench_function(BenchmarkId::from_parameter("scoped"), |b| {
        b.to_async(rt).iter(|| string_pk_scoped(f))
    });
    group.finish();
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let sqlite = rt.block_on(async {
        let conn = Database::connect("sqlite::memory:").await.unwrap();
        create_schema(&conn).await;
        fixture(conn).await
    });
    bench_backend(c, &rt, "sqlite", &sqlite);

    let url = std::env::var("TENANCY_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pg = rt.block_on(async {
        let db = TestDb::create_on_server(Backend::Postgres, &url).await;
        create_schema(&db.conn).await;
        let f = fixture(db.conn.clone()).await;
        f.conn.execute_unprepared("ANALYZE").await.unwrap();
        (db, f)
    });
    bench_backend(c, &rt, "postgres", &pg.1);
    rt.block_on(pg.0.drop_db());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(60)
        .measurement_time(std::time::Duration::from_secs(6))
        .warm_up_time(std::time::Duration::from_secs(2));
    targets = overhead
}
criterion_main!(benches);

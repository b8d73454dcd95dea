//! Database per tenant at scale: 1,000 tenant databases on the local PostgreSQL served
//! through a cap of 50 open pools; reports peak open pools, peak server connections and
//! peak process memory.
//!
//! ```text
//! cargo bench -p tenancy-tests --bench pools            # POOL_TENANTS=1000 by default
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    missing_docs
)]

use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use sea_orm_migration::prelude::*;
use std::time::Instant;
use tenancy_sea::{DatabaseTemplate, Tenancy, catalog::TenantDatabases};
use tenancy_tests::entities::note_i32;
use tenancy_tests::{Backend, TestDb};

struct OneTable;

impl MigratorTrait for OneTable {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(Notes)]
    }
}

struct Notes;

impl MigrationName for Notes {
    fn name(&self) -> &str {
        "m0001_notes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Notes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let schema = sea_orm::Schema::new(manager.get_database_backend());
        manager
            .create_table(schema.create_table_from_entity(note_i32::Entity))
            .await
    }
}

/// Peak resident set size of this process, in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let tenants: i32 = if measuring {
        std::env::var("POOL_TENANTS").map_or(1000, |v| v.parse().unwrap())
    } else {
        4
    };
    let cap = 50;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let catalog = TestDb::create(Backend::Postgres)
            .await
            .expect("TENANCY_PG_URL or the local server");
        let registry = TenantDatabases::new(catalog.conn.clone());
        registry.install().await.unwrap();
        let prefix = format!("tdb_{}_", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let tenancy: Tenancy<i32> = Tenancy::builder(catalog.conn.clone())
            .database_per_tenant(registry)
            .database_template(DatabaseTemplate::Server {
                server_url: catalog.url.clone().unwrap(),
                prefix: prefix.clone(),
            })
            .max_open_pools(cap)
            .connections_per_tenant(2)
            .build()
            .unwrap();

        let start = Instant::now();
        let failed = futures_util::stream::iter(1..=tenants)
            .map(|i| {
                let tenancy = &tenancy;
                async move { tenancy.create_tenant_database::<OneTable>(i).await }
            })
            .buffer_unordered(4)
            .filter(|r| std::future::ready(r.is_err()))
            .count()
            .await;
        assert_eq!(failed, 0);
        let provisioned = start.elapsed();
        let rss_before = peak_rss_mib();

        let count_connections = Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname LIKE '{prefix}%'"
            ),
        );
        let (mut peak_pools, mut peak_connections) = (0, 0i64);
        let start = Instant::now();
        let passes = 3;
        for pass in 0..passes {
            for i in 1..=tenants {
                // A different order each pass, so the cache keeps missing.
                let tenant = (i * 7 + pass * 13) % tenants + 1;
                let db = tenancy.tenant(tenant).await.unwrap();
                let rows = db.find::<note_i32::Entity>().count().await.unwrap();
                assert_eq!(rows, 0);
                peak_pools = Ord::max(peak_pools, tenancy.open_pools());
                if i % 25 == 0 {
                    let n: i64 = catalog
                        .conn
                        .query_one_raw(count_connections.clone())
                        .await
                        .unwrap()
                        .unwrap()
                        .try_get("", "n")
                        .unwrap();
                    peak_connections = Ord::max(peak_connections, n);
                }
            }
        }
        let served = start.elapsed();
        let rss_after = peak_rss_mib();

        for i in 1..=tenants {
            tenancy.drop_tenant_database(i).await.unwrap();
        }
        catalog.drop_db().await;

        if measuring {
            println!("| tenants | pool cap | requests | peak open pools | peak server connections | peak RSS before serving | peak RSS after | provisioning | serving |");
            println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            println!(
                "| {tenants} | {cap} | {} | {peak_pools} | {peak_connections} | {rss_before:.0} MiB | {rss_after:.0} MiB | {:.1} s | {:.1} s ({:.2} ms a request) |",
                tenants * passes,
                provisioned.as_secs_f64(),
                served.as_secs_f64(),
                served.as_secs_f64() * 1000.0 / f64::from(tenants * passes)
            );
        }
    });
}

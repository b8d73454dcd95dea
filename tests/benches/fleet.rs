//! Provisioning and migrating 1,000 tenant schemas of 5 tables (an index each) on
//! PostgreSQL, against the floor: the same DDL as one plain SQL script through `psql`,
//! measured in the same run; then a re-run with nothing to migrate.
//!
//! ```text
//! cargo bench -p tenancy-tests --bench fleet            # FLEET_TENANTS=1000 by default
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    missing_docs
)]

use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, DbErr};
use sea_orm_migration::prelude::*;
use std::process::Command;
use std::time::Instant;
use tenancy_sea::Tenancy;
use tenancy_tests::{Backend, TestDb};

const TABLES: usize = 5;

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

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let tenants: i64 = if measuring {
        std::env::var("FLEET_TENANTS").map_or(1000, |v| v.parse().unwrap())
    } else {
        3
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The floor: one SQL script through psql, into a fresh database.
        let floor_db = TestDb::create(Backend::Postgres)
            .await
            .expect("TENANCY_PG_URL or the local server");
        let mut script = String::new();
        for i in 1..=tenants {
            script.push_str(&format!(
                "CREATE SCHEMA tenant_{i};\nSET search_path = tenant_{i};\n"
            ));
            for k in 1..=TABLES {
                for sql in table_ddl(k) {
                    script.push_str(&sql);
                    script.push_str(";\n");
                }
            }
        }
        let path = std::env::temp_dir().join(format!("tenancy-fleet-{}.sql", std::process::id()));
        std::fs::write(&path, script).unwrap();
        let start = Instant::now();
        let status = Command::new("psql")
            .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(&path)
            .arg(floor_db.url.as_deref().unwrap())
            .status()
            .expect("psql on PATH");
        let floor = start.elapsed();
        assert!(status.success());
        std::fs::remove_file(&path).unwrap();
        floor_db.drop_db().await;

        // The framework: provision every tenant (schema + migrator, one transaction each).
        let db = TestDb::create(Backend::Postgres).await.unwrap();
        let tenancy: Tenancy<i64> = Tenancy::builder(db.conn.clone())
            .schema_per_tenant("tenant_")
            .build()
            .unwrap();
        let start = Instant::now();
        let failures = futures_util::stream::iter(1..=tenants)
            .map(|i| {
                let tenancy = &tenancy;
                async move { tenancy.create_tenant_schema::<BenchMigrator>(i).await }
            })
            .buffer_unordered(4)
            .filter(|r| std::future::ready(r.is_err()))
            .count()
            .await;
        let provisioned = start.elapsed();
        assert_eq!(failures, 0);

        let start = Instant::now();
        let report = tenancy
            .migrate_all::<BenchMigrator>(8, |_| {})
            .await
            .unwrap();
        let noop = start.elapsed();
        assert!(report.is_success());
        assert_eq!(report.migrated.len() as i64, tenants);
        db.drop_db().await;

        if measuring {
            println!(
                "| tenants | psql script (floor) | provision + migrate | ratio | no-op re-run |"
            );
            println!("|---:|---:|---:|---:|---:|");
            println!(
                "| {tenants} | {:.1} s | {:.1} s | {:.2} | {:.2} s |",
                floor.as_secs_f64(),
                provisioned.as_secs_f64(),
                provisioned.as_secs_f64() / floor.as_secs_f64(),
                noop.as_secs_f64()
            );
        }
    });
}

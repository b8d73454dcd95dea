//! Database per tenant: one SQLite file per tenant (no setup), or one database per tenant
//! on a PostgreSQL or MariaDB server with `DATABASE_URL`; a catalog database keeps the map.
//!
//! ```text
//! cargo run --example database_per_tenant
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example database_per_tenant
//! DATABASE_URL=mysql://root@127.0.0.1:3306/test cargo run --example database_per_tenant
//! ```
#![allow(clippy::print_stdout)] // an example's job is to print what happens

#[path = "shared/shop.rs"]
mod shop;

use sea_orm::Database;
use shop::{migrate_with_progress, migration::Migrator, order, place_orders, progress_bar};
use tenancy_sea::{DatabaseTemplate, Tenancy, catalog::TenantDatabases};

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("tenancy-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (catalog_url, template) = match std::env::var("DATABASE_URL") {
        Ok(url) => (
            url.clone(),
            DatabaseTemplate::Server {
                server_url: url,
                prefix: "tenancy_example_".into(),
            },
        ),
        Err(_) => (
            format!("sqlite://{}?mode=rwc", dir.join("catalog.db").display()),
            DatabaseTemplate::SqliteDir {
                dir: dir.clone(),
                prefix: "tenant_".into(),
            },
        ),
    };
    let catalog = Database::connect(&catalog_url).await?;
    println!(
        "catalog: {:?}; tenant databases: {template:?}",
        catalog.get_database_backend()
    );
    let registry = TenantDatabases::new(catalog.clone());
    registry.install().await?;
    let tenancy: Tenancy<i64> = Tenancy::builder(catalog)
        .database_per_tenant(registry)
        .database_template(template)
        .max_open_pools(5)
        .build()?;

    // Leftovers of an earlier run that did not finish: only registered tenants are dropped.
    for tenant in tenancy.tenant_databases().await? {
        tenancy.drop_tenant_database(tenant).await?;
    }

    // Provision 20 tenants: CREATE DATABASE (or a file), migrate, register.
    let bar = progress_bar(20, "provisioning");
    for tenant in 1..=20 {
        tenancy.create_tenant_database::<Migrator>(tenant).await?;
        bar.inc(1);
    }
    bar.finish();

    // Serve every tenant through at most 5 open pools.
    for tenant in 1..=20 {
        let db = tenancy.tenant(tenant).await?;
        place_orders(&db).await?;
        let rows = db.find::<order::Entity>().all().await?;
        assert!(rows.iter().all(|r| r.tenant_id == tenant));
    }
    println!(
        "20 tenants served, {} pools open (cap 5)",
        tenancy.open_pools()
    );
    let db = tenancy.tenant(7).await?;
    println!(
        "tenant 7's orders: {:?}",
        db.find::<order::Entity>().all().await?
    );

    // Migrate the whole fleet (nothing to do: every tenant is current).
    migrate_with_progress(&tenancy).await?;

    for tenant in tenancy.tenant_databases().await? {
        tenancy.drop_tenant_database(tenant).await?;
    }
    println!(
        "dropped every tenant database; registered now: {:?}",
        tenancy.tenant_databases().await?
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(feature = "runtime-tokio")]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await
}

#[cfg(all(feature = "runtime-async-std", not(feature = "runtime-tokio")))]
#[async_std::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await
}

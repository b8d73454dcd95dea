//! Schema per tenant on PostgreSQL: provision tenant schemas with the application's
//! migrator, serve them, migrate the fleet with a progress bar, drop one.
//!
//! PostgreSQL only (SQLite has no schemas; on MariaDB use database per tenant):
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example schema_per_tenant
//! ```
#![allow(clippy::print_stdout)] // an example's job is to print what happens

#[path = "shared/shop.rs"]
mod shop;

use sea_orm::{Database, Statement};
use shop::{migrate_with_progress, migration::Migrator, order, place_orders, progress_bar};
use tenancy_sea::Tenancy;

const PREFIX: &str = "tenancy_example_";

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!("schema per tenant needs PostgreSQL: set DATABASE_URL=postgres://...");
        return Err("DATABASE_URL is not set".into());
    };
    let conn = Database::connect(&url).await?;
    let tenancy: Tenancy<i64> = Tenancy::builder(conn).schema_per_tenant(PREFIX).build()?;
    for tenant in tenancy.tenant_schemas().await? {
        tenancy.drop_tenant_schema(tenant).await?; // leftovers of an earlier run
    }

    // Each: CREATE SCHEMA "tenancy_example_<id>" and the migrator in it, in one transaction.
    let bar = progress_bar(10, "provisioning");
    for tenant in 1..=10 {
        tenancy.create_tenant_schema::<Migrator>(tenant).await?;
        bar.inc(1);
    }
    bar.finish();
    println!("tenant schemas: {:?}", tenancy.tenant_schemas().await?);

    for tenant in 1..=10 {
        place_orders(&tenancy.tenant(tenant).await?).await?;
    }
    let acme = tenancy.tenant(3).await?;
    println!(
        "tenant 3's orders: {:?}",
        acme.find::<order::Entity>().all().await?
    );
    // Raw SQL through the handle is refused: it could name another tenant's schema.
    match acme
        .query_all_raw(Statement::from_string(
            acme.backend(),
            "SELECT item FROM tenant_4.orders",
        ))
        .await
    {
        Ok(_) => return Err("raw SQL ran under schema per tenant".into()),
        Err(err) => println!("raw SQL through a handle refused: {err}"),
    }
    // A tenant without a schema fails closed instead of reading `public`.
    match tenancy
        .tenant(99)
        .await?
        .find::<order::Entity>()
        .all()
        .await
    {
        Ok(_) => return Err("a tenant without a schema was served".into()),
        Err(err) => println!("tenant 99 has no schema: {err}"),
    }

    // A hostile id never becomes a schema name.
    let strings: Tenancy<String> = Tenancy::builder(Database::connect(&url).await?)
        .schema_per_tenant(PREFIX)
        .build()?;
    match strings.tenant("x\"; DROP SCHEMA public; --").await {
        Ok(_) => return Err("a hostile id was accepted".into()),
        Err(err) => println!("hostile tenant id refused: {err}"),
    }

    migrate_with_progress(&tenancy).await?;

    for tenant in tenancy.tenant_schemas().await? {
        tenancy.drop_tenant_schema(tenant).await?;
    }
    println!(
        "dropped; tenant schemas now: {:?}",
        tenancy.tenant_schemas().await?
    );
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

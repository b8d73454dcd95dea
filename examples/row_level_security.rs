//! Row level enforced by PostgreSQL row-level security: policies generated from the
//! entities, an application role that owns nothing and sees nothing without a tenant, and
//! raw SQL through a handle refused.
//!
//! PostgreSQL only; the URL's user must be able to create databases and roles:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example row_level_security
//! ```
#![allow(clippy::print_stdout)] // an example's job is to print what happens

#[path = "shared/shop.rs"]
mod shop;

use sea_orm::{ConnectionTrait, Database, Statement};
use shop::{migration::Migrator, order, place_orders};
use tenancy_sea::Tenancy;
use tenancy_sea::rls::{RlsTable, enable_row_level_security};
use tenancy_sea::sea_orm_migration::MigratorTrait;

const DATABASE: &str = "tenancy_example_rls";
const ROLE: &str = "tenancy_example_app";

fn with_database(url: &str, user: Option<&str>) -> String {
    let (base, _) = url.rsplit_once('/').unwrap_or((url, ""));
    let base = match user {
        // postgres://user@host -> postgres://ROLE@host
        Some(user) => match base.split_once("://").and_then(|(s, rest)| {
            rest.split_once('@')
                .map(|(_, host)| format!("{s}://{user}@{host}"))
        }) {
            Some(b) => b,
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    format!("{base}/{DATABASE}")
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!("row-level security needs PostgreSQL: set DATABASE_URL=postgres://...");
        return Err("DATABASE_URL is not set".into());
    };
    // A database and a role of the example's own.
    let server = Database::connect(&url).await?;
    server
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await?;
    server
        .execute_unprepared(&format!("DROP ROLE IF EXISTS {ROLE}"))
        .await?;
    server
        .execute_unprepared(&format!("CREATE DATABASE {DATABASE}"))
        .await?;
    server
        .execute_unprepared(&format!("CREATE ROLE {ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"))
        .await?;

    // As the owner: the table, the policies, the grants.
    let owner = Database::connect(with_database(&url, None)).await?;
    Migrator::up(&owner, None).await?;
    enable_row_level_security(
        &owner,
        "tenancy.tenant_id",
        &[RlsTable::of::<order::Entity>()?],
    )
    .await?;
    for grant in [
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO {ROLE}"),
        format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {ROLE}"),
    ] {
        owner.execute_unprepared(&grant).await?;
    }

    // As the application role.
    let app = Database::connect(with_database(&url, Some(ROLE))).await?;
    let tenancy: Tenancy<i64> = Tenancy::builder(app.clone())
        .row_level_security("tenancy.tenant_id")
        .admin_connection(owner.clone())
        .build()?;
    for tenant in [1, 2] {
        place_orders(&tenancy.tenant(tenant).await?).await?;
    }

    for tenant in [1, 2] {
        let db = tenancy.tenant(tenant).await?;
        let items: Vec<String> = db
            .find::<order::Entity>()
            .all()
            .await?
            .into_iter()
            .map(|o| o.item)
            .collect();
        println!("tenant {tenant} sees {} rows: {items:?}", items.len());
    }
    // Raw SQL through a handle is refused: a raw `set_config` could switch the tenant the
    // policies read.
    let raw = Statement::from_string(
        owner.get_database_backend(),
        "SELECT tenant_id, item FROM orders",
    );
    match tenancy.tenant(1).await?.query_all_raw(raw.clone()).await {
        Ok(_) => return Err("raw SQL ran under row-level security".into()),
        Err(err) => println!("raw SQL through a handle refused: {err}"),
    }
    // The database itself: the application role without a tenant sees nothing.
    let bare = app.query_all_raw(raw.clone()).await?;
    println!(
        "the application role without a tenant sees {} rows",
        bare.len()
    );
    let all = owner.query_all_raw(raw).await?;
    println!("the owner (admin, unscoped) sees {} rows", all.len());

    app.close().await?;
    owner.close().await?;
    server
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await?;
    server
        .execute_unprepared(&format!("DROP ROLE IF EXISTS {ROLE}"))
        .await?;
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
